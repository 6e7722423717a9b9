/**
 * eBPF from TypeScript, no compiler at run time: a minimal assembler for `struct bpf_insn` and the bpf(2)
 * commands a socket-filter program with an array map needs (map create / update / lookup, program load
 * with the verifier's log). Linux, through the koffi binding (lib/host/libc.ts). The RSS steering program
 * (lib/tap/steering-program.ts) is built with it.
 */
import { BackendError } from '../errors.js';
import { Errno, errnoName, libc, SYS_bpf } from './libc.js';

// ---------------------------------------------------------------------------------------------------
// eBPF instruction encoding (include/uapi/linux/bpf.h, bpf_common.h;
// Documentation/bpf/standardization/instruction-set.rst). One instruction is 8 bytes:
// u8 code, u8 (src_reg << 4 | dst_reg), s16 off, s32 imm, little-endian.

export const BPF_LD = 0x00;
export const BPF_LDX = 0x01;
export const BPF_ST = 0x02;
export const BPF_STX = 0x03;
export const BPF_ALU = 0x04;
export const BPF_JMP = 0x05;
export const BPF_ALU64 = 0x07;
export const BPF_W = 0x00;
export const BPF_H = 0x08;
export const BPF_B = 0x10;
export const BPF_DW = 0x18;
export const BPF_IMM = 0x00;
export const BPF_MEM = 0x60;
export const BPF_K = 0x00;
export const BPF_X = 0x08;
export const BPF_ADD = 0x00;
export const BPF_SUB = 0x10;
export const BPF_OR = 0x40;
export const BPF_AND = 0x50;
export const BPF_LSH = 0x60;
export const BPF_RSH = 0x70;
export const BPF_XOR = 0xa0;
export const BPF_MOV = 0xb0;
export const BPF_END = 0xd0;
export const BPF_TO_BE = 0x08;
export const BPF_JA = 0x00;
export const BPF_JEQ = 0x10;
export const BPF_JGT = 0x20;
export const BPF_JGE = 0x30;
export const BPF_JSET = 0x40;
export const BPF_JNE = 0x50;
export const BPF_JLT = 0xa0;
export const BPF_CALL = 0x80;
export const BPF_EXIT = 0x90;
/** ld_imm64 src_reg: imm is a map fd, the second imm an offset into its (single) value. */
export const BPF_PSEUDO_MAP_VALUE = 2;
/** Helper ids (enum bpf_func_id). */
export const BPF_FUNC_skb_load_bytes = 26;

export type BpfSize = typeof BPF_W | typeof BPF_H | typeof BPF_B | typeof BPF_DW;

/** Registers: R0 return, R1..R5 arguments (clobbered by calls), R6..R9 callee saved, R10 frame pointer. */
export const R0 = 0;
export const R1 = 1;
export const R2 = 2;
export const R3 = 3;
export const R4 = 4;
export const R5 = 5;
export const R6 = 6;
export const R7 = 7;
export const R8 = 8;
export const R9 = 9;
export const R10 = 10;

interface Insn {
  code: number;
  dst: number;
  src: number;
  off: number;
  imm: number;
  /** Jump target label, resolved into `off` by `assemble`. */
  target?: string;
}

/**
 * A minimal eBPF assembler with labels. Methods append one instruction (two for `ldMapValue`); jumps
 * name a label, defined before or after with `label`.
 */
export class BpfAssembler {
  private readonly insns: Insn[] = [];
  private readonly labels = new Map<string, number>();
  private unique = 0;

  /** Instructions so far (ld_imm64 counts 2). */
  get length(): number {
    return this.insns.length;
  }

  /** A fresh label name (for generated, repeated code). */
  fresh(prefix: string): string {
    return `${prefix}#${this.unique++}`;
  }

  label(name: string): this {
    if (this.labels.has(name)) throw new Error(`BpfAssembler: label '${name}' defined twice`);
    this.labels.set(name, this.insns.length);
    return this;
  }

  raw(code: number, dst: number, src: number, off: number, imm: number, target?: string): this {
    this.insns.push({ code, dst, src, off, imm, target });
    return this;
  }

