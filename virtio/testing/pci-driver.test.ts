// The synthetic guest's virtio-pci driver: capability walk on QEMU 7.2's real config space, BAR sizing,
// MSI-X programming and message mapping, negotiation, queue setup, kicks.
import { describe, expect, it } from 'vitest';
import { GuestMemory } from '../../lib/memory/guest-memory.js';
import { fixtureBin, fixtureJson } from '../../pci/qemu-oracle.test-support.js';
import { FakeDevice } from '../fake-device.test-support.js';
import { VirtioPciTransport } from '../pci/virtio-pci.js';
import {
  BarAddressAllocator,
  InterruptCollector,
  MSI_ADDRESS,
  NO_VECTOR,
  type PciTarget,
  VirtioPciDriver,
} from './pci-driver.js';

/** A read-only PciTarget replaying a config-space dump (no BARs). */
function replay(bytes: Uint8Array): PciTarget {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return {
    configRead: (o, s) =>
      s === 1 ? dv.getUint8(o) : s === 2 ? dv.getUint16(o, true) : dv.getUint32(o, true),
    configWrite: () => {},
    barRead: () => 0,
    barWrite: () => {},
  };
}

function setup(opts: { vectors?: number } = {}) {
  const memory = new GuestMemory([{ address: 0, bytes: new Uint8Array(0x200000) }]);
  const irq = new InterruptCollector();
  const device = new FakeDevice();
  const t = new VirtioPciTransport({ device, memory, interrupts: irq, msixVectors: opts.vectors ?? 3 });
  const drv = new VirtioPciDriver(t.function, memory, { interrupts: irq });
  return { memory, irq, device, t, drv };
}

describe('VirtioPciDriver on QEMU 7.2 config space', () => {
  for (const name of ['virtio-net-pcie', 'virtio-net-pcie-mq-rss', 'virtio-net-rootbus']) {
    it(`${name}: finds the virtio capabilities and MSI-X the way the dump decodes them`, () => {
      const j = fixtureJson<{
        virtio_caps: {
          offset: number;
          cfg_type: number;
          bar: number;
          bar_offset: number;
          length: number;
          notify_off_multiplier?: number;
        }[];
        msix: {
          offset: number;
          table_size: number;
          table_bir: number;
          table_offset: number;
          pba_bir: number;
          pba_offset: number;
        };
        header: { device: string; subsys_id: string; revision: number };
      }>(`${name}.json`);
      const drv = new VirtioPciDriver(replay(fixtureBin(`${name}.cfg-reset.bin`)), new GuestMemory([]));
      drv.probe();
      expect(
        drv.caps.map((c) => [c.at, c.cfgType, c.bar, c.offset, c.length, c.notifyOffMultiplier]),
      ).toEqual(
        j.virtio_caps.map((c) => [
          c.offset,
          c.cfg_type,
          c.bar,
          c.bar_offset,
          c.length,
          c.notify_off_multiplier,
        ]),
      );
      expect(drv.msixCap).toBe(j.msix.offset);
      expect(drv.msix).toEqual({
        vectors: j.msix.table_size,
        tableBar: j.msix.table_bir,
        tableOffset: j.msix.table_offset,
        pbaBar: j.msix.pba_bir,
        pbaOffset: j.msix.pba_offset,
      });
      expect(drv.ids()).toMatchObject({
        vendorId: 0x1af4,
        deviceId: Number(j.header.device),
        revision: j.header.revision,
        subsystemId: Number(j.header.subsys_id),
      });
    });
  }

  it('refuses a function without the virtio capabilities', () => {
    const bytes = fixtureBin('virtio-net-pcie.cfg-reset.bin').slice();
    bytes[0x06] = 0; // no capability list
    expect(() => new VirtioPciDriver(replay(bytes), new GuestMemory([])).probe()).toThrow(/missing/);
  });
});

