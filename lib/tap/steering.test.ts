import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { OptionsError } from '../errors.js';
import {
  BPF_ADD,
  BPF_B,
  BPF_DW,
  BPF_H,
  BPF_JEQ,
  BPF_JGT,
  BPF_W,
  BpfAssembler,
  buildSteeringProgram,
  encodeSteeringConfig,
  R0,
  R1,
  R2,
  R3,
  R6,
  R7,
  R10,
  type RssSteeringConfig,
  STEERING_CONFIG_SIZE,
  STEERING_HASH_TYPES,
  TapSteering,
  TUNSETSTEERINGEBPF,
  validateSteeringConfig,
} from './steering.js';
import { ToeplitzKey } from '../net/toeplitz.js';

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');
const good: RssSteeringConfig = {
  key: new Uint8Array(40).fill(1),
  hashTypes: 0x3f,
  table: [0, 1, 2, 3],
  defaultQueue: 0,
};

describe('BpfAssembler encodes struct bpf_insn (include/uapi/linux/bpf.h)', () => {
  // Each expectation is the kernel's encoding: code, dst | src << 4, s16 off, s32 imm (little-endian).
  it.each([
    ['r6 = r1 (BPF_ALU64 | BPF_MOV | BPF_X)', (a: BpfAssembler) => a.movReg(R6, R1), 'bf16000000000000'],
    ['r4 = 20 (BPF_ALU64 | BPF_MOV | BPF_K)', (a: BpfAssembler) => a.movImm(4, 20), 'b704000014000000'],
    ['r0 = -1', (a: BpfAssembler) => a.movImm(R0, -1), 'b7000000ffffffff'],
    ['r3 += -48', (a: BpfAssembler) => a.aluImm(BPF_ADD, R3, -48), '07030000d0ffffff'],
    ['r2 += r1', (a: BpfAssembler) => a.aluReg(BPF_ADD, R2, R1), '0f12000000000000'],
    ['r9 = be16 r9 (BPF_ALU | BPF_END | BPF_TO_BE)', (a: BpfAssembler) => a.be(9, 16), 'dc09000010000000'],
    ['r2 = *(u32 *)(r6 + 0)', (a: BpfAssembler) => a.ldx(BPF_W, R2, R6, 0), '6162000000000000'],
    ['r1 = *(u8 *)(r10 - 80)', (a: BpfAssembler) => a.ldx(BPF_B, R1, R10, -80), '71a1b0ff00000000'],
    ['r0 = *(u16 *)(r2 + 16)', (a: BpfAssembler) => a.ldx(BPF_H, R0, R2, 16), '6920100000000000'],
    ['*(u64 *)(r10 - 8) = 0 (BPF_ST)', (a: BpfAssembler) => a.st(BPF_DW, R10, -8, 0), '7a0af8ff00000000'],
    [
      '*(u32 *)(r10 - 40) = r1 (BPF_STX)',
      (a: BpfAssembler) => a.stx(BPF_W, R10, -40, R1),
      '631ad8ff00000000',
    ],
    ['call 26 (bpf_skb_load_bytes)', (a: BpfAssembler) => a.call(26), '850000001a000000'],
    ['exit', (a: BpfAssembler) => a.exit(), '9500000000000000'],
    [
      'r7 = map_value(fd 5) + 16 (ld_imm64, BPF_PSEUDO_MAP_VALUE)',
      (a: BpfAssembler) => a.ldMapValue(R7, 5, 16),
      '18270000050000000000000010000000',
    ],
  ])('%s', (_name, emit, want) => {
    expect(hex(emit(new BpfAssembler()).assemble())).toBe(want);
  });

  it('resolves forward and backward jumps relative to the next instruction', () => {
    const a = new BpfAssembler();
    a.label('top').jmpImm(BPF_JEQ, R1, 0x86dd, 'end').movImm(R0, 1).jmpReg(BPF_JGT, R3, R2, 'top');
    a.ja('top').label('end').exit();
    expect(hex(a.assemble())).toBe(
      [
        '1501' + '0300' + 'dd860000', // if r1 == 0x86dd goto +3
        'b700' + '0000' + '01000000',
        '2d23' + 'fdff' + '00000000', // if r3 > r2 goto -3
        '0500' + 'fcff' + '00000000', // goto -4
        '9500000000000000',
      ].join(''),
    );
  });

  it('refuses undefined and duplicate labels', () => {
    expect(() => new BpfAssembler().ja('nowhere').assemble()).toThrow(/undefined label 'nowhere'/);
    expect(() => new BpfAssembler().label('x').label('x')).toThrow(/defined twice/);
  });
});

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
