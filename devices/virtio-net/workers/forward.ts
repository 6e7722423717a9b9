/**
 * Frames a worker's software steering (RSS computed by the device, automatic flow steering) sends to a
 * pair another worker runs (docs/workers.md): copied into a single-producer ring from this worker to
 * that one, with the pair, hash and report type as the record's tag, and the owner woken once per task
 * (its backend bit). The owner filters and delivers them as its own, in one receive burst per wake-up.
 * A full ring is a counted drop (`crossPairDrops`), never a wait.
 *
 * Backpressure, as on one thread where a pair's backlog pauses the backend queue that fed it: while an
 * owner holds a backlog for a pair it raises that pair's congestion word; a sender that forwards to a
 * congested pair pauses its own backend queue, and resumes it when the owner, its backlog gone, clears
 * the word and wakes the other workers.
 */

import type { NetOffload } from '../../../lib/net/backend.js';
import { FrameRing } from '../../../lib/net/frame-ring.js';
import type { ForeignPairs, RxPath } from '../rx.js';
import { BACKEND_BIT, Door, type ForwardInit } from './protocol.js';

/** Bytes of each ring's records (a few hundred full-size frames). */
export const FORWARD_RING_BYTES = 1 << 20;

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
  private readonly doors: Int32Array[];
  /** Workers to wake at the end of this task (no allocation per frame). */
  private readonly toWake: Uint8Array;
  private wakeScheduled = false;
  /** Frames dropped because the ring to the owner was full (or the pair has no owner). */
  drops = 0;
  /** Frames handed to other workers. */
  forwarded = 0;
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
    this.doors = init.doors.map((b) => new Int32Array(b));
    this.toWake = new Uint8Array(init.doors.length);
    this.congestion = new Int32Array(init.congestion);
    this.heldFor = new Int16Array(init.owner.length).fill(-1);
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
    // Tag: the pair and report type in one word, the hash in the other.
    if (!ring || !ring.writeTagged(pair | (hashReport << 16), hash, bytes, offset, length, offload)) {
      this.drops++;
      return;
    }
    this.forwarded++;
    this.toWake[w!] = 1;
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
      this.flow.resume(q);
    }
  }

  /** Delivers what the other workers sent here, each ring until `deliver` declines; returns how many. */
  drain(deliver: ForwardedFrame): number {
    let n = 0;
    for (const ring of this.in) {
      while (ring.next()) {
        const v = ring.bytes;
        const at = ring.frameOffset;
        const tag = v[at]! | (v[at + 1]! << 8) | (v[at + 2]! << 16) | (v[at + 3]! << 24);
        const hash = (v[at + 4]! | (v[at + 5]! << 8) | (v[at + 6]! << 16) | (v[at + 7]! << 24)) >>> 0;
        let taken = true;
        try {
          taken = deliver(
            tag & 0xffff,
            v,
            at + 8,
            ring.frameLength - 8,
            ring.hasOffload ? ring.offload : null,
            hash,
            tag >>> 16,
          );
        } finally {
          // A frame whose delivery threw (a guest error) is gone like any other.
          if (taken) ring.consume();
        }
        if (!taken) break;
        n++;
      }
    }
    return n;
  }
}
