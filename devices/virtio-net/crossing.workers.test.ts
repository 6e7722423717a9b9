// Frames crossing between queue-pair workers when the workers stop (docs/workers.md, "Stopping"): rx
// frames in a forward ring to their owner and in the sender's spill, stale-pair tx frames in a ring to the
// worker that owns their backend queue. Close and reset count every one of them dropped; a snapshot puts
// rx frames in their pair's backlog (carried by the snapshot) and has tx frames written out or counted.
// Every frame the device took is delivered (byte for byte) or counted, exactly.
import { describe, expect, it } from 'vitest';
import { BumpAllocator } from '../../virtio/testing/bump-allocator.js';
import { VirtioNetDriver } from '../testing/net-driver.js';
import {
  type Bench,
  DEV_MAC,
  hexOf,
  MEM_SIZE,
  openBench,
  PEER_MAC,
  rawFrame,
  release,
  setWorkerMode,
} from './bench.test-support.js';
import { VIRTIO_NET_OK } from './control-queue.js';
import type { WorkerPool } from './workers/pool.js';

setWorkerMode(true);

const KEY = Uint8Array.from({ length: 40 }, (_, i) => (i * 29 + 7) & 0xff);
/** Frames waiting in backend queue 0 when the workers start again: more than a forward ring holds. */
const N = 800;

const poolOf = (b: Bench) => b.dev.net.dataPlane as WorkerPool;
const tapRx = (pool: WorkerPool) => pool.workerCounters().reduce((n, w) => n + w.tapRx, 0);

/**
 * 2 pairs on 2 workers, RSS sending every (unclassified) frame to pair 1, which has no rx buffers. Pair
 * 1's backlog holds one frame (`first`); then, with the workers stopped, N frames wait in backend queue 0,
 * and when they start again worker 0 reads them all in its start: they go into the ring to pair 1's
 * worker and, when it is full, into worker 0's spill. Pair 1's worker puts them behind `first` in its
 * backlog until that is full (256, as on one thread) and leaves the rest in the ring: nothing moves any
 * more, nothing was dropped.
 */
function crossing() {
  const r = fillCrossing(N);
  const s = r.b.dev.stats();
  const h = r.pool.handoffs;
  // Every frame crossed (into the ring at once, or through the spill); a ring holds fewer than N.
  expect(h.crossPairForwards).toBeGreaterThan(256);
  expect(h.crossPairSpills).toBeGreaterThan(0);
  expect(h.crossPairDrops).toBe(0);
  expect(r.b.backend.pending(0)).toBe(0);
  expect(tapRx(r.pool)).toBe(N + 1);
  // What did not fit in the backlog waits in the ring and the spill, and is counted there.
  expect(s.queues.map((q) => [q.rxPackets, q.rxDropped, q.rxBacklogDepth, q.rxCrossingDepth])).toEqual([
    [0, 0, 0, 0],
    [0, 0, 256, N + 1 - 256],
  ]);
  return r;
}

/** The setup of `crossing` with `n` frames waiting in backend queue 0 when the workers start again. */
function fillCrossing(n: number) {
  const b = openBench({ mq: true, rss: true, queues: 2 }, { queues: 2 }, { rxBuffers: 0 });
  const pool = poolOf(b);
  expect(pool.workerCount).toBe(2);
  expect(b.driver.setRss({ hashTypes: 0x1ff, table: [1], unclassified: 1, key: KEY, maxTxVq: 2 })).toBe(
    VIRTIO_NET_OK,
  );
  const first = rawFrame(1514, DEV_MAC, PEER_MAC, 1000);
  b.backend.inject(first, 0);
  pool.stop();
  expect(b.dev.net.backlogs[1]!.count).toBe(1);
  const frames = Array.from({ length: n }, (_, i) => rawFrame(1514, DEV_MAC, PEER_MAC, i));
  for (const f of frames) b.backend.inject(f, 0);
  pool.start();
  pool.settle();
  return { b, pool, first, frames };
}

/** Takes what pair `pair` receives until `n` frames came (settling the workers meanwhile). */
async function receiveAll(b: Bench, driver: VirtioNetDriver, pair: number, n: number): Promise<string[]> {
  const got: string[] = [];
  for (const end = Date.now() + 10_000; got.length < n && Date.now() < end; ) {
    for (const r of driver.receive(pair)) got.push(hexOf(r.frame));
    if (got.length >= n) break;
    await new Promise((r) => setTimeout(r, 1));
    poolOf(b).settle();
  }
  return got;
}

