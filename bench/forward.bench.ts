/**
 * What it costs when the device's own RSS sends a frame to another worker's pair (forward.ts): 2 queue
 * pairs on 2 workers over a MemoryBackend, every frame injected on backend queue 0 (worker 0's), RSS
 * configured by the guest with an indirection table naming pair 0 ("own": no crossing) or pair 1
 * ("cross": each frame copied into worker 1's ring and delivered there). The synthetic guest on the main
 * thread takes what arrives and re-posts buffers; frames/s over the same frames, rows alternating, best
 * of the rounds. The ratio cross/own is the price of the crossing. No kernel, no privileges.
 *
 *   node --import tsx bench/forward.bench.ts   (FORWARD_BENCH_ROUNDS, default 5)
 */
import { LINUX_6_1_FEATURES, VirtioNetDriver } from '../devices/testing/net-driver.js';
import type { WorkerPool } from '../devices/virtio-net/workers/pool.js';
import { createVirtioNetPci } from '../devices/virtio-net-pci.js';
import { GuestMemory } from '../lib/memory/guest-memory.js';
import { MemoryBackend } from '../lib/net/memory-backend.js';
import { BumpAllocator } from '../virtio/testing/bump-allocator.js';
import { InterruptCollector } from '../virtio/testing/pci-driver.js';

const ROUNDS = Number(process.env.FORWARD_BENCH_ROUNDS ?? 5);
const MEM = 64 << 20;
const FRAMES = 20_000;
const BATCH = 128;
const SIZE = 128;
const KEY = Uint8Array.from({ length: 40 }, (_, i) => (i * 29 + 7) & 0xff);
const ALL_HASH_TYPES = 0x1ff;

function udpFrame(i: number): Uint8Array {
  const f = new Uint8Array(SIZE);
  f.set([0x52, 0x54, 0, 0x12, 0x34, 0x56, 0x52, 0x54, 0, 0xab, 0xcd, 0xef, 0x08, 0x00]);
  const ip = 14;
  f.set([0x45, 0, 0, SIZE - 14, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2], ip);
  const udp = ip + 20;
  f[udp] = (1000 + (i % 64)) >> 8;
  f[udp + 1] = (1000 + (i % 64)) & 0xff;
  f[udp + 3] = 53;
  f[udp + 5] = SIZE - 34;
  return f;
}

function rig(targetPair: number) {
  const memory = new GuestMemory([{ address: 0, bytes: new Uint8Array(new SharedArrayBuffer(MEM)) }]);
  const backend = new MemoryBackend({ queues: 2 });
  const irq = new InterruptCollector();
  const dev = createVirtioNetPci({
    memory,
    backend,
    interrupts: irq,
    mac: '52:54:00:12:34:56',
    mq: true,
    rss: true,
    queues: 2,
    workers: true,
  });
  const driver = new VirtioNetDriver(dev, memory, {
    allocator: new BumpAllocator(0x100000, MEM - 0x1000),
    interrupts: irq,
    wanted: LINUX_6_1_FEATURES | (1n << 60n),
    rxBuffers: 256,
  });
  driver.open();
  driver.setRss({ hashTypes: ALL_HASH_TYPES, table: [targetPair], key: KEY, maxTxVq: 2 });
  return { dev, driver, backend, irq, pool: dev.net.dataPlane as WorkerPool };
}

/** Frames/s until every frame arrived or was counted dropped (the owner's backlog full), and the drops. */
async function run(r: ReturnType<typeof rig>, frames: Uint8Array[], targetPair: number): Promise<number> {
  const dropped = () => r.dev.stats().queues[targetPair]!.rxDropped;
  const dropped0 = dropped();
  let got = 0;
  let lost = 0;
  let sent = 0;
  const t0 = performance.now();
  while (got + lost < FRAMES) {
    // Keep up to two batches in flight; the guest takes what arrived and re-posts its buffers.
    while (sent < FRAMES && sent - got - lost < 2 * BATCH) {
      for (let i = 0; i < BATCH && sent < FRAMES; i++) r.backend.inject(frames[sent++ % frames.length]!, 0);
    }
    const n = r.driver.receive(targetPair).length;
    got += n;
    r.irq.messages.length = 0;
    if (n === 0) {
      await new Promise((res) => setImmediate(res));
      lost = dropped() - dropped0;
      if (performance.now() - t0 > 20_000) throw new Error(`stalled at ${got} + ${lost} dropped of ${sent}`);
    }
  }
  drops[targetPair] = (drops[targetPair] ?? 0) + lost;
  return FRAMES / ((performance.now() - t0) / 1000);
}

const drops: number[] = [];
const frames = Array.from({ length: 256 }, (_, i) => udpFrame(i));
const rows = { own: [] as number[], cross: [] as number[] };
const own = rig(0);
const cross = rig(1);
await run(own, frames, 0); // warm-up
await run(cross, frames, 1);
for (let round = 0; round < ROUNDS; round++) {
  rows.own.push(await run(own, frames, 0));
  rows.cross.push(await run(cross, frames, 1));
}
cross.pool.refreshStats();
const h = cross.pool.handoffs;
const best = (a: number[]) => Math.max(...a);
const fmt = (n: number) => `${Math.round(n / 1000)} k frames/s`;
console.log(
  `RSS to the reading worker's own pair: ${fmt(best(rows.own))} (rounds: ${rows.own.map(fmt).join(', ')})`,
);
console.log(
  `RSS to another worker's pair:        ${fmt(best(rows.cross))} (rounds: ${rows.cross.map(fmt).join(', ')})`,
);
console.log(`cross / own: ${(best(rows.cross) / best(rows.own)).toFixed(2)}`);
console.log(
  `forwarded ${h.crossPairForwards}, refused by a full ring ${h.crossPairDrops}; dropped at a full backlog: own ${drops[0] ?? 0}, cross ${drops[1] ?? 0} (of ${FRAMES * (ROUNDS + 1)} each)`,
);
own.dev.close();
cross.dev.close();
