// The fuzz engine's spin check watches the main thread's event loop only; worker mode adds
// checkWorkersIdle (worker-rig.ts), which asks each queue-pair worker for its pending setImmediate
// callbacks. A worker that keeps rescheduling itself must fail the case; one that settles must not.
import { afterEach, describe, expect, it } from 'vitest';
import { VirtioNetDriver } from '../../devices/testing/net-driver.js';
import type { WorkerPool } from '../../devices/virtio-net/workers/pool.js';
import { createVirtioNetPci, type VirtioNetPci } from '../../devices/virtio-net-pci.js';
import { GuestMemory } from '../../lib/memory/guest-memory.js';
import { MemoryBackend } from '../../lib/net/memory-backend.js';
import { InterruptCollector } from '../../virtio/testing/pci-driver.js';
import { InvariantError } from './engine.js';
import { checkWorkersIdle } from './worker-rig.js';

let dev: VirtioNetPci | null = null;
afterEach(() => {
  dev?.close();
  dev = null;
});

function open(): WorkerPool {
  const memory = new GuestMemory([{ address: 0, bytes: new Uint8Array(new SharedArrayBuffer(16 << 20)) }]);
  dev = createVirtioNetPci({
    memory,
    backend: new MemoryBackend({ queues: 2 }),
    interrupts: { msi: () => {} },
    queues: 2,
    mq: true,
    workers: true,
  });
  new VirtioNetDriver(dev, memory, { interrupts: new InterruptCollector() }).open();
  return dev.net.dataPlane as WorkerPool;
}

describe('checkWorkersIdle: the spin check for queue-pair workers', () => {
  it('passes when every worker settles, also after deferred work that ends', async () => {
    const pool = open();
    expect(pool.workerCount).toBe(2);
    await checkWorkersIdle(pool, 2000);
    // 50 ms of rescheduling, then nothing: within the limit.
    pool.spinForTest(1, 50);
    expect(pool.pendingImmediates()[1]).toBeGreaterThan(0);
    await checkWorkersIdle(pool, 2000);
    expect(pool.pendingImmediates()).toEqual([0, 0]);
  });

  it('fails, naming the worker, when one keeps rescheduling itself past the limit', async () => {
    const pool = open();
    pool.spinForTest(0, 5000);
    const err = await checkWorkersIdle(pool, 300).then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(InvariantError);
    expect((err as Error).message).toMatch(
      /^spin: a queue-pair worker .* pending per worker: [1-9]\d*, 0\)$/,
    );
  });
});
