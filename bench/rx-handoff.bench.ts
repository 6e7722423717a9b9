/**
 * What the device costs per received frame once a backend has it: `BackendSink.receive` of 64-frame
 * batches into a synthetic guest's rx ring (mergeable buffers, EVENT_IDX, as Linux 6.1), frame by frame and
 * inside a receive burst (beginReceiveBurst / endReceiveBurst, as TapBackend wraps each wake-up's reads),
 * against a baseline measured in the same run: copying the same frames into a buffer (the memcpy no
 * receive path avoids). Wall time of the timed calls only (the guest re-posting buffers is outside), best
 * of three alternating rounds. No kernel, no privileges.
 *
 *   node --expose-gc --import tsx bench/rx-handoff.bench.ts
 */

import { LINUX_6_1_FEATURES, VirtioNetDriver } from '../devices/testing/net-driver.js';
import { captureSink } from '../devices/testing/sink.js';
import { createVirtioNetPci } from '../devices/virtio-net-pci.js';
import { GuestMemory } from '../lib/memory/guest-memory.js';
import { MemoryBackend } from '../lib/net/memory-backend.js';
import { BumpAllocator } from '../virtio/testing/bump-allocator.js';
import { InterruptCollector } from '../virtio/testing/pci-driver.js';
import { type BenchResult, bench } from './harness.js';

const BATCH = 64;
const ITERATIONS = 4000;
const MEM = 64 << 20;

function frameOf(len: number, seed: number): Uint8Array {
  const f = new Uint8Array(len);
  f.set([0x52, 0x54, 0, 0x12, 0x34, 0x56, 0x52, 0x54, 0, 0xab, 0xcd, 0xef, 0x08, 0x00]);
  for (let i = 14; i < len; i++) f[i] = (i * 7 + seed) & 0xff;
  return f;
}

function rig() {
  const memory = new GuestMemory([{ address: 0, bytes: new Uint8Array(MEM) }]);
  const backend = new MemoryBackend({ receive: 'copy' });
  const sinkOf = captureSink(backend);
  const irq = new InterruptCollector();
  const dev = createVirtioNetPci({ memory, backend, interrupts: irq, mac: '52:54:00:12:34:56' });
  const driver = new VirtioNetDriver(dev, memory, {
    allocator: new BumpAllocator(0x100000, MEM - 0x1000),
    interrupts: irq,
    wanted: LINUX_6_1_FEATURES,
    rxBuffers: 256,
  });
  driver.open();
  return { dev, driver, irq, sink: sinkOf() };
}

async function row(size: number): Promise<string> {
  const frames = Array.from({ length: BATCH }, (_, i) => frameOf(size, i));
  const perFrame = rig();
  const burst = rig();
  const out = new Uint8Array(BATCH * size);
  const opts = (r: ReturnType<typeof rig>) => ({
    iterations: ITERATIONS,
    opsPerIteration: BATCH,
    // The guest takes what arrived and re-posts the buffers, outside the timed section.
    beforeEach: () => {
      r.driver.receive();
      r.irq.messages.length = 0;
    },
  });
  const results: BenchResult[] = [];
  // ABCABC: alternate so that drift on a shared machine hits both.
  for (let round = 0; round < 3; round++) {
    results.push(
      await bench(
        'copy',
        () => {
          for (let i = 0; i < BATCH; i++) out.set(frames[i]!, i * size);
        },
        { iterations: ITERATIONS, opsPerIteration: BATCH },
      ),
    );
    results.push(
      await bench(
        'frame by frame',
        () => {
          for (let i = 0; i < BATCH; i++) perFrame.sink.receive(frames[i]!, 0, null);
        },
        opts(perFrame),
      ),
    );
    results.push(
      await bench(
        'burst',
        () => {
          burst.sink.beginReceiveBurst!();
          for (let i = 0; i < BATCH; i++) burst.sink.receive(frames[i]!, 0, null);
          burst.sink.endReceiveBurst!();
        },
        opts(burst),
      ),
    );
  }
  const best = (name: string) => Math.min(...results.filter((r) => r.name === name).map((r) => r.nsPerOp));
  const gcs = (name: string) =>
    results.filter((r) => r.name === name).reduce((n, r) => n + r.minorGcs + r.majorGcs, 0);
  const c = best('copy');
  const f = best('frame by frame');
  const b = best('burst');
  const lost = [perFrame, burst].map((r) => r.dev.stats().rxDropped);
  if (lost.some((n) => n !== 0)) throw new Error(`frames dropped: ${lost}`);
  return `| ${size} | ${c.toFixed(0)} | ${f.toFixed(0)} (${(f / c).toFixed(1)}x) | ${b.toFixed(0)} (${(b / c).toFixed(1)}x) | ${(f / b).toFixed(2)} | ${gcs('frame by frame')} / ${gcs('burst')} |`;
}

console.log(
  '| frame B | copy ns/frame (baseline) | device, frame by frame | device, in a burst | frame-by-frame / burst | GCs in the run, guest re-posting included (f / b) |',
);
console.log('|---|---|---|---|---|---|');
for (const size of [64, 1400]) console.log(await row(size));
