// VIRTIO_F_IN_ORDER batching (§2.7.9 split, §2.8 "In-order use of descriptors" packed) and
// VIRTIO_F_NOTIFICATION_DATA hints (§2.9) on the device-side rings, byte for byte on the ring layout,
// against the synthetic drivers reading used entries as Linux 7.2 does.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { GuestMemory } from '../../lib/memory/guest-memory.js';
import { BumpAllocator } from '../testing/bump-allocator.js';
import { PackedDriverQueue } from '../testing/packed-driver.js';
import { SplitDriverQueue } from '../testing/split-driver.js';
import { createVirtqueue } from './create-virtqueue.js';
import { PACKED_DESC, VIRTQ_DESC_F_AVAIL, VIRTQ_DESC_F_USED } from './packed-ring.js';
import { SPLIT_DESC, SPLIT_USED, VIRTQ_DESC_F_NEXT } from './split-ring.js';
import { DescriptorChain, type Virtqueue, VirtqueueError } from './virtqueue.js';

const BASE = 0x10000;
const F_WRITE = 2;

function memory() {
  const mem = new GuestMemory([{ address: BASE, bytes: new Uint8Array(0x40000) }]);
  return { mem, alloc: new BumpAllocator(BASE, 0x40000) };
}

function split(size: number, o: { inOrder?: boolean; eventIdx?: boolean } = {}) {
  const { mem, alloc } = memory();
  const drv = SplitDriverQueue.allocate(mem, alloc, size, {
    inOrder: o.inOrder ?? true,
    eventIdx: o.eventIdx,
  });
  const q = createVirtqueue(mem, drv.config, false);
  const usedElem = (i: number) => {
    const e = drv.config.deviceAddr + SPLIT_USED.ring + SPLIT_USED.entrySize * i;
    return [mem.readU32(e + SPLIT_USED.elemId), mem.readU32(e + SPLIT_USED.elemLen)];
  };
  const usedIdx = () => mem.readU16(drv.config.deviceAddr + SPLIT_USED.idx);
  return { mem, drv, q, usedElem, usedIdx };
}

function packed(size: number, o: { inOrder?: boolean; eventIdx?: boolean } = {}) {
  const { mem, alloc } = memory();
  const drv = PackedDriverQueue.allocate(mem, alloc, size, {
    inOrder: o.inOrder ?? true,
    eventIdx: o.eventIdx,
  });
  const q = createVirtqueue(mem, drv.config, true);
  /** [id, len, flags] of the descriptor at `slot`. */
  const desc = (slot: number) => {
    const d = drv.config.descAddr + PACKED_DESC.size * slot;
    return [
      mem.readU16(d + PACKED_DESC.id),
      mem.readU32(d + PACKED_DESC.len),
      mem.readU16(d + PACKED_DESC.flags),
    ];
  };
  return { mem, drv, q, desc };
}

/** Pops every available chain and uses it: `written(i, chain)` bytes (default 0), then publishes. */
function useAll(q: Virtqueue, written: (i: number, c: DescriptorChain) => number = () => 0): number[] {
  const heads: number[] = [];
  const c = new DescriptorChain();
  while (q.pop(c)) {
    q.addUsed(c, written(heads.length, c));
    heads.push(c.head);
  }
  return heads;
}

const drain = (d: { getUsed(): { id: number; len: number } | null }) => {
  const out: [number, number][] = [];
  for (let u = d.getUsed(); u; u = d.getUsed()) out.push([u.id, u.len]);
  return out;
};

const USED = VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED;

