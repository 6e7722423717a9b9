/**
 * Property tests over both ring formats: valid chains round-trip driver -> device -> driver exactly, and
 * guest garbage only ever yields VirtqueueError, terminates, and writes nothing but the device's areas.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { GuestMemory } from '../../lib/memory/guest-memory.js';
import { createVirtqueue } from './create-virtqueue.js';
import { BumpAllocator } from '../testing/bump-allocator.js';
import type { DriverSegment } from '../testing/driver-buffer.js';
import { PackedDriverQueue } from '../testing/packed-driver.js';
import { SplitDriverQueue } from '../testing/split-driver.js';
import { DescriptorChain, type Virtqueue, VirtqueueError } from './virtqueue.js';

const segArb = fc.record({
  addr: fc.integer({ min: 0x100000, max: 0x1fff00 }),
  len: fc.integer({ min: 0, max: 256 }),
});
const chainArb = fc.record({
  readable: fc.array(segArb, { maxLength: 5 }),
  writable: fc.array(segArb, { maxLength: 5 }),
  indirect: fc.boolean(),
});
type Op =
  | { kind: 'add'; chain: typeof chainArb extends fc.Arbitrary<infer T> ? T : never }
  | { kind: 'pop' }
  | { kind: 'complete'; pick: number; written: number; publish: boolean };
const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ kind: fc.constant('add' as const), chain: chainArb }),
  fc.record({ kind: fc.constant('pop' as const) }),
  fc.record({
    kind: fc.constant('complete' as const),
    pick: fc.nat(),
    written: fc.nat({ max: 0xffffffff }),
    publish: fc.boolean(),
  }),
);

describe.each([false, true])('valid chains round-trip (packed=%s)', (packed) => {
  it('device sees exactly the posted segments and the driver gets back ids and lengths', () => {
    fc.assert(
      fc.property(
        packed ? fc.integer({ min: 1, max: 40 }) : fc.constantFrom(1, 2, 4, 8, 16, 32),
        fc.boolean(),
        fc.array(opArb, { minLength: 40, maxLength: 200 }),
        (size, eventIdx, ops) => {
          const mem = new GuestMemory([{ address: 0x10000, bytes: new Uint8Array(0x200000 - 0x10000) }]);
          const alloc = new BumpAllocator(0x10000, 0x100000);
          const drv = packed
            ? PackedDriverQueue.allocate(mem, alloc, size, { eventIdx })
            : SplitDriverQueue.allocate(mem, alloc, size, { eventIdx });
          const dev = createVirtqueue(mem, drv.config, packed);
          const posted: { id: number; segs: DriverSegment[] }[] = [];
          const popped: DescriptorChain[] = [];
          const completed: { id: number; len: number }[] = [];
          const staged: { id: number; len: number }[] = [];
          for (const op of ops) {
            if (op.kind === 'add') {
              const { readable, writable, indirect } = op.chain;
              const n = readable.length + writable.length;
              if (n === 0 || n > size || (indirect ? 1 : n) > drv.numFree) continue;
              if (packed && posted.length + popped.length >= size) continue;
              const id = drv.add(readable, writable, { indirect });
              posted.push({
                id,
                segs: [
                  ...readable.map((s) => ({ ...s, write: false })),
                  ...writable.map((s) => ({ ...s, write: true })),
                ],
              });
            } else if (op.kind === 'pop') {
              const c = new DescriptorChain(2);
              const got = dev.pop(c);
              expect(got).toBe(posted.length > 0);
              if (!got) continue;
              const want = posted.shift()!;
              expect(c.head).toBe(want.id);
              const segs: DriverSegment[] = [];
              for (let i = 0; i < c.segmentCount; i++) {
                segs.push({ addr: c.addr[i]!, len: c.len[i]!, write: i >= c.readableCount });
              }
              expect(segs).toEqual(want.segs);
              expect(c.readableLength).toBe(want.segs.filter((s) => !s.write).reduce((a, s) => a + s.len, 0));
              expect(c.writableLength).toBe(want.segs.filter((s) => s.write).reduce((a, s) => a + s.len, 0));
              popped.push(c);
            } else if (popped.length > 0) {
              const [c] = popped.splice(op.pick % popped.length, 1);
              dev.addUsed(c!, op.written);
              staged.push({ id: c!.head, len: op.written });
              if (op.publish) {
                dev.publishUsed();
                completed.push(...staged.splice(0));
              }
            }
            // The driver sees exactly the published entries, in order.
            for (;;) {
              const u = drv.getUsed();
              if (u === null) break;
              expect({ id: u.id, len: u.len }).toEqual(completed.shift());
            }
            expect(completed).toEqual([]);
          }
        },
      ),
      { numRuns: 150 },
    );
  });
});

/** A GuestMemory that records every write, to check the device writes only where it may. */
class SpyMemory extends GuestMemory {
  writes: [number, number][] = [];
  override writeU16(a: number | bigint, v: number): void {
    this.writes.push([Number(a), 2]);
    super.writeU16(a, v);
  }
  override writeU32(a: number | bigint, v: number): void {
    this.writes.push([Number(a), 4]);
    super.writeU32(a, v);
  }
  override writeU8(a: number | bigint, v: number): void {
    this.writes.push([Number(a), 1]);
    super.writeU8(a, v);
  }
  override writeU64(a: number | bigint, v: number | bigint): void {
    this.writes.push([Number(a), 8]);
    super.writeU64(a, v);
  }
  override write(a: number | bigint, d: Uint8Array): void {
    this.writes.push([Number(a), d.length]);
    super.write(a, d);
  }
}

