/**
 * Virtqueue throughput: chains popped + pushed per second, 1- and 4-descriptor chains, split and packed
 * rings, each as a ratio to a baseline that only reads the same descriptors through a DataView.
 * The driver side re-posts each lap with a few DataView stores outside the timed section.
 * Run: `npx tsx bench/virtqueue.bench.ts` (or `node --expose-gc --import tsx ...` for exact heap numbers).
 */
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { GuestMemory } from '../lib/memory/guest-memory.js';
import { createVirtqueue } from '../virtio/queue/create-virtqueue.js';
import { BumpAllocator } from '../virtio/testing/bump-allocator.js';
import { PackedDriverQueue } from '../virtio/testing/packed-driver.js';
import { SplitDriverQueue } from '../virtio/testing/split-driver.js';
import { DescriptorChain } from '../virtio/queue/virtqueue.js';
import { type BenchResult, bench, gcExposed, report } from './harness.js';

const QUEUE_SIZE = 256;
const BASE = 0x10_0000;
const LAPS = Number(process.env.VQ_BENCH_LAPS ?? 20_000);

interface Scenario {
  name: string;
  /** Pops and pushes one lap of chains (device side under test). */
  device: () => void;
  /** Reads the same descriptors with a DataView, nothing else. */
  baseline: () => void;
  /** Driver re-posts the lap (untimed). */
  repost: () => void;
  chainsPerLap: number;
}

function setup(packed: boolean, descsPerChain: number): Scenario {
  const bytes = new Uint8Array(0x10_0000);
  const dv = new DataView(bytes.buffer);
  const mem = new GuestMemory([{ address: BASE, bytes }]);
  const alloc = new BumpAllocator(BASE, BASE + bytes.length);
  const chains = QUEUE_SIZE / descsPerChain;
  const segs = (i: number) =>
    Array.from({ length: descsPerChain }, (_, k) => ({
      addr: BASE + 0x8_0000 + 2048 * ((i * descsPerChain + k) % 256),
      len: 1500,
    }));
  const drv = packed
    ? PackedDriverQueue.allocate(mem, alloc, QUEUE_SIZE)
    : SplitDriverQueue.allocate(mem, alloc, QUEUE_SIZE);
  // First lap through the real driver: it lays out every descriptor once.
  const heads: number[] = [];
  for (let i = 0; i < chains; i++) {
    const s = segs(i);
    heads.push(drv.add(s.slice(0, descsPerChain >> 1), s.slice(descsPerChain >> 1)));
  }
  const q = createVirtqueue(mem, drv.config, packed);
  const chain = new DescriptorChain();
  const o = (a: number) => a - BASE;
  const ring = o(drv.config.descAddr);
  const name = `${packed ? 'packed' : 'split'} ${descsPerChain}-desc`;

  if (!packed) {
    // Avail slots beyond the first lap repeat the same heads, so re-posting is one idx store.
    const avail = o(drv.config.driverAddr);
    for (let s = 0; s < QUEUE_SIZE; s++) dv.setUint16(avail + 4 + 2 * s, heads[s % chains]!, true);
    let availIdx = chains;
    let lastSeen = 0;
    return {
      name,
      chainsPerLap: chains,
      device: () => {
        while (q.pop(chain)) q.addUsed(chain, 1500);
        q.publishUsed();
        q.needsNotification();
      },
      repost: () => {
        // The first lap was posted by the driver; afterwards bump avail idx by a lap.
        if (lastSeen++ === 0) return;
        availIdx = (availIdx + chains) & 0xffff;
        dv.setUint16(avail + 2, availIdx, true);
      },
      baseline: () => {
        let acc = 0;
        const idx = dv.getUint16(avail + 2, true);
        for (let c = 0; c < chains; c++) {
          let d = dv.getUint16(avail + 4 + 2 * ((idx + c) & (QUEUE_SIZE - 1)), true);
          for (let k = 0; k < descsPerChain; k++) {
            const p = ring + 16 * d;
            acc += dv.getUint32(p, true) + dv.getUint32(p + 4, true) * 2 ** 32 + dv.getUint32(p + 8, true);
            const flags = dv.getUint16(p + 12, true);
            d = dv.getUint16(p + 14, true);
            acc ^= flags;
          }
        }
        sink ^= acc;
      },
    };
  }

  // Packed: re-posting rewrites, per chain, the first slot's len/id (the used descriptor overwrote
  // them) and every slot's flags with the driver's new wrap counter.
  let wrap = false; // the first lap (wrap 1) was posted by the driver
  let first = true;
  return {
    name,
    chainsPerLap: chains,
    device: () => {
      while (q.pop(chain)) q.addUsed(chain, 1500);
      q.publishUsed();
      q.needsNotification();
    },
    repost: () => {
      if (first) {
        first = false;
        return;
      }
      const bits = wrap ? 0x80 : 0x8000;
      for (let c = 0; c < chains; c++) {
        for (let k = descsPerChain - 1; k >= 0; k--) {
          const p = ring + 16 * (c * descsPerChain + k);
          if (k === 0) {
            dv.setUint32(p + 8, 1500, true);
            dv.setUint16(p + 12, heads[c]!, true);
          }
          const write = k >= descsPerChain >> 1 ? 2 : 0;
          dv.setUint16(p + 14, bits | write | (k < descsPerChain - 1 ? 1 : 0), true);
        }
      }
      wrap = !wrap;
    },
    baseline: () => {
      let acc = 0;
      for (let s = 0; s < QUEUE_SIZE; s++) {
        const p = ring + 16 * s;
        acc += dv.getUint32(p, true) + dv.getUint32(p + 4, true) * 2 ** 32 + dv.getUint32(p + 8, true);
        acc ^= dv.getUint16(p + 12, true) ^ dv.getUint16(p + 14, true);
      }
      sink ^= acc;
    },
  };
}