describe('IN_ORDER on a split ring (§2.7.9)', () => {
  it('a tx burst of N chains is one used element at the first position, id of the last, used idx += N', () => {
    const s = split(8);
    for (let i = 0; i < 5; i++) s.drv.add([new Uint8Array(60)], []);
    expect(useAll(s.q)).toEqual([0, 1, 2, 3, 4]);
    expect(s.usedIdx()).toBe(0); // nothing visible before publishUsed
    expect(s.q.publishUsed()).toBe(4);
    expect(s.usedIdx()).toBe(5);
    expect([0, 1, 2, 3, 4].map(s.usedElem)).toEqual([
      [4, 0],
      [0, 0],
      [0, 0],
      [0, 0],
      [0, 0],
    ]);
    expect(s.q.counters).toMatchObject({ batchEntries: 1, foldedBuffers: 4 });
    expect(drain(s.drv)).toEqual([
      [0, 0],
      [1, 0],
      [2, 0],
      [3, 0],
      [4, 0],
    ]);
    expect(s.drv.numFree).toBe(8);
  });

  it('rx: a partly filled buffer ends the batch with its own element; full ones are folded', () => {
    const s = split(8);
    for (let i = 0; i < 5; i++) s.drv.add([], [new Uint8Array(100)]);
    // full, 40, full, full, 7
    const lens = [100, 40, 100, 100, 7];
    useAll(s.q, (i) => lens[i]!);
    expect(s.q.publishUsed()).toBe(3); // batches {0, 1} and {2, 3, 4}
    expect(s.usedIdx()).toBe(5);
    expect([0, 1, 2, 3, 4].map(s.usedElem)).toEqual([
      [1, 40],
      [0, 0],
      [4, 7],
      [0, 0],
      [0, 0],
    ]);
    // The driver reports the folded buffers with their whole writable length, as Linux 7.2 does.
    expect(drain(s.drv)).toEqual([
      [0, 100],
      [1, 40],
      [2, 100],
      [3, 100],
      [4, 7],
    ]);
  });

  it('mixed chains: multi-descriptor and indirect buffers in ring order, readable + writable', () => {
    const s = split(8);
    s.drv.add([new Uint8Array(10), new Uint8Array(20)], [new Uint8Array(30)]); // descs 0,1,2
    s.drv.add([new Uint8Array(10)], [new Uint8Array(8), new Uint8Array(8)], { indirect: true }); // desc 3
    s.drv.add([], [new Uint8Array(64), new Uint8Array(64)]); // descs 4,5
    // The driver's in-order layout: next = x + 1 (§2.7.5).
    const next = (i: number) => s.mem.readU16(s.drv.config.descAddr + SPLIT_DESC.size * i + SPLIT_DESC.next);
    const flags = (i: number) =>
      s.mem.readU16(s.drv.config.descAddr + SPLIT_DESC.size * i + SPLIT_DESC.flags);
    expect([next(0), next(1), next(4)]).toEqual([1, 2, 5]);
    expect(flags(2) & VIRTQ_DESC_F_NEXT).toBe(0);
    expect(useAll(s.q, (i, c) => (i === 2 ? 100 : c.writableLength))).toEqual([0, 3, 4]);
    s.q.publishUsed();
    expect(s.usedIdx()).toBe(3);
    expect([0, 1, 2].map(s.usedElem)).toEqual([
      [4, 100],
      [0, 0],
      [0, 0],
    ]);
    expect(drain(s.drv)).toEqual([
      [0, 30],
      [3, 16],
      [4, 100],
    ]);
    expect(s.drv.numFree).toBe(8);
  });

  it('batches across the end of the used ring and the 16-bit index wrap', () => {
    const t = split(4);
    let total = 0;
    // Laps of 3 on a size-4 ring: batches start at every position and cross the end; 22000 laps pass
    // the 16-bit used idx wrap.
    for (let lap = 0; lap < 22000; lap++) {
      for (let i = 0; i < 3; i++) t.drv.add([new Uint8Array(0)], []);
      useAll(t.q);
      expect(t.q.publishUsed()).toBe(2);
      const got = drain(t.drv);
      if (got.length !== 3 || got[2]![0] !== (3 * lap + 2) % 4) expect(got).toEqual(['lap', lap]);
      total += 3;
      // The element sits at the batch's first position, named after its last buffer.
      if (lap % 997 === 0 || lap > 21840) {
        expect(t.usedIdx()).toBe(total & 0xffff);
        expect(t.usedElem((total - 3) & 3)).toEqual([(total - 1) & 3, 0]);
      }
    }
    expect(total).toBeGreaterThan(0x10000);
  });

  it('EVENT_IDX: a batch crossing used_event notifies once; one that does not, does not', () => {
    const s = split(8, { eventIdx: true });
    s.q.needsNotification(); // first decision: nothing published yet, establishes the baseline
    s.drv.setUsedEvent(2); // interrupt when used idx passes 2
    for (let i = 0; i < 5; i++) s.drv.add([new Uint8Array(8)], []);
    useAll(s.q);
    s.q.publishUsed();
    expect(s.q.needsNotification()).toBe(true); // 0 -> 5 crossed 2
    drain(s.drv);
    s.drv.setUsedEvent(9);
    for (let i = 0; i < 3; i++) s.drv.add([new Uint8Array(8)], []);
    useAll(s.q);
    s.q.publishUsed();
    expect(s.q.needsNotification()).toBe(false); // 5 -> 8 did not reach 9
    for (let i = 0; i < 2; i++) s.drv.add([new Uint8Array(8)], []);
    drain(s.drv);
    useAll(s.q);
    // Not published by the caller: the decision closes the batch itself and sees used idx 10.
    expect(s.q.needsNotification()).toBe(true);
    expect(s.usedIdx()).toBe(10);
  });

  it('without IN_ORDER every buffer keeps its own element (unchanged)', () => {
    const s = split(8, { inOrder: false });
    for (let i = 0; i < 3; i++) s.drv.add([new Uint8Array(8)], []);
    useAll(s.q);
    expect(s.q.publishUsed()).toBe(0);
    expect([0, 1, 2].map(s.usedElem)).toEqual([
      [0, 0],
      [1, 0],
      [2, 0],
    ]);
    expect(s.q.counters.batchEntries).toBe(0);
  });

  it('hostile guest: out-of-order heads and a head posted twice are used as posted, never an exception', () => {
    const s = split(8);
    // Descriptors 0..3 laid out by the driver, then the avail ring rewritten: heads 3, 1, 1.
    for (let i = 0; i < 3; i++) s.drv.add([new Uint8Array(8)], []);
    const ring = s.drv.config.driverAddr + 4;
    s.mem.writeU16(ring, 3);
    s.mem.writeU16(ring + 2, 1);
    s.mem.writeU16(ring + 4, 1);
    const c = new DescriptorChain();
    const heads: number[] = [];
    while (s.q.pop(c)) {
      heads.push(c.head);
      s.q.addUsed(c, 0);
    }
    expect(heads).toEqual([3, 1, 1]);
    s.q.publishUsed();
    expect(s.usedIdx()).toBe(3);
    expect(s.usedElem(0)).toEqual([1, 0]);
    // Linux would take buffers 0, 1 and stop at the named id 1, then look for another element.
    expect(s.drv.getUsed()).toMatchObject({ id: 0 });
    expect(s.drv.getUsed()).toMatchObject({ id: 1 });
  });
});

