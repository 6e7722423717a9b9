/**
 * A virtio-pci driver for the synthetic guest: what Linux's virtio_pci_modern (drivers/virtio/
 * virtio_pci_modern*.c) does, through nothing but config-space and BAR accessors and guest memory.
 * It walks the capability list with `configRead`, sizes and assigns BARs, enables memory space and bus
 * mastering, programs the MSI-X table through `barWrite`, negotiates features (§3.1.1), sets up split
 * or packed queues through the common config (§4.1.5.1.3), kicks through the notify area (§4.1.5.2)
 * and collects MSI-X messages, mapping each back to its vector.
 *
 * Public API for VMM authors' tests (docs/transport.md). The driver is strict: when the device misbehaves
 * (FEATURES_OK refused, a queue that cannot be set up) it throws, so tests fail loudly.
 */
import type { GuestMemory } from '../../lib/memory/guest-memory.js';
import type { InterruptSink } from '../../pci/msix.js';
import { BumpAllocator } from './bump-allocator.js';
import { PackedDriverQueue } from './packed-driver.js';
import { SplitDriverQueue } from './split-driver.js';

/** What the driver needs from a device: the four accessors of `VirtioNetPci` / `PciFunction`. */
export interface PciTarget {
  configRead(offset: number, size: 1 | 2 | 4): number;
  configWrite(offset: number, size: 1 | 2 | 4, value: number): void;
  barRead(bar: number, offset: number, size: 1 | 2 | 4 | 8): number | bigint;
  barWrite(bar: number, offset: number, size: 1 | 2 | 4 | 8, value: number | bigint): void;
}

/** A virtio vendor capability as found on the list (§4.1.4). */
export interface VirtioCap {
  /** Config-space offset of the capability. */
  at: number;
  cfgType: number;
  bar: number;
  id: number;
  offset: number;
  length: number;
  /** NOTIFY only. */
  notifyOffMultiplier?: number;
}

/** One BAR as the driver sized and placed it. */
export interface AssignedBar {
  index: number;
  io: boolean;
  is64: boolean;
  prefetchable: boolean;
  size: number;
  address: bigint;
}

/** Where the driver places BARs: separate bump pointers for 32-bit memory, 64-bit prefetchable memory and I/O. */
export class BarAddressAllocator {
  constructor(
    private mem32 = 0xc000_0000,
    private mem64 = 0x1_0000_0000n,
    private io = 0xc000,
  ) {}

  alloc(size: number, kind: 'mem32' | 'mem64' | 'io'): bigint {
    if (kind === 'mem64') {
      const s = BigInt(size);
      const a = ((this.mem64 + s - 1n) / s) * s;
      this.mem64 = a + s;
      return a;
    }
    if (kind === 'io') {
      const a = Math.ceil(this.io / size) * size;
      this.io = a + size;
      return BigInt(a);
    }
    const a = Math.ceil(this.mem32 / size) * size;
    this.mem32 = a + size;
    return BigInt(a);
  }
}

/** MSI address the driver programs (x86 LAPIC window); data = vector number + `dataBase`. */
export const MSI_ADDRESS = 0xfee0_0000n;

/**
 * An InterruptSink that records MSI-X messages and INTx level changes, and maps messages back to the
 * vectors the driver programmed (address MSI_ADDRESS, data = dataBase + vector).
 */
export class InterruptCollector implements InterruptSink {
  readonly messages: { address: bigint; data: number }[] = [];
  /** INTx level changes, in order. */
  readonly intxChanges: boolean[] = [];
  intxLevel = false;
  private taken = 0;

  constructor(readonly dataBase = 0x4000) {}

  msi(address: bigint, data: number): void {
    this.messages.push({ address, data });
  }

  intx(asserted: boolean): void {
    this.intxLevel = asserted;
    this.intxChanges.push(asserted);
  }

  /** Vector of a message, or -1 if it is not one this driver programmed. */
  vectorOf(m: { address: bigint; data: number }): number {
    return m.address === MSI_ADDRESS && m.data >= this.dataBase ? m.data - this.dataBase : -1;
  }

