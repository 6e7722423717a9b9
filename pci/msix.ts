/**
 * MSI-X (capability ID 0x11, 12 bytes) with its table and PBA served from an exclusive BAR, as QEMU's
 * msix_init_exclusive_bar (hw/pci/msix.c). Spec: PCI Local Bus 3.0 §6.8.2; digest §1.4.
 */
import { OptionsError } from '../lib/errors.js';
import type { InterruptSink } from './interrupt-sink.js';
import { type BarType, isPow2, type PciFunction } from './pci-function.js';

// Importers of InterruptSink from msix.js (index.ts, virtio, devices) keep working.
export type { InterruptSink } from './interrupt-sink.js';

export const PCI_CAP_ID_MSIX = 0x11;
export const PCI_MSIX_SIZEOF = 12;
export const PCI_MSIX_FLAGS = 0x02;
export const PCI_MSIX_TABLE = 0x04;
export const PCI_MSIX_PBA = 0x08;
export const PCI_MSIX_FLAGS_QSIZE = 0x07ff;
export const PCI_MSIX_FLAGS_MASKALL = 0x4000;
export const PCI_MSIX_FLAGS_ENABLE = 0x8000;
export const PCI_MSIX_ENTRY_SIZE = 16;
const ENTRY_ADDR_LO = 0x0;
const ENTRY_ADDR_HI = 0x4;
const ENTRY_DATA = 0x8;
const ENTRY_CTRL = 0xc;
const ENTRY_CTRL_MASKBIT = 1;

export interface MsixOptions {
  /** Number of vectors, 1..2048. */
  vectors: number;
  /** BAR index holding table and PBA; the BAR is defined by Msix and holds nothing else. */
  bar: number;
  tableOffset: number;
  pbaOffset: number;
  /** Capability offset (default: first fit). */
  capOffset?: number;
  /** BAR size (default: QEMU's, at least 4 KiB and a power of two covering table and PBA). */
  barSize?: number;
  barType?: Extract<BarType, 'mem32' | 'mem64'>;
}

/** PBA bytes for n vectors: QEMU rounds to whole 64-bit words. */
function pbaSize(n: number): number {
  return Math.ceil(n / 64) * 8;
}

export class Msix {
  readonly offset: number;
  readonly vectors: number;
  readonly barSize: number;
  private readonly table: Uint8Array;
  private readonly tableView: DataView;
  private readonly pba: Uint8Array;
  /** Message address per vector as a bigint, refreshed on table writes: notify() allocates nothing. */
  private readonly addrCache: bigint[];
  private readonly opts: MsixOptions;
  /** Function-level masking as of the last Message Control write, to spot unmask edges. */
  private wasMasked = true;
  /** MSI-X Enable as of the last Message Control write or reset, to spot changes for `onRoutes`. */
  private wasEnabled = false;
  /** Called when `vectorFd` may answer differently because MSI-X Enable changed. */
  onRoutes: (() => void) | null = null;

  /**
   * QEMU's exclusive-BAR layout (msix_init_exclusive_bar): table at 0, PBA at half of a 4 KiB BAR, or
   * right after the table when the table needs more than 2 KiB (BAR then pow2ceil(table + PBA)).
   */
  static exclusiveBarLayout(vectors: number): { tableOffset: number; pbaOffset: number; barSize: number } {
    const tableSize = vectors * PCI_MSIX_ENTRY_SIZE;
    if (tableSize <= 0x800) return { tableOffset: 0, pbaOffset: 0x800, barSize: 0x1000 };
    const pbaOffset = tableSize;
    return { tableOffset: 0, pbaOffset, barSize: pow2ceil(pbaOffset + pbaSize(vectors)) };
  }