describe('IN_ORDER on a packed ring (§2.8)', () => {
  it('a tx burst is one used descriptor at the first slot with the last id; slots skipped by chain length', () => {
    const s = packed(16);
    // Chains of 1, 2, 1 and 3 descriptors: Linux's in-order ids are the first slots 0, 1, 3, 4.
    const ids = [
      s.drv.add([new Uint8Array(8)], []),
      s.drv.add([new Uint8Array(8), new Uint8Array(8)], []),
      s.drv.add([new Uint8Array(8)], []),
      s.drv.add([new Uint8Array(8), new Uint8Array(8), new Uint8Array(8)], []),
    ];
    expect(ids).toEqual([0, 1, 3, 4]);
    const before = [1, 2, 3, 4, 5, 6].map(s.desc);
    expect(useAll(s.q)).toEqual([0, 1, 3, 4]);
    expect(s.desc(0)[2]! & VIRTQ_DESC_F_USED).toBe(0); // held back until publishUsed
    expect(s.q.publishUsed()).toBe(3);
    expect(s.desc(0)).toEqual([4, 0, USED]);
    // The other slots keep what the driver wrote (the device skips them).
    expect([1, 2, 3, 4, 5, 6].map(s.desc)).toEqual(before);
    expect(s.q.state()).toMatchObject({ nextUsed: 7, usedWrap: true });
    expect(drain(s.drv)).toEqual([
      [0, 0],
      [1, 0],
      [3, 0],
      [4, 0],
    ]);
    expect(s.drv.numFree).toBe(16);
  });

  it('rx: partly written buffers get their own used descriptor (WRITE set), full ones are folded', () => {
    const s = packed(16);
    for (let i = 0; i < 4; i++) s.drv.add([], [new Uint8Array(100)]);
    const lens = [100, 40, 100, 60];
    useAll(s.q, (i) => lens[i]!);
    expect(s.q.publishUsed()).toBe(2);
    expect(s.desc(0)).toEqual([1, 40, USED | F_WRITE]);
    expect(s.desc(2)).toEqual([3, 60, USED | F_WRITE]);
    expect(drain(s.drv)).toEqual([
      [0, 100],
      [1, 40],
      [2, 100],
      [3, 60],
    ]);
  });

  it('wrap-around: a batch crossing the end is written at its first slot with that lap’s flags', () => {
    const s = packed(5);
    const seen: [number, number][] = [];
    for (let lap = 0; lap < 12; lap++) {
      const ids = [0, 1, 2].map(() => s.drv.add([new Uint8Array(8)], []));
      const st = s.q.state();
      useAll(s.q);
      s.q.publishUsed();
      const [id, len, flags] = s.desc(st.nextUsed);
      expect([id, len, flags]).toEqual([ids[2], 0, st.usedWrap ? USED : 0]);
      seen.push(...drain(s.drv));
      expect(seen.slice(-3).map(([i]) => i)).toEqual(ids);
    }
    expect(seen).toHaveLength(36);
    expect(s.q.counters).toMatchObject({ batchEntries: 12, foldedBuffers: 24 });
  });

  it('EVENT_IDX: an off_wrap inside a batch notifies; one beyond it does not', () => {
    const s = packed(16, { eventIdx: true });
    s.q.needsNotification();
    s.drv.setUsedEvent(2, true);
    for (let i = 0; i < 4; i++) s.drv.add([new Uint8Array(8)], []);
    useAll(s.q);
    expect(s.q.needsNotification()).toBe(true); // closes and publishes the batch itself
    drain(s.drv);
    s.drv.setUsedEvent(10, true);
    for (let i = 0; i < 4; i++) s.drv.add([new Uint8Array(8)], []);
    useAll(s.q);
    expect(s.q.needsNotification()).toBe(false); // 4 -> 8
  });

  it('hostile guest: a buffer id reused while in flight is a VirtqueueError (the device sets NEEDS_RESET)', () => {
    const s = packed(8);
    s.drv.add([new Uint8Array(8)], []);
    s.drv.add([new Uint8Array(8)], []);
    // Rewrite the second descriptor's id to the first's (still in flight).
    s.mem.writeU16(s.drv.config.descAddr + PACKED_DESC.size + PACKED_DESC.id, 0);
    const c = new DescriptorChain();
    expect(s.q.pop(c)).toBe(true);
    expect(() => s.q.pop(c)).toThrow(VirtqueueError);
  });
});

