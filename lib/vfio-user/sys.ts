/**
 * The few libc calls the vfio-user transport needs, through koffi: AF_UNIX stream sockets with SCM_RIGHTS
 * (socket/bind/listen/accept4/connect/recvmsg/sendmsg), mmap/munmap for DMA regions, eventfd writes, and
 * memfd/eventfd/socketpair creation for tests. Linux, LP64 (x86_64, aarch64) only.
 *
 * These bindings stay private to lib/vfio-user (lib/host/libc.ts belongs to the tap backend). Structures are laid
 * out by hand in native memory from `koffi.alloc`, so a call marshals nothing but integers and pointers.
 */
import koffi from 'koffi';

const libc = koffi.load('libc.so.6');

/** A native pointer as koffi hands it out (an opaque External). */
export type NativePointer = unknown;

const c = {
  socket: libc.func('int socket(int domain, int type, int protocol)'),
  socketpair: libc.func('int socketpair(int domain, int type, int protocol, _Out_ int *sv)'),
  bind: libc.func('int bind(int fd, void *addr, uint32_t len)'),
  connect: libc.func('int connect(int fd, void *addr, uint32_t len)'),
  listen: libc.func('int listen(int fd, int backlog)'),
  accept4: libc.func('int accept4(int fd, void *addr, void *len, int flags)'),
  recvmsg: libc.func('intptr_t recvmsg(int fd, void *msg, int flags)'),
  sendmsg: libc.func('intptr_t sendmsg(int fd, void *msg, int flags)'),
  close: libc.func('int close(int fd)'),
  write: libc.func('intptr_t write(int fd, void *buf, size_t len)'),
  read: libc.func('intptr_t read(int fd, void *buf, size_t len)'),
  mmap: libc.func('void *mmap(void *addr, size_t len, int prot, int flags, int fd, int64_t off)'),
  munmap: libc.func('int munmap(void *addr, size_t len)'),
  eventfd: libc.func('int eventfd(unsigned int initval, int flags)'),
  memfdCreate: libc.func('int memfd_create(const char *name, unsigned int flags)'),
  ftruncate: libc.func('int ftruncate(int fd, int64_t len)'),
  shutdown: libc.func('int shutdown(int fd, int how)'),
};

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
export const EAGAIN = 11;
export const EINTR = 4;
export const PROT_READ = 1;
export const PROT_WRITE = 2;
export const MAP_SHARED = 1;
export const MAP_PRIVATE = 2;
export const MAP_FIXED = 0x10;
export const MAP_ANONYMOUS = 0x20;
export const MAP_NORESERVE = 0x4000;
export const EFD_CLOEXEC = 0o2000000;
export const EFD_NONBLOCK = 0o4000;
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

/** An errno from the last failed call, with the call's name. */
export class SysError extends Error {
  override name = 'SysError';
  constructor(
    readonly call: string,
    readonly errno: number,
  ) {
    super(`${call} failed: errno ${errno}`);
  }
}

export function errno(): number {
  return koffi.errno();
}

/** Native memory that JS reads and writes through `bytes`; freed by `free()`. */
export class NativeBuffer {
  readonly ptr: NativePointer;
  readonly address: bigint;
  readonly bytes: Uint8Array;
  readonly view: DataView;
  #freed = false;
  constructor(readonly size: number) {
    this.ptr = koffi.alloc('uint8_t', size);
    this.address = koffi.address(this.ptr);
    this.bytes = new Uint8Array(koffi.view(this.ptr, size));
    this.view = new DataView(this.bytes.buffer, this.bytes.byteOffset, size);
  }
  free(): void {
    if (this.#freed) return;
    this.#freed = true;
    koffi.free(this.ptr);
  }
}

function sockaddrUn(path: string): NativeBuffer {
  const enc = Buffer.from(path, 'utf8');
  if (enc.length >= 108) throw new SysError(`sockaddr_un path too long (${enc.length} bytes, max 107)`, 36);
  const sa = new NativeBuffer(110);
  sa.bytes.fill(0);
  sa.view.setUint16(0, AF_UNIX, true);
  sa.bytes.set(enc, 2);
  return sa;
}

/** A listening AF_UNIX stream socket (non-blocking, close-on-exec) bound at `path`. */
export function listenUnix(path: string, backlog = 4): number {
  const fd = c.socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0) as number;
  if (fd < 0) throw new SysError('socket', errno());
  const sa = sockaddrUn(path);
  try {
    if ((c.bind(fd, sa.ptr, sa.size) as number) < 0) throw new SysError(`bind(${path})`, errno());
    if ((c.listen(fd, backlog) as number) < 0) throw new SysError('listen', errno());
    return fd;
  } catch (e) {
    c.close(fd);
    throw e;
  } finally {
    sa.free();
  }
}

