import { mkdtempSync, openSync, readFileSync, readSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { BackendError } from '../errors.js';
import {
  CQE,
  cqeRes,
  cqeUserData,
  decodeParams,
  encodeParams,
  IORING_FEAT_SINGLE_MMAP,
  IORING_OP_READ,
  IORING_OP_WRITEV,
  IORING_SETUP_SQPOLL,
  IORING_SETUP_SUBMIT_ALL,
  IORING_SQ_NEED_WAKEUP,
  IoUring,
  PARAMS,
  RWF_NOWAIT,
  SQE,
  unsupportedReason,
  writeSqe,
} from './io-uring.js';
import { Errno, libc, libcAvailable, O_NONBLOCK } from './libc.js';

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');
const TWO32 = 4294967296;

describe('io_uring layouts', () => {
  it('encodes io_uring_params byte for byte (sq_entries at 0, flags at 8, the rest zero)', () => {
    const b = encodeParams(8, IORING_SETUP_SUBMIT_ALL);
    expect(b.length).toBe(120);
    expect(hex(b)).toBe(`08000000000000008000000000000000${'00'.repeat(104)}`);
  });

  it('encodes SQPOLL with its idle time in sq_thread_idle (byte 16)', () => {
    const b = encodeParams(4, IORING_SETUP_SQPOLL, 50);
    expect(hex(b)).toBe(`0400000000000000020000000000000032000000${'00'.repeat(100)}`);
  });

  it('decodes the sq/cq offset structs at bytes 40 and 80', () => {
    const b = new Uint8Array(PARAMS.size);
    const v = new DataView(b.buffer);
    v.setUint32(0, 64, true);
    v.setUint32(4, 128, true);
    v.setUint32(8, 0x80, true);
    v.setUint32(20, 0x1fff, true);
    // io_sqring_offsets: head, tail, ring_mask, ring_entries, flags, dropped, array, resv1, resv2
    [0, 4, 8, 12, 16, 20, 24].forEach((off, i) => {
      v.setUint32(40 + off, 1000 + i, true);
      v.setUint32(80 + off, 2000 + i, true);
    });
    v.setUint32(40 + 28, 0xdead, true); // resv1: not decoded
    expect(decodeParams(b)).toEqual({
      sqEntries: 64,
      cqEntries: 128,
      flags: 0x80,
      features: 0x1fff,
      sqOff: {
        head: 1000,
        tail: 1001,
        ringMask: 1002,
        ringEntries: 1003,
        flags: 1004,
        dropped: 1005,
        array: 1006,
      },
      cqOff: {
        head: 2000,
        tail: 2001,
        ringMask: 2002,
        ringEntries: 2003,
        overflow: 2004,
        cqes: 2005,
        flags: 2006,
      },
    });
  });

  it('writes a 64-byte SQE byte for byte and nothing outside it', () => {
    const b = new Uint8Array(192).fill(0xaa);
    const v = new DataView(b.buffer);
    writeSqe(v, 64, IORING_OP_WRITEV, 7, 0x7f12_3456_789a, 2, -1, 0x1_0000_0005);
    expect(hex(b.subarray(0, 64))).toBe('aa'.repeat(64));
    expect(hex(b.subarray(128))).toBe('aa'.repeat(64));
    expect(hex(b.subarray(64, 128))).toBe(
      [
        '02000000', // opcode WRITEV, flags 0, ioprio 0
        '07000000', // fd
        'ffffffffffffffff', // off -1
        '9a785634127f0000', // addr 0x7f123456789a
        '02000000', // len (iovecs)
        '00000000', // rw_flags
        '0500000001000000', // user_data
        '0000', // buf_index
        '0000', // personality
        '00000000', // splice_fd_in
        '00'.repeat(16), // pad
      ].join(''),
    );
  });

  it('writes a READ SQE with RWF_NOWAIT in rw_flags, byte for byte', () => {
    const b = new Uint8Array(64).fill(0xaa);
    writeSqe(new DataView(b.buffer), 0, IORING_OP_READ, 5, 0x1000, 65600, -1, 63, RWF_NOWAIT);
    expect(hex(b)).toBe(
      [
        '16000000', // opcode READ (22), flags 0, ioprio 0
        '05000000', // fd
        'ffffffffffffffff', // off -1: the file position (a tap ignores it)
        '0010000000000000', // addr
        '40000100', // len 65600
        '08000000', // rw_flags RWF_NOWAIT
        '3f00000000000000', // user_data 63
        '00'.repeat(24), // buf_index, personality, splice_fd_in, pad
      ].join(''),
    );
  });

  it('SQE fields round-trip through their offsets (property)', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }),
        fc.maxSafeNat(),
        fc.integer({ min: 0, max: 2 ** 32 - 1 }),
        fc.oneof(fc.constant(-1), fc.maxSafeNat()),
        fc.maxSafeNat(),
        (fd, addr, len, off, userData) => {
          const b = new Uint8Array(SQE.size).fill(0x55);
          const v = new DataView(b.buffer);
          writeSqe(v, 0, 23, fd, addr, len, off, userData);
          const u64 = (at: number) => v.getUint32(at, true) + v.getUint32(at + 4, true) * TWO32;
          expect(b[SQE.opcode]).toBe(23);
          expect(v.getInt32(SQE.fd, true)).toBe(fd);
          expect(u64(SQE.addr)).toBe(addr);
          expect(v.getUint32(SQE.len, true)).toBe(len);
          expect(u64(SQE.userData)).toBe(userData);
          if (off === -1) expect(v.getBigInt64(SQE.off, true)).toBe(-1n);
          else expect(u64(SQE.off)).toBe(off);
          expect(hex(b.subarray(SQE.bufIndex))).toBe('00'.repeat(24));
        },
      ),
    );
  });

  it('reads a CQE: user_data at 0 (u64), res at 8 (signed)', () => {
    const b = new Uint8Array(2 * CQE.size);
    b.set([0x05, 0, 0, 0, 0x02, 0, 0, 0, 0xf7, 0xff, 0xff, 0xff, 0, 0, 0, 0], CQE.size);
    const v = new DataView(b.buffer);
    expect(cqeUserData(v, CQE.size)).toBe(2 * TWO32 + 5);
    expect(cqeRes(v, CQE.size)).toBe(-Errno.EBADF);
  });
});