describe('NOTIFICATION_DATA hints (§2.9)', () => {
  for (const ring of ['split', 'packed'] as const) {
    const make = () => {
      if (ring === 'split') {
        const s = split(8, { inOrder: false });
        return { ...s, hint: () => [s.drv.availIndex & 0x7fff, (s.drv.availIndex & 0x8000) !== 0] as const };
      }
      const s = packed(8, { inOrder: false });
      return { ...s, hint: () => [s.drv.availPosition.offset, s.drv.availPosition.wrap] as const };
    };

    it(`${ring}: a correct hint saves the read that ends the burst; the ring is read again on enable`, () => {
      const s = make();
      for (let i = 0; i < 3; i++) s.drv.add([new Uint8Array(8)], []);
      expect(s.q.availHint(...s.hint())).toBe(true);
      s.q.disableNotification();
      expect(useAll(s.q)).toHaveLength(3);
      expect(s.q.counters).toMatchObject({ hintsAccepted: 1, hintReadsSaved: 1 });
      // A chain added after the kick: the hint did not know it, enableNotification finds it.
      s.drv.add([new Uint8Array(8)], []);
      expect(s.q.enableNotification()).toBe(true);
      expect(useAll(s.q)).toHaveLength(1);
    });

    it(`${ring}: a hint lying low loses nothing (the burst's re-check finds the rest)`, () => {
      const s = make();
      const at = s.hint(); // claims nothing was added
      for (let i = 0; i < 4; i++) s.drv.add([new Uint8Array(8)], []);
      s.q.availHint(...at);
      s.q.disableNotification();
      let n = useAll(s.q).length;
      expect(n).toBe(0);
      while (s.q.enableNotification()) {
        s.q.disableNotification();
        n += useAll(s.q).length;
      }
      expect(n).toBe(4);
    });

    it(`${ring}: a hint lying high is never trusted beyond the ring`, () => {
      const s = make();
      for (let i = 0; i < 2; i++) s.drv.add([new Uint8Array(8)], []);
      // Claims 5 more than posted; the slots past the ring's avail end hold stale entries.
      const [off, wrap] = s.hint();
      s.q.availHint((off + 5) % 8, wrap);
      s.q.disableNotification();
      expect(useAll(s.q)).toHaveLength(2);
      s.q.publishUsed();
      expect(s.q.enableNotification()).toBe(false);
    });

    it(`${ring}: a late kick's hint, behind what the device took, is neither trusted nor called impossible`, () => {
      const s = make();
      const early = s.hint();
      for (let i = 0; i < 3; i++) s.drv.add([new Uint8Array(8)], []);
      const mid = s.hint();
      for (let i = 0; i < 2; i++) s.drv.add([new Uint8Array(8)], []);
      // The device read on to the ring's end (a later kick's work) before the kick carrying `mid` arrived.
      s.q.disableNotification();
      expect(useAll(s.q)).toHaveLength(5);
      s.q.availHint(...mid);
      s.q.availHint(...early);
      expect(s.q.counters.hintsRejected).toBe(0);
      if (ring === 'split') expect(s.q.counters.hintsStale).toBe(2);
      // Nothing more is taken on their word; a chain added now is found.
      expect(useAll(s.q)).toHaveLength(0);
      s.drv.add([new Uint8Array(8)], []);
      expect(s.q.enableNotification()).toBe(true);
      expect(useAll(s.q)).toHaveLength(1);
    });

    it(`${ring}: an impossible hint is ignored and counted`, () => {
      const s = make();
      const bad = ring === 'split' ? 9 : 8; // split: more than a ring ahead; packed: offset >= size
      expect(s.q.availHint(bad, false)).toBe(false);
      expect(s.q.counters.hintsRejected).toBe(1);
      s.drv.add([new Uint8Array(8)], []);
      s.q.disableNotification();
      expect(useAll(s.q)).toHaveLength(1);
    });
  }
});

