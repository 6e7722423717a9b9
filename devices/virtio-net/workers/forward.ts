/**
 * Frames a worker's software steering (RSS computed by the device, automatic flow steering) sends to a
 * pair another worker runs (docs/workers.md): copied into a single-producer ring from this worker to
 * that one, with the pair, hash and report type as the record's tag, and the owner woken once per task
 * (its backend bit). The owner filters and delivers them as its own, in one receive burst per wake-up.
 * A frame a full ring refuses waits in this worker's spill (in order with the ones after it, which wait
 * too) and the backend queue it came from is held until the owner has taken frames: a tap batch of 64
 * GSO frames can be several times a ring. Only a full spill drops (`crossPairDrops`).
 *
 * Backpressure, as on one thread where a pair's backlog pauses the backend queue that fed it: while an
 * owner holds a backlog for a pair it raises that pair's congestion word; a sender that forwards to a
 * congested pair pauses its own backend queue, and resumes it when the owner, its backlog gone, clears
 * the word and wakes the other workers.
 *
 * The same rings carry tx frames of a pair beyond the pairs in use (a driver with a stale max_tx_vq),
 * which shared.ts `backendQueueOf` sends through an attached backend queue, one another worker may own:
 * tagged as tx, the owner writes them out on that queue. A sender without room for a chain's frames
 * leaves the chain in the guest's ring until the owner has taken frames (never a silent drop).
 *
 * When the workers stop, nothing stays in the rings or spills: each stopping worker hands its spills
 * over (takeSpill), then each empties the rings to it (takeRings) and the main thread delivers or counts
 * what they held (crossing.ts, WorkerPool.stop).
 */

import { MAX_FRAME, type NetOffload } from '../../../lib/net/backend.js';
import { FrameRing } from '../../../lib/net/frame-ring.js';
import { Backlog } from '../backlog.js';
import type { ForeignPairs, RxPath } from '../rx.js';
import { BACKEND_BIT, type CrossingFrame, Door, type ForwardInit } from './protocol.js';

/** Bytes of each ring's records (a few hundred full-size frames). */
export const FORWARD_RING_BYTES = 1 << 20;
/** The report-type half of a record's tag marking a tx frame (hash reports are far below). */
const TX_TAG = 0xffff;
/** Room a tx chain needs before it is taken: its frames (two largest when segmented) and a wrap. */
const TX_ROOM = 3 * FrameRing.recordBytes(MAX_FRAME + 8);
/** Frames a sender keeps per owner while the ring to it is full (as a pair's backlog, RX_BACKLOG). */
const SPILL_FRAMES = 256;

/**
 * The owner's write of a forwarded tx frame on its backend queue `queue`: false leaves it (and the
 * ring's later frames) in the ring, for a backend without room now.
 */
export type ForwardedTx = (
  queue: number,
  bytes: Uint8Array,
  offset: number,
  length: number,
  offload: NetOffload | null,
) => boolean;

/**
 * The receiving end's delivery of one forwarded frame to its own pair: false leaves it (and the ring's
 * later frames) in the ring, for a pair whose backlog is not empty yet.
 */
export type ForwardedFrame = (
  pair: number,
  bytes: Uint8Array,
  offset: number,
  length: number,
  offload: NetOffload | null,
  hash: number,
  hashReport: number,
) => boolean;

