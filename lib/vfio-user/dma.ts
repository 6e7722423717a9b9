/**
 * Guest memory handed over by DMA_MAP: each mapping's file descriptor is mmap'd (MAP_SHARED) in chunks of at
 * most 1 GiB, each exposed as a Uint8Array view (koffi.view, no copy) and added to the device's guest memory
 * as one region; DMA_UNMAP and disconnect remove them.
 *
 * Stale views: a Uint8Array over an mmap cannot be detached from JS, so a view that survives an unmap (a
 * cached ring view in the device) would fault on the next access if the memory were simply munmap'd.
 * Instead, unmapping replaces the range in place (MAP_FIXED) with private anonymous memory: the guest's file
 * is released at once, a stale view reads zeros and writes to scratch, and the address range cannot be
 * reused by a later mapping. The placeholder is munmap'd when the garbage collector has dropped every view.
 *
 * Pinning: a worker thread that views guest memory (queue pairs on workers, docs/workers.md) is told of each
 * removal before it happens (GuestMemory.watch). When one cannot confirm it dropped its view (it did not
 * answer), the placeholder is never munmap'd: a leaked range of address space, rather than a worker
 * touching memory that is gone or reused by a later mapping. Pinned placeholders are counted and capped
 * (MAX_PINNED): past the cap DMA_MAP is refused, so a client's map/unmap storm cannot grow them without end.
 *
 * Read-only mappings (no WRITE flag) are mapped MAP_PRIVATE read/write: the device sees the guest's bytes,
 * and a stray device write lands in a private copy instead of faulting or reaching the guest.
 */
import { fstatSync } from 'node:fs';
import { body as makeBody, DMA_MAP, DMA_UNMAP, DmaMapFlag, DmaUnmapFlag, Errno, view } from './protocol.js';
import type { RequestHeader, Responder } from './responder.js';
import * as sys from '../host/socket.js';

/** The part of GuestMemory (lib/memory/guest-memory.ts) the server needs. */
export interface DmaMemory {
  addRegion(region: { address: number | bigint; bytes: Uint8Array; host?: number }): void;
  removeRegion(address: number | bigint): boolean;
  /** After removeRegion (or a refused addRegion): another thread may still view it (GuestMemory). */
  readonly lastRemovalPinned?: boolean;
}

/** One DMA_MAP as the device sees it. */
export interface DmaRegionInfo {
  address: bigint;
  size: bigint;
  flags: number;
  /** False for a mapping that came without a descriptor (the device cannot reach it). */
  mapped: boolean;
}

/** One mmap of at most MAX_CHUNK bytes, and the guest-memory region over it. */
interface Chunk {
  address: number | bigint;
  bytes: Uint8Array;
  ptr: sys.NativePointer;
  inMemory: boolean;
  /** A thread may still view it: never munmap (see the file comment). */
  pinned: boolean;
}

interface Mapping extends DmaRegionInfo {
  /** The mmaps this mapping was split into (none without a descriptor). */
  chunks: Chunk[];
}

/** A DMA request failed; `errno` is the reply's error. */
export class DmaError extends Error {
  override name = 'DmaError';
  constructor(
    message: string,
    readonly errno: number,
  ) {
    super(message);
  }
}

/** Largest mmap and view handed to GuestMemory; bigger mappings are split (koffi cannot view 4 GiB). */
export const MAX_CHUNK = 1 << 30;
/** Pinned placeholders after which DMA_MAP is refused (each is address space and a kernel VMA). */
export const MAX_PINNED = 256;
const PAGE = 4096n;
const U64_END = 1n << 64n;

const placeholders = new FinalizationRegistry<{ ptr: sys.NativePointer; len: number }>((p) =>
  sys.munmap(p.ptr, p.len),
);

function toAddress(a: bigint): number | bigint {
  return a <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(a) : a;
}

export class DmaMappings {
  readonly #maps: Mapping[] = []; // sorted by address
  readonly #memory: DmaMemory;
  readonly #maxMappings: number;
  #probes = 0;
  #pinned = 0;

  constructor(memory: DmaMemory, maxMappings: number) {
    this.#memory = memory;
    this.#maxMappings = maxMappings;
  }

  get count(): number {
    return this.#maps.length;
  }

  /** Chunks kept mapped for good because a worker thread could not confirm it dropped its view. */
  get pinned(): number {
    return this.#pinned;
  }

  /** Mappings examined by address searches so far (tests check they grow as n log n, not n²). */
  get probes(): number {
    return this.#probes;
  }

