/**
 * A bump allocator over a range of guest-physical addresses, for laying out rings, indirect tables and
 * buffers in synthetic guest memory. It never frees: give each test its own.
 */
export class BumpAllocator {
  private next: number;

  /** Allocates from `[base, limit)`. */
  constructor(
    readonly base: number,
    readonly limit: number,
  ) {
    this.next = base;
  }

  /** Reserves `size` bytes aligned to `align` (a power of two); throws when the range is exhausted. */
  alloc(size: number, align = 16): number {
    const a = Math.ceil(this.next / align) * align;
    if (a + size > this.limit) {
      throw new RangeError(
        `BumpAllocator: ${size} bytes (align ${align}) do not fit below 0x${this.limit.toString(16)}`,
      );
    }
    this.next = a + size;
    return a;
  }

  /** Bytes still free (ignoring alignment). */
  get remaining(): number {
    return this.limit - this.next;
  }
}
