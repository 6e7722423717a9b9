/**
 * The embedded switch of an SR-IOV virtio-net device: one port per function (the PF and each enabled VF)
 * and one uplink (the PF's backend: a tap, a MemoryBackend, any NetBackend), like a hardware NIC's VEB
 * (PCIe SR-IOV, VIRTIO 1.3 §2.12 and §5.1 leave the switching to the device).
 *
 * - Unicast goes to the port that owns the destination MAC (a VST port only in its VLAN); unknown unicast
 *   from a function goes to the uplink; from the uplink to the PF as default port when the PF's own
 *   receive filter takes it (promiscuous, MAC table), else it is counted as `dropNoOwner`.
 * - Broadcast and multicast are flooded to every other port whose own receive filter accepts them, and to
 *   the uplink, never back to the sender.
 * - Offload metadata (GSO, partial checksum) crosses ports untouched: the receiving device hands it to a
 *   guest that negotiated the offload and finishes it in software otherwise.
 * - Per-VF policy: spoof check, port VLAN (VST: tag on transmit, strip and filter on receive), link
 *   state, a transmit rate limit with backpressure (port.ts).
 *
 * One copy per frame: frames are read where they lie and written once, into the receiver's buffers; only a
 * frame whose VLAN tag must be added or removed is rebuilt in the switch's scratch first.
 *
 * Unicast from one function to another that lies in the sender's guest memory is queued and delivered at
 * the sender's flushTransmit (the batching-backend contract of transmitRange: its chain is not completed
 * before), so a burst is sent, then received, in two loops instead of a receive nested in every transmit.
 * Anything delivered at once (a flood, a frame from the uplink, one in a scratch) first delivers what is
 * queued, so each receiver sees frames in the order they were switched.
 */
import {
  type BackendSink,
  emptyOffload,
  MAX_FRAME,
  type NetBackend,
  type NetOffload,
  type TransmitResult,
} from '../../lib/net/backend.js';
import type { VfInfo } from './policy.js';
import { PortStats, type SwitchCore, SwitchPort } from './port.js';
import type { Clock } from './token-bucket.js';

/** Counters of every port, as `stats()` of the PF reports them under `switch`. */
export interface SwitchStats {
  uplink: PortStats;
  pf: PortStats;
  vfs: (PortStats & { index: number })[];
}

const VLAN_TPID = 0x8100;
/** Queued unicast deliveries at most (a device's tx burst is 256 chains); a full queue is delivered. */
const PENDING = 256;
const NO_BYTES = new Uint8Array(0);
const QINQ_TPID = 0x88a8;

function isTagged(bytes: Uint8Array, at: number): boolean {
  const t = (bytes[at + 12]! << 8) | bytes[at + 13]!;
  return t === VLAN_TPID || t === QINQ_TPID;
}

function equalMac(bytes: Uint8Array, at: number, mac: Uint8Array): boolean {
  return (
    bytes[at] === mac[0] &&
    bytes[at + 1] === mac[1] &&
    bytes[at + 2] === mac[2] &&
    bytes[at + 3] === mac[3] &&
    bytes[at + 4] === mac[4] &&
    bytes[at + 5] === mac[5]
  );
}

export class EmbeddedSwitch implements SwitchCore {
  readonly pf: SwitchPort;
  readonly uplinkStats = new PortStats();
  uplinkUp = true;
  /** The PF and the enabled VFs, in lookup order. */
  private readonly ports: SwitchPort[] = [];
  private readonly vfPorts: (SwitchPort | undefined)[] = [];
  private readonly scratch = new Uint8Array(MAX_FRAME + 4);
  private readonly shaped = emptyOffload();
  // Where shape() left the frame for the receiver.
  private outBytes: Uint8Array = this.scratch;
  private outOffset = 0;
  private outLength = 0;
  private outOffload: NetOffload | null = null;
  // The queue of deliveries (see the module comment), as parallel arrays reused across bursts.
  private readonly pSrc: (SwitchPort | null)[] = new Array<SwitchPort | null>(PENDING).fill(null);
  private readonly pDst: (SwitchPort | null)[] = new Array<SwitchPort | null>(PENDING).fill(null);
  private readonly pBytes: Uint8Array[] = new Array<Uint8Array>(PENDING).fill(NO_BYTES);
  private readonly pOffset = new Float64Array(PENDING);
  private readonly pLength = new Int32Array(PENDING);
  private readonly pQueue = new Int32Array(PENDING);
  private readonly pVid = new Int32Array(PENDING);
  private readonly pHasOffload = new Uint8Array(PENDING);
  private readonly pOffload: NetOffload[] = Array.from({ length: PENDING }, emptyOffload);
  private pendingHead = 0;
  private pendingCount = 0;

