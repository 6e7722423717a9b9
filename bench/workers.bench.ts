/**
 * Queue pairs on worker threads (`workers: true`, docs/workers.md) on a real multiqueue tap: frames/s
 * with 1 and 2 queue pairs, each pair on its own worker, both directions, and the 2-vs-1 ratio measured
 * in the same run (root only; creates its own network namespace and tap per row and removes them).
 *
 *   node --import tsx bench/workers.bench.ts     # prints a markdown table (docs/performance.md)
 *
 * guest -> tap: per pair, the synthetic guest lays out 256 tx chains (header + 64 B frame in one
 * descriptor, to a MAC nobody owns) and re-posts them 128 at a time with one kick per batch whenever the
 * device has completed a batch; completions are noticed from the used-buffer interrupts the workers
 * hand to this thread. tap -> guest: with the workers stopped (their tap queues unread), a sender in the
 * namespace queues N UDP datagrams over 64 flows (with 2 pairs the guest's RSS, applied in the kernel by
 * the tap's eBPF program, puts 32 flows on each queue); then the workers start and the guest re-posts
 * consumed rx buffers on each interrupt until all N arrived. Rounds alternate 1 and 2 pairs (ABAB), with
 * a pause between rows; ratios are medians over rounds (an even count averages the middle two).
 * Environment: WORKERS_BENCH_ROUNDS (4), _RING (256), _RX_FRAMES (200000), _WARMUP (0.25 of a row),
 * _SETTLE_MS (500), _ONLY (e.g. "tap->guest 2").
 * Handoffs per frame: doorbells (kicks) + interrupt wake-ups of this thread + control requests, over
 * the frames moved; the requests made while frames move are counted apart and must be 0.
 */

import { readdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import { VirtioNetDriver } from '../devices/testing/net-driver.js';
import { noHandoffs } from '../devices/virtio-net/workers/handle.js';
import type { WorkerPool } from '../devices/virtio-net/workers/pool.js';
import { createVirtioNetPci, type VirtioNetPci } from '../devices/virtio-net-pci.js';
import { NetNamespace, netnsUnavailableReason, uniqueName } from '../lib/host/netns.js';
import { memoryFence } from '../lib/memory/fence.js';
import { GuestMemory } from '../lib/memory/guest-memory.js';
import { toeplitzHash } from '../lib/net/toeplitz.js';
import { TapBackend } from '../lib/tap/tap-backend.js';
import { InterruptCollector } from '../virtio/testing/pci-driver.js';

const RING = Number(process.env.WORKERS_BENCH_RING ?? 256);
const BATCH = 128;
const ROUNDS = Number(process.env.WORKERS_BENCH_ROUNDS ?? 4);
const TX_FRAMES = 400_000; // per round, over all pairs
const SETTLE_MS = Number(process.env.WORKERS_BENCH_SETTLE_MS ?? 500);
const RX_FRAMES = Number(process.env.WORKERS_BENCH_RX_FRAMES ?? 200_000);
/** Frames moved before each measured row (new workers start with a cold JIT). */
const WARMUP = Number(process.env.WORKERS_BENCH_WARMUP ?? 0.25);
const TX_WARMUP = Math.round((TX_FRAMES * WARMUP) / BATCH) * BATCH || BATCH;
const RX_WARMUP = Math.max(1, Math.round(RX_FRAMES * WARMUP));
const KERNEL_IP = '10.79.0.1';
const GUEST_IP = '10.79.0.2';
const GUEST_MAC = '02:00:00:00:00:02';
/** The rx flows: UDP from this port to `RX_PORTS`, chosen so RSS with `RSS_KEY` splits them 32 / 32. */
const RX_SPORT = 40000;
const RSS_KEY = Uint8Array.from({ length: 40 }, (_, i) => (i * 29 + 3) & 0xff);
const RSS_TABLE = Array.from({ length: 128 }, (_, i) => i & 1);
const RX_PORTS = rxPorts(64);

/** `n` destination ports whose Toeplitz hash (VIRTIO 1.3 §5.1.6.4.3, UDPv4) picks queue 0 and 1 alternately. */
function rxPorts(n: number): number[] {
  const ip = (a: string) => a.split('.').map(Number);
  const input = Uint8Array.from([...ip(KERNEL_IP), ...ip(GUEST_IP), RX_SPORT >> 8, RX_SPORT & 0xff, 0, 0]);
  const ports: number[] = [];
  for (let port = 10000; ports.length < n; port++) {
    input[10] = port >> 8;
    input[11] = port & 0xff;
    const q = RSS_TABLE[toeplitzHash(RSS_KEY, input) & (RSS_TABLE.length - 1)];
    if (q === (ports.length & 1)) ports.push(port);
  }
  return ports;
}

const SENDER = `
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
s.bind(('', int(sys.argv[4])))
ports = [int(p) for p in sys.argv[5].split(',')]
payload = bytes(int(sys.argv[2]))
sent = 0
for i in range(int(sys.argv[3])):
    try:
        s.sendto(payload, (sys.argv[1], ports[i % len(ports)])); sent += 1
    except OSError:
        pass
print(sent)
`;

/** CPU ticks (utime + stime) of each thread of this process, by tid, with its name. */
function threadTicks(): Map<string, { name: string; ticks: number }> {
  const m = new Map<string, { name: string; ticks: number }>();
  for (const tid of readdirSync('/proc/self/task')) {
    try {
      const st = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
      const close = st.lastIndexOf(')');
      const f = st.slice(close + 2).split(' ');
      m.set(tid, { name: st.slice(st.indexOf('(') + 1, close), ticks: Number(f[11]) + Number(f[12]) });
    } catch {
      // exited
    }
  }
  return m;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length & 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** The guest's view of one queue's indices (avail slots already hold the heads to re-post). */
class Ring {
  readonly dv: DataView;
  availIdx: number;
  lastUsed: number;
  outstanding = 0;
  constructor(
    ram: Uint8Array,
    readonly driverAddr: number,
    readonly deviceAddr: number,
    readonly notify: () => void,
  ) {
    this.dv = new DataView(ram.buffer);
    this.availIdx = this.dv.getUint16(driverAddr + 2, true);
    this.lastUsed = this.dv.getUint16(deviceAddr + 2, true);
  }
  /** Used entries since the last call; asks for an interrupt at the next one (used_event). */
  takeUsed(): number {
    let n = 0;
    // As virtqueue_enable_cb: after moving used_event, look again (an entry published before the
    // device saw the new used_event would otherwise never interrupt).
    for (;;) {
      const u = this.dv.getUint16(this.deviceAddr + 2, true);
      n += (u - this.lastUsed) & 0xffff;
      this.lastUsed = u;
      this.dv.setUint16(this.driverAddr + 4 + 2 * RING, u, true);
      memoryFence();
      if (this.dv.getUint16(this.deviceAddr + 2, true) === u) return n;
    }
  }
  post(n: number): void {
    this.availIdx = (this.availIdx + n) & 0xffff;
    this.dv.setUint16(this.driverAddr + 2, this.availIdx, true);
  }
}

interface Row {
  pairs: number;
  fps: number;
  perPair: number[];
  doorbells: number;
  wakeups: number;
  requestsWhileMoving: number;
  frames: number;
  /** Threads busier than 3 % of the time (name: cores), from /proc/self/task (10 ms ticks). */
  threads: string;
  /** CPU time of this process (every thread) per wall-clock second while frames moved. */
  cores: number;
}

interface Setup {
  ns: NetNamespace;
  tap: TapBackend;
  dev: VirtioNetPci;
  drv: VirtioNetDriver;
  ram: Uint8Array;
  /** Null: the one-thread device (the baseline row). */
  pool: WorkerPool | null;
  onInterrupt: { fn: () => void };
  dispose(): void;
}

function setUp(pairs: number, workers = true): Setup {
  const ns = NetNamespace.create('vwb');
  const tap = TapBackend.open({ name: uniqueName('vwb'), queues: pairs });
  let dev: VirtioNetPci | undefined;
  try {
    ns.adopt(tap.name);
    ns.exec('sysctl', ['-q', '-w', `net.ipv6.conf.${tap.name}.disable_ipv6=1`]);
    ns.ip('link', 'set', 'dev', tap.name, 'txqueuelen', String(Math.max(RX_FRAMES, RX_WARMUP) + 1000));
    ns.configure(tap.name, `${KERNEL_IP}/24`);
    ns.ip('neigh', 'replace', GUEST_IP, 'lladdr', GUEST_MAC, 'dev', tap.name, 'nud', 'permanent');
    const ram = new Uint8Array(new SharedArrayBuffer(64 << 20));
    const memory = new GuestMemory([{ address: 0, bytes: ram }]);
    const onInterrupt = { fn: () => {} };
    dev = createVirtioNetPci({
      memory,
      backend: tap,
      interrupts: { msi: () => onInterrupt.fn() },
      mac: GUEST_MAC,
      queues: pairs,
      mq: pairs > 1,
      rss: pairs > 1,
      rx_queue_size: RING,
      tx_queue_size: RING,
      workers,
    });
    const drv = new VirtioNetDriver(dev, memory, { interrupts: new InterruptCollector() });
    drv.open(); // posts 256 rx buffers per pair, VQ_PAIRS_SET to every pair
    // With 2 pairs the guest sets RSS, which the tap applies in the kernel (eBPF): the rx flows split
    // evenly (tun's automq hash would split them unevenly, capping the 2-vs-1 ratio by the bigger share).
    if (pairs > 1) {
      const hashTypes = 0x3f; // IPv4/6, TCPv4/6, UDPv4/6
      if (drv.setRss({ hashTypes, table: RSS_TABLE, key: RSS_KEY, unclassified: 0 }) !== 0)
        throw new Error('the device refused the RSS configuration');
      if (!tap.rssSteeringActive) throw new Error(`no kernel RSS steering: ${tap.lastError?.message}`);
    }
    const d = dev;
    return {
      ns,
      tap,
      dev: d,
      drv,
      ram,
      pool: (d.net.dataPlane as WorkerPool | null) ?? null,
      onInterrupt,
      dispose() {
        d.close();
        ns.delete();
      },
    };
  } catch (e) {
    if (dev) dev.close();
    else tap.close();
    ns.delete();
    throw e;
  }
}

function ringOf(s: Setup, index: number): Ring {
  const q = s.drv.queue(index);
  const bar = (s.drv.pci as unknown as { notify: { bar: number } }).notify.bar;
  const off = s.drv.pci.notifyOffset(index);
  return new Ring(s.ram, q.config.driverAddr, q.config.deviceAddr, () => s.dev.barWrite(bar, off, 2, index));
}

/** Runs until `target` frames moved; `step` is called on each interrupt (and once to start). */
async function drive(s: Setup, step: () => boolean, timeoutMs: number): Promise<void> {
  let finished = false;
  let scheduled = false;
  const done = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('timed out')), timeoutMs);
    const run = () => {
      scheduled = false;
      if (finished) return;
      if (step()) {
        finished = true;
        clearTimeout(timer);
        resolve();
      }
    };
    s.onInterrupt.fn = () => {
      if (!scheduled) {
        scheduled = true;
        setImmediate(run);
      }
    };
    run();
  });
  try {
    await done;
  } finally {
    s.onInterrupt.fn = () => {};
  }
}