  constructor(
    private readonly fn: PciFunction,
    opts: MsixOptions,
    private readonly sink: InterruptSink,
  ) {
    const n = opts.vectors;
    if (!Number.isInteger(n) || n < 1 || n > 2048)
      throw new OptionsError(`MSI-X vectors must be 1..2048, got ${n}`);
    if (opts.tableOffset & 7 || opts.pbaOffset & 7)
      throw new OptionsError('MSI-X table and PBA offsets must be 8-byte aligned');
    const tEnd = opts.tableOffset + n * PCI_MSIX_ENTRY_SIZE;
    const pEnd = opts.pbaOffset + pbaSize(n);
    if (opts.tableOffset < pEnd && opts.pbaOffset < tEnd)
      throw new OptionsError('MSI-X table and PBA overlap');
    const size = opts.barSize ?? Math.max(0x1000, pow2ceil(Math.max(tEnd, pEnd)));
    if (!isPow2(size) || size < Math.max(tEnd, pEnd))
      throw new OptionsError(`MSI-X BAR size ${size} too small or not a power of two`);
    this.opts = opts;
    this.vectors = n;
    // One sink per function: INTx goes where MSI-X messages go unless the VMM set one already.
    if (!fn.sink) fn.sink = sink;
    this.barSize = size;
    this.table = new Uint8Array(n * PCI_MSIX_ENTRY_SIZE);
    this.tableView = new DataView(this.table.buffer);
    this.pba = new Uint8Array(pbaSize(n));
    this.addrCache = new Array<bigint>(n).fill(0n);
    fn.defineBar(opts.bar, {
      size,
      type: opts.barType ?? 'mem32',
      handler: { read: (o, s) => this.barRead(o, s), write: (o, s, v) => this.barWrite(o, s, v) },
    });
    const off = fn.addCapability(PCI_CAP_ID_MSIX, PCI_MSIX_SIZEOF, opts.capOffset);
    this.offset = off;
    const cs = fn.config;
    cs.setU16(off + PCI_MSIX_FLAGS, n - 1);
    cs.setU32(off + PCI_MSIX_TABLE, (opts.tableOffset | opts.bar) >>> 0);
    cs.setU32(off + PCI_MSIX_PBA, (opts.pbaOffset | opts.bar) >>> 0);
    cs.setWritable(off + PCI_MSIX_FLAGS + 1, 1, (PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL) >> 8);
    fn.onConfigWrite(off + PCI_MSIX_FLAGS, 2, () => {
      const nowMasked = this.functionMasked();
      if (this.enabled) fn.setIntx(false); // MSI-X replaces INTx (QEMU msix_write_config).
      if (this.wasMasked && !nowMasked) for (let v = 0; v < n; v++) this.deliverPending(v);
      this.wasMasked = nowMasked;
      this.enableChanged();
    });
    this.resetState();
    fn.onReset(() => this.reset());
  }

  private get flags(): number {
    return this.fn.config.getU16(this.offset + PCI_MSIX_FLAGS);
  }

  private enableChanged(): void {
    const enabled = this.enabled;
    if (enabled === this.wasEnabled) return;
    this.wasEnabled = enabled;
    this.onRoutes?.();
  }

  /**
   * The eventfd that delivers `vector` now, for a sink that serves vectors by eventfd (`vector` and
   * `vectorFd`, no `msi`: the VMM emulates the table) while MSI-X is enabled; else null.
   */
  vectorFd(vector: number): number | null {
    const s = this.sink;
    if (s.msi || !s.vector || !s.vectorFd || !this.enabled || !this.validVector(vector)) return null;
    return s.vectorFd(vector);
  }

  /** MSI-X Enable (Message Control bit 15). */
  get enabled(): boolean {
    return (this.flags & PCI_MSIX_FLAGS_ENABLE) !== 0;
  }

  /** Function Mask (Message Control bit 14). */
  get functionMask(): boolean {
    return (this.flags & PCI_MSIX_FLAGS_MASKALL) !== 0;
  }

  /** Delivery blocked for every vector: disabled or function-masked. */
  private functionMasked(): boolean {
    return !this.enabled || this.functionMask;
  }

  /** True when the vector's Mask bit or the Function Mask is set (or the vector does not exist). */
  isMasked(vector: number): boolean {
    if (!this.validVector(vector)) return true;
    return (
      this.functionMask ||
      (this.tableView.getUint32(vector * 16 + ENTRY_CTRL, true) & ENTRY_CTRL_MASKBIT) !== 0
    );
  }

  /** Pending bit of a vector (PBA). */
  isPending(vector: number): boolean {
    if (!this.validVector(vector)) return false;
    return ((this.pba[vector >> 3] as number) & (1 << (vector & 7))) !== 0;
  }

  /** Message address and data programmed for a vector. */
  message(vector: number): { address: bigint; data: number } | null {
    if (!this.validVector(vector)) return null;
    const b = vector * 16;
    const lo = this.tableView.getUint32(b + ENTRY_ADDR_LO, true);
    const hi = this.tableView.getUint32(b + ENTRY_ADDR_HI, true);
    return {
      address: (BigInt(hi) << 32n) | BigInt(lo),
      data: this.tableView.getUint32(b + ENTRY_DATA, true),
    };
  }

  /**
   * Signal `vector` (QEMU msix_notify): nothing while MSI-X is disabled; pending bit set while masked;
   * else the message goes to sink.msi. A sink with only vector() gets vector(n) directly.
   */
  notify(vector: number): void {
    if (!this.validVector(vector)) return;
    if (!this.sink.msi && this.sink.vector) {
      this.sink.vector(vector);
      return;
    }
    if (!this.enabled) return;
    if (this.isMasked(vector)) {
      this.setPending(vector, true);
      return;
    }
    this.send(vector);
  }

