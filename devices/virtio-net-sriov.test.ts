/**
 * SR-IOV through the public object: the guest enables VFs in the PF's SR-IOV capability and each VF is a
 * virtio-net function of its own (own MAC, own backend, own queues), reachable through `dev.vfs`.
 */
import { describe, expect, it } from 'vitest';
import { GuestMemory } from '../lib/memory/guest-memory.js';
import { MemoryBackend } from '../lib/net/memory-backend.js';
import {
  PCI_EXT_CAP_ID_SRIOV,
  PCI_SRIOV_BAR,
  PCI_SRIOV_CTRL,
  PCI_SRIOV_NUM_VF,
  PCI_SRIOV_TOTAL_VF,
  PCI_SRIOV_VF_DID,
  PCI_SRIOV_VF_OFFSET,
  PCI_SRIOV_VF_STRIDE,
} from '../pci/sriov.js';
import { InterruptCollector } from '../virtio/testing/pci-driver.js';
import { arp } from './testing/frames.js';
import { VirtioNetDriver } from './testing/net-driver.js';
import { createVirtioNetPci, vfMac } from './virtio-net-pci.js';

function findExtCap(dev: { configRead(o: number, s: 1 | 2 | 4): number }, id: number): number {
  for (let off = 0x100, n = 0; off && n < 64; n++) {
    const h = dev.configRead(off, 4);
    if ((h & 0xffff) === id) return off;
    off = h >>> 20;
  }
  return 0;
}

function setup(totalVfs = 4) {
  const memory = new GuestMemory([{ address: 0, bytes: new Uint8Array(256 << 20) }]);
  const irq = new InterruptCollector();
  const vfBackends: MemoryBackend[] = [];
  const dev = createVirtioNetPci({
    memory,
    backend: new MemoryBackend(),
    interrupts: irq,
    sriov: {
      totalVfs,
      vfBackend: (i) => {
        const b = new MemoryBackend();
        vfBackends[i] = b;
        return b;
      },
    },
  });
  return { memory, irq, dev, vfBackends };
}