const RING = 0x10000;
const RING_LEN = 0x1000;
const GUARD_LEN = 0x1000;

/** Descriptors with values biased towards the interesting: inside the ring region, small, huge. */
const descArb = fc.record({
  at: fc.nat({ max: RING_LEN / 16 - 1 }),
  addr: fc.oneof(
    { arbitrary: fc.integer({ min: RING - 64, max: RING + RING_LEN + 64 }), weight: 4 },
    fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
    fc.constantFrom(0, 2 ** 53, 2 ** 53 - 16),
  ),
  len: fc.oneof(
    { arbitrary: fc.constantFrom(0, 16, 32, 48, 0x1000, 0xffffffff, 0x80000000), weight: 2 },
    { arbitrary: fc.nat({ max: 64 }), weight: 2 },
    { arbitrary: fc.nat({ max: 0xffffffff }), weight: 1 },
  ),
  // Split: NEXT 1, WRITE 2, INDIRECT 4. Packed: plus AVAIL 0x80 / USED 0x8000.
  flags: fc.oneof(
    fc.nat({ max: 0xffff }),
    fc.constantFrom(0, 1, 2, 3, 4, 5, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x8001, 0x8080, 0x8000),
  ),
  next: fc.oneof(fc.nat({ max: 0xffff }), fc.nat({ max: 8 })),
});
const inRing = fc.record({
  addr: fc.integer({ min: RING, max: RING + RING_LEN - 64 }),
  len: fc.nat({ max: 64 }),
});
const smallChainArb = fc.record({
  readable: fc.array(inRing, { maxLength: 3 }),
  writable: fc.array(inRing, { maxLength: 3 }),
  indirect: fc.boolean(),
});
const garbageOp = fc.oneof(
  fc.constantFrom('pop', 'pop', 'pop', 'push', 'publish', 'notify', 'enable', 'disable', 'has', 'unpop'),
  fc.record({ scribble: fc.nat({ max: RING_LEN - 2 }), value: fc.nat({ max: 0xffff }) }),
);