  /** Back to the reset state: all vectors masked, addresses/data 0, PBA clear, Enable and Function Mask clear. */
  reset(): void {
    const cs = this.fn.config;
    cs.setU16(this.offset + PCI_MSIX_FLAGS, this.flags & ~(PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL));
    this.resetState();
    this.wasMasked = true;
    this.enableChanged();
  }

  private resetState(): void {
    this.table.fill(0);
    this.pba.fill(0);
    this.addrCache.fill(0n);
    for (let v = 0; v < this.vectors; v++)
      this.tableView.setUint32(v * 16 + ENTRY_CTRL, ENTRY_CTRL_MASKBIT, true);
  }

  /** JSON-serialisable table and PBA (Message Control lives in config space: PciFunction.snapshot). */
  snapshot(): { table: string; pba: string } {
    return {
      table: Buffer.from(this.table).toString('base64'),
      pba: Buffer.from(this.pba).toString('base64'),
    };
  }

  restore(state: { table: string; pba: string }): void {
    const t = typeof state?.table === 'string' ? Buffer.from(state.table, 'base64') : undefined;
    const p = typeof state?.pba === 'string' ? Buffer.from(state.pba, 'base64') : undefined;
    if (!t || !p || t.length !== this.table.length || p.length !== this.pba.length) {
      throw new OptionsError('MSI-X snapshot does not match this function');
    }
    this.table.set(t);
    this.pba.set(p);
    for (let v = 0; v < this.vectors; v++) this.refreshAddress(v);
    this.wasMasked = this.functionMasked();
    this.enableChanged();
  }

  private validVector(v: number): boolean {
    return Number.isInteger(v) && v >= 0 && v < this.vectors;
  }

  private setPending(v: number, on: boolean): void {
    const i = v >> 3;
    const bit = 1 << (v & 7);
    this.pba[i] = on ? (this.pba[i] as number) | bit : (this.pba[i] as number) & ~bit;
  }

  private send(v: number): void {
    this.sink.msi?.(this.addrCache[v] as bigint, this.tableView.getUint32(v * 16 + ENTRY_DATA, true));
  }

  private refreshAddress(v: number): void {
    const b = v * 16;
    this.addrCache[v] =
      (BigInt(this.tableView.getUint32(b + ENTRY_ADDR_HI, true)) << 32n) |
      BigInt(this.tableView.getUint32(b + ENTRY_ADDR_LO, true));
  }

  /** Deliver a pending vector once it is deliverable (QEMU msix_handle_mask_update). */
  private deliverPending(v: number): void {
    if (!this.enabled || this.isMasked(v) || !this.isPending(v)) return;
    this.setPending(v, false);
    this.send(v);
  }

  // ---------------------------------------------------------------- BAR access

  private barRead(offset: number, size: 1 | 2 | 4 | 8): number | bigint {
    const t = this.opts.tableOffset;
    const p = this.opts.pbaOffset;
    if (offset >= t && offset + size <= t + this.table.length) return readLe(this.table, offset - t, size);
    if (offset >= p && offset + size <= p + this.pba.length) return readLe(this.pba, offset - p, size);
    return size === 8 ? 0n : 0; // unassigned part of the exclusive BAR
  }

  private barWrite(offset: number, size: 1 | 2 | 4 | 8, value: number | bigint): void {
    const t = this.opts.tableOffset;
    if (!(offset >= t && offset + size <= t + this.table.length)) return; // PBA and holes are read-only
    const rel = offset - t;
    const first = rel >> 4;
    const last = (rel + size - 1) >> 4;
    const before: boolean[] = [];
    for (let v = first; v <= last; v++) before.push(this.isMasked(v));
    writeLe(this.table, rel, size, value);
    for (let v = first; v <= last; v++) this.refreshAddress(v);
    for (let v = first; v <= last; v++) if (before[v - first] && !this.isMasked(v)) this.deliverPending(v);
  }
}

function pow2ceil(n: number): number {
  let p = 1;
  while (p < n) p *= 2;
  return p;
}

function readLe(buf: Uint8Array, off: number, size: number): number | bigint {
  if (size === 8) {
    let v = 0n;
    for (let i = 7; i >= 0; i--) v = (v << 8n) | BigInt(buf[off + i] as number);
    return v;
  }
  let v = 0;
  for (let i = size - 1; i >= 0; i--) v = v * 256 + (buf[off + i] as number);
  return v;
}

function writeLe(buf: Uint8Array, off: number, size: number, value: number | bigint): void {
  let v =
    typeof value === 'bigint'
      ? BigInt.asUintN(64, value)
      : BigInt.asUintN(64, BigInt(Math.trunc(Number.isFinite(value) ? value : 0)));
  for (let i = 0; i < size; i++) {
    buf[off + i] = Number(v & 0xffn);
    v >>= 8n;
  }
}
