/**
 * One PCI/PCIe function: type 0 header, BARs with the sizing protocol and decode gating, capability
 * lists, INTx, function-level reset. Modelled on QEMU 7.2 hw/pci/pci.c (measured on QEMU 7.2).
 * Spec: PCI Local Bus 3.0 §6; PCIe Base §7.5; digest §1.1-§1.3.
 */
import { OptionsError } from '../lib/errors.js';
import { readOnlyMismatch } from './config-check.js';
import { allOnes, ConfigSpace } from './config-space.js';
import type { InterruptSink } from './interrupt-sink.js';

/** Type 0 header offsets (pci_regs.h names). */
export const PCI_VENDOR_ID = 0x00;
export const PCI_DEVICE_ID = 0x02;
export const PCI_COMMAND = 0x04;
export const PCI_STATUS = 0x06;
export const PCI_REVISION_ID = 0x08;
export const PCI_CLASS_PROG = 0x09;
export const PCI_CACHE_LINE_SIZE = 0x0c;
export const PCI_HEADER_TYPE = 0x0e;
export const PCI_BASE_ADDRESS_0 = 0x10;
export const PCI_SUBSYSTEM_VENDOR_ID = 0x2c;
export const PCI_SUBSYSTEM_ID = 0x2e;
export const PCI_ROM_ADDRESS = 0x30;
export const PCI_CAPABILITY_LIST = 0x34;
export const PCI_INTERRUPT_LINE = 0x3c;
export const PCI_INTERRUPT_PIN = 0x3d;

export const PCI_COMMAND_IO = 0x1;
export const PCI_COMMAND_MEMORY = 0x2;
export const PCI_COMMAND_MASTER = 0x4;
export const PCI_COMMAND_SERR = 0x100;
export const PCI_COMMAND_INTX_DISABLE = 0x400;
export const PCI_STATUS_INTERRUPT = 0x8;
export const PCI_STATUS_CAP_LIST = 0x10;
/** Status RW1C bits (QEMU pci_init_w1cmask): parity, target/master aborts, SERR, detected parity. */
export const PCI_STATUS_W1C = 0xf900;

const HEADER_SIZE = 0x40;
const EXT_START = 0x100;

export type BarType = 'mem32' | 'mem64' | 'io';

/** MMIO/PIO handler behind a BAR. Offsets are relative to the BAR base. */
export interface BarHandler {
  read(offset: number, size: 1 | 2 | 4 | 8): number | bigint;
  write(offset: number, size: 1 | 2 | 4 | 8, value: number | bigint): void;
}

export interface BarDefinition {
  /** Power of two; >= 16 for memory, >= 4 for I/O. */
  size: number;
  type: BarType;
  prefetchable?: boolean;
  handler: BarHandler;
}

/** Emitted when a BAR's decoded address or enable state changes. */
export interface BarMapping {
  bar: number;
  /** Programmed base address (meaningful when enabled). */
  address: bigint;
  size: number;
  type: BarType;
  /** True when the function decodes this BAR (enable bit set and a valid address). */
  enabled: boolean;
}

export interface PciFunctionOptions {
  vendorId: number;
  deviceId: number;
  revision: number;
  /** 24-bit: base class << 16 | subclass << 8 | prog-if. */
  classCode: number;
  subsystemVendorId: number;
  subsystemId: number;
  /** 0 = none, 1 = INTA .. 4 = INTD. */
  interruptPin: number;
  /** PCI Express function: 4 KiB config space and extended capabilities. */
  express: boolean;
  /** SR-IOV virtual function: PCIe VF header rules (digest §1.5). */
  vf?: boolean;
  /** Expansion ROM BAR size (power of two >= 2 KiB); 0/absent = no ROM BAR (reads 0). QEMU gives virtio-net a 256 KiB ROM. */
  romSize?: number;
  /** Multi-function bit in Header Type. */
  multifunction?: boolean;
  /** Routing ID (bus << 8 | devfn). */
  routingId?: number;
  /** Where INTx level changes go. */
  sink?: InterruptSink;
}

interface Bar extends BarDefinition {
  index: number;
  /** Current decode state, for change detection. */
  mappedAddress: bigint;
  mappedEnabled: boolean;
}

/** Serialised PciFunction state (see snapshot()). */
export interface PciFunctionState {
  config: string;
  intx: boolean;
  routingId: number;
}