/** Guest -> tap: each pair keeps one or two batches of 128 chains in flight until `TX_FRAMES` are sent. */
async function benchTx(s: Setup, pairs: number): Promise<Row> {
  const frame = new Uint8Array(64);
  frame.set([0x02, 0, 0, 0, 0, 0x99, 0x02, 0, 0, 0, 0, 0x02, 0x08, 0x00]); // to a MAC nobody owns
  const rings: Ring[] = [];
  for (let p = 0; p < pairs; p++) {
    const r0 = ringOf(s, s.drv.txIndex(p));
    // 256 distinct chains in avail slots (no kick); then the idx goes back, so avail slot i always
    // names chain i and posting is an idx store.
    for (let i = 0; i < RING; i++) s.drv.send(frame, { pair: p, kick: false });
    r0.dv.setUint16(r0.driverAddr + 2, r0.availIdx, true);
    rings.push(r0);
  }
  // A warm-up run (the workers are new: their JIT starts cold), then the measured one.
  await txRun(s, rings, pairs, TX_WARMUP);
  return txRun(s, rings, pairs, TX_FRAMES);
}

async function txRun(s: Setup, rings: Ring[], pairs: number, target: number): Promise<Row> {
  const quota = Math.ceil(target / pairs / BATCH) * BATCH;
  const posted = rings.map(() => 0);
  const done = rings.map(() => 0);
  const before = handoffs(s);
  const tapBefore = s.tap.stats().txFrames + sumTap(s, 'tapTx');
  const cpu0 = process.cpuUsage();
  const ticks0 = threadTicks();
  const t0 = process.hrtime.bigint();
  await drive(
    s,
    () => {
      let total = 0;
      for (const [p, r] of rings.entries()) {
        const n = r.takeUsed();
        r.outstanding -= n;
        done[p]! += n;
        let kick = false;
        while (r.outstanding <= RING - BATCH && posted[p]! < quota) {
          r.post(BATCH);
          r.outstanding += BATCH;
          posted[p]! += BATCH;
          kick = true;
        }
        if (kick) r.notify();
        total += done[p]!;
      }
      return total >= pairs * quota;
    },
    60_000,
  );
  const t1 = process.hrtime.bigint();
  const cpu = process.cpuUsage(cpu0);
  const frames = done.reduce((a, b) => a + b, 0);
  await sleep(20); // the workers publish their tap counters
  const sent = s.tap.stats().txFrames + sumTap(s, 'tapTx') - tapBefore;
  if (sent !== frames) throw new Error(`tx: the tap wrote ${sent} of ${frames} frames`);
  return row(s, pairs, frames, t0, t1, before, done, cpu, ticks0);
}

