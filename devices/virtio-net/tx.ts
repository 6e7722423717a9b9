/**
 * The transmit path of one queue pair (VIRTIO 1.3 §5.1.6.2 "Packet Transmission"): pops tx chains in
 * bursts, hands each frame to the backend with its offload request, or finishes the offload in software
 * when the backend or the negotiated features cannot take it. Everything it writes per frame is its own
 * (chain, scratch, header, segmenter), so pairs do not share scratch state.
 */
import { emptyOffload, MAX_FRAME, type NetOffload } from '../../lib/net/backend.js';
import { ParsedPacket, parsePacket } from '../../lib/net/packet-parser.js';
import { SEGMENT_OK, SoftwareSegmenter } from '../../lib/net/segmentation.js';
import { checkTunnelOffload, isTunnelGso, TUNNEL_OK } from '../../lib/net/tunnel.js';
import { NetHdrFlags, readVnetHeader } from '../../lib/net/vnet-header.js';
import { gatherReadable } from '../../virtio/queue/descriptor-chain.js';
import { DescriptorChain, VirtqueueError } from '../../virtio/queue/virtqueue.js';
import { isGso, offloadPermitted, tunnelTxRefused, wantsOffload } from './offloads.js';
import type { NetShared } from './shared.js';
import type { QueueStats } from './stats.js';

/** Chains handled per tx kick before yielding to the event loop (QEMU's tx_burst default). */
export const TX_BURST = 256;

export class TxPath {
  private readonly chain = new DescriptorChain(64);
  /** Header and frame of a chain whose frame is not one guest-memory segment (allocated on first use). */
  private scratch: Uint8Array | null = null;
  private readonly header = new Uint8Array(24);
  /** Views of the first n bytes of `header`, by n (a fresh subarray per frame would allocate). */
  private readonly headerViews: Uint8Array[] = [];
  private readonly offload = emptyOffload();
  private readonly pkt = new ParsedPacket();
  /** Inner headers of a tunnel GSO frame (`pkt` holds the outer ones). */
  private readonly innerPkt = new ParsedPacket();
  private segmenter: SoftwareSegmenter | null = null;
  /** A burst continues from the event loop. */
  private pending = false;
  /** The backend refused more frames (transmitAllowed); `ready` resumes. Kicks stay disabled meanwhile. */
  private blocked = false;
  /** Frames a batching backend reported 'sent' since its last flushTransmit. */
  private unflushed = 0;
  /** The software segmenter is cutting a GSO frame: its segments count in TX_GSO. */
  private segmentingGso = false;
  private readonly emitSegment = (segment: Uint8Array) => {
    if (this.segmentingGso) {
      this.stats.txGsoSegments++;
      this.stats.txGsoSegmentsBytes += segment.length;
    }
    this.transmitOne(segment, 0, segment.length, null, false);
  };

  constructor(
    readonly pair: number,
    private readonly shared: NetShared,
    private readonly stats: QueueStats,
  ) {}

  /** The guest kicked the tx queue. */
  kick(): void {
    this.stats.txKicks++;
    this.process();
  }

  reset(): void {
    this.pending = false;
    this.blocked = false;
  }

  /** The backend takes frames again (BackendSink.transmitReady). */
  ready(): void {
    if (!this.blocked) return;
    this.blocked = false;
    this.shared.runGuarded(() => this.process());
  }

  /** Asks a rate-limiting backend before taking the next chain; false leaves it in the ring. */
  private allowed(): boolean {
    const b = this.shared.backend;
    if (b.transmitAllowed === undefined || b.transmitAllowed(this.shared.backendQueueOf(this.pair)))
      return true;
    this.blocked = true;
    return false;
  }

