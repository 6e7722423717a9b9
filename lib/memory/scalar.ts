/** Little-endian scalar access on a region's DataView, and the address text of guest-memory errors. */

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