  /** Vectors signalled since the last call, in order. */
  takeVectors(): number[] {
    const out = this.messages.slice(this.taken).map((m) => this.vectorOf(m));
    this.taken = this.messages.length;
    return out;
  }

  /** How many messages each vector got so far. */
  count(vector: number): number {
    return this.messages.filter((m) => this.vectorOf(m) === vector).length;
  }
}

/** Common config offsets the driver uses (Linux VIRTIO_PCI_COMMON_*). */
const C = {
  dfselect: 0x00,
  df: 0x04,
  gfselect: 0x08,
  gf: 0x0c,
  msix: 0x10,
  numq: 0x12,
  status: 0x14,
  generation: 0x15,
  qselect: 0x16,
  qsize: 0x18,
  qmsix: 0x1a,
  qenable: 0x1c,
  qnoff: 0x1e,
  qdesc: 0x20,
  qdriver: 0x28,
  qdevice: 0x30,
  qreset: 0x3a,
} as const;

export const STATUS = {
  ACKNOWLEDGE: 1,
  DRIVER: 2,
  DRIVER_OK: 4,
  FEATURES_OK: 8,
  NEEDS_RESET: 0x40,
  FAILED: 0x80,
} as const;
export const NO_VECTOR = 0xffff;

export type DriverQueue = SplitDriverQueue | PackedDriverQueue;

export interface PciDriverOptions {
  /** Guest RAM range for rings and buffers (default: the whole of `[0x10000, 0x10000 + 1 MiB)`). */
  allocator?: BumpAllocator;
  bars?: BarAddressAllocator;
  interrupts?: InterruptCollector;
}

export interface QueueSetupOptions {
  /** Queue size to program (default: the device's maximum). */
  size?: number;
  /** MSI-X vector for the queue (default: queue index + 1, config gets 0; NO_VECTOR for none). */
  vector?: number;
}

export class VirtioPciDriver {
  readonly allocator: BumpAllocator;
  readonly interrupts: InterruptCollector;
  readonly caps: VirtioCap[] = [];
  readonly bars: AssignedBar[] = [];
  /** Offset of the MSI-X capability (0 if none) and its table geometry. */
  msixCap = 0;
  msix: { vectors: number; tableBar: number; tableOffset: number; pbaBar: number; pbaOffset: number } | null =
    null;
  /** Negotiated features after `negotiate()`. */
  features = 0n;
  readonly queues = new Map<number, DriverQueue>();
  private readonly barAlloc: BarAddressAllocator;
  private common: VirtioCap | null = null;
  private notify: VirtioCap | null = null;
  private isr: VirtioCap | null = null;
  private device: VirtioCap | null = null;

  constructor(
    readonly target: PciTarget,
    readonly memory: GuestMemory,
    options: PciDriverOptions = {},
  ) {
    this.allocator = options.allocator ?? new BumpAllocator(0x10000, 0x10000 + 0x100000);
    this.barAlloc = options.bars ?? new BarAddressAllocator();
    this.interrupts = options.interrupts ?? new InterruptCollector();
  }

  // ------------------------------------------------------------------ PCI discovery

  /** Vendor/device/revision/subsystem IDs, as the PCI core reads them. */
  ids(): {
    vendorId: number;
    deviceId: number;
    revision: number;
    subsystemVendorId: number;
    subsystemId: number;
    classCode: number;
  } {
    const t = this.target;
    return {
      vendorId: t.configRead(0, 2),
      deviceId: t.configRead(2, 2),
      revision: t.configRead(8, 1),
      classCode: t.configRead(8, 4) >>> 8,
      subsystemVendorId: t.configRead(0x2c, 2),
      subsystemId: t.configRead(0x2e, 2),
    };
  }