  constructor(
    readonly uplink: NetBackend,
    private readonly clock?: Clock,
  ) {
    this.pf = new SwitchPort(this, 'pf', uplink.capabilities.queuePairs, clock);
    this.ports.push(this.pf);
    uplink.attach(this.uplinkSink);
  }

  /** No VF enabled: the PF's port is a plain pass-through to the uplink. */
  get passthrough(): boolean {
    return this.ports.length === 1;
  }

  /** Creates the port of VF `index` (on VF Enable) with its policy. */
  addVf(index: number, queuePairs: number, info: VfInfo): SwitchPort {
    const wasPassthrough = this.passthrough;
    const port = new SwitchPort(this, index, queuePairs, this.clock);
    this.vfPorts[index] = port;
    this.ports.push(port);
    this.applyPolicy(port, info);
    if (wasPassthrough) {
      // The uplink must keep reading for the VFs even while the PF has no receive buffers.
      for (let q = 0; q < this.pf.paused.length; q++) if (this.pf.paused[q]) this.uplink.resume(q);
    }
    return port;
  }

  /** Removes VF `index`'s port (VF Enable cleared, or the VF's backend closed). */
  removeVf(index: number): void {
    const port = this.vfPorts[index];
    if (port === undefined) return;
    this.flushPending();
    this.vfPorts[index] = undefined;
    this.ports.splice(this.ports.indexOf(port), 1);
    if (this.passthrough) {
      for (let q = 0; q < this.pf.paused.length; q++) if (this.pf.paused[q]) this.uplink.pause(q);
    }
  }

  vfPort(index: number): SwitchPort | undefined {
    return this.vfPorts[index];
  }

  /** Applies a VF's policy to its port (the MAC and trust are the device's part). */
  applyPolicy(port: SwitchPort, info: VfInfo): void {
    const wasUp = port.linkUp;
    port.vlan = info.vlan;
    port.qos = info.qos;
    port.spoofCheck = info.spoofCheck;
    port.linkState = info.linkState;
    port.setMaxTxRate(info.maxTxRateMbps);
    if (port.linkUp !== wasUp) port.sink?.linkChanged?.(port.linkUp);
  }

  stats(): SwitchStats {
    const vfs: (PortStats & { index: number })[] = [];
    for (const [index, p] of this.vfPorts.entries()) if (p) vfs.push({ index, ...p.stats });
    return { uplink: { ...this.uplinkStats }, pf: { ...this.pf.stats }, vfs };
  }

  /** Puts counters of a snapshot back (validated by the caller); ports that do not exist are skipped. */
  restoreStats(s: SwitchStats): void {
    Object.assign(this.uplinkStats, s.uplink);
    Object.assign(this.pf.stats, s.pf);
    for (const { index, ...counters } of s.vfs) {
      const p = this.vfPorts[index];
      if (p) Object.assign(p.stats, counters);
    }
  }

  /** Switches a frame from `src` (null: the uplink). See the module comment for the rules. */
  forward(
    src: SwitchPort | null,
    bytes: Uint8Array,
    offset: number,
    length: number,
    queuePair: number,
    offload: NetOffload | null,
    stable: boolean,
  ): TransmitResult {
    const ss = src === null ? this.uplinkStats : src.stats;
    if (length < 14) {
      ss.dropNoOwner++;
      return 'dropped';
    }
    if (src !== null) {
      if (!src.linkUp) {
        ss.dropLinkDown++;
        return 'dropped';
      }
      if (src.spoofCheck && (src.owner === null || !equalMac(bytes, offset + 6, src.owner.mac))) {
        ss.dropSpoof++;
        return 'dropped';
      }
    }
    let vid = 0;
    if (src !== null && src.vlan !== 0) {
      if (isTagged(bytes, offset)) {
        ss.dropVlan++;
        return 'dropped';
      }
      vid = src.vlan;
    } else if (isTagged(bytes, offset) && length >= 18) {
      vid = ((bytes[offset + 14]! << 8) | bytes[offset + 15]!) & 0xfff;
    }
    ss.txFrames++;
    ss.txBytes += length;
    src?.charge(length);

    if ((bytes[offset]! & 1) !== 0) {
      if (this.pendingCount > 0) this.flushPending();
      const ports = this.ports;
      for (let i = 0; i < ports.length; i++) {
        const d = ports[i]!;
        if (d !== src) this.deliver(src, d, bytes, offset, length, queuePair, offload, vid, true);
      }
      if (src !== null) this.toUplink(src, bytes, offset, length, queuePair, offload, stable);
      return 'sent';
    }
    const ports = this.ports;
    for (let i = 0; i < ports.length; i++) {
      const d = ports[i]!;
      if (d === src || d.owner === null || !equalMac(bytes, offset, d.owner.mac)) continue;
      if (d.vlan !== 0 && d.vlan !== vid) continue;
      if (stable && src !== null) this.enqueue(src, d, bytes, offset, length, queuePair, offload, vid);
      else {
        if (this.pendingCount > 0) this.flushPending();
        this.deliver(src, d, bytes, offset, length, queuePair, offload, vid, false);
      }
      return 'sent';
    }
    if (src === null) {
      if (this.pendingCount > 0) this.flushPending();
      // From outside and nobody owns it: the PF is the default port if its own filter takes it.
      const pf = this.pf;
      if (pf.owner?.accepts(bytes, offset, length)) {
        this.deliver(null, pf, bytes, offset, length, queuePair, offload, vid, false);
      } else ss.dropNoOwner++;
      return 'sent';
    }
    return this.toUplink(src, bytes, offset, length, queuePair, offload, stable);
  }

