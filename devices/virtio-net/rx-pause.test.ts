// Backend queues the device pauses while frames wait for guest buffers (BackendSink flow control): every
// one must be let go again, including the queues of a backend with more queues than the device has
// pairs (Shared.pairOf folds them onto the pairs), or their frames wait in the backend for ever.
import { describe, expect, it } from 'vitest';
import { BumpAllocator } from '../../virtio/testing/bump-allocator.js';
import { VirtioNetDriver } from '../testing/net-driver.js';
import { MEM_SIZE, openBench, rawFrame } from './bench.test-support.js';

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

describe('paused backend queues', () => {
  it("a queue past the device's pairs, paused for a backlog, resumes when the guest re-initializes", () => {
    // One pair over a 4-queue backend; no rx buffers yet, so the first frame waits in pair 0's backlog.
    const b = openBench({}, { queues: 4 }, { rxBuffers: 0 });
    b.backend.inject(rawFrame(64, undefined, undefined, 1), 2);
    expect(b.backend.isPaused(2)).toBe(true);
    // The guest resets the device (the backlog is dropped, counted) and brings it up again, posting no
    // buffer yet (so no rx kick drains anything): at DRIVER_OK every backend queue is let go.
    const again = new VirtioNetDriver(b.dev, b.memory, {
      allocator: new BumpAllocator(0x4000000, MEM_SIZE - 0x1000),
      interrupts: b.irq,
      rxBuffers: 0,
    });
    again.open();
    const stats = () =>
      (b.dev.stats() as unknown as { queues: { rxDropped: number; rxBacklogDepth: number }[] }).queues[0]!;
    expect(stats().rxDropped).toBe(1);
    for (let q = 0; q < 4; q++) expect(b.backend.isPaused(q)).toBe(false);
    // A frame on queue 2 now reaches the device (its backlog, no buffer yet), not the backend's hold.
    const next = rawFrame(64, undefined, undefined, 2);
    b.backend.inject(next, 2);
    expect(b.backend.pending(2)).toBe(0);
    expect(stats().rxBacklogDepth).toBe(1);
    again.postRx(0, 4);
    const got = again.receive();
    expect(got.map((f) => hex(f.frame))).toEqual([hex(next)]);
  });
});
