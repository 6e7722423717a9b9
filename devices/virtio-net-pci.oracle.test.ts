// The real virtio-net-pci device (createVirtioNetPci) against QEMU 7.2's dumps in fixtures/qemu-7.2:
// PCI config space byte for byte (at reset and after the oracle's BAR assignment), the device feature
// windows, the virtio-net config bytes and the common config at reset. QEMU 7.2 has no USO, so the USO
// options are off; the tap had a vnet header, like MemoryBackend's default.
import { describe, expect, it } from 'vitest';
import { GuestMemory } from '../lib/memory/guest-memory.js';
import { MemoryBackend } from '../lib/net/memory-backend.js';
import { assignBars, diff, dump, fixtureBin, fixtureJson } from '../pci/qemu-oracle.test-support.js';
import { InterruptCollector, VirtioPciDriver } from '../virtio/testing/pci-driver.js';
import { createVirtioNetPci } from './virtio-net-pci.js';

interface Fixture {
  device_features: string;
  msix: { table_size: number };
  bars: { bar: number; addr: number; sizing_readback: number }[];
  net_config: { raw: string };
  common_at_reset: Record<string, number>;
  queues: { queue: number; size: number; msix_vector: number; enable: number; notify_off: number }[];
  queue_select_out_of_range: { queue: number; size: number; notify_off: number };
}

const NO_USO = { guest_uso4: false, guest_uso6: false, host_uso: false };

const variants = [
  { name: 'virtio-net-pcie', options: { vectors: 10, ...NO_USO }, queues: 1 },
  {
    name: 'virtio-net-pcie-mq-rss',
    options: { mq: true, rss: true, hash: true, queues: 4, vectors: 10, ...NO_USO },
    queues: 4,
  },
] as const;

function device(options: Record<string, unknown>, queues: number) {
  const memory = new GuestMemory([{ address: 0, bytes: new Uint8Array(0x200000) }]);
  const backend = new MemoryBackend({ queues });
  const dev = createVirtioNetPci({ memory, backend, interrupts: new InterruptCollector(), ...options });
  return { dev, memory };
}

describe('virtio-net-pci config space vs QEMU 7.2', () => {
  for (const v of variants) {
    const fx = fixtureJson<Fixture>(`${v.name}.json`);

    it(`${v.name}: 4 KiB of config space at reset, byte for byte`, () => {
      const { dev } = device(v.options, v.queues);
      expect(diff(dump(dev), fixtureBin(`${v.name}.cfg-reset.bin`))).toEqual([]);
      expect(dev.msixVectors).toBe(fx.msix.table_size);
    });

    it(`${v.name}: after the oracle's BAR assignment, byte for byte (same addresses)`, () => {
      const { dev } = device(v.options, v.queues);
      const bars = assignBars(dev.function, 0xc0000000, 0xc1000000);
      dev.configWrite(4, 2, 0x0006);
      expect(bars.map((b) => [b.bar, b.addr, b.sizing_readback >>> 0])).toEqual(
        fx.bars.map((b) => [b.bar, b.addr, b.sizing_readback >>> 0]),
      );
      expect(diff(dump(dev), fixtureBin(`${v.name}.cfg-assigned.bin`))).toEqual([]);
    });

    it(`${v.name}: device features through the common config = ${fx.device_features}`, () => {
      const { dev, memory } = device(v.options, v.queues);
      const drv = new VirtioPciDriver(dev, memory).probe();
      drv.assignBars();
      expect(`0x${drv.deviceFeatures().toString(16).padStart(16, '0')}`).toBe(fx.device_features);
    });

    it(`${v.name}: virtio-net config (32 bytes read) and common config at reset`, () => {
      const { dev, memory } = device(v.options, v.queues);
      const drv = new VirtioPciDriver(dev, memory).probe();
      drv.assignBars();
      const raw = Array.from({ length: 32 }, (_, i) =>
        drv.readDeviceConfig(i, 1).toString(16).padStart(2, '0'),
      ).join('');
      expect(raw).toBe(fx.net_config.raw);
      const c = fx.common_at_reset;
      expect({
        device_feature_select: drv.readCommon(0, 4),
        driver_feature_select: drv.readCommon(8, 4),
        msix_config: drv.readCommon(0x10, 2),
        num_queues: drv.readCommon(0x12, 2),
        device_status: drv.readCommon(0x14, 1),
        config_generation: drv.readCommon(0x15, 1),
        queue_select: drv.readCommon(0x16, 2),
      }).toEqual(c);
      for (const q of [...fx.queues, { ...fx.queue_select_out_of_range, msix_vector: 0xffff, enable: 0 }]) {
        drv.writeCommon(0x16, 2, q.queue);
        expect({
          queue: q.queue,
          size: drv.readCommon(0x18, 2),
          msix_vector: drv.readCommon(0x1a, 2),
          enable: drv.readCommon(0x1c, 2),
          notify_off: drv.readCommon(0x1e, 2),
        }).toEqual({
          queue: q.queue,
          size: q.size,
          msix_vector: q.msix_vector,
          enable: q.enable,
          notify_off: q.notify_off,
        });
      }
    });
  }

  it('default options (USO on, as QEMU 8.2+ offers; UDP tunnel GSO on, as QEMU 11.1) differ only by those bits', () => {
    const fx = fixtureJson<Fixture>('virtio-net-pcie.json');
    const { dev, memory } = device({ vectors: 10 }, 1);
    const drv = new VirtioPciDriver(dev, memory).probe();
    drv.assignBars();
    const uso = (1n << 54n) | (1n << 55n) | (1n << 56n);
    const tunnel = 0x1en << 64n; // bits 65-68, QEMU 11.1's word 2 over a tap that has them
    expect(drv.deviceFeatures() ^ BigInt(fx.device_features)).toBe(uso | tunnel);
  });

  it('the default vector count is 2 * queues + 2 (QEMU) and the config space otherwise equal', () => {
    const { dev } = device({ ...NO_USO, mq: true, queues: 4 }, 4);
    expect(dev.msixVectors).toBe(10);
    expect(diff(dump(dev), fixtureBin('virtio-net-pcie-mq-rss.cfg-reset.bin'))).toEqual([]);
  });
});