  /** Delivers the queued unicast, in order (also when a receiver's interrupt re-enters the switch). */
  flushPending(): void {
    while (this.pendingHead < this.pendingCount) {
      const i = this.pendingHead++;
      const bytes = this.pBytes[i]!;
      this.pBytes[i] = NO_BYTES;
      this.deliver(
        this.pSrc[i]!,
        this.pDst[i]!,
        bytes,
        this.pOffset[i]!,
        this.pLength[i]!,
        this.pQueue[i]!,
        this.pHasOffload[i] === 1 ? this.pOffload[i]! : null,
        this.pVid[i]!,
        false,
      );
    }
    this.pendingHead = 0;
    this.pendingCount = 0;
  }

  private enqueue(
    src: SwitchPort,
    d: SwitchPort,
    bytes: Uint8Array,
    offset: number,
    length: number,
    queuePair: number,
    offload: NetOffload | null,
    vid: number,
  ): void {
    if (this.pendingCount === PENDING) this.flushPending();
    const i = this.pendingCount++;
    this.pSrc[i] = src;
    this.pDst[i] = d;
    this.pBytes[i] = bytes;
    this.pOffset[i] = offset;
    this.pLength[i] = length;
    this.pQueue[i] = queuePair;
    this.pVid[i] = vid;
    // The sender reuses its offload object for the next frame: keep a copy.
    this.pHasOffload[i] = offload === null ? 0 : 1;
    if (offload !== null) {
      const o = this.pOffload[i]!;
      o.flags = offload.flags;
      o.gsoType = offload.gsoType;
      o.gsoSize = offload.gsoSize;
      o.hdrLen = offload.hdrLen;
      o.csumStart = offload.csumStart;
      o.csumOffset = offload.csumOffset;
    }
  }

  private deliver(
    src: SwitchPort | null,
    d: SwitchPort,
    bytes: Uint8Array,
    offset: number,
    length: number,
    queuePair: number,
    offload: NetOffload | null,
    vid: number,
    flood: boolean,
  ): void {
    const ds = d.stats;
    const sink = d.sink;
    if (!d.linkUp || sink === null) {
      ds.dropLinkDown++;
      return;
    }
    const dq = queuePair % d.capabilities.queuePairs;
    if (d.paused[dq]) {
      ds.dropNoBuffer++;
      return;
    }
    if (d.vlan !== 0 && d.vlan !== vid) {
      ds.dropVlan++;
      return;
    }
    this.shape(src, d, bytes, offset, length, offload, vid);
    if (flood && d.owner !== null && !d.owner.accepts(this.outBytes, this.outOffset, this.outLength)) {
      ds.dropFilter++;
      return;
    }
    ds.rxFrames++;
    ds.rxBytes += this.outLength;
    const b = this.outBytes;
    const o = this.outOffset;
    const l = this.outLength;
    // A range, not a view: the device copies it straight from where it lies (no allocation per frame).
    if (sink.receiveRange !== undefined) sink.receiveRange(b, o, l, dq, this.outOffload);
    else sink.receive(o === 0 && l === b.length ? b : b.subarray(o, o + l), dq, this.outOffload);
  }

  private toUplink(
    src: SwitchPort,
    bytes: Uint8Array,
    offset: number,
    length: number,
    queuePair: number,
    offload: NetOffload | null,
    stable: boolean,
  ): TransmitResult {
    const up = this.uplink;
    const us = this.uplinkStats;
    const uq = queuePair % up.capabilities.queuePairs;
    this.shape(src, null, bytes, offset, length, offload, src.vlan);
    const b = this.outBytes;
    const o = this.outOffset;
    const l = this.outLength;
    let r: TransmitResult;
    // Guest memory of a chain not yet completed may be queued by a batching uplink (until flushTransmit);
    // the scratch and the device's own buffers must be sent during the call.
    if (stable && b === bytes && up.transmitRange !== undefined)
      r = up.transmitRange(b, o, l, uq, this.outOffload);
    else r = up.transmit(o === 0 && l === b.length ? b : b.subarray(o, o + l), uq, this.outOffload);
    if (r === 'sent') {
      us.rxFrames++;
      us.rxBytes += l;
    } else us.dropNoBuffer++;
    return r;
  }