type ConfigWriteListener = (offset: number, size: 1 | 2 | 4, value: number) => void;

export class PciFunction {
  readonly config: ConfigSpace;
  readonly options: Readonly<PciFunctionOptions>;
  /** bus << 8 | device << 3 | function. */
  routingId: number;
  /** INTx sink; may be set after construction. */
  sink: InterruptSink | undefined;

  private readonly bars: (Bar | undefined)[] = [
    undefined,
    undefined,
    undefined,
    undefined,
    undefined,
    undefined,
  ];
  private readonly used: Uint8Array;
  private readonly resetListeners: (() => void)[] = [];
  private readonly mappingListeners: ((m: BarMapping) => void)[] = [];
  private readonly writeHooks: { start: number; end: number; fn: ConfigWriteListener }[] = [];
  private readonly readHooks: {
    start: number;
    end: number;
    fn: (offset: number, size: 1 | 2 | 4) => void;
  }[] = [];
  private intxLevel = false;
  private intxOut = false;
  private lastExtCap = 0;
  /** VF decode: set by the PF's SR-IOV capability (VF Enable && VF MSE, and VF BAR addresses). */
  private vfMemoryEnable = false;
  private readonly vfBarAddress: (bigint | null)[] = [null, null, null, null, null, null];

  constructor(options: PciFunctionOptions) {
    this.options = { ...options };
    this.routingId = options.routingId ?? 0;
    this.sink = options.sink;
    const cs = new ConfigSpace(options.express ? 4096 : 256);
    this.config = cs;
    this.used = new Uint8Array(cs.size);
    this.used.fill(1, 0, HEADER_SIZE);
    const vf = options.vf === true;
    cs.setU16(PCI_VENDOR_ID, vf ? 0xffff : options.vendorId);
    cs.setU16(PCI_DEVICE_ID, vf ? 0xffff : options.deviceId);
    cs.setU8(PCI_REVISION_ID, options.revision);
    cs.setU8(PCI_CLASS_PROG, options.classCode & 0xff);
    cs.setU16(PCI_CLASS_PROG + 1, (options.classCode >>> 8) & 0xffff);
    cs.setU8(PCI_HEADER_TYPE, options.multifunction ? 0x80 : 0);
    cs.setU16(PCI_SUBSYSTEM_VENDOR_ID, options.subsystemVendorId);
    cs.setU16(PCI_SUBSYSTEM_ID, options.subsystemId);
    cs.setU8(PCI_INTERRUPT_PIN, options.interruptPin);
    // QEMU pci_init_wmask: Command IO|MEM|MASTER|SERR|INTX_DISABLE; a VF keeps only Bus Master (PCIe VF rules).
    cs.setWritable(
      PCI_COMMAND,
      2,
      vf
        ? PCI_COMMAND_MASTER
        : PCI_COMMAND_IO |
            PCI_COMMAND_MEMORY |
            PCI_COMMAND_MASTER |
            PCI_COMMAND_SERR |
            PCI_COMMAND_INTX_DISABLE,
    );
    cs.setWritable(PCI_CACHE_LINE_SIZE, 1, 0xff);
    cs.setWritable(PCI_INTERRUPT_LINE, 1, 0xff);
    cs.setW1C(PCI_STATUS, 2, PCI_STATUS_W1C);
    // QEMU: everything past the header is writable until a capability claims it.
    cs.setWritable(HEADER_SIZE, cs.size - HEADER_SIZE, 0xff);
    if (options.express) {
      // An empty extended list: header at 0x100 reads 0 and is read-only (measured, QEMU 7.2).
      cs.setReadOnly(EXT_START, 4);
      this.used.fill(1, EXT_START, EXT_START + 4);
    }
    const rom = options.romSize ?? 0;
    if (rom) {
      if (!isPow2(rom) || rom < 2048)
        throw new OptionsError(`romSize must be a power of two >= 2048, got ${rom}`);
      cs.setWritable(PCI_ROM_ADDRESS, 4, (~(rom - 1) | 1) >>> 0);
    }
  }

  /** True for an SR-IOV virtual function. */
  get isVf(): boolean {
    return this.options.vf === true;
  }

  get bus(): number {
    return (this.routingId >> 8) & 0xff;
  }
  get device(): number {
    return (this.routingId >> 3) & 0x1f;
  }
  get function(): number {
    return this.routingId & 7;
  }

