import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { OptionsError } from '../errors.js';
import {
  buildSteeringProgram,
  encodeSteeringConfig,
  type RssSteeringConfig,
  STEERING_CONFIG_SIZE,
  STEERING_HASH_TYPES,
  validateSteeringConfig,
} from './steering-program.js';
import { TapSteering, TUNSETSTEERINGEBPF } from './steering.js';
import { ToeplitzKey } from '../net/toeplitz.js';

const good: RssSteeringConfig = {
  key: new Uint8Array(40).fill(1),
  hashTypes: 0x3f,
  table: [0, 1, 2, 3],
  defaultQueue: 0,
};

describe('steering program', () => {
  it('is well under the verifier limits and references the map only by ld_imm64', () => {
    const insns = buildSteeringProgram(42);
    expect(insns.length % 8).toBe(0);
    expect(insns.length / 8).toBeLessThan(4096);
    let maps = 0;
    for (let i = 0; i < insns.length; i += 8) {
      if (insns[i] === 0x18) {
        expect(insns[i + 1]! >> 4).toBe(2); // BPF_PSEUDO_MAP_VALUE
        expect(new DataView(insns.buffer).getInt32(i + 4, true)).toBe(42);
        maps++;
        i += 8;
      }
    }
    expect(maps).toBe(1);
  });

  it("TUNSETSTEERINGEBPF is _IOR('T', 224, int)", () => {
    expect(TUNSETSTEERINGEBPF).toBe(((2 << 30) | (4 << 16) | (0x54 << 8) | 224) >>> 0);
  });
});

describe('config validation', () => {
  it.each([
    [
      '{ key: new Uint8Array(0) }',
      { key: new Uint8Array(0) },
      /key must be a Uint8Array of 1\.\.40 bytes, got 0 bytes/,
    ],
    ['{ key: new Uint8Array(41) }', { key: new Uint8Array(41) }, /key must be .* got 41 bytes/],
    ['{ key: [1, 2, 3] }', { key: [1, 2, 3] as unknown as Uint8Array }, /key must be a Uint8Array/],
    ['{ table: [] }', { table: [] }, /table length must be a power of 2 in 1\.\.128, got 0/],
    ['{ table: [0, 1, 2] }', { table: [0, 1, 2] }, /power of 2 .* got 3/],
    ['{ table: 256 entries }', { table: new Array(256).fill(0) }, /power of 2 in 1\.\.128, got 256/],
    ['{ table: [0, 256] }', { table: [0, 256] }, /table\[1\] must be a queue index in 0\.\.255, got 256/],
    ['{ table: [0, -1] }', { table: [0, -1] }, /table\[1\] must be a queue index/],
    ['{ table: [0.5] }', { table: [0.5] }, /table\[0\] must be a queue index/],
    [
      '{ defaultQueue: 256 }',
      { defaultQueue: 256 },
      /defaultQueue must be a queue index in 0\.\.255, got 256/,
    ],
    ['{ defaultQueue: Number.NaN }', { defaultQueue: Number.NaN }, /defaultQueue must be a queue index/],
    ['{ hashTypes: 0x200 }', { hashTypes: 0x200 }, /hashTypes must be VIRTIO_NET_RSS_HASH_TYPE_\* bits/],
    ['{ hashTypes: -1 }', { hashTypes: -1 }, /hashTypes must be/],
  ])('refuses %s', (_name, patch, message) => {
    const config = { ...good, ...patch } as RssSteeringConfig;
    expect(() => validateSteeringConfig(config)).toThrow(OptionsError);
    expect(() => validateSteeringConfig(config)).toThrow(message);
    expect(() => TapSteering.load(config)).toThrow(message); // before any syscall
  });

  it('accepts every table length 1..128 that is a power of 2, queues 0..255, keys of 1..40 bytes', () => {
    for (let n = 1; n <= 128; n *= 2)
      validateSteeringConfig({ ...good, table: new Array(n).fill(255), defaultQueue: 255 });
    for (let k = 1; k <= 40; k++) validateSteeringConfig({ ...good, key: new Uint8Array(k) });
  });

  it('computes all nine hash types (unsupportedHashTypes is 0 for any valid set)', () => {
    expect(STEERING_HASH_TYPES).toBe(0x1ff);
    for (let t = 0; t <= 0x1ff; t++) {
      expect(TapSteering.unsupportedHashTypes(t)).toBe(0);
      validateSteeringConfig({ ...good, hashTypes: t });
    }
  });
});

describe('config map value', () => {
  it('lays out hash types, mask, default queue, table and the Toeplitz tables', () => {
    const key = Uint8Array.from({ length: 40 }, (_, i) => (i * 37 + 5) & 0xff);
    const v = encodeSteeringConfig({
      key,
      hashTypes: 0x25,
      table: [3, 1, 2, 0, 7, 6, 5, 4],
      defaultQueue: 9,
    });
    expect(v.length).toBe(STEERING_CONFIG_SIZE);
    const d = new DataView(v.buffer);
    expect([d.getUint32(0, true), d.getUint32(4, true), d.getUint32(8, true)]).toEqual([0x25, 7, 9]);
    expect(Array.from({ length: 9 }, (_, i) => d.getUint16(16 + 2 * i, true))).toEqual([
      3, 1, 2, 0, 7, 6, 5, 4, 0,
    ]);
    const tk = new ToeplitzKey(key);
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 36, maxLength: 36 }), (input) => {
        // XOR of the per-position entries is the Toeplitz hash of the 36-byte input.
        let h = 0;
        for (let p = 0; p < 36; p++) h ^= d.getUint32(272 + (p * 256 + input[p]!) * 4, true);
        expect(h >>> 0).toBe(tk.hash(input));
      }),
    );
  });
});