  /**
   * Leaves in out* the frame as port `d` (null: the uplink) must see it: a VST port untagged, any other
   * port tagged when the sender's VLAN was a port VLAN. Offsets in the offload move with the tag.
   */
  private shape(
    src: SwitchPort | null,
    d: SwitchPort | null,
    bytes: Uint8Array,
    offset: number,
    length: number,
    offload: NetOffload | null,
    vid: number,
  ): void {
    const srcVst = src !== null && src.vlan !== 0;
    const dstVst = d !== null && d.vlan !== 0;
    let delta = 0;
    if (dstVst && !srcVst && vid !== 0) {
      // Strip the tag the frame carries.
      const s = this.scratch;
      s.set(bytes.subarray(offset, offset + 12), 0);
      s.set(bytes.subarray(offset + 16, offset + length), 12);
      delta = -4;
    } else if (!dstVst && srcVst) {
      // Add the port VLAN's tag.
      const s = this.scratch;
      const tci = (src.qos << 13) | src.vlan;
      s.set(bytes.subarray(offset, offset + 12), 0);
      s[12] = VLAN_TPID >> 8;
      s[13] = VLAN_TPID & 0xff;
      s[14] = tci >> 8;
      s[15] = tci & 0xff;
      s.set(bytes.subarray(offset + 12, offset + length), 16);
      delta = 4;
    }
    if (delta === 0) {
      this.outBytes = bytes;
      this.outOffset = offset;
      this.outLength = length;
      this.outOffload = offload;
      return;
    }
    this.outBytes = this.scratch;
    this.outOffset = 0;
    this.outLength = length + delta;
    if (offload === null) this.outOffload = null;
    else {
      const o = this.shaped;
      o.flags = offload.flags;
      o.gsoType = offload.gsoType;
      o.gsoSize = offload.gsoSize;
      o.hdrLen = offload.hdrLen === 0 ? 0 : offload.hdrLen + delta;
      o.csumStart = offload.flags & 1 ? offload.csumStart + delta : offload.csumStart;
      o.csumOffset = offload.csumOffset;
      this.outOffload = o;
    }
  }

  private readonly uplinkSink: BackendSink = {
    receive: (frame, queuePair, offload) => {
      if (this.passthrough) {
        const sink = this.pf.sink;
        if (sink !== null) sink.receive(frame, queuePair, offload);
        else this.uplinkStats.dropNoOwner++;
        return;
      }
      this.forward(null, frame, 0, frame.length, queuePair, offload, false);
    },
    receiveRange: (bytes, offset, length, queuePair, offload) => {
      if (this.passthrough) {
        const sink = this.pf.sink;
        if (sink === null) this.uplinkStats.dropNoOwner++;
        else if (sink.receiveRange !== undefined)
          sink.receiveRange(bytes, offset, length, queuePair, offload);
        else sink.receive(bytes.subarray(offset, offset + length), queuePair, offload);
        return;
      }
      // An untrusted backend's range: checked before the switch reads it.
      if (
        !(
          Number.isInteger(offset) &&
          Number.isInteger(length) &&
          offset >= 0 &&
          offset + length <= bytes.length
        )
      ) {
        this.uplinkStats.dropNoOwner++;
        return;
      }
      this.forward(null, bytes, offset, length, queuePair, offload, false);
    },
    lendReceive: (queuePair, headerSize, target) => {
      // Zero copy into the PF's buffers only while it is the sole receiver.
      const sink = this.pf.sink;
      if (!this.passthrough || sink?.lendReceive === undefined) return false;
      return sink.lendReceive(queuePair, headerSize, target);
    },
    completeReceive: (length, overflow) => this.pf.sink?.completeReceive?.(length, overflow),
    cancelReceive: () => this.pf.sink?.cancelReceive?.(),
    // A burst from the uplink may reach any function: each decides its interrupts once for it.
    beginReceiveBurst: () => {
      for (const p of this.ports) p.sink?.beginReceiveBurst?.();
    },
    endReceiveBurst: () => {
      for (const p of this.ports) p.sink?.endReceiveBurst?.();
    },
    linkChanged: (up) => {
      const before = this.ports.map((p) => p.linkUp);
      this.uplinkUp = up;
      this.pf.sink?.linkChanged?.(up);
      for (const [i, p] of this.ports.entries())
        if (!p.isPf && p.linkUp !== before[i]) p.sink?.linkChanged?.(p.linkUp);
    },
  };
}
