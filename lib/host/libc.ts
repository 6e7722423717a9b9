/**
 * The process's one libc binding, through koffi: the calls the tap backend, io_uring, bpf(2), the link
 * monitor and the vfio-user transport (lib/host/socket.ts) need, plus koffi's native-memory helpers.
 *
 * koffi is loaded once, lazily (createRequire on the first `libc()` call): importing this module (or the
 * package) on a machine where koffi's native part cannot load, or without glibc, works (MemoryBackend
 * needs none of it); only the first `libc()` call fails, with a BackendError that names koffi and why.
 * Linux x86-64 / aarch64 only (ioctl numbers and struct layouts below are those of the generic ABI).
 */
import { createRequire } from 'node:module';
import { getSystemErrorMap } from 'node:util';
import { BackendError } from '../errors.js';

/** A koffi pointer (an opaque External), e.g. from `alloc` or `mmapPtr`. */
export type NativePointer = unknown;

/** A libuv poll handle on an fd (`koffi.node.poll`): readiness on Node's event loop, no thread. */
export interface UvPollHandle {
  start(opts: { readable?: boolean; writable?: boolean; disconnect?: boolean }, cb: unknown): void;
  stop(): void;
  close(): void;
  unref(): void;
}

/** The bound functions. Pointer arguments take a Buffer/TypedArray (transient) or a koffi pointer. */
export interface Libc {
  open(path: string, flags: number, mode: number): number;
  close(fd: number): number;
  read(fd: number, buf: Uint8Array | unknown, count: number): number;
  write(fd: number, buf: Uint8Array | unknown, count: number): number;
  readv(fd: number, iov: Uint8Array | unknown, iovcnt: number): number;
  writev(fd: number, iov: Uint8Array | unknown, iovcnt: number): number;
  /** ioctl whose third argument is a pointer (struct ifreq, int *). */
  ioctlPtr(fd: number, request: number, arg: Uint8Array | unknown): number;
  /** ioctl whose third argument is an integer value (TUNSETOFFLOAD, TUNSETPERSIST). */
  ioctlVal(fd: number, request: number, arg: number): number;
  poll(fds: Uint8Array | unknown, nfds: number, timeout: number): number;
  eventfd(initval: number, flags: number): number;
  fcntl(fd: number, cmd: number, arg: number): number;
  socket(domain: number, type: number, protocol: number): number;
  /** socketpair(2); `sv` receives the two fds. */
  socketpair(domain: number, type: number, protocol: number, sv: number[]): number;
  bind(fd: number, addr: Uint8Array | unknown, len: number): number;
  connect(fd: number, addr: Uint8Array | unknown, len: number): number;
  listen(fd: number, backlog: number): number;
  accept4(fd: number, addr: unknown, len: unknown, flags: number): number;
  /** recvmsg(2)/sendmsg(2) on a `struct msghdr` in native memory; the byte count or -1. */
  recvmsg(fd: number, msg: unknown, flags: number): number;
  sendmsg(fd: number, msg: unknown, flags: number): number;
  shutdown(fd: number, how: number): number;
  memfdCreate(name: string, flags: number): number;
  ftruncate(fd: number, length: bigint | number): number;
  /** setns(2): moves this thread into the namespace of `fd`. */
  setns(fd: number, nstype: number): number;
  /** errno of the last call on this thread. */
  errno(): number;
  strerror(errnum: number): string;
  /** Stable native memory (for asynchronous calls) and an ArrayBuffer view over it; `free` releases it. */
  alloc(size: number): { ptr: unknown; bytes: Uint8Array };
  free(ptr: NativePointer): void;
  /** The address a koffi pointer holds. */
  pointerAddress(ptr: NativePointer): bigint;
  /** An ArrayBuffer over `length` bytes at a koffi pointer (no copy). */
  view(ptr: NativePointer, length: number): ArrayBuffer;
  /** mmap(2) taking and returning koffi pointers (`addr` null: the kernel chooses); MAP_FAILED is all ones. */
  mmapPtr(
    addr: NativePointer | null,
    length: number,
    prot: number,
    flags: number,
    fd: number,
    offset: bigint,
  ): NativePointer;
  /** munmap(2) of a mapping `mmapPtr` returned. */
  munmapPtr(ptr: NativePointer, length: number): number;
  /**
   * A libuv poll handle on `fd` (`koffi.node.poll`), started with `opts`. koffi calls `cb` with
   * (status, events): a negative status is a poll error.
   */
  uvPoll(
    fd: number,
    opts: { readable?: boolean; writable?: boolean; disconnect?: boolean },
    cb: unknown,
  ): UvPollHandle;
  /**
   * The host address of `bytes[0]`, for iovecs that point into guest memory. Stable for the array's
   * life: ArrayBuffer backing stores do not move, and reading `.buffer` first takes a small typed array
   * off V8's heap, where it could move. The caller keeps `bytes` reachable for as long as the kernel may
   * use the address (a temporary can be collected before the syscall that reads it).
   */
  addressOf(bytes: Uint8Array): number;
  /**
   * syscall(2) with three arguments, the second a pointer (bpf(2): `syscall(SYS_bpf, cmd, &attr, size)`).
   * Returns the raw result (-1 and errno on failure).
   */
  syscall3(nr: number, arg1: number, arg2: Uint8Array | unknown, arg3: number): number;
  /**
   * syscall(2) with six integer arguments (io_uring_enter); pointers are passed as addresses
   * (`addressOf`). Returns the raw result (-1 and errno on failure).
   */
  syscall6(nr: number, a: number, b: number, c: number, d: number, e: number, f: number): number;
  /**
   * mmap(2) with a kernel-chosen address: the mapping's address as a number (user addresses fit in
   * 2^53), or -1 (MAP_FAILED) with errno.
   */
  mmap(length: number, prot: number, flags: number, fd: number, offset: number): number;
  /** munmap(2) of a mapping `mmap` returned. */
  munmap(address: number, length: number): number;
  /**
   * A Uint8Array over `length` bytes of native memory at `address` (an mmap'd region), no copy. It
   * stays valid only while the memory is mapped: touching it after munmap faults the process.
   */
  viewAt(address: number, length: number): Uint8Array;
}

