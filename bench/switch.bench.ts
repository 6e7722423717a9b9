/**
 * The embedded switch's cost with only the device running while the clock runs (device.bench.ts's
 * technique): the synthetic guest brings functions up and posts one batch itself; afterwards each batch is
 * re-posted with one avail-idx store per ring, outside the timed section.
 * - PF → uplink: 128 tx chains, one kick; the uplink is a null backend (transmitRange, counts).
 * - uplink → PF: 128 frames through the PF's BackendSink.receive into posted buffers (copy receive, as
 *   every switched frame is received).
 * - VF0 → VF1: 128 tx chains on VF0, one kick: tx, switch, VF1's receive into its posted buffers.
 * A VF → VF frame is one transmit plus one receive, so `t(VF→VF) / (t(PF→uplink) + t(uplink→PF)) - 1`
 * is what the switch adds (goal ≤ 20 %), and the GC columns show what it allocates.
 *
 * Run: `node --expose-gc --import tsx bench/switch.bench.ts` (part of `npm run bench`).
 */
import { VirtioNetDriver } from '../devices/testing/net-driver.js';
import { createVirtioNetPci, type VirtioNetPci } from '../devices/virtio-net-pci.js';
import { GuestMemory } from '../lib/memory/guest-memory.js';
import type {
  BackendCapabilities,
  BackendSink,
  NetBackend,
  NetOffload,
  TransmitResult,
} from '../lib/net/backend.js';
import { PCI_SRIOV_BAR, PCI_SRIOV_CTRL, PCI_SRIOV_NUM_VF } from '../pci/sriov.js';
import { BumpAllocator } from '../virtio/testing/bump-allocator.js';
import { InterruptCollector } from '../virtio/testing/pci-driver.js';
import { type BenchResult, bench, report } from './harness.js';

const BATCH = 128;
const LAPS = Number(process.env.SWITCH_BENCH_LAPS ?? 4000);
const SLICE = 48 << 20;
const SR = 0x100;
const AVAIL_IDX = 2;
const AVAIL_RING = 4;
const USED_IDX = 2;

class NullUplink implements NetBackend {
  readonly capabilities: BackendCapabilities = {
    vnetHeader: true,
    offloads: { csum: true, tso4: true, tso6: true, ecn: true, ufo: true, uso4: true, uso6: true },
    queuePairs: 1,
  };
  sink: BackendSink | null = null;
  packets = 0;
  attach(sink: BackendSink): void {
    this.sink = sink;
  }
  transmit(_f: Uint8Array, _q: number, _o: NetOffload | null): TransmitResult {
    this.packets++;
    return 'sent';
  }
  transmitRange(_b: Uint8Array, _o: number, _l: number, _q: number, _off: NetOffload | null): TransmitResult {
    this.packets++;
    return 'sent';
  }
  pause(): void {}
  resume(): void {}
  close(): void {}
}

/** A ring the bench re-posts by bumping the avail idx (the avail slots repeat the first batch's heads). */
function recycler(memory: GuestMemory, drv: VirtioNetDriver, index: number, firstPosted: number) {
  const q = drv.queue(index);
  const { driverAddr, deviceAddr, size } = q.config;
  let availIdx = memory.readU16(driverAddr + AVAIL_IDX);
  const heads: number[] = [];
  for (let i = 0; i < BATCH; i++)
    heads.push(memory.readU16(driverAddr + AVAIL_RING + 2 * ((availIdx - BATCH + i) & (size - 1))));
  for (let s = 0; s < size; s++) memory.writeU16(driverAddr + AVAIL_RING + 2 * s, heads[s % BATCH]!);
  const usedEvent = driverAddr + AVAIL_RING + 2 * size;
  let first = firstPosted;
  return () => {
    const add = first > 0 ? BATCH - first : BATCH;
    first = 0;
    if (add > 0) {
      availIdx = (availIdx + add) & 0xffff;
      memory.writeU16(driverAddr + AVAIL_IDX, availIdx);
    }
    memory.writeU16(usedEvent, memory.readU16(deviceAddr + USED_IDX));
  };
}

function frameOf(size: number, dst: string, src: string): Uint8Array {
  const f = Uint8Array.from({ length: size }, (_, i) => (i * 13 + 7) & 0xff);
  const mac = (m: string) => m.split(':').map((h) => Number.parseInt(h, 16));
  f.set(mac(dst), 0);
  f.set(mac(src), 6);
  f.set([0x08, 0x00], 12);
  return f;
}

