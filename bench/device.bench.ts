/**
 * The virtio-net device's per-frame JS cost, tx and rx, 64 B and 1514 B frames, with a null backend (it
 * drops everything and counts). Tx hands frames over as (region, offset, length) (`transmitRange`); the
 * "view" rows use a backend with only `transmit`, which costs one subarray per frame. Rx: the "direct"
 * rows lend the guest buffer and the bench writes the frame into it as a tap's readv would
 * (BackendSink.lendReceive), the others call `receive` with a frame the device copies. Driven as a guest drives it: the synthetic guest (VirtioNetDriver) brings
 * the device up through the PCI transport; for tx it has a batch of chains posted and kicks once (a BAR
 * write to the notify area); for rx it has buffers posted and frames arrive through the backend sink.
 * Each result is compared with a baseline in the same process that only copies the same bytes.
 * The guest re-posts each batch with a couple of ring stores outside the timed section (the ring layout
 * the real driver wrote once is reused), so only the device runs while the clock runs.
 *
 * The "in-order" rows negotiate VIRTIO_F_IN_ORDER (a tx kick's chains, or a big rx frame's full buffers,
 * complete as one used entry), the "notify-data" rows VIRTIO_F_NOTIFICATION_DATA (the tx kick is a 32-bit
 * write carrying the avail index); each is compared with its plain row of the same run.
 *
 * Run: `npm run bench` (all benches), or `node --expose-gc --import tsx bench/device.bench.ts`.
 * DEVICE_BENCH_ONLY="tx 64" runs one scenario in this process (for --cpu-prof); DEVICE_BENCH_FILTER, a
 * regular expression, runs the scenarios whose names match (e.g. "^tx 64|in-order|notify").
 */
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { LINUX_6_1_FEATURES, VirtioNetDriver } from '../devices/testing/net-driver.js';
import { createVirtioNetPci } from '../devices/virtio-net-pci.js';
import { GuestMemory } from '../lib/memory/guest-memory.js';
import {
  type BackendCapabilities,
  type BackendSink,
  type NetBackend,
  type NetOffload,
  ReceiveTarget,
  type TransmitResult,
} from '../lib/net/backend.js';
import { encodeNotification } from '../virtio/pci/notify.js';
import { InterruptCollector } from '../virtio/testing/pci-driver.js';
import { type BenchResult, bench, gcExposed, report } from './harness.js';

/** Chains per kick (tx) or frames per backend burst (rx); half the 256-entry ring. */
const BATCH = 128;
const LAPS = Number(process.env.DEVICE_BENCH_LAPS ?? 4000);
const GOAL_NS = 300;

/** A backend that drops every guest frame and counts it; the bench calls its sink for rx. */
class NullBackend implements NetBackend {
  readonly capabilities: BackendCapabilities = {
    vnetHeader: true,
    offloads: { csum: true, tso4: true, tso6: true, ecn: true, ufo: true, uso4: true, uso6: true },
    queuePairs: 1,
  };
  sink: BackendSink | null = null;
  packets = 0;
  bytes = 0;
  attach(sink: BackendSink): void {
    this.sink = sink;
  }
  transmit(frame: Uint8Array, _queuePair: number, _offload: NetOffload | null): TransmitResult {
    this.packets++;
    this.bytes += frame.length;
    return 'sent';
  }
  pause(): void {}
  resume(): void {}
  close(): void {}
}

/** The null backend with the allocation-free tx hand-off. */
class NullRangeBackend extends NullBackend {
  transmitRange(
    _bytes: Uint8Array,
    _offset: number,
    length: number,
    _queuePair: number,
    _offload: NetOffload | null,
  ): TransmitResult {
    this.packets++;
    this.bytes += length;
    return 'sent';
  }
}

type Variant =
  | 'rss'
  | 'view'
  | 'direct'
  | 'kernel-rss'
  | 'in-order'
  | 'notify-data'
  | 'in-order+notify-data'
  | undefined;

/** A null backend that applies RSS itself (as a tap with the eBPF steering program does). */
class NullSteeringBackend extends NullRangeBackend {
  constructor() {
    super();
    (this as { capabilities: BackendCapabilities }).capabilities = { ...this.capabilities, queuePairs: 4 };
  }
  setRssSteering(): boolean {
    return true;
  }
}

