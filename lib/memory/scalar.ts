/**
 * Little-endian scalar access on a region's DataView, the address checks of guest-memory accesses, and the
 * address text of their errors.
 */
import { GuestMemoryError } from '../errors.js';

export const MAX_ADDRESS = Number.MAX_SAFE_INTEGER; // 2^53 - 1
export const MAX_ADDRESS_BIG = BigInt(MAX_ADDRESS);

export function describe(address: number | bigint, length: number): string {
  const a = typeof address === 'bigint' ? address : Number.isFinite(address) ? address : Number.NaN;
  return `[0x${a.toString(16)}, +${length})`;
}

export function readScalar(dv: DataView, off: number, size: 1 | 2 | 4 | 8): number | bigint {
  switch (size) {
    case 1:
      return dv.getUint8(off);
    case 2:
      return dv.getUint16(off, true);
    case 4:
      return dv.getUint32(off, true);
    default:
      return dv.getBigUint64(off, true);
  }
}

export function writeScalar(dv: DataView, off: number, size: 1 | 2 | 4 | 8, value: number | bigint): void {
  switch (size) {
    case 1:
      dv.setUint8(off, Number(value));
      break;
    case 2:
      dv.setUint16(off, Number(value), true);
      break;
    case 4:
      dv.setUint32(off, Number(value), true);
      break;
    default:
      dv.setBigUint64(off, typeof value === 'bigint' ? value : BigInt(value), true);
  }
}

const TWO_32 = 0x1_0000_0000;

/** Reads a little-endian u64 split into two u32 halves as a number; -1 when it is 2^53 or above. */
export function readAddress(memory: { readU32(address: number): number }, address: number): number {
  const lo = memory.readU32(address);
  const hi = memory.readU32(address + 4);
  return hi < 0x20_0000 ? hi * TWO_32 + lo : -1;
}

/** Validates a region's own address range (no translation). */
export function checkRange(address: number | bigint, length: number): number {
  const a = toNumber(address, length);
  if (a > MAX_ADDRESS + 1 - length) {
    throw new GuestMemoryError(
      `guest memory range ${describe(address, length)} ends above 2^53`,
      address,
      length,
    );
  }
  return a;
}

export function checkLength(address: number | bigint, length: number): number {
  if (!Number.isSafeInteger(length) || length < 0) {
    throw new GuestMemoryError(`invalid guest memory access length ${length}`, address, length);
  }
  return length;
}

export function toNumber(address: number | bigint, length: number): number {
  checkLength(address, length);
  if (typeof address === 'bigint') {
    if (address < 0n || address > MAX_ADDRESS_BIG) {
      throw new GuestMemoryError(
        `guest address ${describe(address, length)} is out of range`,
        address,
        length,
      );
    }
    return Number(address);
  }
  if (!Number.isSafeInteger(address) || address < 0) {
    throw new GuestMemoryError(`guest address ${describe(address, length)} is out of range`, address, length);
  }
  return address;
}