  /** Walks the capability list (loop-safe); returns [offset, id] pairs in list order. */
  capabilityList(): [number, number][] {
    const t = this.target;
    const out: [number, number][] = [];
    if (!(t.configRead(0x06, 2) & 0x10)) return out;
    const seen = new Set<number>();
    for (let p = t.configRead(0x34, 1) & 0xfc; p >= 0x40 && !seen.has(p); p = t.configRead(p + 1, 1) & 0xfc) {
      seen.add(p);
      out.push([p, t.configRead(p, 1)]);
    }
    return out;
  }

  /**
   * Finds the virtio capabilities (vp_modern_probe: the first usable one of each type wins) and MSI-X.
   * Throws when the common, notify or ISR capability is missing (Linux refuses such a device).
   */
  probe(): this {
    const t = this.target;
    this.caps.length = 0;
    for (const [at, id] of this.capabilityList()) {
      if (id === 0x11) {
        this.msixCap = at;
        const ctl = t.configRead(at + 2, 2);
        const table = t.configRead(at + 4, 4);
        const pba = t.configRead(at + 8, 4);
        this.msix = {
          vectors: (ctl & 0x7ff) + 1,
          tableBar: table & 7,
          tableOffset: table & ~7,
          pbaBar: pba & 7,
          pbaOffset: pba & ~7,
        };
        continue;
      }
      if (id !== 0x09) continue;
      const cap: VirtioCap = {
        at,
        cfgType: t.configRead(at + 3, 1),
        bar: t.configRead(at + 4, 1),
        id: t.configRead(at + 5, 1),
        offset: t.configRead(at + 8, 4),
        length: t.configRead(at + 12, 4),
      };
      if (cap.cfgType === 2) cap.notifyOffMultiplier = t.configRead(at + 16, 4);
      this.caps.push(cap);
      if (cap.cfgType !== 5 && cap.bar > 5) continue; // reserved BAR values: ignore the capability
      if (cap.cfgType === 1 && !this.common) this.common = cap;
      else if (cap.cfgType === 2 && !this.notify) this.notify = cap;
      else if (cap.cfgType === 3 && !this.isr) this.isr = cap;
      else if (cap.cfgType === 4 && !this.device) this.device = cap;
    }
    if (!this.common || !this.notify || !this.isr)
      throw new Error('virtio-pci: missing common, notify or ISR capability');
    return this;
  }

  /**
   * Sizes every BAR (write all-ones, read back, restore), assigns addresses from the allocator, then
   * enables I/O and memory decoding and bus mastering (pci_enable_device + pci_set_master).
   */
  assignBars(): AssignedBar[] {
    const t = this.target;
    this.bars.length = 0;
    for (let i = 0; i < 6; ) {
      const off = 0x10 + 4 * i;
      const orig = t.configRead(off, 4);
      t.configWrite(off, 4, 0xffffffff);
      const rb = t.configRead(off, 4);
      t.configWrite(off, 4, orig);
      if (rb === 0) {
        i++;
        continue;
      }
      if (orig & 1) {
        const size = (~(rb & 0xfffffffc) + 1) & 0xffff;
        const address = this.barAlloc.alloc(size, 'io');
        t.configWrite(off, 4, Number(address));
        this.bars.push({ index: i, io: true, is64: false, prefetchable: false, size, address });
        i++;
        continue;
      }
      const is64 = ((orig >>> 1) & 3) === 2;
      const prefetchable = (orig & 8) !== 0;
      let mask = BigInt((rb & 0xfffffff0) >>> 0);
      if (is64) {
        const hi = t.configRead(off + 4, 4);
        t.configWrite(off + 4, 4, 0xffffffff);
        mask |= BigInt(t.configRead(off + 4, 4)) << 32n;
        t.configWrite(off + 4, 4, hi);
      } else {
        mask |= 0xffffffff00000000n;
      }
      const size = Number(BigInt.asUintN(64, ~mask) + 1n);
      const address = this.barAlloc.alloc(size, is64 ? 'mem64' : 'mem32');
      t.configWrite(off, 4, Number(address & 0xffffffffn));
      if (is64) t.configWrite(off + 4, 4, Number(address >> 32n));
      this.bars.push({ index: i, io: false, is64, prefetchable, size, address });
      i += is64 ? 2 : 1;
    }
    t.configWrite(0x04, 2, t.configRead(0x04, 2) | 0x7); // I/O, memory, bus master
    return this.bars;
  }