interface Scenario {
  name: string;
  /** Frames per batch (timed unit). */
  frames: number;
  /** Device work for one batch (timed). */
  device: () => void;
  /** Copies the same bytes, nothing else (timed, the baseline). */
  baseline: () => void;
  /** Guest re-posts the batch (untimed). */
  repost: () => void;
  /** Checks the device did the work (after the runs). */
  verify: () => string;
}

const AVAIL_IDX = 2;
const AVAIL_RING = 4;
const USED_IDX = 2;

/** The 40-byte key of the RSS test vectors (rss-vectors.json). */
const RSS_KEY = Uint8Array.from(
  '6d5a56da255b0ec24167253d43a38fb0d0ca2bcbae7b30b477cb2da38030f20c6a42b73bbeac01fa'
    .match(/../g)!
    .map((h) => Number.parseInt(h, 16)),
);

function setup(direction: 'tx' | 'rx', frameSize: number, variant: Variant): Scenario {
  const rss = variant === 'rss' || variant === 'kernel-rss';
  const inOrder = variant === 'in-order' || variant === 'in-order+notify-data';
  const notifyData = variant === 'notify-data' || variant === 'in-order+notify-data';
  const ramBytes = new Uint8Array(32 << 20);
  const memory = new GuestMemory([{ address: 0, bytes: ramBytes }]);
  const backend =
    variant === 'view'
      ? new NullBackend()
      : variant === 'kernel-rss'
        ? new NullSteeringBackend()
        : new NullRangeBackend();
  let interrupts = 0;
  const dev = createVirtioNetPci({
    memory,
    backend,
    // With RSS: 4 pairs, every hash type, hash report (20-byte header); the table sends every flow to
    // pair 0 so one queue's buffers serve the whole batch while parse + Toeplitz + table lookup run.
    // kernel-rss: the same RSS config without hash report, applied by the backend: frames arrive on
    // their queue and are received directly.
    ...(rss ? { mq: true, rss: true, hash: variant === 'rss', queues: 4 } : {}),
    ...(inOrder ? { in_order: true } : {}),
    ...(notifyData ? { notification_data: true } : {}),
    // The VMM's MSI path: count, nothing else.
    interrupts: {
      msi: () => {
        interrupts++;
      },
    },
  });
  const wanted = LINUX_6_1_FEATURES | (inOrder ? 1n << 35n : 0n) | (notifyData ? 1n << 38n : 0n);
  const drv = new VirtioNetDriver(dev, memory, {
    interrupts: new InterruptCollector(),
    rxBuffers: BATCH,
    wanted,
  });
  const need = wanted & ((1n << 35n) | (1n << 38n));
  if ((drv.open() & need) !== need) throw new Error('IN_ORDER / NOTIFICATION_DATA not negotiated');
  if (rss && drv.setRss({ hashTypes: 0x1ff, table: new Array(128).fill(0), key: RSS_KEY }) !== 0) {
    throw new Error('RSS_CONFIG refused');
  }
  const hdr = drv.hdrSize;
  // Frames larger than one 1548-byte mergeable buffer span several: fewer frames per batch, so that a
  // batch's buffers fit the 256-entry ring (a 65000-byte frame takes 43).
  const perFrame = direction === 'rx' ? Math.ceil((hdr + frameSize) / 1548) : 1;
  const frames = perFrame > 1 ? Math.floor(256 / perFrame) : BATCH;
  const posts = frames * perFrame;
  const index = direction === 'tx' ? drv.txIndex(0) : drv.rxIndex(0);
  const q = drv.queue(index);
  const { driverAddr, deviceAddr, size } = q.config;
  const notifyBar = (drv.pci as unknown as { notify: { bar: number } }).notify.bar;
  const notifyOffset = drv.pci.notifyOffset(index);
  const frame = Uint8Array.from({ length: frameSize }, (_, i) => (i * 13 + 7) & 0xff);
  frame.set([0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00]);
  if (rss) {
    // IPv4/TCP so every frame is parsed and hashed with ports (TCPv4): 20-byte IP header, 20-byte TCP.
    frame.set([0x45, 0, (frameSize - 14) >> 8, (frameSize - 14) & 0xff, 0, 0, 0x40, 0, 64, 6, 0, 0], 14);
    frame.set([10, 0, 0, 1, 10, 0, 0, 2, 0x9c, 0x40, 0x00, 0x50], 26);
    frame[46] = 0x50;
  }

  if (direction === 'tx') {
    // First batch through the real driver: header + frame in one descriptor, as Linux sends.
    for (let i = 0; i < BATCH; i++) drv.send(frame);
    // The driver kicked per frame while posting; now it reclaims and we take over the ring.
    drv.reclaimTx(0);
  }
  // Avail slots beyond the first batch repeat the same heads; re-posting is one avail idx store.
  const heads: number[] = [];
  let availIdx = memory.readU16(driverAddr + AVAIL_IDX);
  for (let i = 0; i < BATCH; i++)
    heads.push(memory.readU16(driverAddr + AVAIL_RING + 2 * ((availIdx - BATCH + i) & (size - 1))));
  for (let s = 0; s < size; s++) memory.writeU16(driverAddr + AVAIL_RING + 2 * s, heads[s % BATCH]!);
  const usedEvent = driverAddr + AVAIL_RING + 2 * size;
  // Frame addresses (for the baseline): the descriptors the driver wrote.
  const descAddr = q.config.descAddr;
  const bufAddr = heads.map((h) => Number(memory.readU64(descAddr + 16 * h)));
  const dv = new DataView(ramBytes.buffer);
  const scratch = new Uint8Array(65_536);
  const bigArea = 24 << 20; // above the driver's rings and buffers
  const bufViews = bufAddr.map((a) => ramBytes.subarray(a, a + hdr + frameSize));
  const hdrBytes = new Uint8Array(hdr);

  let firstLap = direction === 'rx'; // rx: the driver's own posting is the first batch
  const repost = () => {
    // rx: the driver's own BATCH buffers are the start of the first lap.
    const add = direction === 'rx' && firstLap ? posts - BATCH : posts;
    if (add > 0) {
      availIdx = (availIdx + add) & 0xffff;
      dv.setUint16(driverAddr + AVAIL_IDX, availIdx, true);
    }
    firstLap = false;
    // NAPI done: the guest re-arms its interrupt at the current used index (event idx).
    dv.setUint16(usedEvent, dv.getUint16(deviceAddr + USED_IDX, true), true);
  };
  const sink = backend.sink!;
  const target = new ReceiveTarget();
  // What a tap's readv does in the kernel: [header][frame] into the lent buffer (one segment here).
  const wire = new Uint8Array(hdr + frameSize);
  wire.set(frame, hdr);
  const overflow = new Uint8Array(hdr + frameSize);
  // The kernel side of a readv: views of the wire bytes for the usual segment layout (1548-byte buffers),
  // so the simulated copy allocates nothing once the device lends whole frames.
  const wireViews = Array.from({ length: perFrame }, (_, i) =>
    wire.subarray(i * 1548, Math.min(wire.length, (i + 1) * 1548)),
  );
  const readv = () => {
    let pos = 0;
    for (let i = 0; i < target.count && pos < wire.length; i++) {
      const n = Math.min(target.lengths[i]!, wire.length - pos);
      const v = wireViews[i];
      target.bytes[i]!.set(
        v !== undefined && v.length === n && pos === i * 1548 ? v : wire.subarray(pos, pos + n),
        target.offsets[i]!,
      );
      pos += n;
    }
    if (pos < wire.length) overflow.set(wire.subarray(pos));
  };
  const device =
    direction === 'tx'
      ? notifyData
        ? () =>
            dev.barWrite(
              notifyBar,
              notifyOffset,
              4,
              // As int32: what a VMM's 32-bit MMIO write hands over without a heap number.
              encodeNotification(index, availIdx & 0x7fff, (availIdx & 0x8000) !== 0) | 0,
            )
        : () => dev.barWrite(notifyBar, notifyOffset, 2, index)
      : variant === 'direct' || variant === 'kernel-rss'
        ? () => {
            for (let i = 0; i < frames; i++) {
              if (!sink.lendReceive!(0, hdr, target)) throw new Error('no buffer lent');
              readv();
              sink.completeReceive!(wire.length, overflow);
            }
          }
        : () => {
            for (let i = 0; i < frames; i++) sink.receive(frame, 0, null);
          };
  const baseline =
    direction === 'tx'
      ? () => {
          for (let i = 0; i < BATCH; i++) scratch.set(bufViews[i]!);
        }
      : perFrame > 1
        ? () => {
            // Header + frame into consecutive guest RAM (where the device spreads it over buffers).
            for (let i = 0; i < frames; i++) {
              ramBytes.set(hdrBytes, bigArea + i * 65_536 * 2);
              ramBytes.set(frame, bigArea + i * 65_536 * 2 + hdr);
            }
          }
        : () => {
            for (let i = 0; i < BATCH; i++) {
              const a = bufAddr[i]!;
              ramBytes.set(hdrBytes, a);
              ramBytes.set(frame, a + hdr);
            }
          };
  const suffix = {
    rss: ' RSS+hash report',
    view: ' (transmit, a view per frame)',
    direct: ' (direct receive)',
    'kernel-rss': ' RSS applied by the backend (direct receive)',
    'in-order': ' IN_ORDER',
    'notify-data': ' NOTIFICATION_DATA',
    'in-order+notify-data': ' IN_ORDER + NOTIFICATION_DATA',
  };
  const name = `${direction} ${frameSize} B${variant ? suffix[variant] : ''}`;
  const statsBefore = () =>
    dev.stats() as { txPackets: number; rxPackets: number; txDropped: number; rxDropped: number };
  return {
    name,
    frames,
    device,
    baseline,
    repost,
    verify: () => {
      const s = statsBefore();
      return `${name}: device tx ${s.txPackets} (dropped ${s.txDropped}), rx ${s.rxPackets} (dropped ${s.rxDropped}), backend got ${backend.packets}, MSI ${interrupts}, status 0x${(dev.stats() as { status: number }).status.toString(16)}`;
    },
  };
}

