/**
 * Frames a worker's software steering (RSS computed by the device, automatic flow steering) sends to a
 * pair another worker runs (docs/workers.md): copied into a single-producer ring from this worker to
 * that one, with the pair, hash and report type as the record's tag, and the owner woken once per task
 * (its backend bit). The owner filters and delivers them as its own, in one receive burst per wake-up.
 * A full ring is a counted drop (`crossPairDrops`), never a wait.
 */

import type { NetOffload } from '../../../lib/net/backend.js';
import { FrameRing } from '../../../lib/net/frame-ring.js';
import type { ForeignPairs } from '../rx.js';
import { BACKEND_BIT, Door, type ForwardInit } from './protocol.js';

/** Bytes of each ring's records (a few hundred full-size frames). */
export const FORWARD_RING_BYTES = 1 << 20;

/** The receiving end's delivery of one forwarded frame to its own pair. */
export type ForwardedFrame = (
  pair: number,
  bytes: Uint8Array,
  offset: number,
  length: number,
  offload: NetOffload | null,
  hash: number,
  hashReport: number,
) => void;

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

  constructor(private readonly init: ForwardInit) {
    this.out = init.out.map((b) => (b ? new FrameRing(b) : null));
    this.in = init.in.flatMap((b) => (b ? [new FrameRing(b)] : []));
    this.doors = init.doors.map((b) => new Int32Array(b));
    this.toWake = new Uint8Array(init.doors.length);
  }

  owns(pair: number): boolean {
    return this.init.owner[pair] === this.init.index;
  }

  forward(
    pair: number,
    bytes: Uint8Array,
    offset: number,
    length: number,
    offload: NetOffload | null,
    hash: number,
    hashReport: number,
  ): void {
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

  /** Delivers every frame the other workers sent here; returns how many. */
  drain(deliver: ForwardedFrame): number {
    let n = 0;
    for (const ring of this.in) {
      while (ring.next()) {
        const v = ring.bytes;
        const at = ring.frameOffset;
        const tag = v[at]! | (v[at + 1]! << 8) | (v[at + 2]! << 16) | (v[at + 3]! << 24);
        const hash = (v[at + 4]! | (v[at + 5]! << 8) | (v[at + 6]! << 16) | (v[at + 7]! << 24)) >>> 0;
        try {
          deliver(
            tag & 0xffff,
            v,
            at + 8,
            ring.frameLength - 8,
            ring.hasOffload ? ring.offload : null,
            hash,
            tag >>> 16,
          );
        } finally {
          ring.consume();
        }
        n++;
      }
    }
    return n;
  }
}
