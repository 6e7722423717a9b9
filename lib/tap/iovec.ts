/** iovec arrays for readv/writev/io_uring, and host addresses of the arrays they point into. */
import type { Libc } from '../host/libc.js';

/** iovec `i` of an array of `struct iovec { void *base; size_t len; }` (x86-64/aarch64), as 32-bit words. */
export function setIovec(iov: Uint32Array, i: number, address: number, length: number): void {
  iov[4 * i] = address >>> 0;
  iov[4 * i + 1] = Math.floor(address / 0x1_0000_0000);
  iov[4 * i + 2] = length;
  iov[4 * i + 3] = 0;
}

/** Host addresses of guest-memory regions (and our buffers), resolved once per array. */
export class HostAddresses {
  private readonly addresses = new WeakMap<Uint8Array, number>();
  private lastBytes: Uint8Array | null = null;
  private lastAddress = 0;

  constructor(private readonly c: Libc) {}

  /** Host address of `bytes[0]`: one FFI call per array, then a cache hit. */
  of(bytes: Uint8Array): number {
    if (bytes === this.lastBytes) return this.lastAddress;
    let a = this.addresses.get(bytes);
    if (a === undefined) {
      a = this.c.addressOf(bytes);
      this.addresses.set(bytes, a);
    }
    this.lastBytes = bytes;
    this.lastAddress = a;
    return a;
  }

  /**
   * Drops the strong reference to the last array (call after a burst): a guest-memory region the VMM
   * removed (a vfio-user DMA unmap) must not be kept alive by the cache; the WeakMap entry goes with it.
   */
  forget(): void {
    this.lastBytes = null;
  }
}
