// BackendSink.receiveRange: the frame at bytes[offset, offset + length) is received exactly as `receive`
// of a copy of it would be (sizes across buffers, mergeable or not, the backlog, the filter, software
// segmentation), from a backend's buffer or from guest memory itself; a bad range is a counted drop.
import { describe, expect, it } from 'vitest';
import type { BackendSink } from '../../lib/net/backend.js';
import { GsoType, NetHdrFlags } from '../../lib/net/vnet-header.js';
import { LINUX_6_1_FEATURES } from '../testing/net-driver.js';
import {
  type Bench,
  DEV_MAC,
  hexOf,
  offload,
  openBench,
  PEER_MAC,
  pattern,
  rawFrame,
  tcp4Frame,
  tsoSegments,
} from './bench.test-support.js';
import { NetF } from './features.js';

const bit = (b: number) => 1n << BigInt(b);

function sinkOf(b: Bench): BackendSink & Required<Pick<BackendSink, 'receiveRange'>> {
  const sink = (b.backend as unknown as { sink: BackendSink }).sink;
  if (sink.receiveRange === undefined) throw new Error('the device has no receiveRange');
  return sink as BackendSink & Required<Pick<BackendSink, 'receiveRange'>>;
}

/** `frame` inside a bigger buffer at `at`, the bytes around it set so that a wrong range shows. */
function embedded(frame: Uint8Array, at: number): Uint8Array {
  const buf = new Uint8Array(at + frame.length + 97).fill(0xee);
  buf.set(frame, at);
  return buf;
}

describe('receiveRange', () => {
  for (const mergeable of [true, false]) {
    it(`delivers exactly the range (${mergeable ? 'mergeable' : 'big'} buffers)`, () => {
      const wanted = mergeable ? LINUX_6_1_FEATURES : LINUX_6_1_FEATURES & ~bit(NetF.MRG_RXBUF);
      const b = openBench({}, {}, { wanted });
      const sink = sinkOf(b);
      for (const [len, at] of [
        [14, 0],
        [64, 3],
        [1514, 1001],
        [1537, 17],
        [9000, 5],
      ] as const) {
        const f = rawFrame(len, DEV_MAC, PEER_MAC, len);
        sink.receiveRange(embedded(f, at), at, len, 0, null);
        const got = b.driver.receive();
        expect(got.map((r) => hexOf(r.frame))).toEqual([hexOf(f)]);
        if (mergeable) expect(got[0]!.numBuffers).toBe(Math.ceil((len + 12) / 1548));
      }
      expect(b.dev.stats().rxPackets).toBe(5);
    });
  }

  it('copies a frame lying in guest memory itself (the switch hands VF transmit buffers this way)', () => {
    const b = openBench();
    const sink = sinkOf(b);
    const bytes = b.memory.view(0, 0x1000 + 3000);
    for (const len of [20, 64, 1514, 3000]) {
      const f = rawFrame(len, DEV_MAC, PEER_MAC, len + 1);
      bytes.set(f, 0x1000);
      // The region's own bytes: the device copies within one ArrayBuffer.
      const region = b.memory.locate(0, 1)!;
      sink.receiveRange(region, 0x1000, len, 0, null);
      expect(b.driver.receive().map((r) => hexOf(r.frame))).toEqual([hexOf(f)]);
    }
  });

  it('applies the receive filter to the range', () => {
    const b = openBench();
    const sink = sinkOf(b);
    const other = rawFrame(64, '02:00:00:00:00:77', PEER_MAC);
    // The bytes before the range hold the device's own MAC: the filter must look at the range.
    const buf = embedded(other, 64);
    buf.set(rawFrame(64, DEV_MAC, PEER_MAC), 0);
    sink.receiveRange(buf, 64, 64, 0, null);
    expect(b.driver.receive()).toHaveLength(0);
    expect(b.dev.stats().queues[0]!.rxFiltered).toBe(1);
  });

  it('a range that waits in the backlog arrives intact once buffers are posted', () => {
    const b = openBench({}, {}, { rxBuffers: 0 });
    const sink = sinkOf(b);
    const f = rawFrame(300, DEV_MAC, PEER_MAC, 9);
    const buf = embedded(f, 40);
    sink.receiveRange(buf, 40, 300, 0, null);
    buf.fill(0); // the backend reuses its buffer after the call
    expect(b.dev.stats().queues[0]!.rxBacklogged).toBe(1);
    b.driver.postRx(0, 2);
    expect(b.driver.receive().map((r) => hexOf(r.frame))).toEqual([hexOf(f)]);
  });

  it('segments a TSO range in software for a guest without the offloads', () => {
    const wanted =
      LINUX_6_1_FEATURES &
      ~(
        bit(NetF.GUEST_CSUM) |
        bit(NetF.GUEST_TSO4) |
        bit(NetF.GUEST_TSO6) |
        bit(NetF.GUEST_ECN) |
        bit(NetF.GUEST_UFO)
      );
    const b = openBench({}, {}, { wanted });
    const spec = { payload: pattern(5000, 3), csum: 'partial' as const, id: 0x2000, seq: 5000, flags: 0x18 };
    const off = offload({
      flags: NetHdrFlags.NEEDS_CSUM,
      gsoType: GsoType.TCPV4,
      hdrLen: 54,
      gsoSize: 1448,
      csumStart: 34,
      csumOffset: 16,
    });
    const f = tcp4Frame(spec);
    sinkOf(b).receiveRange(embedded(f, 11), 11, f.length, 0, off);
    expect(b.driver.receive().map((r) => hexOf(r.frame))).toEqual(tsoSegments(spec, 1448).map(hexOf));
  });

  it('a range outside the bytes, a non-integer one or an unknown queue is a counted drop', () => {
    const b = openBench();
    const sink = sinkOf(b);
    const buf = embedded(rawFrame(64), 8);
    const bad: [number, number, number][] = [
      [-1, 64, 0],
      [8, buf.length, 0],
      [buf.length - 10, 64, 0],
      [8.5, 64, 0],
      [8, 63.5, 0],
      [Number.NaN, 64, 0],
      [8, 64, 1],
    ];
    for (const [o, l, q] of bad) expect(() => sink.receiveRange(buf, o, l, q, null)).not.toThrow();
    expect(b.driver.receive()).toHaveLength(0);
    expect(b.dev.stats().rxDroppedNotReady).toBe(bad.length);
    sink.receiveRange(buf, 8, 64, 0, null);
    expect(b.driver.receive().map((r) => hexOf(r.frame))).toEqual([hexOf(rawFrame(64))]);
  });
});