describe.each([false, true])('garbage rings (packed=%s)', (packed) => {
  it('only ever throw VirtqueueError, terminate, and write only the device areas', () => {
    const outcomes = new Set<string>();
    fc.assert(
      fc.property(
        fc.oneof(
          fc.uint8Array({ minLength: RING_LEN, maxLength: RING_LEN }),
          fc.constant(new Uint8Array(RING_LEN)),
          fc.constant(new Uint8Array(RING_LEN).fill(0x80)),
        ),
        fc.array(descArb, { maxLength: 40 }),
        fc.integer({ min: 0, max: 6 }).map((e) => 2 ** e),
        fc.tuple(fc.nat({ max: RING_LEN }), fc.nat({ max: RING_LEN }), fc.nat({ max: RING_LEN })),
        fc.boolean(),
        fc.array(garbageOp, { minLength: 5, maxLength: 60 }),
        fc.option(fc.record({ idx: fc.nat(), heads: fc.array(fc.nat(), { minLength: 1, maxLength: 8 }) })),
        fc.option(fc.array(smallChainArb, { minLength: 1, maxLength: 6 }), { freq: 2 }),
        (ringBytes, descs, size, [d, dr, dv], eventIdx, ops, ahead, valid) => {
          const lo = new Uint8Array(GUARD_LEN).fill(0xa5);
          const hi = new Uint8Array(GUARD_LEN).fill(0x5a);
          const ring = ringBytes.slice();
          const view = new DataView(ring.buffer);
          // Guards right before and after the ring region; an unmapped hole after the upper guard.
          const mem = new SpyMemory([
            { address: RING - GUARD_LEN, bytes: lo },
            { address: RING, bytes: ring },
            { address: RING + RING_LEN, bytes: hi },
          ]);
          const config = {
            index: 0,
            size,
            // Inside the ring region, so that any write to a guard is the device's fault.
            descAddr: RING + (Math.min(d, RING_LEN - 16 * size) & ~15),
            driverAddr: RING + (Math.min(dr, RING_LEN - (packed ? 4 : 6 + 2 * size)) & ~3),
            deviceAddr: RING + (Math.min(dv, RING_LEN - (packed ? 4 : 6 + 8 * size)) & ~3),
            eventIdx,
          };
          if (valid !== null) {
            // A valid ring to start from; the scribble ops then corrupt it while the device works.
            const alloc = new BumpAllocator(RING, RING + RING_LEN);
            const drv = packed
              ? new PackedDriverQueue(mem, {
                  size,
                  descAddr: config.descAddr,
                  driverAddr: config.driverAddr,
                  deviceAddr: config.deviceAddr,
                  eventIdx,
                  allocator: alloc,
                })
              : new SplitDriverQueue(mem, {
                  size,
                  descAddr: config.descAddr,
                  availAddr: config.driverAddr,
                  usedAddr: config.deviceAddr,
                  eventIdx,
                  allocator: alloc,
                });
            try {
              for (const c of valid) drv.add(c.readable, c.writable, { indirect: c.indirect });
            } catch (e) {
              expect(e).toBeInstanceOf(RangeError); // ring or allocator full
            }
          }
          // Half the descriptors fill the ring's own table from slot 0, the rest go anywhere (indirect tables).
          for (const [i, x] of (valid === null ? descs : []).entries()) {
            const o = i % 2 === 0 ? config.descAddr - RING + 16 * ((i / 2) % size) : 16 * x.at;
            view.setBigUint64(o, BigInt(x.addr), true);
            view.setUint32(o + 8, x.len, true);
            view.setUint16(o + 12, packed ? x.next : x.flags, true);
            view.setUint16(o + 14, packed ? x.flags : x.next, true);
          }
          if (!packed && ahead !== null && valid === null) {
            // A plausible avail idx and ring entries, so that chains actually get walked.
            view.setUint16(config.driverAddr - RING + 2, ahead.idx % (size + 2), true);
            for (let i = 0; i < size; i++) {
              view.setUint16(
                config.driverAddr - RING + 4 + 2 * i,
                ahead.heads[i % ahead.heads.length]! % (size + 1),
                true,
              );
            }
          }
          let q: Virtqueue;
          try {
            q = createVirtqueue(mem, config, packed);
          } catch (e) {
            expect(e).toBeInstanceOf(VirtqueueError);
            return;
          }
          // Where the device may write: split used ring; packed descriptor ring and device event area.
          const writable: [number, number][] = packed
            ? [
                [config.descAddr, 16 * size],
                [config.deviceAddr, 4],
              ]
            : [[config.deviceAddr, 6 + 8 * size]];
          const chains: DescriptorChain[] = [];
          const chain = new DescriptorChain();
          const attempt = (fn: () => unknown): void => {
            try {
              fn();
            } catch (e) {
              expect(e).toBeInstanceOf(VirtqueueError);
              outcomes.add((e as VirtqueueError).kind);
            }
          };
          for (const op of ops) {
            if (typeof op === 'object') {
              view.setUint16(op.scribble, op.value, true); // the guest changes the ring under our feet
              continue;
            }
            mem.writes = [];
            attempt(() => {
              switch (op) {
                case 'pop':
                  for (let i = 0; i <= 2 * size; i++) {
                    const c = new DescriptorChain(1);
                    if (!q.pop(c)) break;
                    outcomes.add(c.segmentCount > 1 ? 'popped-multi' : 'popped');
                    chains.push(c);
                  }
                  break;
                case 'push':
                  if (chains.length > 0) q.addUsed(chains.shift()!, 7);
                  break;
                case 'publish':
                  q.publishUsed();
                  break;
                case 'notify':
                  q.needsNotification();
                  break;
                case 'enable':
                  q.enableNotification();
                  break;
                case 'disable':
                  q.disableNotification();
                  break;
                case 'has':
                  q.hasAvailable();
                  break;
                case 'unpop':
                  if (chains.length > 0) q.unpop(chains.pop()!);
                  break;
              }
              void chain;
            });
            for (const [a, n] of mem.writes) {
              expect(writable.some(([s, l]) => a >= s && a + n <= s + l)).toBe(true);
            }
          }
          expect(lo.every((b) => b === 0xa5)).toBe(true);
          expect(hi.every((b) => b === 0x5a)).toBe(true);
        },
      ),
      { numRuns: 600 },
    );
    // The generator must reach deep into chain walking, not stop at the first check.
    const kinds = [...outcomes].sort();
    if (process.env.RING_PROPERTIES_DEBUG) console.log(packed, kinds);
    // (Only outcomes that show up in practically every run: the rarer kinds have unit tests.)
    const expected = ['popped', 'popped-multi', 'memory', 'chain-too-long', 'indirect-length'];
    if (!packed) expected.push('descriptor-index', 'avail-index');
    for (const k of expected) expect(kinds).toContain(k);
  });
});

