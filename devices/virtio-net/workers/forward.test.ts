// The cross-worker rings (forward.ts) on one thread: two CrossWorkers over the rings the pool would
// hand workers 0 and 1, so that what crosses, in which order, and who is woken can be asserted exactly.
import { describe, expect, it } from 'vitest';
import type { NetOffload } from '../../../lib/net/backend.js';
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
    const calls: [number, boolean][] = [];
    const flow = {
      pause: (q: number) => calls.push([q, true]),
      resume: (q: number) => calls.push([q, false]),
    };
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
