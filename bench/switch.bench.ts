/**
 * The embedded switch's cost: VF0 → VF1 through the switch beside the two halves it is made of, measured
 * in the same run with the same synthetic drivers: PF → uplink (the PF's transmit, switch in pass-through)
 * and uplink → PF (the PF's receive). A VF → VF frame is one transmit plus one receive, so
 * `switch cost = t(VF→VF) / (t(PF→uplink) + t(uplink→PF)) - 1` is what the switch adds.
 * The uplink is a MemoryBackend (in memory, no kernel); frames are 64 B and 1514 B UDP.
 *
 * Run: `npm run bench`, or `node --expose-gc --import tsx bench/switch.bench.ts`.
 */
import { ethernet, ipv4 } from '../devices/testing/frames.js';
import { VirtioNetDriver } from '../devices/testing/net-driver.js';
import { createVirtioNetPci, type VirtioNetPci } from '../devices/virtio-net-pci.js';
import { GuestMemory } from '../lib/memory/guest-memory.js';
import { MemoryBackend } from '../lib/net/memory-backend.js';
import { PCI_SRIOV_BAR, PCI_SRIOV_CTRL, PCI_SRIOV_NUM_VF } from '../pci/sriov.js';
import { BumpAllocator } from '../virtio/testing/bump-allocator.js';
import { InterruptCollector } from '../virtio/testing/pci-driver.js';
import { type BenchResult, bench, report } from './harness.js';

const BATCH = 128;
const LAPS = Number(process.env.SWITCH_BENCH_LAPS ?? 1500);
const SLICE = 64 << 20;
const SR = 0x100;

function setup() {
  const memory = new GuestMemory([{ address: 0, bytes: new Uint8Array(256 << 20) }]);
  const irq = new InterruptCollector();
  const uplink = new MemoryBackend({ receive: 'copy', backlog: 4096 });
  uplink.onFrame(() => {});
  const dev = createVirtioNetPci({ memory, backend: uplink, interrupts: irq, sriov: { totalVfs: 2 } });
  const driver = (target: VirtioNetPci, slot: number) =>
    new VirtioNetDriver(target, memory, {
      interrupts: irq,
      allocator: new BumpAllocator(0x100000 + slot * SLICE, 0x100000 + (slot + 1) * SLICE),
    });
  const pf = driver(dev, 0);
  pf.open();
  dev.configWrite(SR + PCI_SRIOV_NUM_VF, 2, 2);
  dev.configWrite(SR + PCI_SRIOV_BAR + 4, 4, 0xd000_0000);
  dev.configWrite(SR + PCI_SRIOV_BAR + 16, 4, 0);
  dev.configWrite(SR + PCI_SRIOV_BAR + 20, 4, 2);
  dev.configWrite(SR + PCI_SRIOV_CTRL, 2, 0x9);
  const vf0 = driver(dev.vfs[0]!, 1);
  const vf1 = driver(dev.vfs[1]!, 2);
  vf0.open();
  vf1.open();
  return { dev, uplink, pf, vf0, vf1 };
}

const udp = (size: number, dst: string, src: string) =>
  ethernet(dst, src, 0x0800, ipv4('10.0.0.1', '10.0.0.2', 17, new Uint8Array(size - 34)));
const opts = { iterations: LAPS, opsPerIteration: BATCH };

async function main(): Promise<void> {
  const { dev, uplink, pf, vf0, vf1 } = setup();
  const sizes = [64, 1514];
  const vfToVf: BenchResult[] = [];
  const pfSwitched: BenchResult[] = [];
  for (const size of sizes) {
    const toVf1 = udp(size, vf1.mac(), vf0.mac());
    const toOut = udp(size, '02:00:00:00:00:99', pf.mac());
    vfToVf.push(
      await bench(
        `VF0 → VF1 through the switch ${size} B`,
        () => {
          for (let i = 0; i < BATCH; i++) vf0.send(toVf1, { kick: false });
          vf0.kickTx(0);
          vf1.receive(0);
        },
        opts,
      ),
    );
    pfSwitched.push(
      await bench(
        `PF → uplink, VFs enabled ${size} B`,
        () => {
          for (let i = 0; i < BATCH; i++) pf.send(toOut, { kick: false });
          pf.kickTx(0);
        },
        opts,
      ),
    );
  }
  const gcs = (r: BenchResult) => `${r.minorGcs}/${r.majorGcs}`;
  // No VF enabled: the PF's port is a pass-through, so these are the device's transmit and receive alone.
  dev.configWrite(SR + PCI_SRIOV_CTRL, 2, 0);
  const rows: BenchResult[] = [];
  for (const [k, size] of sizes.entries()) {
    const toOut = udp(size, '02:00:00:00:00:99', pf.mac());
    const toPf = udp(size, pf.mac(), '02:00:00:00:00:99');
    const tx = await bench(
      `PF → uplink, pass-through ${size} B`,
      () => {
        for (let i = 0; i < BATCH; i++) pf.send(toOut, { kick: false });
        pf.kickTx(0);
      },
      opts,
    );
    const rx = await bench(
      `uplink → PF, pass-through ${size} B`,
      () => {
        for (let i = 0; i < BATCH; i++) uplink.inject(toPf);
        pf.receive(0);
      },
      opts,
    );
    const v = vfToVf[k]!;
    const sw = pfSwitched[k]!;
    rows.push(v, sw, tx, rx);
    const cost = v.nsPerOp / (tx.nsPerOp + rx.nsPerOp) - 1;
    console.log(
      `${size} B: VF→VF ${(v.opsPerSec / 1e6).toFixed(3)} Mframes/s (GC ${gcs(v)}), PF tx + rx halves ` +
        `${(1e3 / (tx.nsPerOp + rx.nsPerOp)).toFixed(3)} Mframes/s: switch cost ${(cost * 100).toFixed(0)} % ` +
        `(goal ≤ 20 %); PF → uplink with VFs enabled x${(tx.nsPerOp / sw.nsPerOp).toFixed(2)} of pass-through`,
    );
  }
  report(rows);
}

await main();
