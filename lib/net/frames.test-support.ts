/**
 * Test-only references for the lib/net tests, plus the frame builders of ./frames.ts (re-exported so
 * every test imports its frames from one place).
 */
export * from './frames.js';

/** Straightforward bit-serial Toeplitz (the spec's definition), reference for tests. */
export function toeplitzBitSerial(key: Uint8Array, input: Uint8Array): number {
  let result = 0;
  // window = key bits [i, i+32); shifted left one bit per input bit, next key bit enters at the bottom.
  let window = ((key[0] ?? 0) << 24) | ((key[1] ?? 0) << 16) | ((key[2] ?? 0) << 8) | (key[3] ?? 0);
  let nextBit = 32;
  for (let i = 0; i < input.length; i++) {
    for (let b = 7; b >= 0; b--) {
      if ((input[i]! >> b) & 1) result ^= window;
      const kb = ((key[nextBit >> 3] ?? 0) >> (7 - (nextBit & 7))) & 1;
      window = (window << 1) | kb;
      nextBit++;
    }
  }
  return result >>> 0;
}

/** A Uint8Array proxy that throws on any index read outside [0, length): proves no read past the frame. */
export function guarded(bytes: Uint8Array, start = 0, end = bytes.length): Uint8Array {
  return new Proxy(bytes, {
    get(target, prop) {
      if (typeof prop === 'string' && /^-?\d+$/.test(prop)) {
        const i = Number(prop);
        if (i < start || i >= end) throw new Error(`read at ${i} outside [${start}, ${end})`);
        return target[i];
      }
      const v = Reflect.get(target, prop, target);
      return typeof v === 'function' ? v.bind(target) : v;
    },
  });
}
