// Direct receive (BackendSink.lendReceive / completeReceive / cancelReceive): a backend writes frames
// straight into a guest buffer the device lends. The receive suites run in both modes
// (virtio-net-rx.copy-rx.test.ts); this file covers when the device lends, when it declines, the
// fallbacks after a lend, and a backend that breaks the contract.
import { describe, expect, it } from 'vitest';
import { GuestMemory } from '../../lib/memory/guest-memory.js';
import { type BackendSink, emptyOffload, type NetBackend, ReceiveTarget } from '../../lib/net/backend.js';
import { BumpAllocator } from '../../virtio/testing/bump-allocator.js';
import { InterruptCollector } from '../../virtio/testing/pci-driver.js';
import { RxMode } from './rx-filter.js';
import { LINUX_6_1_FEATURES, VirtioNetDriver } from '../testing/net-driver.js';
import { MAX_FRAME } from '../../lib/net/backend.js';
import { DEV_MAC, hexOf, MEM_SIZE, makeBench, openBench, PEER_MAC, rawFrame } from './bench.test-support.js';
import { NetF } from './features.js';
import { createVirtioNetPci, type VirtioNetPci } from '../virtio-net-pci.js';

const bit = (b: number) => 1n << BigInt(b);
const stats = (b: { dev: VirtioNetPci }) => b.dev.stats();