export class CrossWorker implements ForeignPairs {
  private readonly out: (FrameRing | null)[];
  private readonly in: FrameRing[];
  /** The worker each of `in` comes from. */
  private readonly from: number[];
  /** Int32 per worker: 1 while it waits for room to forward a tx frame (an owner taking frames wakes it). */
  private readonly roomWanted: Int32Array;
  /** Per backend queue: a tx chain for it waits for room in the ring to its owner. */
  private readonly txBlocked: Uint8Array;
  private readonly doors: Int32Array[];
  /** Workers to wake at the end of this task (no allocation per frame). */
  private readonly toWake: Uint8Array;
  private wakeScheduled = false;
  /** Frames dropped because the ring to the owner and the spill were full (or the pair has no owner). */
  drops = 0;
  /** Frames a full ring refused that waited in the spill. */
  spilled = 0;
  /** Per owner: frames its full ring refused, in order, tagged as in the ring (made on first use). */
  private readonly spill: (Backlog | null)[];
  /** Per backend queue of this worker: held (paused) until the spill is empty. */
  private readonly spillHeld: Uint8Array;
  /** Frames handed to other workers. */
  forwarded = 0;
  /**
   * Per pair: rx frames this worker put in flight to it (into a ring or a spill) minus those it took out
   * of flight (delivered from a ring to it, or handed to the main thread). Summed over the workers, the
   * frames crossing to that pair now (`rxCrossingDepth`); any one worker's figure may be negative.
   */
  readonly crossing: Float64Array;
  /** Per pair: of `drops`, those of frames steered to it (counted in its rxDropped by the main thread). */
  readonly dropsFor: Float64Array;
  private readonly flush = () => this.wakeOwners();
  private readonly congestion: Int32Array;
  /** Per backend queue of this worker: the pair whose congestion paused it, or -1. */
  private readonly heldFor: Int16Array;

  /** `flow` pauses and resumes this worker's backend queues (the worker's Receiver). */
  constructor(
    private readonly init: ForwardInit,
    private readonly flow: { pause(q: number): void; resume(q: number): void },
  ) {
    this.out = init.out.map((b) => (b ? new FrameRing(b) : null));
    this.in = init.in.flatMap((b) => (b ? [new FrameRing(b)] : []));
    this.from = init.in.flatMap((b, w) => (b ? [w] : []));
    this.roomWanted = new Int32Array(init.roomWanted);
    this.txBlocked = new Uint8Array(init.owner.length);
    this.doors = init.doors.map((b) => new Int32Array(b));
    this.toWake = new Uint8Array(init.doors.length);
    this.congestion = new Int32Array(init.congestion);
    this.heldFor = new Int16Array(init.owner.length).fill(-1);
    this.spill = init.doors.map(() => null);
    this.spillHeld = new Uint8Array(init.owner.length);
    this.crossing = new Float64Array(init.owner.length);
    this.dropsFor = new Float64Array(init.owner.length);
  }

  owns(pair: number): boolean {
    return this.init.owner[pair] === this.init.index;
  }

  forward(
    backendQueue: number,
    pair: number,
    bytes: Uint8Array,
    offset: number,
    length: number,
    offload: NetOffload | null,
    hash: number,
    hashReport: number,
  ): void {
    if (Atomics.load(this.congestion, pair) !== 0 && this.heldFor[backendQueue] === -1) {
      // This frame still goes; the ones after it wait in the backend until the owner catches up.
      this.heldFor[backendQueue] = pair;
      this.flow.pause(backendQueue);
    }
    const w = this.init.owner[pair];
    const ring = w === undefined ? null : this.out[w];
    if (!ring) {
      this.drop(pair);
      return;
    }
    // Tag: the pair and report type in one word, the hash in the other.
    const tag = pair | (hashReport << 16);
    const waiting = this.spill[w!];
    if ((!waiting || waiting.count === 0) && ring.writeTagged(tag, hash, bytes, offset, length, offload)) {
      this.forwarded++;
      this.crossing[pair]!++;
      this.wakeLater(w!);
      return;
    }
    // Not a steady state: one view per frame is fine here.
    const spill = waiting ?? new Backlog(SPILL_FRAMES);
    this.spill[w!] = spill;
    if (!spill.push(bytes.subarray(offset, offset + length), offload, hash, tag)) {
      this.drop(pair);
      return;
    }
    this.spilled++;
    this.crossing[pair]!++;
    if (this.spillHeld[backendQueue] === 0) {
      this.spillHeld[backendQueue] = 1;
      this.flow.pause(backendQueue);
    }
    Atomics.store(this.roomWanted, this.init.index, 1);
  }