/** Syscall numbers this library uses, per architecture (asm-generic for aarch64). */
export const SYS_bpf = process.arch === 'arm64' ? 280 : 321;
/** io_uring syscalls: one number on every architecture (added after the tables were unified). */
export const SYS_io_uring_setup = 425;
export const SYS_io_uring_enter = 426;

/** mmap(2) constants (Linux generic, x86-64 and aarch64 alike). */
/** fcntl: duplicate to the lowest free fd, close-on-exec (for fds handed to worker threads). */
export const F_DUPFD_CLOEXEC = 1030;
export const PROT_READ = 0x1;
export const PROT_WRITE = 0x2;
export const MAP_SHARED = 0x01;
export const MAP_PRIVATE = 0x02;
export const MAP_FIXED = 0x10;
export const MAP_ANONYMOUS = 0x20;
export const MAP_NORESERVE = 0x4000;
export const MAP_POPULATE = 0x8000;

/** open(2) flags and misc constants (Linux generic). */
export const O_RDWR = 0o2;
export const O_NONBLOCK = 0o4000;
export const O_CLOEXEC = 0o2000000;
export const F_GETFL = 3;
export const F_SETFL = 4;
export const EFD_NONBLOCK = 0o4000;
export const EFD_CLOEXEC = 0o2000000;
export const POLLIN = 0x001;
export const POLLERR = 0x008;
export const POLLHUP = 0x010;
export const POLLNVAL = 0x020;
export const AF_INET = 2;
export const SOCK_DGRAM = 2;

/** errno values (Linux generic). */
export const Errno = {
  EPERM: 1,
  ENOENT: 2,
  ENAMETOOLONG: 36,
  EINTR: 4,
  EIO: 5,
  ENXIO: 6,
  EBADF: 9,
  EAGAIN: 11,
  ENOMEM: 12,
  EACCES: 13,
  EFAULT: 14,
  EBUSY: 16,
  EEXIST: 17,
  ENODEV: 19,
  EINVAL: 22,
  EMSGSIZE: 90,
  EOPNOTSUPP: 95,
  ENOBUFS: 105,
  EBADFD: 77,
  ENOTTY: 25,
} as const;

