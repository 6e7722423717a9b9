// The 'virtio-net-ts/2' envelope through the public object: what it carries (backlogged frames, counters,
// VF policies, switch counters, modes) and that a corrupt, truncated or mismatched state is refused by
// the name of the field before anything is written, the target staying as it was and usable.
import { describe, expect, it } from 'vitest';
import { GuestMemory } from '../lib/memory/guest-memory.js';
import { MemoryBackend } from '../lib/net/memory-backend.js';
import { PCI_SRIOV_BAR, PCI_SRIOV_CTRL, PCI_SRIOV_NUM_VF } from '../pci/sriov.js';
import { BumpAllocator } from '../virtio/testing/bump-allocator.js';
import { InterruptCollector } from '../virtio/testing/pci-driver.js';
import { ethernet } from './testing/frames.js';
import { VirtioNetDriver } from './testing/net-driver.js';
import { createVirtioNetPci } from './virtio-net-pci.js';

const PF_MAC = '52:54:00:12:34:56';
const OUT = '02:00:00:00:00:99';

function make(memory: GuestMemory, irq: InterruptCollector) {
  const uplink = new MemoryBackend({ receive: 'copy' });
  const dev = createVirtioNetPci({
    memory,
    backend: uplink,
    interrupts: irq,
    mac: PF_MAC,
    sriov: { totalVfs: 2 },
  });
  return { dev, uplink };
}

function rig() {
  const memory = new GuestMemory([{ address: 0, bytes: new Uint8Array(32 << 20) }]);
  const irq = new InterruptCollector();
  const { dev, uplink } = make(memory, irq);
  const pf = new VirtioNetDriver(dev, memory, {
    interrupts: irq,
    allocator: new BumpAllocator(0x100000, 0x100000 + (8 << 20)),
    rxBuffers: 2,
  });
  pf.open();
  dev.setVf(1, { mac: '02:00:00:00:01:02', vlan: 5, trust: true });
  dev.configWrite(0x100 + PCI_SRIOV_NUM_VF, 2, 1);
  dev.configWrite(0x100 + PCI_SRIOV_BAR + 4, 4, 0xd000_0000);
  dev.configWrite(0x100 + PCI_SRIOV_CTRL, 2, 0x9);
  // Two frames fill the PF's buffers, the third waits in its backlog.
  for (let n = 1; n <= 3; n++) uplink.inject(ethernet(pf.mac(), OUT, 0x0800, new Uint8Array(50).fill(n)));
  return { memory, irq, dev, pf };
}

describe("snapshot format 'virtio-net-ts/2'", () => {
  it('carries backlogged frames, counters, VF policies and switch counters, and restores them', () => {
    const s = rig();
    const snap = JSON.parse(JSON.stringify(s.dev.snapshot()));
    expect(snap.format).toBe('virtio-net-ts/2');
    const device = snap.transport.transport.device;
    expect(device.backlog[0]).toHaveLength(1);
    expect(Buffer.from(device.backlog[0][0].frame, 'base64')).toEqual(
      Buffer.from(ethernet(s.pf.mac(), OUT, 0x0800, new Uint8Array(50).fill(3))),
    );
    expect(device.stats.queues[0]).toMatchObject({ rxPackets: 2, rxBacklogged: 1 });
    expect(snap.vfPolicies[1]).toMatchObject({ mac: '02:00:00:00:01:02', vlan: 5, trust: true });
    const t = make(s.memory, s.irq).dev;
    t.restore(snap);
    expect(t.vfInfo(1)).toEqual(s.dev.vfInfo(1));
    expect(t.stats()).toEqual(s.dev.stats());
    expect(JSON.stringify(t.snapshot())).toBe(JSON.stringify(snap));
  });

  it('corrupt, truncated and mismatched states are refused by field name; the target is untouched and usable', () => {
    const s = rig();
    const good = JSON.stringify(s.dev.snapshot());
    const target = make(s.memory, s.irq).dev;
    const before = JSON.stringify(target.snapshot());
    // biome-ignore lint/suspicious/noExplicitAny: the test reaches into arbitrary JSON fields
    type J = any;
    const cases: [string, (j: J) => void, RegExp][] = [
      [
        'runt frame',
        (j) => (j.transport.transport.device.backlog[0][0].frame = 'AAAA'),
        /backlog\.0\.0\.frame/,
      ],
      [
        'not base64',
        (j) => (j.transport.transport.device.backlog[0][0].frame = '!!!'),
        /backlog\.0\.0\.frame/,
      ],
      [
        'over the bound',
        (j) =>
          (j.transport.transport.device.backlog[0] = new Array(257).fill(
            j.transport.transport.device.backlog[0][0],
          )),
        /backlog\.0.*at most 256/,
      ],
      [
        'offload field',
        (j) => (j.transport.transport.device.backlog[0][0].offload = { flags: 1 }),
        /backlog\.0\.0\.offload/,
      ],
      ['backlog per pair', (j) => j.transport.transport.device.backlog.push([]), /backlog/],
      [
        'counter',
        (j) => (j.transport.transport.device.stats.queues[0].rxPackets = -1),
        /stats\.queues\.0\.rxPackets/,
      ],
      ['flow slot', (j) => (j.transport.transport.device.flows = [[5000, 1, 0, 0]]), /flows\.0\.0/],
      ['policies', (j) => j.vfPolicies.pop(), /vfPolicies/],
      ['policy MAC', (j) => (j.vfPolicies[0].mac = '01:00:00:00:00:01'), /vfPolicies\.0\.mac/],
      ['switch counters', (j) => delete j.switch.pf.rxFrames, /switch\.pf\.rxFrames/],
      ['mode', (j) => (j.transport.transport.mode = 'paused'), /transport\.transport\.mode/],
      ['queues cut', (j) => (j.transport.transport.queues = 5), /transport\.transport\.queues/],
      [
        'ring index',
        (j) => (j.transport.transport.queues[0].ring.nextAvail = 70000),
        /queues\.0\.ring\.nextAvail/,
      ],
      ['transport missing', (j) => delete j.transport, /transport/],
      ['VF state', (j) => (j.vfs[0].transport.transport.device.curQueuePairs = 3), /curQueuePairs/],
      ['VF format', (j) => (j.vfs[0].format = 'virtio-net-ts/1'), /vfs\.0\.format/],
      ['options', (j) => (j.options.totalVfs = 4), /option "totalVfs"/],
      ['hash types (hash-* options)', (j) => (j.options.hashTypes = '0x1'), /option "hashTypes"/],
      ['format', (j) => (j.format = 'virtio-net-ts/3'), /format "virtio-net-ts\/3"/],
    ];
    for (const [what, mutate, msg] of cases) {
      const j = JSON.parse(good);
      mutate(j);
      expect(() => target.restore(j), what).toThrow(msg);
      expect(JSON.stringify(target.snapshot()), what).toBe(before);
    }
    target.restore(JSON.parse(good));
    expect(target.stats()).toEqual(s.dev.stats());
  });
});