function handoffs(s: Setup): WorkerPool['handoffs'] {
  return s.pool ? { ...s.pool.handoffs } : noHandoffs();
}

function sumTap(s: Setup, k: 'tapTx' | 'tapRx'): number {
  return s.pool?.workerCounters().reduce((a, c) => a + c[k], 0) ?? 0;
}

function row(
  s: Setup,
  pairs: number,
  frames: number,
  t0: bigint,
  t1: bigint,
  before: WorkerPool['handoffs'],
  perPair: number[],
  cpu: NodeJS.CpuUsage,
  ticks0: Map<string, { name: string; ticks: number }>,
): Row {
  const h = handoffs(s);
  const wall = Number(t1 - t0) / 1e9;
  const busy: string[] = [];
  for (const [tid, t] of threadTicks()) {
    const d = (t.ticks - (ticks0.get(tid)?.ticks ?? 0)) / 100 / wall;
    if (d >= 0.03) busy.push(`${tid === String(process.pid) ? 'main' : t.name}:${d.toFixed(2)}`);
  }
  return {
    cores: (cpu.user + cpu.system) / 1e6 / wall,
    threads: busy.join(' '),
    pairs,
    fps: frames / (Number(t1 - t0) / 1e9),
    perPair: [...perPair],
    doorbells: h.doorbells - before.doorbells,
    wakeups: h.interruptWakeups - before.interruptWakeups,
    requestsWhileMoving: h.requests - before.requests,
    frames,
  };
}

/** Tap -> guest: `RX_FRAMES` datagrams queued in the tap while the workers are stopped, then drained. */
async function benchRx(s: Setup, pairs: number): Promise<Row> {
  const rings = Array.from({ length: pairs }, (_, p) => ringOf(s, s.drv.rxIndex(p)));
  await rxRun(s, rings, pairs, RX_WARMUP); // warm-up
  return rxRun(s, rings, pairs, RX_FRAMES);
}

