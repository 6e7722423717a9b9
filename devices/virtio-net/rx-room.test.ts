// BackendSink.receiveRoom: how many frames a backend queue may hand over and find guest buffers. A tap
// reading in batches sizes each batch by it (test/tap-device/rx-batch.test.ts), so it must be exact on a
// split ring, never more than the ring holds, 0 while a backlog waits, and NO_LIMIT whenever the device
// itself picks the ring per frame.
import { describe, expect, it } from 'vitest';
import type { BackendSink } from '../../lib/net/backend.js';
import { LINUX_6_1_FEATURES } from '../testing/net-driver.js';
import { type Bench, openBench, rawFrame } from './bench.test-support.js';
import { NO_LIMIT } from './rx.js';

const PACKED = 1n << 34n;

function roomOf(b: Bench, q = 0): number {
  const sink = (b.backend as unknown as { sink: BackendSink }).sink;
  return sink.receiveRoom!(q);
}

describe('receiveRoom', () => {
  it('split ring: exactly the buffers posted and not yet used, as frames arrive and the guest re-posts', () => {
    const b = openBench({}, {}, { rxBuffers: 10 });
    expect(roomOf(b)).toBe(10);
    for (let i = 0; i < 3; i++) b.backend.inject(rawFrame(64, undefined, undefined, i));
    expect(roomOf(b)).toBe(7);
    expect(b.driver.receive()).toHaveLength(3); // and re-posts the 3 buffers, as Linux refills
    expect(roomOf(b)).toBe(10);
    b.driver.postRx(0, 5);
    expect(roomOf(b)).toBe(15);
  });

  it('0 while a frame waits in the backlog; the ring count again once the guest re-posts and it drains', () => {
    const b = openBench({}, {}, { rxBuffers: 2 });
    for (let i = 0; i < 5; i++) b.backend.inject(rawFrame(64, undefined, undefined, i));
    // 2 in the ring, the third in the backlog (the backend is paused and keeps the other 2).
    const depth = () => (b.dev.stats() as unknown as { queues: { rxBacklogDepth: number }[] }).queues[0]!;
    expect(depth().rxBacklogDepth).toBe(1);
    expect(roomOf(b)).toBe(0);
    const got = [...b.driver.receive(), ...b.driver.receive(), ...b.driver.receive()];
    expect(got).toHaveLength(5);
    expect(depth().rxBacklogDepth).toBe(0);
    expect(roomOf(b)).toBe(2);
  });

  it('packed ring: the queue size while a buffer is available, 0 when none is', () => {
    const b = openBench({ packed: true }, {}, { wanted: LINUX_6_1_FEATURES | PACKED, rxBuffers: 2 });
    expect(b.driver.has(34)).toBe(true);
    const size = b.driver.queue(b.driver.rxIndex(0)).config.size;
    expect(roomOf(b)).toBe(size);
    b.backend.inject(rawFrame(64));
    expect(roomOf(b)).toBe(size);
    b.backend.inject(rawFrame(64));
    expect(roomOf(b)).toBe(0);
  });

  it('NO_LIMIT (more than any ring) when the device steers (RSS in the device) or the queue is not running', () => {
    const rss = openBench({ mq: true, rss: true, queues: 2 }, { queues: 2 });
    rss.driver.setRss({ hashTypes: 0x3f, table: [0, 1], key: new Uint8Array(40).fill(7) });
    expect(roomOf(rss, 0)).toBe(NO_LIMIT);
    const closed = openBench();
    closed.driver.pci.reset();
    expect(roomOf(closed)).toBe(NO_LIMIT);
  });

  it('a guest that moves avail idx more than a ring ahead: NO_LIMIT, no throw (the delivery reports it)', () => {
    const b = openBench({}, {}, { rxBuffers: 4 });
    const q = b.driver.queue(b.driver.rxIndex(0));
    b.memory.writeU16(q.config.driverAddr + 2, 4 + q.config.size + 1);
    expect(roomOf(b)).toBe(NO_LIMIT);
    b.backend.inject(rawFrame(64));
    expect(b.dev.stats().status & 0x40).toBe(0x40); // DEVICE_NEEDS_RESET
  });
});
