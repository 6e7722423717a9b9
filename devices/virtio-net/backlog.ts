/**
 * Frames a queue pair holds while the guest has posted no receive buffers (then the backend is paused;
 * when the backlog is full, frames are counted drops). Bounded, slots reused: no allocation once a slot
 * has seen a frame as large.
 */
import { copyOffload, emptyOffload, type NetOffload } from '../../lib/net/backend.js';

export class Backlog {
  private readonly frames: Uint8Array[] = [];
  private readonly lengths: number[] = [];
  private readonly offloads: NetOffload[] = [];
  private readonly hasOffload: boolean[] = [];
  private readonly hashes: number[] = [];
  private readonly reports: number[] = [];
  private head = 0;
  count = 0;

  constructor(readonly capacity: number) {}

  /** Copies the frame and its metadata in; false when full. */
  push(frame: Uint8Array, offload: NetOffload | null, hash: number, report: number): boolean {
    if (this.count === this.capacity) return false;
    const slot = (this.head + this.count) % this.capacity;
    let buf = this.frames[slot];
    if (!buf || buf.length < frame.length) {
      buf = new Uint8Array(Math.max(frame.length, 2048));
      this.frames[slot] = buf;
      this.offloads[slot] = emptyOffload();
    }
    buf.set(frame);
    this.lengths[slot] = frame.length;
    this.hasOffload[slot] = offload !== null;
    if (offload) copyOffload(this.offloads[slot]!, offload);
    this.hashes[slot] = hash;
    this.reports[slot] = report;
    this.count++;
    return true;
  }

  peekFrame(): Uint8Array {
    return this.frames[this.head]!.subarray(0, this.lengths[this.head]);
  }

  peekOffload(): NetOffload | null {
    return this.hasOffload[this.head] ? this.offloads[this.head]! : null;
  }

  peekHash(): number {
    return this.hashes[this.head]!;
  }

  peekReport(): number {
    return this.reports[this.head]!;
  }

  shift(): void {
    this.head = (this.head + 1) % this.capacity;
    this.count--;
  }

  /** The frame `i` places behind the head, with its metadata (snapshots; not a hot path). */
  at(i: number): { frame: Uint8Array; offload: NetOffload | null; hash: number; report: number } {
    const slot = (this.head + i) % this.capacity;
    return {
      frame: this.frames[slot]!.subarray(0, this.lengths[slot]),
      offload: this.hasOffload[slot] ? { ...this.offloads[slot]! } : null,
      hash: this.hashes[slot]!,
      report: this.reports[slot]!,
    };
  }

  /** Empties it; returns how many frames it held. */
  clear(): number {
    const n = this.count;
    this.head = 0;
    this.count = 0;
    return n;
  }
}
