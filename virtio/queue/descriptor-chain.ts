/**
 * Gather/scatter over a popped `DescriptorChain`: copy the device-readable part out of guest memory and
 * the device-writable part into it, at a byte offset, across segments (and across guest memory regions).
 * Segment bounds were checked at pop time, but guest memory may have been unmapped since: a failing
 * access throws `GuestMemoryError`.
 *
 * Allocation: pieces up to SMALL_COPY bytes are copied byte by byte (no allocation); larger ones go
 * through `Uint8Array.set`, which needs one short-lived view per piece that is not a whole array (JS has
 * no allocation-free copy between two ArrayBuffers; within one, copyWithin: GuestMemory.writeRange).
 */
import type { GuestMemory } from '../../lib/memory/guest-memory.js';
import type { DescriptorChain } from './virtqueue.js';

const SMALL_COPY = 32;

/**
 * Copies device-readable bytes starting `offset` bytes into the chain into `dst`.
 * Returns the number of bytes copied: `min(dst.length, chain.readableLength - offset)`.
 */
export function gatherReadable(
  memory: GuestMemory,
  chain: DescriptorChain,
  dst: Uint8Array,
  offset = 0,
): number {
  let skip = offset;
  let done = 0;
  const want = dst.length;
  for (let i = 0; i < chain.readableCount && done < want; i++) {
    const len = chain.len[i]!;
    if (skip >= len) {
      skip -= len;
      continue;
    }
    const n = Math.min(len - skip, want - done);
    const addr = chain.addr[i]! + skip;
    if (n <= SMALL_COPY) {
      for (let k = 0; k < n; k++) dst[done + k] = memory.readU8(addr + k);
    } else {
      memory.readInto(addr, n === want ? dst : dst.subarray(done, done + n));
    }
    done += n;
    skip = 0;
  }
  return done;
}

/**
 * Copies `src` into the device-writable segments starting `offset` bytes into the writable part.
 * Returns the number of bytes written: `min(src.length, chain.writableLength - offset)`.
 */
export function scatterWritable(
  memory: GuestMemory,
  chain: DescriptorChain,
  src: Uint8Array,
  offset = 0,
): number {
  return scatterWritableRange(memory, chain, src, 0, src.length, offset);
}

/**
 * `scatterWritable` of `src[srcStart, srcStart + want)` without a view of it (GuestMemory.writeRange:
 * none either when `src` is guest memory itself). The caller checked the range against `src`.
 */
export function scatterWritableRange(
  memory: GuestMemory,
  chain: DescriptorChain,
  src: Uint8Array,
  srcStart: number,
  want: number,
  offset = 0,
): number {
  let skip = offset;
  let done = 0;
  const end = chain.readableCount + chain.writableCount;
  for (let i = chain.readableCount; i < end && done < want; i++) {
    const len = chain.len[i]!;
    if (skip >= len) {
      skip -= len;
      continue;
    }
    const n = Math.min(len - skip, want - done);
    const addr = chain.addr[i]! + skip;
    if (n <= SMALL_COPY) {
      // One bounds check for the piece (a header), then plain stores; byte by byte only across regions.
      const dst = memory.locate(addr, n, true);
      const from = srcStart + done;
      if (dst !== null) {
        const o = memory.locatedOffset;
        for (let k = 0; k < n; k++) dst[o + k] = src[from + k]!;
        memory.noteWritten(addr, n);
      } else for (let k = 0; k < n; k++) memory.writeU8(addr + k, src[from + k]!);
    } else {
      memory.writeRange(addr, src, srcStart + done, n);
    }
    done += n;
    skip = 0;
  }
  return done;
}

/** The whole device-readable part as one new array (convenient off the hot path). */
export function readableBytes(memory: GuestMemory, chain: DescriptorChain): Uint8Array {
  const out = new Uint8Array(chain.readableLength);
  gatherReadable(memory, chain, out);
  return out;
}