interface Row {
  device: BenchResult;
  baseline: BenchResult;
  alloc: { frames: number; heapDelta: number; minorGcs: number; majorGcs: number };
  verify: string;
}

async function runScenario(direction: 'tx' | 'rx', size: number, variant: Variant): Promise<Row> {
  const s = setup(direction, size, variant);
  // Big frames: an eighth as many frames (each is ~40 times the bytes of a 1514-byte one).
  const iterations = s.frames === BATCH ? LAPS : Math.ceil((LAPS * BATCH) / s.frames / 8);
  const device = await bench(`${s.name} device`, s.device, {
    iterations,
    opsPerIteration: s.frames,
    beforeEach: s.repost,
  });
  // The baseline posts nothing: re-posting without the device consuming would overrun the ring.
  const baseline = await bench(`${s.name} baseline (copy only)`, s.baseline, {
    iterations,
    opsPerIteration: s.frames,
  });
  report([baseline]);
  report([device], baseline);
  // Allocation check: a long untimed run of repost + device, heap and GCs over all of it.
  const a = await bench(
    `${s.name} allocation check`,
    () => {
      for (let i = 0; i < iterations; i++) {
        s.repost();
        s.device();
      }
    },
    { iterations: 1, warmup: 0 },
  );
  const alloc = {
    frames: iterations * s.frames,
    heapDelta: a.heapDelta,
    minorGcs: a.minorGcs,
    majorGcs: a.majorGcs,
  };
  console.log(
    `${s.name} allocation check: ${alloc.frames} frames, heap ${alloc.heapDelta >= 0 ? '+' : ''}${alloc.heapDelta} bytes, GCs minor/major ${alloc.minorGcs}/${alloc.majorGcs}`,
  );
  if (process.env.DEVICE_BENCH_ALLOC_PROFILE) await allocationProfile(s);
  const verify = s.verify();
  console.log(verify);
  return { device, baseline, alloc, verify };
}