  private process(): void {
    const ctx = this.shared.ctx;
    const index = 2 * this.pair + 1;
    const q = ctx?.queue(index);
    if (!ctx || !q) return;
    const chain = this.chain;
    let done = 0;
    q.disableNotification();
    for (;;) {
      let batch = 0;
      try {
        while (done < TX_BURST && this.allowed() && q.pop(chain)) {
          this.transmitChain(chain);
          q.addUsed(chain, 0); // QEMU reports 0 bytes written for tx
          done++;
          batch++;
        }
      } finally {
        // Also when a broken chain throws: the chains before it were sent and counted, so the guest
        // must see them completed (QEMU pushes each tx element before looking at the next). A batching
        // backend writes them first: its queued frames still point into these chains.
        if (batch > 0) {
          this.flushTransmit();
          // IN_ORDER: the whole burst is one used entry (tx buffers are always used completely).
          this.stats.txUsedFolded += q.publishUsed();
          // Sent, held or suppressed by the coalescing of this queue (coalesce.ts).
          this.shared.coalescers[index]!.used(batch, q.needsNotification());
        }
      }
      if (this.blocked) return; // `ready` picks up where this stopped
      if (done >= TX_BURST) {
        // Yield to the event loop; keep kicks disabled while more work is scheduled.
        this.schedule();
        return;
      }
      if (!q.enableNotification()) return;
      q.disableNotification();
    }
  }

  private schedule(): void {
    if (this.pending) return;
    this.pending = true;
    setImmediate(() => {
      this.pending = false;
      this.shared.runGuarded(() => this.process());
    });
  }

  private transmitChain(chain: DescriptorChain): void {
    const shared = this.shared;
    const stats = this.stats;
    const hdr = shared.hdrSize;
    const total = chain.readableLength;
    if (total < hdr) {
      // QEMU: "virtio-net header incorrect" (virtio_error). A missing header is a broken driver.
      throw new VirtqueueError(
        'length-overflow',
        `tx chain of ${total} bytes is shorter than the ${hdr}-byte header`,
      );
    }
    const frameLength = total - hdr;
    if (frameLength < 14 || frameLength > MAX_FRAME) {
      stats.txDropped++;
      stats.txDropMalformed++;
      return;
    }
    if (!shared.linkUp) {
      stats.txDropped++;
      return;
    }
    const mem = shared.ctx!.memory;
    // Zero copy when the frame lies in one segment (after the header in it, or after a separate header
    // descriptor): located as (region bytes, offset), no view; the header is copied into a scratch.
    // Otherwise gather header and frame into the scratch.
    let bytes: Uint8Array | null = null;
    if (chain.readableCount === 1) bytes = mem.locate(chain.addr[0]! + hdr, frameLength);
    else if (chain.readableCount === 2 && chain.len[0] === hdr)
      bytes = mem.locate(chain.addr[1]!, frameLength);
    let at: number;
    let headerBytes: Uint8Array = this.header;
    // Guest memory stays put until the chain completes (after flushTransmit); the scratch does not.
    const inGuestMemory = bytes !== null;
    if (bytes) {
      at = mem.locatedOffset;
      let h = this.headerViews[hdr];
      if (h === undefined) h = this.headerViews[hdr] = this.header.subarray(0, hdr);
      gatherReadable(mem, chain, h);
    } else {
      this.scratch ??= new Uint8Array(MAX_FRAME + 32);
      gatherReadable(mem, chain, this.scratch.subarray(0, total));
      headerBytes = bytes = this.scratch;
      at = hdr;
    }
    const offload = readVnetHeader(headerBytes, 0, this.offload, hdr);
    const tunnel = isTunnelGso(offload);
    if (
      tunnelTxRefused(offload, shared.hostOffloadMask) ||
      (tunnel &&
        checkTunnelOffload(bytes, offload, this.pkt, this.innerPkt, at, at + frameLength) !== TUNNEL_OK)
    ) {
      // VIRTIO 1.4 §5.1.6.2: a tunnel request that was not negotiated or does not fit the frame.
      stats.txDropped++;
      stats.txDropMalformed++;
      return;
    }
    if (shared.exactHdrLen && isGso(offload)) {
      // GUEST_HDRLEN: hdr_len is the driver's exact header length (VIRTIO 1.3 §5.1.6.2); a frame
      // whose headers say otherwise is malformed (the spec's caution against a lying driver). Over a
      // tunnel it ends with the inner transport header (VIRTIO 1.4).
      const p = tunnel ? this.innerPkt : parsePacket(bytes, this.pkt, at, at + frameLength);
      if (p.l4HeaderLength === 0 || p.l4Offset + p.l4HeaderLength - at !== offload.hdrLen) {
        stats.txDropped++;
        stats.txDropMalformed++;
        return;
      }
    }
    if (shared.autoSteering()) {
      shared.flows.recordTx(bytes, parsePacket(bytes, this.pkt, at, at + frameLength), this.pair);
    }
    if (offload.flags & NetHdrFlags.NEEDS_CSUM) stats.txNeedsCsum++;
    else stats.txCsumNone++;
    const gso = isGso(offload);
    if (gso) {
      stats.txGsoPackets++;
      stats.txGsoBytes += frameLength;
      if (tunnel) stats.txTunnelGsoPackets++;
    }
    if (!wantsOffload(offload)) {
      this.transmitOne(bytes, at, frameLength, null, inGuestMemory);
      return;
    }
    if (
      shared.backend.capabilities.vnetHeader &&
      offloadPermitted(offload, shared.hostOffloadMask) &&
      (!tunnel || this.backendTakesTunnel(offload))
    ) {
      if (gso) {
        stats.txGsoPacketsNoseg++;
        stats.txGsoBytesNoseg += frameLength;
      }
      this.transmitOne(bytes, at, frameLength, offload, inGuestMemory);
      return;
    }
    // No vnet header on the backend (or an offload the guest may not use): finish it in software.
    this.segmenter ??= new SoftwareSegmenter();
    const frame = bytes.subarray(at, at + frameLength);
    this.segmentingGso = gso;
    let r: number;
    try {
      r = this.segmenter.process(frame, offload, this.emitSegment);
    } finally {
      this.segmentingGso = false;
    }
    if (r !== SEGMENT_OK) {
      stats.txDropped++;
      stats.txDropMalformed++;
    }
  }

