/**
 * How QEMU 7.2's memory core hands a guest access to a virtio-pci register region (impl 1..4 bytes,
 * no unaligned impl: softmmu/physmem.c memory_access_size): the access is cut into naturally aligned
 * pieces of at most 4 bytes, each dispatched to the register at exactly that offset. So an 8-byte access
 * is two 4-byte ones, a 4-byte read at offset 2 is two 2-byte reads, and a piece that does not start a
 * register reads 0 (or what the region's default is) and writes nothing. Measured on QEMU 7.2
 * (its read matrix at reset).
 */

/** A region's per-piece accessors: `offset` is inside the region, `size` is 1, 2 or 4 and aligned. */
export interface PieceHandler {
  readPiece(offset: number, size: 1 | 2 | 4): number;
  writePiece(offset: number, size: 1 | 2 | 4, value: number): void;
}

function pieceSize(offset: number, remaining: number): 1 | 2 | 4 {
  let n = remaining >= 4 ? 4 : remaining >= 2 ? 2 : 1;
  while (offset % n !== 0) n >>= 1;
  return n as 1 | 2 | 4;
}

/** Read `size` bytes (1, 2, 4 or 8) at `offset` through `h`, little-endian; 8-byte reads give a bigint. */
export function splitRead(h: PieceHandler, offset: number, size: 1 | 2 | 4 | 8): number | bigint {
  if (size !== 8 && offset % size === 0) return h.readPiece(offset, size) % 2 ** (8 * size); // common case
  let lo = 0;
  let hi = 0;
  let done = 0;
  while (done < size) {
    const n = pieceSize(offset + done, size - done);
    const v = h.readPiece(offset + done, n) % 2 ** (8 * n);
    if (done < 4) lo += v * 2 ** (8 * done);
    else hi += v * 2 ** (8 * (done - 4));
    done += n;
  }
  if (size === 8) return (BigInt(hi >>> 0) << 32n) | BigInt(lo >>> 0);
  return lo >>> 0;
}

/** Write `size` bytes (1, 2, 4 or 8) at `offset` through `h`, little-endian. */
export function splitWrite(
  h: PieceHandler,
  offset: number,
  size: 1 | 2 | 4 | 8,
  value: number | bigint,
): void {
  if (size !== 8 && offset % size === 0 && typeof value === 'number') {
    h.writePiece(offset, size, toUnsigned(value, size)); // common case, no bigint
    return;
  }
  let v =
    typeof value === 'bigint'
      ? BigInt.asUintN(64, value)
      : BigInt.asUintN(64, BigInt(Math.trunc(Number(value) || 0)));
  let done = 0;
  while (done < size) {
    const n = pieceSize(offset + done, size - done);
    h.writePiece(offset + done, n, Number(v & ((1n << BigInt(8 * n)) - 1n)));
    v >>= BigInt(8 * n);
    done += n;
  }
}

/** All-ones for `size` bytes. */
export function ones(size: number): number {
  return size >= 4 ? 0xffffffff : 2 ** (8 * size) - 1;
}

/** `value` reduced to an unsigned `size`-byte integer (NaN and infinities become 0). */
export function toUnsigned(value: number, size: 1 | 2 | 4): number {
  const m = 2 ** (8 * size);
  const t = Number.isFinite(value) ? Math.trunc(value) % m : 0;
  return t < 0 ? t + m : t;
}