  private drop(pair: number): void {
    this.drops++;
    if (pair < this.dropsFor.length) this.dropsFor[pair]!++;
  }

  /**
   * Moves spilled frames into their rings while there is room (the owner woke this worker after taking
   * frames); once none waits, the backend queues held for them go on.
   */
  releaseSpill(): void {
    let left = 0;
    for (let w = 0; w < this.spill.length; w++) {
      const spill = this.spill[w];
      if (!spill || spill.count === 0) continue;
      const ring = this.out[w]!;
      while (spill.count > 0) {
        const f = spill.peekFrame();
        if (!ring.writeTagged(spill.peekReport(), spill.peekHash(), f, 0, f.length, spill.peekOffload()))
          break;
        spill.shift();
        this.forwarded++;
        this.wakeLater(w);
      }
      left += spill.count;
    }
    if (left > 0) {
      Atomics.store(this.roomWanted, this.init.index, 1);
      return;
    }
    for (let q = 0; q < this.spillHeld.length; q++) {
      if (this.spillHeld[q] === 0) continue;
      this.spillHeld[q] = 0;
      if (this.heldFor[q] === -1) this.flow.resume(q);
    }
  }

  /**
   * The worker stops: the frames its spills hold, copied out oldest first per owner, for the main thread
   * (crossing.ts). The backend queues held for them, or for an owner's congestion, stay paused and are
   * forgotten here: a stopped worker must read nothing (a tap has no hold apart from its pause), so a
   * later wake-up (an owner stopping clears its congestion) must not resume them. The next start's rx
   * drain, its backlog empty, resumes them (RxPath.drain), as after a backlog.
   */
  takeSpill(): CrossingFrame[] {
    const out: CrossingFrame[] = [];
    for (const spill of this.spill) {
      for (; spill && spill.count > 0; spill.shift()) {
        const tag = spill.peekReport();
        const offload = spill.peekOffload();
        this.crossing[tag & 0xffff]!--;
        out.push({
          pair: tag & 0xffff,
          frame: Uint8Array.from(spill.peekFrame()),
          offload: offload && { ...offload },
          hash: spill.peekHash(),
          report: tag >>> 16,
        });
      }
    }
    this.spillHeld.fill(0);
    this.heldFor.fill(-1);
    return out;
  }

  /**
   * Every worker stopped, so none forwards any more: empties the rings to this one. A tx frame goes to
   * `send` (null: discarded), and is counted by `dropped` when that declines (no room now: a stop does
   * not wait); rx frames are copied out for the main thread (crossing.ts), in ring order.
   */
  takeRings(send: ForwardedTx | null, dropped: (queue: number) => void): CrossingFrame[] {
    const rx: CrossingFrame[] = [];
    this.drain(
      (pair, bytes, offset, length, offload, hash, report) => {
        const frame = bytes.slice(offset, offset + length);
        rx.push({ pair, frame, offload: offload && { ...offload }, hash, report });
        return true;
      },
      (queue, bytes, offset, length, offload) => {
        if (!send?.(queue, bytes, offset, length, offload)) dropped(queue);
        return true;
      },
    );
    return rx;
  }

  /** Whether a tx chain for backend queue `queue` (another worker's) may be taken now. */
  txRoom(queue: number): boolean {
    const ring = this.out[this.init.owner[queue] ?? -1];
    if (!ring || ring.capacity - ring.used >= TX_ROOM) return true;
    // Asked before looking again: the owner either sees the flag after it took frames, or we see room.
    Atomics.store(this.roomWanted, this.init.index, 1);
    if (ring.capacity - ring.used >= TX_ROOM) return true;
    this.txBlocked[queue] = 1;
    return false;
  }

  /** A tx frame for backend queue `queue`, which another worker owns: false when its ring is full. */
  forwardTx(
    queue: number,
    bytes: Uint8Array,
    offset: number,
    length: number,
    offload: NetOffload | null,
  ): boolean {
    const w = this.init.owner[queue];
    const ring = w === undefined ? null : this.out[w];
    if (!ring?.writeTagged(queue | (TX_TAG << 16), 0, bytes, offset, length, offload)) return false;
    this.forwarded++;
    this.wakeLater(w!);
    return true;
  }

