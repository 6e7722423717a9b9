// The cross-worker rings (forward.ts) on one thread: two CrossWorkers over the rings the pool would
// hand workers 0 and 1, so that what crosses, in which order, and who is woken can be asserted exactly.
import { describe, expect, it } from 'vitest';
import type { NetOffload } from '../../../lib/net/backend.js';
import type { RxPath } from '../rx.js';
import { CrossWorker, FORWARD_RING_BYTES } from './forward.js';
import { forwardRings } from './handle.js';
import { BACKEND_BIT, Door } from './protocol.js';

const noFlow = { pause() {}, resume() {} };
const microtasks = () => new Promise<void>((r) => setImmediate(r));

function workers() {
  const f = forwardRings(2, [0, 1]);
  const doors = f.doors.map((d) => new Int32Array(d));
  const woken = (w: number) => (Atomics.exchange(doors[w]!, Door.PENDING, 0) & BACKEND_BIT) !== 0;
  return { a: new CrossWorker(f.init(0)!, noFlow), b: new CrossWorker(f.init(1)!, noFlow), woken };
}

/** A `flow` that records each pause ([q, true]) and resume ([q, false]) in order. */
function recordingFlow() {
  const calls: [number, boolean][] = [];
  const flow = {
    pause: (q: number) => calls.push([q, true]),
    resume: (q: number) => calls.push([q, false]),
  };
  return { calls, flow };
}

/**
 * Worker a forwards a frame from its backend queue 0 to pair 1, whose owner b holds a backlog: a holds
 * that queue (calls [[0, true]]). `backlog(n)` is b's pair list with n frames waiting.
 */
function congestedSender() {
  const f = forwardRings(2, [0, 1]);
  const { calls, flow } = recordingFlow();
  const a = new CrossWorker(f.init(0)!, flow);
  const b = new CrossWorker(f.init(1)!, noFlow);
  const backlog = (count: number) => [{ pair: 1, backlog: { count } }] as unknown as RxPath[];
  b.publishCongestion(backlog(1));
  const x = frame(100, 1);
  a.forward(0, 1, x, 0, x.length, null, 0, 0);
  return { a, b, calls, backlog };
}

const frame = (length: number, seed: number) => Uint8Array.from({ length }, (_, i) => (i * 13 + seed) & 0xff);
const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

describe('tx frames for a backend queue another worker owns', () => {
  it('cross tagged as tx with their offload, in order after the rx frames before them', async () => {
    const { a, b, woken } = workers();
    const csum: NetOffload = { flags: 1, gsoType: 0, hdrLen: 0, gsoSize: 0, csumStart: 34, csumOffset: 6 };
    const rx = frame(90, 1);
    b.forward(1, 0, rx, 0, rx.length, null, 0xdeadbeef, 2);
    const tx1 = frame(1514, 2);
    const tx2 = frame(300, 3);
    expect(b.txRoom(0)).toBe(true);
    expect(b.forwardTx(0, tx1, 0, tx1.length, null)).toBe(true);
    expect(b.forwardTx(0, tx2, 0, tx2.length, csum)).toBe(true);
    expect(b.forwarded).toBe(3);
    await microtasks();
    expect(woken(0)).toBe(true);
    const got: unknown[] = [];
    const n = a.drain(
      (pair, bytes, o, l, off, hash, report) => {
        got.push(['rx', pair, hex(bytes.subarray(o, o + l)), off, hash, report]);
        return true;
      },
      (queue, bytes, o, l, off) => {
        got.push(['tx', queue, hex(bytes.subarray(o, o + l)), off && { ...off }]);
        return true;
      },
    );
    expect(n).toBe(3);
    expect(got).toEqual([
      ['rx', 0, hex(rx), null, 0xdeadbeef, 2],
      ['tx', 0, hex(tx1), null],
      ['tx', 0, hex(tx2), { ...csum, outerThOffset: undefined, innerNhOffset: undefined }],
    ]);
  });

  it('a full ring holds the chain back (txRoom false) until the owner took frames; then the sender is woken', async () => {
    const { a, b, woken } = workers();
    const big = frame(60000, 4);
    let sent = 0;
    while (b.txRoom(0)) {
      expect(b.forwardTx(0, big, 0, big.length, null)).toBe(true);
      sent++;
    }
    expect(sent).toBeGreaterThan(10);
    expect(sent * big.length).toBeLessThan(FORWARD_RING_BYTES);
    await microtasks();
    expect(woken(0)).toBe(true);
    // Still no room: nothing goes on.
    const ready: number[] = [];
    b.releaseTx((q) => ready.push(q));
    expect(ready).toEqual([]);
    // The owner's backend has no room either: the frames stay, the sender is not woken.
    expect(
      a.drain(
        () => true,
        () => false,
      ),
    ).toBe(0);
    await microtasks();
    expect(woken(1)).toBe(false);
    // The owner takes them: all, in order; the sender is woken and its chain goes on.
    let taken = 0;
    a.drain(
      () => true,
      (_q, bytes, o, l) => {
        expect(l).toBe(big.length);
        expect(bytes[o + 5]).toBe(big[5]);
        taken++;
        return true;
      },
    );
    expect(taken).toBe(sent);
    await microtasks();
    expect(woken(1)).toBe(true);
    b.releaseTx((q) => ready.push(q));
    expect(ready).toEqual([0]);
    // Nothing left waiting: a later drain wakes nobody.
    expect(b.forwardTx(0, big, 0, 100, null)).toBe(true);
    a.drain(
      () => true,
      () => true,
    );
    await microtasks();
    expect(woken(1)).toBe(false);
  });

  it('a queue with no owner is refused (the caller counts a drop)', () => {
    const { b } = workers();
    expect(b.forwardTx(7, frame(60, 0), 0, 60, null)).toBe(false);
    expect(b.txRoom(7)).toBe(true);
  });
});

