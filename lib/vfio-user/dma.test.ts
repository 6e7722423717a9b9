import { describe, expect, it } from 'vitest';
import { DmaError, DmaMappings } from './dma.js';
import { Errno } from './protocol.js';

/** A guest memory that records nothing: these tests map without descriptors. */
const noMemory = { addRegion: () => {}, removeRegion: () => true };
const PAGE = 0x1000n;

function errnoOf(fn: () => unknown): number | null {
  try {
    fn();
    return null;
  } catch (e) {
    if (e instanceof DmaError) return e.errno;
    throw e;
  }
}

/** `n` one-page mappings a page apart, then `n` overlapping maps refused; returns the probes used. */
function fill(n: number): { d: DmaMappings; probes: number } {
  const d = new DmaMappings(noMemory, n + 1);
  // Scattered order (a stride coprime with n) so insertion is not always at the end.
  const stride = 7919;
  for (let i = 0; i < n; i++) d.map(BigInt((i * stride) % n) * 2n * PAGE, PAGE, 0n, 3, null);
  let refused = 0;
  for (let i = 0; i < n; i++) {
    if (errnoOf(() => d.map(BigInt(i) * 2n * PAGE, 2n * PAGE, 0n, 3, null)) === Errno.EEXIST) refused++;
  }
  expect(refused).toBe(n);
  return { d, probes: d.probes };
}

describe('DmaMappings', () => {
  it('checks overlaps in logarithmic probes: 20,000 maps and 20,000 refusals', () => {
    const small = fill(2_000);
    const big = fill(20_000);
    expect(big.d.count).toBe(20_000);
    // Quadratic growth would make the ratio about 100, n log n about 13.
    expect(big.probes / small.probes).toBeLessThan(20);
    // About log2(20,000) ≈ 15 probes per operation.
    expect(big.probes).toBeLessThan(40_000 * 20);
    // Unmapping one by one stays logarithmic too.
    const before = big.d.probes;
    for (let i = 0; i < 20_000; i++) big.d.unmap(BigInt(i) * 2n * PAGE, PAGE);
    expect(big.d.count).toBe(0);
    expect(big.d.probes - before).toBeLessThan(20_000 * 20);
  });

  it('refuses overlaps at every edge and accepts adjacent ranges', () => {
    const d = new DmaMappings(noMemory, 100);
    d.map(0x10000n, 0x8000n, 0n, 3, null); // [0x10000, 0x18000)
    const overlapping: [bigint, bigint][] = [
      [0x10000n, 0x8000n], // the same
      [0xf000n, 0x2000n], // the first page
      [0x17000n, 0x2000n], // the last page
      [0x11000n, 0x1000n], // inside
      [0x0n, 0x100000n], // around
    ];
    for (const [a, s] of overlapping) expect(errnoOf(() => d.map(a, s, 0n, 3, null))).toBe(Errno.EEXIST);
    d.map(0xf000n, 0x1000n, 0n, 3, null); // just below
    d.map(0x18000n, 0x1000n, 0n, 3, null); // just above
    d.map(0x1000n, 0x1000n, 0n, 3, null);
    // Top of the address space.
    d.map(0xffff_ffff_ffff_e000n, 0x2000n, 0n, 3, null);
    expect(errnoOf(() => d.map(0xffff_ffff_ffff_f000n, 0x1000n, 0n, 3, null))).toBe(Errno.EEXIST);
    expect(errnoOf(() => d.map(0xffff_ffff_ffff_d000n, 0x2000n, 0n, 3, null))).toBe(Errno.EEXIST);
    d.map(0xffff_ffff_ffff_d000n, 0x1000n, 0n, 3, null);
    expect(d.list().map((m) => m.address)).toEqual([
      0x1000n,
      0xf000n,
      0x10000n,
      0x18000n,
      0xffff_ffff_ffff_d000n,
      0xffff_ffff_ffff_e000n,
    ]);
    // An unmap that splits a mapping at either end removes nothing.
    expect(errnoOf(() => d.unmap(0x11000n, 0x10000n))).toBe(Errno.EINVAL);
    expect(errnoOf(() => d.unmap(0xe000n, 0x3000n))).toBe(Errno.EINVAL);
    expect(d.count).toBe(6);
    // One covering three adjacent mappings and the gaps around them removes exactly those.
    expect(d.unmap(0x2000n, 0x20000n)).toBe(0xa000n);
    expect(d.list().map((m) => m.address)).toEqual([0x1000n, 0xffff_ffff_ffff_d000n, 0xffff_ffff_ffff_e000n]);
    expect(d.unmap(0x2000n, 0x1000n)).toBe(0n); // nothing there
    expect(d.unmap(0xffff_ffff_ffff_d000n, 0x3000n)).toBe(0x3000n);
    expect(errnoOf(() => d.unmap(0xffff_ffff_ffff_f000n, 0x2000n))).toBe(Errno.EINVAL); // wraps
    expect(d.unmapAll()).toBe(0x1000n);
  });
});
