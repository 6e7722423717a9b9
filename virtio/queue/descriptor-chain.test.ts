import { describe, expect, it } from 'vitest';
import { GuestMemory } from '../../lib/memory/guest-memory.js';
import { gatherReadable, readableBytes, scatterWritable } from './descriptor-chain.js';
import { DescriptorChain } from './virtqueue.js';

function chainOf(segs: [number, number][], readable: number): DescriptorChain {
  const c = new DescriptorChain(segs.length);
  segs.forEach(([a, l], i) => {
    c.addr[i] = a;
    c.len[i] = l;
    if (i < readable) c.readableLength += l;
    else c.writableLength += l;
  });
  c.readableCount = readable;
  c.writableCount = segs.length - readable;
  return c;
}

describe('gather/scatter over a DescriptorChain', () => {
  // Two adjacent regions so that one segment crosses a region boundary.
  const a = new Uint8Array(0x100);
  const b = new Uint8Array(0x100);
  const mem = new GuestMemory([
    { address: 0x1000, bytes: a },
    { address: 0x1100, bytes: b },
  ]);
  for (let i = 0; i < 0x100; i++) {
    a[i] = i;
    b[i] = 0xff - i;
  }

  it('gathers readable bytes from an offset across segments and regions', () => {
    const c = chainOf(
      [
        [0x1010, 4],
        [0x10fe, 4], // crosses into the second region
        [0x1000, 0],
        [0x1020, 3],
        [0x1050, 8], // writable: never gathered
      ],
      4,
    );
    expect(readableBytes(mem, c)).toEqual(
      new Uint8Array([0x10, 0x11, 0x12, 0x13, 0xfe, 0xff, 0xff, 0xfe, 0x20, 0x21, 0x22]),
    );
    const dst = new Uint8Array(5);
    expect(gatherReadable(mem, c, dst, 3)).toBe(5);
    expect([...dst]).toEqual([0x13, 0xfe, 0xff, 0xff, 0xfe]);
    const big = new Uint8Array(20);
    expect(gatherReadable(mem, c, big, 9)).toBe(2);
    expect(gatherReadable(mem, c, big, 11)).toBe(0);
  });

  it('copies large pieces (the Uint8Array.set path) across regions and segments', () => {
    const c = chainOf(
      [
        [0x10c0, 0x80], // 0x40 bytes in each region
        [0x1000, 0x40],
      ],
      2,
    );
    const all = readableBytes(mem, c);
    expect([...all.subarray(0, 0x40)]).toEqual([...a.subarray(0xc0, 0x100)]);
    expect([...all.subarray(0x40, 0x80)]).toEqual([...b.subarray(0, 0x40)]);
    expect([...all.subarray(0x80)]).toEqual([...a.subarray(0, 0x40)]);
    const dst = new Uint8Array(0x60);
    expect(gatherReadable(mem, c, dst, 0x50)).toBe(0x60);
    expect(dst).toEqual(all.subarray(0x50, 0xb0));

    const w = new Uint8Array(0x200);
    const m = new GuestMemory([{ address: 0, bytes: w }]);
    const wc = chainOf(
      [
        [0x100, 0x50],
        [0x000, 0x50],
      ],
      0,
    );
    const src = Uint8Array.from({ length: 0x90 }, (_, i) => i + 1);
    expect(scatterWritable(m, wc, src, 0x8)).toBe(0x90 - 0);
    expect([...w.subarray(0x108, 0x150)]).toEqual([...src.subarray(0, 0x48)]);
    expect([...w.subarray(0, 0x48)]).toEqual([...src.subarray(0x48, 0x90)]);
    expect(w[0x48]).toBe(0);
    expect(w[0x107]).toBe(0);
  });

  it('scatters into writable segments from an offset, stopping at their end', () => {
    const w = new Uint8Array(0x100);
    const m = new GuestMemory([{ address: 0, bytes: w }]);
    const c = chainOf(
      [
        [0x00, 2], // readable: never written
        [0x10, 3],
        [0x20, 2],
      ],
      1,
    );
    expect(scatterWritable(m, c, new Uint8Array([1, 2, 3, 4, 5, 6, 7]), 1)).toBe(4);
    expect([...w.subarray(0, 2)]).toEqual([0, 0]);
    expect([...w.subarray(0x10, 0x13)]).toEqual([0, 1, 2]);
    expect([...w.subarray(0x20, 0x22)]).toEqual([3, 4]);
  });
});
