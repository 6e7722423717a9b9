import { describe, expect, it } from 'vitest';
import { GuestMemory } from '../../lib/memory/guest-memory.js';
import { createVirtqueue } from './create-virtqueue.js';
import { PackedRing, packedNeedEvent } from './packed-ring.js';
import {
  DescriptorChain,
  type VirtqueueConfig,
  VirtqueueError,
  type VirtqueueErrorKind,
} from './virtqueue.js';

const BASE = 0x10000;
const SIZE = 0x10000;
const RING = BASE;
const DRIVER = BASE + 0x200; // driver event suppression (driver writes)
const DEVICE = BASE + 0x210; // device event suppression (device writes)
const TABLE = BASE + 0x400;
const BUF = BASE + 0x1000;
const NEXT = 1;
const WRITE = 2;
const INDIRECT = 4;
const AVAIL = 0x80;
const USED = 0x8000;

function setup(size = 4, eventIdx = false) {
  const bytes = new Uint8Array(SIZE);
  const mem = new GuestMemory([{ address: BASE, bytes }]);
  const config: VirtqueueConfig = {
    index: 1,
    size,
    descAddr: RING,
    driverAddr: DRIVER,
    deviceAddr: DEVICE,
    eventIdx,
  };
  const q = createVirtqueue(mem, config, true);
  const dv = new DataView(bytes.buffer);
  const at = (a: number) => a - BASE;
  let slot = 0;
  let wrap = true;
  /** Writes a descriptor at the driver's next slot with the availability bits of its wrap counter. */
  const put = (addr: number | bigint, len: number, id: number, flags: number) => {
    const o = at(RING + 16 * slot);
    dv.setBigUint64(o, BigInt(addr), true);
    dv.setUint32(o + 8, len, true);
    dv.setUint16(o + 12, id, true);
    dv.setUint16(o + 14, flags | (wrap ? AVAIL : USED), true);
    if (++slot === size) {
      slot = 0;
      wrap = !wrap;
    }
  };
  const table = (i: number, addr: number, len: number, flags: number) => {
    const o = at(TABLE + 16 * i);
    dv.setBigUint64(o, BigInt(addr), true);
    dv.setUint32(o + 8, len, true);
    dv.setUint16(o + 14, flags, true);
  };
  const u16 = (a: number) => dv.getUint16(at(a), true);
  const setU16 = (a: number, v: number) => dv.setUint16(at(a), v, true);
  const descBytes = (i: number) => [...bytes.subarray(at(RING + 16 * i), at(RING + 16 * i + 16))];
  return { bytes, mem, q, config, put, table, u16, setU16, descBytes };
}