/** Where the device allocates: V8's sampling heap profiler over a run, garbage included. */
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
    s.device();
  }
  const { profile } = (await session.post('HeapProfiler.stopSampling')) as {
    profile: { head: ProfileNode };
  };
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
  console.log(`${s.name}: sampled allocation sites over ${LAPS * BATCH} frames`);
  for (const [k, v] of [...sites].sort((a, b) => b[1] - a[1]).slice(0, 8)) console.log(`  ${v} B  ${k}`);
}

interface ProfileNode {
  callFrame: { functionName: string; url: string; lineNumber: number };
  selfSize: number;
  children: ProfileNode[];
}

type ScenarioKey = ['tx' | 'rx', number, Variant?];
const SCENARIOS: ScenarioKey[] = [
  ['tx', 64],
  ['tx', 1514],
  ['tx', 64, 'view'],
  ['rx', 64],
  ['rx', 1514],
  ['rx', 64, 'direct'],
  ['rx', 1514, 'direct'],
  // A 64 KiB GSO frame (GUEST_TSO): copied over 43 mergeable buffers, or read into them in place.
  ['rx', 65000],
  ['rx', 65000, 'direct'],
  // Full rx steering cost: parse + Toeplitz + indirection table + hash report, per frame.
  ['rx', 64, 'rss'],
  ['rx', 64, 'kernel-rss'],
];
/**
 * IN_ORDER (one used entry per kick / per big frame) and NOTIFICATION_DATA (32-bit kicks with the avail
 * index), each measured against its plain scenario in one process, runs alternating (a shared machine's
 * load then weighs on both alike); medians of PAIR_RUNS runs each.
 */
