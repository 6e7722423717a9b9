import { readdirSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import {
  BPF_ADD,
  BPF_B,
  BPF_DW,
  BPF_H,
  BPF_JEQ,
  BPF_JGT,
  BPF_MAP_TYPE_ARRAY,
  BPF_PROG_TYPE_SOCKET_FILTER,
  BPF_W,
  BpfAssembler,
  bpfMapCreate,
  bpfMapLookup,
  bpfMapUpdate,
  bpfProgLoad,
  R0,
  R1,
  R2,
  R3,
  R6,
  R7,
  R10,
} from './bpf.js';
import { libc } from './libc.js';

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

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

const root = process.platform === 'linux' && process.getuid?.() === 0;

describe.skipIf(!root)('bpf(2) wrappers (root)', () => {
  it('creates an array map, updates and looks up a value, and closes it without leaking an fd', () => {
    const fds = readdirSync('/proc/self/fd').length;
    const fd = bpfMapCreate({
      type: BPF_MAP_TYPE_ARRAY,
      keySize: 4,
      valueSize: 16,
      maxEntries: 2,
      name: 'vnt_test',
    });
    try {
      const key = Uint32Array.of(1);
      const k = new Uint8Array(key.buffer);
      const out = new Uint8Array(16);
      expect(bpfMapLookup(fd, k, out)).toBe(true); // array maps are zero-filled
      expect(hex(out)).toBe('00'.repeat(16));
      const value = Uint8Array.from({ length: 16 }, (_, i) => i * 3 + 1);
      bpfMapUpdate(fd, k, value);
      expect(bpfMapLookup(fd, k, out)).toBe(true);
      expect([...out]).toEqual([...value]);
      expect(bpfMapLookup(fd, new Uint8Array(Uint32Array.of(2).buffer), out)).toBe(false); // ENOENT
      expect(() => bpfMapUpdate(fd, new Uint8Array(Uint32Array.of(9).buffer), value, 0, 'test')).toThrow(
        /^test: BPF_MAP_UPDATE_ELEM \(16 bytes\) failed: E2BIG \(Argument list too long\)$/, // index 9 of a 4-entry array
      );
    } finally {
      libc().close(fd);
    }
    expect(readdirSync('/proc/self/fd').length).toBe(fds);
  });

  it('loads a socket filter and reports the verifier log of one it refuses', () => {
    const ok = bpfProgLoad({
      type: BPF_PROG_TYPE_SOCKET_FILTER,
      insns: new BpfAssembler().movImm(R0, 0).exit().assemble(),
      license: 'Apache-2.0',
      name: 'vnt_ok',
    });
    libc().close(ok.fd);
    expect(ok.log).toMatch(/processed \d+ insns/);
    // Reads R2 before anything wrote it: the verifier says so.
    const bad = new BpfAssembler().movReg(R0, R2).exit().assemble();
    expect(() =>
      bpfProgLoad(
        { type: BPF_PROG_TYPE_SOCKET_FILTER, insns: bad, license: 'Apache-2.0', name: 'vnt_bad' },
        'test',
      ),
    ).toThrow(/^test: BPF_PROG_LOAD \(socket filter\) failed: EACCES[\s\S]*verifier log:[\s\S]*R2 !read_ok/);
  });
});
