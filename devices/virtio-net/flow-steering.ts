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
 */
import { L3_IPV4, L3_IPV6, type ParsedPacket } from '../../lib/net/packet-parser.js';

export class FlowSteering {
  private readonly hashes: Uint32Array;
  private readonly queues: Uint16Array;
  private readonly stamps: Float64Array;
  private readonly mask: number;

  constructor(
    size = 4096,
    readonly expireMs = 3000,
    private readonly now: () => number = () => performance.now(),
  ) {
    if ((size & (size - 1)) !== 0 || size <= 0)
      throw new RangeError('FlowSteering size must be a power of two');
    this.hashes = new Uint32Array(size);
    this.queues = new Uint16Array(size);
    this.stamps = new Float64Array(size).fill(Number.NEGATIVE_INFINITY);
    this.mask = size - 1;
  }

  /** Number of slots. */
  get size(): number {
    return this.mask + 1;
  }

  /** Records that the guest sent this flow on `queuePair`. Frames without IP are ignored. */
  recordTx(frame: Uint8Array, pkt: ParsedPacket, queuePair: number): void {
    const h = flowHash(frame, pkt);
    if (h === 0) return;
    const slot = h & this.mask;
    this.hashes[slot] = h;
    this.queues[slot] = queuePair;
    this.stamps[slot] = this.now();
  }

  /** The queue pair recorded for this frame's flow, or -1 (unknown, collided or expired). */
  lookupRx(frame: Uint8Array, pkt: ParsedPacket): number {
    const h = flowHash(frame, pkt);
    if (h === 0) return -1;
    const slot = h & this.mask;
    if (this.hashes[slot] !== h) return -1;
    if (this.now() - this.stamps[slot]! > this.expireMs) return -1;
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
