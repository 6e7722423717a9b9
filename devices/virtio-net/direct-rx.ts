/**
 * Direct receive (BackendSink.lendReceive / completeReceive / cancelReceive): the device lends the next
 * receive buffer(s) of a pair and the backend reads the frame straight into guest memory. A completed
 * lend is published in place; one the guest cannot take that way (offloads it did not negotiate, too big
 * without mergeable buffers, too few buffers for the overflow) is copied out and handed to the pair's
 * `RxPath.deliver`, exactly where a copied frame would go (VIRTIO 1.3 §5.1.6.4).
 */
import type { GuestMemory } from '../../lib/memory/guest-memory.js';
import { emptyOffload, MAX_FRAME, type NetOffload, ReceiveTarget } from '../../lib/net/backend.js';
import { ParsedPacket } from '../../lib/net/packet-parser.js';
import { VIRTIO_NET_HASH_REPORT_NONE } from '../../lib/net/rss-hash.js';
import { checkTunnelOffload, isTunnelGso, TUNNEL_OK } from '../../lib/net/tunnel.js';
import { readVnetHeader, writeVnetHeader } from '../../lib/net/vnet-header.js';
import { scatterWritable } from '../../virtio/queue/descriptor-chain.js';
import { DescriptorChain, type Virtqueue } from '../../virtio/queue/virtqueue.js';
import { isGso, offloadPermitted } from './offloads.js';
import { NO_LIMIT, type RxPath, requireWritable } from './rx.js';
import type { NetShared } from './shared.js';
import { countRxHeader } from './stats.js';

/** Frame bytes the receive filter reads (MACs, one VLAN tag): a lent buffer's first segment holds them. */
const FILTER_BYTES = 16;

/** The lend state of one queue pair. */
class PairLend {
  /** The chains of the lend, in pop order, and the lent bytes up to the end of each. */
  private readonly chains: DescriptorChain[] = [new DescriptorChain(8)];
  private count = 0;
  private readonly end = new Float64Array(ReceiveTarget.MAX_SEGMENTS);
  /** Guest address of each lent segment, for the memory's write hook (GuestMemory.noteWritten). */
  private readonly segAddr = new Float64Array(ReceiveTarget.MAX_SEGMENTS);
  /** Bytes written into each extra buffer of a mergeable overflow (the buffers are rx.chains). */
  private readonly extraLength: number[] = [];
  /** Running average of directly received lengths: how much to lend with mergeable buffers. */
  private average = 0;
  private target: ReceiveTarget | null = null;
  private headerSize = 0;
  private backendQueue = 0;
  private readonly offload = emptyOffload();
  private readonly outerPkt = new ParsedPacket();
  private readonly innerPkt = new ParsedPacket();
  /** A lend that falls back to copying gathers its frame here (allocated on first use). */
  private scratch: Uint8Array | null = null;

  constructor(
    private readonly shared: NetShared,
    private readonly rx: RxPath,
  ) {}

  reset(): void {
    this.count = 0;
    this.average = 0;
  }

  /**
   * Lends buffers of `q` into `t`: one, or with mergeable buffers as many as recent frames needed on
   * average (a 64 KiB GSO frame then lands in place; what a lend lacks is copied from the overflow, what
   * it has extra goes back to the ring). False when the first buffer cannot be lent.
   */
  lend(q: Virtqueue, mem: GuestMemory, backendQueue: number, hs: number, t: ReceiveTarget): boolean {
    const hdr = this.shared.hdrSize;
    const want = this.shared.mergeable ? Math.min(this.average, hdr + MAX_FRAME) : 0;
    const chains = this.chains;
    t.count = 0;
    t.capacity = 0;
    let n = 0;
    do {
      if (n === chains.length) chains.push(new DescriptorChain(8));
      const chain = chains[n]!;
      if (!q.pop(chain)) break;
      n++;
      if (!this.lendSegments(mem, chain, t, n === 1 ? hdr - hs : 0)) {
        q.unpop(chain);
        n--;
        break;
      }
      this.end[n - 1] = t.capacity;
    } while (t.capacity < want && n < t.offsets.length);
    if (n === 0) return false;
    this.count = n;
    this.backendQueue = backendQueue;
    this.headerSize = hs;
    this.target = t;
    return true;
  }

