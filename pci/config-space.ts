/**
 * A PCI configuration space with QEMU's per-byte write model (hw/pci/pci.c pci_default_write_config):
 * each byte has a write mask (bits the guest may change) and a write-1-to-clear mask.
 * Spec: PCI Local Bus 3.0 §6.1; digest §1.1.
 */

/** All-ones for an access of `size` bytes (what a read of nothing returns). */
export function allOnes(size: number): number {
  return size >= 4 ? 0xffffffff : (1 << (size * 8)) - 1;
}

export class ConfigSpace {
  /** Current register contents. */
  readonly bytes: Uint8Array;
  /** Bits the guest may write (per byte). */
  readonly wmask: Uint8Array;
  /** Bits the guest clears by writing 1 (per byte). */
  readonly w1cmask: Uint8Array;
  private readonly view: DataView;

  constructor(readonly size: 256 | 4096) {
    this.bytes = new Uint8Array(size);
    this.wmask = new Uint8Array(size);
    this.w1cmask = new Uint8Array(size);
    this.view = new DataView(this.bytes.buffer);
  }

  /**
   * Guest read of 1, 2 or 4 bytes, little-endian, unsigned. Like QEMU's pci_host_config_read_common:
   * an access starting past the end reads all-ones; one crossing the end returns only the bytes inside.
   * Never throws.
   */
  read(offset: number, size: 1 | 2 | 4): number {
    if (!validAccess(offset, size) || offset >= this.size)
      return allOnes(size === 1 || size === 2 ? size : 4);
    const n = Math.min(size, this.size - offset);
    let v = 0;
    for (let i = n - 1; i >= 0; i--) v = v * 256 + (this.bytes[offset + i] as number);
    return v;
  }

  /**
   * Guest write: each byte becomes (old & ~wmask) | (value & wmask), then bits set in both the value and
   * w1cmask are cleared. Out-of-range bytes are dropped; never throws.
   */
  write(offset: number, size: 1 | 2 | 4, value: number): void {
    if (!validAccess(offset, size) || offset >= this.size || !Number.isFinite(value)) return;
    const n = Math.min(size, this.size - offset);
    let v = value >>> 0;
    for (let i = 0; i < n; i++) {
      const o = offset + i;
      const b = v & 0xff;
      const wm = this.wmask[o] as number;
      let nb = ((this.bytes[o] as number) & ~wm) | (b & wm);
      nb &= ~(b & (this.w1cmask[o] as number));
      this.bytes[o] = nb & 0xff;
      v >>>= 8;
    }
  }

  // Raw accessors for the device model (ignore masks; offsets must be in range).
  getU8(offset: number): number {
    return this.view.getUint8(offset);
  }
  getU16(offset: number): number {
    return this.view.getUint16(offset, true);
  }
  getU32(offset: number): number {
    return this.view.getUint32(offset, true);
  }
  setU8(offset: number, value: number): void {
    this.view.setUint8(offset, value & 0xff);
  }
  setU16(offset: number, value: number): void {
    this.view.setUint16(offset, value & 0xffff, true);
  }
  setU32(offset: number, value: number): void {
    this.view.setUint32(offset, value >>> 0, true);
  }

  /** Set the write mask of `size` bytes at `offset`: sizes 1/2/4 take a little-endian mask, longer ranges repeat its low byte. */
  setWritable(offset: number, size: number, mask: number): void {
    setMask(this.wmask, offset, size, mask);
  }

  /** Set the write-1-to-clear mask of `size` bytes at `offset`. */
  setW1C(offset: number, size: number, mask: number): void {
    setMask(this.w1cmask, offset, size, mask);
  }

  /** Make a byte range read-only (clear both masks). */
  setReadOnly(offset: number, length: number): void {
    this.wmask.fill(0, offset, offset + length);
    this.w1cmask.fill(0, offset, offset + length);
  }
}

function validAccess(offset: number, size: number): boolean {
  return Number.isInteger(offset) && offset >= 0 && (size === 1 || size === 2 || size === 4);
}

function setMask(arr: Uint8Array, offset: number, size: number, mask: number): void {
  let m = mask >>> 0;
  for (let i = 0; i < size; i++) {
    arr[offset + i] = m & 0xff;
    m = size > 4 ? m : m >>> 8;
  }
}
