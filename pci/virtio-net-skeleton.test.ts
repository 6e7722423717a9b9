// QEMU 7.2's virtio-net-pci PCI skeleton built with our API and compared byte for byte with the oracle.
import { describe, expect, it } from 'vitest';
import { Msix } from './msix.js';
import { type BarMapping, PciFunction } from './pci-function.js';
import { PcieCapability } from './pcie-capability.js';
import { PmCapability } from './pm-capability.js';
import {
  assignBars,
  diff,
  dump,
  fixtureBin,
  fixtureJson,
  hex,
  probeBytes,
} from './qemu-oracle.test-support.js';

interface Skeleton {
  fn: PciFunction;
  msix: Msix;
  mappings: BarMapping[];
  msis: [bigint, number][];
}

/**
 * What the transport engineer will build: header, PCIe@0x40, PM@0x7c, virtio vendor caps at
 * 0x84..0xc8 (stand-ins carrying QEMU's bytes), MSI-X@0xdc with table/PBA in BAR1, BAR4 16 KiB.
 */
function build(opts: { pcie: boolean; vectors: number; rom?: boolean }): Skeleton {
  const fn = new PciFunction({
    vendorId: 0x1af4,
    deviceId: 0x1041,
    revision: 1,
    classCode: 0x020000,
    subsystemVendorId: 0x1af4,
    subsystemId: 0x1100,
    interruptPin: 1,
    express: opts.pcie,
    romSize: opts.rom ? 0x40000 : 0,
  });
  const mappings: BarMapping[] = [];
  fn.onBarMappingChange((m) => mappings.push(m));
  if (opts.pcie) {
    new PcieCapability(fn);
    new PmCapability(fn);
  }
  // virtio_pci_cap stand-ins: COMMON, ISR, DEVICE (16 bytes), NOTIFY, PCI_CFG (20 bytes), as QEMU adds them.
  const vcaps: [number, number, number, number][] = [
    [1, 16, 0x0000, 0x1000],
    [3, 16, 0x1000, 0x1000],
    [4, 16, 0x2000, 0x1000],
    [2, 20, 0x3000, 0x1000],
    [5, 20, 0, 0],
  ];
  for (const [type, len, off, length] of vcaps) {
    const o = fn.addCapability(0x09, len);
    fn.config.setU8(o + 2, len);
    fn.config.setU8(o + 3, type);
    fn.config.setU8(o + 4, type === 5 ? 0 : 4);
    fn.config.setU32(o + 8, off);
    fn.config.setU32(o + 12, length);
    if (type === 2) fn.config.setU32(o + 16, 4);
    if (type === 5) {
      fn.config.setWritable(o + 4, 1, 0xff);
      fn.config.setWritable(o + 8, 12, 0xff);
    }
  }
  const bar4 = { read: () => 0, write: () => {} };
  fn.defineBar(4, { size: 0x4000, type: 'mem64', prefetchable: true, handler: bar4 });
  const msis: [bigint, number][] = [];
  const layout = Msix.exclusiveBarLayout(opts.vectors);
  const msix = new Msix(
    fn,
    { vectors: opts.vectors, bar: 1, ...layout },
    { msi: (a, d) => msis.push([a, d]) },
  );
  return { fn, msix, mappings, msis };
}