  /**
   * Appends `chain`'s writable segments to `t`, the first `skip` bytes left out (the header, when the
   * backend writes none). False, with `t` unchanged, when they cannot be lent: too many segments, a first
   * segment without room for the header and the bytes the filter reads (Linux's layouts have it), or a
   * segment spanning guest-memory regions (the copying path handles those).
   */
  private lendSegments(mem: GuestMemory, chain: DescriptorChain, t: ReceiveTarget, skip: number): boolean {
    requireWritable(chain);
    const first = chain.readableCount;
    const end = first + chain.writableCount;
    if (t.count + chain.writableCount > t.offsets.length) return false;
    if (t.count === 0 && chain.len[first]! < this.shared.hdrSize + FILTER_BYTES) return false;
    let count = t.count;
    let capacity = t.capacity;
    for (let i = first; i < end; i++) {
      // The first descriptor is located whole: the header the device writes before `skip` must lie in
      // the same region as the bytes lent after it.
      const cut = i === first ? skip : 0;
      const len = chain.len[i]! - cut;
      if (len === 0) continue;
      const bytes = mem.locate(chain.addr[i]!, chain.len[i]!, true);
      if (bytes === null) return false;
      t.bytes[count] = bytes;
      this.segAddr[count] = chain.addr[i]! + cut;
      t.offsets[count] = mem.locatedOffset + cut;
      t.lengths[count] = len;
      count++;
      capacity += len;
    }
    t.count = count;
    t.capacity = capacity;
    return true;
  }

  /** The lent buffer was not used: every lent chain goes back to the ring. */
  cancel(): void {
    const q = this.shared.ctx?.queue(2 * this.rx.pair);
    if (q) this.unpop(q, 0);
  }

  /** The backend filled the lend with `n` bytes (the rest in `overflow`): publish it, or deliver a copy. */
  complete(n: number, overflow: Uint8Array): void {
    const s = this.shared;
    const ctx = s.ctx;
    const pair = this.rx.pair;
    const q = ctx?.queue(2 * pair);
    if (!ctx || !q) {
      this.count = 0;
      return;
    }
    const t = this.target!;
    const hs = this.headerSize;
    const hdr = s.hdrSize;
    const frameLength = n - hs;
    this.noteWrites(ctx.memory, t, n);
    // Also NaN-safe: a backend that reports a length it cannot have read gives the buffers back.
    if (
      !(Number.isInteger(n) && frameLength >= 14 && frameLength <= MAX_FRAME) ||
      !s.linkUp ||
      n > t.capacity + overflow.length
    ) {
      this.unpop(q, 0);
      s.deviceStats.rxDroppedNotReady++;
      return;
    }
    const b0 = t.bytes[0]!;
    const o0 = t.offsets[0]!;
    const headerAt = o0 - hdr + hs;
    const frameAt = o0 + hs;
    const stats = this.rx.stats;
    if (!s.rxFilter.acceptsAt(b0, frameAt, frameLength)) {
      this.unpop(q, 0);
      stats.rxFiltered++;
      return;
    }
    // EWMA (1/8) of what frames needed, as Linux sizes its mergeable buffers.
    this.average += (n - this.average) / 8;
    const offload = hs > 0 ? readVnetHeader(b0, headerAt, this.offload, hs) : null;
    if (
      (offload &&
        (!offloadPermitted(offload, s.guestOffloadMask) ||
          !this.tunnelInPlace(offload, b0, frameAt, frameAt + frameLength, t))) ||
      (n > t.capacity && !s.mergeable)
    ) {
      // Software offloads, a tunnel frame whose headers are not all in the first segment (the copy path
      // checks it), or (without mergeable buffers) a frame larger than the buffer.
      this.deliverCopy(q, t, n, overflow, offload);
      return;
    }
    // The lent chains the frame reaches; the rest go back.
    let used = 1;
    while (used < this.count && this.end[used - 1]! < n) used++;
    this.unpop(q, used);
    let extra = 0;
    if (n > t.capacity) {
      // Mergeable: the rest went to the overflow; it continues in further buffers (§5.1.6.4.2).
      extra = this.scatterOverflow(q, ctx.memory, overflow, n - t.capacity);
      if (extra === 0) {
        this.deliverCopy(q, t, n, overflow, offload);
        return;
      }
      extra--;
    }
    writeVnetHeader(b0, headerAt, offload, hdr, used + extra, 0, VIRTIO_NET_HASH_REPORT_NONE);
    ctx.memory.noteWritten(this.segAddr[0]! - (hdr - hs), hdr);
    let before = 0;
    for (let i = 0; i < used; i++) {
      const end = Math.min(n, this.end[i]!);
      q.addUsed(this.chains[i]!, (i === 0 ? hdr - hs : 0) + end - before);
      before = end;
    }
    for (let i = 0; i < extra; i++) q.addUsed(this.rx.chains[i]!, this.extraLength[i]!);
    this.count = 0;
    stats.rxUsedFolded += q.publishUsed();
    stats.rxPackets++;
    stats.rxBytes += frameLength;
    if (offload) countRxHeader(stats, offload.flags, isGso(offload), frameLength, isTunnelGso(offload));
    else stats.rxCsumNone++;
    s.rxPublished(pair, q);
  }

