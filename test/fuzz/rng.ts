/**
 * A small seeded PRNG for the fuzz targets (sfc32, seeded through splitmix32): the same seed gives the
 * same sequence on every machine and Node version, so a printed seed reproduces a run exactly.
 */

/** splitmix32: spreads a 32-bit seed (and derives independent seeds from one). */
export function mix32(x: number): number {
  let z = (x + 0x9e3779b9) | 0;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  return (z ^ (z >>> 16)) >>> 0;
}

/** The seed of case `index` of a run seeded `seed` (cases are independent: each can be replayed alone). */
export function caseSeed(seed: number, index: number): number {
  return mix32((seed ^ mix32(index + 1)) >>> 0);
}

/** Values that break code more often than uniform ones: zero, all-ones, sign bits, powers of two ± 1. */
const EDGE_U32 = [
  0, 1, 2, 3, 4, 7, 8, 15, 16, 63, 64, 127, 128, 255, 256, 0x3ff, 0x400, 0xfff, 0x1000, 0x7fff, 0x8000,
  0xffff, 0x10000, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff,
];

export class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(readonly seed: number) {
    this.a = mix32(seed);
    this.b = mix32(this.a ^ 0x5bd1e995);
    this.c = mix32(this.b ^ 0x1b873593);
    this.d = 1;
    for (let i = 0; i < 12; i++) this.u32();
  }

  /** Uniform 32-bit unsigned integer. */
  u32(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0;
    this.d = (this.d + 1) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) | 0;
    return t >>> 0;
  }

  /** Uniform in [0, 1). */
  float(): number {
    return this.u32() / 0x1_0000_0000;
  }

  /** Uniform integer in [min, max] (inclusive; max - min < 2^32). */
  int(min: number, max: number): number {
    return min + Math.floor(this.float() * (max - min + 1));
  }

  /** Uniform index below `n`. */
  below(n: number): number {
    return Math.floor(this.float() * n);
  }

  /** True with probability `p`. */
  chance(p: number): boolean {
    return this.float() < p;
  }

  bool(): boolean {
    return (this.u32() & 1) === 1;
  }

  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new RangeError('Rng.pick: empty list');
    return items[this.below(items.length)] as T;
  }

  /** Picks a key of `weights` with probability proportional to its weight. */
  weighted<K extends string>(weights: Readonly<Record<K, number>>): K {
    const entries = Object.entries(weights) as [K, number][];
    let total = 0;
    for (const [, w] of entries) total += w;
    let r = this.float() * total;
    for (const [k, w] of entries) {
      r -= w;
      if (r < 0) return k;
    }
    return entries[entries.length - 1]![0];
  }

  /** A 32-bit value, biased towards edge values half of the time. */
  edgeU32(): number {
    if (this.bool()) return this.pick(EDGE_U32);
    return this.u32();
  }

  /** A value of `bits` bits (≤ 32), biased towards edges. */
  edge(bits: number): number {
    const v = this.edgeU32();
    return bits >= 32 ? v : v % 2 ** bits;
  }

  /** A 64-bit value as a bigint, biased towards edges. */
  edgeU64(): bigint {
    if (this.chance(0.3))
      return this.pick([0n, 1n, 0xffffffffn, 0x100000000n, 2n ** 63n, 2n ** 64n - 1n, 2n ** 53n, 2n ** 52n]);
    return (BigInt(this.u32()) << 32n) | BigInt(this.u32());
  }

  /** `n` random bytes. */
  bytes(n: number): Uint8Array {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i += 4) {
      let v = this.u32();
      for (let j = 0; j < 4 && i + j < n; j++) {
        out[i + j] = v & 0xff;
        v >>>= 8;
      }
    }
    return out;
  }

  /** A length in [0, max], biased towards small values and the edges 0 and max. */
  length(max: number): number {
    const r = this.float();
    if (r < 0.1) return 0;
    if (r < 0.2) return max;
    if (r < 0.6) return this.int(0, Math.min(max, 64));
    return this.int(0, max);
  }
}
