// The suite of ctrl-notf-coal.test.ts with the device's queue pairs on worker threads (docs/workers.md):
// its commands part reruns as written (`settle` makes each inject and kick a synchronous round trip);
// its interrupt part uses fake timers, which do not reach a worker, so it is written again below with
// REAL timers. Nothing asserts how fast: a count is exact (max_usecs far beyond the test), a timer's
// hold is "not sent when the frame's round trip returns" (a few ms, so that needs a stall inside a
// round trip to miss) and its release "sent within seconds"; timers left behind are counted on the
// workers themselves (WorkerPool.coalesceTimers).
import { describe, expect, it } from 'vitest';
import type { SplitDriverQueue } from '../../virtio/testing/split-driver.js';
import { LINUX_6_1_FEATURES } from '../testing/net-driver.js';
import type { VirtioNetPci } from '../virtio-net-pci.js';
import {
  type Bench,
  DEV_MAC,
  hexOf,
  makeBench,
  openBench,
  PEER_MAC,
  rawFrame,
  setWorkerMode,
} from './bench.test-support.js';
import { VIRTIO_NET_OK } from './control-queue.js';
import { NetF } from './features.js';
import type { WorkerPool } from './workers/pool.js';

setWorkerMode(true);
await import('./ctrl-notf-coal.test.js');

const bit = (b: number) => 1n << BigInt(b);
const COAL = { notf_coal: true, vq_notf_coal: true };
const WANT = { wanted: LINUX_6_1_FEATURES | bit(NetF.VQ_NOTF_COAL) };
/** A max_usecs no test outlives: holds end by count only. */
const FOREVER = 600_000_000;
/**
 * A max_usecs of tens of ms: holds end by the worker's timer, yet not before an inject's round trip
 * returns on a loaded machine (at 5 ms, CI runs saw it fire inside the round trip).
 */
const SHORT = 30_000;
/** How long a released notification may take to arrive on a loaded machine. */
const DEADLINE_MS = 10_000;

const frame = (i: number) => rawFrame(80, DEV_MAC, PEER_MAC, i);
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function pool(b: Bench): WorkerPool {
  const p = b.dev.net.dataPlane as WorkerPool | null;
  if (!p) throw new Error('no worker pool');
  return p;
}

function params(dev: VirtioNetPci): [number, number][] {
  return dev.net.coalescers.map((c) => [c.maxPackets, c.maxUsecs]);
}

/** Interrupts on the vector of queue `q` since the last call (the driver programs vector q + 1). */
function counter(b: Bench) {
  const seen = new Map<number, number>();
  return (q: number): number => {
    for (const v of b.irq.takeVectors()) seen.set(v, (seen.get(v) ?? 0) + 1);
    const n = seen.get(q + 1) ?? 0;
    seen.delete(q + 1);
    return n;
  };
}

/** Waits (the event loop turning) until `n` interrupts of queue `q` arrived; returns how many did. */
async function awaitIrqs(v: (q: number) => number, q: number, n = 1): Promise<number> {
  let got = 0;
  for (const end = Date.now() + DEADLINE_MS; got < n && Date.now() < end; ) {
    await sleep(2);
    got += v(q);
  }
  return got;
}

/** Lets the workers' timers run well past SHORT; returns the interrupts of queue `q` meanwhile. */
async function quietFor(v: (q: number) => number, q: number): Promise<number> {
  await sleep(10 * (SHORT / 1000));
  return v(q);
}