  /**
   * Not a tunnel GSO frame, or one whose tunnel headers check out within the first lent segment (VIRTIO
   * 1.4 §5.1.6.4: the backend's offsets are checked before the guest sees them).
   */
  private tunnelInPlace(
    o: NetOffload,
    b0: Uint8Array,
    frameAt: number,
    frameEnd: number,
    t: ReceiveTarget,
  ): boolean {
    if (!isTunnelGso(o)) return true;
    const end = Math.min(frameEnd, t.offsets[0]! + t.lengths[0]!);
    return checkTunnelOffload(b0, o, this.outerPkt, this.innerPkt, frameAt, end) === TUNNEL_OK;
  }

  /**
   * The frame cannot stay where it was read: copied out, every lent buffer back to the ring, and
   * delivered to this pair as a copied frame is. The lend already did what `Receiver.receive` does before
   * `deliver`: the device was running with the link up, no RSS or flow steering chose another pair (the
   * lend is refused then), and the filter accepted the frame; no hash is reported.
   */
  private deliverCopy(
    q: Virtqueue,
    t: ReceiveTarget,
    n: number,
    overflow: Uint8Array,
    offload: NetOffload | null,
  ): void {
    const frame = this.copyFrame(t, n, overflow);
    this.unpop(q, 0);
    this.rx.deliver(frame, offload, this.backendQueue, 0, VIRTIO_NET_HASH_REPORT_NONE);
  }

  /**
   * Tells the memory's write hook what the backend wrote into the lent segments: the first `n` bytes, or
   * every lent byte when `n` is not a length it could have written.
   */
  private noteWrites(mem: GuestMemory, t: ReceiveTarget, n: number): void {
    let left = Number.isInteger(n) && n >= 0 ? n : t.capacity;
    for (let i = 0; i < t.count && left > 0; i++) {
      const len = Math.min(t.lengths[i]!, left);
      mem.noteWritten(this.segAddr[i]!, len);
      left -= len;
    }
  }

