/**
 * The host calls the vfio-user transport needs, over the one libc binding (lib/host/libc.ts, koffi loaded
 * on first use): AF_UNIX stream sockets with SCM_RIGHTS (socket/bind/listen/accept4/connect/recvmsg/
 * sendmsg), mmap/munmap of DMA regions as koffi pointers, eventfd writes, readiness through libuv poll
 * handles, and memfd/eventfd/socketpair creation for tests. Linux, LP64 (x86_64, aarch64) only.
 *
 * Structures are laid out by hand in native memory from `alloc`, so a call marshals nothing but integers
 * and pointers.
 */
import {
  describeErrno,
  EFD_CLOEXEC,
  EFD_NONBLOCK,
  Errno,
  libc,
  type NativePointer,
  type UvPollHandle,
} from './libc.js';

export {
  EFD_CLOEXEC,
  EFD_NONBLOCK,
  MAP_ANONYMOUS,
  MAP_FIXED,
  MAP_NORESERVE,
  MAP_PRIVATE,
  MAP_SHARED,
  type NativePointer,
  PROT_READ,
  PROT_WRITE,
} from './libc.js';

export const AF_UNIX = 1;
export const SOCK_STREAM = 1;
export const SOCK_NONBLOCK = 0o4000;
export const SOCK_CLOEXEC = 0o2000000;
export const MSG_CTRUNC = 0x8;
export const MSG_DONTWAIT = 0x40;
export const MSG_NOSIGNAL = 0x4000;
export const MSG_CMSG_CLOEXEC = 0x40000000;
export const SOL_SOCKET = 1;
export const SCM_RIGHTS = 1;
export const EAGAIN = Errno.EAGAIN;
export const EINTR = Errno.EINTR;
export const MFD_CLOEXEC = 1;

/** `struct msghdr` (LP64). */
export const MSGHDR = {
  name: 0,
  namelen: 8,
  iov: 16,
  iovlen: 24,
  control: 32,
  controllen: 40,
  flags: 48,
  SIZE: 56,
};
/** `struct iovec` (LP64). */
export const IOVEC = { base: 0, len: 8, SIZE: 16 };
/** `struct cmsghdr` (LP64): the data starts at CMSG_ALIGN(sizeof(cmsghdr)) = 16. */
export const CMSG = { len: 0, level: 8, type: 12, data: 16 };
export function cmsgSpace(dataLen: number): number {
  return CMSG.data + ((dataLen + 7) & ~7);
}

/** An errno from the last failed call, with the call's name (and path): "bind(/x) failed: ENOENT (No such file or directory)". */
export class SysError extends Error {
  override name = 'SysError';
  constructor(
    readonly call: string,
    readonly errno: number,
  ) {
    super(`${call} failed: ${describeErrno(errno)}`);
  }
}

export function errno(): number {
  return libc().errno();
}

/** Native memory that JS reads and writes through `bytes`; freed by `free()`. */
export class NativeBuffer {
  readonly ptr: NativePointer;
  readonly address: bigint;
  readonly bytes: Uint8Array;
  readonly view: DataView;
  #freed = false;
  constructor(readonly size: number) {
    const c = libc();
    const m = c.alloc(size);
    this.ptr = m.ptr;
    this.address = c.pointerAddress(m.ptr);
    this.bytes = m.bytes;
    this.view = new DataView(this.bytes.buffer, this.bytes.byteOffset, size);
  }
  free(): void {
    if (this.#freed) return;
    this.#freed = true;
    libc().free(this.ptr);
  }
}

function sockaddrUn(path: string): NativeBuffer {
  const enc = Buffer.from(path, 'utf8');
  if (enc.length >= 108)
    throw new SysError(`sockaddr_un(${path}) (${enc.length} bytes, max 107)`, Errno.ENAMETOOLONG);
  const sa = new NativeBuffer(110);
  sa.bytes.fill(0);
  sa.view.setUint16(0, AF_UNIX, true);
  sa.bytes.set(enc, 2);
  return sa;
}

/** A listening AF_UNIX stream socket (non-blocking, close-on-exec) bound at `path`. */
export function listenUnix(path: string, backlog = 4): number {
  const fd = bindUnix(path);
  try {
    listenOn(fd, backlog);
    return fd;
  } catch (e) {
    libc().close(fd);
    throw e;
  }
}

/**
 * An AF_UNIX stream socket (non-blocking, close-on-exec) bound at `path` but not yet listening, so the
 * file's owner and mode can be set before anyone can connect; then `listenOn`.
 */
export function bindUnix(path: string): number {
  const c = libc();
  const fd = c.socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0) as number;
  if (fd < 0) throw new SysError('socket', errno());
  const sa = sockaddrUn(path);
  try {
    if ((c.bind(fd, sa.ptr, sa.size) as number) < 0) throw new SysError(`bind(${path})`, errno());
    return fd;
  } catch (e) {
    c.close(fd);
    throw e;
  } finally {
    sa.free();
  }
}

/** listen(2) on a bound socket. */
export function listenOn(fd: number, backlog = 4): void {
  if ((libc().listen(fd, backlog) as number) < 0) throw new SysError('listen', errno());
}

