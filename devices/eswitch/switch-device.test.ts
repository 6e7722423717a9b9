/**
 * The embedded switch through the public object: a synthetic guest enables VFs in the PF's SR-IOV
 * capability, brings the PF and each VF up with its own virtio-net driver, and the functions talk through
 * the switch (and the uplink, a MemoryBackend). Per-VF policy comes from the VMM (`setVf`).
 */
import { describe, expect, it } from 'vitest';
import { GuestMemory } from '../../lib/memory/guest-memory.js';
import { MemoryBackend } from '../../lib/net/memory-backend.js';
import { PCI_SRIOV_BAR, PCI_SRIOV_CTRL, PCI_SRIOV_NUM_VF } from '../../pci/sriov.js';
import { BumpAllocator } from '../../virtio/testing/bump-allocator.js';
import { InterruptCollector } from '../../virtio/testing/pci-driver.js';
import { ethernet, ipv4, tcp4 } from '../testing/frames.js';
import { LINUX_6_1_FEATURES, VirtioNetDriver } from '../testing/net-driver.js';
import { NetF } from '../virtio-net/features.js';
import { RxMode } from '../virtio-net/rx-filter.js';
import { createVirtioNetPci, type VirtioNetPci } from '../virtio-net-pci.js';

const PF_MAC = '52:54:00:12:34:56';
const OUT = '02:00:00:00:00:99';
const BCAST = 'ff:ff:ff:ff:ff:ff';
const SR = 0x100;
const VIRTIO_NET_ERR = 1;
const VIRTIO_NET_OK = 0;
const bit = (b: number) => 1n << BigInt(b);
/** Each driver's own slice of guest RAM for rings and buffers. */
const SLICE = 24 << 20;

interface Rig {
  memory: GuestMemory;
  dev: VirtioNetPci;
  uplink: MemoryBackend;
  toUplink: Uint8Array[];
  pf: VirtioNetDriver;
  vfs: VirtioNetDriver[];
}

function rig(
  numVfs: number,
  o: { totalVfs?: number; open?: number[]; wanted?: (i: number) => bigint; memoryMiB?: number } = {},
): Rig {
  const opened = o.open ?? Array.from({ length: numVfs }, (_, i) => i);
  const memory = new GuestMemory([
    { address: 0, bytes: new Uint8Array((o.memoryMiB ?? 32 + 24 * (opened.length + 1)) << 20) },
  ]);
  const irq = new InterruptCollector();
  const uplink = new MemoryBackend({ receive: 'copy' });
  const toUplink: Uint8Array[] = [];
  uplink.onFrame((f) => toUplink.push(f.slice()));
  const dev = createVirtioNetPci({
    memory,
    backend: uplink,
    interrupts: irq,
    mac: PF_MAC,
    sriov: { totalVfs: o.totalVfs ?? Math.max(numVfs, 1) },
  });
  const driver = (target: VirtioNetPci, slot: number, wanted?: bigint) =>
    new VirtioNetDriver(target, memory, {
      interrupts: irq,
      allocator: new BumpAllocator(0x100000 + slot * SLICE, 0x100000 + (slot + 1) * SLICE),
      rxBuffers: 64,
      ...(wanted !== undefined ? { wanted } : {}),
    });
  const pf = driver(dev, 0);
  pf.open();
  dev.configWrite(SR + PCI_SRIOV_NUM_VF, 2, numVfs);
  dev.configWrite(SR + PCI_SRIOV_BAR + 4 * 1, 4, 0xd000_0000);
  dev.configWrite(SR + PCI_SRIOV_BAR + 4 * 4, 4, 0);
  dev.configWrite(SR + PCI_SRIOV_BAR + 4 * 5, 4, 0x2);
  dev.configWrite(SR + PCI_SRIOV_CTRL, 2, 0x1 | 0x8 | 0x10); // VF Enable, VF MSE, ARI Capable Hierarchy
  const vfs: VirtioNetDriver[] = [];
  opened.forEach((i, slot) => {
    const d = driver(dev.vfs[i]!, slot + 1, o.wanted?.(i));
    d.open();
    vfs[i] = d;
  });
  return { memory, dev, uplink, toUplink, pf, vfs };
}

