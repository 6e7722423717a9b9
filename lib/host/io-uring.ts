/**
 * A minimal io_uring (Linux 5.1+, include/uapi/linux/io_uring.h) through koffi: one ring, WRITE/WRITEV
 * (and NOP) submissions, completions reaped without allocating. Built to batch tap writes: a burst of
 * frames becomes n SQEs and one `io_uring_enter` instead of n `writev(2)` calls.
 *
 * By default no SQPOLL: the kernel consumes SQEs only inside `io_uring_enter`, on this thread
 * (`sqPollIdleMs` asks for a poll thread instead; measured no faster for tap reads, docs/performance.md,
 * so nothing in the library uses it). The ring memory is
 * three shared mappings (or two with IORING_FEAT_SINGLE_MMAP): the SQ ring (head, tail, mask, the index
 * array), the CQ ring (head, tail, mask, the CQEs) and the SQE array.
 *
 * Memory ordering: ring indices go through Atomics on Uint32Arrays over the mapping (seq-cst: ldar/stlr
 * on aarch64, a plain load / a locked store on x86-64). For submissions plain stores would be enough:
 * without SQPOLL the kernel reads our SQ tail inside the syscall, on this thread, after our stores in
 * program order. For completions they are not on aarch64: a CQE may be posted by an io-wq worker on
 * another CPU (an operation the kernel punted), and a plain load of the CQE could be satisfied before
 * the load of the tail that says it is there. Atomics.load of the tail is the acquire that pairs with
 * the kernel's smp_store_release; Atomics.store of the CQ head is the release that keeps the kernel
 * from refilling a slot we are still reading. A few ns per burst, not per frame.
 *
 * Addresses: SQEs carry host addresses (iovec arrays, buffers; `Libc.addressOf`). The caller keeps every
 * array whose address it queued reachable until that SQE's completion has been reaped.
 */
import { readFileSync } from 'node:fs';
import { BackendError } from '../errors.js';
import {
  CQE,
  cqeRes,
  cqeUserData,
  decodeParams,
  encodeParams,
  GETEVENTS_ARG,
  IORING_ENTER_EXT_ARG,
  IORING_ENTER_GETEVENTS,
  IORING_ENTER_SQ_WAKEUP,
  IORING_FEAT_EXT_ARG,
  IORING_FEAT_SINGLE_MMAP,
  IORING_MAX_ENTRIES,
  IORING_OFF_CQ_RING,
  IORING_OFF_SQ_RING,
  IORING_OFF_SQES,
  IORING_OP_NOP,
  IORING_OP_READ,
  IORING_OP_READV,
  IORING_OP_WRITE,
  IORING_OP_WRITEV,
  IORING_SETUP_SQPOLL,
  IORING_SETUP_SUBMIT_ALL,
  IORING_SQ_NEED_WAKEUP,
  type IoUringParams,
  SQE,
  setU64,
  TIMESPEC_SIZE,
  writeSqe,
} from './io-uring-abi.js';
import {
  Errno,
  errnoName,
  type Libc,
  libc,
  MAP_POPULATE,
  MAP_SHARED,
  PROT_READ,
  PROT_WRITE,
  SYS_io_uring_enter,
  SYS_io_uring_setup,
} from './libc.js';

export * from './io-uring-abi.js';

const ETIME = 62;

/**
 * Why io_uring is unusable, from the io_uring_setup errno, kernel.io_uring_disabled (null: no such
 * sysctl) and the Seccomp mode in /proc/self/status (null: unknown). Pure, for `IoUring.supported`.
 */
export function unsupportedReason(errnum: number, disabled: number | null, seccomp: number | null): string {
  if (errnum === 38)
    return 'io_uring_setup failed with ENOSYS: the kernel has no io_uring (CONFIG_IO_URING off, or a seccomp filter answers ENOSYS)';
  if (errnum === Errno.EPERM || errnum === Errno.EACCES) {
    if (disabled === 2)
      return `io_uring_setup failed with ${errnoName(errnum)}: kernel.io_uring_disabled=2 (io_uring off for everyone)`;
    if (disabled === 1)
      return `io_uring_setup failed with ${errnoName(errnum)}: kernel.io_uring_disabled=1 (only CAP_SYS_ADMIN or kernel.io_uring_group members)`;
    if (seccomp === 2) return `io_uring_setup failed with ${errnoName(errnum)}: blocked by a seccomp filter`;
    return `io_uring_setup failed with ${errnoName(errnum)}: not permitted (LSM policy or container runtime)`;
  }
  if (errnum === Errno.ENOMEM)
    return 'io_uring_setup failed with ENOMEM: RLIMIT_MEMLOCK too low for the rings (kernels before 5.12)';
  return `io_uring_setup failed with ${errnoName(errnum)}`;
}