const errnoNames: Record<number, string> = Object.fromEntries(Object.entries(Errno).map(([k, v]) => [v, k]));

/** Symbolic name of an errno value ("EPERM"), or "E<n>". */
export function errnoName(errnum: number): string {
  return errnoNames[errnum] ?? getSystemErrorMap().get(-errnum)?.[0] ?? `E${errnum}`;
}

/** An errno as people read it: "ENOENT (No such file or directory)" (libc's strerror when it is loaded). */
export function describeErrno(errnum: number): string {
  let text = '';
  try {
    text = libc().strerror(errnum);
  } catch {
    text = getSystemErrorMap().get(-errnum)?.[1] ?? '';
  }
  return text ? `${errnoName(errnum)} (${text})` : errnoName(errnum);
}

let cached: Libc | undefined;
type PollHandleClass = new (fd: number) => UvPollHandle;
let pollHandleClass: PollHandleClass | null = null;
let loadError: BackendError | undefined;

/**
 * The bound libc; throws BackendError when koffi or libc cannot be loaded (the reason is kept, and
 * given again on every later call).
 */
export function libc(): Libc {
  if (cached) return cached;
  if (loadError) throw loadError;
  try {
    cached = bind();
    return cached;
  } catch (err) {
    loadError = new BackendError(
      `cannot load libc through koffi (the native FFI module TapBackend and the vfio-user server use): ${(err as Error).message}. ` +
        'Install koffi with its prebuilt binary for this platform (Linux with glibc).',
    );
    throw loadError;
  }
}

/** True when `libc()` loads; never throws. */
export function libcAvailable(): boolean {
  try {
    libc();
    return true;
  } catch {
    return false;
  }
}

