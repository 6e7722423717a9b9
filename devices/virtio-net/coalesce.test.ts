// Notification coalescing of one virtqueue (VIRTIO 1.3 "Notifications Coalescing"), on vitest's fake
// timers: packet count and timer, whichever first; suppressed notifications stay unsent; parameter
// changes re-check the condition; reset, suspend and flush; never a timer while nothing is held.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { type CoalesceHost, Coalescer } from './coalesce.js';
import { QueueStats } from './stats.js';

function bench(index = 0) {
  const sent: number[] = [];
  const host: CoalesceHost & { stopped: boolean } = {
    stopped: false,
    notifyQueue: (i) => sent.push(i),
    runGuarded(work) {
      if (!this.stopped) work();
    },
  };
  const stats = new QueueStats();
  const c = new Coalescer(index, host, stats);
  return { c, sent, stats, host };
}

beforeEach(() => {
  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setImmediate', 'clearImmediate'] });
});
afterEach(() => {
  vi.useRealTimers();
});

describe('Coalescer', () => {
  it('0/0 and either parameter 0: every wanted notification goes out at once, suppressed ones never', () => {
    for (const [p, u] of [
      [0, 0],
      [8, 0],
      [0, 100],
    ] as const) {
      const { c, sent, stats } = bench(0);
      c.set(p, u);
      c.used(1, true);
      c.used(1, false);
      c.used(3, true);
      expect(sent).toEqual([0, 0]);
      expect(stats.rxInterrupts).toBe(2);
      expect(vi.getTimerCount()).toBe(0);
    }
  });

  it('max_packets reached first: one notification for the batch, the timer disarmed', () => {
    const { c, sent, stats } = bench(1);
    c.set(4, 10_000);
    c.used(1, true);
    expect(sent).toEqual([]);
    expect(vi.getTimerCount()).toBe(1);
    c.used(1, false);
    c.used(1, false);
    expect(sent).toEqual([]);
    c.used(1, false);
    expect(sent).toEqual([1]);
    expect(stats.txInterrupts).toBe(1);
    expect(vi.getTimerCount()).toBe(0);
    vi.advanceTimersByTime(50);
    expect(sent).toEqual([1]);
  });

  it('max_usecs reached first: the held notification goes out after floor(usecs / 1000) ms, not later', () => {
    const { c, sent } = bench(0);
    c.set(1000, 2500);
    c.used(1, true);
    vi.advanceTimersByTime(1);
    expect(sent).toEqual([]);
    vi.advanceTimersByTime(1);
    expect(sent).toEqual([0]);
    // The next packet starts a new count and a new hold.
    c.used(1, true);
    expect(sent).toEqual([0]);
    vi.advanceTimersByTime(2);
    expect(sent).toEqual([0, 0]);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('a hold under 1 ms ends on the next event-loop turn (setImmediate)', () => {
    const { c, sent } = bench(0);
    c.set(64, 50);
    c.used(2, true);
    c.used(2, true);
    expect(sent).toEqual([]);
    expect(vi.getTimerCount()).toBe(1);
    vi.runOnlyPendingTimers();
    expect(sent).toEqual([0]);
  });

  it('suppressed notifications (NO_INTERRUPT / event index said no) are never sent and arm no timer', () => {
    const { c, sent } = bench(0);
    c.set(3, 1000);
    for (let i = 0; i < 10; i++) c.used(1, false);
    expect(vi.getTimerCount()).toBe(0);
    vi.advanceTimersByTime(10);
    expect(sent).toEqual([]);
    expect(c.holding).toBe(false);
  });

  it('a lower max_packets or coalescing turned off releases a held notification at once', () => {
    const a = bench(0);
    a.c.set(15, 100_000);
    for (let i = 0; i < 10; i++) a.c.used(1, i === 0);
    expect(a.sent).toEqual([]);
    a.c.set(8, 100_000); // the spec's example: 10 packets seen, max_packets 8 -> met now
    expect(a.sent).toEqual([0]);
    expect(vi.getTimerCount()).toBe(0);
    const b = bench(1);
    b.c.set(15, 100_000);
    b.c.used(1, true);
    b.c.set(0, 0);
    expect(b.sent).toEqual([1]);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('new parameters while holding: the timer restarts with the new max_usecs', () => {
    const { c, sent } = bench(0);
    c.set(100, 50_000);
    c.used(1, true);
    c.set(100, 3000);
    expect(vi.getTimerCount()).toBe(1);
    vi.advanceTimersByTime(3);
    expect(sent).toEqual([0]);
  });

  it('reset drops the hold and the timer and sets the given parameters', () => {
    const { c, sent } = bench(0);
    c.set(100, 5000);
    c.used(1, true);
    c.reset(7, 9);
    expect(vi.getTimerCount()).toBe(0);
    expect([c.maxPackets, c.maxUsecs, c.holding]).toEqual([7, 9, false]);
    vi.advanceTimersByTime(10);
    expect(sent).toEqual([]);
  });

  it('suspend keeps the hold without a timer; flush sends it; a timer firing while stopped sends nothing', () => {
    const { c, sent, host } = bench(0);
    c.set(100, 5000);
    c.used(1, true);
    c.suspend();
    expect(vi.getTimerCount()).toBe(0);
    c.flush();
    expect(sent).toEqual([0]);
    c.used(1, true);
    host.stopped = true;
    vi.advanceTimersByTime(5);
    expect(sent).toEqual([0]);
    expect(c.holding).toBe(true);
    host.stopped = false;
    c.flush();
    expect(sent).toEqual([0, 0]);
  });
});