  // ---------------------------------------------------------------- config access

  /** Guest config read; never throws (out of range reads all-ones). Read hooks run first. */
  configRead(offset: number, size: 1 | 2 | 4): number {
    if (this.readHooks.length > 0 && Number.isInteger(offset) && offset >= 0 && offset < this.config.size) {
      const end = offset + (size === 1 || size === 2 ? size : 4);
      for (const h of this.readHooks) if (offset < h.end && end > h.start) h.fn(offset, size);
    }
    return this.config.read(offset, size);
  }

  /**
   * Run `fn` before any guest config read overlapping [start, start+length), so it can refresh the
   * bytes (the virtio PCI_CFG capability's pci_cfg_data window reads through to a BAR).
   */
  onConfigRead(start: number, length: number, fn: (offset: number, size: 1 | 2 | 4) => void): void {
    this.readHooks.push({ start, end: start + length, fn });
  }

  /** Guest config write through the masks; side effects (BAR remap, INTx, capability hooks) follow. Never throws. */
  configWrite(offset: number, size: 1 | 2 | 4, value: number): void {
    if (!Number.isInteger(offset) || offset < 0 || offset >= this.config.size) return;
    if (size !== 1 && size !== 2 && size !== 4) return;
    this.config.write(offset, size, value);
    const end = Math.min(offset + size, this.config.size);
    if (offset < PCI_ROM_ADDRESS + 4 && end > PCI_COMMAND) {
      this.updateMappings();
      this.updateIntx();
    }
    for (const h of this.writeHooks) {
      if (offset < h.end && end > h.start) h.fn(offset, size, value);
    }
  }

  /**
   * Run `fn` after any guest config write overlapping [start, start+length). Used by capabilities
   * (MSI-X Message Control, PCIe Device Control, SR-IOV registers).
   */
  onConfigWrite(start: number, length: number, fn: ConfigWriteListener): void {
    this.writeHooks.push({ start, end: start + length, fn });
  }

  // ---------------------------------------------------------------- BARs

  /**
   * Declare BAR `index` (a 64-bit BAR also takes index+1). The register's RO type bits and write mask
   * implement the sizing protocol: writing all-ones reads back ~(size-1) | type bits.
   */
  defineBar(index: number, def: BarDefinition): void {
    const is64 = def.type === 'mem64';
    if (!Number.isInteger(index) || index < 0 || index > (is64 ? 4 : 5))
      throw new OptionsError(`BAR index ${index} out of range`);
    if (this.bars[index] || (is64 && this.bars[index + 1]))
      throw new OptionsError(`BAR ${index} already defined`);
    if (index > 0 && this.bars[index - 1]?.type === 'mem64')
      throw new OptionsError(`BAR ${index} is the upper half of BAR ${index - 1}`);
    const min = def.type === 'io' ? 4 : 16;
    if (!isPow2(def.size) || def.size < min)
      throw new OptionsError(`BAR ${index} size must be a power of two >= ${min}, got ${def.size}`);
    if (def.type !== 'mem64' && def.size > 0x80000000)
      throw new OptionsError(`32-bit BAR ${index} larger than 2 GiB`);
    if (def.type === 'io' && def.prefetchable)
      throw new OptionsError(`I/O BAR ${index} cannot be prefetchable`);
    const bar: Bar = { ...def, index, mappedAddress: 0n, mappedEnabled: false };
    this.bars[index] = bar;
    const off = PCI_BASE_ADDRESS_0 + 4 * index;
    if (this.isVf) return; // VF BAR registers are RO 0; the PF's SR-IOV capability places them.
    this.config.setU32(off, barTypeBits(def));
    this.config.setWritable(off, 4, barLowMask(def));
    if (is64) {
      this.config.setU32(off + 4, 0);
      this.config.setWritable(off + 4, 4, Number(BigInt.asUintN(32, ~(BigInt(def.size) - 1n) >> 32n)));
    }
  }

  /** The BAR's definition, or undefined. */
  getBar(index: number): Readonly<BarDefinition> | undefined {
    return this.bars[index];
  }

  /** Address the BAR decodes at, or null when it is not decoded (enable bit clear, unassigned, VF disabled). */
  barAddress(index: number): bigint | null {
    const bar = this.bars[index];
    if (!bar) return null;
    const a = this.decodeAddress(bar);
    return a;
  }