const udp = (dst: string, src: string, size = 100) =>
  ethernet(dst, src, 0x0800, ipv4('10.0.0.1', '10.0.0.2', 17, new Uint8Array(size)));
const payloads = (d: VirtioNetDriver) => d.receive(0).map((r) => r.frame);
const sw = (dev: VirtioNetPci) => dev.stats().switch!;

describe('embedded switch with the synthetic guest', () => {
  for (const n of [1, 4]) {
    it(`${n} VF(s): VF↔PF and VF↔uplink unicast${n > 1 ? ', VF↔VF' : ''}, each with its own MAC`, () => {
      const { dev, pf, vfs, uplink, toUplink } = rig(n);
      const macs = vfs.map((d) => d.mac());
      expect(new Set(macs).size).toBe(n);
      for (const [i, d] of vfs.entries()) {
        d.send(udp(pf.mac(), macs[i]!));
        expect(payloads(pf)).toEqual([udp(pf.mac(), macs[i]!)]);
        pf.send(udp(macs[i]!, pf.mac()));
        expect(payloads(d)).toEqual([udp(macs[i]!, pf.mac())]);
        d.send(udp(OUT, macs[i]!));
        uplink.inject(udp(macs[i]!, OUT, 200));
        expect(payloads(d)).toEqual([udp(macs[i]!, OUT, 200)]);
      }
      expect(toUplink).toEqual(macs.map((m) => udp(OUT, m)));
      if (n > 1) {
        vfs[0]!.send(udp(macs[n - 1]!, macs[0]!, 300));
        expect(payloads(vfs[n - 1]!)).toEqual([udp(macs[n - 1]!, macs[0]!, 300)]);
        expect(toUplink).toHaveLength(n);
      }
      const s = sw(dev);
      expect(s.vfs).toHaveLength(n);
      expect(s.vfs[0]!.txFrames).toBe(n > 1 ? 3 : 2);
      expect(s.uplink.rxFrames).toBe(n);
      expect(s.uplink.txFrames).toBe(n);
      // Nothing leaked past the PF's own counters: it got one frame from each VF.
      expect(dev.stats().rxPackets).toBe(n);
    });
  }

  it('the maximum number of VFs (255): the first and the last exchange frames through the switch', () => {
    const { dev, vfs } = rig(255, { open: [0, 254], memoryMiB: 128 });
    expect(dev.vfs).toHaveLength(255);
    const [a, z] = [vfs[0]!, vfs[254]!];
    a.send(udp(z.mac(), a.mac()));
    expect(payloads(z)).toEqual([udp(z.mac(), a.mac())]);
    z.send(udp(a.mac(), z.mac()));
    expect(payloads(a)).toEqual([udp(a.mac(), z.mac())]);
    expect(sw(dev).vfs).toHaveLength(255);
  });

  it("floods broadcast and multicast by each function's own filter, never back to the sender; unknown unicast to the uplink", () => {
    const { dev, pf, vfs, toUplink } = rig(3);
    const [a, b, c] = vfs as [VirtioNetDriver, VirtioNetDriver, VirtioNetDriver];
    expect(c.rxMode(RxMode.NOBCAST, true)).toBe(VIRTIO_NET_OK);
    expect(b.setMacTable([], ['01:00:5e:00:00:fb'])).toBe(VIRTIO_NET_OK);
    a.send(udp(BCAST, a.mac()));
    expect(payloads(a)).toHaveLength(0);
    expect(payloads(b)).toHaveLength(1);
    expect(payloads(c)).toHaveLength(0);
    expect(payloads(pf)).toHaveLength(1);
    a.send(udp('01:00:5e:00:00:fb', a.mac()));
    expect(payloads(b)).toHaveLength(1);
    expect(payloads(c)).toHaveLength(0);
    expect(payloads(pf)).toHaveLength(0);
    expect(toUplink).toHaveLength(2);
    const s = sw(dev);
    expect(s.vfs[2]!.dropFilter).toBe(2); // NOBCAST, and no multicast subscribed
    expect(s.pf.dropFilter).toBe(1);
    a.send(udp('02:12:34:56:78:9a', a.mac()));
    expect(toUplink).toHaveLength(3);
    expect(payloads(pf)).toHaveLength(0);
  });

  it('GSO between VFs: as GSO to a receiver that negotiated TSO, segmented in software for one that did not', () => {
    const guestOffloads = [
      NetF.GUEST_CSUM,
      NetF.GUEST_TSO4,
      NetF.GUEST_TSO6,
      NetF.GUEST_ECN,
      NetF.GUEST_UFO,
      54, // GUEST_USO4
      55, // GUEST_USO6
    ];
    const noOffloads = guestOffloads.reduce((f, b) => f & ~bit(b), LINUX_6_1_FEATURES);
    const { vfs } = rig(3, { wanted: (i) => (i === 2 ? noOffloads : LINUX_6_1_FEATURES) });
    const [a, b, c] = vfs as [VirtioNetDriver, VirtioNetDriver, VirtioNetDriver];
    const data = Uint8Array.from({ length: 4000 }, (_, i) => (i * 7) & 0xff);
    const big = (dst: string) =>
      ethernet(dst, a.mac(), 0x0800, tcp4('10.0.0.1', '10.0.0.2', 40000, 5001, 1, 0x18, data));
    const gso = { flags: 1, gsoType: 1, hdrLen: 54, gsoSize: 1448, csumStart: 34, csumOffset: 16 };
    a.send(big(b.mac()), { offload: gso });
    const atB = b.receive(0);
    expect(atB).toHaveLength(1);
    expect(atB[0]!.frame.length).toBe(54 + 4000);
    expect(atB[0]!.offload.gsoType).toBe(1);
    expect(atB[0]!.offload.gsoSize).toBe(1448);
    a.send(big(c.mac()), { offload: gso });
    const atC = c.receive(0);
    expect(atC.map((r) => r.frame.length)).toEqual([54 + 1448, 54 + 1448, 54 + 1104]);
    expect(atC.every((r) => r.offload.gsoType === 0)).toBe(true);
    const joined = new Uint8Array(atC.reduce((n, r) => n + r.frame.length - 54, 0));
    let at = 0;
    for (const r of atC) {
      joined.set(r.frame.subarray(54), at);
      at += r.frame.length - 54;
    }
    expect(joined).toEqual(data);
  });

  it('spoof check (on by default) drops and counts frames with another source MAC; off lets them through', () => {
    const { dev, vfs } = rig(2);
    const [a, b] = vfs as [VirtioNetDriver, VirtioNetDriver];
    a.send(udp(b.mac(), '02:66:66:66:66:66'));
    expect(payloads(b)).toHaveLength(0);
    expect(sw(dev).vfs[0]!.dropSpoof).toBe(1);
    expect(dev.stats().vfs[0]!.txDropped).toBe(1);
    dev.setVf(0, { spoofCheck: false });
    a.send(udp(b.mac(), '02:66:66:66:66:66'));
    expect(payloads(b)).toHaveLength(1);
    expect(dev.vfInfo(0).spoofCheck).toBe(false);
  });

  it('trust: an untrusted VF may not change its MAC nor go promiscuous; trusted it may', () => {
    const { dev, vfs, pf } = rig(1);
    const a = vfs[0]!;
    const mine = a.mac();
    expect(a.setMac('02:aa:bb:cc:dd:ee')).toBe(VIRTIO_NET_ERR);
    expect(a.setMac(mine)).toBe(VIRTIO_NET_OK); // its own address is fine
    expect(a.rxMode(RxMode.PROMISC, true)).toBe(VIRTIO_NET_ERR);
    expect(a.rxMode(RxMode.ALLMULTI, true)).toBe(VIRTIO_NET_ERR);
    expect(a.rxMode(RxMode.PROMISC, false)).toBe(VIRTIO_NET_OK);
    dev.setVf(0, { trust: true });
    expect(a.setMac('02:aa:bb:cc:dd:ee')).toBe(VIRTIO_NET_OK);
    expect(a.rxMode(RxMode.PROMISC, true)).toBe(VIRTIO_NET_OK);
    // The switch follows the new MAC: frames for it reach the VF.
    pf.send(udp('02:aa:bb:cc:dd:ee', pf.mac()));
    expect(payloads(a)).toEqual([udp('02:aa:bb:cc:dd:ee', pf.mac())]);
  });

  it('an assigned MAC is what the VF config space shows, before and while the VF is enabled', () => {
    const memory = new GuestMemory([{ address: 0, bytes: new Uint8Array(96 << 20) }]);
    const dev = createVirtioNetPci({
      memory,
      backend: new MemoryBackend(),
      interrupts: new InterruptCollector(),
      sriov: { totalVfs: 2 },
    });
    dev.setVf(1, { mac: '02:00:00:00:01:01' });
    expect(dev.vfInfo(1)).toMatchObject({ mac: '02:00:00:00:01:01', spoofCheck: true, trust: false });
    dev.configWrite(SR + PCI_SRIOV_NUM_VF, 2, 2);
    dev.configWrite(SR + PCI_SRIOV_CTRL, 2, 0x9);
    const d = new VirtioNetDriver(dev.vfs[1]!, memory, { allocator: new BumpAllocator(0x100000, 0x3000000) });
    d.open();
    expect(d.mac()).toBe('02:00:00:00:01:01');
    dev.setVf(1, { mac: '02:00:00:00:01:02' });
    expect(d.mac()).toBe('02:00:00:00:01:02');
    expect(() => dev.setVf(2, { trust: true })).toThrow(/VF index 2 out of range \(0..1\)/);
    expect(() => dev.setVf(0, { vlan: 5000 })).toThrow(/field "vlan"/);
  });

  it('VST: the VF transmits untagged and the uplink sees its VLAN tag; tagged receive is stripped, other VLANs filtered', () => {
    const { dev, vfs, uplink, toUplink } = rig(2);
    const [a, b] = vfs as [VirtioNetDriver, VirtioNetDriver];
    dev.setVf(0, { vlan: 42, qos: 3 });
    a.send(udp(OUT, a.mac()));
    const out = toUplink[0]!;
    expect(Array.from(out.subarray(12, 16))).toEqual([0x81, 0x00, (3 << 5) | 0, 42]);
    expect(out.subarray(16)).toEqual(udp(OUT, a.mac()).subarray(12));
    const tagged = (vid: number, f = udp(a.mac(), OUT)) => {
      const t = new Uint8Array(f.length + 4);
      t.set(f.subarray(0, 12));
      t.set([0x81, 0, 0, vid], 12);
      t.set(f.subarray(12), 16);
      return t;
    };
    uplink.inject(tagged(42));
    uplink.inject(tagged(43));
    uplink.inject(udp(a.mac(), OUT));
    expect(payloads(a)).toEqual([udp(a.mac(), OUT)]);
    expect(sw(dev).vfs[0]!.dropVlan).toBe(0); // other VLANs are simply not the VST port's traffic
    expect(sw(dev).uplink.dropNoOwner).toBe(2); // VLAN 43 and untagged: nobody owns them there
    // A VLAN-tagged frame from the guest of a VST VF is dropped and counted.
    a.send(tagged(7, udp(b.mac(), a.mac())));
    expect(b.receive(0)).toHaveLength(0);
    expect(sw(dev).vfs[0]!.dropVlan).toBe(1);
  });

  it('link state: disable takes the VF link down (status bit) and drops; enable and auto bring it back', () => {
    const { dev, vfs, uplink } = rig(2);
    const [a, b] = vfs as [VirtioNetDriver, VirtioNetDriver];
    expect(a.linkUp()).toBe(true);
    dev.setVf(0, { linkState: 'disable' });
    expect(a.linkUp()).toBe(false);
    b.send(udp(a.mac(), b.mac()));
    expect(payloads(a)).toHaveLength(0);
    expect(sw(dev).vfs[0]!.dropLinkDown).toBe(1);
    dev.setVf(0, { linkState: 'auto' });
    expect(a.linkUp()).toBe(true);
    // auto follows the uplink's carrier; enable does not.
    dev.setVf(1, { linkState: 'enable' });
    uplink.setLinkUp(false);
    expect(a.linkUp()).toBe(false);
    expect(b.linkUp()).toBe(true);
    uplink.setLinkUp(true);
    expect(a.linkUp()).toBe(true);
    expect(dev.vfInfo(0).linkState).toBe('auto');
  });

  it('rate limit: the VF transmits at the set rate (within 10 %), over-rate frames wait in its ring, none dropped', async () => {
    const { dev, vfs, toUplink } = rig(1);
    const a = vfs[0]!;
    const mbps = 40;
    dev.setVf(0, { maxTxRateMbps: mbps });
    const frame = udp(OUT, a.mac(), 1458); // 1500 bytes
    const frames = 1000; // 1.5 MB: 0.3 s at 40 Mbit/s
    let sent = 0;
    let firstLimited = -1;
    let bytesAtLimit = 0;
    const t0 = performance.now();
    while (toUplink.length < frames) {
      while (sent < frames && sent - toUplink.length < 200) {
        a.send(frame, { kick: false });
        sent++;
      }
      a.kickTx(0);
      if (firstLimited < 0 && sw(dev).vfs[0]!.txRateLimited > 0) {
        firstLimited = performance.now();
        bytesAtLimit = toUplink.length * frame.length;
      }
      await new Promise((r) => setTimeout(r, 2));
      if (performance.now() - t0 > 20_000) break;
    }
    const elapsed = (performance.now() - firstLimited) / 1000;
    const rate = ((toUplink.length * frame.length - bytesAtLimit) * 8) / elapsed / 1e6;
    expect(toUplink).toHaveLength(frames);
    expect(dev.stats().vfs[0]!.txDropped).toBe(0);
    expect(rate).toBeGreaterThan(mbps * 0.9);
    expect(rate).toBeLessThan(mbps * 1.1);
  });

  it('VF Enable cleared and PF FLR mid-traffic: every frame the switch took is delivered or counted', () => {
    for (const how of ['vf-enable', 'flr'] as const) {
      const { dev, vfs } = rig(2);
      const [a, b] = vfs as [VirtioNetDriver, VirtioNetDriver];
      const vfB = dev.vfs[1]!;
      // More frames than b has buffers: some delivered, some in b's backlog, some dropped.
      for (let i = 0; i < 400; i++) {
        a.send(udp(b.mac(), a.mac(), 60 + (i % 50)), { kick: false });
        if (i % 100 === 99) a.kickTx(0);
      }
      const before = sw(dev).vfs;
      if (how === 'vf-enable') dev.configWrite(SR + PCI_SRIOV_CTRL, 2, 0);
      else dev.function.reset(); // PF FLR
      expect(dev.vfs).toHaveLength(0);
      const portB = before[1]!;
      const stB = vfB.stats();
      // Everything the switch handed b's port was delivered to the guest, dropped by the device (backlog
      // full, reset) or dropped by the switch (no buffer): nothing vanished.
      expect(portB.rxFrames + portB.dropNoBuffer + portB.dropLinkDown).toBe(before[0]!.txFrames);
      const filtered = stB.queues.reduce((n, q) => n + q.rxFiltered, 0);
      expect(stB.rxPackets + stB.rxDropped + filtered).toBe(portB.rxFrames);
      expect(before[0]!.txFrames).toBe(400);
      b.receive(0);
    }
  });
});