/** Accepts one connection (non-blocking, close-on-exec); -1 when none is pending (EAGAIN). */
export function accept(fd: number): number {
  const r = libc().accept4(fd, null, null, SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (r < 0) {
    const e = errno();
    if (e === EAGAIN || e === EINTR) return -1;
    throw new SysError('accept4', e);
  }
  return r;
}

/** A connected AF_UNIX stream socket to `path` (blocking connect, then non-blocking). */
export function connectUnix(path: string): number {
  const c = libc();
  const fd = c.socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw new SysError('socket', errno());
  const sa = sockaddrUn(path);
  try {
    if (c.connect(fd, sa.ptr, sa.size) < 0) throw new SysError(`connect(${path})`, errno());
  } catch (e) {
    c.close(fd);
    throw e;
  } finally {
    sa.free();
  }
  return fd;
}

/** Two connected AF_UNIX stream sockets (non-blocking, close-on-exec). */
export function socketPair(): [number, number] {
  const sv = [0, 0];
  if (libc().socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0) {
    throw new SysError('socketpair', errno());
  }
  return [sv[0] as number, sv[1] as number];
}

export function recvmsg(fd: number, msg: NativeBuffer, flags: number): number {
  return libc().recvmsg(fd, msg.ptr, flags);
}

export function sendmsg(fd: number, msg: NativeBuffer, flags: number): number {
  return libc().sendmsg(fd, msg.ptr, flags);
}

/** close(2); errors (EBADF) are ignored: callers close what they own exactly once. */
export function close(fd: number): void {
  libc().close(fd);
}

export function shutdown(fd: number): void {
  libc().shutdown(fd, 2);
}

/** 8-byte native buffers for eventfd counters (1 to add, scratch to read), allocated on first use. */
let u64: { one: NativeBuffer; scratch: NativeBuffer } | undefined;
function u64Buffers(): { one: NativeBuffer; scratch: NativeBuffer } {
  if (u64 === undefined) {
    const one = new NativeBuffer(8);
    one.view.setBigUint64(0, 1n, true);
    u64 = { one, scratch: new NativeBuffer(8) };
  }
  return u64;
}

/** Adds 1 to an eventfd counter. False when the write failed (EAGAIN at the counter's limit, EBADF). */
export function eventfdSignal(fd: number): boolean {
  return Number(libc().write(fd, u64Buffers().one.ptr, 8)) === 8;
}

/** Reads and clears an eventfd counter (non-blocking fds: 0n when it was zero). */
export function eventfdRead(fd: number): bigint {
  const { scratch } = u64Buffers();
  const n = Number(libc().read(fd, scratch.ptr, 8));
  return n === 8 ? scratch.view.getBigUint64(0, true) : 0n;
}

export function eventfd(flags = EFD_CLOEXEC | EFD_NONBLOCK): number {
  const fd = libc().eventfd(0, flags);
  if (fd < 0) throw new SysError('eventfd', errno());
  return fd;
}

export function memfdCreate(name: string, size: number): number {
  const c = libc();
  const fd = c.memfdCreate(name, MFD_CLOEXEC);
  if (fd < 0) throw new SysError('memfd_create', errno());
  if (c.ftruncate(fd, BigInt(size)) < 0) {
    const e = errno();
    c.close(fd);
    throw new SysError('ftruncate', e);
  }
  return fd;
}

const MAP_FAILED = 0xffffffffffffffffn;

/** mmap(2); throws SysError on failure. */
export function mmap(
  addr: NativePointer | null,
  len: number,
  prot: number,
  flags: number,
  fd: number,
  offset: bigint,
): NativePointer {
  const c = libc();
  const p = c.mmapPtr(addr, len, prot, flags, fd, offset);
  if (p === null || c.pointerAddress(p) === MAP_FAILED) throw new SysError('mmap', errno());
  return p;
}

export function munmap(addr: NativePointer, len: number): void {
  libc().munmapPtr(addr, len);
}

/** An ArrayBuffer over native memory (no copy). */
export function viewOf(ptr: NativePointer, len: number): ArrayBuffer {
  return libc().view(ptr, len);
}

/** The address of a native pointer. */
export function addressOf(ptr: NativePointer): bigint {
  return libc().pointerAddress(ptr);
}

/** Readiness notifications for an fd on Node's event loop (a libuv uv_poll handle, no thread). */
export interface FdPoll {
  /** `disconnect` (peer hang-up, default true) can be left out while not reading, so it cannot spin. */
  start(events: { readable?: boolean; writable?: boolean; disconnect?: boolean }): void;
  stop(): void;
  close(): void;
}

export function pollFd(
  fd: number,
  onEvent: (ev: { readable: boolean; writable: boolean; disconnect: boolean }) => void,
): FdPoll {
  let handle: UvPollHandle | null = null;
  // Emptied by close(), so that nothing is delivered to a listener that closed its poll.
  let target: typeof onEvent | null = onEvent;
  // koffi calls back with (status, events); a negative status (a poll error) is passed on as readable so
  // that the next recvmsg reports the socket's error.
  const cb = (status: number, ev: { readable: boolean; writable: boolean; disconnect: boolean }) => {
    if (target === null) return;
    if (status < 0) target({ readable: true, writable: false, disconnect: true });
    else target(ev);
  };
  return {
    start(events) {
      const opts = {
        readable: !!events.readable,
        writable: !!events.writable,
        disconnect: events.disconnect ?? true,
      };
      if (handle === null) handle = libc().uvPoll(fd, opts, cb);
      else handle.start(opts, cb);
    },
    stop() {
      handle?.stop();
    },
    close() {
      handle?.close();
      handle = null;
      target = null;
    },
  };
}