  /** dst = imm (64-bit, sign-extended imm). */
  movImm(dst: number, imm: number): this {
    return this.raw(BPF_ALU64 | BPF_MOV | BPF_K, dst, 0, 0, imm);
  }
  /** dst = src. */
  movReg(dst: number, src: number): this {
    return this.raw(BPF_ALU64 | BPF_MOV | BPF_X, dst, src, 0, 0);
  }
  /** dst op= imm (64-bit ALU). */
  aluImm(op: number, dst: number, imm: number): this {
    return this.raw(BPF_ALU64 | op | BPF_K, dst, 0, 0, imm);
  }
  /** dst op= src (64-bit ALU). */
  aluReg(op: number, dst: number, src: number): this {
    return this.raw(BPF_ALU64 | op | BPF_X, dst, src, 0, 0);
  }
  /** dst = be16/be32(dst): big-endian to host, upper bits cleared (BPF_END | BPF_TO_BE on LE hosts). */
  be(dst: number, bits: 16 | 32): this {
    return this.raw(BPF_ALU | BPF_END | BPF_TO_BE, dst, 0, 0, bits);
  }
  /** dst = *(size *)(src + off). */
  ldx(size: BpfSize, dst: number, src: number, off: number): this {
    return this.raw(BPF_LDX | size | BPF_MEM, dst, src, off, 0);
  }
  /** *(size *)(dst + off) = src. */
  stx(size: BpfSize, dst: number, off: number, src: number): this {
    return this.raw(BPF_STX | size | BPF_MEM, dst, src, off, 0);
  }
  /** *(size *)(dst + off) = imm. */
  st(size: BpfSize, dst: number, off: number, imm: number): this {
    return this.raw(BPF_ST | size | BPF_MEM, dst, 0, off, imm);
  }
  /** if (dst op imm) goto target (64-bit compare; imm sign-extended). */
  jmpImm(op: number, dst: number, imm: number, target: string): this {
    return this.raw(BPF_JMP | op | BPF_K, dst, 0, 0, imm, target);
  }
  /** if (dst op src) goto target. */
  jmpReg(op: number, dst: number, src: number, target: string): this {
    return this.raw(BPF_JMP | op | BPF_X, dst, src, 0, 0, target);
  }
  /** goto target. */
  ja(target: string): this {
    return this.raw(BPF_JMP | BPF_JA, 0, 0, 0, 0, target);
  }
  /** Calls helper `id` (R1..R5 arguments, R0 result; R1..R5 clobbered). */
  call(id: number): this {
    return this.raw(BPF_JMP | BPF_CALL, 0, 0, 0, id);
  }
  exit(): this {
    return this.raw(BPF_JMP | BPF_EXIT, 0, 0, 0, 0);
  }
  /** dst = address of byte `offset` of the value of array map `mapFd` (entry 0); two instructions. */
  ldMapValue(dst: number, mapFd: number, offset: number): this {
    this.raw(BPF_LD | BPF_DW | BPF_IMM, dst, BPF_PSEUDO_MAP_VALUE, 0, mapFd);
    return this.raw(0, 0, 0, 0, offset);
  }

  /** The program as bytes (struct bpf_insn[]), jump offsets resolved. */
  assemble(): Uint8Array {
    const out = new Uint8Array(this.insns.length * 8);
    const v = new DataView(out.buffer);
    this.insns.forEach((insn, i) => {
      let off = insn.off;
      if (insn.target !== undefined) {
        const at = this.labels.get(insn.target);
        if (at === undefined) throw new Error(`BpfAssembler: undefined label '${insn.target}'`);
        off = at - (i + 1);
        if (off < -0x8000 || off > 0x7fff) throw new Error(`BpfAssembler: jump to '${insn.target}' too far`);
      }
      const o = i * 8;
      out[o] = insn.code;
      out[o + 1] = ((insn.src & 0xf) << 4) | (insn.dst & 0xf);
      v.setInt16(o + 2, off, true);
      v.setInt32(o + 4, insn.imm | 0, true);
    });
    return out;
  }
}

// ---------------------------------------------------------------------------------------------------
// bpf(2) (include/uapi/linux/bpf.h, union bpf_attr).

export const BPF_MAP_CREATE = 0;
export const BPF_MAP_LOOKUP_ELEM = 1;
export const BPF_MAP_UPDATE_ELEM = 2;
export const BPF_PROG_LOAD = 5;
export const BPF_MAP_TYPE_ARRAY = 2;
export const BPF_PROG_TYPE_SOCKET_FILTER = 1;
/** BPF_MAP_UPDATE_ELEM flags: create or replace. */
export const BPF_ANY = 0;
const ATTR_SIZE = 128;
const LOG_LEVEL_VERBOSE = 1;
const LOG_LEVEL_STATS = 4;
const LOG_SIZE = 1 << 20;
/** Names for error messages. */
const MAP_TYPE_NAMES: Record<number, string> = { [BPF_MAP_TYPE_ARRAY]: 'array map' };
const PROG_TYPE_NAMES: Record<number, string> = { [BPF_PROG_TYPE_SOCKET_FILTER]: 'socket filter' };

/** The raw bpf(2) call: the result, or -1 with errno. */
export function bpf(cmd: number, attr: Uint8Array): number {
  return libc().syscall3(SYS_bpf, cmd, attr, attr.length);
}

/** A BackendError for the bpf(2) command that just failed (errno), with the verifier's log if any. */
export function bpfError(who: string, what: string, log = ''): BackendError {
  const c = libc();
  const e = c.errno();
  const tail = log.length > 6000 ? `…${log.slice(-6000)}` : log;
  return new BackendError(
    `${who}: ${what} failed: ${errnoName(e)} (${c.strerror(e)})${tail ? `\nverifier log:\n${tail}` : ''}`,
    e,
    errnoName(e),
  );
}

function cString(s: string): Uint8Array {
  const b = new Uint8Array(s.length + 1);
  b.set(Buffer.from(s, 'latin1'));
  return b;
}

function logText(buf: Uint8Array): string {
  const end = buf.indexOf(0);
  return Buffer.from(buf.subarray(0, end < 0 ? buf.length : end))
    .toString('utf8')
    .trim();
}

