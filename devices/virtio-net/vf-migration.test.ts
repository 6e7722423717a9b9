/**
 * A VF moves between two devices through the PF's administration virtqueue (VIRTIO 1.4 device parts), as
 * Linux's virtio-vfio-pci migration driver moves it: the synthetic PF driver probes like Linux
 * (LIST_QUERY/LIST_USE, CAP_ID_LIST_QUERY, DEVICE_CAP_GET, DRIVER_CAP_SET), stops VF 1 with DEV_MODE_SET,
 * reads its parts, writes them into VF 1 of a second device, and resumes it there; the VF's own guest
 * driver never notices. The hypervisor's share (config space, MSI-X table, guest memory) is done here
 * directly, as device-parts.tex "Assumptions" leaves it to the hypervisor.
 */
import { describe, expect, it } from 'vitest';
import { GuestMemory } from '../../lib/memory/guest-memory.js';
import { MemoryBackend } from '../../lib/net/memory-backend.js';
import { PCI_SRIOV_BAR, PCI_SRIOV_CTRL, PCI_SRIOV_NUM_VF } from '../../pci/sriov.js';
import { AdminDriver, DEV_MODE } from '../../virtio/testing/admin-driver.js';
import { BumpAllocator } from '../../virtio/testing/bump-allocator.js';
import { InterruptCollector, type PciTarget, VirtioPciDriver } from '../../virtio/testing/pci-driver.js';
import { ethernet, ipv4 } from '../testing/frames.js';
import { VirtioNetDriver } from '../testing/net-driver.js';
import { createVirtioNetPci, type VirtioNetPci } from '../virtio-net-pci.js';

const SR = 0x100;
const OUT = '02:00:00:00:00:99';
const SLICE = 16 << 20;
const ADMIN_INDEX = 0x3c;

const udp = (dst: string, src: string, n: number) =>
  ethernet(dst, src, 0x0800, ipv4('10.0.0.1', '10.0.0.2', 17, new Uint8Array(64).fill(n)));

/** One host's device: PF (admin queue only) + 2 VFs behind the switch, sharing the VM's memory and IRQs. */
function host(memory: GuestMemory, irq: InterruptCollector, slot: number, pfMac: string) {
  const uplink = new MemoryBackend({ receive: 'copy' });
  const toUplink: Uint8Array[] = [];
  uplink.onFrame((f) => toUplink.push(f.slice()));
  const dev = createVirtioNetPci({
    memory,
    backend: uplink,
    interrupts: irq,
    mac: pfMac,
    sriov: { totalVfs: 2 },
  });
  const pci = new VirtioPciDriver(dev, memory, {
    interrupts: irq,
    allocator: new BumpAllocator(0x100000 + slot * SLICE, 0x100000 + (slot + 1) * SLICE),
  });
  pci.probe();
  pci.assignBars();
  pci.enableMsix();
  pci.negotiate();
  const aq = pci.readCommon(ADMIN_INDEX, 2);
  pci.setupQueue(aq, { vector: 1 });
  pci.driverOk();
  const admin = new AdminDriver(pci, aq);
  dev.configWrite(SR + PCI_SRIOV_NUM_VF, 2, 2);
  dev.configWrite(SR + PCI_SRIOV_BAR + 4, 4, 0xd000_0000);
  dev.configWrite(SR + PCI_SRIOV_BAR + 16, 4, 0);
  dev.configWrite(SR + PCI_SRIOV_BAR + 20, 4, 0x2);
  dev.configWrite(SR + PCI_SRIOV_CTRL, 2, 0x1 | 0x8 | 0x10);
  return { dev, uplink, toUplink, admin };
}

/** The hypervisor's routing of the VF's config and BAR accesses: to whichever device holds the VF now. */
class Relay implements PciTarget {
  constructor(public to: VirtioNetPci) {}
  configRead(o: number, s: 1 | 2 | 4) {
    return this.to.configRead(o, s);
  }
  configWrite(o: number, s: 1 | 2 | 4, v: number) {
    this.to.configWrite(o, s, v);
  }
  barRead(b: number, o: number, s: 1 | 2 | 4 | 8) {
    return this.to.barRead(b, o, s);
  }
  barWrite(b: number, o: number, s: 1 | 2 | 4 | 8, v: number | bigint) {
    this.to.barWrite(b, o, s, v);
  }
}