describe('IN_ORDER property: whatever the chain shapes, lengths, wraps and publish points', () => {
  for (const ring of ['split', 'packed'] as const) {
    it(`${ring}: the Linux 7.2 reading of the ring gives every buffer back in order with its used length`, () => {
      const step = fc.record({
        // Chains of 1..3 readable and 0..3 writable segments, some indirect.
        chains: fc.array(
          fc.record({
            readable: fc.integer({ min: 0, max: 3 }),
            writable: fc.integer({ min: 0, max: 3 }),
            indirect: fc.boolean(),
            fill: fc.constantFrom('full', 'part', 'none'),
          }),
          { minLength: 1, maxLength: 6 },
        ),
        publishEvery: fc.integer({ min: 1, max: 6 }),
      });
      fc.assert(
        fc.property(
          fc.constantFrom(4, 8, 16, 5, 7),
          fc.array(step, { minLength: 1, maxLength: 30 }),
          (size, steps) => {
            if (ring === 'split' && (size & (size - 1)) !== 0) return;
            const s = ring === 'split' ? split(size) : packed(size);
            const c = new DescriptorChain();
            let buffers = 0;
            let entries = 0;
            for (const st of steps) {
              const want: [number, number][] = [];
              for (const ch of st.chains) {
                const r = Math.max(ch.readable, ch.writable === 0 ? 1 : 0);
                const needed = ch.indirect ? 1 : r + ch.writable;
                // A chain no longer than the queue (§2.7.5.3.1), with room in the ring.
                if (r + ch.writable > size || needed > s.drv.numFree) break;
                const id = s.drv.add(
                  Array.from({ length: r }, () => new Uint8Array(8)),
                  Array.from({ length: ch.writable }, () => new Uint8Array(16)),
                  { indirect: ch.indirect },
                );
                const cap = 16 * ch.writable;
                const len = ch.fill === 'full' ? cap : ch.fill === 'part' && cap > 0 ? cap - 1 : 0;
                want.push([id, len]);
              }
              let k = 0;
              while (s.q.pop(c)) {
                const [id, len] = want[k]!;
                expect(c.head).toBe(id);
                s.q.addUsed(c, len);
                if (++k % st.publishEvery === 0) s.q.publishUsed();
              }
              s.q.publishUsed();
              expect(k).toBe(want.length);
              expect(drain(s.drv)).toEqual(want);
              buffers += want.length;
              entries = s.q.counters.batchEntries;
            }
            expect(s.drv.numFree).toBe(size);
            expect(entries + s.q.counters.foldedBuffers).toBe(buffers);
          },
        ),
        { numRuns: 150 },
      );
    });
  }
});