async function rxRun(s: Setup, rings: Ring[], pairs: number, count: number): Promise<Row> {
  for (const r of rings) r.takeUsed();
  if (s.pool) s.pool.stop();
  else for (let q = 0; q < pairs; q++) s.tap.pause(q);
  const sent = Number(
    s.ns
      .exec('python3', ['-c', SENDER, GUEST_IP, '22', String(count), String(RX_SPORT), RX_PORTS.join(',')], {
        timeoutMs: 120_000,
      })
      .trim(),
  );
  if (sent !== count) throw new Error('the sender could not queue every datagram');
  const done = rings.map(() => 0);
  const cpu0 = process.cpuUsage();
  const ticks0 = threadTicks();
  const t0 = process.hrtime.bigint();
  if (s.pool) s.pool.start();
  else for (let q = 0; q < pairs; q++) s.tap.resume(q);
  const before = handoffs(s);
  await drive(
    s,
    () => {
      let total = 0;
      for (const [p, r] of rings.entries()) {
        const n = r.takeUsed();
        if (n > 0) {
          done[p]! += n;
          r.post(n); // NAPI: consume, re-post the same buffers, kick
          r.notify();
        }
        total += done[p]!;
      }
      return total >= count;
    },
    60_000,
  );
  const t1 = process.hrtime.bigint();
  const cpu = process.cpuUsage(cpu0);
  const frames = done.reduce((a, b) => a + b, 0);
  if (frames !== count) throw new Error(`rx: the guest got ${frames} of ${count}`);
  const st = s.dev.stats() as unknown as { rxDropped: number };
  if (process.env.WORKERS_BENCH_DEBUG) {
    const q = (s.dev.stats() as unknown as { queues: Record<string, number>[] }).queues;
    console.error(
      `rx ${pairs} workers ${s.pool !== null}: backlogged ${q.map((x) => x.rxBacklogged)} interrupts ${q.map((x) => x.rxInterrupts)} kicks ${q.map((x) => x.rxKicks)} packets ${q.map((x) => x.rxPackets)}`,
    );
  }
  if (st.rxDropped !== 0) throw new Error(`rx: the device dropped ${st.rxDropped} frames`);
  return row(s, pairs, frames, t0, t1, before, done, cpu, ticks0);
}

/**
 * The machine's own parallelism at this moment: `threads` worker threads, each a raw koffi write loop
 * of `frames` vnet-header + 64 B frames on its own queue fd of the tap (no device). Frames/s over all.
 */
async function rawWrites(fds: readonly number[], threads: number, frames: number): Promise<number> {
  const koffi = createRequire(import.meta.url).resolve('koffi');
  const code = `
    const { workerData, parentPort } = require('node:worker_threads');
    const koffi = require(workerData.koffi);
    const write = koffi.load('libc.so.6').func('long write(int, const uint8_t *, size_t)');
    const buf = new Uint8Array(76);
    buf.set([0x02, 0, 0, 0, 0, 0x99, 0x02, 0, 0, 0, 0, 0x02, 0x08, 0x00], 12);
    for (let i = 0; i < 20000; i++) write(workerData.fd, buf, 76); // warm-up
    const go = new Int32Array(workerData.go);
    parentPort.postMessage('ready');
    Atomics.wait(go, 0, 0);
    for (let i = 0; i < workerData.frames; i++) write(workerData.fd, buf, 76);
    parentPort.postMessage('done');`;
  const go = new SharedArrayBuffer(4);
  const ws = fds
    .slice(0, threads)
    .map((fd) => new Worker(code, { eval: true, workerData: { koffi, fd, frames, go } }));
  const next = (w: Worker) => new Promise<void>((r) => w.once('message', () => r()));
  await Promise.all(ws.map(next));
  const t0 = process.hrtime.bigint();
  const finished = Promise.all(ws.map(next));
  Atomics.store(new Int32Array(go), 0, 1);
  Atomics.notify(new Int32Array(go), 0);
  await finished;
  const t1 = process.hrtime.bigint();
  await Promise.all(ws.map((w) => w.terminate()));
  return (threads * frames) / (Number(t1 - t0) / 1e9);
}

