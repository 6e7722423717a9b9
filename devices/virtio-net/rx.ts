/**
 * The copying receive path (VIRTIO 1.3 §5.1.6.3 "Setting Up Receive Buffers", §5.1.6.4 "Processing of
 * Incoming Packets"). `Receiver.receive` takes a backend frame, lets the pair it arrived on choose the
 * destination pair (RSS, automatic steering) and applies the filter; `RxPath.deliver` is the one way a
 * frame reaches a pair, also for a direct receive that falls back (direct-rx.ts): into guest buffers,
 * else the pair's backlog with the backend paused, else a counted drop.
 */

import { memoryFence } from '../../lib/memory/fence.js';
import { copyOffload, emptyOffload, MAX_FRAME, type NetOffload } from '../../lib/net/backend.js';
import { ParsedPacket, parsePacket } from '../../lib/net/packet-parser.js';
import { RssHashResult, VIRTIO_NET_HASH_REPORT_NONE } from '../../lib/net/rss-hash.js';
import { SEGMENT_OK, SoftwareSegmenter } from '../../lib/net/segmentation.js';
import { checkTunnelOffload, isTunnelGso, TUNNEL_OK } from '../../lib/net/tunnel.js';
import { writeVnetHeader } from '../../lib/net/vnet-header.js';
import { scatterWritable, scatterWritableRange } from '../../virtio/queue/descriptor-chain.js';
import { DescriptorChain, type Virtqueue, VirtqueueError } from '../../virtio/queue/virtqueue.js';
import { Backlog } from './backlog.js';
import { isGso, offloadPermitted } from './offloads.js';
import type { NetShared } from './shared.js';
import { countRxHeader, type QueueStats } from './stats.js';

/** Frames held per rx queue while the guest has no buffers (then counted as dropped). */
export const RX_BACKLOG = 256;

/**
 * "No limit" as a small integer: more than any ring holds (32768 entries) or a frame can span. The hot
 * paths compare against it per frame, and a finite int keeps them on V8's integer paths (Infinity is a
 * heap number).
 */
export const NO_LIMIT = 0xffff;

/** Outcome of delivering one frame into an rx queue. */
enum Delivery {
  Delivered,
  NoBuffers,
  Dropped,
}

/** Pausing and resuming backend queues: device-wide, since a backend queue may feed any pair. */
export interface RxFlowControl {
  pause(backendQueue: number): void;
  /** Resumes every paused backend queue once no pair holds a backlog. */
  resumeAll(): void;
}

/** The receive side of one queue pair: its buffers, backlog and scratch state. */
export class RxPath {
  readonly backlog = new Backlog(RX_BACKLOG);
  /** The buffers popped for one frame (popBuffers); a mergeable direct receive uses them for its overflow. */
  readonly chains: DescriptorChain[] = [new DescriptorChain(8)];
  /** Room of the buffers the last popBuffers took. */
  poppedRoom = 0;
  /** Hash of frames that arrive on this pair's backend queue (steer); report NONE when none was computed. */
  readonly steered = new RssHashResult();
  private readonly pkt = new ParsedPacket();
  /** Inner headers of a tunnel GSO frame being checked. */
  private readonly innerPkt = new ParsedPacket();
  private readonly header = new Uint8Array(24);
  /** Views of the first n bytes of `header`, by n (a fresh subarray per frame would allocate). */
  private readonly headerViews: Uint8Array[] = [];
  private readonly offloadCopy = emptyOffload();
  private segmenter: SoftwareSegmenter | null = null;
  /** Hash value and report type written into the header of the frame being delivered. */
  private hash = 0;
  private hashReport = VIRTIO_NET_HASH_REPORT_NONE;
  /** A drain is scheduled after finding buffers on a re-check (recheck). */
  private recheckScheduled = false;

  get recheckPending(): boolean {
    return this.recheckScheduled;
  }