describe('direct receive through the MemoryBackend', () => {
  it('frames of every size are written straight into guest buffers, spanning mergeable buffers', () => {
    const b = openBench();
    const sizes = [14, 60, 1514, 1536, 1537, 9000, 65535, MAX_FRAME];
    for (const len of sizes) {
      const f = rawFrame(len, DEV_MAC, PEER_MAC, len);
      b.backend.inject(f);
      const [r] = b.driver.receive();
      expect(hexOf(r!.frame)).toBe(hexOf(f));
      expect(r!.numBuffers).toBe(Math.ceil((len + 12) / 1548));
    }
    expect(b.backend.stats().deliveredDirect).toBe(sizes.length);
    expect(stats(b).queues[0]).toMatchObject({ rxPackets: sizes.length, rxDropped: 0 });
  });

  it('the device writes the whole header: a backend that skips header bytes 10.. leaves no stale num_buffers', () => {
    const b = openBench({}, {}, { rxBuffers: 1 });
    const q = b.driver.queue(0);
    // The buffer holds garbage where num_buffers goes; the backend (like tun) does not write there.
    b.backend.inject(rawFrame(100, DEV_MAC, PEER_MAC, 1));
    const u = q.getUsed()!;
    expect(u.len).toBe(112);
    expect(b.memory.read(u.segments[0]!.addr, 12)).toEqual(
      new Uint8Array([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]),
    );
    b.memory.write(u.segments[0]!.addr, new Uint8Array(12).fill(0xee));
    q.add([], [{ addr: u.segments[0]!.addr, len: 1548 }]);
    b.driver.pci.kickIfNeeded(0);
    b.backend.inject(rawFrame(100, DEV_MAC, PEER_MAC, 2), 0, emptyOffload());
    const v = q.getUsed()!;
    expect(b.memory.read(v.segments[0]!.addr, 12)).toEqual(
      new Uint8Array([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]),
    );
    expect(b.backend.stats().deliveredDirect).toBe(2);
  });

  it('a frame the filter rejects leaves the lent buffer in the ring', () => {
    const b = openBench({}, {}, { rxBuffers: 1 });
    expect(b.driver.rxMode(RxMode.PROMISC, false)).toBe(0);
    b.backend.inject(rawFrame(200, '52:54:00:99:99:99', PEER_MAC, 1));
    const good = rawFrame(200, DEV_MAC, PEER_MAC, 2);
    b.backend.inject(good);
    expect(b.driver.receive().map((r) => hexOf(r.frame))).toEqual([hexOf(good)]);
    expect(stats(b).queues[0]).toMatchObject({ rxFiltered: 1, rxPackets: 1, rxBacklogged: 0 });
    expect(b.backend.stats().deliveredDirect).toBe(2);
  });

  it('without mergeable buffers a frame larger than the buffer is dropped and the buffer reused', () => {
    const noMrg = LINUX_6_1_FEATURES & ~bit(NetF.MRG_RXBUF);
    const b = openBench({}, {}, { wanted: noMrg, rxBuffers: 1, rxBufferSize: 1526 });
    b.backend.inject(rawFrame(1600, DEV_MAC, PEER_MAC, 1));
    expect(stats(b).queues[0]!.rxDropped).toBe(1);
    expect(b.driver.queue(0).getUsed()).toBeNull();
    const fits = rawFrame(1514, DEV_MAC, PEER_MAC, 2);
    b.backend.inject(fits);
    expect(b.driver.receive().map((r) => hexOf(r.frame))).toEqual([hexOf(fits)]);
  });

  it('a frame that overflows into more buffers than the ring has waits in the backlog, intact', () => {
    const b = openBench({}, {}, { rxBuffers: 2 });
    const big = rawFrame(9000, DEV_MAC, PEER_MAC, 7);
    b.backend.inject(big);
    // Lent, read, then not enough buffers: taken back out, backlogged, the backend paused.
    expect(b.backend.stats().deliveredDirect).toBe(1);
    expect(stats(b).queues[0]).toMatchObject({ rxPackets: 0, rxBacklogged: 1 });
    expect(b.backend.isPaused(0)).toBe(true);
    expect(b.driver.receive()).toEqual([]);
    b.driver.postRx(0, 8);
    const got = b.driver.receive();
    expect(got.map((r) => hexOf(r.frame))).toEqual([hexOf(big)]);
    expect(got[0]!.numBuffers).toBe(Math.ceil(9012 / 1548));
    expect(b.backend.isPaused(0)).toBe(false);
  });

  for (const packed of [false, true]) {
    it(`lends as many mergeable buffers as recent frames needed; unused ones go back in order (${packed ? 'packed' : 'split'})`, () => {
      const b = openBench({ packed }, {}, { rxBuffers: 128 });
      const frames: Uint8Array[] = [];
      // Bulk GSO-sized frames, then small ones, then mixed: the lend grows, shrinks, and nothing leaks.
      const sizes = [
        ...Array(12).fill(65000),
        ...Array(30).fill(60),
        ...Array.from({ length: 60 }, (_, i) => (i % 3 === 0 ? 30000 : 200 + i)),
      ];
      for (const [i, len] of sizes.entries()) {
        const f = rawFrame(len, DEV_MAC, PEER_MAC, i);
        frames.push(f);
        b.backend.inject(f);
        const got = b.driver.receive();
        expect(got.map((r) => hexOf(r.frame))).toEqual([hexOf(f)]);
        expect(got[0]!.numBuffers).toBe(Math.ceil((len + 12) / 1548));
      }
      expect(stats(b).queues[0]).toMatchObject({ rxPackets: sizes.length, rxBacklogged: 0, rxDropped: 0 });
      expect(b.backend.stats().deliveredDirect).toBe(sizes.length);
      // Every one of the 128 buffers is still in the ring: exactly 128 small frames fit before the backlog.
      let fitted = 0;
      while (stats(b).queues[0]!.rxBacklogged === 0 && fitted < 200) {
        b.backend.inject(rawFrame(60, DEV_MAC, PEER_MAC, fitted));
        fitted++;
      }
      expect(fitted - 1).toBe(128);
    });
  }

  it('declines while RSS steers, while frames wait in the backlog, and for a header-only first buffer', () => {
    const rss = openBench({ mq: true, rss: true, queues: 2 }, { queues: 2 });
    expect(rss.driver.setRss({ hashTypes: 1, table: [0, 1], key: new Uint8Array(40) })).toBe(0);
    rss.backend.inject(rawFrame(100, DEV_MAC, PEER_MAC, 1));
    expect(rss.backend.stats().deliveredDirect).toBe(0);
    expect(stats(rss).queues[0]!.rxPackets + stats(rss).queues[1]!.rxPackets).toBe(1);

    const empty = openBench({}, {}, { rxBuffers: 0 });
    empty.backend.inject(rawFrame(100, DEV_MAC, PEER_MAC, 1)); // backlogged: nothing to lend
    expect(empty.backend.stats().deliveredDirect).toBe(0);
    empty.driver.postRx(0, 4);
    expect(empty.driver.receive()).toHaveLength(1);

    const split = openBench({}, {}, { rxSplitHeader: true });
    const f = rawFrame(300, DEV_MAC, PEER_MAC, 2);
    split.backend.inject(f);
    expect(split.driver.receive().map((r) => hexOf(r.frame))).toEqual([hexOf(f)]);
    expect(split.backend.stats().deliveredDirect).toBe(0);
  });

  it('declines a buffer that spans two guest-memory regions; the copying path delivers it', () => {
    // Learn where the first rx buffer goes, then split guest memory in the middle of it.
    const probe = makeBench({}, {}, { rxBuffers: 1 });
    probe.driver.open();
    const at = firstRxBuffer(probe);
    const boundary = at + 700;
    const memory = new GuestMemory([
      { address: 0, bytes: new Uint8Array(boundary) },
      { address: boundary, bytes: new Uint8Array(MEM_SIZE - boundary) },
    ]);
    const b = makeBench({}, {}, { rxBuffers: 1 }, memory);
    b.driver.open();
    const f = rawFrame(1200, DEV_MAC, PEER_MAC, 3);
    b.backend.inject(f);
    expect(b.driver.receive().map((r) => hexOf(r.frame))).toEqual([hexOf(f)]);
    expect(b.backend.stats().deliveredDirect).toBe(0);
  });
});