describe('rx frames crossing between workers are counted while they cross', () => {
  it('frames a full spill refuses count in their pair’s rxDropped; the rest waits, counted', async () => {
    // More than the ring and the spill hold: the sender drops the excess, for pair 1.
    const n = 1600;
    const { b, pool } = fillCrossing(n);
    const h = pool.handoffs;
    expect(h.crossPairDrops).toBeGreaterThan(0);
    expect(b.backend.pending(0)).toBe(0);
    const s = b.dev.stats();
    const q1 = s.queues[1]!;
    expect([s.queues[0]!.rxPackets, s.queues[0]!.rxDropped, q1.rxPackets]).toEqual([0, 0, 0]);
    expect(q1.rxDropped).toBe(h.crossPairDrops);
    expect(q1.rxBacklogDepth).toBe(256);
    // Every frame read is in exactly one place: dropped, in the backlog, or crossing.
    expect(q1.rxDropped + q1.rxBacklogDepth + q1.rxCrossingDepth).toBe(n + 1);
    expect(s.rxDropped).toBe(h.crossPairDrops);
    // The guest posts buffers: the backlog and what crossed arrive, the drops stay counted once.
    b.driver.postRx(1);
    await receiveAll(b, b.driver, 1, n + 1 - h.crossPairDrops);
    const end = b.dev.stats();
    expect(end.queues[1]!.rxDropped).toBe(h.crossPairDrops);
    expect([end.queues[1]!.rxBacklogDepth, end.queues[1]!.rxCrossingDepth]).toEqual([0, 0]);
    expect(end.rxPackets + end.rxDropped).toBe(n + 1);
    // Stopping and starting again (the owner takes the counters over) counts nothing twice.
    pool.stop();
    pool.start();
    pool.settle();
    expect(b.dev.stats().queues[1]!.rxDropped).toBe(h.crossPairDrops);
    release(b);
  });
});

describe('rx frames in a forward ring and a spill when the workers stop', () => {
  it('close: each is counted dropped on its pair, and so is the backlog; taken = delivered + dropped', () => {
    const { b, pool } = crossing();
    release(b);
    const s = b.dev.stats();
    // The ring's frames, the spilled ones and `first`, which waited in the backlog: a closed device
    // never delivers it (as on one thread).
    expect(s.queues.map((q) => [q.rxPackets, q.rxDropped, q.rxBacklogDepth, q.rxCrossingDepth])).toEqual([
      [0, 0, 0, 0],
      [0, N + 1, 0, 0],
    ]);
    expect(b.dev.net.backlogs[1]!.count).toBe(0);
    expect(s.rxDroppedNotReady).toBe(0);
    expect(tapRx(pool)).toBe(s.rxPackets + s.rxDropped);
  });

  it('reset: each is counted dropped, none reaches the next driver; the held backend queue goes on', async () => {
    const { b, pool } = crossing();
    b.driver.pci.reset();
    let s = b.dev.stats();
    // The ring's frames, the spilled ones and `first` (the backlog a reset drops).
    expect(s.queues.map((q) => [q.rxPackets, q.rxDropped])).toEqual([
      [0, 0],
      [0, N + 1],
    ]);
    const d2 = new VirtioNetDriver(b.dev, b.memory, {
      allocator: new BumpAllocator(0x4000000, MEM_SIZE - 0x1000),
      interrupts: b.irq,
    });
    d2.open();
    // Backend queue 0, held for the spill, reads again; without RSS its frames go to pair 0.
    const late = rawFrame(1514, DEV_MAC, PEER_MAC, 2000);
    b.backend.inject(late, 0);
    expect(await receiveAll(b, d2, 0, 1)).toEqual([hexOf(late)]);
    expect(d2.receive(1)).toEqual([]);
    s = b.dev.stats();
    expect(s.rxPackets + s.rxDropped).toBe(N + 2);
    expect(tapRx(pool)).toBe(N + 2);
  });

  it('snapshot: they join their pair’s backlog, which the snapshot carries, in order; the rest counted', async () => {
    const { b, pool, first, frames } = crossing();
    const snap = b.dev.snapshot() as unknown as {
      transport: { transport: { device: { backlog: { frame: string }[][] } } };
    };
    // The backlog holds 256: `first`, then the first frames in order; the others, still in the ring or
    // the spill when the workers stopped, are overruns.
    const inBacklog = [first, ...frames.slice(0, 255)].map(hexOf);
    const carried = snap.transport.transport.device.backlog;
    expect(carried[0]).toEqual([]);
    expect(carried[1]!.map((f) => hexOf(Buffer.from(f.frame, 'base64')))).toEqual(inBacklog);
    let s = b.dev.stats();
    expect(
      s.queues.map((q) => [q.rxPackets, q.rxDropped, q.rxDropOverruns, q.rxBacklogDepth, q.rxCrossingDepth]),
    ).toEqual([
      [0, 0, 0, 0, 0],
      [0, N + 1 - 256, N + 1 - 256, 256, 0],
    ]);
    // The device goes on: pair 1 gets buffers and receives the backlog, then a frame read after it.
    b.driver.postRx(1);
    expect(await receiveAll(b, b.driver, 1, 256)).toEqual(inBacklog);
    const late = rawFrame(1514, DEV_MAC, PEER_MAC, 2000);
    b.backend.inject(late, 0);
    expect(await receiveAll(b, b.driver, 1, 1)).toEqual([hexOf(late)]);
    expect(b.driver.receive(0)).toEqual([]);
    s = b.dev.stats();
    expect(s.rxPackets + s.rxDropped).toBe(N + 2);
    expect(tapRx(pool)).toBe(N + 2);
  });
});