describe('virtio-net-pci skeleton vs QEMU 7.2 (behind pcie-root-port)', () => {
  it('config space at reset matches byte for byte (4 KiB)', () => {
    const { fn, msix } = build({ pcie: true, vectors: 10 });
    expect(msix.offset).toBe(0xdc);
    expect(diff(dump(fn), fixtureBin('virtio-net-pcie.cfg-reset.bin'))).toEqual([]);
    expect(diff(dump(fn), fixtureBin('virtio-net-pcie-mq-rss.cfg-reset.bin'))).toEqual([]);
    expect(diff(dump(fn), fixtureBin('virtio-net-pcie-dgram.cfg-reset.bin'))).toEqual([]);
  });

  it('capability chain order is the reverse of add order, as QEMU', () => {
    const { fn } = build({ pcie: true, vectors: 4 });
    const chain: number[] = [];
    for (let p = fn.configRead(0x34, 1); p; p = fn.configRead(p + 1, 1)) chain.push(p);
    expect(chain).toEqual([0xdc, 0xc8, 0xb4, 0xa4, 0x94, 0x84, 0x7c, 0x40]);
    expect(fn.findCapability(0x10)).toBe(0x40);
    expect(fn.findCapability(0x01)).toBe(0x7c);
    expect(fn.findCapability(0x11)).toBe(0xdc);
    expect(fn.findCapability(0x05)).toBe(0);
    expect(fn.findExtendedCapability(0x10)).toBe(0);
  });

  it('BAR assignment and Command=0x0006 give the assigned dump, with mapping events', () => {
    const { fn, mappings } = build({ pcie: true, vectors: 10 });
    const bars = assignBars(fn, 0xc0000000, 0xc1000000);
    const ref = fixtureJson<{ bars: Record<string, unknown>[] }>('virtio-net-pcie.json').bars;
    expect(bars.map((b) => [b.bar, b.size, b.addr, b.sizing_readback])).toEqual(
      ref.map((b) => [b.bar, b.size, b.addr, b.sizing_readback]),
    );
    expect(mappings.filter((m) => m.enabled)).toEqual([]);
    fn.configWrite(4, 2, 0x0006);
    expect(diff(dump(fn), fixtureBin('virtio-net-pcie.cfg-assigned.bin'))).toEqual([]);
    expect(mappings).toEqual([
      { bar: 1, address: 0xc0000000n, size: 0x1000, type: 'mem32', enabled: true },
      { bar: 4, address: 0xc1000000n, size: 0x4000, type: 'mem64', enabled: true },
    ]);
    expect(fn.barAddress(4)).toBe(0xc1000000n);
    fn.configWrite(4, 2, 0x0004);
    expect(mappings.slice(2).map((m) => [m.bar, m.enabled])).toEqual([
      [1, false],
      [4, false],
    ]);
    expect(fn.barAddress(1)).toBeNull();
  });

  it('per-byte write behaviour matches the QEMU probe (0x000..0x1ff)', () => {
    const ref = fixtureJson<Record<string, string> & { skipped_probed_with_0x7f: number[] }>(
      'virtio-net-pcie.wmask.json',
    );
    const { fn } = build({ pcie: true, vectors: 4, rom: true });
    expect(diff(dump(fn, 0x200), hex(ref.orig_hex as string))).toEqual([]);
    const { ones, zeros } = probeBytes(fn, 0x200, ref.skipped_probed_with_0x7f);
    expect(diff(ones, hex(ref.after_ff_hex as string))).toEqual([]);
    expect(diff(zeros, hex(ref.after_00_hex as string))).toEqual([]);
    // and the probe left everything as it was
    expect(diff(dump(fn, 0x200), hex(ref.orig_hex as string))).toEqual([]);
  });

  it('dword answers match: BAR sizing, ROM, Command, Status, MSI-X control', () => {
    const ref = fixtureJson<Record<string, string | string[]>>('virtio-net-pcie.wmask.json');
    const { fn, msix } = build({ pcie: true, vectors: 4, rom: true });
    const sizing: string[] = [];
    for (let i = 0; i < 6; i++) {
      const off = 0x10 + 4 * i;
      const orig = fn.configRead(off, 4);
      fn.configWrite(off, 4, 0xffffffff);
      sizing.push(`0x${fn.configRead(off, 4).toString(16).padStart(8, '0')}`);
      fn.configWrite(off, 4, orig);
    }
    expect(sizing).toEqual(ref.bar_sizing_readback);
    const h = (v: number, w: number) => `0x${v.toString(16).padStart(w, '0')}`;
    fn.configWrite(0x30, 4, 0xffffffff);
    expect(h(fn.configRead(0x30, 4), 8)).toBe(ref.rom_bar_after_ones);
    fn.configWrite(0x30, 4, 0);
    fn.configWrite(4, 2, 0xffff);
    expect(h(fn.configRead(4, 2), 4)).toBe(ref.command_after_ffff);
    fn.configWrite(4, 2, 0);
    fn.configWrite(6, 2, 0xffff);
    expect(h(fn.configRead(6, 2), 4)).toBe(ref.status_after_ffff);
    fn.configWrite(msix.offset + 2, 2, 0xffff);
    expect(h(fn.configRead(msix.offset + 2, 2), 4)).toBe(ref.msix_msgctl_after_ffff);
    fn.configWrite(msix.offset + 2, 2, 0);
    expect(h(fn.configRead(msix.offset + 2, 2), 4)).toBe(ref.msix_msgctl_after_0000);
  });

  it('FLR (Initiate FLR in Device Control) resets what QEMU resets, and keeps the rest', () => {
    const ref = fixtureJson<{ flr: { before: string; after: string; devctl_after: string } }>(
      'virtio-net-pcie.wmask.json',
    ).flr;
    const { fn, msix, mappings } = build({ pcie: true, vectors: 4, rom: true });
    let resets = 0;
    fn.onReset(() => resets++);
    assignBars(fn, 0xc0000000, 0xc1000000);
    fn.configWrite(4, 2, 0x0406);
    fn.configWrite(0x3c, 1, 0x0b);
    fn.configWrite(0x0c, 1, 0x10);
    fn.configWrite(0x48, 2, 0x000f);
    fn.configWrite(0x50, 2, 0x00c0);
    fn.configWrite(0x68, 2, 0x8000);
    fn.configWrite(0x80, 2, 0x0003);
    fn.configWrite(0xde, 2, 0xc000);
    expect(msix.enabled).toBe(true);
    expect(diff(dump(fn, 256), hex(ref.before))).toEqual([]);
    const enabledBefore = mappings.filter((m) => m.enabled).length;
    fn.configWrite(0x48, 2, fn.configRead(0x48, 2) | 0x8000);
    expect(diff(dump(fn, 256), hex(ref.after))).toEqual([]);
    expect(fn.configRead(0x48, 2)).toBe(Number.parseInt(ref.devctl_after, 16));
    expect(resets).toBe(1);
    expect(msix.enabled).toBe(false);
    expect(enabledBefore).toBe(2);
    expect(mappings.slice(-2).map((m) => m.enabled)).toEqual([false, false]);
  });
});