/**
 * EVENT_IDX: the device must interrupt exactly when it published, since its previous decision, the used
 * entry the driver asked about. The model says that directly (a set of published positions), not with
 * the wrap-around formula the rings use.
 */
const notifyOp = fc.oneof(
  fc.record({ kind: fc.constant('complete' as const), count: fc.integer({ min: 1, max: 5 }) }),
  fc.record({
    kind: fc.constant('event' as const),
    ahead: fc.integer({ min: -3, max: 8 }),
    wrap: fc.boolean(),
  }),
  fc.record({ kind: fc.constant('decide' as const) }),
);

describe.each([false, true])('EVENT_IDX used-buffer notifications (packed=%s)', (packed) => {
  it('interrupt iff the used entry (packed: ring slot) at the event was published since the last decision', () => {
    fc.assert(
      fc.property(
        packed ? fc.integer({ min: 1, max: 12 }) : fc.constantFrom(1, 2, 4, 8, 16),
        fc.integer({ min: 1, max: 3 }),
        fc.nat({ max: 0xffff }),
        fc.array(notifyOp, { minLength: 10, maxLength: 150 }),
        (size, descsPerChain, start, ops) => {
          const n = Math.min(descsPerChain, size);
          const mem = new GuestMemory([{ address: 0x10000, bytes: new Uint8Array(0x20000) }]);
          const alloc = new BumpAllocator(0x10000, 0x30000);
          const split = packed ? null : SplitDriverQueue.allocate(mem, alloc, size, { eventIdx: true });
          const pk = packed ? PackedDriverQueue.allocate(mem, alloc, size, { eventIdx: true }) : null;
          const drv = (split ?? pk)!;
          const dev = createVirtqueue(mem, drv.config, packed);
          // Split: start the free-running indices anywhere, to cross the 16-bit wrap.
          let usedIdx = 0;
          if (split !== null) {
            dev.restore({ nextAvail: start, nextUsed: start, notificationsDisabled: false });
            mem.writeU16(drv.config.driverAddr + 2, start);
            mem.writeU16(drv.config.deviceAddr + 2, start);
            (split as unknown as { availIdx: number; lastUsed: number; kickedAvail: number }).availIdx =
              start;
            (split as unknown as { lastUsed: number }).lastUsed = start;
            usedIdx = start;
          }
          // Packed: absolute count of ring slots the used descriptors advanced over.
          let usedAbs = 0;
          let published: number[] = []; // split: used idx values; packed: absolute ring slots passed
          let eventSplit = usedIdx;
          let eventPacked: { off: number; wrap: boolean } = { off: 0, wrap: true };
          split?.setUsedEvent(eventSplit);
          pk?.setUsedEvent(0, true);
          let first = true;
          const c = new DescriptorChain();
          for (const op of ops) {
            if (op.kind === 'complete') {
              const batch = Math.min(op.count, Math.floor(size / n)); // what fits before the driver reclaims
              for (let i = 0; i < batch; i++) {
                drv.add(
                  Array.from({ length: n }, () => ({ addr: 0x28000, len: 8 })),
                  [],
                );
                expect(dev.pop(c)).toBe(true);
                dev.addUsed(c, 0);
                if (packed) {
                  // Every slot the used descriptor advances over counts (Linux may put off_wrap mid-chain).
                  for (let k = 0; k < c.descCount; k++) published.push(usedAbs + k);
                  usedAbs += c.descCount;
                } else {
                  published.push(usedIdx);
                  usedIdx = (usedIdx + 1) & 0xffff;
                }
              }
              dev.publishUsed();
              while (drv.getUsed() !== null);
            } else if (op.kind === 'event') {
              if (split !== null) {
                eventSplit = (usedIdx + op.ahead) & 0xffff;
                split.setUsedEvent(eventSplit);
              } else {
                eventPacked = { off: (((usedAbs + op.ahead) % size) + size) % size, wrap: op.wrap };
                pk!.setUsedEvent(eventPacked.off, eventPacked.wrap);
              }
            } else {
              const hit = packed
                ? published.some(
                    (a) =>
                      a % size === eventPacked.off && (Math.floor(a / size) % 2 === 0) === eventPacked.wrap,
                  )
                : published.includes(eventSplit);
              expect(dev.needsNotification()).toBe(first || hit);
              first = false;
              published = [];
            }
          }
        },
      ),
      { numRuns: 300 },
    );
  });
});