async function main(): Promise<void> {
  const why = netnsUnavailableReason();
  if (why) {
    console.error(`workers bench ${why}; skipped`);
    return;
  }
  const results: Record<string, Row[]> = {};
  const only = process.env.WORKERS_BENCH_ONLY; // e.g. "guest->tap 1"
  // The raw control, same run: 1 and 2 threads writing to a 2-queue tap, ABAB.
  const raw: Record<number, number[]> = { 1: [], 2: [] };
  if (!only) {
    const s = setUp(2);
    try {
      for (let r = 0; r < ROUNDS; r++)
        for (const t of r & 1 ? [2, 1] : [1, 2]) raw[t]!.push(await rawWrites(s.tap.fds, t, 200_000 / t));
    } finally {
      s.dispose();
    }
  }
  for (const direction of ['guest->tap', 'tap->guest'] as const) {
    if (only && !only.startsWith(direction)) continue;
    for (let r = 0; r < ROUNDS; r++) {
      for (const pairs of r & 1 ? [2, 1, 0] : [0, 1, 2]) {
        if (only && only !== direction && only !== `${direction} ${pairs}`) continue;
        // 0: the baseline, 1 pair on this thread (workers off).
        const s = setUp(Math.max(pairs, 1), pairs > 0);
        try {
          const n = Math.max(pairs, 1);
          const row = direction === 'guest->tap' ? await benchTx(s, n) : await benchRx(s, n);
          const key = `${direction} ${pairs}`;
          results[key] = [...(results[key] ?? []), row];
        } finally {
          s.dispose();
        }
        // The kernel tears the namespace down in the background (a workqueue): let it finish before
        // the next row, which otherwise shares the cores with it (rounds alternated high and low).
        await sleep(SETTLE_MS);
      }
    }
  }
  const k = (x: number) => `${(x / 1000).toFixed(0)} k`;
  console.log(
    '| direction | pairs (workers) | frames/s (median) | frames per pair (last round) | doorbells / frame | interrupt wake-ups / frame | control requests while frames move | CPU cores busy (process) | 2-vs-1 ratio: median of rounds (range) |',
  );
  console.log('|---|---|---|---|---|---|---|---|---|');
  for (const [key, rows] of Object.entries(results))
    for (const r of rows) console.error(`${key}: ${(r.fps / 1000).toFixed(0)} k fps, threads ${r.threads}`);
  const rawRatios = raw[2]!.map((x, i) => x / raw[1]![i]!);
  if (!only)
    console.log(
      `| raw koffi write loop, a thread per tap queue (no device) | 1 / 2 | ${k(median(raw[1]!))} / ${k(median(raw[2]!))} fps | | | | | | ${median(rawRatios).toFixed(2)} (${Math.min(...rawRatios).toFixed(2)}–${Math.max(...rawRatios).toFixed(2)}) |`,
    );
  for (const direction of ['guest->tap', 'tap->guest']) {
    if (!results[`${direction} 0`] || !results[`${direction} 1`] || !results[`${direction} 2`]) continue;
    const one = results[`${direction} 1`]!;
    const two = results[`${direction} 2`]!;
    const ratios = two.map((t, i) => t.fps / one[i]!.fps);
    const ratio = `${median(ratios).toFixed(2)} (${Math.min(...ratios).toFixed(2)}–${Math.max(...ratios).toFixed(2)})`;
    for (const [label, rows] of [
      ['1, on the main thread (workers off)', results[`${direction} 0`]!],
      ['1', one],
      ['2', two],
    ] as const) {
      const last = rows[rows.length - 1]!;
      const frames = rows.reduce((a, x) => a + x.frames, 0);
      const per = (f: (x: Row) => number) => (rows.reduce((a, x) => a + f(x), 0) / frames).toFixed(4);
      console.log(
        `| ${direction} | ${label} | ${k(median(rows.map((x) => x.fps)))} fps | ${last.perPair.join(' / ')} | ${per((x) => x.doorbells)} | ${per((x) => x.wakeups)} | ${rows.reduce((a, x) => a + x.requestsWhileMoving, 0)} | ${median(rows.map((x) => x.cores)).toFixed(2)} | ${label === '2' ? ratio : ''} |`,
      );
    }
  }
}

await main();
process.exit();