  /** The backend takes this tunnel GSO frame as it is (TUN_F_UDP_TUNNEL_GSO[_CSUM] and a 24-byte header). */
  private backendTakesTunnel(o: NetOffload): boolean {
    const off = this.shared.backend.capabilities.offloads;
    if (off.tunnel !== true) return false;
    return (o.flags & NetHdrFlags.UDP_TUNNEL_CSUM) === 0 || off.tunnelCsum === true;
  }

  /** Lets a batching backend write what it queued for this pair; its failures become counted drops. */
  private flushTransmit(): void {
    const backend = this.shared.backend;
    if (backend.flushTransmit === undefined) return;
    const handed = this.unflushed;
    this.unflushed = 0;
    // Only frames it reported 'sent' since the last flush can have failed (a broken count is clamped).
    const reported = backend.flushTransmit(this.shared.backendQueueOf(this.pair));
    const failed = Number.isInteger(reported) ? Math.min(Math.max(reported, 0), handed) : 0;
    if (failed > 0) {
      this.stats.txPackets -= failed;
      this.stats.txDropped += failed;
    }
  }

  /**
   * Hands `bytes[at, at + length)` to the backend: `transmitRange` (no view; the backend may queue it
   * until flushTransmit) when the bytes are guest memory of a chain not yet completed, else `transmit`
   * (the scratch and the segmenter's buffer are reused by the next frame).
   */
  private transmitOne(
    bytes: Uint8Array,
    at: number,
    length: number,
    offload: NetOffload | null,
    inGuestMemory: boolean,
  ): void {
    const stats = this.stats;
    const backend = this.shared.backend;
    const qp = this.shared.backendQueueOf(this.pair);
    const r =
      backend.transmitRange !== undefined && inGuestMemory
        ? backend.transmitRange(bytes, at, length, qp, offload)
        : backend.transmit(
            at === 0 && length === bytes.length ? bytes : bytes.subarray(at, at + length),
            qp,
            offload,
          );
    if (r === 'sent') {
      stats.txPackets++;
      stats.txBytes += length;
      this.unflushed++;
    } else stats.txDropped++;
  }
}
