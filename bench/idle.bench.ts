/**
 * What an idle NIC costs: process CPU (every thread) over IDLE_BENCH_MS of nothing happening after the
 * guest brought the device up, 2 queue pairs over a MemoryBackend, on this thread (the baseline) and on 2
 * queue-pair workers. Workers publish their counters only while something moves (workers/publisher.ts);
 * a fixed 5 ms timer used to cost ~1.6 % of a core per idle worker. Rows alternate; no privileges.
 *
 *   node --import tsx bench/idle.bench.ts   (IDLE_BENCH_ROUNDS, default 3; IDLE_BENCH_MS, default 2000)
 */
import { VirtioNetDriver } from '../devices/testing/net-driver.js';
import { createVirtioNetPci } from '../devices/virtio-net-pci.js';
import { GuestMemory } from '../lib/memory/guest-memory.js';
import { MemoryBackend } from '../lib/net/memory-backend.js';
import { InterruptCollector } from '../virtio/testing/pci-driver.js';

const ROUNDS = Number(process.env.IDLE_BENCH_ROUNDS ?? 3);
const IDLE_MS = Number(process.env.IDLE_BENCH_MS ?? 2000);
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** CPU cores the whole process used while the device sat idle. */
async function idleCores(workers: boolean): Promise<number> {
  const memory = new GuestMemory([{ address: 0, bytes: new Uint8Array(new SharedArrayBuffer(16 << 20)) }]);
  const dev = createVirtioNetPci({
    memory,
    backend: new MemoryBackend({ queues: 2 }),
    interrupts: { msi: () => {} },
    queues: 2,
    mq: true,
    workers,
  });
  try {
    new VirtioNetDriver(dev, memory, { interrupts: new InterruptCollector() }).open();
    await sleep(1500); // the workers start, compile and go quiet; the last row's teardown ends
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    await sleep(IDLE_MS);
    const c = process.cpuUsage(c0);
    return (c.user + c.system) / 1000 / (performance.now() - t0);
  } finally {
    dev.close();
  }
}

const rows: Record<'main' | 'workers', number[]> = { main: [], workers: [] };
for (let r = 0; r < ROUNDS; r++)
  for (const w of r & 1 ? [true, false] : [false, true])
    rows[w ? 'workers' : 'main'].push(await idleCores(w));
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;
const pct = (x: number) => `${(100 * x).toFixed(2)} %`;
console.log('| device, 2 queue pairs, idle | CPU of a core (median) | rounds | vs one thread |');
console.log('|---|---|---|---|');
const base = median(rows.main);
for (const [k, xs] of Object.entries(rows))
  console.log(
    `| ${k === 'main' ? 'one thread (baseline)' : 'on 2 workers'} | ${pct(median(xs))} | ${xs.map(pct).join(', ')} | ${k === 'main' ? '' : `${median(xs) >= base ? '+' : '−'}${pct(Math.abs(median(xs) - base))}`} |`,
  );
process.exit(0);
