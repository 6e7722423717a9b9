// Receive bursts (BackendSink.beginReceiveBurst / endReceiveBurst): the frames of one backend batch get
// one used-buffer notification decision per rx queue, at the end, with the same frames and counters as
// frame-by-frame delivery.
import { describe, expect, it } from 'vitest';
import { GuestMemory } from '../../lib/memory/guest-memory.js';
import { MemoryBackend } from '../../lib/net/memory-backend.js';
import { BumpAllocator } from '../../virtio/testing/bump-allocator.js';
import { InterruptCollector } from '../../virtio/testing/pci-driver.js';
import { LINUX_6_1_FEATURES, VirtioNetDriver } from '../testing/net-driver.js';
import { captureSink } from '../testing/sink.js';
import { createVirtioNetPci } from '../virtio-net-pci.js';
import { DEV_MAC, hexOf, MEM_SIZE, PEER_MAC, rawFrame } from './bench.test-support.js';
import { NetF } from './features.js';

const EVENT_IDX = 29;
const bit = (b: number) => 1n << BigInt(b);

/** A device on a MemoryBackend whose sink the test drives directly, as a batching backend would. */
function rig(o: { eventIdx: boolean; pairs?: number; packed?: boolean }) {
  const memory = new GuestMemory([{ address: 0, bytes: new Uint8Array(MEM_SIZE) }]);
  const pairs = o.pairs ?? 1;
  const backend = new MemoryBackend({ queues: pairs, receive: 'copy' });
  const sinkOf = captureSink(backend);
  const irq = new InterruptCollector();
  const dev = createVirtioNetPci({
    memory,
    backend,
    interrupts: irq,
    queues: pairs,
    mq: pairs > 1,
    packed: o.packed ?? false,
  });
  let wanted = LINUX_6_1_FEATURES;
  if (!o.eventIdx) wanted &= ~bit(EVENT_IDX);
  if (o.packed) wanted |= bit(34);
  const driver = new VirtioNetDriver(dev, memory, {
    allocator: new BumpAllocator(0x100000, MEM_SIZE - 0x1000),
    interrupts: irq,
    wanted,
    pairs,
  });
  driver.open();
  const s = sinkOf();
  irq.takeVectors(); // the control queue's, while opening
  const interrupts = (pair: number) => dev.stats().queues[pair]!.rxInterrupts;
  return { dev, driver, irq, sink: s, interrupts };
}

const frames = (n: number, seed = 0) =>
  Array.from({ length: n }, (_, i) => rawFrame(60 + ((i * 37 + seed) % 1400), DEV_MAC, PEER_MAC, i + seed));

describe('receive bursts', () => {
  it('without EVENT_IDX: frame by frame raises one interrupt per frame, a burst one at its end', () => {
    const one = rig({ eventIdx: false });
    expect(one.driver.has(EVENT_IDX)).toBe(false);
    const a = frames(32);
    for (const f of a) one.sink.receive(f, 0, null);
    expect(one.interrupts(0)).toBe(32);

    const b = rig({ eventIdx: false });
    b.sink.beginReceiveBurst!();
    for (const f of a) b.sink.receive(f, 0, null);
    expect(b.interrupts(0)).toBe(0); // nothing raised inside the burst
    expect(b.irq.takeVectors()).toEqual([]); // and no message either
    expect(one.irq.takeVectors()).toHaveLength(32);
    b.sink.endReceiveBurst!();
    expect(b.interrupts(0)).toBe(1);
    expect(b.irq.takeVectors()).toHaveLength(1);
    // The same frames, byte for byte, and the same counters but interrupts.
    const got = b.driver.receive().map((r) => hexOf(r.frame));
    expect(got).toEqual(a.map(hexOf));
    expect(one.driver.receive().map((r) => hexOf(r.frame))).toEqual(got);
    const { rxInterrupts: _x, ...sb } = b.dev.stats().queues[0]!;
    const { rxInterrupts: _y, ...so } = one.dev.stats().queues[0]!;
    expect(sb).toEqual(so);
  });

  for (const packed of [false, true]) {
    it(`with EVENT_IDX (${packed ? 'packed' : 'split'}): the interrupt comes at the end of the burst, once per burst`, () => {
      const r = rig({ eventIdx: true, packed });
      expect(r.driver.has(EVENT_IDX)).toBe(true);
      expect(r.driver.has(34)).toBe(packed);
      for (let round = 0; round < 3; round++) {
        const a = frames(20, round);
        r.sink.beginReceiveBurst!();
        for (const f of a) r.sink.receive(f, 0, null);
        expect(r.interrupts(0)).toBe(round);
        r.sink.endReceiveBurst!();
        expect(r.interrupts(0)).toBe(round + 1);
        // The driver consumes and re-arms used_event, as NAPI does: the next burst interrupts again.
        expect(r.driver.receive().map((x) => hexOf(x.frame))).toEqual(a.map(hexOf));
      }
    });
  }

  it('two pairs in one burst: one decision per rx queue; nested bursts raise at the outer end', () => {
    const r = rig({ eventIdx: false, pairs: 2 });
    expect(r.driver.has(NetF.MQ)).toBe(true);
    r.sink.beginReceiveBurst!();
    r.sink.beginReceiveBurst!();
    for (const f of frames(5)) r.sink.receive(f, 0, null);
    for (const f of frames(7, 3)) r.sink.receive(f, 1, null);
    r.sink.endReceiveBurst!();
    expect([r.interrupts(0), r.interrupts(1)]).toEqual([0, 0]);
    r.sink.endReceiveBurst!();
    expect([r.interrupts(0), r.interrupts(1)]).toEqual([1, 1]);
    // An end without a begin changes nothing.
    r.sink.endReceiveBurst!();
    expect([r.interrupts(0), r.interrupts(1)]).toEqual([1, 1]);
    expect(r.driver.receive(0)).toHaveLength(5);
    expect(r.driver.receive(1)).toHaveLength(7);
    // Out of a burst, frame by frame again.
    for (const f of frames(3)) r.sink.receive(f, 0, null);
    expect(r.interrupts(0)).toBe(4);
  });

  it('a device reset inside a burst: the burst raises nothing for the reset queues, the next works', () => {
    const r = rig({ eventIdx: false });
    r.sink.beginReceiveBurst!();
    for (const f of frames(4)) r.sink.receive(f, 0, null);
    r.driver.pci.reset();
    r.sink.endReceiveBurst!();
    expect(r.interrupts(0)).toBe(0);
    expect(r.irq.takeVectors()).toEqual([]);
    r.driver.open();
    r.sink.beginReceiveBurst!();
    for (const f of frames(4)) r.sink.receive(f, 0, null);
    r.irq.takeVectors();
    r.sink.endReceiveBurst!();
    expect(r.irq.takeVectors()).toHaveLength(1);
    expect(r.driver.receive().length).toBe(4);
  });
});