  /** Schedules the drain a source device had scheduled when its state was taken (restore). */
  scheduleDrain(): void {
    if (this.recheckScheduled) return;
    this.recheckScheduled = true;
    setImmediate(() => {
      this.recheckScheduled = false;
      this.shared.runGuarded(() => this.drain());
    });
  }
  /** The last delivery found buffers, but too few bytes for the frame (set by popBuffers). */
  private shortOfBytes = false;
  private readonly deliverSegment = (segment: Uint8Array) => {
    if (this.deliverFrame(segment, 0, segment.length, null) !== Delivery.Delivered) this.stats.rxDropped++;
  };

  constructor(
    readonly pair: number,
    private readonly shared: NetShared,
    readonly stats: QueueStats,
    private readonly flow: RxFlowControl,
  ) {}

  /**
   * The receive queue pair for a frame that arrived on the backend queue feeding this pair: RSS
   * (§5.1.6.5.7, hash in `steered`), else automatic steering (§5.1.6.5.5), else this pair.
   */
  steer(bytes: Uint8Array, offset: number, length: number): number {
    const s = this.shared;
    let pair = this.pair;
    // RSS applied by the backend: its queue is the RSS queue; hash only for the hash report.
    const steeredByBackend = s.rssInBackend && s.rss.redirect;
    const needHash = s.rss.enabled && (!steeredByBackend || s.hashReport);
    const r = this.steered;
    r.hash = 0;
    r.reportType = VIRTIO_NET_HASH_REPORT_NONE;
    // Automatic steering unless RSS redirects (hash report alone, from HASH_CONFIG, does not).
    const needFlow = s.autoSteering();
    if (needHash || needFlow) {
      // The parsed offsets index `bytes`, which is what the hash and the flow lookup read.
      parsePacket(bytes, this.pkt, offset, offset + length);
      if (needHash) {
        const steered = s.rss.steer(bytes, this.pkt, r);
        if (steered >= 0 && !steeredByBackend) pair = steered;
      }
      if (needFlow) {
        const p = s.flows.lookupRx(bytes, this.pkt);
        if (p >= 0 && p < s.curQueuePairs) pair = p;
      }
    }
    return pair;
  }

  /**
   * Delivers a frame steered to this pair that passed the filter, from backend queue `backendQueue`:
   * into guest buffers unless frames wait already; when it cannot be placed for lack of buffers it joins
   * the backlog (that backend queue is paused until the guest posts buffers); a full backlog drops it.
   */
  deliver(
    frame: Uint8Array,
    offload: NetOffload | null,
    backendQueue: number,
    hash: number,
    hashReport: number,
  ): void {
    this.deliverRange(frame, 0, frame.length, offload, backendQueue, hash, hashReport);
  }

  /** `deliver` of the frame at `bytes[offset, offset + length)`. */
  deliverRange(
    bytes: Uint8Array,
    offset: number,
    length: number,
    offload: NetOffload | null,
    backendQueue: number,
    hash: number,
    hashReport: number,
  ): void {
    const backlog = this.backlog;
    // Stopped: the frame waits without touching the ring (it is part of the device's state).
    if (backlog.count === 0 && !this.shared.stopped) {
      this.hash = hash;
      this.hashReport = hashReport;
      if (this.deliverOrSegment(bytes, offset, length, offload) !== Delivery.NoBuffers) return;
    }
    // Out of buffers (not the steady state): the backlog copies from a view.
    const frame = offset === 0 && length === bytes.length ? bytes : bytes.subarray(offset, offset + length);
    if (backlog.push(frame, offload, hash, hashReport)) {
      this.stats.rxBacklogged++;
      this.stats.rxBacklogDepth = backlog.count;
      this.flow.pause(backendQueue);
      this.recheck();
    } else {
      this.stats.rxDropped++;
      this.stats.rxDropOverruns++;
    }
  }

  /** The guest posted rx buffers (or re-enabled the queue): deliver what waited, then let the backend go. */
  drain(): void {
    if (this.shared.stopped) return;
    // The backlog arrives like a burst from the backend: one notification decision at its end.
    this.shared.beginReceiveBurst();
    let done = false;
    try {
      this.drainBacklog();
      done = true;
    } finally {
      // A guest error on the way is reported once, by the caller: the burst then raises nothing.
      this.shared.endReceiveBurst(done);
    }
  }

