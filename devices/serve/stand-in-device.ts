/**
 * A stand-in PCI function for testing the vfio-user server and the guest harness without a real device
 * (it satisfies `VfioUserDevice` of lib/vfio-user/server.ts structurally).
 *
 * Function 1b36:7e57 (Red Hat's QEMU vendor id, a device id no Linux driver claims), class ff0000, PCIe
 * endpoint with 4 KiB config space:
 *   0x40 PCIe capability v2 (endpoint) -> 0x80 MSI-X (table BAR1+0, PBA BAR1+0x800)
 *   0x100 vendor-specific extended capability, with test registers:
 *     0x108 R  magic "VNTS" (0x53544e56)
 *     0x10c W  doorbell: 1 = scan guest memory for "VNT-DMA-PROBE:" and count hits; 2 = signal MSI-X
 *              vector (value >> 8); 3 = assert INTx, 4 = deassert INTx
 *     0x110 R  hits of the last scan        0x114 RW scratch
 * BAR0: 4 KiB mem32 echo (0x0 reads magic "VNTB", the rest reads back what was written, any size).
 * BAR1: 4 KiB mem32 for MSI-X (QEMU emulates the table; PBA reads 0).
 * BAR2/3: 16 KiB mem64 prefetchable echo.
 *
 * The config space is built with pci/ (PciFunction, PcieCapability, Msix: one codec per layout); BAR
 * accesses go straight to the stand-in's memory, whatever the command register says, as before.
 */
import { Msix } from '../../pci/msix.js';
import { PciFunction } from '../../pci/pci-function.js';
import { PcieCapability } from '../../pci/pcie-capability.js';

/** The part of GuestMemory the stand-in needs (lib/memory/guest-memory.ts satisfies it). */
export interface StandInMemory {
  addRegion(region: { address: number | bigint; bytes: Uint8Array }): void;
  removeRegion(address: number | bigint): boolean;
}

export const STAND_IN_VENDOR = 0x1b36;
export const STAND_IN_DEVICE = 0x7e57;
export const STAND_IN_MAGIC = 0x53544e56; // "VNTS"
export const STAND_IN_BAR_MAGIC = 0x42544e56; // "VNTB"
export const PROBE_PREFIX = 'VNT-DMA-PROBE:';
/** Config offsets of the test registers. */
export const StandInReg = { MAGIC: 0x108, DOORBELL: 0x10c, HITS: 0x110, SCRATCH: 0x114 } as const;

const VENDOR_CAP = 0x100;
const VENDOR_CAP_LENGTH = 0x18;
const PCI_EXT_CAP_ID_VNDR = 0x000b;

export interface StandInOptions {
  memory: StandInMemory;
  msixVectors?: number;
}

/** BAR handlers never reached: the stand-in answers BAR accesses itself (see barRead/barWrite). */
const UNUSED_BAR = { read: () => 0, write: () => {} };

/** Records every access, so tests and the guest harness can assert what arrived. */
export class StandInDevice {
  readonly bars = [
    { size: 0x1000, type: 'mem32' as const },
    { size: 0x1000, type: 'mem32' as const },
    { size: 0x4000, type: 'mem64' as const },
    null,
    null,
    null,
  ];
  readonly msixVectors: number;
  readonly memory: StandInMemory;
  /** The PCI function (config space, capabilities). */
  readonly pci: PciFunction;
  readonly barMemory = [new Uint8Array(0x1000), new Uint8Array(0x1000), new Uint8Array(0x4000)];
  /** Live regions as handed to `memory` (address, bytes). */
  readonly regions = new Map<number | bigint, Uint8Array>();
  sink: { vector(n: number): void; intx?(asserted: boolean): void } | null = null;
  counts = { configReads: 0, configWrites: 0, barReads: 0, barWrites: 0, resets: 0 };
  /** Strings that followed PROBE_PREFIX in guest memory at the last scan (up to 36 printable bytes each). */
  probeFound: string[] = [];