describe('IoUring.supported', () => {
  it('names the cause for each way the kernel refuses', () => {
    expect(unsupportedReason(38, 0, 0)).toMatch(/ENOSYS: the kernel has no io_uring/);
    expect(unsupportedReason(Errno.EPERM, 2, 0)).toMatch(/EPERM: kernel.io_uring_disabled=2/);
    expect(unsupportedReason(Errno.EPERM, 1, 0)).toMatch(/kernel.io_uring_disabled=1 \(only CAP_SYS_ADMIN/);
    expect(unsupportedReason(Errno.EPERM, 0, 2)).toMatch(/EPERM: blocked by a seccomp filter/);
    expect(unsupportedReason(Errno.EACCES, null, null)).toMatch(/EACCES: not permitted/);
    expect(unsupportedReason(Errno.ENOMEM, 0, 0)).toMatch(/RLIMIT_MEMLOCK/);
    expect(unsupportedReason(Errno.EINVAL, 0, 0)).toBe('io_uring_setup failed with EINVAL');
  });

  it('answers consistently with create: null and a ring opens, or a reason and create throws', () => {
    const why = IoUring.supported();
    expect(IoUring.supported()).toBe(why); // cached
    if (why === null) {
      const ring = IoUring.create(2);
      expect(ring.sqEntries).toBe(2);
      ring.close();
    } else {
      expect(typeof why).toBe('string');
      expect(() => IoUring.create(2)).toThrow(BackendError);
    }
  });

  it('rejects entries outside 1..32768 before asking the kernel', () => {
    for (const n of [0, -1, 1.5, 32769, Number.NaN])
      expect(() => IoUring.create(n)).toThrow(/entries must be an integer in 1..32768/);
  });

  it('rejects an SQPOLL idle time outside 1..60000 ms by name', () => {
    for (const ms of [0, -5, 2.5, 60_001])
      expect(() => IoUring.create(4, { sqPollIdleMs: ms })).toThrow(/sqPollIdleMs must be an integer/);
  });
});

const why = libcAvailable() ? IoUring.supported() : 'libc not loadable';
const SYS_pipe2 = process.arch === 'arm64' ? 59 : 293;
const F_SETPIPE_SZ = 1031;
const fdsToClose: number[] = [];
const tmp = mkdtempSync(join(tmpdir(), 'io-uring-test-'));
afterAll(() => {
  for (const fd of fdsToClose) libc().close(fd);
  rmSync(tmp, { recursive: true, force: true });
});

function pipe(flags = 0): [number, number] {
  const c = libc();
  const fds = new Int32Array(2);
  if (c.syscall6(SYS_pipe2, c.addressOf(new Uint8Array(fds.buffer)), flags, 0, 0, 0, 0) < 0)
    throw new Error(`pipe2: errno ${c.errno()}`);
  fdsToClose.push(fds[0] as number, fds[1] as number);
  return [fds[0] as number, fds[1] as number];
}

/** struct iovec[] over `bufs`: 16 bytes each, base (u64) then length (u64). */
function iovecs(bufs: Uint8Array[]): Uint8Array {
  const c = libc();
  const iov = new Uint8Array(16 * bufs.length);
  const v = new DataView(iov.buffer);
  bufs.forEach((b, i) => {
    const a = c.addressOf(b);
    v.setUint32(i * 16, a >>> 0, true);
    v.setUint32(i * 16 + 4, Math.floor(a / TWO32), true);
    v.setUint32(i * 16 + 8, b.length, true);
  });
  return iov;
}

function drain(fd: number, max = 1 << 20): Uint8Array {
  const out = new Uint8Array(max);
  let n = 0;
  for (;;) {
    try {
      const r = readSync(fd, out, n, max - n, null);
      if (r <= 0) break;
      n += r;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EAGAIN') break;
      throw err;
    }
  }
  return out.subarray(0, n);
}

const bytes = (len: number, seed: number) =>
  Uint8Array.from({ length: len }, (_, i) => (i * 31 + seed * 7) & 0xff);

describe.skipIf(why !== null)(`IoUring on pipes and files${why ? ` (skipped: ${why})` : ''}`, () => {
  it('maps the rings the kernel describes (power-of-2 sizes, CQ twice the SQ, single mmap)', () => {
    const ring = IoUring.create(5);
    expect(ring.sqEntries).toBe(8);
    expect(ring.cqEntries).toBe(16);
    expect(ring.features & IORING_FEAT_SINGLE_MMAP).toBe(IORING_FEAT_SINGLE_MMAP);
    expect(ring.space).toBe(8);
    ring.close();
  });

  it('lands a burst of WRITEVs in a pipe byte for byte, in submission order, with their user_data', () => {
    const c = libc();
    const [r, w] = pipe(O_NONBLOCK);
    const ring = IoUring.create(16);
    // Per SQE a header and a frame in two buffers, as TapBackend sends them; lengths differ per SQE.
    const hdrs = Array.from({ length: 10 }, (_, i) => bytes(10, 100 + i));
    const frames = Array.from({ length: 10 }, (_, i) => bytes(60 + i * 37, i));
    const iovs = frames.map((f, i) => iovecs([hdrs[i] as Uint8Array, f]));
    iovs.forEach((iov, i) => {
      expect(ring.queueWritev(w, c.addressOf(iov), 2, 1000 + i)).toBe(true);
    });
    expect(ring.inFlight).toBe(10);
    expect(ring.submitAndWait(10)).toBe(10);
    const res = new Int32Array(16);
    const ud = new Float64Array(16);
    expect(ring.reap(res, ud)).toBe(10);
    expect(Array.from(ud.subarray(0, 10))).toEqual(frames.map((_, i) => 1000 + i));
    expect(Array.from(res.subarray(0, 10))).toEqual(frames.map((f) => 10 + f.length));
    expect(ring.inFlight).toBe(0);
    const expected = Buffer.concat(frames.flatMap((f, i) => [hdrs[i] as Uint8Array, f]));
    expect(hex(drain(r))).toBe(expected.toString('hex'));
    // iovs, hdrs and frames are referenced here, after the completions: the kernel read live memory.
    expect(iovs.length + hdrs.length + frames.length).toBe(30);
    ring.close();
  });

  it('reports short and failed writes as res = bytes written or -errno', () => {
    const c = libc();
    const ring = IoUring.create(8);
    const [r, w] = pipe(O_NONBLOCK);
    expect(c.fcntl(w, F_SETPIPE_SZ, 4096)).toBe(4096);
    const big = bytes(8192, 3);
    const small = bytes(16, 4);
    const full = openSync('/dev/full', 'w');
    fdsToClose.push(full);
    ring.queueWrite(w, c.addressOf(big), big.length, 1); // 4096 of 8192 fit
    ring.queueWrite(r, c.addressOf(small), small.length, 2); // read end
    ring.queueWrite(-1, c.addressOf(small), small.length, 3);
    ring.queueWritev(full, c.addressOf(iovecs([small])), 1, 4);
    ring.queueWrite(full, 0, 16, 5); // unmapped buffer
    // All complete without waiting on anything; completions may come in any order (some are punted).
    expect(ring.wait(5, 10_000)).toBe(5);
    const got = new Map<number, number>();
    for (let i = 0; i < 5; i++) got.set(ring.userData(i), ring.res(i));
    ring.advance(5);
    expect(got.get(1)).toBe(4096);
    expect(got.get(2)).toBe(-Errno.EBADF);
    expect(got.get(3)).toBe(-Errno.EBADF);
    expect(got.get(4)).toBe(-28); // ENOSPC
    expect([-Errno.EFAULT, -28]).toContain(got.get(5)); // /dev/full may refuse before touching the buffer
    expect(hex(drain(r))).toBe(hex(big.subarray(0, 4096)));
    ring.close();
  });

  it('wraps around: 1000 writes through a 4-entry ring in bursts of 3 land at their offsets', () => {
    const c = libc();
    const ring = IoUring.create(4);
    const path = join(tmp, 'wrap');
    const fd = openSync(path, 'w+');
    fdsToClose.push(fd);
    const chunks = Array.from({ length: 1000 }, (_, i) => bytes(13, i));
    let next = 0;
    let done = 0;
    const res = new Int32Array(4);
    const ud = new Float64Array(4);
    while (done < chunks.length) {
      for (let k = 0; k < 3 && next < chunks.length; k++) {
        const chunk = chunks[next] as Uint8Array;
        if (!ring.queueWrite(fd, c.addressOf(chunk), 13, next, next * 13)) break;
        next++;
      }
      ring.wait(1, 10_000);
      const n = ring.reap(res, ud);
      for (let i = 0; i < n; i++) expect(res[i]).toBe(13);
      done += n;
    }
    expect(next).toBe(1000);
    const expected = Buffer.concat(chunks);
    expect(readFileSync(path).equals(expected)).toBe(true);
    ring.close();
  });

  it('refuses to queue more than the SQ holds, and more than the CQ can take unreaped', () => {
    const ring = IoUring.create(4);
    for (let i = 0; i < 4; i++) expect(ring.queueNop(i)).toBe(true);
    expect(ring.queueNop(99)).toBe(false); // SQ full
    expect(ring.submitAndWait(4)).toBe(4);
    for (let i = 0; i < 4; i++) expect(ring.queueNop(10 + i)).toBe(true);
    expect(ring.submitAndWait(8)).toBe(8);
    expect(ring.space).toBe(0); // 8 completions unreaped: the CQ (8) is full
    expect(ring.queueNop(99)).toBe(false);
    const ud = new Float64Array(8);
    expect(ring.reap(new Int32Array(8), ud)).toBe(8);
    expect(Array.from(ud)).toEqual([0, 1, 2, 3, 10, 11, 12, 13]);
    expect(ring.space).toBe(4);
    ring.close();
  });

  it('bounds a wait for a write that cannot complete, and completes it once the pipe drains', () => {
    const c = libc();
    const ring = IoUring.create(4);
    const [r, w] = pipe();
    expect(c.fcntl(w, F_SETPIPE_SZ, 4096)).toBe(4096);
    const fill = bytes(4096, 9);
    expect(c.write(w, fill, fill.length)).toBe(4096); // the pipe is now full, and w blocks
    const more = bytes(100, 10);
    ring.queueWrite(w, c.addressOf(more), more.length, 7);
    expect(ring.wait(1, 100)).toBe(0);
    expect(ring.inFlight).toBe(1);
    c.fcntl(r, 4, O_NONBLOCK); // F_SETFL, so that drain stops when empty
    // Reading makes room; the pending write then runs (task work on this thread), possibly already
    // before the drain's next read, so the drained bytes are the fill and maybe `more`.
    const first = drain(r);
    expect(ring.wait(1, 10_000)).toBe(1);
    expect([ring.userData(0), ring.res(0)]).toEqual([7, 100]);
    ring.advance(1);
    expect(hex(Buffer.concat([first, drain(r)]))).toBe(hex(Buffer.concat([fill, more])));
    ring.close();
  });

  it('SQPOLL: writes land in order whether the kernel thread is awake or asleep (then woken)', () => {
    const c = libc();
    const [r, w] = pipe(O_NONBLOCK);
    const ring = IoUring.create(8, { sqPollIdleMs: 10 });
    expect(ring.sqPoll).toBe(true);
    const frames = [bytes(40, 1), bytes(70, 2), bytes(33, 3)];
    const collect = (n: number) => {
      expect(ring.wait(n, 10_000)).toBe(n);
      const res = Array.from({ length: n }, (_, i) => ring.res(i));
      ring.advance(n);
      return res;
    };
    // Awake (just created) or asleep (after the 10 ms idle below): both reach the pipe, in order.
    ring.queueWrite(w, c.addressOf(frames[0]!), 40, 1);
    ring.submit();
    expect(collect(1)).toEqual([40]);
    // After 10 idle ms the thread sleeps and says so in the SQ ring's flags; submit must wake it.
    const inner = ring as unknown as { sq: Uint32Array; sqFlagsIdx: number };
    const asleep = () => (Atomics.load(inner.sq, inner.sqFlagsIdx) & IORING_SQ_NEED_WAKEUP) !== 0;
    const sleeper = new Int32Array(new SharedArrayBuffer(4));
    for (let i = 0; i < 200 && !asleep(); i++) Atomics.wait(sleeper, 0, 0, 5);
    expect(asleep()).toBe(true);
    ring.queueWrite(w, c.addressOf(frames[1]!), 70, 2);
    ring.queueWrite(w, c.addressOf(frames[2]!), 33, 3);
    ring.submit();
    expect(collect(2)).toEqual([70, 33]);
    expect(hex(drain(r))).toBe(hex(Buffer.concat(frames)));
    ring.close();
  });

  it('close is idempotent; a closed ring queues nothing and refuses to submit', () => {
    const c = libc();
    const [, w] = pipe();
    const ring = IoUring.create(2);
    expect(c.fcntl(ring.fd, 1, 0)).toBeGreaterThanOrEqual(0); // F_GETFD: open
    // A write left in flight (the pipe is full and w blocks): the kernel cancels it at close.
    c.fcntl(w, F_SETPIPE_SZ, 4096);
    const fill = bytes(4096, 1);
    expect(c.write(w, fill, fill.length)).toBe(4096);
    ring.queueWrite(w, c.addressOf(fill), 10, 1);
    expect(ring.submit()).toBe(0);
    expect(ring.inFlight).toBe(1);
    ring.close();
    ring.close();
    expect(c.fcntl(ring.fd, 1, 0)).toBe(-1);
    expect(ring.queueNop(2)).toBe(false);
    expect(ring.space).toBe(0);
    expect(ring.ready()).toBe(0);
    ring.advance(1);
    expect(() => ring.submit()).toThrow(/used after close/);
  });
});
