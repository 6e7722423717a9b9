/**
 * io_uring's user-visible layouts (include/uapi/linux/io_uring.h): io_uring_params and the two ring
 * offset structs, the SQE and CQE, and the flag values this library uses. Pure codec: no syscalls.
 */
/** struct io_uring_params (120 bytes); `sqOff` / `cqOff` are where the two offset structs start. */
export const PARAMS = {
  size: 120,
  sqEntries: 0,
  cqEntries: 4,
  flags: 8,
  sqThreadCpu: 12,
  sqThreadIdle: 16,
  features: 20,
  wqFd: 24,
  sqOff: 40,
  cqOff: 80,
} as const;

/** struct io_sqring_offsets (40 bytes): byte offsets into the SQ ring mapping. */
export const SQ_OFF = {
  head: 0,
  tail: 4,
  ringMask: 8,
  ringEntries: 12,
  flags: 16,
  dropped: 20,
  array: 24,
} as const;

/** struct io_cqring_offsets (40 bytes): byte offsets into the CQ ring mapping. */
export const CQ_OFF = {
  head: 0,
  tail: 4,
  ringMask: 8,
  ringEntries: 12,
  overflow: 16,
  cqes: 20,
  flags: 24,
} as const;

/** struct io_uring_sqe (64 bytes). */
export const SQE = {
  size: 64,
  opcode: 0,
  flags: 1,
  ioprio: 2,
  fd: 4,
  off: 8,
  addr: 16,
  len: 24,
  rwFlags: 28,
  userData: 32,
  bufIndex: 40,
  personality: 42,
  spliceFdIn: 44,
} as const;

/** struct io_uring_cqe (16 bytes). */
export const CQE = { size: 16, userData: 0, res: 8, flags: 12 } as const;

/** struct io_uring_getevents_arg (24 bytes) and struct __kernel_timespec (16 bytes). */
export const GETEVENTS_ARG = { size: 24, sigmask: 0, sigmaskSz: 8, ts: 16 } as const;
export const TIMESPEC_SIZE = 16;

/** Opcodes (enum io_uring_op). */
export const IORING_OP_NOP = 0;
export const IORING_OP_READV = 1;
export const IORING_OP_WRITEV = 2;
export const IORING_OP_READ = 22;
export const IORING_OP_WRITE = 23;

/** RWF_NOWAIT (rw_flags of a read): fail with -EAGAIN instead of waiting for data (no poll armed). */
export const RWF_NOWAIT = 0x8;
/** io_uring_setup flags. */
export const IORING_SETUP_SUBMIT_ALL = 1 << 7;
export const IORING_SETUP_SQPOLL = 1 << 1;
/** io_uring sq_ring flags: the SQPOLL thread went idle and needs IORING_ENTER_SQ_WAKEUP. */
export const IORING_SQ_NEED_WAKEUP = 1 << 0;
/** io_uring_params.features. */
export const IORING_FEAT_SINGLE_MMAP = 1 << 0;
export const IORING_FEAT_NODROP = 1 << 1;
export const IORING_FEAT_EXT_ARG = 1 << 8;
/** io_uring_enter flags. */
export const IORING_ENTER_GETEVENTS = 1 << 0;
export const IORING_ENTER_SQ_WAKEUP = 1 << 1;
export const IORING_ENTER_EXT_ARG = 1 << 3;
/** mmap offsets selecting the SQ ring, CQ ring and SQE array. */
export const IORING_OFF_SQ_RING = 0;
export const IORING_OFF_CQ_RING = 0x8000000;
export const IORING_OFF_SQES = 0x10000000;
/** The kernel's IORING_MAX_ENTRIES. */
export const IORING_MAX_ENTRIES = 32768;

export const TWO32 = 4294967296;

/** Decoded io_uring_params as the kernel filled them in. */
export interface IoUringParams {
  sqEntries: number;
  cqEntries: number;
  flags: number;
  features: number;
  sqOff: { -readonly [K in keyof typeof SQ_OFF]: number };
  cqOff: { -readonly [K in keyof typeof CQ_OFF]: number };
}

export function setU64(v: DataView, at: number, x: number): void {
  // Two's complement for negatives (off = -1: "the current file position").
  v.setUint32(at, x >>> 0, true);
  v.setUint32(at + 4, Math.floor(x / TWO32) >>> 0, true);
}

function getU64(v: DataView, at: number): number {
  return v.getUint32(at, true) + v.getUint32(at + 4, true) * TWO32;
}

/** io_uring_params for io_uring_setup: `entries` SQ entries (kernel rounds up to a power of 2), `flags`. */
export function encodeParams(entries: number, flags: number, sqThreadIdleMs = 0): Uint8Array {
  const b = new Uint8Array(PARAMS.size);
  const v = new DataView(b.buffer);
  v.setUint32(PARAMS.sqEntries, entries, true);
  v.setUint32(PARAMS.flags, flags, true);
  v.setUint32(PARAMS.sqThreadIdle, sqThreadIdleMs, true);
  return b;
}

/** The params io_uring_setup copied back. */
export function decodeParams(b: Uint8Array): IoUringParams {
  const v = new DataView(b.buffer, b.byteOffset, PARAMS.size);
  const sq = {} as IoUringParams['sqOff'];
  for (const [k, off] of Object.entries(SQ_OFF))
    sq[k as keyof typeof SQ_OFF] = v.getUint32(PARAMS.sqOff + off, true);
  const cq = {} as IoUringParams['cqOff'];
  for (const [k, off] of Object.entries(CQ_OFF))
    cq[k as keyof typeof CQ_OFF] = v.getUint32(PARAMS.cqOff + off, true);
  return {
    sqEntries: v.getUint32(PARAMS.sqEntries, true),
    cqEntries: v.getUint32(PARAMS.cqEntries, true),
    flags: v.getUint32(PARAMS.flags, true),
    features: v.getUint32(PARAMS.features, true),
    sqOff: sq,
    cqOff: cq,
  };
}

/**
 * Writes one SQE at byte `at` of `v`: every field zero except those given (ioprio, rw_flags, buf_index,
 * personality, splice_fd_in, padding). `off` -1 means the file's current position (streams ignore it).
 */
export function writeSqe(
  v: DataView,
  at: number,
  opcode: number,
  fd: number,
  addr: number,
  len: number,
  off: number,
  userData: number,
  rwFlags = 0,
): void {
  // Each 32-bit word written once (this runs per frame): opcode with flags = 0 and ioprio = 0 above it.
  v.setUint32(at + SQE.opcode, opcode & 0xff, true);
  v.setInt32(at + SQE.fd, fd, true);
  setU64(v, at + SQE.off, off);
  setU64(v, at + SQE.addr, addr);
  v.setUint32(at + SQE.len, len, true);
  v.setUint32(at + SQE.rwFlags, rwFlags, true);
  setU64(v, at + SQE.userData, userData);
  for (let i = SQE.bufIndex; i < SQE.size; i += 4) v.setUint32(at + i, 0, true);
}

/** A CQE's result: bytes written, or -errno. */
export function cqeRes(v: DataView, at: number): number {
  return v.getInt32(at + CQE.res, true);
}

/** A CQE's user_data (exact up to 2^53). */
export function cqeUserData(v: DataView, at: number): number {
  return getU64(v, at + CQE.userData);
}
