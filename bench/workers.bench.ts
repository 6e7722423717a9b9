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
 * namespace queues N UDP datagrams over 64 flows (tun's automq spreads them over the tap's queues);
 * then the workers start and the guest re-posts consumed rx buffers on each interrupt until all N
 * arrived. Rounds alternate 1 and 2 pairs (ABAB); ratios are medians of adjacent pairs.
 * Handoffs per frame: doorbells (kicks) + interrupt wake-ups of this thread + control requests, over
 * the frames moved; the requests made while frames move are counted apart and must be 0.
 */

import { VirtioNetDriver } from '../devices/testing/net-driver.js';
import type { WorkerPool } from '../devices/virtio-net/workers/pool.js';
import { createVirtioNetPci, type VirtioNetPci } from '../devices/virtio-net-pci.js';
import { NetNamespace, netnsUnavailableReason, uniqueName } from '../lib/host/netns.js';
import { memoryFence } from '../lib/memory/fence.js';
import { GuestMemory } from '../lib/memory/guest-memory.js';
import { TapBackend } from '../lib/tap/tap-backend.js';
import { InterruptCollector } from '../virtio/testing/pci-driver.js';

const RING = 256;
const BATCH = 128;
const ROUNDS = Number(process.env.WORKERS_BENCH_ROUNDS ?? 4);
const TX_FRAMES = 400_000; // per round, over all pairs
const RX_FRAMES = 40_000;
const KERNEL_IP = '10.79.0.1';
const GUEST_IP = '10.79.0.2';
const GUEST_MAC = '02:00:00:00:00:02';

const SENDER = `
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
payload = bytes(int(sys.argv[2]))
sent = 0
for i in range(int(sys.argv[3])):
    try:
        s.sendto(payload, (sys.argv[1], 10000 + (i % 64))); sent += 1
    except OSError:
        pass
print(sent)
`;

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;
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
  /** CPU time of this process (every thread) per wall-clock second while frames moved. */
  cores: number;
}

interface Setup {
  ns: NetNamespace;
  tap: TapBackend;
  dev: VirtioNetPci;
  drv: VirtioNetDriver;
  ram: Uint8Array;
  pool: WorkerPool;
  onInterrupt: { fn: () => void };
  dispose(): void;
}

function setUp(pairs: number): Setup {
  const ns = NetNamespace.create('vwb');
  const tap = TapBackend.open({ name: uniqueName('vwb'), queues: pairs });
  let dev: VirtioNetPci | undefined;
  try {
    ns.adopt(tap.name);
    ns.exec('sysctl', ['-q', '-w', `net.ipv6.conf.${tap.name}.disable_ipv6=1`]);
    ns.ip('link', 'set', 'dev', tap.name, 'txqueuelen', String(RX_FRAMES + 1000));
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
      workers: true,
    });
    const drv = new VirtioNetDriver(dev, memory, { interrupts: new InterruptCollector() });
    drv.open(); // posts 256 rx buffers per pair, VQ_PAIRS_SET to every pair
    const d = dev;
    return {
      ns,
      tap,
      dev: d,
      drv,
      ram,
      pool: d.net.dataPlane as WorkerPool,
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
  const target = TX_FRAMES;
  const quota = Math.ceil(target / pairs / BATCH) * BATCH;
  const posted = rings.map(() => 0);
  const done = rings.map(() => 0);
  const before = { ...s.pool.handoffs };
  const tapBefore = s.tap.stats().txFrames + sumTap(s, 'tapTx');
  const cpu0 = process.cpuUsage();
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
  return row(s, pairs, frames, t0, t1, before, done, cpu);
}

function sumTap(s: Setup, k: 'tapTx' | 'tapRx'): number {
  return s.pool.workerCounters().reduce((a, c) => a + c[k], 0);
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
): Row {
  const h = s.pool.handoffs;
  return {
    cores: (cpu.user + cpu.system) / 1e6 / (Number(t1 - t0) / 1e9),
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
  for (const r of rings) r.takeUsed();
  s.pool.stop();
  const sent = Number(
    s.ns.exec('python3', ['-c', SENDER, GUEST_IP, '22', String(RX_FRAMES)], { timeoutMs: 120_000 }).trim(),
  );
  if (sent !== RX_FRAMES) throw new Error('the sender could not queue every datagram');
  const done = rings.map(() => 0);
  const cpu0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  s.pool.start();
  const before = { ...s.pool.handoffs };
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
      return total >= RX_FRAMES;
    },
    60_000,
  );
  const t1 = process.hrtime.bigint();
  const cpu = process.cpuUsage(cpu0);
  const frames = done.reduce((a, b) => a + b, 0);
  if (frames !== RX_FRAMES) throw new Error(`rx: the guest got ${frames} of ${RX_FRAMES}`);
  const st = s.dev.stats() as unknown as { rxDropped: number };
  if (st.rxDropped !== 0) throw new Error(`rx: the device dropped ${st.rxDropped} frames`);
  return row(s, pairs, frames, t0, t1, before, done, cpu);
}

async function main(): Promise<void> {
  const why = netnsUnavailableReason();
  if (why) {
    console.error(`workers bench ${why}; skipped`);
    return;
  }
  const results: Record<string, Row[]> = {};
  for (const direction of ['guest->tap', 'tap->guest'] as const) {
    for (let r = 0; r < ROUNDS; r++) {
      for (const pairs of r & 1 ? [2, 1] : [1, 2]) {
        const s = setUp(pairs);
        try {
          const row = direction === 'guest->tap' ? await benchTx(s, pairs) : await benchRx(s, pairs);
          const key = `${direction} ${pairs}`;
          results[key] = [...(results[key] ?? []), row];
        } finally {
          s.dispose();
        }
      }
    }
  }
  const k = (x: number) => `${(x / 1000).toFixed(0)} k`;
  console.log(
    '| direction | pairs (workers) | frames/s (median) | frames per pair (last round) | doorbells / frame | interrupt wake-ups / frame | control requests while frames move | CPU cores busy (process) | 2-vs-1 ratio (median of rounds) |',
  );
  console.log('|---|---|---|---|---|---|---|---|---|');
  for (const direction of ['guest->tap', 'tap->guest']) {
    const one = results[`${direction} 1`]!;
    const two = results[`${direction} 2`]!;
    const ratio = median(two.map((t, i) => t.fps / one[i]!.fps));
    for (const rows of [one, two]) {
      const last = rows[rows.length - 1]!;
      const frames = rows.reduce((a, x) => a + x.frames, 0);
      const per = (f: (x: Row) => number) => (rows.reduce((a, x) => a + f(x), 0) / frames).toFixed(4);
      console.log(
        `| ${direction} | ${last.pairs} | ${k(median(rows.map((x) => x.fps)))} fps | ${last.perPair.join(' / ')} | ${per((x) => x.doorbells)} | ${per((x) => x.wakeups)} | ${rows.reduce((a, x) => a + x.requestsWhileMoving, 0)} | ${median(rows.map((x) => x.cores)).toFixed(2)} | ${last.pairs === 2 ? ratio.toFixed(2) : ''} |`,
      );
    }
  }
}

await main();
process.exit();