  /**
   * Programs every MSI-X table entry (address MSI_ADDRESS, data = dataBase + vector, unmasked) through
   * the BAR and sets MSI-X Enable (Function Mask clear). Returns the number of vectors.
   */
  enableMsix(): number {
    const m = this.msix;
    if (!m) throw new Error('virtio-pci: no MSI-X capability');
    const t = this.target;
    for (let v = 0; v < m.vectors; v++) {
      const e = m.tableOffset + 16 * v;
      t.barWrite(m.tableBar, e, 4, Number(MSI_ADDRESS & 0xffffffffn));
      t.barWrite(m.tableBar, e + 4, 4, Number(MSI_ADDRESS >> 32n));
      t.barWrite(m.tableBar, e + 8, 4, this.interrupts.dataBase + v);
      t.barWrite(m.tableBar, e + 12, 4, 0);
    }
    t.configWrite(this.msixCap + 2, 2, (t.configRead(this.msixCap + 2, 2) & ~0x4000) | 0x8000);
    return m.vectors;
  }

  /** Clears MSI-X Enable (the device falls back to INTx + ISR). */
  disableMsix(): void {
    if (this.msixCap)
      this.target.configWrite(this.msixCap + 2, 2, this.target.configRead(this.msixCap + 2, 2) & ~0x8000);
  }

  // ------------------------------------------------------------------ register access

  private need(c: VirtioCap | null, what: string): VirtioCap {
    if (!c) throw new Error(`virtio-pci: no ${what} capability (call probe())`);
    return c;
  }

  readCommon(offset: number, size: 1 | 2 | 4): number {
    const c = this.need(this.common, 'common');
    return Number(this.target.barRead(c.bar, c.offset + offset, size));
  }

  writeCommon(offset: number, size: 1 | 2 | 4, value: number): void {
    const c = this.need(this.common, 'common');
    this.target.barWrite(c.bar, c.offset + offset, size, value);
  }

  /** Device-specific config read (§4.1.4.6). */
  readDeviceConfig(offset: number, size: 1 | 2 | 4): number {
    const c = this.need(this.device, 'device');
    return Number(this.target.barRead(c.bar, c.offset + offset, size));
  }

  writeDeviceConfig(offset: number, size: 1 | 2 | 4, value: number): void {
    const c = this.need(this.device, 'device');
    this.target.barWrite(c.bar, c.offset + offset, size, value);
  }

  /** Reads (and thereby clears) the ISR byte. */
  readIsr(): number {
    const c = this.need(this.isr, 'ISR');
    return Number(this.target.barRead(c.bar, c.offset, 1));
  }

  get status(): number {
    return this.readCommon(C.status, 1);
  }

  setStatus(bits: number): void {
    this.writeCommon(C.status, 1, this.status | bits);
  }

  // ------------------------------------------------------------------ initialisation (§3.1.1)

  /**
   * Writes 0 to device_status and waits (bounded) until it reads 0 (vp_modern_set_status / reset).
   * A function whose command register was cleared (BAR reads all ones) is first enabled again, as Linux's
   * restore path does with pci_enable_device + pci_set_master. Throws, saying why, when the status never
   * reads 0 (the function is gone, or was never enabled: call assignBars() first).
   */
  reset(): void {
    this.reenable();
    this.writeCommon(C.status, 1, 0);
    for (let i = 0; i < 1000; i++) if (this.status === 0) return;
    const t = this.target;
    const status = this.status;
    const cmd = t.configRead(0x04, 2);
    const why =
      t.configRead(0x00, 2) === 0xffff
        ? 'the function is gone (config space reads all ones)'
        : (cmd & 0x3) === 0
          ? `the function does not decode its BARs (command 0x${cmd.toString(16)}; call assignBars())`
          : 'the device does not complete the reset';
    throw new Error(`virtio-pci: device_status reads 0x${status.toString(16)} after reset: ${why}`);
  }