  /** Index of the first mapping whose address is ≥ `address` (binary search). */
  #firstAtOrAbove(address: bigint): number {
    let lo = 0;
    let hi = this.#maps.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      this.#probes++;
      if ((this.#maps[mid] as Mapping).address < address) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  list(): DmaRegionInfo[] {
    return this.#maps.map(({ address, size, flags, mapped }) => ({ address, size, flags, mapped }));
  }

  /**
   * DMA_MAP: validates, maps `fd` (when given) and adds the region to guest memory. Takes ownership of `fd`
   * (closed whatever the outcome: the mapping keeps the file alive).
   */
  map(address: bigint, size: bigint, offset: bigint, flags: number, fd: number | null): void {
    try {
      if ((flags & ~(DmaMapFlag.READ | DmaMapFlag.WRITE)) !== 0)
        throw new DmaError('unknown DMA_MAP flags', Errno.EINVAL);
      if (size === 0n || address % PAGE !== 0n || size % PAGE !== 0n || offset % PAGE !== 0n) {
        throw new DmaError(
          'DMA_MAP address, size and offset must be non-zero multiples of 4 KiB',
          Errno.EINVAL,
        );
      }
      if (address + size > U64_END) throw new DmaError('DMA_MAP range wraps the address space', Errno.EINVAL);
      if (this.#maps.length >= this.#maxMappings) throw new DmaError('too many DMA mappings', Errno.ENOSPC);
      if (fd !== null && this.#pinned >= MAX_PINNED) {
        throw new DmaError(
          'too many DMA mappings pinned by worker threads that did not answer',
          Errno.ENOSPC,
        );
      }
      // Sorted and disjoint: only the mapping before the insertion point and the one at it can overlap.
      const at = this.#firstAtOrAbove(address);
      const prev = this.#maps[at - 1];
      const next = this.#maps[at];
      if (
        (prev !== undefined && prev.address + prev.size > address) ||
        (next !== undefined && next.address < address + size)
      ) {
        throw new DmaError('DMA_MAP overlaps an existing mapping', Errno.EEXIST);
      }
      const m: Mapping = { address, size, flags, mapped: fd !== null, chunks: [] };
      if (fd !== null) this.#mmap(m, fd, offset);
      this.#maps.splice(at, 0, m);
    } finally {
      if (fd !== null) sys.close(fd);
    }
  }

  #mmap(m: Mapping, fd: number, offset: bigint): void {
    // A mapping past the end of the file would SIGBUS on access: refuse it up front.
    let st: ReturnType<typeof fstatSync>;
    try {
      st = fstatSync(fd, { bigint: true });
    } catch {
      throw new DmaError('DMA_MAP descriptor cannot be examined', Errno.EBADF);
    }
    if (!st.isFile()) throw new DmaError('DMA_MAP descriptor is not a regular file or memfd', Errno.EINVAL);
    if (offset + m.size > st.size) throw new DmaError('DMA_MAP range exceeds the file', Errno.EINVAL);
    if (m.size > BigInt(Number.MAX_SAFE_INTEGER)) throw new DmaError('DMA_MAP too large', Errno.ENOMEM);
    const len = Number(m.size);
    const writable = (m.flags & DmaMapFlag.WRITE) !== 0;
    // One mmap and one view per chunk: koffi cannot view 4 GiB or more at once (it aborts the process),
    // and GuestMemory copies accesses that span adjacent regions, so chunks need not be contiguous.
    const added: Chunk[] = [];
    try {
      for (let off = 0; off < len; off += MAX_CHUNK) {
        const n = Math.min(MAX_CHUNK, len - off);
        let ptr: sys.NativePointer;
        try {
          ptr = sys.mmap(
            null,
            n,
            sys.PROT_READ | sys.PROT_WRITE,
            writable ? sys.MAP_SHARED : sys.MAP_PRIVATE,
            fd,
            offset + BigInt(off),
          );
        } catch (e) {
          throw new DmaError(`DMA_MAP ${(e as Error).message}`, (e as sys.SysError).errno || Errno.EFAULT);
        }
        const chunk: Chunk = {
          address: toAddress(m.address + BigInt(off)),
          bytes: new Uint8Array(sys.viewOf(ptr, n)),
          ptr,
          inMemory: false,
          pinned: false,
        };
        added.push(chunk);
        try {
          // `host` lets worker threads view the same mmap (GuestMemory.threadRegions).
          this.#memory.addRegion({
            address: chunk.address,
            bytes: chunk.bytes,
            host: Number(sys.addressOf(ptr)),
          });
        } catch (e) {
          chunk.pinned = this.#memory.lastRemovalPinned === true;
          throw new DmaError(`guest memory refused the region: ${(e as Error).message}`, Errno.EINVAL);
        }
        chunk.inMemory = true;
      }
    } catch (e) {
      for (const c of added) this.#releaseChunk(c);
      throw e;
    }
    m.chunks = added;
  }

  #releaseChunk(c: Chunk): void {
    if (c.inMemory) {
      this.#memory.removeRegion(c.address);
      if (this.#memory.lastRemovalPinned === true) c.pinned = true;
    }
    c.inMemory = false;
    this.#retire(c.ptr, c.bytes.byteLength, c.bytes.buffer as ArrayBuffer, c.pinned);
  }

  /**
   * Replaces a mapping with scratch memory freed once no view of `buffer` is left (see the file comment);
   * `pinned`: never freed, a worker thread may still view it.
   */
  #retire(ptr: sys.NativePointer, len: number, buffer: ArrayBuffer, pinned: boolean): void {
    try {
      sys.mmap(
        ptr,
        len,
        sys.PROT_READ | sys.PROT_WRITE,
        sys.MAP_PRIVATE | sys.MAP_ANONYMOUS | sys.MAP_FIXED | sys.MAP_NORESERVE,
        -1,
        0n,
      );
      if (pinned) this.#pinned++;
      else placeholders.register(buffer, { ptr, len });
    } catch {
      // Could not swap in scratch memory: keep the mapping alive for good rather than risk a fault.
    }
  }

  #unmapOne(m: Mapping): void {
    for (const c of m.chunks) this.#releaseChunk(c);
    m.chunks = [];
  }

  /**
   * DMA_UNMAP of [address, address+size): removes every mapping inside it; a mapping that straddles either
   * end is an error and nothing is removed (as Linux's type1 IOMMU). Returns the bytes unmapped.
   */
  unmap(address: bigint, size: bigint): bigint {
    const end = address + size;
    if (size === 0n || end > U64_END) throw new DmaError('DMA_UNMAP range is empty or wraps', Errno.EINVAL);
    const first = this.#firstAtOrAbove(address);
    const prev = this.#maps[first - 1];
    if (prev !== undefined && prev.address + prev.size > address) {
      throw new DmaError('DMA_UNMAP splits a mapping', Errno.EINVAL);
    }
    let last = first;
    for (; last < this.#maps.length; last++) {
      const m = this.#maps[last] as Mapping;
      this.#probes++;
      if (m.address >= end) break;
      if (m.address + m.size > end) throw new DmaError('DMA_UNMAP splits a mapping', Errno.EINVAL);
    }
    let total = 0n;
    for (const m of this.#maps.splice(first, last - first)) {
      this.#unmapOne(m);
      total += m.size;
    }
    return total;
  }

  /** Removes every mapping (DMA_UNMAP ALL, disconnect). Returns the bytes unmapped. */
  unmapAll(): bigint {
    let total = 0n;
    for (const m of this.#maps) {
      this.#unmapOne(m);
      total += m.size;
    }
    this.#maps.length = 0;
    return total;
  }
}