const PAIRS: ScenarioKey[] = [
  ['tx', 64, 'in-order'],
  ['tx', 1514, 'in-order'],
  ['tx', 64, 'notify-data'],
  ['tx', 64, 'in-order+notify-data'],
  ['rx', 1514, 'in-order'],
  ['rx', 65000, 'in-order'],
];
const PAIR_RUNS = 11;

interface PairRow {
  name: string;
  plainNs: number[];
  featureNs: number[];
  plainCpuNs: number[];
  featureCpuNs: number[];
}

const median = (v: number[]) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)]!;

async function runPair(key: ScenarioKey): Promise<PairRow> {
  const plain = setup(key[0], key[1], undefined);
  const feature = setup(key[0], key[1], key[2]);
  // Shorter runs than a scenario's, more of them: the pairs alternate more often.
  const iterations = Math.ceil((plain.frames === BATCH ? LAPS : (LAPS * BATCH) / plain.frames / 8) / 2);
  const row: PairRow = { name: feature.name, plainNs: [], featureNs: [], plainCpuNs: [], featureCpuNs: [] };
  for (let r = 0; r < PAIR_RUNS; r++) {
    for (const [s, ns, cpu] of [
      [plain, row.plainNs, row.plainCpuNs],
      [feature, row.featureNs, row.featureCpuNs],
    ] as const) {
      const b = await bench(s.name, s.device, {
        iterations,
        opsPerIteration: s.frames,
        beforeEach: s.repost,
      });
      ns.push(b.nsPerOp);
      cpu.push(b.cpuNsPerOp);
    }
  }
  console.log(plain.verify());
  console.log(feature.verify());
  return row;
}
const scenarioName = ([d, n, v]: ScenarioKey) => `${d} ${n}${v ? ` ${v}` : ''}`;