  /** Gathers the frame of the lend (without the backend's header) into the scratch; returns a view of it. */
  private copyFrame(t: ReceiveTarget, n: number, overflow: Uint8Array): Uint8Array {
    const hs = this.headerSize;
    this.scratch ??= new Uint8Array(MAX_FRAME);
    const scratch = this.scratch;
    let pos = 0; // in the [header][frame] stream the backend wrote
    let out = 0;
    for (let i = 0; i < t.count && pos < n; i++) {
      const len = Math.min(t.lengths[i]!, n - pos);
      const from = Math.max(hs - pos, 0);
      const o = t.offsets[i]!;
      if (from < len) {
        scratch.set(t.bytes[i]!.subarray(o + from, o + len), out);
        out += len - from;
      }
      pos += len;
    }
    if (pos < n) scratch.set(overflow.subarray(0, n - pos), out);
    return scratch.subarray(0, n - hs);
  }

  /**
   * Mergeable direct receive: pops buffers for the `remaining` bytes that overflowed the lent one and
   * copies them in. Returns the buffers the frame spans, the lent one included (lengths written in
   * extraLength), or 0 with nothing popped when the ring has too few.
   */
  private scatterOverflow(q: Virtqueue, mem: GuestMemory, overflow: Uint8Array, remaining: number): number {
    const rx = this.rx;
    const extra = rx.popBuffers(q, remaining, NO_LIMIT);
    if (extra === 0) return 0;
    let pos = 0;
    for (let i = 0; i < extra; i++) {
      const c = rx.chains[i]!;
      const k = Math.min(c.writableLength, remaining - pos);
      scatterWritable(mem, c, overflow.subarray(pos, pos + k), 0);
      this.extraLength[i] = k;
      pos += k;
    }
    return extra + 1;
  }

  /** Gives the lent chains from `from` on back to the ring (last popped first). */
  private unpop(q: Virtqueue, from: number): void {
    for (let i = this.count - 1; i >= from; i--) q.unpop(this.chains[i]!);
    this.count = from;
  }
}

/** The device's side of direct receive: which pair holds the one lend a backend may have open. */
export class DirectReceiver {
  private readonly pairs: PairLend[];
  /** The pair of the lend in progress, -1: none. */
  private active = -1;

  constructor(
    private readonly shared: NetShared,
    private readonly rx: readonly RxPath[],
  ) {
    this.pairs = rx.map((r) => new PairLend(shared, r));
  }

  /**
   * Lends the next receive buffer of the pair backend queue `backendQueue` feeds, when that buffer can be
   * chosen before the frame is seen: the device running with the link up, the backend's header size
   * the negotiated one (or none), no RSS in software or hash report, no automatic steering, nothing
   * waiting in the pair's backlog.
   */
  lend(backendQueue: number, hs: number, t: ReceiveTarget): boolean {
    const s = this.shared;
    const ctx = s.ctx;
    if (!ctx || s.broken || s.stopped || !s.linkUp || this.active >= 0) return false;
    const hdr = s.hdrSize;
    if (hs !== 0 && hs !== hdr) return false;
    // RSS must see the frame first, unless the backend applied it and no hash is reported.
    if (s.rss.enabled && !(s.rssInBackend && s.rss.redirect && !s.hashReport)) return false;
    if (s.autoSteering()) return false;
    const pair = s.pairOf(backendQueue);
    if (this.rx[pair]!.backlog.count > 0) return false;
    const q = ctx.queue(2 * pair);
    if (!q || !this.pairs[pair]!.lend(q, ctx.memory, backendQueue, hs, t)) return false;
    this.active = pair;
    return true;
  }

  complete(n: number, overflow: Uint8Array): void {
    const pair = this.active;
    if (pair < 0) return;
    this.active = -1;
    this.pairs[pair]!.complete(n, overflow);
  }

  cancel(): void {
    const pair = this.active;
    if (pair < 0) return;
    this.active = -1;
    this.pairs[pair]!.cancel();
  }

  /** Device reset: the lend in progress dies, the size averages start over. */
  reset(): void {
    this.active = -1;
    for (const p of this.pairs) p.reset();
  }
}