describe('VirtioPciDriver against the transport', () => {
  it('sizes and assigns BARs (64-bit BAR above 4 GiB), enables I/O, memory and bus mastering', () => {
    const { t, drv } = setup();
    drv.probe();
    const bars = drv.assignBars();
    expect(bars).toEqual([
      { index: 1, io: false, is64: false, prefetchable: false, size: 0x1000, address: 0xc0000000n },
      { index: 4, io: false, is64: true, prefetchable: true, size: 0x4000, address: 0x1_0000_0000n },
    ]);
    expect(t.function.barAddress(4)).toBe(0x1_0000_0000n);
    expect(t.function.barAddress(1)).toBe(0xc0000000n);
    expect(t.function.configRead(0x04, 2) & 0x7).toBe(0x7);
  });

  it('reset re-enables a function whose command register the guest cleared (as pci_enable_device)', () => {
    const { t, drv } = setup();
    drv.probe();
    drv.assignBars();
    drv.negotiate(1n << 32n);
    t.function.configWrite(0x04, 2, 0); // memory decoding and bus mastering off: BAR reads are all ones
    expect(drv.status).toBe(0xff);
    drv.reset();
    expect(drv.status).toBe(0);
    expect(t.function.configRead(0x04, 2) & 0x7).toBe(0x7);
    expect(drv.negotiate(1n << 32n)).toBe(1n << 32n);
  });

  it('reset fails with a clear message when the function is gone (config space all ones)', () => {
    const { t, memory } = setup();
    let gone = false;
    const target: PciTarget = {
      configRead: (o, s) => (gone ? 2 ** (8 * s) - 1 : t.function.configRead(o, s)),
      configWrite: (o, s, v) => (gone ? undefined : t.function.configWrite(o, s, v)),
      barRead: (b, o, s) =>
        gone ? (s === 8 ? 2n ** 64n - 1n : 2 ** (8 * s) - 1) : t.function.barRead(b, o, s),
      barWrite: (b, o, s, v) => (gone ? undefined : t.function.barWrite(b, o, s, v)),
    };
    const drv = new VirtioPciDriver(target, memory);
    drv.probe();
    drv.assignBars();
    drv.reset();
    gone = true;
    expect(() => drv.reset()).toThrow(/device_status reads 0xff after reset: the function is gone/);
  });

  it('programs the MSI-X table through BAR1 and maps messages back to vectors', () => {
    const { t, drv, irq } = setup({ vectors: 3 });
    drv.probe();
    drv.assignBars();
    expect(drv.enableMsix()).toBe(3);
    expect(t.msix?.enabled).toBe(true);
    expect(t.msix?.message(2)).toEqual({ address: MSI_ADDRESS, data: irq.dataBase + 2 });
    irq.msi(MSI_ADDRESS, irq.dataBase + 1);
    irq.msi(0x1234n, 5);
    expect(irq.takeVectors()).toEqual([1, -1]);
    expect(irq.takeVectors()).toEqual([]);
    expect(irq.count(1)).toBe(1);
    drv.disableMsix();
    expect(t.msix?.enabled).toBe(false);
  });

  it('negotiate returns offered ∩ wanted, and throws when the device refuses FEATURES_OK', () => {
    const { drv } = setup();
    drv.probe();
    drv.assignBars();
    const offered = drv.deviceFeatures();
    expect(drv.negotiate((1n << 32n) | 1n | (1n << 50n))).toBe((1n << 32n) | 1n);
    expect(drv.status).toBe(0xb);
    expect(offered & (1n << 32n)).toBe(1n << 32n);
    expect(() => drv.negotiate(0b10n | (1n << 32n))).toThrow(/refused/);
  });

  it('setupQueue refuses a nonexistent queue and an unusable vector; resetQueue round-trips', () => {
    const { drv } = setup({ vectors: 2 });
    drv.probe();
    drv.assignBars();
    drv.enableMsix();
    drv.negotiate();
    expect(() => drv.setupQueue(7)).toThrow(/does not exist/);
    expect(() => drv.setupQueue(1, { vector: 5 })).toThrow(/vector/);
    const q = drv.setupQueue(1, { vector: NO_VECTOR, size: 32 });
    expect(q.size).toBe(32);
    expect(drv.notifyOffset(1)).toBe(0x3004);
    drv.resetQueue(1);
    expect(drv.queues.has(1)).toBe(false);
    expect(drv.setupQueue(1, { vector: 1 }).size).toBe(256);
  });

  it('kickIfNeeded follows the ring: kicks for new chains only', () => {
    const { drv, device } = setup();
    drv.initialize(~0n, [0, 1]);
    expect(drv.kickIfNeeded(1)).toBe(false);
    drv.queues.get(1)?.add([new Uint8Array(4)], []);
    expect(drv.kickIfNeeded(1)).toBe(true);
    expect(device.events.filter((e) => e === 'notify 1')).toHaveLength(1);
    expect(drv.kickIfNeeded(1)).toBe(false);
  });

  it('BarAddressAllocator aligns each BAR to its size', () => {
    const a = new BarAddressAllocator(0xc000_0100, 0x1_0000_0000n, 0xc004);
    expect(a.alloc(0x1000, 'mem32')).toBe(0xc0001000n);
    expect(a.alloc(0x4000, 'mem64')).toBe(0x1_0000_0000n);
    expect(a.alloc(0x4000, 'mem64')).toBe(0x1_0000_4000n);
    expect(a.alloc(32, 'io')).toBe(0xc020n);
  });
});