describe('rx frames a full ring refuses', () => {
  function withFlow() {
    const f = forwardRings(2, [0, 1]);
    const doors = f.doors.map((d) => new Int32Array(d));
    const woken = (w: number) => (Atomics.exchange(doors[w]!, Door.PENDING, 0) & BACKEND_BIT) !== 0;
    const { calls, flow } = recordingFlow();
    return { a: new CrossWorker(f.init(0)!, noFlow), b: new CrossWorker(f.init(1)!, flow), woken, calls };
  }

  it('wait in the sender’s spill in order, their backend queue held, until the owner took frames; none lost', async () => {
    const { a, b, woken, calls } = withFlow();
    // More than a ring holds (a tap batch of GSO frames), read on worker 1's queue 1, steered to pair 0.
    const frames = Array.from({ length: 40 }, (_, i) => frame(60000, i));
    for (const [i, f] of frames.entries()) b.forward(1, 0, f, 0, f.length, null, i, 2);
    expect(b.spilled).toBeGreaterThan(0);
    expect(b.forwarded + b.spilled).toBe(40);
    expect(b.drops).toBe(0);
    expect(calls).toEqual([[1, true]]);
    const got: [number, number, number, string][] = [];
    const deliver = (
      pair: number,
      bytes: Uint8Array,
      o: number,
      l: number,
      _o: unknown,
      h: number,
      r: number,
    ) => {
      got.push([pair, h, r, hex(bytes.subarray(o, o + l))]);
      return true;
    };
    for (let round = 0; got.length < 40 && round < 10; round++) {
      a.drain(deliver, () => true);
      await microtasks();
      if (got.length === 40) break;
      // The owner took frames and wakes the sender, which moves what waited into the ring.
      expect(woken(1)).toBe(true);
      b.releaseSpill();
    }
    expect(got).toEqual(frames.map((f, i) => [0, i, 2, hex(f)]));
    expect(b.forwarded).toBe(40);
    expect(calls).toEqual([
      [1, true],
      [1, false],
    ]);
    // Nothing waits any more: the next frame goes straight into the ring.
    b.forward(1, 0, frames[0]!, 0, 100, null, 0, 2);
    expect(b.forwarded).toBe(41);
  });

  it('a full spill drops, counted; what fitted arrives', () => {
    const { a, b } = withFlow();
    const big = frame(60000, 9);
    for (let i = 0; i < 300; i++) b.forward(0, 0, big, 0, big.length, null, i, 2);
    expect(b.spilled).toBe(256);
    expect(b.forwarded + b.spilled + b.drops).toBe(300);
    expect(b.drops).toBeGreaterThan(0);
    const accept = () => true;
    let n = 0;
    for (let i = 0; i < 40 && n < 300 - b.drops; i++) {
      n += a.drain(accept, accept);
      b.releaseSpill();
    }
    expect(n).toBe(300 - b.drops);
  });
});

