// Queue-pair workers publish their counters to shared memory every 5 ms while anything moves, and stop
// when nothing has for 20 rounds: an idle VM's workers sleep instead of waking 200 times a second each.
import { afterEach, describe, expect, it } from 'vitest';
import { GuestMemory } from '../../../lib/memory/guest-memory.js';
import { MemoryBackend } from '../../../lib/net/memory-backend.js';
import { InterruptCollector } from '../../../virtio/testing/pci-driver.js';
import { VirtioNetDriver } from '../../testing/net-driver.js';
import { createVirtioNetPci, type VirtioNetPci } from '../../virtio-net-pci.js';
import { DEV_MAC, rawFrame } from '../bench.test-support.js';
import type { WorkerPool } from './pool.js';

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const OTHER_MAC = '52:54:00:77:77:77';
const VIRTIO_NET_CTRL_RX_PROMISC = 0;

let dev: VirtioNetPci | null = null;
afterEach(() => {
  dev?.close();
  dev = null;
});

function open() {
  const memory = new GuestMemory([{ address: 0, bytes: new Uint8Array(new SharedArrayBuffer(16 << 20)) }]);
  const backend = new MemoryBackend({ queues: 2 });
  const d = createVirtioNetPci({
    memory,
    backend,
    interrupts: { msi: () => {} },
    mac: DEV_MAC,
    queues: 2,
    mq: true,
    ctrl_rx: true,
    workers: true,
  });
  dev = d;
  const drv = new VirtioNetDriver(d, memory, { interrupts: new InterruptCollector() });
  drv.open();
  return { d, drv, backend, pool: d.net.dataPlane as WorkerPool };
}

describe('queue-pair workers publish counters only while something moves', () => {
  it('an idle worker stops its publishing timer; a frame counted without an interrupt still reaches stats() unasked', async () => {
    const { d, drv, backend, pool } = open();
    expect(pool.workerCount).toBe(2);
    expect(drv.rxMode(VIRTIO_NET_CTRL_RX_PROMISC, false)).toBe(0);
    await sleep(300);
    const before = pool.publishRounds();
    // 600 ms idle: a fixed 5 ms timer would run ~120 rounds; the round trip above re-arms it for 20.
    await sleep(600);
    const after = pool.publishRounds();
    for (const [i, r] of after.entries()) expect(r - before[i]!).toBeLessThanOrEqual(25);
    // Filtered (another host's unicast, promiscuous mode off): counted, no interrupt, no request.
    backend.inject(rawFrame(64, OTHER_MAC, DEV_MAC, 1), 0);
    let filtered = 0;
    for (let t = 0; t < 200 && filtered === 0; t++) {
      await sleep(10);
      filtered = d.stats().queues[0]!.rxFiltered;
    }
    expect(filtered).toBe(1);
    expect(d.stats().queues[0]!.rxPackets).toBe(0);
  });
});