function bind(): Libc {
  if (process.platform !== 'linux') throw new Error(`platform ${process.platform} is not Linux`);
  // createRequire so that a missing native binary only fails here, at first use.
  const require = createRequire(import.meta.url);
  // biome-ignore lint/suspicious/noExplicitAny: koffi's types are loose by design.
  const koffi = require('koffi') as any;
  const lib = koffi.load('libc.so.6');
  const open = lib.func('int open(const char *path, int flags, int mode)');
  const close = lib.func('int close(int fd)');
  const read = lib.func('long read(int fd, void *buf, unsigned long count)');
  const write = lib.func('long write(int fd, void *buf, unsigned long count)');
  const readv = lib.func('long readv(int fd, void *iov, int iovcnt)');
  const writev = lib.func('long writev(int fd, void *iov, int iovcnt)');
  // ioctl is variadic; on x86-64/aarch64 integer and pointer arguments pass identically, so two
  // fixed prototypes are exact and avoid koffi's slower variadic path.
  const ioctlPtr = lib.func('ioctl', 'int', ['int', 'unsigned long', 'void *']);
  const ioctlVal = lib.func('ioctl', 'int', ['int', 'unsigned long', 'unsigned long']);
  const poll = lib.func('int poll(void *fds, unsigned long nfds, int timeout)');
  const eventfd = lib.func('int eventfd(unsigned int initval, int flags)');
  const fcntl = lib.func('fcntl', 'int', ['int', 'int', 'int']);
  const socket = lib.func('int socket(int domain, int type, int protocol)');
  const socketpair = lib.func('int socketpair(int domain, int type, int protocol, _Out_ int *sv)');
  const bindFn = lib.func('int bind(int fd, void *addr, uint32_t len)');
  const connect = lib.func('int connect(int fd, void *addr, uint32_t len)');
  const listen = lib.func('int listen(int fd, int backlog)');
  const accept4 = lib.func('int accept4(int fd, void *addr, void *len, int flags)');
  const recvmsg = lib.func('intptr_t recvmsg(int fd, void *msg, int flags)');
  const sendmsg = lib.func('intptr_t sendmsg(int fd, void *msg, int flags)');
  const shutdown = lib.func('int shutdown(int fd, int how)');
  const memfdCreate = lib.func('int memfd_create(const char *name, unsigned int flags)');
  const ftruncate = lib.func('int ftruncate(int fd, int64_t len)');
  const setns = lib.func('int setns(int fd, int nstype)');
  const strerror = lib.func('const char *strerror(int errnum)');
  // memmove(p, p, 0) returns p: koffi passes a TypedArray's own memory (no copy) to synchronous calls.
  const memmove = lib.func('void *memmove(void *dst, void *src, unsigned long n)');
  // syscall is variadic; glibc's is assembly that moves integer registers only, so a fixed prototype of
  // longs and a pointer passes the same bits (as for ioctl above).
  const syscall3 = lib.func('syscall', 'long', ['long', 'long', 'void *', 'long']);
  const syscall6 = lib.func('syscall', 'long', ['long', 'long', 'long', 'long', 'long', 'long', 'long']);
  // Addresses as integers: intptr_t and void * pass identically in these ABIs.
  const mmap = lib.func('mmap', 'intptr_t', ['intptr_t', 'unsigned long', 'int', 'int', 'int', 'int64_t']);
  const munmap = lib.func('munmap', 'int', ['intptr_t', 'unsigned long']);
  // The same two with pointers, for mappings handed around as koffi pointers (vfio-user DMA).
  const mmapPtr = lib.func('void *mmap(void *addr, size_t len, int prot, int flags, int fd, int64_t off)');
  const munmapPtr = lib.func('int munmap(void *addr, size_t len)');
  // memmove(a, a, 0) returns a: turns an integer address into the pointer object koffi.view takes.
  const asPointer = lib.func('memmove', 'void *', ['intptr_t', 'intptr_t', 'unsigned long']);
  return {
    open,
    close,
    read,
    write,
    readv,
    writev,
    ioctlPtr,
    ioctlVal,
    poll,
    eventfd,
    fcntl,
    socket,
    socketpair,
    bind: bindFn,
    connect,
    listen,
    accept4,
    recvmsg: (fd, msg, flags) => Number(recvmsg(fd, msg, flags)),
    sendmsg: (fd, msg, flags) => Number(sendmsg(fd, msg, flags)),
    shutdown,
    memfdCreate,
    ftruncate: (fd, length) => ftruncate(fd, BigInt(length)),
    setns,
    errno: () => koffi.errno(),
    strerror,
    alloc(size) {
      const ptr = koffi.alloc('uint8_t', size);
      return { ptr, bytes: new Uint8Array(koffi.view(ptr, size)) };
    },
    free: (ptr) => koffi.free(ptr),
    pointerAddress: (ptr) => BigInt(koffi.address(ptr)),
    view: (ptr, length) => koffi.view(ptr, length),
    mmapPtr: (addr, length, prot, flags, fd, offset) => mmapPtr(addr, length, prot, flags, fd, offset),
    munmapPtr: (ptr, length) => munmapPtr(ptr, length),
    uvPoll(fd, opts, cb) {
      // koffi 2.x's node.poll() defines its PollHandle class afresh on every call, and N-API keeps every
      // class definition until the process ends (~4.6 KiB each): a server that accepts connections in a
      // loop grew without bound. The first handle's constructor is reused for every later one.
      if (pollHandleClass === null) {
        const first = koffi.node.poll(fd, opts, cb) as UvPollHandle;
        pollHandleClass = (first as unknown as { constructor: PollHandleClass }).constructor;
        return first;
      }
      const handle = new pollHandleClass(fd);
      handle.start(opts, cb);
      return handle;
    },
    addressOf(bytes) {
      void bytes.buffer;
      return Number(koffi.address(memmove(bytes, bytes, 0)));
    },
    syscall3: (nr, arg1, arg2, arg3) => Number(syscall3(nr, arg1, arg2, arg3)),
    syscall6: (nr, a, b, c, d, e, f) => Number(syscall6(nr, a, b, c, d, e, f)),
    mmap: (length, prot, flags, fd, offset) => Number(mmap(0, length, prot, flags, fd, offset)),
    munmap: (address, length) => munmap(address, length),
    viewAt: (address, length) => new Uint8Array(koffi.view(asPointer(address, address, 0), length)),
  };
}