  private drainBacklog(): void {
    const backlog = this.backlog;
    while (backlog.count > 0) {
      this.hash = backlog.peekHash();
      this.hashReport = backlog.peekReport();
      const f = backlog.peekFrame();
      const r = this.deliverOrSegment(f, 0, f.length, backlog.peekOffload());
      if (r === Delivery.NoBuffers) {
        this.recheck();
        return;
      }
      backlog.shift();
      this.stats.rxBacklogDepth = backlog.count;
    }
    this.flow.resumeAll();
  }

  /** Drops what waits (queue reset, device reset), counted. */
  clearBacklog(): void {
    this.stats.rxDropped += this.backlog.clear();
    this.stats.rxBacklogDepth = 0;
  }

  /**
   * Pops receive buffers into `chains` until they hold `need` bytes or `max` are taken; returns how
   * many (their room in `poppedRoom`), or 0 with every one given back when the ring runs out first.
   */
  popBuffers(q: Virtqueue, need: number, max: number): number {
    let n = 0;
    let room = 0;
    const chains = this.chains;
    while (room < need && n < max) {
      if (n === chains.length) chains.push(new DescriptorChain(8));
      const chain = chains[n]!;
      if (!q.pop(chain)) {
        for (let i = n - 1; i >= 0; i--) q.unpop(chains[i]!);
        // Buffers were there, just too few bytes: our pops moved avail_event to the driver's current
        // index, so its next buffer kicks (QEMU waits for that kick too); no need to look again.
        this.shortOfBytes = n > 0;
        return 0;
      }
      requireWritable(chain);
      n++;
      room += chain.writableLength;
    }
    this.poppedRoom = room;
    return n;
  }

  /** Delivers a frame, finishing offloads the guest did not negotiate in software. */
  private deliverOrSegment(
    bytes: Uint8Array,
    offset: number,
    length: number,
    offload: NetOffload | null,
  ): Delivery {
    this.shortOfBytes = false;
    const q = this.shared.ctx?.queue(2 * this.pair);
    if (!q) {
      // The receive queue is not enabled or is being reset (an RSS table may name it): the frame is
      // dropped (§5.1.6.5.7.2), never held, so one absent queue cannot stall the backend for all.
      this.stats.rxDropped++;
      return Delivery.Dropped;
    }
    if (
      offload &&
      isTunnelGso(offload) &&
      checkTunnelOffload(bytes, offload, this.pkt, this.innerPkt, offset, offset + length) !== TUNNEL_OK
    ) {
      // The backend is untrusted too: tunnel offsets that do not fit the frame (VIRTIO 1.4 §5.1.6.4).
      this.stats.rxDropped++;
      return Delivery.Dropped;
    }
    if (offload && !offloadPermitted(offload, this.shared.guestOffloadMask)) {
      // Copy the metadata: the backend owns `offload` and segmentation calls back into delivery.
      const o = copyOffload(this.offloadCopy, offload);
      if (isGso(o) && !q.hasAvailable()) return Delivery.NoBuffers;
      this.segmenter ??= new SoftwareSegmenter();
      // A view for the segmenter: one per offloaded frame the guest cannot take (not per segment).
      const frame = offset === 0 && length === bytes.length ? bytes : bytes.subarray(offset, offset + length);
      if (this.segmenter.process(frame, o, this.deliverSegment) !== SEGMENT_OK) this.stats.rxDropped++;
      return Delivery.Delivered;
    }
    const r = this.deliverFrame(bytes, offset, length, offload);
    if (r === Delivery.Dropped) this.stats.rxDropped++;
    return r;
  }

