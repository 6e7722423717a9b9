/**
 * What the embedded switch costs, with only the device running while the clock runs (device.bench.ts's
 * technique): the synthetic guest brings functions up and posts one batch itself; afterwards each batch is
 * re-posted with one avail-idx store per ring, outside the timed section. Three scenarios per frame size:
 * - `pf-tx`: the PF sends 128 tx chains, one kick, to a null uplink (transmitRange, counts).
 * - `pf-rx`: 128 frames from the uplink through the PF's BackendSink.receive into its posted buffers (the
 *   copy receive, as every switched frame is received).
 * - `vf-vf`: VF0 sends 128 tx chains, one kick: VF0's transmit, the switch, VF1's receive into its buffers.
 * A VF → VF frame is one guest transmit plus one guest receive, so its fair baseline is a PF transmit
 * plus a PF receive, per frame: switch cost = (t(VF→VF) − (t(PF tx) + t(PF rx))) / (t(PF tx) + t(PF rx)).
 * The plain frames/s of VF→VF beside PF→uplink are printed too (the wording).
 *
 * Each scenario runs in its own process (call sites stay as monomorphic as in a VMM with one traffic mix),
 * in rounds that interleave the scenarios so that a change in machine load hits all of them; the figures
 * are medians over the rounds, and the switch cost is the median of the per-round costs. After the timed
 * run each process runs the scenario again for SWITCH_BENCH_ALLOC_FRAMES frames untimed and reports the
 * GCs and heap growth over them: 0 GCs over millions of frames is 0 allocations per frame.
 *
 * Run: `node --expose-gc --import tsx bench/switch.bench.ts` (part of `npm run bench`).
 * SWITCH_BENCH_ONLY="vf-vf 64" runs one scenario in this process (for --cpu-prof); SWITCH_BENCH_ROUNDS,
 * SWITCH_BENCH_LAPS (batches per timed run) and SWITCH_BENCH_ALLOC_PROFILE=1 (sampled allocation sites).
 */
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
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
import { type BenchResult, bench, gcExposed } from './harness.js';

const BATCH = 128;
const LAPS = Number(process.env.SWITCH_BENCH_LAPS ?? 4000);
const ROUNDS = Number(process.env.SWITCH_BENCH_ROUNDS ?? 5);
const ALLOC_FRAMES = Number(process.env.SWITCH_BENCH_ALLOC_FRAMES ?? 2_000_000);
const SIZES = [64, 1514];
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