/** What BPF_MAP_CREATE makes. */
export interface BpfMapSpec {
  type: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  /** Shown by `bpftool map` (at most 15 bytes). */
  name: string;
}

/** BPF_MAP_CREATE: the new map's fd (the caller closes it). BackendError prefixed `who` on failure. */
export function bpfMapCreate(spec: BpfMapSpec, who = 'bpf'): number {
  const attr = new Uint8Array(ATTR_SIZE);
  const av = new DataView(attr.buffer);
  av.setUint32(0, spec.type, true);
  av.setUint32(4, spec.keySize, true);
  av.setUint32(8, spec.valueSize, true);
  av.setUint32(12, spec.maxEntries, true);
  attr.set(cString(spec.name), 28); // map_name
  const fd = bpf(BPF_MAP_CREATE, attr);
  if (fd < 0) throw bpfError(who, `BPF_MAP_CREATE (${MAP_TYPE_NAMES[spec.type] ?? `map type ${spec.type}`})`);
  return fd;
}

/**
 * BPF_MAP_UPDATE_ELEM of `key` with `value` (each exactly the map's size). The kernel reads both through
 * bare addresses in `bpf_attr`: the caller keeps them reachable across the call (a module-level key, a
 * value it still holds).
 */
export function bpfMapUpdate(
  mapFd: number,
  key: Uint8Array,
  value: Uint8Array,
  flags = BPF_ANY,
  who = 'bpf',
): void {
  const c = libc();
  const attr = new Uint8Array(ATTR_SIZE);
  const av = new DataView(attr.buffer);
  av.setUint32(0, mapFd, true);
  av.setBigUint64(8, BigInt(c.addressOf(key)), true);
  av.setBigUint64(16, BigInt(c.addressOf(value)), true);
  av.setBigUint64(24, BigInt(flags), true);
  const rc = bpf(BPF_MAP_UPDATE_ELEM, attr);
  if (rc < 0) throw bpfError(who, `BPF_MAP_UPDATE_ELEM (${value.length} bytes)`);
}

/**
 * BPF_MAP_LOOKUP_ELEM: the kernel copies the value of `key` into `value` (the map's value size); false
 * when there is none (ENOENT). As for update, the caller keeps both arrays reachable across the call.
 */
export function bpfMapLookup(mapFd: number, key: Uint8Array, value: Uint8Array, who = 'bpf'): boolean {
  const c = libc();
  const attr = new Uint8Array(ATTR_SIZE);
  const av = new DataView(attr.buffer);
  av.setUint32(0, mapFd, true);
  av.setBigUint64(8, BigInt(c.addressOf(key)), true);
  av.setBigUint64(16, BigInt(c.addressOf(value)), true);
  const rc = bpf(BPF_MAP_LOOKUP_ELEM, attr);
  if (rc >= 0) return true;
  if (c.errno() === Errno.ENOENT) return false;
  throw bpfError(who, `BPF_MAP_LOOKUP_ELEM (${value.length} bytes)`);
}

/** What BPF_PROG_LOAD loads. */
export interface BpfProgSpec {
  type: number;
  /** The instructions (BpfAssembler.assemble). */
  insns: Uint8Array;
  license: string;
  /** Shown by `bpftool prog` (at most 15 bytes). */
  name: string;
}

/**
 * BPF_PROG_LOAD: the program's fd (the caller closes it) and the verifier's statistics ("processed N
 * insns ..."). When the kernel refuses it, loads again with the verbose log and throws a BackendError
 * (prefixed `who`) that carries the log's tail.
 */
export function bpfProgLoad(spec: BpfProgSpec, who = 'bpf'): { fd: number; log: string } {
  const c = libc();
  const { insns } = spec;
  const license = cString(spec.license);
  const log = new Uint8Array(LOG_SIZE);
  const attr = new Uint8Array(ATTR_SIZE);
  const av = new DataView(attr.buffer);
  const load = (level: number) => {
    attr.fill(0);
    av.setUint32(0, spec.type, true);
    av.setUint32(4, insns.length / 8, true);
    av.setBigUint64(8, BigInt(c.addressOf(insns)), true);
    av.setBigUint64(16, BigInt(c.addressOf(license)), true);
    av.setUint32(24, level, true);
    av.setUint32(28, log.length, true);
    av.setBigUint64(32, BigInt(c.addressOf(log)), true);
    attr.set(cString(spec.name), 48); // prog_name
    return bpf(BPF_PROG_LOAD, attr);
  };
  let fd = load(LOG_LEVEL_STATS);
  if (fd < 0) {
    log.fill(0);
    fd = load(LOG_LEVEL_VERBOSE | LOG_LEVEL_STATS);
    if (fd < 0)
      throw bpfError(
        who,
        `BPF_PROG_LOAD (${PROG_TYPE_NAMES[spec.type] ?? `program type ${spec.type}`})`,
        logText(log),
      );
  }
  // insns and license were read through bare addresses: this use keeps them reachable until here.
  if (insns.length === 0 || license.length === 0) throw new BackendError(`${who}: empty program`);
  return { fd, log: logText(log) };
}