function popError(q: { pop(c: DescriptorChain): boolean }, kind: VirtqueueErrorKind): void {
  let err: unknown;
  try {
    q.pop(new DescriptorChain());
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(VirtqueueError);
  expect((err as VirtqueueError).kind).toBe(kind);
}

describe('PackedRing: available descriptors (§2.8)', () => {
  it('pops a chain whose buffer id is taken from the last descriptor', () => {
    const t = setup();
    expect(t.q.hasAvailable()).toBe(false);
    t.put(BUF, 10, 0, NEXT);
    t.put(BUF + 0x100, 20, 0, NEXT | WRITE);
    t.put(BUF + 0x200, 30, 2, WRITE);
    expect(t.q.hasAvailable()).toBe(true);
    const c = new DescriptorChain();
    expect(t.q.pop(c)).toBe(true);
    expect([
      c.head,
      c.descCount,
      c.readableCount,
      c.writableCount,
      c.readableLength,
      c.writableLength,
    ]).toEqual([2, 3, 1, 2, 10, 50]);
    expect([...c.addr.subarray(0, 3)]).toEqual([BUF, BUF + 0x100, BUF + 0x200]);
    expect(t.q.pop(c)).toBe(false);
  });

  it('ignores descriptors whose AVAIL/USED bits do not match the wrap counter', () => {
    const t = setup();
    t.put(BUF, 1, 0, 0);
    t.setU16(RING + 14, AVAIL | USED); // looks used, not available
    expect(t.q.hasAvailable()).toBe(false);
    t.setU16(RING + 14, 0);
    expect(t.q.hasAvailable()).toBe(false);
    t.setU16(RING + 14, USED); // available only in the second lap
    expect(t.q.hasAvailable()).toBe(false);
    t.setU16(RING + 14, AVAIL);
    expect(t.q.hasAvailable()).toBe(true);
  });

  it('writes used descriptors id/len/flags in place, addr untouched, skipping chain lengths', () => {
    const t = setup();
    t.put(BUF, 8, 0, NEXT);
    t.put(BUF, 8, 7, WRITE); // 2-slot chain, id 7 -> out of range for size 4: use 3
    t.setU16(RING + 16 + 12, 3);
    t.put(BUF, 8, 1, 0); // 1-slot chain, read-only
    const c = new DescriptorChain();
    t.q.pop(c);
    expect([c.head, c.descCount]).toEqual([3, 2]);
    t.q.push(c, 0x01020304);
    expect(t.descBytes(0)).toEqual([
      ...[0, 0x10, 1, 0, 0, 0, 0, 0], // addr as the driver wrote it (BUF = 0x11000)
      0x04,
      0x03,
      0x02,
      0x01, // len
      3,
      0, // id
      0x82,
      0x80, // flags AVAIL|USED|WRITE
    ]);
    t.q.pop(c);
    t.q.push(c, 0);
    // The second used descriptor goes to slot 2 (slot 1 was skipped with the first chain).
    expect(t.descBytes(2).slice(8)).toEqual([0, 0, 0, 0, 1, 0, 0x80, 0x80]);
  });

  it('publishes a batch by writing the first flags last', () => {
    const t = setup();
    for (let id = 0; id < 3; id++) t.put(BUF, 8, id, WRITE);
    const c = new DescriptorChain();
    for (let i = 0; i < 3; i++) {
      t.q.pop(c);
      t.q.addUsed(c, 100 + i);
    }
    // Slots 1 and 2 carry their used flags; slot 0 still looks available to the driver.
    expect(t.u16(RING + 14)).toBe(AVAIL | WRITE);
    expect(t.u16(RING + 16 + 14)).toBe(AVAIL | USED | WRITE);
    expect(t.u16(RING + 32 + 14)).toBe(AVAIL | USED | WRITE);
    t.q.publishUsed();
    expect(t.u16(RING + 14)).toBe(AVAIL | USED | WRITE);
    expect(t.q.state()).toMatchObject({ nextUsed: 3, usedWrap: true, nextAvail: 3, availWrap: true });
  });

  it('flips both wrap counters at the end of the ring', () => {
    const t = setup(3);
    const c = new DescriptorChain();
    for (let lap = 0; lap < 3; lap++) {
      for (let id = 0; id < 3; id++) t.put(BUF, 4, id, id === 1 ? 0 : WRITE);
      for (let id = 0; id < 3; id++) {
        expect(t.q.pop(c)).toBe(true);
        t.q.push(c, 4);
      }
      expect(t.q.pop(c)).toBe(false);
      const wrapBits = lap % 2 === 0 ? AVAIL | USED : 0;
      expect([0, 1, 2].map((i) => t.u16(RING + 16 * i + 14))).toEqual([
        wrapBits | WRITE,
        wrapBits,
        wrapBits | WRITE,
      ]);
    }
    expect(t.q.state()).toMatchObject({ nextAvail: 0, availWrap: false, nextUsed: 0, usedWrap: false });
  });

  it('follows an indirect table of len/16 entries, only WRITE meaningful inside', () => {
    const t = setup();
    t.table(0, BUF, 5, NEXT); // NEXT inside a packed indirect table is ignored
    t.table(1, BUF + 0x10, 6, WRITE);
    t.table(2, BUF + 0x20, 7, WRITE);
    t.put(TABLE, 48, 2, INDIRECT | WRITE);
    const c = new DescriptorChain();
    t.q.pop(c);
    expect([c.head, c.descCount, c.readableLength, c.writableLength]).toEqual([2, 1, 5, 13]);
    expect([...c.addr.subarray(0, 3)]).toEqual([BUF, BUF + 0x10, BUF + 0x20]);
  });

  it.each([
    [
      'nested-indirect',
      (t: ReturnType<typeof setup>) => {
        t.table(0, TABLE, 16, INDIRECT);
        t.put(TABLE, 16, 0, INDIRECT);
      },
    ],
    ['indirect-length', (t: ReturnType<typeof setup>) => t.put(TABLE, 24, 0, INDIRECT)],
    ['indirect-length', (t: ReturnType<typeof setup>) => t.put(TABLE, 0, 0, INDIRECT)],
    ['indirect-with-next', (t: ReturnType<typeof setup>) => t.put(TABLE, 16, 0, INDIRECT | NEXT)],
    [
      'chain-too-long',
      (t: ReturnType<typeof setup>) => {
        for (let i = 0; i < 4; i++) t.put(BUF, 1, 0, NEXT); // every slot says NEXT
      },
    ],
    ['chain-too-long', (t: ReturnType<typeof setup>) => t.put(TABLE, 16 * 5, 0, INDIRECT)],
    [
      'readable-after-writable',
      (t: ReturnType<typeof setup>) => {
        t.put(BUF, 1, 0, NEXT | WRITE);
        t.put(BUF, 1, 0, 0);
      },
    ],
    ['buffer-id', (t: ReturnType<typeof setup>) => t.put(BUF, 1, 4, 0)],
    ['memory', (t: ReturnType<typeof setup>) => t.put(BASE + SIZE - 1, 2, 0, 0)],
    ['memory', (t: ReturnType<typeof setup>) => t.put(2n ** 60n, 2, 0, 0)],
    ['memory', (t: ReturnType<typeof setup>) => t.put(BASE + SIZE - 16, 32, 0, INDIRECT)],
  ] as const)('rejects %s', (kind, build) => {
    const t = setup();
    build(t);
    popError(t.q, kind);
    expect(t.q.state()).toMatchObject({ nextAvail: 0, availWrap: true }); // nothing consumed
  });

  it('rejects a buffer id already in flight, accepts it again once used', () => {
    const t = setup();
    t.put(BUF, 1, 1, 0);
    t.put(BUF, 1, 1, 0);
    const c = new DescriptorChain();
    t.q.pop(c);
    popError(t.q, 'buffer-id');
    t.q.push(c, 0);
    expect(t.q.pop(c)).toBe(true);
    expect(c.head).toBe(1);
  });

  it('unpop gives back the slots, across the wrap', () => {
    const t = setup(2);
    const c = new DescriptorChain();
    t.put(BUF, 1, 0, 0);
    t.q.pop(c);
    t.q.push(c, 0);
    t.put(BUF, 1, 1, NEXT); // slots 1 and 0 (second lap)
    t.put(BUF, 1, 1, 0);
    t.q.pop(c);
    expect(t.q.state()).toMatchObject({ nextAvail: 1, availWrap: false });
    t.q.unpop(c);
    expect(t.q.state()).toMatchObject({ nextAvail: 1, availWrap: true });
    expect(t.q.pop(c)).toBe(true);
    expect([c.head, c.descCount]).toEqual([1, 2]);
  });

  it('checks its parts at creation', () => {
    const t = setup();
    expect(() => new PackedRing(t.mem, { ...t.config, size: 0 })).toThrow(VirtqueueError);
    expect(() => new PackedRing(t.mem, { ...t.config, size: 32769 })).toThrow(VirtqueueError);
    expect(() => new PackedRing(t.mem, { ...t.config, driverAddr: DRIVER + 2 })).toThrow(VirtqueueError);
    expect(() => new PackedRing(t.mem, { ...t.config, deviceAddr: BASE + SIZE - 2 })).toThrow(VirtqueueError);
    expect(new PackedRing(t.mem, { ...t.config, size: 3 }).size).toBe(3); // no power of two needed
  });
});

describe('PackedRing: event suppression (§2.8.10, §2.8.14)', () => {
  it('follows the driver flags ENABLE / DISABLE', () => {
    const t = setup();
    expect(t.q.needsNotification()).toBe(true);
    t.setU16(DRIVER + 2, 1);
    expect(t.q.needsNotification()).toBe(false);
    t.setU16(DRIVER + 2, 2); // DESC without EVENT_IDX is not valid: notify
    expect(t.q.needsNotification()).toBe(true);
  });

  it('with EVENT_IDX, notifies when the used descriptor at off_wrap is written', () => {
    const t = setup(4, true);
    const c = new DescriptorChain();
    const step = () => {
      t.put(BUF, 1, 0, WRITE);
      t.q.pop(c);
      t.q.push(c, 1);
      return t.q.needsNotification();
    };
    t.setU16(DRIVER + 2, 2);
    t.setU16(DRIVER, 2 | 0x8000); // slot 2, first lap
    expect([step(), step(), step(), step(), step(), step()]).toEqual([
      true,
      false,
      true,
      false,
      false,
      false,
    ]);
    t.setU16(DRIVER, 1); // slot 1, second lap (wrap 0): used entries so far: slots 0..3, 0, 1
    expect(step()).toBe(false); // slot 2 of the second lap; event was at slot 1, already passed
    t.setU16(DRIVER, 0 | 0x8000); // slot 0 of the third lap
    expect([step(), step()]).toEqual([false, true]); // slot 3 (lap 2), then slot 0 (lap 3)
  });

  it('writes the device event structure on disable/enable', () => {
    const t = setup(4);
    t.q.disableNotification();
    expect(t.u16(DEVICE + 2)).toBe(1);
    expect(t.q.enableNotification()).toBe(false);
    expect(t.u16(DEVICE + 2)).toBe(0);
    t.put(BUF, 1, 0, 0);
    t.q.disableNotification();
    expect(t.q.enableNotification()).toBe(true);
    const e = setup(4, true);
    e.put(BUF, 1, 0, 0);
    e.put(BUF, 1, 1, 0);
    e.put(BUF, 1, 2, 0);
    const c = new DescriptorChain();
    e.q.pop(c);
    expect(e.u16(DEVICE)).toBe(1 | 0x8000); // off_wrap follows pops while enabled
    e.q.disableNotification();
    e.q.pop(c);
    expect(e.u16(DEVICE)).toBe(1 | 0x8000);
    expect(e.q.enableNotification()).toBe(true);
    expect([e.u16(DEVICE), e.u16(DEVICE + 2)]).toEqual([2 | 0x8000, 2]);
  });

  it('packedNeedEvent is lap-aware', () => {
    // size 4: positions 0..3 in wrap-1 laps, 4..7 in wrap-0 laps.
    expect(packedNeedEvent(2, 3, 1, 4)).toBe(true);
    expect(packedNeedEvent(3, 3, 1, 4)).toBe(false);
    expect(packedNeedEvent(7, 1, 6, 4)).toBe(true); // crossed the wrap
    expect(packedNeedEvent(1, 1, 6, 4)).toBe(false);
    expect(packedNeedEvent(0, 1, 6, 4)).toBe(true);
  });

  it('saves and restores wrap counters and positions', () => {
    const t = setup(3);
    const c = new DescriptorChain();
    for (let i = 0; i < 4; i++) {
      t.put(BUF, 1, 0, 0);
      t.q.pop(c);
      t.q.push(c, 0);
    }
    const s = t.q.state();
    expect(s).toMatchObject({ nextAvail: 1, availWrap: false, nextUsed: 1, usedWrap: false });
    const q2 = createVirtqueue(t.mem, t.config, true);
    q2.restore(JSON.parse(JSON.stringify(s)));
    t.put(BUF, 1, 2, 0);
    expect(q2.pop(c)).toBe(true);
    q2.push(c, 0);
    expect(t.u16(RING + 16 + 14)).toBe(0); // second-lap used flags: AVAIL = USED = 0
    expect(t.u16(RING + 16 + 12)).toBe(2);
  });
});