  /** Subscribe to BAR mapping changes (address, size, enabled). */
  onBarMappingChange(listener: (m: BarMapping) => void): void {
    this.mappingListeners.push(listener);
  }

  /** MMIO/PIO read at `offset` in BAR `bar`; all-ones when absent, out of range or not decoding. */
  barRead(bar: number, offset: number, size: 1 | 2 | 4 | 8): number | bigint {
    const b = this.bars[bar];
    if (!b || !this.barAccessOk(b, offset, size))
      return size === 8 ? 0xffffffffffffffffn : allOnes(size === 1 || size === 2 ? size : 4);
    return b.handler.read(offset, size);
  }

  /** MMIO/PIO write; ignored when absent, out of range or not decoding. */
  barWrite(bar: number, offset: number, size: 1 | 2 | 4 | 8, value: number | bigint): void {
    const b = this.bars[bar];
    if (!b || !this.barAccessOk(b, offset, size)) return;
    b.handler.write(offset, size, value);
  }

  private barAccessOk(b: Bar, offset: number, size: number): boolean {
    if (size !== 1 && size !== 2 && size !== 4 && size !== 8) return false;
    if (!Number.isInteger(offset) || offset < 0 || offset + size > b.size) return false;
    return this.decodeEnabled(b);
  }

  private decodeEnabled(b: Bar): boolean {
    if (this.isVf) return this.vfMemoryEnable && b.type !== 'io';
    const cmd = this.config.getU16(PCI_COMMAND);
    return (cmd & (b.type === 'io' ? PCI_COMMAND_IO : PCI_COMMAND_MEMORY)) !== 0;
  }

  /** Raw programmed address of a PF BAR (without the enable check). */
  private programmedAddress(b: Bar): bigint {
    const off = PCI_BASE_ADDRESS_0 + 4 * b.index;
    const lo = this.config.getU32(off);
    if (b.type === 'io') return BigInt((lo & ~3) >>> 0) & ~(BigInt(b.size) - 1n);
    let a = BigInt((lo & 0xfffffff0) >>> 0);
    if (b.type === 'mem64') a |= BigInt(this.config.getU32(off + 4)) << 32n;
    return a & ~(BigInt(b.size) - 1n);
  }

  private decodeAddress(b: Bar): bigint | null {
    if (!this.decodeEnabled(b)) return null;
    if (this.isVf) return this.vfBarAddress[b.index] ?? null;
    const a = this.programmedAddress(b);
    // QEMU pci_bar_address: address 0 and ranges that wrap or leave the BAR's address width are unmapped
    // (this also covers the all-ones value left by the sizing protocol).
    const last = a + BigInt(b.size) - 1n;
    const limit = b.type === 'mem64' ? 0xffffffffffffffffn : 0xffffffffn;
    if (a === 0n || last >= limit) return null;
    return a;
  }

  /** Recompute decode state of every BAR and emit changes (QEMU pci_update_mappings). */
  updateMappings(): void {
    for (const b of this.bars) {
      if (!b) continue;
      const a = this.decodeAddress(b);
      const enabled = a !== null;
      const address = a ?? (this.isVf ? (this.vfBarAddress[b.index] ?? 0n) : this.programmedAddress(b));
      if (enabled === b.mappedEnabled && (!enabled || address === b.mappedAddress)) continue;
      b.mappedEnabled = enabled;
      b.mappedAddress = address;
      const m: BarMapping = { bar: b.index, address, size: b.size, type: b.type, enabled };
      for (const l of this.mappingListeners) l(m);
    }
  }

  /** @internal Used by SriovCapability: a VF's decode enable and per-BAR addresses. */
  setVfDecode(memoryEnable: boolean, addresses: readonly (bigint | null)[]): void {
    this.vfMemoryEnable = memoryEnable;
    for (let i = 0; i < 6; i++) this.vfBarAddress[i] = addresses[i] ?? null;
    this.updateMappings();
  }

  // ---------------------------------------------------------------- capabilities

