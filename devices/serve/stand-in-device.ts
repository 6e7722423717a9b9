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
 */

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

const BAR_SIZES = [0x1000, 0x1000, 0x4000, 0, 0, 0];

export interface StandInOptions {
  memory: StandInMemory;
  msixVectors?: number;
}

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
  readonly config = new Uint8Array(4096);
  readonly #wmask = new Uint8Array(4096);
  readonly #initial: Uint8Array;
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
    const c = this.config;
    const dv = new DataView(c.buffer);
    dv.setUint16(0x00, STAND_IN_VENDOR, true);
    dv.setUint16(0x02, STAND_IN_DEVICE, true);
    dv.setUint16(0x06, 0x0010, true); // status: capability list
    c[0x08] = 1; // revision
    c.set([0x00, 0x00, 0xff], 0x09); // class ff0000
    dv.setUint32(0x10, 0x0, true); // BAR0 mem32
    dv.setUint32(0x14, 0x0, true); // BAR1 mem32
    dv.setUint32(0x18, 0xc, true); // BAR2 mem64 prefetchable
    dv.setUint16(0x2c, STAND_IN_VENDOR, true);
    dv.setUint16(0x2e, 0x1100, true);
    c[0x34] = 0x40;
    c[0x3d] = 1; // INTA
    // PCIe capability v2, endpoint.
    c.set([0x10, 0x80, 0x02, 0x00], 0x40);
    dv.setUint32(0x44, 0x10008000, true); // devcap: FLR
    dv.setUint32(0x4c, 0x00000011, true); // lnkcap 2.5 GT/s x1
    dv.setUint16(0x52, 0x0011, true); // lnksta
    // MSI-X: next 0, table size N-1, table BAR1+0, PBA BAR1+0x800.
    c.set([0x11, 0x00], 0x80);
    dv.setUint16(0x82, Math.max(0, this.msixVectors - 1), true);
    dv.setUint32(0x84, 0x000 | 1, true);
    dv.setUint32(0x88, 0x800 | 1, true);
    // Vendor-specific extended capability at 0x100: id 0x000b, version 1, next 0; header: id 0x7e57 rev 1 len 0x18.
    dv.setUint32(0x100, 0x000b | (1 << 16), true);
    dv.setUint32(0x104, 0x7e57 | (1 << 16) | (0x18 << 20), true);
    dv.setUint32(StandInReg.MAGIC, STAND_IN_MAGIC, true);
    // Writable bits: command, cache line, latency, interrupt line, BARs (size-aligned), MSI-X control, regs.
    const m = this.#wmask;
    m.set([0x07, 0x05], 0x04);
    m[0x0c] = 0xff;
    m[0x0d] = 0xff;
    m[0x3c] = 0xff;
    for (let i = 0; i < 3; i++) {
      const bar = BAR_SIZES[i] as number;
      new DataView(m.buffer).setUint32(0x10 + 4 * i, ~(bar - 1) & ~0xf, true);
    }
    new DataView(m.buffer).setUint32(0x1c, 0xffffffff, true); // BAR3 = upper half of BAR2
    m.set([0x00, 0xc0], 0x82); // MSI-X enable, function mask
    new DataView(m.buffer).setUint32(StandInReg.DOORBELL, 0xffffffff, true);
    new DataView(m.buffer).setUint32(StandInReg.SCRATCH, 0xffffffff, true);
    this.#initial = c.slice();
    const b0 = new DataView(this.barMemory[0]!.buffer);
    b0.setUint32(0, STAND_IN_BAR_MAGIC, true);
  }

  setInterruptSink(sink: { vector(n: number): void; intx?(asserted: boolean): void }): void {
    this.sink = sink;
  }

  configRead(offset: number, size: 1 | 2 | 4): number {
    this.counts.configReads++;
    let v = 0;
    for (let i = size - 1; i >= 0; i--) v = v * 256 + (this.config[offset + i] ?? 0xff);
    return v;
  }

  configWrite(offset: number, size: 1 | 2 | 4, value: number): void {
    this.counts.configWrites++;
    for (let i = 0; i < size; i++) {
      const o = offset + i;
      if (o >= 4096) break;
      const mk = this.#wmask[o] as number;
      const b = (value >>> (8 * i)) & 0xff;
      this.config[o] = ((this.config[o] as number) & ~mk) | (b & mk);
    }
    if (offset <= StandInReg.DOORBELL && StandInReg.DOORBELL < offset + size) this.#doorbell();
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
    this.config.set(this.#initial);
  }
}