let sink = 0;

interface Row {
  device: BenchResult;
  baseline: BenchResult;
  alloc: { chains: number; heapDelta: number; minorGcs: number; majorGcs: number };
}

/** Heap growth over a long untimed run of repost + pop/push (exact with --expose-gc). */
async function allocationCheck(s: Scenario, laps: number): Promise<Row['alloc']> {
  for (let i = 0; i < 100; i++) {
    s.repost();
    s.device();
  }
  const r = await bench(
    `${s.name} allocation check`,
    () => {
      for (let i = 0; i < laps; i++) {
        s.repost();
        s.device();
      }
    },
    { iterations: 1, warmup: 0 },
  );
  return {
    chains: laps * s.chainsPerLap,
    heapDelta: r.heapDelta,
    minorGcs: r.minorGcs,
    majorGcs: r.majorGcs,
  };
}

async function runScenario(packed: boolean, n: number): Promise<Row> {
  const s = setup(packed, n);
  const opts = { iterations: LAPS, opsPerIteration: s.chainsPerLap, beforeEach: s.repost };
  const device = await bench(`${s.name} pop+push`, s.device, opts);
  const baseline = await bench(`${s.name} baseline (DataView reads)`, s.baseline, {
    iterations: LAPS,
    opsPerIteration: s.chainsPerLap,
  });
  report([baseline]);
  report([device], baseline);
  const alloc = await allocationCheck(s, LAPS);
  console.log(
    `${s.name} allocation check: ${alloc.chains} chains, heap ${alloc.heapDelta >= 0 ? '+' : ''}${alloc.heapDelta} bytes, GCs minor/major ${alloc.minorGcs}/${alloc.majorGcs}`,
  );
  return { device, baseline, alloc };
}

const SCENARIOS: [boolean, number][] = [
  [false, 1],
  [false, 4],
  [true, 1],
  [true, 4],
];
const scenarioName = ([packed, n]: [boolean, number]) => `${packed ? 'packed' : 'split'} ${n}-desc`;

async function main(): Promise<void> {
  const only = process.env.VQ_BENCH_ONLY;
  if (only !== undefined) {
    // Child: one scenario, so the ring's call sites stay monomorphic as in a VMM using one format.
    const sc = SCENARIOS.find((x) => scenarioName(x) === only);
    if (sc === undefined) throw new Error(`VQ_BENCH_ONLY: unknown scenario ${only}`);
    const row = await runScenario(sc[0], sc[1]);
    console.log(`@@ROW ${JSON.stringify(row)}`);
    if (sink === 42) console.log(''); // keep the baseline's reads alive
    return;
  }
  console.log(`virtqueue: queue size ${QUEUE_SIZE}, ${LAPS} laps per run, GC exposed: ${gcExposed}`);
  const rows: Row[] = [];
  for (const sc of SCENARIOS) {
    const r = spawnSync(process.execPath, [...process.execArgv, fileURLToPath(import.meta.url)], {
      env: { ...process.env, VQ_BENCH_ONLY: scenarioName(sc) },
      encoding: 'utf8',
    });
    if (r.status !== 0) throw new Error(`${scenarioName(sc)} failed: ${r.stderr}`);
    for (const line of r.stdout.split('\n')) {
      if (line.startsWith('@@ROW ')) rows.push(JSON.parse(line.slice(6)) as Row);
      else if (line !== '') console.log(line);
    }
  }
  console.log(
    '\n| ring, chain | device chains/s | ns/chain | baseline chains/s | ratio | GCs minor/major (timed) | heap growth over allocation check |',
  );
  console.log('|---|---|---|---|---|---|---|');
  for (const { device: d, baseline: b, alloc: a } of rows) {
    console.log(
      `| ${d.name.replace(' pop+push', '')} | ${(d.opsPerSec / 1e6).toFixed(2)} M | ${d.nsPerOp.toFixed(1)} | ${(b.opsPerSec / 1e6).toFixed(2)} M | ${(d.opsPerSec / b.opsPerSec).toFixed(2)} | ${d.minorGcs}/${d.majorGcs} over ${d.ops.toLocaleString('en-US')} | ${a.heapDelta} B, GCs ${a.minorGcs}/${a.majorGcs} over ${a.chains.toLocaleString('en-US')} chains |`,
    );
  }
}

await main();