async function main(): Promise<void> {
  const pair = process.env.DEVICE_BENCH_PAIR;
  if (pair !== undefined) {
    const sc = PAIRS.find((x) => scenarioName(x) === pair);
    if (sc === undefined) throw new Error(`DEVICE_BENCH_PAIR: unknown pair ${pair}`);
    console.log(`@@PAIR ${JSON.stringify(await runPair(sc))}`);
    return;
  }
  const only = process.env.DEVICE_BENCH_ONLY;
  if (only !== undefined) {
    const sc = SCENARIOS.find((x) => scenarioName(x) === only);
    if (sc === undefined) throw new Error(`DEVICE_BENCH_ONLY: unknown scenario ${only}`);
    const row = await runScenario(sc[0], sc[1], sc[2]);
    console.log(`@@ROW ${JSON.stringify(row)}`);
    return;
  }
  console.log(
    `virtio-net device, null backend: batches of ${BATCH}, ${LAPS} batches per run, GC exposed: ${gcExposed}`,
  );
  const rows: Row[] = [];
  const filter = process.env.DEVICE_BENCH_FILTER;
  for (const sc of SCENARIOS) {
    if (filter !== undefined && !new RegExp(filter).test(scenarioName(sc))) continue;
    // One process per scenario: call sites stay as monomorphic as in a VMM with one traffic mix.
    const r = spawnSync(process.execPath, [...process.execArgv, fileURLToPath(import.meta.url)], {
      env: { ...process.env, DEVICE_BENCH_ONLY: scenarioName(sc) },
      encoding: 'utf8',
    });
    if (r.status !== 0) throw new Error(`${scenarioName(sc)} failed: ${r.stderr}`);
    for (const line of r.stdout.split('\n')) {
      if (line.startsWith('@@ROW ')) rows.push(JSON.parse(line.slice(6)) as Row);
      else if (line !== '') console.log(line);
    }
  }
  const pairs: PairRow[] = [];
  for (const sc of PAIRS) {
    if (filter !== undefined && !new RegExp(filter).test(scenarioName(sc))) continue;
    const r = spawnSync(process.execPath, [...process.execArgv, fileURLToPath(import.meta.url)], {
      env: { ...process.env, DEVICE_BENCH_PAIR: scenarioName(sc) },
      encoding: 'utf8',
    });
    if (r.status !== 0) throw new Error(`${scenarioName(sc)} failed: ${r.stderr}`);
    for (const line of r.stdout.split('\n')) {
      if (line.startsWith('@@PAIR ')) pairs.push(JSON.parse(line.slice(7)) as PairRow);
      else if (line !== '' && !line.includes(' ns/op ')) console.log(line);
    }
  }
  console.log(
    '\n| path, frame | device Mpps | JS ns/frame | copy-only baseline Mpps | device/baseline | GCs minor/major (timed) | heap growth, GCs over allocation check |',
  );
  console.log('|---|---|---|---|---|---|---|');
  for (const { device: d, baseline: b, alloc: a } of rows) {
    console.log(
      `| ${d.name.replace(' device', '')} | ${(d.opsPerSec / 1e6).toFixed(2)} | ${d.nsPerOp.toFixed(0)} | ${(b.opsPerSec / 1e6).toFixed(2)} | ${(d.opsPerSec / b.opsPerSec).toFixed(3)} | ${d.minorGcs}/${d.majorGcs} over ${d.ops.toLocaleString('en-US')} | ${a.heapDelta} B, ${a.minorGcs}/${a.majorGcs} over ${a.frames.toLocaleString('en-US')} frames |`,
    );
  }
  if (pairs.length > 0) {
    // Each run's ratio against the plain run right before it (both under the same load), then the median.
    const ratio = (f: number[], p: number[]) => median(f.map((x, i) => x / p[i]!));
    console.log(
      `\n| features, path, frame | ns/frame with / without (medians of ${PAIR_RUNS}) | ratio (median of run pairs) | CPU-time ratio | runs with / without |`,
    );
    console.log('|---|---|---|---|---|');
    for (const p of pairs) {
      const runs = `${p.featureNs.map((x) => x.toFixed(0)).join(' ')} / ${p.plainNs.map((x) => x.toFixed(0)).join(' ')}`;
      console.log(
        `| ${p.name} | ${median(p.featureNs).toFixed(0)} / ${median(p.plainNs).toFixed(0)} | ${ratio(p.featureNs, p.plainNs).toFixed(3)} | ${ratio(p.featureCpuNs, p.plainCpuNs).toFixed(3)} | ${runs} |`,
      );
    }
  }
  const tx64 = rows.find((r) => r.device.name.startsWith('tx 64 '));
  if (tx64)
    console.log(
      `\ngoal: < ${GOAL_NS} ns JS per 64 B frame: tx ${tx64.device.nsPerOp.toFixed(0)} ns ${tx64.device.nsPerOp < GOAL_NS ? 'met' : 'NOT met'}`,
    );
}

await main();