  /**
   * Writes header + frame into rx buffers (§5.1.6.3.2): one chain without MRG_RXBUF, else as many as
   * needed with num_buffers in the first header, all published at once.
   */
  private deliverFrame(bytes: Uint8Array, at: number, length: number, offload: NetOffload | null): Delivery {
    const ctx = this.shared.ctx!;
    const index = 2 * this.pair;
    const q = ctx.queue(index);
    if (!q) return Delivery.NoBuffers;
    const hdr = this.shared.hdrSize;
    const total = hdr + length;
    const mem = ctx.memory;
    const used = this.popBuffers(q, total, this.shared.mergeable ? NO_LIMIT : 1);
    if (used === 0) return Delivery.NoBuffers;
    if (this.poppedRoom < total) {
      // Without mergeable buffers a frame must fit one chain: QEMU drops it and gives the buffer back.
      q.unpop(this.chains[0]!);
      return Delivery.Dropped;
    }
    const header = this.header;
    const report = this.shared.hashReport;
    writeVnetHeader(header, 0, offload, hdr, used, report ? this.hash : 0, report ? this.hashReport : 0);
    // Header and frame are one stream over the buffers: a (non-conforming) first buffer smaller than
    // the header continues the header in the next one.
    let offset = 0; // into header+frame
    for (let i = 0; i < used; i++) {
      const chain = this.chains[i]!;
      const cap = chain.writableLength;
      let written = 0;
      if (offset === 0 && cap >= hdr) {
        let h = this.headerViews[hdr];
        if (h === undefined) h = this.headerViews[hdr] = header.subarray(0, hdr);
        written = scatterWritable(mem, chain, h, 0);
      } else if (offset < hdr) {
        written = scatterWritable(mem, chain, header.subarray(offset, Math.min(hdr, offset + cap)), 0);
      }
      const pos = offset + written;
      const fStart = pos - hdr;
      const n = Math.min(cap - written, total - pos);
      // The frame's part for this buffer, as a range (no view).
      if (fStart >= 0 && n > 0) written += scatterWritableRange(mem, chain, bytes, at + fStart, n, written);
      offset += written;
      q.addUsed(chain, written);
    }
    // IN_ORDER: the buffers a mergeable frame fills completely share the entry of the last one.
    this.stats.rxUsedFolded += q.publishUsed();
    const stats = this.stats;
    stats.rxPackets++;
    stats.rxBytes += length;
    if (offload) countRxHeader(stats, offload.flags, isGso(offload), length, isTunnelGso(offload));
    else stats.rxCsumNone++;
    this.shared.rxPublished(this.pair, q);
    return Delivery.Delivered;
  }

  /**
   * Out of rx buffers: the driver kicks only for buffers past the avail_event our last pop wrote. If it
   * added some while we were finding the ring empty, neither side saw the other: look once more after a
   * barrier, and drain from the event loop if buffers are there.
   */
  private recheck(): void {
    if (this.recheckScheduled || this.shortOfBytes || this.shared.stopped) return;
    memoryFence();
    const q = this.shared.ctx?.queue(2 * this.pair);
    // A ring the guest broke is the device's error, not the frame's: the frame that called us is in the
    // backlog and counted there (it must not be counted lost as well), so the error stops here.
    let available: boolean;
    try {
      available = q?.hasAvailable() ?? false;
    } catch (e) {
      this.shared.guestError(e);
      return;
    }
    if (!available) return;
    this.recheckScheduled = true;
    setImmediate(() => {
      this.recheckScheduled = false;
      this.shared.runGuarded(() => this.drain());
    });
  }
}

/** Pairs another thread runs (queue-pair workers, docs/workers.md): frames steered there are handed over. */
export interface ForeignPairs {
  owns(pair: number): boolean;
  /**
   * A frame from `backendQueue` steered (RSS or automatic steering) to `pair`, not yet filtered; its hash
   * and report type.
   */
  forward(
    backendQueue: number,
    pair: number,
    bytes: Uint8Array,
    offset: number,
    length: number,
    offload: NetOffload | null,
    hash: number,
    hashReport: number,
  ): void;
}

/** The copying receive of the whole device: checks, steering, filter, then the chosen pair's `deliver`. */
export class Receiver implements RxFlowControl {
  readonly pairs: RxPath[];
  /** Set on a queue-pair worker: the pairs it does not run. */
  foreign: ForeignPairs | null = null;
  /** Backend queues paused because their frames could not be delivered. */
  private readonly paused: boolean[] = [];

