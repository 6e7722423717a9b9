/** What a VMM hands `GuestMemory`: its regions and options. */

/** One region of guest memory, as the VMM (or a vfio-user DMA_MAP) hands it over. */
export interface GuestMemoryRegion {
  address: number | bigint;
  bytes: Uint8Array;
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

/** A region over a SharedArrayBuffer (GuestMemory.sharedRegions). */
export type SharedRegion = { address: number; buffer: SharedArrayBuffer; offset: number; size: number };