  constructor(options: StandInOptions) {
    this.msixVectors = options.msixVectors ?? 4;
    const inner = options.memory;
    this.memory = {
      addRegion: (r) => {
        inner.addRegion(r);
        this.regions.set(r.address, r.bytes);
      },
      removeRegion: (a) => {
        this.regions.delete(a);
        return inner.removeRegion(a);
      },
    };
    const fn = new PciFunction({
      vendorId: STAND_IN_VENDOR,
      deviceId: STAND_IN_DEVICE,
      revision: 1,
      classCode: 0xff0000,
      subsystemVendorId: STAND_IN_VENDOR,
      subsystemId: 0x1100,
      interruptPin: 1, // INTA
      express: true,
    });
    this.pci = fn;
    fn.defineBar(0, { size: 0x1000, type: 'mem32', handler: UNUSED_BAR });
    fn.defineBar(2, { size: 0x4000, type: 'mem64', prefetchable: true, handler: UNUSED_BAR });
    // Capabilities go on the list head first: MSI-X at 0x80 (table BAR1+0, PBA BAR1+0x800), then the
    // PCIe capability v2 (endpoint, FLR) at 0x40, so the list reads 0x40 -> 0x80. The client emulates the
    // MSI-X table: the stand-in signals vectors straight to its sink.
    new Msix(
      fn,
      {
        vectors: Math.max(1, this.msixVectors),
        bar: 1,
        tableOffset: 0,
        pbaOffset: 0x800,
        barSize: 0x1000,
        capOffset: 0x80,
      },
      {},
    );
    new PcieCapability(fn, { offset: 0x40 });
    // Vendor-specific extended capability: header id 0x7e57 rev 1 length 0x18, then the test registers.
    const cs = fn.config;
    fn.addExtendedCapability(PCI_EXT_CAP_ID_VNDR, 1, VENDOR_CAP_LENGTH, VENDOR_CAP);
    cs.setU32(VENDOR_CAP + 4, 0x7e57 | (1 << 16) | (VENDOR_CAP_LENGTH << 20));
    cs.setU32(StandInReg.MAGIC, STAND_IN_MAGIC);
    cs.setWritable(StandInReg.DOORBELL, 4, 0xffffffff);
    cs.setWritable(StandInReg.SCRATCH, 4, 0xffffffff);
    fn.onConfigWrite(StandInReg.DOORBELL, 4, () => this.#doorbell());
    const registers = cs.bytes.slice(VENDOR_CAP, VENDOR_CAP + VENDOR_CAP_LENGTH);
    fn.onReset(() => cs.bytes.set(registers, VENDOR_CAP));
    const b0 = new DataView(this.barMemory[0]!.buffer);
    b0.setUint32(0, STAND_IN_BAR_MAGIC, true);
  }

  /** The config space bytes (4 KiB). */
  get config(): Uint8Array {
    return this.pci.config.bytes;
  }

  setInterruptSink(sink: { vector(n: number): void; intx?(asserted: boolean): void }): void {
    this.sink = sink;
  }

  configRead(offset: number, size: 1 | 2 | 4): number {
    this.counts.configReads++;
    return this.pci.configRead(offset, size);
  }

  configWrite(offset: number, size: 1 | 2 | 4, value: number): void {
    this.counts.configWrites++;
    this.pci.configWrite(offset, size, value);
  }

  #doorbell(): void {
    const v = new DataView(this.config.buffer).getUint32(StandInReg.DOORBELL, true);
    const op = v & 0xff;
    if (op === 1) {
      this.probeFound = this.scan(PROBE_PREFIX);
      new DataView(this.config.buffer).setUint32(StandInReg.HITS, this.probeFound.length, true);
    } else if (op === 2) this.sink?.vector(v >>> 8);
    else if (op === 3) this.sink?.intx?.(true);
    else if (op === 4) this.sink?.intx?.(false);
  }

  /** Searches every mapped region for `prefix`; returns the printable text after each hit (≤ 36 chars). */
  scan(prefix: string): string[] {
    const needle = Buffer.from(prefix);
    const out: string[] = [];
    for (const bytes of this.regions.values()) {
      const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
      for (let i = buf.indexOf(needle); i >= 0 && out.length < 64; i = buf.indexOf(needle, i + 1)) {
        let end = i + needle.length;
        while (
          end < buf.length &&
          end < i + needle.length + 36 &&
          (buf[end] as number) >= 0x21 &&
          (buf[end] as number) < 0x7f
        )
          end++;
        out.push(buf.toString('latin1', i + needle.length, end));
      }
    }
    return out;
  }

  barRead(bar: number, offset: number, size: 1 | 2 | 4 | 8): number | bigint {
    this.counts.barReads++;
    const mem = this.barMemory[bar];
    if (mem === undefined || bar === 1) return size === 8 ? 0n : 0;
    const dv = new DataView(mem.buffer);
    if (size === 8) return dv.getBigUint64(offset, true);
    return size === 4
      ? dv.getUint32(offset, true)
      : size === 2
        ? dv.getUint16(offset, true)
        : dv.getUint8(offset);
  }

  barWrite(bar: number, offset: number, size: 1 | 2 | 4 | 8, value: number | bigint): void {
    this.counts.barWrites++;
    const mem = this.barMemory[bar];
    if (mem === undefined || bar === 1 || (bar === 0 && offset < 4)) return;
    const dv = new DataView(mem.buffer);
    if (size === 8) dv.setBigUint64(offset, BigInt(value), true);
    else if (size === 4) dv.setUint32(offset, Number(value), true);
    else if (size === 2) dv.setUint16(offset, Number(value), true);
    else dv.setUint8(offset, Number(value));
  }

  reset(): void {
    this.counts.resets++;
    this.pci.reset();
  }
}