/**
 * Available-buffer notifications: a device that drains the queue, re-enables notifications and sleeps
 * when `enableNotification()` says nothing arrived must always be woken by a kick the driver's
 * `needsKick()` asks for: no chain may wait in a queue whose device sleeps.
 */
const kickOp = fc.oneof(
  fc.record({ kind: fc.constant('add' as const), count: fc.integer({ min: 1, max: 4 }) }),
  // `racing`: chains the driver adds while the device drains, just before it re-enables notifications.
  fc.record({ kind: fc.constant('work' as const), racing: fc.integer({ min: 0, max: 3 }) }),
  fc.constant({ kind: 'reclaim' as const }),
);

describe.each([false, true])('no lost kicks (packed=%s)', (packed) => {
  it('a sleeping device never has chains available that no kick announced', () => {
    fc.assert(
      fc.property(
        packed ? fc.integer({ min: 1, max: 12 }) : fc.constantFrom(1, 2, 4, 8, 16),
        fc.boolean(),
        fc.array(kickOp, { minLength: 10, maxLength: 150 }),
        (size, eventIdx, ops) => {
          const mem = new GuestMemory([{ address: 0x10000, bytes: new Uint8Array(0x20000) }]);
          const alloc = new BumpAllocator(0x10000, 0x30000);
          const drv = packed
            ? PackedDriverQueue.allocate(mem, alloc, size, { eventIdx })
            : SplitDriverQueue.allocate(mem, alloc, size, { eventIdx });
          const dev = createVirtqueue(mem, drv.config, packed);
          const c = new DescriptorChain();
          let sleeping = true;
          let kickPending = false; // a kick that arrived while the device was awake wakes it later
          dev.enableNotification();
          const driverAdds = (count: number): void => {
            for (let i = 0; i < count && drv.numFree > 0; i++) drv.add([{ addr: 0x28000, len: 1 }], []);
            if (drv.needsKick()) kickPending = true;
          };
          const work = (racing: number): void => {
            dev.disableNotification();
            for (let round = 0; round <= size + 4; round++) {
              while (dev.pop(c)) dev.push(c, 0);
              if (round === 0) driverAdds(racing);
              if (!dev.enableNotification()) {
                sleeping = true;
                return;
              }
              dev.disableNotification();
            }
            throw new Error('enableNotification kept reporting chains that pop did not return');
          };
          for (const op of ops) {
            if (op.kind === 'add') driverAdds(op.count);
            else if (op.kind === 'reclaim') while (drv.getUsed() !== null);
            if (sleeping && kickPending) {
              sleeping = false;
              kickPending = false;
            }
            if (op.kind === 'work' && !sleeping) work(op.racing);
            if (sleeping && !kickPending) expect(dev.hasAvailable()).toBe(false);
          }
        },
      ),
      { numRuns: 300 },
    );
  });
});
