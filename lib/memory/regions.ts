/** What a VMM hands `GuestMemory`: its regions and options. */

/** One region of guest memory, as the VMM (or a vfio-user DMA_MAP) hands it over. */
export interface GuestMemoryRegion {
  address: number | bigint;
  bytes: Uint8Array;
  /**
   * The native address of `bytes[0]` when `bytes` views memory outside the JS heap (a vfio-user DMA
   * mapping's mmap, lib/vfio-user/dma.ts), so another thread can view the same memory
   * (`GuestMemory.threadRegions`). Left out for JS-owned buffers.
   */
  host?: number;
}

/**
 * A region over memory whose `ArrayBuffer` can be replaced, such as a `WebAssembly.Memory` that grows
 * (each `grow` detaches the old buffer): the region is `[offset, offset + size)` of whatever buffer
 * `buffer` holds at the time of the access. Growth is noticed without a callback (a detached view has
 * length 0); `GuestMemory.remaps` counts the re-views.
 */
export interface GrowableMemoryRegion {
  address: number | bigint;
  /** A `WebAssembly.Memory` (anything with a `buffer` property), or a getter of the current buffer. */
  buffer: { readonly buffer: ArrayBufferLike } | (() => ArrayBufferLike);
  /** Byte offset of guest address `address` in the buffer. */
  offset: number;
  size: number;
}

export interface GuestMemoryOptions {
  /**
   * VIRTIO_F_ACCESS_PLATFORM (§6.1): maps a device address (IOVA) to a guest-physical address for the
   * whole range `[address, address + length)`. It throws `GuestMemoryError` when the IOMMU refuses.
   */
  translate?: (address: number, length: number, write: boolean) => number;
  /**
   * Called after the device wrote guest-physical `[address, address + length)` (scalars, `write`, and
   * ranges written through `locate(…, true)` and reported with `noteWritten`), e.g. so a VMM with a JIT
   * drops code compiled from those bytes. It must not throw.
   */
  onWrite?: (address: number, length: number) => void;
}

/**
 * A region another thread can view (GuestMemory.threadRegions): bytes of a SharedArrayBuffer, or native
 * memory at a host address (an mmap the owner keeps mapped while any thread may view it).
 */
export type ThreadRegion =
  | { address: number; size: number; buffer: SharedArrayBuffer; offset: number }
  | { address: number; size: number; host: number };

/**
 * A region added or removed (GuestMemory.watch). `region` is null for an added region no other thread
 * can view (growable or ArrayBuffer bytes, or memory with translate/onWrite hooks).
 */
export type MemoryChange =
  | { op: 'add'; region: ThreadRegion | null }
  | { op: 'remove'; address: number; size: number };

/**
 * Told of every change before `addRegion`/`removeRegion` return. It returns false when it could not
 * follow: an add is then undone and refused; a removal is marked pinned (`GuestMemory.lastRemovalPinned`):
 * the watcher's thread may still view the memory, so its owner must keep it mapped.
 */
export type MemoryWatcher = (change: MemoryChange) => boolean;