/** Address of the first posted rx buffer (delivers one frame to find it). */
function firstRxBuffer(b: ReturnType<typeof makeBench>): number {
  b.backend.inject(rawFrame(60, DEV_MAC, PEER_MAC, 1));
  return b.driver.queue(0).getUsed()!.segments[0]!.addr;
}

/** A backend that drives the sink by hand. */
class ManualBackend implements NetBackend {
  readonly capabilities = {
    vnetHeader: true,
    offloads: { csum: true, tso4: true, tso6: true, ecn: true, ufo: true, uso4: true, uso6: true },
    queuePairs: 1,
  };
  sink!: BackendSink;
  attach(sink: BackendSink): void {
    this.sink = sink;
  }
  transmit(): 'sent' {
    return 'sent';
  }
  pause(): void {}
  resume(): void {}
  close(): void {}
}

function manualBench(
  rxBuffers = 4,
  memory = new GuestMemory([{ address: 0, bytes: new Uint8Array(MEM_SIZE) }]),
) {
  const backend = new ManualBackend();
  const irq = new InterruptCollector();
  const dev = createVirtioNetPci({ memory, backend, interrupts: irq });
  const driver = new VirtioNetDriver(dev, memory, {
    allocator: new BumpAllocator(0x100000, MEM_SIZE - 0x1000),
    interrupts: irq,
    rxBuffers,
  });
  driver.open();
  return { memory, backend, dev, driver, sink: backend.sink, t: new ReceiveTarget() };
}

/** Writes `[12-byte header][frame]` over the lent segments, then `overflow`, as a backend would. */
function fill(t: ReceiveTarget, frame: Uint8Array, overflow = new Uint8Array(0)): number {
  const stream = new Uint8Array(12 + frame.length);
  stream.set(frame, 12);
  let pos = 0;
  for (let i = 0; i < t.count && pos < stream.length; i++) {
    const n = Math.min(t.lengths[i]!, stream.length - pos);
    t.bytes[i]!.set(stream.subarray(pos, pos + n), t.offsets[i]!);
    pos += n;
  }
  overflow.set(stream.subarray(pos));
  return stream.length;
}