  /** Sets I/O, memory decoding and bus mastering again (as assignBars did) if the guest cleared them. */
  private reenable(): void {
    if (this.bars.length === 0) return;
    const t = this.target;
    const cmd = t.configRead(0x04, 2);
    if (cmd !== 0xffff && (cmd & 0x7) !== 0x7) t.configWrite(0x04, 2, cmd | 0x7);
  }

  /** All offered feature bits, windows 0..3 (bits 0-127). */
  deviceFeatures(): bigint {
    let f = 0n;
    for (let sel = 0; sel < 4; sel++) {
      this.writeCommon(C.dfselect, 4, sel);
      f |= BigInt(this.readCommon(C.df, 4) >>> 0) << BigInt(32 * sel);
    }
    return f;
  }

  /** Writes the driver feature windows 0..3. */
  writeDriverFeatures(f: bigint): void {
    for (let sel = 0; sel < 4; sel++) {
      this.writeCommon(C.gfselect, 4, sel);
      this.writeCommon(C.gf, 4, Number((f >> BigInt(32 * sel)) & 0xffffffffn));
    }
  }

  /**
   * reset → ACKNOWLEDGE → DRIVER → features (offered ∩ `wanted`) → FEATURES_OK → re-read.
   * Returns the negotiated set; throws if the device refused FEATURES_OK.
   */
  negotiate(wanted: bigint = ~0n): bigint {
    this.reset();
    this.setStatus(STATUS.ACKNOWLEDGE);
    this.setStatus(STATUS.DRIVER);
    const f = this.deviceFeatures() & wanted;
    this.writeDriverFeatures(f);
    this.setStatus(STATUS.FEATURES_OK);
    if (!(this.status & STATUS.FEATURES_OK))
      throw new Error(`virtio-pci: device refused features 0x${f.toString(16)}`);
    this.features = f;
    return f;
  }

  /** num_queues. */
  numQueues(): number {
    return this.readCommon(C.numq, 2);
  }

  /** Sets config_msix_vector and returns what the device kept (NO_VECTOR if it refused). */
  setConfigVector(v: number): number {
    this.writeCommon(C.msix, 2, v);
    return this.readCommon(C.msix, 2);
  }

  /**
   * Sets up queue `index` (vp_modern setup_vq): select, read the max size, program size, vector and the
   * three ring addresses, enable, read back. Packed when VIRTIO_F_RING_PACKED (34) was negotiated.
   */
  setupQueue(index: number, options: QueueSetupOptions = {}): DriverQueue {
    this.writeCommon(C.qselect, 2, index);
    const max = this.readCommon(C.qsize, 2);
    if (max === 0) throw new Error(`virtio-pci: queue ${index} does not exist`);
    if (this.readCommon(C.qenable, 2)) throw new Error(`virtio-pci: queue ${index} already enabled`);
    const size = options.size ?? max;
    const packed = ((this.features >> 34n) & 1n) === 1n;
    const eventIdx = ((this.features >> 29n) & 1n) === 1n;
    const inOrder = ((this.features >> 35n) & 1n) === 1n;
    const q: DriverQueue = packed
      ? PackedDriverQueue.allocate(this.memory, this.allocator, size, { eventIdx, index, inOrder })
      : SplitDriverQueue.allocate(this.memory, this.allocator, size, { eventIdx, index, inOrder });
    this.writeCommon(C.qsize, 2, size);
    const vector = options.vector ?? (this.msix ? index + 1 : NO_VECTOR);
    this.writeCommon(C.qmsix, 2, vector);
    if (this.readCommon(C.qmsix, 2) !== vector)
      throw new Error(`virtio-pci: queue ${index} refused MSI-X vector ${vector}`);
    const cfg = q.config;
    this.write64(C.qdesc, cfg.descAddr);
    this.write64(C.qdriver, cfg.driverAddr);
    this.write64(C.qdevice, cfg.deviceAddr);
    this.writeCommon(C.qenable, 2, 1);
    if (this.readCommon(C.qenable, 2) !== 1)
      throw new Error(`virtio-pci: queue ${index} did not enable (status 0x${this.status.toString(16)})`);
    this.queues.set(index, q);
    return q;
  }