  get pausedQueues(): readonly boolean[] {
    return this.paused;
  }

  constructor(
    private readonly shared: NetShared,
    stats: readonly QueueStats[],
  ) {
    this.pairs = stats.map((s, pair) => new RxPath(pair, shared, s, this));
  }

  /**
   * The frame at `bytes[offset, offset + length)` from backend queue `backendQueue` (BackendSink.receive
   * and receiveRange; the range was checked against `bytes`).
   */
  receive(
    bytes: Uint8Array,
    offset: number,
    length: number,
    backendQueue: number,
    offload: NetOffload | null,
  ): void {
    const s = this.shared;
    if (!s.ctx || s.broken || length < 14 || length > MAX_FRAME || !s.linkUp) {
      s.deviceStats.rxDroppedNotReady++;
      return;
    }
    const home = this.pairs[s.pairOf(backendQueue)]!;
    const rx = this.pairs[home.steer(bytes, offset, length)]!;
    const f = this.foreign;
    if (f !== null && !f.owns(rx.pair)) {
      const h = home.steered;
      f.forward(backendQueue, rx.pair, bytes, offset, length, offload, h.hash, h.reportType);
      return;
    }
    if (!s.rxFilter.acceptsAt(bytes, offset, length)) {
      rx.stats.rxFiltered++;
      return;
    }
    rx.deliverRange(bytes, offset, length, offload, backendQueue, home.steered.hash, home.steered.reportType);
  }

  /**
   * BackendSink.receiveRoom: the free entries of the ring backend queue `backendQueue` feeds; NO_LIMIT when
   * the device chooses the pair per frame (RSS or automatic steering here) or the ring cannot say.
   */
  room(backendQueue: number): number {
    const s = this.shared;
    if (!s.ctx || s.broken || s.stopped || !s.linkUp) return NO_LIMIT;
    if ((s.rss.enabled && !(s.rssInBackend && s.rss.redirect)) || s.autoSteering()) return NO_LIMIT;
    const rx = this.pairs[s.pairOf(backendQueue)];
    if (rx === undefined) return NO_LIMIT;
    if (rx.backlog.count > 0) return 0;
    const q = s.ctx.queue(2 * rx.pair);
    if (q === null) return NO_LIMIT;
    try {
      return q.availableCount();
    } catch {
      return NO_LIMIT; // a broken ring: the frame's own delivery reports it
    }
  }

  pause(q: number): void {
    if (this.paused[q]) return;
    this.paused[q] = true;
    this.shared.backend.pause(q);
  }

  resume(q: number): void {
    if (!this.paused[q]) return;
    // Keep it paused while any pair still has a backlog: new frames would only add to it.
    for (const rx of this.pairs) if (rx.backlog.count > 0) return;
    this.paused[q] = false;
    this.shared.backend.resume(q);
  }

  resumeAll(): void {
    for (let q = 0; q < this.shared.backend.capabilities.queuePairs; q++) this.resume(q);
  }

  /**
   * After a restore that brought frames into backlogs: hold the backend back, as when they were taken,
   * and try to deliver them from the event loop (the kick that would have drained them may be past).
   */
  restoredBacklogs(paused?: readonly boolean[], recheck?: readonly boolean[]): void {
    if (!this.pairs.some((rx) => rx.backlog.count > 0)) return;
    // The queues the source held back and the drains it had scheduled (a /1 state says neither: all).
    for (let q = 0; q < this.shared.backend.capabilities.queuePairs; q++)
      if (paused ? paused[q] === true : true) this.pause(q);
    for (const [i, rx] of this.pairs.entries())
      if (rx.backlog.count > 0 && (recheck ? recheck[i] === true : true)) rx.scheduleDrain();
  }
}

/** An rx chain must have a device-writable part (QEMU: "virtio-net receive queue contains no in buffers", virtio_error). */
export function requireWritable(chain: DescriptorChain): void {
  if (chain.writableCount === 0) {
    throw new VirtqueueError(
      'readable-after-writable',
      `rx chain ${chain.head} has no device-writable buffer`,
    );
  }
}