function readNumber(path: string, re: RegExp | null = null): number | null {
  try {
    const text = readFileSync(path, 'utf8');
    const m = re ? re.exec(text) : /^\s*(\d+)/.exec(text);
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

/** Options of `IoUring.create`. */
export interface IoUringOptions {
  /**
   * IORING_SETUP_SQPOLL: a kernel thread consumes SQEs as they are published, so submitting costs no
   * syscall while it is awake; it sleeps after this many idle milliseconds (then one
   * IORING_ENTER_SQ_WAKEUP wakes it). It spends a CPU while awake.
   */
  sqPollIdleMs?: number;
}

interface Mapping {
  address: number;
  length: number;
}

let supportCache: string | null | undefined;

/** One io_uring instance. Create with `IoUring.create`; not thread safe (one JS thread owns it). */
export class IoUring {
  /** The ring's fd (io_uring_setup). */
  readonly fd: number;
  /** SQ / CQ sizes the kernel chose (powers of 2; CQ is twice SQ by default). */
  readonly sqEntries: number;
  readonly cqEntries: number;
  /** io_uring_params.features (IORING_FEAT_*). */
  readonly features: number;
  /** io_uring_setup flags accepted (IORING_SETUP_SUBMIT_ALL when the kernel has it). */
  readonly setupFlags: number;

  private readonly c: Libc;
  private readonly maps: Mapping[];
  private sq: Uint32Array;
  private cq: Uint32Array;
  private sqes: DataView;
  private cqes: DataView;
  private readonly sqHeadIdx: number;
  private readonly sqTailIdx: number;
  private readonly cqHeadIdx: number;
  private readonly cqTailIdx: number;
  private readonly sqMask: number;
  private readonly sqFlagsIdx: number;
  /** The SQPOLL thread consumes SQEs (no syscall needed to submit while it is awake). */
  readonly sqPoll: boolean;
  private readonly cqMask: number;
  private readonly cqesOff: number;
  /** Our SQ tail (published to the kernel before each enter). */
  private sqTail = 0;
  /** Our CQ head (published in `advance`). */
  private cqHead = 0;
  /** Queued or in flight, not yet reaped: bounded by cqEntries so the CQ can never overflow. */
  private pending = 0;
  /** getevents_arg + timespec for bounded waits; kept here so the kernel reads live memory. */
  private readonly waitArg = new Uint8Array(GETEVENTS_ARG.size + TIMESPEC_SIZE);
  private readonly waitView = new DataView(this.waitArg.buffer);
  private readonly waitArgAddress: number;
  private closed = false;

  private constructor(
    c: Libc,
    fd: number,
    p: IoUringParams,
    setupFlags: number,
    maps: Mapping[],
    views: Uint8Array[],
  ) {
    this.c = c;
    this.fd = fd;
    this.sqEntries = p.sqEntries;
    this.cqEntries = p.cqEntries;
    this.features = p.features;
    this.setupFlags = setupFlags;
    this.maps = maps;
    const [sqRing, cqRing, sqes] = views as [Uint8Array, Uint8Array, Uint8Array];
    this.sq = new Uint32Array(sqRing.buffer, sqRing.byteOffset, sqRing.byteLength >>> 2);
    this.cq = new Uint32Array(cqRing.buffer, cqRing.byteOffset, cqRing.byteLength >>> 2);
    this.sqes = new DataView(sqes.buffer, sqes.byteOffset, sqes.byteLength);
    this.cqes = new DataView(cqRing.buffer, cqRing.byteOffset, cqRing.byteLength);
    this.sqHeadIdx = p.sqOff.head >>> 2;
    this.sqTailIdx = p.sqOff.tail >>> 2;
    this.sqFlagsIdx = p.sqOff.flags >>> 2;
    this.sqPoll = (setupFlags & IORING_SETUP_SQPOLL) !== 0;
    this.cqHeadIdx = p.cqOff.head >>> 2;
    this.cqTailIdx = p.cqOff.tail >>> 2;
    this.sqMask = this.sq[p.sqOff.ringMask >>> 2] as number;
    this.cqMask = this.cq[p.cqOff.ringMask >>> 2] as number;
    this.cqesOff = p.cqOff.cqes;
    this.sqTail = Atomics.load(this.sq, this.sqTailIdx);
    this.cqHead = Atomics.load(this.cq, this.cqHeadIdx);
    // The SQ index array maps ring slot i to SQE i, once: SQEs are then filled in ring order.
    const arrayIdx = p.sqOff.array >>> 2;
    for (let i = 0; i < p.sqEntries; i++) this.sq[arrayIdx + i] = i;
    this.waitArgAddress = c.addressOf(this.waitArg);
    setU64(this.waitView, GETEVENTS_ARG.ts, this.waitArgAddress + GETEVENTS_ARG.size);
  }

  /**
   * Null when io_uring can be set up here, else why not (kernel.io_uring_disabled, seccomp, ENOSYS,
   * no koffi/libc). Tries a one-entry ring once per process and caches the answer.
   */
  static supported(): string | null {
    if (supportCache !== undefined) return supportCache;
    supportCache = probeSupport();
    return supportCache;
  }

  /**
   * io_uring_setup with `entries` SQ entries (1..32768, rounded up to a power of 2 by the kernel), then
   * the mappings. Throws BackendError (with errno) when the kernel refuses.
   */
  static create(entries: number, options: IoUringOptions = {}): IoUring {
    if (!Number.isInteger(entries) || entries < 1 || entries > IORING_MAX_ENTRIES)
      throw new BackendError(
        `io_uring entries must be an integer in 1..${IORING_MAX_ENTRIES}, got ${entries}`,
      );
    const idle = options.sqPollIdleMs;
    if (idle !== undefined && (!Number.isInteger(idle) || idle < 1 || idle > 60_000))
      throw new BackendError(`io_uring sqPollIdleMs must be an integer in 1..60000, got ${idle}`);
    const c = libc();
    const poll = idle !== undefined ? IORING_SETUP_SQPOLL : 0;
    let flags = IORING_SETUP_SUBMIT_ALL | poll;
    let params = encodeParams(entries, flags, idle);
    let fd = c.syscall6(SYS_io_uring_setup, entries, c.addressOf(params), 0, 0, 0, 0);
    if (fd < 0 && c.errno() === Errno.EINVAL) {
      // Before 5.18: no SUBMIT_ALL (submission then stops at the first SQE that fails to prepare).
      flags = poll;
      params = encodeParams(entries, flags, idle);
      fd = c.syscall6(SYS_io_uring_setup, entries, c.addressOf(params), 0, 0, 0, 0);
    }
    if (fd < 0) {
      const e = c.errno();
      throw new BackendError(unsupportedReason(e, null, null), e, errnoName(e));
    }
    const p = decodeParams(params);
    const maps: Mapping[] = [];
    const views: Uint8Array[] = [];
    const map = (length: number, offset: number): Uint8Array => {
      const address = c.mmap(length, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, offset);
      if (address === -1) {
        const e = c.errno();
        for (const m of maps) c.munmap(m.address, m.length);
        c.close(fd);
        throw new BackendError(`mmap of the io_uring rings failed with ${errnoName(e)}`, e, errnoName(e));
      }
      maps.push({ address, length });
      return c.viewAt(address, length);
    };
    let sqSize = p.sqOff.array + p.sqEntries * 4;
    let cqSize = p.cqOff.cqes + p.cqEntries * CQE.size;
    if (p.features & IORING_FEAT_SINGLE_MMAP) {
      sqSize = cqSize = Math.max(sqSize, cqSize);
      const ring = map(sqSize, IORING_OFF_SQ_RING);
      views.push(ring, ring);
    } else {
      views.push(map(sqSize, IORING_OFF_SQ_RING), map(cqSize, IORING_OFF_CQ_RING));
    }
    views.push(map(p.sqEntries * SQE.size, IORING_OFF_SQES));
    return new IoUring(c, fd, p, flags, maps, views);
  }

  /** SQEs that can be queued now (SQ room, and CQ room for their completions). */
  get space(): number {
    if (this.closed) return 0;
    const sqFree = this.sqEntries - ((this.sqTail - Atomics.load(this.sq, this.sqHeadIdx)) >>> 0);
    return Math.min(sqFree, this.cqEntries - this.pending);
  }

  /** Submitted or queued operations whose completion has not been reaped yet. */
  get inFlight(): number {
    return this.pending;
  }

  /**
   * Queues IORING_OP_WRITEV: `iovCount` struct iovec at host address `iovAddress` (the array and the
   * buffers it points to must stay reachable until this completion is reaped). `offset` -1: the file
   * position (ignored by streams such as taps and pipes). False when the ring is full or closed.
   */
  queueWritev(fd: number, iovAddress: number, iovCount: number, userData: number, offset = -1): boolean {
    return this.queue(IORING_OP_WRITEV, fd, iovAddress, iovCount, offset, userData);
  }

  /**
   * Queues IORING_OP_READV into `iovCount` struct iovec at `iovAddress` (as `queueWritev`: the arrays
   * stay reachable until the completion is reaped). `rwFlags` RWF_NOWAIT: the read completes with
   * -EAGAIN when there is no data instead of staying armed until some arrives.
   */
  queueReadv(fd: number, iovAddress: number, iovCount: number, userData: number, rwFlags = 0): boolean {
    return this.queue(IORING_OP_READV, fd, iovAddress, iovCount, -1, userData, rwFlags);
  }

  /** Queues IORING_OP_READ of up to `length` bytes into host address `address`; as `queueReadv`. */
  queueRead(fd: number, address: number, length: number, userData: number, rwFlags = 0): boolean {
    return this.queue(IORING_OP_READ, fd, address, length, -1, userData, rwFlags);
  }

  /** Queues IORING_OP_WRITE of `length` bytes at host address `address`; as `queueWritev`. */
  queueWrite(fd: number, address: number, length: number, userData: number, offset = -1): boolean {
    return this.queue(IORING_OP_WRITE, fd, address, length, offset, userData);
  }

  /** Queues IORING_OP_NOP (completes with res 0). */
  queueNop(userData: number): boolean {
    return this.queue(IORING_OP_NOP, -1, 0, 0, 0, userData);
  }

  private queue(
    opcode: number,
    fd: number,
    addr: number,
    len: number,
    off: number,
    userData: number,
    rwFlags = 0,
  ): boolean {
    if (this.space <= 0) return false;
    writeSqe(
      this.sqes,
      (this.sqTail & this.sqMask) * SQE.size,
      opcode,
      fd,
      addr,
      len,
      off,
      userData,
      rwFlags,
    );
    this.sqTail = (this.sqTail + 1) >>> 0;
    this.pending++;
    return true;
  }

  /**
   * Submits every queued SQE and waits until at least `waitFor` completions are ready (0: no wait);
   * returns how many are ready. Blocks in the kernel: pass `waitFor` > 0 only for operations that
   * complete without waiting on anything (tap writes do; a write to a full pipe does not). Use `wait`
   * for a bounded wait.
   */
  submitAndWait(waitFor: number): number {
    this.enter(waitFor, waitFor > 0 ? IORING_ENTER_GETEVENTS : 0, 0, 0);
    return this.ready();
  }

  /** Submits every queued SQE without waiting; returns how many completions are ready. */
  submit(): number {
    return this.submitAndWait(0);
  }

  /**
   * Submits what is queued, then waits at most `timeoutMs` for `count` completions to be ready; returns
   * how many are (fewer on timeout). Uses the kernel's timeout (IORING_FEAT_EXT_ARG, 5.11+), else polls
   * the CQ with 1 ms sleeps. Blocks the JS thread for at most about `timeoutMs`.
   */
  wait(count: number, timeoutMs: number): number {
    this.enter(0, 0, 0, 0);
    const deadline = Date.now() + timeoutMs;
    const extArg = (this.features & IORING_FEAT_EXT_ARG) !== 0;
    let sleeper: Int32Array | undefined;
    for (;;) {
      const ready = this.ready();
      const left = deadline - Date.now();
      if (ready >= count || left <= 0) return ready;
      if (extArg) {
        const v = this.waitView;
        setU64(v, GETEVENTS_ARG.size, Math.floor(left / 1000));
        setU64(v, GETEVENTS_ARG.size + 8, (left % 1000) * 1e6);
        this.enter(
          count - ready,
          IORING_ENTER_GETEVENTS | IORING_ENTER_EXT_ARG,
          this.waitArgAddress,
          GETEVENTS_ARG.size,
        );
      } else {
        sleeper ??= new Int32Array(new SharedArrayBuffer(4));
        Atomics.wait(sleeper, 0, 0, Math.min(1, left));
      }
    }
  }

  /** Completions ready to be read with `res(i)` / `userData(i)` (0: the oldest). */
  ready(): number {
    if (this.closed) return 0;
    return (Atomics.load(this.cq, this.cqTailIdx) - this.cqHead) >>> 0;
  }

  /** Result of the `i`-th ready completion: bytes written, or -errno. `i` < `ready()`. */
  res(i: number): number {
    return cqeRes(this.cqes, this.cqesOff + (((this.cqHead + i) & this.cqMask) >>> 0) * CQE.size);
  }

  /** user_data of the `i`-th ready completion. */
  userData(i: number): number {
    return cqeUserData(this.cqes, this.cqesOff + (((this.cqHead + i) & this.cqMask) >>> 0) * CQE.size);
  }

  /** Marks the `n` oldest ready completions consumed (their CQ slots go back to the kernel). */
  advance(n: number): void {
    if (this.closed || n <= 0) return;
    const k = Math.min(n, this.ready());
    this.cqHead = (this.cqHead + k) >>> 0;
    this.pending -= k;
    Atomics.store(this.cq, this.cqHeadIdx, this.cqHead);
  }

  /**
   * Copies up to `res.length` ready completions into `res` (and `userData` when given), oldest first,
   * and consumes them; returns how many. Caller-owned arrays: nothing is allocated.
   */
  reap(res: Int32Array, userData?: Float64Array): number {
    const n = Math.min(this.ready(), res.length, userData ? userData.length : res.length);
    for (let i = 0; i < n; i++) {
      res[i] = this.res(i);
      if (userData) userData[i] = this.userData(i);
    }
    this.advance(n);
    return n;
  }

  /** Unmaps the rings and closes the fd (in-flight operations are cancelled by the kernel). Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    // Drop our views first: touching a view after munmap would fault the process.
    const empty = new Uint8Array(4);
    this.sq = this.cq = new Uint32Array(empty.buffer);
    this.sqes = this.cqes = new DataView(empty.buffer);
    for (const m of this.maps) this.c.munmap(m.address, m.length);
    this.maps.length = 0;
    this.c.close(this.fd);
  }

  /** io_uring_enter(fd, queued, minComplete, flags, arg, argSize), retried on EINTR. */
  private enter(minComplete: number, flags: number, arg: number, argSize: number): void {
    if (this.closed) throw new BackendError('io_uring used after close');
    // Publish the tail; the kernel reads it inside the syscall below (see the header on ordering).
    Atomics.store(this.sq, this.sqTailIdx, this.sqTail);
    if (this.sqPoll) {
      // The thread takes what is published; a syscall only to wake it or to wait. The seq-cst store
      // above orders the tail before this flags load (the kernel's side pairs with a full barrier).
      if (Atomics.load(this.sq, this.sqFlagsIdx) & IORING_SQ_NEED_WAKEUP) flags |= IORING_ENTER_SQ_WAKEUP;
      else if (minComplete === 0) return;
      for (let attempt = 0; ; attempt++) {
        if (this.c.syscall6(SYS_io_uring_enter, this.fd, 0, minComplete, flags, arg, argSize) >= 0) return;
        const e = this.c.errno();
        if (e === ETIME) return;
        if ((e === Errno.EINTR || e === Errno.EAGAIN || e === Errno.EBUSY) && attempt < 8) continue;
        throw new BackendError(`io_uring_enter failed with ${errnoName(e)}`, e, errnoName(e));
      }
    }
    for (let attempt = 0; ; attempt++) {
      const toSubmit = (this.sqTail - Atomics.load(this.sq, this.sqHeadIdx)) >>> 0;
      if (toSubmit === 0 && minComplete === 0) return;
      const r = this.c.syscall6(SYS_io_uring_enter, this.fd, toSubmit, minComplete, flags, arg, argSize);
      if (r >= 0) {
        if (r >= toSubmit || attempt > 8) return;
        continue; // partly submitted (no SUBMIT_ALL and an SQE failed to prepare): the rest next.
      }
      const e = this.c.errno();
      if (e === ETIME) return;
      if ((e === Errno.EINTR || e === Errno.EAGAIN || e === Errno.EBUSY) && attempt < 8) continue;
      throw new BackendError(`io_uring_enter failed with ${errnoName(e)}`, e, errnoName(e));
    }
  }
}

function probeSupport(): string | null {
  if (process.platform !== 'linux') return `io_uring needs Linux (this is ${process.platform})`;
  let c: Libc;
  try {
    c = libc();
  } catch (err) {
    return (err as Error).message;
  }
  const params = encodeParams(1, 0);
  const fd = c.syscall6(SYS_io_uring_setup, 1, c.addressOf(params), 0, 0, 0, 0);
  if (fd >= 0) {
    c.close(fd);
    return null;
  }
  return unsupportedReason(
    c.errno(),
    readNumber('/proc/sys/kernel/io_uring_disabled'),
    readNumber('/proc/self/status', /^Seccomp:\s*(\d+)/m),
  );
}