// ---------------------------------------------------------------- commands

/** DMA_MAP: decodes the request and maps it into `dma`; takes ownership of `fds`. */
export function dmaMapCommand(
  r: Responder,
  dma: DmaMappings,
  h: RequestHeader,
  b: Uint8Array,
  fds: number[],
) {
  if (b.length < DMA_MAP.SIZE || view(b).getUint32(DMA_MAP.argsz, true) < DMA_MAP.SIZE || fds.length > 1) {
    for (const fd of fds.splice(0)) sys.close(fd);
    return r.error(h, Errno.EINVAL, 'malformed DMA_MAP');
  }
  const v = view(b);
  const fd = fds.length === 1 ? (fds.pop() as number) : null;
  try {
    dma.map(
      v.getBigUint64(DMA_MAP.address, true),
      v.getBigUint64(DMA_MAP.size, true),
      v.getBigUint64(DMA_MAP.offset, true),
      v.getUint32(DMA_MAP.flags, true),
      fd,
    );
  } catch (e) {
    if (e instanceof DmaError) return r.error(h, e.errno, e.message);
    throw e;
  }
  r.reply(h);
}

/** DMA_UNMAP (one range, or ALL); the reply echoes the request with the bytes unmapped. */
export function dmaUnmapCommand(r: Responder, dma: DmaMappings, h: RequestHeader, b: Uint8Array) {
  if (b.length < DMA_UNMAP.SIZE || view(b).getUint32(DMA_UNMAP.argsz, true) < DMA_UNMAP.SIZE) {
    return r.error(h, Errno.EINVAL, 'malformed DMA_UNMAP');
  }
  const v = view(b);
  const flags = v.getUint32(DMA_UNMAP.flags, true);
  const address = v.getBigUint64(DMA_UNMAP.address, true);
  const size = v.getBigUint64(DMA_UNMAP.size, true);
  let unmapped: bigint;
  try {
    if (flags === DmaUnmapFlag.ALL) {
      if (address !== 0n || size !== 0n)
        return r.error(h, Errno.EINVAL, 'DMA_UNMAP ALL needs address 0, size 0');
      unmapped = dma.unmapAll();
    } else if (flags === 0) {
      unmapped = dma.unmap(address, size);
    } else {
      return r.error(h, Errno.EINVAL, `unsupported DMA_UNMAP flags ${flags}`);
    }
  } catch (e) {
    if (e instanceof DmaError) return r.error(h, e.errno, e.message);
    throw e;
  }
  r.reply(
    h,
    makeBody(DMA_UNMAP.SIZE, (o) => {
      o.setUint32(DMA_UNMAP.argsz, DMA_UNMAP.SIZE, true);
      o.setUint32(DMA_UNMAP.flags, flags, true);
      o.setBigUint64(DMA_UNMAP.address, address, true);
      o.setBigUint64(DMA_UNMAP.size, unmapped, true);
    }),
  );
}