function rig(vfs: number) {
  const memory = new GuestMemory([{ address: 0, bytes: new Uint8Array(192 << 20) }]);
  const uplink = new NullUplink();
  const dev = createVirtioNetPci({
    memory,
    backend: uplink,
    interrupts: { msi: () => {} },
    sriov: { totalVfs: 2 },
  });
  const driver = (t: VirtioNetPci, slot: number) =>
    new VirtioNetDriver(t, memory, {
      interrupts: new InterruptCollector(),
      rxBuffers: BATCH,
      allocator: new BumpAllocator(0x100000 + slot * SLICE, 0x100000 + (slot + 1) * SLICE),
    });
  const pf = driver(dev, 0);
  pf.open();
  const vfDrivers: VirtioNetDriver[] = [];
  if (vfs > 0) {
    dev.configWrite(SR + PCI_SRIOV_NUM_VF, 2, vfs);
    dev.configWrite(SR + PCI_SRIOV_BAR + 4, 4, 0xd000_0000);
    dev.configWrite(SR + PCI_SRIOV_BAR + 20, 4, 2);
    dev.configWrite(SR + PCI_SRIOV_CTRL, 2, 0x9);
    for (let i = 0; i < vfs; i++) {
      const d = driver(dev.vfs[i]!, i + 1);
      d.open();
      vfDrivers.push(d);
    }
  }
  return { memory, dev, uplink, pf, vfDrivers };
}

/** Prepares `drv`'s tx pair 0 with a batch of `frame` and returns [kick, repost]. */
function txSide(memory: GuestMemory, target: VirtioNetPci, drv: VirtioNetDriver, frame: Uint8Array) {
  for (let i = 0; i < BATCH; i++) drv.send(frame);
  drv.reclaimTx(0);
  const index = drv.txIndex(0);
  const bar = (drv.pci as unknown as { notify: { bar: number } }).notify.bar;
  const off = drv.pci.notifyOffset(index);
  return [() => target.barWrite(bar, off, 2, index), recycler(memory, drv, index, 0)] as const;
}

async function main(): Promise<void> {
  const rows: BenchResult[] = [];
  const opts = (beforeEach: () => void) => ({ iterations: LAPS, opsPerIteration: BATCH, beforeEach });
  for (const size of [64, 1514]) {
    // Pass-through (no VF enabled): the PF's two halves.
    const a = rig(0);
    const [kickPf, repostPfTx] = txSide(
      a.memory,
      a.dev,
      a.pf,
      frameOf(size, '02:00:00:00:00:99', a.pf.mac()),
    );
    const repostPfRx = recycler(a.memory, a.pf, a.pf.rxIndex(0), BATCH);
    const toPf = frameOf(size, a.pf.mac(), '02:00:00:00:00:99');
    const sink = a.uplink.sink!;
    const tx = await bench(`PF → uplink ${size} B`, kickPf, opts(repostPfTx));
    const rx = await bench(
      `uplink → PF ${size} B`,
      () => {
        for (let i = 0; i < BATCH; i++) sink.receive(toPf, 0, null);
      },
      opts(repostPfRx),
    );
    // Two VFs: VF0 sends to VF1 through the switch.
    const b = rig(2);
    const [v0, v1] = b.vfDrivers as [VirtioNetDriver, VirtioNetDriver];
    const [kickVf0, repostVf0] = txSide(b.memory, b.dev.vfs[0]!, v0, frameOf(size, v1.mac(), v0.mac()));
    // VF1's first batch went through the switch while txSide posted; start from its ring as it is now.
    v1.receive(0);
    const repostVf1 = recycler(b.memory, v1, v1.rxIndex(0), BATCH);
    const vv = await bench(`VF0 → VF1 through the switch ${size} B`, kickVf0, {
      ...opts(() => {
        repostVf0();
        repostVf1();
      }),
    });
    rows.push(tx, rx, vv);
    const s = b.dev.stats();
    const cost = vv.nsPerOp / (tx.nsPerOp + rx.nsPerOp) - 1;
    console.log(
      `${size} B: VF→VF ${(vv.opsPerSec / 1e6).toFixed(2)} Mframes/s, PF tx + rx ${(1e3 / (tx.nsPerOp + rx.nsPerOp)).toFixed(2)} Mframes/s: ` +
        `switch cost ${(cost * 100).toFixed(0)} % (goal ≤ 20 %); VF1 got ${s.vfs[1]!.rxPackets}, dropped ${s.vfs[1]!.rxDropped}; ` +
        `switch VF1 rx ${s.switch!.vfs[1]!.rxFrames}, no-buffer drops ${s.switch!.vfs[1]!.dropNoBuffer}`,
    );
    a.dev.close();
    b.dev.close();
  }
  report(rows);
}

await main();