  /**
   * Add a capability to the standard list (QEMU pci_add_capability): the new capability becomes the
   * list head (its next = old head), so the chain runs in reverse order of addition. Without `offset`
   * the first free dword-aligned gap from 0x40 is used. The bytes become read-only; returns the offset.
   */
  addCapability(id: number, length: number, offset?: number): number {
    const len = (length + 3) & ~3;
    let off = offset ?? this.findSpace(len, HEADER_SIZE, 0x100);
    if (off < 0) throw new OptionsError(`no room for capability 0x${id.toString(16)} (${length} bytes)`);
    if (off < HEADER_SIZE || off + length > 0x100 || off & 3)
      throw new OptionsError(`capability offset 0x${off.toString(16)} invalid`);
    if (this.used.subarray(off, off + len).some((u) => u !== 0))
      throw new OptionsError(`capability at 0x${off.toString(16)} overlaps another`);
    off = off | 0;
    const cs = this.config;
    cs.setU8(off, id);
    cs.setU8(off + 1, cs.getU8(PCI_CAPABILITY_LIST));
    cs.setU8(PCI_CAPABILITY_LIST, off);
    cs.setU16(PCI_STATUS, cs.getU16(PCI_STATUS) | PCI_STATUS_CAP_LIST);
    cs.setReadOnly(off, length);
    this.used.fill(1, off, off + len);
    return off;
  }

  /**
   * Add an extended capability (PCIe, 0x100..0xFFF), appended at the tail of the list (QEMU
   * pcie_add_capability). Without `offset`: 0x100 first, then right after the previous one. Read-only.
   */
  addExtendedCapability(id: number, version: number, length: number, offset?: number): number {
    const cs = this.config;
    if (cs.size !== 4096) throw new OptionsError('extended capabilities need an express function');
    const len = (length + 3) & ~3;
    let off: number;
    if (offset !== undefined) off = offset;
    else if (this.lastExtCap === 0) off = EXT_START;
    else off = this.findSpace(len, EXT_START, 4096);
    if (off < EXT_START || off + length > 4096 || off & 3)
      throw new OptionsError(`extended capability offset 0x${off.toString(16)} invalid`);
    const first = this.lastExtCap === 0;
    if (first && off !== EXT_START) throw new OptionsError('the first extended capability must be at 0x100');
    if (!first && this.used.subarray(off, off + len).some((u) => u !== 0)) {
      throw new OptionsError(`extended capability at 0x${off.toString(16)} overlaps another`);
    }
    cs.setU32(off, (id & 0xffff) | ((version & 0xf) << 16));
    if (!first) {
      const prev = cs.getU32(this.lastExtCap);
      cs.setU32(this.lastExtCap, (prev & 0xfffff) | (off << 20));
    }
    cs.setReadOnly(off, length);
    this.used.fill(1, off, off + len);
    this.lastExtCap = off;
    return off;
  }

  private findSpace(len: number, from: number, to: number): number {
    for (let off = from; off + len <= to; off += 4) {
      let free = true;
      for (let i = 0; i < len; i++) {
        if (this.used[off + i]) {
          free = false;
          off = (off + i) & ~3;
          break;
        }
      }
      if (free) return off;
    }
    return -1;
  }

  /** Offset of the first standard capability with this ID, or 0. Walks the list as a guest would (loop-safe). */
  findCapability(id: number): number {
    const cs = this.config;
    if (!(cs.getU16(PCI_STATUS) & PCI_STATUS_CAP_LIST)) return 0;
    let p = cs.getU8(PCI_CAPABILITY_LIST) & 0xfc;
    for (let n = 0; p >= HEADER_SIZE && n < 48; n++) {
      if (cs.getU8(p) === id) return p;
      p = cs.getU8(p + 1) & 0xfc;
    }
    return 0;
  }

  /** Offset of the first extended capability with this ID, or 0. */
  findExtendedCapability(id: number): number {
    const cs = this.config;
    if (cs.size !== 4096) return 0;
    let p = EXT_START;
    for (let n = 0; p >= EXT_START && n < 960; n++) {
      const h = cs.getU32(p);
      if (h === 0 || h === 0xffffffff) return 0;
      if ((h & 0xffff) === id) return p;
      p = (h >>> 20) & 0xffc;
    }
    return 0;
  }

  // ---------------------------------------------------------------- INTx

  /**
   * Set the function's INTx level. Status bit 3 mirrors the level; the pin is driven only while Command
   * bit 10 (Interrupt Disable) is clear. A VF has no INTx (PCIe SR-IOV): ignored.
   */
  setIntx(asserted: boolean): void {
    if (this.isVf || this.options.interruptPin === 0) return;
    this.intxLevel = asserted;
    const st = this.config.getU16(PCI_STATUS);
    this.config.setU16(PCI_STATUS, asserted ? st | PCI_STATUS_INTERRUPT : st & ~PCI_STATUS_INTERRUPT);
    this.updateIntx();
  }