describe('stale-pair tx frames in a forward ring when the workers stop', () => {
  /**
   * 2 pairs on 2 workers, 1 in use: pair 1's chains leave through backend queue 0, worker 0's. This
   * thread (the MemoryBackend's host) takes no frames while the test runs synchronously, so worker 0's tx
   * ring fills and the frames worker 1 forwarded wait in the ring to worker 0.
   */
  function staleTx() {
    const b = openBench({ mq: true, queues: 2 }, { queues: 2, settle: false, ringBytes: 1 << 18 });
    const pool = poolOf(b);
    expect(b.driver.setQueuePairs(1)).toBe(VIRTIO_NET_OK);
    const frames = Array.from({ length: 40 }, (_, i) => rawFrame(60000, PEER_MAC, DEV_MAC, i));
    for (const f of frames) b.driver.send(f, { pair: 1, kick: false });
    b.driver.kickTx(1);
    // Round trips to both workers (no host drain): worker 1 has taken the chains there was room for.
    pool.coalesceTimers();
    pool.coalesceTimers();
    return { b, pool, frames };
  }

  const tapTx = (pool: WorkerPool) => pool.workerCounters()[0]!.tapTx;

  async function hostTakes(b: Bench, pool: WorkerPool, n: number): Promise<void> {
    for (const end = Date.now() + 10_000; b.sent.length < n && Date.now() < end; ) {
      await new Promise((r) => setTimeout(r, 1));
      if (pool.running) pool.settle();
    }
  }

  it('reset: the frames in the ring are counted dropped; the others reached the backend byte for byte', async () => {
    const { b, pool, frames } = staleTx();
    b.driver.pci.reset();
    const used = b.driver.reclaimTx(1);
    const s = b.dev.stats();
    const written = tapTx(pool);
    expect(s.queues[1]!.txPackets).toBe(used);
    expect(s.queues[0]!.txDropped).toBeGreaterThan(0);
    expect(used).toBe(written + s.queues[0]!.txDropped);
    await hostTakes(b, pool, written);
    expect(b.sent.map((x) => `${x.queuePair}:${hexOf(x.frame)}`)).toEqual(
      frames.slice(0, written).map((f) => `0:${hexOf(f)}`),
    );
  });

  it('snapshot: the owner writes them out or counts them (no room); the device goes on, none lost', async () => {
    const { b, pool, frames } = staleTx();
    b.dev.snapshot();
    const dropped = b.dev.stats().queues[0]!.txDropped;
    expect(dropped).toBeGreaterThan(0);
    // After the snapshot the rest of pair 1's chains go on as the host takes frames.
    for (const end = Date.now() + 10_000; b.sent.length + dropped < frames.length && Date.now() < end; ) {
      await new Promise((r) => setTimeout(r, 1));
      pool.settle();
    }
    const s = b.dev.stats();
    expect(s.queues[1]!.txPackets).toBe(frames.length);
    expect(s.queues[0]!.txDropped).toBe(dropped);
    expect(b.sent.length + dropped).toBe(frames.length);
    // What reached the backend is the guest's frames in order, byte for byte, less the dropped ones.
    const all = frames.map(hexOf);
    let at = 0;
    for (const x of b.sent) {
      expect(x.queuePair).toBe(0);
      at = all.indexOf(hexOf(x.frame), at) + 1;
      expect(at).toBeGreaterThan(0);
    }
  });
});