  /** The sender's side: tx chains that waited for room go on where there is room now (`ready`). */
  releaseTx(ready: (queue: number) => void): void {
    const b = this.txBlocked;
    for (let q = 0; q < b.length; q++) {
      if (b[q] === 0) continue;
      b[q] = 0;
      // Still full: txRoom asks the owner again, and the chain stays blocked.
      if (this.txRoom(q)) ready(q);
    }
  }

  /** Wakes worker `w` at the end of this task (its backend bit), once however many frames. */
  private wakeLater(w: number): void {
    this.toWake[w] = 1;
    if (!this.wakeScheduled) {
      this.wakeScheduled = true;
      queueMicrotask(this.flush);
    }
  }

  private wakeOwners(): void {
    this.wakeScheduled = false;
    for (let w = 0; w < this.toWake.length; w++) {
      if (this.toWake[w] === 0) continue;
      this.toWake[w] = 0;
      const door = this.doors[w]!;
      Atomics.or(door, Door.PENDING, BACKEND_BIT);
      Atomics.add(door, Door.WAKE, 1);
      Atomics.notify(door, Door.WAKE);
    }
  }

  /**
   * The owner's side: publishes whether each of its pairs holds a backlog; a pair that no longer does
   * wakes the other workers so that the queues they held for it go on.
   */
  publishCongestion(pairs: readonly RxPath[]): void {
    let cleared = false;
    for (const rx of pairs) {
      const now = rx.backlog.count > 0 ? 1 : 0;
      if (Atomics.exchange(this.congestion, rx.pair, now) === 1 && now === 0) cleared = true;
    }
    if (!cleared) return;
    for (let w = 0; w < this.toWake.length; w++) if (w !== this.init.index) this.toWake[w] = 1;
    this.wakeOwners();
  }

  /** The sender's side: resumes the backend queues held for pairs no longer congested. */
  releaseHeld(): void {
    const held = this.heldFor;
    for (let q = 0; q < held.length; q++) {
      const pair = held[q]!;
      if (pair < 0 || Atomics.load(this.congestion, pair) !== 0) continue;
      held[q] = -1;
      if (this.spillHeld[q] === 0) this.flow.resume(q);
    }
  }

  /**
   * Delivers what the other workers sent here, each ring until `deliver` or `send` (tx frames) declines;
   * returns how many. A sender waiting for room in a ring this took frames from is woken.
   */
  drain(deliver: ForwardedFrame, send: ForwardedTx): number {
    let n = 0;
    for (let r = 0; r < this.in.length; r++) {
      const ring = this.in[r]!;
      const before = n;
      while (ring.next()) {
        const v = ring.bytes;
        const at = ring.frameOffset;
        const tag = v[at]! | (v[at + 1]! << 8) | (v[at + 2]! << 16) | (v[at + 3]! << 24);
        const hash = (v[at + 4]! | (v[at + 5]! << 8) | (v[at + 6]! << 16) | (v[at + 7]! << 24)) >>> 0;
        const length = ring.frameLength - 8;
        const offload = ring.hasOffload ? ring.offload : null;
        let taken = true;
        const tx = tag >>> 16 === TX_TAG;
        try {
          taken = tx
            ? send(tag & 0xffff, v, at + 8, length, offload)
            : deliver(tag & 0xffff, v, at + 8, length, offload, hash, tag >>> 16);
        } finally {
          // A frame whose delivery threw (a guest error) is gone like any other.
          if (taken) {
            ring.consume();
            if (!tx) this.crossing[tag & 0xffff]!--;
          }
        }
        if (!taken) break;
        n++;
      }
      if (n > before && Atomics.exchange(this.roomWanted, this.from[r]!, 0) !== 0)
        this.wakeLater(this.from[r]!);
    }
    return n;
  }
}