  /** Resets queue `index` through queue_reset (VIRTIO_F_RING_RESET) and waits until it reads 0. */
  resetQueue(index: number): void {
    this.writeCommon(C.qselect, 2, index);
    this.writeCommon(C.qreset, 2, 1);
    for (let i = 0; i < 1000; i++) {
      if (this.readCommon(C.qreset, 2) === 0) {
        this.queues.delete(index);
        return;
      }
    }
    throw new Error(`virtio-pci: queue ${index} reset did not complete`);
  }

  private write64(off: number, v: number): void {
    this.writeCommon(off, 4, v >>> 0);
    this.writeCommon(off + 4, 4, Math.floor(v / 0x1_0000_0000));
  }

  /** Sets DRIVER_OK (virtio_device_ready). */
  driverOk(): void {
    this.setStatus(STATUS.DRIVER_OK);
  }

  /**
   * The whole Linux sequence: probe, assign BARs, enable MSI-X (if present), negotiate `wanted`,
   * config vector 0, set up `queues` (each on vector index + 1), DRIVER_OK.
   */
  initialize(wanted: bigint = ~0n, queues: number[] = [], options: QueueSetupOptions = {}): bigint {
    this.probe();
    this.assignBars();
    if (this.msix) this.enableMsix();
    const f = this.negotiate(wanted);
    if (this.msix) this.setConfigVector(0);
    for (const i of queues) this.setupQueue(i, options);
    this.driverOk();
    return f;
  }

  // ------------------------------------------------------------------ notifications

  /** Notify address of queue `index`: cap.offset + queue_notify_off * multiplier (§4.1.4.4). */
  notifyOffset(index: number): number {
    const n = this.need(this.notify, 'notify');
    this.writeCommon(C.qselect, 2, index);
    return n.offset + this.readCommon(C.qnoff, 2) * (n.notifyOffMultiplier ?? 0);
  }

  /**
   * Kicks queue `index`: a 16-bit write of the index, or with VIRTIO_F_NOTIFICATION_DATA (38) a 32-bit
   * write carrying the next avail position (split: avail idx; packed: offset and wrap counter).
   */
  kick(index: number): void {
    const n = this.need(this.notify, 'notify');
    const off = this.notifyOffset(index);
    if (((this.features >> 38n) & 1n) === 1n) {
      const q = this.queues.get(index);
      let next = 0;
      if (q instanceof SplitDriverQueue) next = q.availIndex & 0xffff;
      else if (q instanceof PackedDriverQueue) {
        const p = q.availPosition;
        next = p.offset | (p.wrap ? 0x8000 : 0);
      }
      this.target.barWrite(n.bar, off, 4, ((index & 0xffff) | (next << 16)) >>> 0);
    } else {
      this.target.barWrite(n.bar, off, 2, index);
    }
  }

  /**
   * Writes `value` (`size` bytes) into queue `index`'s notify slot as it is: for tests of drivers that
   * send wrong notification data (§4.1.5.2) or narrower writes than negotiated.
   */
  notifyRaw(index: number, size: 2 | 4, value: number): void {
    const n = this.need(this.notify, 'notify');
    this.target.barWrite(n.bar, this.notifyOffset(index), size, value >>> 0);
  }

  /** Kicks queue `index` only if the queue's suppression state asks for it (virtqueue_kick_prepare). */
  kickIfNeeded(index: number): boolean {
    const q = this.queues.get(index);
    if (!q?.needsKick()) return false;
    this.kick(index);
    return true;
  }
}