/**
 * An AF_UNIX stream socket (non-blocking, close-on-exec) bound at `path` but not yet listening, so the
 * file's owner and mode can be set before anyone can connect; then `listenOn`.
 */
export function bindUnix(path: string): number {
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
  if ((c.listen(fd, backlog) as number) < 0) throw new SysError('listen', errno());
}

/** Accepts one connection (non-blocking, close-on-exec); -1 when none is pending (EAGAIN). */
export function accept(fd: number): number {
  const r = c.accept4(fd, null, null, SOCK_NONBLOCK | SOCK_CLOEXEC) as number;
  if (r < 0) {
    const e = errno();
    if (e === EAGAIN || e === EINTR) return -1;
    throw new SysError('accept4', e);
  }
  return r;
}

/** A connected AF_UNIX stream socket to `path` (blocking connect, then non-blocking). */
export function connectUnix(path: string): number {
  const fd = c.socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0) as number;
  if (fd < 0) throw new SysError('socket', errno());
  const sa = sockaddrUn(path);
  try {
    if ((c.connect(fd, sa.ptr, sa.size) as number) < 0) throw new SysError(`connect(${path})`, errno());
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
  if ((c.socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) as number) < 0) {
    throw new SysError('socketpair', errno());
  }
  return [sv[0] as number, sv[1] as number];
}

export function recvmsg(fd: number, msg: NativeBuffer, flags: number): number {
  return Number(c.recvmsg(fd, msg.ptr, flags));
}

export function sendmsg(fd: number, msg: NativeBuffer, flags: number): number {
  return Number(c.sendmsg(fd, msg.ptr, flags));
}

/** close(2); errors (EBADF) are ignored: callers close what they own exactly once. */
export function close(fd: number): void {
  c.close(fd);
}

export function shutdown(fd: number): void {
  c.shutdown(fd, 2);
}

const u64one = new NativeBuffer(8);
u64one.view.setBigUint64(0, 1n, true);
const u64scratch = new NativeBuffer(8);

/** Adds 1 to an eventfd counter. False when the write failed (EAGAIN at the counter's limit, EBADF). */
export function eventfdSignal(fd: number): boolean {
  return Number(c.write(fd, u64one.ptr, 8)) === 8;
}

/** Reads and clears an eventfd counter (non-blocking fds: 0n when it was zero). */
export function eventfdRead(fd: number): bigint {
  const n = Number(c.read(fd, u64scratch.ptr, 8));
  return n === 8 ? u64scratch.view.getBigUint64(0, true) : 0n;
}

export function eventfd(flags = EFD_CLOEXEC | EFD_NONBLOCK): number {
  const fd = c.eventfd(0, flags) as number;
  if (fd < 0) throw new SysError('eventfd', errno());
  return fd;
}

export function memfdCreate(name: string, size: number): number {
  const fd = c.memfdCreate(name, MFD_CLOEXEC) as number;
  if (fd < 0) throw new SysError('memfd_create', errno());
  if ((c.ftruncate(fd, BigInt(size)) as number) < 0) {
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
  const p = c.mmap(addr, len, prot, flags, fd, offset);
  if (p === null || koffi.address(p) === MAP_FAILED) throw new SysError('mmap', errno());
  return p;
}

export function munmap(addr: NativePointer, len: number): void {
  c.munmap(addr, len);
}

/** An ArrayBuffer over native memory (no copy). */
export function viewOf(ptr: NativePointer, len: number): ArrayBuffer {
  return koffi.view(ptr, len);
}

/** The address of a native pointer. */
export function addressOf(ptr: NativePointer): bigint {
  return koffi.address(ptr);
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
  let handle: koffi.node.PollHandle | null = null;
  // koffi calls back with (status, events), not as its typings say; a negative status (a poll error) is
  // passed on as readable so that the next recvmsg reports the socket's error.
  const cb = ((status: number, ev: { readable: boolean; writable: boolean; disconnect: boolean }) => {
    if (status < 0) onEvent({ readable: true, writable: false, disconnect: true });
    else onEvent(ev);
  }) as unknown as (ev: { readable: boolean; writable: boolean; disconnect: boolean }) => void;
  return {
    start(events) {
      const opts = {
        readable: !!events.readable,
        writable: !!events.writable,
        disconnect: events.disconnect ?? true,
      };
      if (handle === null) handle = koffi.node.poll(fd, opts, cb);
      else handle.start(opts, cb);
    },
    stop() {
      handle?.stop();
    },
    close() {
      handle?.close();
      handle = null;
    },
  };
}