describe('frames crossing when the workers stop (WorkerPool.stop, crossing.ts)', () => {
  it('takeSpill gives the spill back in order with pair, hash and report; the held queue stays paused', () => {
    const f = forwardRings(2, [0, 1]);
    const { calls, flow } = recordingFlow();
    const b = new CrossWorker(f.init(1)!, flow);
    const frames = Array.from({ length: 30 }, (_, i) => frame(60000, i));
    for (const [i, x] of frames.entries()) b.forward(1, 0, x, 0, x.length, null, 0x1000 + i, 3);
    const inRing = b.forwarded;
    expect(b.spilled).toBe(30 - inRing);
    expect(b.spilled).toBeGreaterThan(0);
    const spill = b.takeSpill();
    expect(spill.map((s) => [s.pair, s.hash, s.report, s.offload, hex(s.frame)])).toEqual(
      frames.slice(inRing).map((x, i) => [0, 0x1000 + inRing + i, 3, null, hex(x)]),
    );
    // Not resumed by a stopping worker (the next start's rx drain does), and nothing is left to give.
    expect(calls).toEqual([[1, true]]);
    expect(b.takeSpill()).toEqual([]);
    // A later refusal spills and holds again.
    b.forward(1, 0, frames[0]!, 0, frames[0]!.length, null, 0, 3);
    expect(calls).toEqual([
      [1, true],
      [1, true],
    ]);
  });

  it('a queue held for an owner’s congestion stays paused when the owner, stopping, clears it', () => {
    const { a, b, calls, backlog } = congestedSender();
    expect(calls).toEqual([[0, true]]);
    // Worker a stops first, then b (its backlog goes to the main thread: congestion cleared, a woken).
    expect(a.takeSpill()).toEqual([]);
    b.publishCongestion(backlog(0));
    a.releaseHeld();
    expect(calls).toEqual([[0, true]]); // a stopped worker's tap must not read again
  });

  it('a running worker’s held queue goes on once the owner’s congestion clears', () => {
    const { a, b, calls, backlog } = congestedSender();
    a.releaseHeld();
    expect(calls).toEqual([[0, true]]); // still congested
    b.publishCongestion(backlog(0));
    a.releaseHeld();
    expect(calls).toEqual([
      [0, true],
      [0, false],
    ]);
  });

  it('takeRings empties the rings: rx frames copied out in order, tx frames sent or counted dropped', () => {
    const { a, b } = workers();
    const csum: NetOffload = { flags: 1, gsoType: 0, hdrLen: 0, gsoSize: 0, csumStart: 34, csumOffset: 6 };
    const rx1 = frame(90, 1);
    const rx2 = frame(1514, 2);
    const tx = [frame(300, 3), frame(400, 4), frame(500, 5)];
    b.forward(1, 0, rx1, 0, rx1.length, csum, 7, 2);
    for (const t of tx) expect(b.forwardTx(0, t, 0, t.length, null)).toBe(true);
    b.forward(1, 0, rx2, 0, rx2.length, null, 8, 1);
    const sent: string[] = [];
    const dropped: number[] = [];
    // The backend takes the first tx frame only (a stop does not wait for room).
    const rx = a.takeRings(
      (q, bytes, o, l) => sent.push(`${q}:${hex(bytes.subarray(o, o + l))}`) === 1,
      (q) => dropped.push(q),
    );
    expect(sent).toEqual([`0:${hex(tx[0]!)}`, `0:${hex(tx[1]!)}`, `0:${hex(tx[2]!)}`]);
    expect(dropped).toEqual([0, 0]);
    expect(rx.map((r) => [r.pair, r.hash, r.report, r.offload?.csumStart ?? null, hex(r.frame)])).toEqual([
      [0, 7, 2, 34, hex(rx1)],
      [0, 8, 1, null, hex(rx2)],
    ]);
    // The copies do not alias the ring: a later frame does not change them.
    b.forward(1, 0, frame(90, 9), 0, 90, null, 0, 0);
    expect(hex(rx[0]!.frame)).toBe(hex(rx1));
    // Discarding (send null): every tx frame is counted.
    for (const t of tx) b.forwardTx(0, t, 0, t.length, null);
    dropped.length = 0;
    expect(a.takeRings(null, (q) => dropped.push(q))).toHaveLength(1);
    expect(dropped).toEqual([0, 0, 0]);
  });
});