describe('direct receive: the contract from the backend side', () => {
  it('lends one buffer of the negotiated layout; a second lend before completing is refused', () => {
    const { sink, t, driver } = manualBench();
    expect(sink.lendReceive!(0, 10, t)).toBe(false); // header sizes differ (tap stuck at 10, guest 12)
    expect(sink.lendReceive!(0, 12, t)).toBe(true);
    expect([t.count, t.capacity]).toEqual([1, 1548]);
    expect(sink.lendReceive!(0, 12, new ReceiveTarget())).toBe(false);
    const f = rawFrame(500, DEV_MAC, PEER_MAC, 1);
    sink.completeReceive!(fill(t, f), new Uint8Array(0));
    expect(driver.receive().map((r) => hexOf(r.frame))).toEqual([hexOf(f)]);
  });

  it('after large frames the lend covers a whole 64 KiB frame, after small ones one buffer again', () => {
    const { sink, t, driver } = manualBench(128);
    const big = rawFrame(65000, DEV_MAC, PEER_MAC, 1);
    const capacities: number[] = [];
    for (let i = 0; i < 40; i++) {
      expect(sink.lendReceive!(0, 12, t)).toBe(true);
      capacities.push(t.capacity);
      const overflow = new Uint8Array(70000);
      const n = fill(t, big, overflow);
      sink.completeReceive!(n, overflow);
      expect(driver.receive().map((r) => hexOf(r.frame))).toEqual([hexOf(big)]);
    }
    expect(capacities[0]).toBe(1548);
    expect(capacities.at(-1)).toBeGreaterThanOrEqual(65012);
    expect(t.count).toBe(Math.ceil(65012 / 1548));
    const small = rawFrame(60, DEV_MAC, PEER_MAC, 2);
    for (let i = 0; i < 60; i++) {
      expect(sink.lendReceive!(0, 12, t)).toBe(true);
      sink.completeReceive!(fill(t, small), new Uint8Array(0));
      expect(driver.receive().map((r) => hexOf(r.frame))).toEqual([hexOf(small)]);
    }
    expect(sink.lendReceive!(0, 12, t)).toBe(true);
    expect(t.capacity).toBe(1548);
    sink.cancelReceive!();
  });

  it('a backend without a header gets the buffer after the header, and the device writes the header', () => {
    const { sink, t, driver } = manualBench();
    expect(sink.lendReceive!(0, 0, t)).toBe(true);
    expect(t.capacity).toBe(1548 - 12);
    const f = rawFrame(200, DEV_MAC, PEER_MAC, 2);
    t.bytes[0]!.set(f, t.offsets[0]!);
    sink.completeReceive!(f.length, new Uint8Array(0));
    const [r] = driver.receive();
    expect(hexOf(r!.frame)).toBe(hexOf(f));
    expect([r!.numBuffers, r!.offload]).toEqual([1, emptyOffload()]);
  });

  it('a header-less backend is not lent a buffer whose header would lie in another memory region', () => {
    const probe = manualBench(1);
    expect(probe.sink.lendReceive!(0, 12, probe.t)).toBe(true);
    const boundary = probe.t.offsets[0]! + 12; // region 0 starts at guest address 0: offset = address
    probe.sink.cancelReceive!();
    const memory = new GuestMemory([
      { address: 0, bytes: new Uint8Array(boundary) },
      { address: boundary, bytes: new Uint8Array(MEM_SIZE - boundary) },
    ]);
    const { sink, t, driver } = manualBench(1, memory);
    expect(sink.lendReceive!(0, 0, t)).toBe(false);
    const f = rawFrame(100, DEV_MAC, PEER_MAC, 5);
    sink.receive(f, 0, null);
    const [r] = driver.receive();
    expect([hexOf(r!.frame), r!.numBuffers]).toEqual([hexOf(f), 1]);
  });

  it('cancel gives the buffer back: the next frame uses it; complete or cancel without a lend does nothing', () => {
    const { sink, t, driver, dev } = manualBench(1);
    expect(sink.lendReceive!(0, 12, t)).toBe(true);
    sink.cancelReceive!();
    sink.cancelReceive!();
    sink.completeReceive!(100, new Uint8Array(100));
    expect(driver.receive()).toEqual([]);
    expect(sink.lendReceive!(0, 12, t)).toBe(true);
    const f = rawFrame(64, DEV_MAC, PEER_MAC, 3);
    sink.completeReceive!(fill(t, f), new Uint8Array(0));
    expect(driver.receive().map((r) => hexOf(r.frame))).toEqual([hexOf(f)]);
    expect(dev.stats().guestErrors).toBe(0);
  });

  it('lengths a backend cannot have read are counted drops, and the buffer goes back to the ring', () => {
    const { sink, t, driver, dev } = manualBench(1);
    for (const n of [0, 12 + 13, 12 + MAX_FRAME + 1, 1548 + 10, Number.NaN, 100.5]) {
      expect(sink.lendReceive!(0, 12, t)).toBe(true);
      sink.completeReceive!(n, new Uint8Array(5)); // the last: more than the buffer plus the overflow
    }
    expect(dev.stats().rxDroppedNotReady).toBe(6);
    expect(driver.receive()).toEqual([]);
    expect(sink.lendReceive!(0, 12, t)).toBe(true);
    const f = rawFrame(64, DEV_MAC, PEER_MAC, 4);
    sink.completeReceive!(fill(t, f), new Uint8Array(0));
    expect(driver.receive().map((r) => hexOf(r.frame))).toEqual([hexOf(f)]);
  });

  it('declines before the driver is ready, while the link is down, and after a reset', () => {
    const memory = new GuestMemory([{ address: 0, bytes: new Uint8Array(MEM_SIZE) }]);
    const backend = new ManualBackend();
    const dev = createVirtioNetPci({ memory, backend, interrupts: new InterruptCollector() });
    const t = new ReceiveTarget();
    expect(backend.sink.lendReceive!(0, 12, t)).toBe(false);
    const { sink, dev: d2, driver } = manualBench();
    d2.setLinkUp(false);
    expect(sink.lendReceive!(0, 12, t)).toBe(false);
    d2.setLinkUp(true);
    expect(sink.lendReceive!(0, 12, t)).toBe(true);
    driver.pci.reset();
    sink.completeReceive!(100, new Uint8Array(0)); // the lend died with the reset
    expect(sink.lendReceive!(0, 12, t)).toBe(false);
    void dev;
  });
});