describe('coalesced interrupts with the queue pairs on workers (real timers)', () => {
  it('rx: held until max_packets frames, exactly; a short max_usecs releases it; 0/0 signals every frame', async () => {
    const b = openBench(COAL, {}, WANT);
    const v = counter(b);
    expect(pool(b).running).toBe(true);
    b.irq.takeVectors();
    b.backend.inject(frame(0));
    expect(v(0)).toBe(1); // no coalescing yet
    b.driver.receive(0);
    expect(b.driver.setRxCoalescing(4, FOREVER)).toBe(VIRTIO_NET_OK);
    for (let i = 1; i < 4; i++) b.backend.inject(frame(i));
    expect(v(0)).toBe(0);
    expect(pool(b).coalesceTimers()).toBe(1);
    b.backend.inject(frame(4));
    expect(v(0)).toBe(1); // the 4th frame
    expect(pool(b).coalesceTimers()).toBe(0);
    expect(b.driver.receive(0).map((r) => hexOf(r.frame))).toEqual([1, 2, 3, 4].map((i) => hexOf(frame(i))));
    expect(b.driver.setRxCoalescing(50, SHORT)).toBe(VIRTIO_NET_OK);
    b.backend.inject(frame(5));
    expect(v(0)).toBe(0); // held on the worker
    expect(await awaitIrqs(v, 0)).toBe(1); // its timer sent it
    expect(pool(b).coalesceTimers()).toBe(0);
    expect(b.driver.receive(0).map((r) => hexOf(r.frame))).toEqual([hexOf(frame(5))]);
    expect(b.driver.setRxCoalescing(0, 0)).toBe(VIRTIO_NET_OK);
    for (let i = 6; i < 9; i++) {
      b.backend.inject(frame(i));
      expect(v(0)).toBe(1);
      expect(b.driver.receive(0)).toHaveLength(1);
    }
    expect(pool(b).coalesceTimers()).toBe(0);
    expect(b.dev.stats().queues[0]!.rxInterrupts).toBe(6);
  });

  for (const [name, packed, eventIdx] of [
    ['split ring, event index', false, true],
    ['split ring, NO_INTERRUPT flag', false, false],
    ['packed ring, event suppression with descriptor index', true, true],
    ['packed ring, event suppression flags', true, false],
  ] as const)
    for (const receive of ['direct', 'copy'] as const) {
      it(`${name}, ${receive} receive: held and released by count and timer; nothing while the guest suppresses`, async () => {
        const wanted = eventIdx ? WANT.wanted : WANT.wanted & ~bit(29);
        const b = openBench({ ...COAL, packed }, { receive }, { wanted });
        expect(b.driver.has(29)).toBe(eventIdx);
        expect(b.driver.has(34)).toBe(packed);
        const v = counter(b);
        expect(b.driver.setRxCoalescing(3, FOREVER)).toBe(VIRTIO_NET_OK);
        b.irq.takeVectors();
        b.backend.inject(frame(0));
        b.backend.inject(frame(1));
        expect(v(0)).toBe(0);
        b.backend.inject(frame(2));
        expect(v(0)).toBe(1);
        expect(b.driver.receive(0).map((r) => hexOf(r.frame))).toEqual([0, 1, 2].map((i) => hexOf(frame(i))));
        // The guest polls (interrupts off): nothing is sent and no timer runs, however many frames come.
        const q = b.driver.queue(0);
        q.disableInterrupts();
        if (eventIdx && !packed) (q as SplitDriverQueue).setUsedEvent(1);
        expect(b.driver.setRxCoalescing(3, SHORT)).toBe(VIRTIO_NET_OK);
        // Suppressed frames still count: 7 of them close two windows of 3 and leave 1 counted.
        for (let i = 0; i < 7; i++) b.backend.inject(frame(10 + i));
        expect(v(0)).toBe(0);
        expect(pool(b).coalesceTimers()).toBe(0);
        expect(await quietFor(v, 0)).toBe(0);
        expect(b.driver.receive(0)).toHaveLength(7); // re-enables interrupts, as NAPI completion does
        b.backend.inject(frame(20)); // 2 counted: held, the worker's timer runs
        expect(v(0)).toBe(0);
        expect(await awaitIrqs(v, 0)).toBe(1);
        expect(pool(b).coalesceTimers()).toBe(0);
        expect(b.driver.receive(0)).toHaveLength(1);
        // By count again (no timer may end the window while three frames come).
        expect(b.driver.setRxCoalescing(3, FOREVER)).toBe(VIRTIO_NET_OK);
        b.backend.inject(frame(21));
        b.backend.inject(frame(22));
        expect(v(0)).toBe(0);
        b.backend.inject(frame(23));
        expect(v(0)).toBe(1); // the 3rd of a fresh window, at once
        expect(b.driver.receive(0).map((r) => hexOf(r.frame))).toEqual(
          [21, 22, 23].map((i) => hexOf(frame(i))),
        );
        expect(b.backend.stats().deliveredDirect > 0).toBe(receive === 'direct');
      });
    }

  it('tx: completions signal once at max_packets; with a short max_usecs the worker releases them', async () => {
    const b = openBench(COAL, {}, WANT);
    const v = counter(b);
    expect(b.driver.setTxCoalescing(3, FOREVER)).toBe(VIRTIO_NET_OK);
    b.irq.takeVectors();
    for (let i = 0; i < 2; i++) b.driver.send(rawFrame(60, PEER_MAC, DEV_MAC, i));
    expect(v(1)).toBe(0);
    b.driver.send(rawFrame(60, PEER_MAC, DEV_MAC, 2));
    expect(v(1)).toBe(1);
    expect(b.sent.map((s) => hexOf(s.frame))).toEqual(
      [0, 1, 2].map((i) => hexOf(rawFrame(60, PEER_MAC, DEV_MAC, i))),
    );
    expect(b.driver.setTxCoalescing(50, SHORT)).toBe(VIRTIO_NET_OK);
    b.driver.send(rawFrame(60, PEER_MAC, DEV_MAC, 3));
    expect(v(1)).toBe(0);
    expect(await awaitIrqs(v, 1)).toBe(1);
    expect(b.sent).toHaveLength(4);
    expect(pool(b).coalesceTimers()).toBe(0);
  });

  it('VQ_SET, RX_SET and TX_SET made on the main thread take effect on each worker, held ones included', async () => {
    const b = openBench({ ...COAL, mq: true, queues: 2 }, { queues: 2, steersFlows: true }, WANT);
    const d = b.driver;
    const v = counter(b);
    expect(pool(b).workerCount).toBe(2);
    expect(d.setVqCoalescing(2, 2, FOREVER)).toBe(VIRTIO_NET_OK); // pair 1's rx only
    b.irq.takeVectors();
    b.backend.inject(frame(0), 0);
    expect(v(0)).toBe(1); // pair 0: 0/0
    expect(d.receive(0)).toHaveLength(1);
    b.backend.inject(frame(1), 1);
    expect(v(2)).toBe(0);
    b.backend.inject(frame(2), 1);
    expect(v(2)).toBe(1);
    expect(d.receive(1).map((r) => hexOf(r.frame))).toEqual([1, 2].map((i) => hexOf(frame(i))));
    // A held notification meets new parameters: a max_packets it already reached releases it (the
    // worker sends it as it takes them; no timer could, with max_usecs this long).
    expect(d.setVqCoalescing(2, 5, FOREVER)).toBe(VIRTIO_NET_OK);
    for (let i = 3; i < 6; i++) b.backend.inject(frame(i), 1);
    expect(v(2)).toBe(0);
    expect(pool(b).coalesceTimers()).toBe(1);
    expect(d.setVqCoalescing(2, 3, FOREVER)).toBe(VIRTIO_NET_OK);
    expect(await awaitIrqs(v, 2)).toBe(1);
    expect(pool(b).coalesceTimers()).toBe(0);
    d.receive(1);
    // RX_SET reaches both workers' rx queues; tx queues keep 0/0.
    expect(d.setRxCoalescing(2, FOREVER)).toBe(VIRTIO_NET_OK);
    for (const pair of [0, 1]) {
      b.backend.inject(frame(10), pair);
      expect(v(2 * pair)).toBe(0);
      b.backend.inject(frame(11), pair);
      expect(v(2 * pair)).toBe(1);
      expect(d.receive(pair)).toHaveLength(2);
    }
    d.send(rawFrame(60, PEER_MAC, DEV_MAC, 0), { pair: 1 });
    expect(v(3)).toBe(1);
    // TX_SET: both tx queues hold until 2 completions; turning it off releases a held one.
    expect(d.setTxCoalescing(2, FOREVER)).toBe(VIRTIO_NET_OK);
    for (const pair of [0, 1]) {
      d.send(rawFrame(60, PEER_MAC, DEV_MAC, 1), { pair });
      expect(v(2 * pair + 1)).toBe(0);
    }
    expect(pool(b).coalesceTimers()).toBe(2);
    d.send(rawFrame(60, PEER_MAC, DEV_MAC, 2), { pair: 0 });
    expect(v(1)).toBe(1);
    expect(d.setTxCoalescing(0, 0)).toBe(VIRTIO_NET_OK);
    expect(await awaitIrqs(v, 3)).toBe(1);
    expect(pool(b).coalesceTimers()).toBe(0);
    expect(d.getVqCoalescing(3)).toEqual({ ack: VIRTIO_NET_OK, maxPackets: 0, maxUsecs: 0 });
    expect(params(b.dev)).toEqual([
      [2, FOREVER],
      [0, 0],
      [2, FOREVER],
      [0, 0],
    ]);
    expect(b.sent.map((s) => s.queuePair)).toEqual([1, 0, 1, 0]);
  });

  it('device reset: parameters to 0, the held notification dropped, the next driver starts afresh', async () => {
    const b = openBench(COAL, {}, WANT);
    const v = counter(b);
    expect(b.driver.setRxCoalescing(100, FOREVER)).toBe(VIRTIO_NET_OK);
    b.backend.inject(frame(0));
    expect(pool(b).coalesceTimers()).toBe(1);
    b.dev.reset();
    expect(pool(b).coalesceTimers()).toBe(0);
    expect(params(b.dev)).toEqual([
      [0, 0],
      [0, 0],
    ]);
    b.driver.open();
    expect(b.driver.setRxCoalescing(3, FOREVER)).toBe(VIRTIO_NET_OK);
    expect(v(0)).toBe(0);
    expect(await quietFor(v, 0)).toBe(0);
    // The count starts at 0 again: 3 new frames, not 2 on top of the old one.
    b.backend.inject(frame(1));
    b.backend.inject(frame(2));
    expect(v(0)).toBe(0);
    b.backend.inject(frame(3));
    expect(v(0)).toBe(1);
    expect(b.driver.receive(0).map((r) => hexOf(r.frame))).toEqual([1, 2, 3].map((i) => hexOf(frame(i))));
  });

  it('device reset: an interrupt a worker raised that this thread had not taken yet is not sent to the next driver', () => {
    const b = openBench(COAL, {}, WANT);
    const v = counter(b);
    // 50 ms: long enough that the inject's round trip returns before the timer, even on a loaded machine.
    expect(b.driver.setRxCoalescing(100, 50_000)).toBe(VIRTIO_NET_OK);
    b.backend.inject(frame(0));
    expect(v(0)).toBe(0);
    // This thread stays busy while the worker's 50 ms timer sets the bit (its wake-up cannot run).
    for (const end = Date.now() + 300; Date.now() < end; );
    b.dev.reset();
    b.driver.open();
    expect(v(0)).toBe(0);
  });

  it('queue reset (RING_RESET): the queue returns to the RX_SET / TX_SET parameters, its hold and count dropped', async () => {
    const b = openBench(COAL, {}, WANT);
    const d = b.driver;
    const v = counter(b);
    expect(d.setRxCoalescing(3, FOREVER)).toBe(VIRTIO_NET_OK);
    expect(d.setVqCoalescing(0, 5, FOREVER)).toBe(VIRTIO_NET_OK);
    expect(d.setVqCoalescing(1, 3, 30_000)).toBe(VIRTIO_NET_OK);
    b.backend.inject(frame(0));
    b.backend.inject(frame(1));
    expect(pool(b).coalesceTimers()).toBe(1);
    d.pci.resetQueue(0);
    d.pci.resetQueue(1);
    expect(pool(b).coalesceTimers()).toBe(0);
    expect(params(b.dev)).toEqual([
      [3, FOREVER],
      [0, 0], // TX_SET never sent: 0
    ]);
    d.pci.setupQueue(0);
    d.pci.setupQueue(1);
    d.postRx(0);
    expect(v(0)).toBe(0);
    expect(pool(b).coalesceTimers()).toBe(0);
    // A fresh count of 3 (not the 2 frames before the reset).
    b.backend.inject(frame(2));
    b.backend.inject(frame(3));
    expect(v(0)).toBe(0);
    expect(pool(b).coalesceTimers()).toBe(1);
    b.backend.inject(frame(4));
    expect(v(0)).toBe(1);
    expect(d.receive(0).map((r) => hexOf(r.frame))).toEqual([2, 3, 4].map((i) => hexOf(frame(i))));
    expect(await quietFor(v, 0)).toBe(0);
  });

  it("resetting the tx queue keeps the rx queue's hold: not sent at the reset, sent by its timer", async () => {
    const b = openBench(COAL, {}, WANT);
    const d = b.driver;
    const v = counter(b);
    // 50 ms: the reset is several round trips, none of which may see the timer end.
    expect(d.setRxCoalescing(50, 50_000)).toBe(VIRTIO_NET_OK);
    b.backend.inject(frame(0));
    d.pci.resetQueue(1);
    expect(v(0)).toBe(0);
    expect(await awaitIrqs(v, 0)).toBe(1);
    expect(d.receive(0)).toHaveLength(1);
  });

  it('snapshot while holding: the state says so, the worker keeps holding, the restored device sends it', async () => {
    const a = openBench(COAL, {}, WANT);
    const va = counter(a);
    // 50 ms: the snapshot's stop must find the hold (the one-thread suite's 2 ms is fake time).
    expect(a.driver.setRxCoalescing(50, 50_000)).toBe(VIRTIO_NET_OK);
    expect(a.driver.setVqCoalescing(1, 6, 7000)).toBe(VIRTIO_NET_OK);
    a.backend.inject(frame(0));
    const state = JSON.parse(JSON.stringify(a.dev.snapshot()));
    expect(va(0)).toBe(0);
    expect(state.transport.transport.device.coalesce.queues).toEqual([
      [50, 50_000, true],
      [6, 7000, false],
    ]);
    expect(await awaitIrqs(va, 0)).toBe(1); // the source, running on, still sends it
    const b = makeBench(COAL, {}, WANT);
    b.dev.restore(state);
    expect(params(b.dev)).toEqual([
      [50, 50_000],
      [6, 7000],
    ]);
    expect(await awaitIrqs(counter(b), 0)).toBe(1);
  });

  it('close: no interrupt afterwards, no timer and no thread left', async () => {
    const b = openBench(COAL, {}, WANT);
    const v = counter(b);
    expect(b.driver.setRxCoalescing(100, FOREVER)).toBe(VIRTIO_NET_OK);
    b.backend.inject(frame(0));
    const p = pool(b);
    expect(p.coalesceTimers()).toBe(1);
    b.dev.close();
    expect(b.dev.net.coalescers.some((c) => c.timing)).toBe(false);
    let exited = false;
    void p.exited().then(() => {
      exited = true;
    });
    for (const end = Date.now() + DEADLINE_MS; !exited && Date.now() < end; ) await sleep(5);
    expect(exited).toBe(true);
    expect(await quietFor(v, 0)).toBe(0);
  });
});