function rig() {
  const memory = new GuestMemory([{ address: 0, bytes: new Uint8Array(96 << 20) }]);
  const irq = new InterruptCollector();
  const src = host(memory, irq, 0, '52:54:00:12:34:56');
  const dst = host(memory, irq, 1, '52:54:00:12:34:56');
  for (const h of [src, dst]) {
    expect(h.admin.listInit()).toBe(0x3e7fcn);
    expect(h.admin.capInit()).toBe(8);
  }
  const relay = new Relay(src.dev.vfs[0]!);
  const vf = new VirtioNetDriver(relay, memory, {
    interrupts: irq,
    allocator: new BumpAllocator(0x100000 + 2 * SLICE, 0x100000 + 3 * SLICE),
    rxBuffers: 4,
  });
  vf.open();
  return { memory, irq, src, dst, relay, vf, mac: vf.mac() };
}

describe('VF migration through the admin queue (VIRTIO 1.4 device parts)', () => {
  it('stop VF 1, read its parts, write them into VF 1 of a second device, resume there: nothing lost or repeated', async () => {
    const { irq, src, dst, relay, vf, mac } = rig();
    // Traffic before: both ways.
    src.uplink.inject(udp(mac, OUT, 1));
    expect(vf.receive(0).map((r) => r.frame)).toEqual([udp(mac, OUT, 1)]);
    vf.send(udp(OUT, mac, 2));
    expect(src.toUplink).toEqual([udp(OUT, mac, 2)]);
    vf.reclaimTx(0);
    // Fill the 4 rx buffers and leave one frame in the VF's backlog (its switch port pauses then).
    for (let n = 3; n <= 7; n++) src.uplink.inject(udp(mac, OUT, n));
    expect(src.dev.vfs[0]!.stats().queues[0]!.rxBacklogged).toBe(1);

    // Stop: no transmit, no receive into guest memory, no interrupt.
    expect(src.admin.modeSet(1, DEV_MODE.STOPPED)).toMatchObject({ status: 0, qualifier: 0, used: 8 });
    const messages = irq.messages.length;
    vf.send(udp(OUT, mac, 8)); // kicked while stopped: accepted, not served
    expect(src.toUplink).toHaveLength(1);
    expect(irq.messages.length).toBe(messages);

    // Parts out of the source (a get object), into the destination (stopped, a set object).
    expect(src.admin.objCreate(1, 0, 0).status).toBe(0);
    const size = src.admin.metadata(1, 0, 0);
    const parts = src.admin.partsGet(1, 0);
    expect(parts).toMatchObject({ status: 0, qualifier: 0 });
    expect(parts.used - 8).toBe(new DataView(size.result.buffer).getUint32(0, true));
    // Reading twice while stopped gives the same bytes.
    expect(src.admin.partsGet(1, 0).result).toEqual(parts.result);
    expect(src.admin.objDestroy(1, 0).status).toBe(0);

    const target = dst.dev.vfs[0]!;
    expect(dst.admin.objCreate(1, 3, 1).status).toBe(0);
    expect(dst.admin.partsSet(1, 3, parts.result)).toMatchObject({ status: 16, qualifier: 1 }); // not stopped
    expect(dst.admin.modeSet(1, DEV_MODE.STOPPED).status).toBe(0);
    // The hypervisor moves config space and the MSI-X table, then the parts go in.
    target.function.restore(src.dev.vfs[0]!.function.snapshot());
    target.transport.msix!.restore(src.dev.vfs[0]!.transport.msix!.snapshot());
    expect(dst.admin.partsSet(1, 3, parts.result)).toMatchObject({ status: 0, qualifier: 0, used: 8 });
    expect(target.stats().queues[0]!.rxBacklogged).toBe(1);
    relay.to = target;
    expect(dst.toUplink).toHaveLength(0);
    expect(irq.messages.length).toBe(messages);

    // Resume on the destination: the frame kicked while stopped goes out there, the backlog comes in.
    expect(dst.admin.modeSet(1, DEV_MODE.ACTIVE).status).toBe(0);
    expect(dst.toUplink).toEqual([udp(OUT, mac, 8)]);
    expect(irq.messages.length).toBeGreaterThan(messages);
    // 3-6 were in its buffers before the stop; 7 waited in the backlog and comes once buffers are re-posted.
    expect(vf.receive(0).map((r) => r.frame)).toEqual([3, 4, 5, 6].map((n) => udp(mac, OUT, n)));
    expect(vf.receive(0).map((r) => r.frame)).toEqual([udp(mac, OUT, 7)]);
    vf.reclaimTx(0);
    // And traffic continues there, both ways; the counters continued from the source's.
    dst.uplink.inject(udp(mac, OUT, 9));
    expect(vf.receive(0).map((r) => r.frame)).toEqual([udp(mac, OUT, 9)]);
    vf.send(udp(OUT, mac, 10));
    expect(dst.toUplink).toEqual([udp(OUT, mac, 8), udp(OUT, mac, 10)]);
    const st = target.stats();
    expect([st.rxPackets, st.txPackets]).toEqual([7, 3]);
    await new Promise((r) => setImmediate(r));
    expect(target.stats().lastError).toBeNull();
  });

  it('corrupt, truncated and mismatched parts are refused with INVALID_FIELD; the target is unchanged and still usable', () => {
    const { src, dst, vf, mac } = rig();
    src.uplink.inject(udp(mac, OUT, 1));
    src.admin.modeSet(1, DEV_MODE.FROZEN);
    src.admin.objCreate(1, 0, 0);
    const parts = src.admin.partsGet(1, 0).result;
    const target = dst.dev.vfs[0]!;
    dst.admin.objCreate(1, 1, 1);
    dst.admin.modeSet(1, DEV_MODE.STOPPED);
    const before = JSON.stringify(target.snapshot());
    const edit = (f: (b: Uint8Array) => void) => {
      const b = parts.slice();
      f(b);
      return b;
    };
    // Find parts by walking the list.
    const offsets: { type: number; at: number; len: number }[] = [];
    for (let o = 0; o < parts.length; ) {
      const len = new DataView(parts.buffer, parts.byteOffset + o + 12).getUint32(0, true);
      offsets.push({ type: parts[o]! | (parts[o + 1]! << 8), at: o, len });
      o += 16 + len;
    }
    const find = (t: number) => offsets.find((p) => p.type === t)!;
    const state = find(0x5ff);
    const json = JSON.parse(
      new TextDecoder().decode(parts.subarray(state.at + 16, state.at + 16 + state.len)),
    );
    const withState = (mutate: (j: typeof json) => void) => {
      const j = structuredClone(json);
      mutate(j);
      const value = new TextEncoder().encode(JSON.stringify(j));
      const head = parts.slice(0, state.at + 16);
      new DataView(head.buffer).setUint32(state.at + 12, value.length, true);
      const out = new Uint8Array(head.length + value.length + (parts.length - state.at - 16 - state.len));
      out.set(head);
      out.set(value, head.length);
      out.set(parts.subarray(state.at + 16 + state.len), head.length + value.length);
      return out;
    };
    const bad: [string, Uint8Array][] = [
      ['truncated list', parts.subarray(0, parts.length - 5)],
      ['no state part', parts.subarray(0, state.at)],
      ['device features differ', edit((b) => (b[find(0x100).at + 16] = (b[find(0x100).at + 16] ?? 0) ^ 1))],
      [
        'driver features disagree with the state',
        edit((b) => (b[find(0x101).at + 16] = (b[find(0x101).at + 16] ?? 0) ^ 4)),
      ],
      ['VQ_CFG length', edit((b) => new DataView(b.buffer).setUint32(find(0x104).at + 12, 31, true))],
      ['state not JSON', edit((b) => (b[state.at + 16] = 0x7b ^ 0xff))],
      ['ring outside memory', withState((j) => (j.transport.queues[0].desc = [0xffff_f000, 0x1000]))],
      ['queue larger than the device has', withState((j) => (j.transport.queues[0].size = 4096))],
      [
        'backlog over its bound',
        withState(
          (j) =>
            (j.transport.device.backlog[0] = new Array(257).fill(
              j.transport.device.backlog[0][0] ?? {
                frame: 'AAAAAAAAAAAAAAAAAAAA',
                offload: null,
                hash: 0,
                report: 0,
              },
            )),
        ),
      ],
      [
        'runt frame in the backlog',
        withState(
          (j) => (j.transport.device.backlog[0] = [{ frame: 'AAAA', offload: null, hash: 0, report: 0 }]),
        ),
      ],
      ['wrong format', withState((j) => (j.format = 'virtio-net-ts/1'))],
      ['curQueuePairs beyond the device', withState((j) => (j.transport.device.curQueuePairs = 9))],
    ];
    for (const [what, b] of bad) {
      const r = dst.admin.partsSet(1, 1, b);
      expect([what, r.status, r.qualifier]).toEqual([what, 22, 3]);
      expect(JSON.stringify(target.snapshot())).toBe(before);
    }
    // The genuine parts still go in, and the VF runs on the destination.
    target.function.restore(src.dev.vfs[0]!.function.snapshot());
    target.transport.msix!.restore(src.dev.vfs[0]!.transport.msix!.snapshot());
    expect(dst.admin.partsSet(1, 1, parts).status).toBe(0);
    expect(dst.admin.modeSet(1, DEV_MODE.ACTIVE).status).toBe(0);
    expect(target.stats().lastError).toBeNull();
    void vf;
  });

  it("frozen pauses the VF's backend at once; stopped halts transmit and receive DMA; both resume on active", () => {
    const { src, vf, mac, irq } = rig();
    const port = src.dev.vfs[0]!;
    expect(src.admin.modeSet(1, DEV_MODE.FROZEN).status).toBe(0);
    const messages = irq.messages.length;
    src.uplink.inject(udp(mac, OUT, 1)); // the switch port is paused: counted at the switch, not delivered
    vf.send(udp(OUT, mac, 0));
    src.dev.vfs[0]!.setLinkUp(false); // a config change: its interrupt waits too
    expect(vf.receive(0)).toEqual([]);
    expect(src.toUplink).toEqual([]);
    expect(irq.messages.length).toBe(messages);
    src.dev.vfs[0]!.setLinkUp(true);
    expect(src.dev.stats().switch!.vfs[0]!.dropNoBuffer).toBe(1);
    expect(src.admin.modeSet(1, DEV_MODE.ACTIVE).status).toBe(0);
    expect(irq.messages.length).toBeGreaterThan(messages); // the withheld config and tx interrupts
    expect(src.toUplink).toEqual([udp(OUT, mac, 0)]);
    src.toUplink.length = 0;
    vf.reclaimTx(0);
    src.uplink.inject(udp(mac, OUT, 2));
    expect(vf.receive(0).map((r) => r.frame)).toEqual([udp(mac, OUT, 2)]);
    // Stopped: a frame arriving waits in the backlog (part of the state), delivered on resume.
    expect(src.admin.modeSet(1, DEV_MODE.STOPPED).status).toBe(0);
    src.uplink.inject(udp(mac, OUT, 3));
    expect(vf.receive(0)).toEqual([]);
    expect(port.stats().queues[0]!.rxBacklogged).toBe(1);
    vf.send(udp(OUT, mac, 4));
    expect(src.toUplink).toEqual([]);
    expect(src.admin.modeSet(1, DEV_MODE.ACTIVE).status).toBe(0);
    expect(vf.receive(0).map((r) => r.frame)).toEqual([udp(mac, OUT, 3)]);
    expect(src.toUplink).toEqual([udp(OUT, mac, 4)]);
  });
});