/** An uplink that hands every frame straight back (as a range): the PF's transmit feeds its own receive. */
class HairpinUplink extends NullUplink {
  override transmit(f: Uint8Array, q: number, o: NetOffload | null): TransmitResult {
    this.packets++;
    this.sink!.receive(f, q, o);
    return 'sent';
  }
  override transmitRange(
    b: Uint8Array,
    at: number,
    l: number,
    q: number,
    o: NetOffload | null,
  ): TransmitResult {
    this.packets++;
    this.sink!.receiveRange!(b, at, l, q, o);
    return 'sent';
  }
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

function rig(vfs: number, uplink = new NullUplink()) {
  const memory = new GuestMemory([{ address: 0, bytes: new Uint8Array(192 << 20) }]);
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

type Kind = 'pf-tx' | 'pf-rx' | 'vf-vf' | 'vf-tx' | 'vf-rx' | 'pf-loop';
const KINDS: Kind[] = ['pf-tx', 'pf-rx', 'vf-vf'];
/**
 * For locating the cost: the halves of VF→VF through the switch (SWITCH_BENCH_ONLY only), and `pf-loop`,
 * the PF's transmit handed straight back to its own receive by the uplink (no switch, no VF): the same
 * nesting and guest-memory-to-guest-memory copy as VF→VF, so VF→VF − pf-loop is what the switch adds.
 */
const PARTS: Kind[] = ['vf-tx', 'vf-rx', 'pf-loop'];
/** What each round runs, in this order. */
const ROUND_KINDS: Kind[] = ['pf-tx', 'pf-rx', 'pf-loop', 'vf-vf'];

interface Scenario {
  name: string;
  /** One timed call: a batch of BATCH frames. */
  run: () => void;
  /** Re-posts the rings the batch used (untimed). */
  repost: () => void;
  /** What the receiving side counted, checked after the runs. */
  verify: () => string;
  close: () => void;
}

function setup(kind: Kind, size: number): Scenario {
  const name = `${kind} ${size}`;
  if (kind === 'pf-loop') {
    const a = rig(0, new HairpinUplink());
    const [run, repostTx] = txSide(a.memory, a.dev, a.pf, frameOf(size, a.pf.mac(), '02:00:00:00:00:99'));
    a.pf.receive(0);
    const repostRx = recycler(a.memory, a.pf, a.pf.rxIndex(0), BATCH);
    const repost = () => {
      repostTx();
      repostRx();
    };
    const verify = () => {
      const q = a.dev.stats().queues[0]!;
      return `PF got ${q.rxPackets}, dropped ${q.rxDropped}`;
    };
    return { name, run, repost, close: () => a.dev.close(), verify };
  }
  if (kind === 'pf-tx' || kind === 'pf-rx') {
    // No VF enabled: the switch is a pass-through and the PF's port hands frames straight on.
    const a = rig(0);
    const close = () => a.dev.close();
    if (kind === 'pf-tx') {
      const [run, repost] = txSide(a.memory, a.dev, a.pf, frameOf(size, '02:00:00:00:00:99', a.pf.mac()));
      const before = a.uplink.packets;
      return { name, run, repost, close, verify: () => `uplink got ${a.uplink.packets - before}` };
    }
    const repost = recycler(a.memory, a.pf, a.pf.rxIndex(0), BATCH);
    const frame = frameOf(size, a.pf.mac(), '02:00:00:00:00:99');
    const sink = a.uplink.sink!;
    const run = () => {
      for (let i = 0; i < BATCH; i++) sink.receive(frame, 0, null);
    };
    const verify = () => {
      const q = a.dev.stats().queues[0]!;
      return `PF got ${q.rxPackets}, dropped ${q.rxDropped}`;
    };
    return { name, run, repost, close, verify };
  }
  const b = rig(2);
  const [v0, v1] = b.vfDrivers as [VirtioNetDriver, VirtioNetDriver];
  if (kind === 'vf-tx') {
    // VF0 → a MAC nobody owns: the switch sends it to the uplink.
    const [run, repost] = txSide(b.memory, b.dev.vfs[0]!, v0, frameOf(size, '02:00:00:00:00:99', v0.mac()));
    const before = b.uplink.packets;
    return {
      name,
      run,
      repost,
      close: () => b.dev.close(),
      verify: () => `uplink got ${b.uplink.packets - before}`,
    };
  }
  if (kind === 'vf-rx') {
    // The uplink → VF1's MAC: the switch forwards it to VF1's receive.
    const repost = recycler(b.memory, v1, v1.rxIndex(0), BATCH);
    const frame = frameOf(size, v1.mac(), '02:00:00:00:00:99');
    const sink = b.uplink.sink!;
    const run = () => {
      for (let i = 0; i < BATCH; i++) sink.receive(frame, 0, null);
    };
    const verify = () => `VF1 got ${b.dev.stats().vfs[1]!.rxPackets}`;
    return { name, run, repost, close: () => b.dev.close(), verify };
  }
  const [run, repostVf0] = txSide(b.memory, b.dev.vfs[0]!, v0, frameOf(size, v1.mac(), v0.mac()));
  // VF1's first batch went through the switch while txSide posted; start from its ring as it is now.
  v1.receive(0);
  const repostVf1 = recycler(b.memory, v1, v1.rxIndex(0), BATCH);
  const repost = () => {
    repostVf0();
    repostVf1();
  };
  const verify = () => {
    const s = b.dev.stats();
    const sw = s.switch!.vfs.find((v) => v.index === 1)!;
    return `VF1 got ${s.vfs[1]!.rxPackets}, dropped ${s.vfs[1]!.rxDropped}; switch: VF1 rx ${sw.rxFrames}, drops no-buffer ${sw.dropNoBuffer} filter ${sw.dropFilter}`;
  };
  return { name, run, repost, close: () => b.dev.close(), verify };
}

interface Row {
  kind: Kind;
  size: number;
  timed: BenchResult;
  alloc: { frames: number; heapDelta: number; minorGcs: number; majorGcs: number };
  verify: string;
}

async function runScenario(kind: Kind, size: number): Promise<Row> {
  const s = setup(kind, size);
  const timed = await bench(s.name, s.run, {
    iterations: LAPS,
    opsPerIteration: BATCH,
    beforeEach: s.repost,
  });
  const laps = Math.ceil(ALLOC_FRAMES / BATCH);
  const a =
    laps === 0
      ? timed
      : await bench(
          `${s.name} allocation check`,
          () => {
            for (let i = 0; i < laps; i++) {
              s.repost();
              s.run();
            }
          },
          { iterations: 1, warmup: 0 },
        );
  if (process.env.SWITCH_BENCH_ALLOC_PROFILE) await allocationProfile(s);
  const verify = s.verify();
  s.close();
  return {
    kind,
    size,
    timed,
    alloc: { frames: laps * BATCH, heapDelta: a.heapDelta, minorGcs: a.minorGcs, majorGcs: a.majorGcs },
    verify,
  };
}

interface ProfileNode {
  callFrame: { functionName: string; url: string; lineNumber: number };
  selfSize: number;
  children: ProfileNode[];
}

/** Where the scenario allocates: V8's sampling heap profiler over a run, garbage included. */
async function allocationProfile(s: Scenario): Promise<void> {
  const { Session } = await import('node:inspector/promises');
  const session = new Session();
  session.connect();
  await session.post('HeapProfiler.startSampling', {
    samplingInterval: 256,
    includeObjectsCollectedByMajorGC: true,
    includeObjectsCollectedByMinorGC: true,
  });
  for (let i = 0; i < LAPS; i++) {
    s.repost();
    s.run();
  }
  const { profile } = (await session.post('HeapProfiler.stopSampling')) as { profile: { head: ProfileNode } };
  session.disconnect();
  const sites = new Map<string, number>();
  const walk = (n: ProfileNode, stack: string[]) => {
    const cf = n.callFrame;
    const here = [...stack, `${cf.functionName || '(anon)'} ${cf.url.split('/').pop()}:${cf.lineNumber + 1}`];
    if (n.selfSize > 0) {
      const key = here.slice(-3).reverse().join(' <- ');
      sites.set(key, (sites.get(key) ?? 0) + n.selfSize);
    }
    for (const c of n.children) walk(c, here);
  };
  walk(profile.head, []);
  console.error(`${s.name}: sampled allocation sites over ${LAPS * BATCH} frames`);
  for (const [k, v] of [...sites].sort((x, y) => y[1] - x[1]).slice(0, 8)) console.error(`  ${v} B  ${k}`);
}

const median = (xs: number[]) => {
  const v = [...xs].sort((x, y) => x - y);
  const m = v.length >> 1;
  return v.length % 2 === 1 ? v[m]! : (v[m - 1]! + v[m]!) / 2;
};
const pct = (x: number) => `${x >= 0 ? '+' : ''}${(x * 100).toFixed(0)} %`;

async function main(): Promise<void> {
  const only = process.env.SWITCH_BENCH_ONLY;
  if (only !== undefined) {
    const [kind, size] = only.split(' ') as [Kind, string];
    if (!(KINDS.includes(kind) || PARTS.includes(kind)) || !SIZES.includes(Number(size)))
      throw new Error(`SWITCH_BENCH_ONLY: unknown scenario ${only}`);
    const row = await runScenario(kind, Number(size));
    const t = row.timed;
    console.log(
      `${t.name}: ${t.nsPerOp.toFixed(1)} ns/frame wall, ${t.cpuNsPerOp.toFixed(1)} ns/frame CPU; ` +
        `allocation check ${row.alloc.frames} frames: GCs ${row.alloc.minorGcs}/${row.alloc.majorGcs}, heap ${row.alloc.heapDelta} B; ${row.verify}`,
    );
    console.log(`@@ROW ${JSON.stringify(row)}`);
    return;
  }
  console.log(
    `SR-IOV switch vs the PF alone: batches of ${BATCH}, ${LAPS} batches per timed run, ${ROUNDS} rounds, ` +
      `allocation check over ${ALLOC_FRAMES.toLocaleString('en-US')} frames, GC exposed: ${gcExposed}`,
  );
  const rows = new Map<string, Row[]>();
  for (let round = 0; round < ROUNDS; round++) {
    for (const size of SIZES) {
      for (const kind of ROUND_KINDS) {
        const key = `${kind} ${size}`;
        const r = spawnSync(process.execPath, [...process.execArgv, fileURLToPath(import.meta.url)], {
          // The allocation check once per scenario (first round).
          env: {
            ...process.env,
            SWITCH_BENCH_ONLY: key,
            SWITCH_BENCH_ALLOC_FRAMES: String(round === 0 ? ALLOC_FRAMES : 0),
          },
          encoding: 'utf8',
        });
        if (r.status !== 0) throw new Error(`${key} failed: ${r.stderr}`);
        const line = r.stdout.split('\n').find((l) => l.startsWith('@@ROW '));
        if (line === undefined) throw new Error(`${key}: no result`);
        const row = JSON.parse(line.slice(6)) as Row;
        if (!rows.has(key)) rows.set(key, []);
        rows.get(key)!.push(row);
      }
    }
  }
  const fps = (ns: number) => `${(1e3 / ns).toFixed(2)} M/s`;
  const wall = (r: Row) => r.timed.nsPerOp;
  const cpu = (r: Row) => r.timed.cpuNsPerOp;
  console.log(
    '\nPer-frame time, median over the rounds (CPU time / wall time). Cost = the median over rounds of ' +
      'a / b − 1 (CPU time; wall time in brackets).',
  );
  console.log(
    '\n| frame | PF → uplink (tx) | uplink → PF (rx) | PF tx + rx | PF hairpin (tx → own rx) | VF0 → VF1 | ' +
      'switch cost: VF→VF vs PF tx + rx | of it, nesting: hairpin vs tx + rx | of it, the switch: VF→VF vs hairpin | ' +
      'GCs over the allocation check (tx / rx / hairpin / VF→VF) |',
  );
  console.log('|---|---|---|---|---|---|---|---|---|---|');
  const verdicts: string[] = [];
  for (const size of SIZES) {
    const [tx, rx, loop, vv] = ROUND_KINDS.map((k) => rows.get(`${k} ${size}`)!) as [
      Row[],
      Row[],
      Row[],
      Row[],
    ];
    const t = (rs: Row[], f: (r: Row) => number) => median(rs.map(f));
    const both = (rs: Row[]) => `${t(rs, cpu).toFixed(0)} / ${t(rs, wall).toFixed(0)} ns`;
    const base = (f: (r: Row) => number) => t(tx, f) + t(rx, f);
    const cost = (a: Row[], b: (i: number, f: (r: Row) => number) => number, f: (r: Row) => number) =>
      median(a.map((r, i) => f(r) / b(i, f) - 1));
    const vsBase = (a: Row[], f: (r: Row) => number) => cost(a, (i, g) => g(tx[i]!) + g(rx[i]!), f);
    const vsLoop = (f: (r: Row) => number) => cost(vv, (i, g) => g(loop[i]!), f);
    const gcs = (rs: Row[]) => `${rs[0]!.alloc.minorGcs}/${rs[0]!.alloc.majorGcs}`;
    console.log(
      `| ${size} B | ${both(tx)} | ${both(rx)} | ${base(cpu).toFixed(0)} / ${base(wall).toFixed(0)} ns | ${both(loop)} | ` +
        `${both(vv)} (${fps(t(vv, cpu))}) | ${pct(vsBase(vv, cpu))} (${pct(vsBase(vv, wall))}) | ` +
        `${pct(vsBase(loop, cpu))} (${pct(vsBase(loop, wall))}) | ${pct(vsLoop(cpu))} (${pct(vsLoop(wall))}) | ` +
        `${gcs(tx)} / ${gcs(rx)} / ${gcs(loop)} / ${gcs(vv)} over ${vv[0]!.alloc.frames.toLocaleString('en-US')} frames each |`,
    );
    const m = vsBase(vv, cpu);
    verdicts.push(
      `${size} B: VF→VF ${fps(t(vv, cpu))} (wall ${fps(t(vv, wall))}) beside PF→uplink ${fps(t(tx, cpu))} (wall ${fps(t(tx, wall))}); ` +
        `switch cost ${pct(m)} of a PF tx + rx (goal ≤ +20 %: ${m <= 0.2 ? 'met' : 'NOT met'}); ${vv.at(-1)!.verify}`,
    );
  }
  console.log(`\n${verdicts.join('\n')}`);
}

await main();
