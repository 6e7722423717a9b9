import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { BackendError, OptionsError } from '../errors.js';
import { MemoryBackend } from './memory-backend.js';
import type { BackendSink, NetOffload } from './backend.js';
import { emptyOffload } from './backend.js';

interface Got {
  frame: number[];
  qp: number;
  offload: NetOffload | null;
}

function recorder(onReceive?: (g: Got) => void): BackendSink & { got: Got[]; links: boolean[] } {
  const got: Got[] = [];
  const links: boolean[] = [];
  return {
    got,
    links,
    receive(frame, qp, offload) {
      const g = { frame: Array.from(frame), qp, offload: offload ? { ...offload } : null };
      got.push(g);
      onReceive?.(g);
    },
    linkChanged(up) {
      links.push(up);
    },
  };
}

const csumOffload: NetOffload = { flags: 1, gsoType: 0, hdrLen: 0, gsoSize: 0, csumStart: 34, csumOffset: 6 };

describe('MemoryBackend', () => {
  it('advertises a vnet header with every offload by default, none without it', () => {
    expect(new MemoryBackend().capabilities).toEqual({
      vnetHeader: true,
      offloads: {
        csum: true,
        tso4: true,
        tso6: true,
        ecn: true,
        ufo: true,
        uso4: true,
        uso6: true,
        tunnel: true,
        tunnelCsum: true,
      },
      queuePairs: 1,
      steersFlows: false,
    });
    expect(new MemoryBackend({ steersFlows: true }).capabilities.steersFlows).toBe(true);
    expect(() => new MemoryBackend({ receive: 'zero' as 'copy' })).toThrow(
      /receive must be 'direct' or 'copy', got zero/,
    );
    // RSS steering is declined unless asked for, and every call is recorded.
    const rss = { key: new Uint8Array(40), hashTypes: 1, table: [0], defaultQueue: 0 };
    const declines = new MemoryBackend();
    expect(declines.setRssSteering(rss)).toBe(false);
    const accepts = new MemoryBackend({ rssSteering: true });
    expect([accepts.setRssSteering(rss), accepts.setRssSteering(null)]).toEqual([true, false]);
    expect(accepts.rssSteeringCalls).toEqual([rss, null]);
    const plain = new MemoryBackend({ vnetHeader: false, queues: 3, offloads: { csum: true } });
    expect(plain.capabilities.vnetHeader).toBe(false);
    expect(Object.values(plain.capabilities.offloads).every((v) => v === false)).toBe(true);
    expect(plain.capabilities.queuePairs).toBe(3);
    expect(new MemoryBackend({ offloads: { ufo: false, uso6: false } }).capabilities.offloads).toMatchObject({
      csum: true,
      ufo: false,
      uso6: false,
      uso4: true,
    });
  });

  it('rejects invalid options with OptionsError', () => {
    expect(() => new MemoryBackend({ queues: 0 })).toThrow(OptionsError);
    expect(() => new MemoryBackend({ queues: 1.5 })).toThrow(OptionsError);
    expect(() => new MemoryBackend({ backlog: -1 })).toThrow(OptionsError);
  });

  it('delivers injected frames to the sink with queue pair and offload; holds them until attach', () => {
    const b = new MemoryBackend({ queues: 2 });
    b.inject(Uint8Array.of(1, 2, 3), 1, csumOffload);
    expect(b.pending(1)).toBe(1);
    const sink = recorder();
    b.attach(sink);
    b.inject(Uint8Array.of(4), 0);
    expect(sink.got).toEqual([
      { frame: [1, 2, 3], qp: 1, offload: csumOffload },
      { frame: [4], qp: 0, offload: null },
    ]);
    expect(b.stats()).toMatchObject({ injected: 2, delivered: 2, rxDropped: 0 });
    expect(() => b.attach(recorder())).toThrow(BackendError);
  });

  it('holds a copy while paused: later changes to the caller’s buffer do not leak in', () => {
    const b = new MemoryBackend();
    const sink = recorder();
    b.attach(sink);
    b.pause(0);
    const f = Uint8Array.of(9, 9);
    const off = { ...csumOffload };
    b.inject(f, 0, off);
    f[0] = 0;
    off.csumStart = 0;
    b.resume(0);
    expect(sink.got).toEqual([{ frame: [9, 9], qp: 0, offload: csumOffload }]);
  });

  it('drops offload metadata without a vnet header', () => {
    const b = new MemoryBackend({ vnetHeader: false });
    const sink = recorder();
    b.attach(sink);
    b.inject(Uint8Array.of(1), 0, csumOffload);
    expect(sink.got[0]?.offload).toBeNull();
    const seen: (NetOffload | null)[] = [];
    b.onFrame((_f, _q, o) => seen.push(o));
    b.transmit(Uint8Array.of(1), 0, csumOffload);
    expect(seen).toEqual([null]);
  });

  it('a paused queue holds frames FIFO up to the backlog, then counts drops; other queues flow', () => {
    const b = new MemoryBackend({ queues: 2, backlog: 3 });
    const sink = recorder();
    b.attach(sink);
    b.pause(0);
    for (let i = 0; i < 5; i++) b.inject(Uint8Array.of(i), 0);
    b.inject(Uint8Array.of(100), 1);
    expect(sink.got.map((g) => g.frame[0])).toEqual([100]);
    expect(b.pending(0)).toBe(3);
    expect(b.stats().rxDropped).toBe(2);
    b.resume(0);
    expect(sink.got.map((g) => g.frame[0])).toEqual([100, 0, 1, 2]);
    expect(b.pauseCalls).toEqual([
      { queuePair: 0, paused: true },
      { queuePair: 0, paused: false },
    ]);
  });

  it('stops delivering as soon as the sink pauses from inside receive, and resumes in order', () => {
    const b = new MemoryBackend();
    let budget = 2;
    const sink = recorder(() => {
      if (--budget === 0) b.pause(0);
    });
    b.pause(0);
    for (let i = 0; i < 6; i++) b.inject(Uint8Array.of(i), 0);
    b.attach(sink);
    b.resume(0);
    expect(sink.got.map((g) => g.frame[0])).toEqual([0, 1]);
    budget = 10;
    b.resume(0);
    expect(sink.got.map((g) => g.frame[0])).toEqual([0, 1, 2, 3, 4, 5]);
  });

  it('property: per queue, frames arrive in injection order, none lost beyond the counted drops', () => {
    const op = fc.oneof(
      fc.record({ k: fc.constant('inject' as const), qp: fc.integer({ min: 0, max: 2 }) }),
      fc.record({ k: fc.constant('pause' as const), qp: fc.integer({ min: 0, max: 1 }) }),
      fc.record({ k: fc.constant('resume' as const), qp: fc.integer({ min: 0, max: 1 }) }),
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 80 }), fc.integer({ min: 0, max: 5 }), (ops, backlog) => {
        const b = new MemoryBackend({ queues: 2, backlog });
        const sink = recorder();
        b.attach(sink);
        let seq = 0;
        const injected: number[][] = [[], [], []];
        for (const o of ops) {
          if (o.k === 'inject') {
            injected[o.qp]?.push(seq);
            b.inject(Uint8Array.of(seq & 0xff, seq >> 8), o.qp);
            seq++;
          } else if (o.k === 'pause') b.pause(o.qp);
          else b.resume(o.qp);
        }
        b.resume(0);
        b.resume(1);
        const s = b.stats();
        expect(s.injected).toBe(seq);
        expect(s.delivered + s.rxDropped).toBe(seq);
        for (const qp of [0, 1]) {
          const got = sink.got
            .filter((g) => g.qp === qp)
            .map((g) => (g.frame[0] as number) | ((g.frame[1] as number) << 8));
          // Delivered frames are a subsequence of the injected ones, in order.
          let i = 0;
          for (const v of injected[qp] as number[]) if (got[i] === v) i++;
          expect(i).toBe(got.length);
        }
        // Queue 2 does not exist: all its frames are counted drops.
        expect(sink.got.some((g) => g.qp === 2)).toBe(false);
      }),
    );
  });

  it('hands onFrame handlers a copy of the transmitted frame and offload', () => {
    const b = new MemoryBackend({ queues: 2 });
    const seen: { frame: Uint8Array; qp: number; off: NetOffload | null }[] = [];
    b.onFrame((frame, qp, off) => seen.push({ frame, qp, off }));
    const guest = Uint8Array.of(1, 2, 3, 4);
    const off = { ...emptyOffload(), flags: 1, csumStart: 14 };
    expect(b.transmit(guest.subarray(1, 3), 1, off)).toBe('sent');
    guest.fill(0);
    off.flags = 0;
    expect(Array.from(seen[0]?.frame as Uint8Array)).toEqual([2, 3]);
    expect(seen[0]?.frame.buffer).not.toBe(guest.buffer);
    expect(seen[0]?.qp).toBe(1);
    expect(seen[0]?.off).toEqual({ ...emptyOffload(), flags: 1, csumStart: 14 });
    expect(b.transmit(guest, 2, null)).toBe('dropped');
    expect(b.stats()).toMatchObject({ transmitted: 1, txDropped: 1 });
  });

  it('reports link changes to the sink, only on change', () => {
    const b = new MemoryBackend();
    const sink = recorder();
    b.attach(sink);
    b.setLinkUp(true);
    b.setLinkUp(false);
    b.setLinkUp(false);
    b.setLinkUp(true);
    expect(sink.links).toEqual([false, true]);
    expect(b.isLinkUp).toBe(true);
  });

  it('records setOffloads, setVnetHeaderSize and setQueuePairEnabled calls', () => {
    const b = new MemoryBackend({ queues: 4 });
    const o = { csum: true, tso4: true, tso6: false, ecn: false, ufo: false, uso4: false, uso6: false };
    b.setOffloads(o);
    o.tso4 = false;
    b.setVnetHeaderSize(12);
    b.setQueuePairEnabled(3, false);
    expect(b.offloadCalls).toEqual([
      { csum: true, tso4: true, tso6: false, ecn: false, ufo: false, uso4: false, uso6: false },
    ]);
    expect(b.vnetHeaderSizeCalls).toEqual([12]);
    expect(b.queuePairEnabledCalls).toEqual([{ queuePair: 3, enabled: false }]);
  });

  it('close drops held frames (counted), refuses traffic, and is idempotent', () => {
    const b = new MemoryBackend();
    b.inject(Uint8Array.of(1));
    b.inject(Uint8Array.of(2));
    b.close();
    b.close();
    expect(b.stats().rxDropped).toBe(2);
    const sink = recorder();
    b.attach(sink);
    b.inject(Uint8Array.of(3));
    expect(sink.got).toEqual([]);
    expect(b.transmit(Uint8Array.of(1), 0, null)).toBe('dropped');
    expect(b.stats()).toMatchObject({ injected: 3, rxDropped: 3, txDropped: 1 });
  });
});