  /** Level currently driven on the INTx pin. */
  get intxAsserted(): boolean {
    return this.intxOut;
  }

  private updateIntx(): void {
    const out = this.intxLevel && !(this.config.getU16(PCI_COMMAND) & PCI_COMMAND_INTX_DISABLE);
    if (out === this.intxOut) return;
    this.intxOut = out;
    this.sink?.intx?.(out);
  }

  // ---------------------------------------------------------------- snapshot

  /** JSON-serialisable state: config bytes and INTx level (masks and BAR handlers are structural). */
  snapshot(): PciFunctionState {
    return {
      config: Buffer.from(this.config.bytes).toString('base64'),
      intx: this.intxLevel,
      routingId: this.routingId,
    };
  }

  /**
   * Restore a snapshot taken from a function built the same way; re-emits BAR mappings and the INTx
   * level. Capability objects with state of their own (MSI-X table, SR-IOV VFs) restore separately.
   */
  restore(state: PciFunctionState): void {
    const bytes = typeof state?.config === 'string' ? Buffer.from(state.config, 'base64') : undefined;
    if (!bytes || bytes.length !== this.config.size)
      throw new OptionsError('PCI function snapshot does not match this function');
    const bad = readOnlyMismatch(this.config, bytes);
    if (bad >= 0)
      throw new OptionsError(
        `PCI function snapshot does not match this function: read-only config byte 0x${bad.toString(16)} differs`,
      );
    this.config.bytes.set(bytes);
    this.routingId = Number(state.routingId) & 0xffff;
    this.intxLevel = state.intx === true;
    this.updateMappings();
    this.updateIntx();
  }

  // ---------------------------------------------------------------- reset

  /** Run `listener` on every reset (after the header is back to defaults). */
  onReset(listener: () => void): void {
    this.resetListeners.push(listener);
  }

  /**
   * Function-level reset (QEMU pci_do_device_reset, measured on 7.2 via FLR): Command and Status RW1C
   * bits, Cache Line Size, Interrupt Line cleared; BARs and ROM back to their type bits; INTx
   * deasserted; then the reset listeners (capabilities, device) run.
   */
  reset(): void {
    const cs = this.config;
    const cmdMask = (cs.wmask[PCI_COMMAND] as number) | ((cs.wmask[PCI_COMMAND + 1] as number) << 8);
    cs.setU16(PCI_COMMAND, cs.getU16(PCI_COMMAND) & ~cmdMask);
    cs.setU16(PCI_STATUS, cs.getU16(PCI_STATUS) & ~(PCI_STATUS_W1C | PCI_STATUS_INTERRUPT));
    cs.setU8(PCI_CACHE_LINE_SIZE, 0);
    cs.setU8(PCI_INTERRUPT_LINE, 0);
    if (!this.isVf) {
      for (const b of this.bars) {
        if (!b) continue;
        const off = PCI_BASE_ADDRESS_0 + 4 * b.index;
        cs.setU32(off, barTypeBits(b));
        if (b.type === 'mem64') cs.setU32(off + 4, 0);
      }
    }
    cs.setU32(PCI_ROM_ADDRESS, 0);
    this.intxLevel = false;
    this.updateIntx();
    this.updateMappings();
    for (const l of this.resetListeners) l();
  }
}

export function isPow2(n: number): boolean {
  if (!Number.isSafeInteger(n) || n <= 0) return false;
  const b = BigInt(n);
  return (b & (b - 1n)) === 0n;
}

/** Read-only low bits of a BAR register (space, type, prefetchable). */
export function barTypeBits(def: { type: BarType; prefetchable?: boolean }): number {
  if (def.type === 'io') return 1;
  return (def.type === 'mem64' ? 0x4 : 0) | (def.prefetchable ? 0x8 : 0);
}

/** Write mask of a BAR's low dword: the address bits above the size. */
export function barLowMask(def: { type: BarType; size: number }): number {
  const low = Number(BigInt.asUintN(32, ~(BigInt(def.size) - 1n)));
  return (def.type === 'io' ? low & 0xfffffffc : low & 0xfffffff0) >>> 0;
}
