/**
 * Automatic receive steering for multiqueue without RSS (VIRTIO 1.3 §5.1.6.5.5: "the device SHOULD steer
 * ... packets of a flow to the receiveq of the transmitq the driver last used for that flow"), the way
 * Linux tun's "automq" does it: when the guest transmits a frame of a flow on queue pair p, record p for
 * that flow; frames of the reverse direction are delivered on receiveq p.
 *
 * What it is: a direct-mapped table of `size` slots keyed by a symmetric hash of the IP addresses, the
 * L4 protocol and ports (so both directions of a flow land on the same slot). A slot holds the full hash
 * (to reject most collisions), the queue pair and the time it was last refreshed; entries older than
 * `expireMs` are ignored (tun uses 3 s). Collisions simply overwrite: the table is bounded by
 * construction and never allocates after creation. Frames of unknown flows fall back to the caller's
 * default (the backend queue they arrived on).
 *
 * With queue pairs on workers (docs/workers.md) every worker of a device views one table: `share()` moves
 * it into a SharedArrayBuffer and each worker builds its FlowSteering over that buffer, so a flow one
 * worker records steers the frames any worker reads. Writers do not lock: see `recordTx`.
 */
import { L3_IPV4, L3_IPV6, type ParsedPacket } from '../../lib/net/packet-parser.js';

/** Bytes per slot: a float64 stamp, then (in the second and third parts) a uint32 hash and an int32 pair. */
const SLOT_BYTES = 16;

/**
 * Milliseconds on a clock every thread reads alike: `performance.now()` alone counts from each thread's
 * own origin, so a stamp written by one worker would be meaningless to another.
 */
export const sharedClock = (): number => performance.timeOrigin + performance.now();

export class FlowSteering {
  private stamps!: Float64Array;
  private hashes!: Uint32Array;
  private queues!: Int32Array;
  private readonly mask: number;

  /** `buffer`: a table another FlowSteering `share()`d (its `size` slots); absent, a table of its own. */
  constructor(
    size = 4096,
    readonly expireMs = 3000,
    private readonly now: () => number = sharedClock,
    buffer?: SharedArrayBuffer,
  ) {
    if ((size & (size - 1)) !== 0 || size <= 0)
      throw new RangeError('FlowSteering size must be a power of two');
    if (buffer && buffer.byteLength !== size * SLOT_BYTES)
      throw new RangeError(`FlowSteering buffer must be ${size * SLOT_BYTES} bytes for ${size} slots`);
    this.mask = size - 1;
    this.bind(buffer ?? new ArrayBuffer(size * SLOT_BYTES));
    if (!buffer) this.stamps.fill(Number.NEGATIVE_INFINITY);
  }

  /** A view of the table `share()` returned (on a worker). */
  static over(buffer: SharedArrayBuffer, expireMs = 3000, now: () => number = sharedClock): FlowSteering {
    return new FlowSteering(buffer.byteLength / SLOT_BYTES, expireMs, now, buffer);
  }

  private bind(buffer: ArrayBufferLike): void {
    const size = this.mask + 1;
    this.stamps = new Float64Array(buffer, 0, size);
    this.hashes = new Uint32Array(buffer, 8 * size, size);
    this.queues = new Int32Array(buffer, 12 * size, size);
  }

  /** Number of slots. */
  get size(): number {
    return this.mask + 1;
  }

  /** The table's memory in a SharedArrayBuffer (moved there, entries kept, on the first call). */
  share(): SharedArrayBuffer {
    const cur = this.stamps.buffer;
    if (cur instanceof SharedArrayBuffer) return cur;
    const sab = new SharedArrayBuffer(cur.byteLength);
    new Uint8Array(sab).set(new Uint8Array(cur));
    this.bind(sab);
    return sab;
  }

  /**
   * Records that the guest sent this flow on `queuePair`. Frames without IP are ignored.
   *
   * Workers write concurrently without a lock: the hash is stored last (Atomics, so a reader that sees it
   * also sees the pair and stamp written before it), but two writers of one slot may still interleave
   * into a hash with another flow's pair. Such a torn entry steers a frame to a pair some writer recorded,
   * which is wrong for one flow at worst and never out of range: every word is written whole, every
   * pair written was a pair of the device, and rx.ts checks the pair against the pairs in use anyway.
   */
  recordTx(frame: Uint8Array, pkt: ParsedPacket, queuePair: number): void {
    const h = flowHash(frame, pkt);
    if (h === 0) return;
    const slot = h & this.mask;
    this.stamps[slot] = this.now();
    this.queues[slot] = queuePair;
    Atomics.store(this.hashes, slot, h);
  }

  /** The queue pair recorded for this frame's flow, or -1 (unknown, collided or expired). */
  lookupRx(frame: Uint8Array, pkt: ParsedPacket): number {
    const h = flowHash(frame, pkt);
    if (h === 0) return -1;
    const slot = h & this.mask;
    if (Atomics.load(this.hashes, slot) !== h) return -1;
    // Negated so that a stamp that is not a number counts as expired.
    if (!(this.now() - this.stamps[slot]! <= this.expireMs)) return -1;
    return this.queues[slot]!;
  }

  /** Live entries as [slot, hash, queue pair, age in ms] (snapshots: ages survive a change of clock). */
  snapshot(): [number, number, number, number][] {
    const out: [number, number, number, number][] = [];
    const now = this.now();
    for (let s = 0; s <= this.mask; s++) {
      const age = now - this.stamps[s]!;
      if (this.hashes[s] !== 0 && age <= this.expireMs) out.push([s, this.hashes[s]!, this.queues[s]!, age]);
    }
    return out;
  }

  /** Puts `snapshot()` entries back (validated by the caller: slots below `size`). */
  restore(entries: readonly (readonly [number, number, number, number])[]): void {
    this.clear();
    const now = this.now();
    for (const [s, h, q, age] of entries) {
      this.hashes[s] = h;
      this.queues[s] = q;
      this.stamps[s] = now - age;
    }
  }

  clear(): void {
    this.hashes.fill(0);
    this.stamps.fill(Number.NEGATIVE_INFINITY);
  }
}

/**
 * Symmetric flow hash: each address (and port) is folded to a 32-bit word, and the two endpoints are
 * combined with commutative operations, so A→B and B→A hash alike. 0 means "no flow" (not IP).
 */
export function flowHash(frame: Uint8Array, pkt: ParsedPacket): number {
  if (pkt.l3Kind !== L3_IPV4 && pkt.l3Kind !== L3_IPV6) return 0;
  const n = pkt.addrLength;
  let a = fold(frame, pkt.srcAddrOffset, n);
  let b = fold(frame, pkt.dstAddrOffset, n);
  if (pkt.portsPresent) {
    const o = pkt.l4Offset;
    a = Math.imul(a ^ ((frame[o]! << 8) | frame[o + 1]!), 0x9e3779b1);
    b = Math.imul(b ^ ((frame[o + 2]! << 8) | frame[o + 3]!), 0x9e3779b1);
  }
  let h = (a + b) ^ Math.imul(a ^ b, 0x85ebca6b) ^ (pkt.l4Proto & 0xff);
  h ^= h >>> 16;
  h = Math.imul(h, 0x7feb352d);
  h ^= h >>> 15;
  return h >>> 0 || 1;
}

function fold(frame: Uint8Array, offset: number, length: number): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < length; i++) h = Math.imul(h ^ frame[offset + i]!, 0x01000193);
  return h >>> 0;
}