describe('SR-IOV virtio-net PF', () => {
  it('has an SR-IOV capability with TotalVFs, VF device ID, offset/stride, and offers VIRTIO_F_SR_IOV', () => {
    const { dev, memory } = setup(4);
    const sr = findExtCap(dev, PCI_EXT_CAP_ID_SRIOV);
    expect(sr).toBe(0x100);
    expect(dev.configRead(sr + PCI_SRIOV_TOTAL_VF, 2)).toBe(4);
    expect(dev.configRead(sr + PCI_SRIOV_VF_DID, 2)).toBe(0x1041);
    expect(dev.configRead(sr + PCI_SRIOV_VF_OFFSET, 2)).toBe(1);
    expect(dev.configRead(sr + PCI_SRIOV_VF_STRIDE, 2)).toBe(1);
    const drv = new VirtioNetDriver(dev, memory);
    drv.pci.probe();
    expect((drv.pci.deviceFeatures() >> 37n) & 1n).toBe(1n);
    expect(dev.vfs).toHaveLength(0);
  });

  it('creates NumVFs virtio-net VFs on VF Enable, each with its own MAC and backend, and removes them', () => {
    const { dev, memory, irq, vfBackends } = setup(4);
    const sr = findExtCap(dev, PCI_EXT_CAP_ID_SRIOV);
    dev.configWrite(sr + PCI_SRIOV_NUM_VF, 2, 2);
    // VF BAR1 (MSI-X, 32-bit) and VF BAR4 (64-bit prefetchable): base addresses for VF 0; VF i at base + i * size.
    dev.configWrite(sr + PCI_SRIOV_BAR + 4 * 1, 4, 0xd000_0000);
    dev.configWrite(sr + PCI_SRIOV_BAR + 4 * 4, 4, 0x0000_0000);
    dev.configWrite(sr + PCI_SRIOV_BAR + 4 * 5, 4, 0x2);
    dev.configWrite(sr + PCI_SRIOV_CTRL, 2, 0x1 | 0x8); // VF Enable + VF MSE
    expect(dev.vfs).toHaveLength(2);
    const vf1 = dev.vfs[1]!;
    expect(vf1.configRead(0, 4)).toBe(0xffffffff); // VF Vendor/Device read all-ones
    expect(vf1.function.routingId).toBe(dev.function.routingId + 2);
    expect(vf1.function.barAddress(4)).toBe(0x2_0000_0000n + 0x4000n);
    expect(vf1.function.barAddress(1)).toBe(0xd000_1000n);

    // Bring VF 1 up like Linux's virtio_net on a VF, and exchange a frame with its own backend.
    const drv = new VirtioNetDriver(vf1, memory, { interrupts: irq, allocator: undefined });
    drv.open();
    expect(drv.mac()).toBe(vfMac('52:54:00:12:34:56', 1));
    const seen: Uint8Array[] = [];
    vfBackends[1]!.onFrame((f) => seen.push(f));
    drv.send(arp(1, drv.mac(), '10.0.0.9', '00:00:00:00:00:00', '10.0.0.1'));
    expect(seen).toHaveLength(1);
    expect(vfBackends[0]!.stats().transmitted).toBe(0);
    vfBackends[1]!.inject(arp(2, '02:00:00:00:00:01', '10.0.0.1', drv.mac(), '10.0.0.9'));
    expect(drv.receive(0)).toHaveLength(1);
    expect((dev.stats().vfs as { txPackets: number }[])[1]!.txPackets).toBe(1);

    dev.configWrite(sr + PCI_SRIOV_CTRL, 2, 0);
    expect(dev.vfs).toHaveLength(0);
    expect(vfBackends[1]!.stats().transmitted).toBe(1);
  });

  it('carries ARI on the PF (after SR-IOV, at the slot QEMU 11.1 links to) and on every VF (as QEMU 11.1)', () => {
    const { dev } = setup(4);
    expect(dev.configRead(0x100, 4) >>> 20).toBe(0x140); // SR-IOV's Next: ARI
    expect(dev.configRead(0x140, 4)).toBe(0x0001_000e); // ARI v1, end of the list
    expect(dev.configRead(0x144, 2)).toBe(0); // Next Function Number 0: the only PF
    dev.configWrite(0x100 + PCI_SRIOV_NUM_VF, 2, 2);
    dev.configWrite(0x100 + PCI_SRIOV_CTRL, 2, 0x1 | 0x10); // VF Enable + ARI Capable Hierarchy
    const ref = [0x0e, 0x00, 0x01, 0x00, 0, 0, 0, 0]; // fixtures/qemu-11.1/virtio-net-sriov.txt, VF 0x100
    for (const vf of dev.vfs)
      expect(Array.from({ length: 8 }, (_, i) => vf.configRead(0x100 + i, 1))).toEqual(ref);
  });

  it('reaches VFs beyond function 7 with ARI: 255 VFs (every routing ID of the bus) enable and answer', () => {
    const { dev } = setup(255);
    expect(dev.configRead(0x100 + PCI_SRIOV_TOTAL_VF, 2)).toBe(255);
    dev.configWrite(0x100 + PCI_SRIOV_NUM_VF, 2, 255);
    dev.configWrite(0x100 + PCI_SRIOV_CTRL, 2, 0x1 | 0x10);
    expect(dev.vfs).toHaveLength(255);
    expect(dev.vfs.map((vf) => vf.function.routingId & 0xff)).toEqual(
      Array.from({ length: 255 }, (_, i) => i + 1),
    );
    expect(dev.vfs[254]!.configRead(0x100, 2)).toBe(0x000e);
    expect(dev.vfs[254]!.configRead(2, 2)).toBe(0xffff); // a VF's Device ID reads all-ones (SR-IOV)
    dev.configWrite(0x100 + PCI_SRIOV_CTRL, 2, 0);
    expect(dev.vfs).toHaveLength(0);
  });

  it('ignores VF Enable with NumVFs above TotalVFs, as QEMU does', () => {
    const { dev } = setup(2);
    const sr = findExtCap(dev, PCI_EXT_CAP_ID_SRIOV);
    dev.configWrite(sr + PCI_SRIOV_NUM_VF, 2, 3);
    dev.configWrite(sr + PCI_SRIOV_CTRL, 2, 0x9);
    expect(dev.vfs).toHaveLength(0);
  });

  it('rejects SR-IOV on a conventional PCI bus with a named option error', () => {
    const memory = new GuestMemory([{ address: 0, bytes: new Uint8Array(4096) }]);
    expect(() =>
      createVirtioNetPci({
        memory,
        backend: new MemoryBackend(),
        interrupts: { msi() {} },
        bus: 'pci',
        sriov: { totalVfs: 1 },
      }),
    ).toThrow(/option "sriov"/);
  });
});
