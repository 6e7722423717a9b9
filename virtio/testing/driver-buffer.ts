/** Types shared by the split and packed driver-side queues. */

/** A driver buffer: bytes to place in guest memory (needs an allocator), or an existing guest range. */
export type DriverBuffer = Uint8Array | { addr: number; len: number };

/** A segment as the driver posted it. */
export interface DriverSegment {
  addr: number;
  len: number;
  write: boolean;
}

/** A buffer the device returned: the id `add` gave, the bytes it wrote, and the segments posted. */
export interface UsedBuffer {
  id: number;
  len: number;
  segments: DriverSegment[];
}

export interface AddOptions {
  /** Post the chain through an indirect table (VIRTIO_F_INDIRECT_DESC). */
  indirect?: boolean;
}