describe('virtio-net-pci skeleton vs QEMU 7.2 (root bus, conventional PCI)', () => {
  it('config space matches byte for byte, 256 bytes then all-ones', () => {
    const { fn, msix } = build({ pcie: false, vectors: 10 });
    expect(msix.offset).toBe(0x98);
    expect(fn.config.size).toBe(256);
    expect(diff(dump(fn), fixtureBin('virtio-net-rootbus.cfg-reset.bin'))).toEqual([]);
    assignBars(fn, 0xc0000000, 0xc1000000);
    fn.configWrite(4, 2, 0x0006);
    expect(diff(dump(fn), fixtureBin('virtio-net-rootbus.cfg-assigned.bin'))).toEqual([]);
  });

  it('per-byte write behaviour matches the QEMU probe', () => {
    const ref = fixtureJson<Record<string, string> & { skipped_probed_with_0x7f: number[] }>(
      'virtio-net-rootbus.wmask.json',
    );
    const { fn } = build({ pcie: false, vectors: 4, rom: true });
    const { ones, zeros } = probeBytes(fn, 0x100, ref.skipped_probed_with_0x7f);
    expect(diff(ones, hex(ref.after_ff_hex as string))).toEqual([]);
    expect(diff(zeros, hex(ref.after_00_hex as string))).toEqual([]);
  });
});
