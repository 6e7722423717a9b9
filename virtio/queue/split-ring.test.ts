import { describe, expect, it } from 'vitest';
import { GuestMemory } from '../../lib/memory/guest-memory.js';
import { createVirtqueue } from './create-virtqueue.js';
import { SplitRing, vringNeedEvent } from './split-ring.js';
import { BumpAllocator } from '../testing/bump-allocator.js';
import { SplitDriverQueue } from '../testing/split-driver.js';
import {
  DescriptorChain,
  type VirtqueueConfig,
  VirtqueueError,
  type VirtqueueErrorKind,
} from './virtqueue.js';

const BASE = 0x10000;
const SIZE = 0x10000;
// Fixed layout for hand-built rings (queue size 8).
const DESC = BASE;
const AVAIL = BASE + 0x100;
const USED = BASE + 0x200;
const TABLE = BASE + 0x400; // an indirect table
const BUF = BASE + 0x1000;

function setup(size = 8, eventIdx = false) {
  const bytes = new Uint8Array(SIZE);
  const mem = new GuestMemory([{ address: BASE, bytes }]);
  const config: VirtqueueConfig = {
    index: 3,
    size,
    descAddr: DESC,
    driverAddr: AVAIL,
    deviceAddr: USED,
    eventIdx,
  };
  const q = createVirtqueue(mem, config, false);
  const dv = new DataView(bytes.buffer);
  const at = (a: number) => a - BASE;
  const desc = (table: number, i: number, addr: number | bigint, len: number, flags: number, next = 0) => {
    const o = at(table + 16 * i);
    dv.setBigUint64(o, BigInt(addr), true);
    dv.setUint32(o + 8, len, true);
    dv.setUint16(o + 12, flags, true);
    dv.setUint16(o + 14, next, true);
  };
  let availIdx = 0;
  const post = (head: number) => {
    dv.setUint16(at(AVAIL + 4 + 2 * (availIdx % size)), head, true);
    availIdx = (availIdx + 1) & 0xffff;
    dv.setUint16(at(AVAIL + 2), availIdx, true);
  };
  const u16 = (a: number) => dv.getUint16(at(a), true);
  const u32 = (a: number) => dv.getUint32(at(a), true);
  const setU16 = (a: number, v: number) => dv.setUint16(at(a), v, true);
  return { bytes, mem, q, config, desc, post, u16, u32, setU16, dv, at };
}

/** 4 GiB of address space at 4 GiB: untouched pages of lazily zeroed buffers cost no RSS. */
const HUGE = 0x1_0000_0000;
function addHugeMemory(mem: GuestMemory): void {
  mem.addRegion({ address: HUGE, bytes: new Uint8Array(0x8000_0000) });
  mem.addRegion({ address: HUGE + 0x8000_0000, bytes: new Uint8Array(0x8000_0000) });
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

describe('SplitRing: descriptor chains (§2.7.5)', () => {
  it('flattens a direct chain, readable then writable', () => {
    const t = setup();
    t.desc(DESC, 5, BUF, 10, 1, 2);
    t.desc(DESC, 2, BUF + 0x100, 20, 1 | 2, 7);
    t.desc(DESC, 7, BUF + 0x200, 30, 2);
    t.post(5);
    expect(t.q.hasAvailable()).toBe(true);
    const c = new DescriptorChain(1); // grows on demand
    expect(t.q.pop(c)).toBe(true);
    expect(c.head).toBe(5);
    expect(c.descCount).toBe(1);
    expect([c.readableCount, c.writableCount, c.readableLength, c.writableLength]).toEqual([1, 2, 10, 50]);
    expect([...c.addr.subarray(0, 3)]).toEqual([BUF, BUF + 0x100, BUF + 0x200]);
    expect([...c.len.subarray(0, 3)]).toEqual([10, 20, 30]);
    expect(t.q.pop(c)).toBe(false);
    expect(t.q.hasAvailable()).toBe(false);
  });

  it('writes the used element bytes and publishes the idx only on publishUsed', () => {
    const t = setup();
    for (const h of [1, 4, 6]) {
      t.desc(DESC, h, BUF, 64, 2);
      t.post(h);
    }
    const c = new DescriptorChain();
    const written = [0x11223344, 7, 0];
    for (const w of written) {
      t.q.pop(c);
      t.q.addUsed(c, w);
    }
    expect(t.u16(USED + 2)).toBe(0);
    expect([...t.bytes.subarray(t.at(USED + 4), t.at(USED + 4 + 24))]).toEqual([
      1, 0, 0, 0, 0x44, 0x33, 0x22, 0x11, 4, 0, 0, 0, 7, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0,
    ]);
    t.q.publishUsed();
    expect(t.u16(USED + 2)).toBe(3);
    t.q.publishUsed(); // nothing staged: no change
    expect(t.u16(USED + 2)).toBe(3);
  });

  it('follows an indirect table, also after direct descriptors', () => {
    const t = setup();
    t.desc(DESC, 0, BUF, 4, 1, 3);
    t.desc(DESC, 3, TABLE, 48, 4);
    t.desc(TABLE, 0, BUF + 0x10, 8, 1, 2);
    t.desc(TABLE, 2, BUF + 0x20, 9, 1 | 2, 1);
    t.desc(TABLE, 1, BUF + 0x30, 10, 2);
    t.post(0);
    const c = new DescriptorChain();
    t.q.pop(c);
    expect(c.head).toBe(0);
    expect([c.readableCount, c.writableCount, c.readableLength, c.writableLength]).toEqual([2, 2, 12, 19]);
    expect([...c.addr.subarray(0, 4)]).toEqual([BUF, BUF + 0x10, BUF + 0x20, BUF + 0x30]);
  });

  it.each([
    [
      'readable-after-writable',
      (t: ReturnType<typeof setup>) => {
        t.desc(DESC, 0, BUF, 4, 1 | 2, 1);
        t.desc(DESC, 1, BUF, 4, 0);
      },
    ],
    [
      'chain-too-long',
      (t: ReturnType<typeof setup>) => {
        t.desc(DESC, 0, BUF, 4, 1, 1);
        t.desc(DESC, 1, BUF, 4, 1, 0); // loop
      },
    ],
    [
      'chain-too-long',
      (t: ReturnType<typeof setup>) => {
        t.desc(DESC, 0, BUF, 4, 1, 0); // self loop
      },
    ],
    [
      'chain-too-long',
      (t: ReturnType<typeof setup>) => {
        t.desc(DESC, 0, TABLE, 16 * 9, 4); // 9 descriptors > queue size 8
        for (let i = 0; i < 9; i++) t.desc(TABLE, i, BUF, 1, i < 8 ? 1 : 0, i + 1);
      },
    ],
    [
      'chain-too-long',
      (t: ReturnType<typeof setup>) => {
        t.desc(DESC, 0, TABLE, 32, 4); // loop inside the indirect table
        t.desc(TABLE, 0, BUF, 1, 1, 1);
        t.desc(TABLE, 1, BUF, 1, 1, 0);
      },
    ],
    [
      'nested-indirect',
      (t: ReturnType<typeof setup>) => {
        t.desc(DESC, 0, TABLE, 16, 4);
        t.desc(TABLE, 0, TABLE, 16, 4);
      },
    ],
    ['indirect-with-next', (t: ReturnType<typeof setup>) => t.desc(DESC, 0, TABLE, 16, 4 | 1, 1)],
    ['indirect-length', (t: ReturnType<typeof setup>) => t.desc(DESC, 0, TABLE, 0, 4)],
    ['indirect-length', (t: ReturnType<typeof setup>) => t.desc(DESC, 0, TABLE, 17, 4)],
    ['descriptor-index', (t: ReturnType<typeof setup>) => t.desc(DESC, 0, BUF, 4, 1, 8)],
    [
      'descriptor-index',
      (t: ReturnType<typeof setup>) => {
        t.desc(DESC, 0, TABLE, 32, 4);
        t.desc(TABLE, 0, BUF, 1, 1, 2); // table has 2 entries
      },
    ],
    [
      'length-overflow',
      (t: ReturnType<typeof setup>) => {
        addHugeMemory(t.mem);
        t.desc(DESC, 0, HUGE, 0xffffffff, 3, 1);
        t.desc(DESC, 1, BUF, 1, 2);
      },
    ],
    [
      'length-overflow',
      (t: ReturnType<typeof setup>) => {
        addHugeMemory(t.mem);
        t.desc(DESC, 0, HUGE, 0x80000000, 1, 1);
        t.desc(DESC, 1, HUGE + 0x80000000, 0x80000000, 0);
      },
    ],
    ['memory', (t: ReturnType<typeof setup>) => t.desc(DESC, 0, BASE + SIZE - 4, 5, 0)],
    ['memory', (t: ReturnType<typeof setup>) => t.desc(DESC, 0, 2n ** 53n, 1, 0)],
    ['memory', (t: ReturnType<typeof setup>) => t.desc(DESC, 0, 2n ** 64n - 1n, 1, 0)],
    ['memory', (t: ReturnType<typeof setup>) => t.desc(DESC, 0, BASE + SIZE - 16, 32, 4)],
  ] as const)('rejects %s', (kind, build) => {
    const t = setup();
    build(t);
    t.post(0);
    popError(t.q, kind);
  });

  it('rejects a head index >= queue size', () => {
    const t = setup();
    t.post(8);
    popError(t.q, 'descriptor-index');
  });

  it('consumes a bad chain so the device can return it, then goes on', () => {
    const t = setup();
    t.desc(DESC, 0, BUF, 4, 1 | 2, 1);
    t.desc(DESC, 1, BUF, 4, 0);
    t.desc(DESC, 2, BUF, 4, 0);
    t.post(0);
    t.post(2);
    popError(t.q, 'readable-after-writable');
    const c = new DescriptorChain();
    expect(t.q.pop(c)).toBe(true);
    expect(c.head).toBe(2);
  });

  it('accepts an avail idx exactly size ahead and rejects size + 1 (§2.7.13.3)', () => {
    const t = setup();
    for (let i = 0; i < 8; i++) t.desc(DESC, i, BUF, 1, 0);
    t.setU16(AVAIL + 2, 8);
    const c = new DescriptorChain();
    for (let i = 0; i < 8; i++) expect(t.q.pop(c)).toBe(true);
    expect(t.q.pop(c)).toBe(false);
    t.setU16(AVAIL + 2, 8 + 9);
    popError(t.q, 'avail-index');
    let err: unknown;
    try {
      t.q.hasAvailable();
    } catch (e) {
      err = e;
    }
    expect((err as VirtqueueError).kind).toBe('avail-index');
  });

  it('gives back a popped chain with unpop', () => {
    const t = setup();
    t.desc(DESC, 3, BUF, 1, 0);
    t.desc(DESC, 4, BUF, 1, 0);
    t.post(3);
    t.post(4);
    const c = new DescriptorChain();
    t.q.pop(c);
    t.q.pop(c);
    expect(c.head).toBe(4);
    t.q.unpop(c);
    t.q.pop(c);
    expect(c.head).toBe(4);
  });

  it('reports an unmapped ring or buffer as VirtqueueError(memory)', () => {
    const t = setup();
    expect(() => new SplitRing(t.mem, { ...t.config, deviceAddr: BASE + SIZE - 8 })).toThrow(VirtqueueError);
    expect(() => new SplitRing(t.mem, { ...t.config, size: 6 })).toThrow(VirtqueueError);
    expect(() => new SplitRing(t.mem, { ...t.config, descAddr: DESC + 8 })).toThrow(VirtqueueError);
    t.desc(DESC, 0, BUF, 4, 0);
    t.post(0);
    t.mem.removeRegion(BASE);
    popError(t.q, 'memory');
  });

  it('handles the 16-bit index wrap', () => {
    const t = setup();
    t.q.restore({ nextAvail: 0xfffe, nextUsed: 0xfffe, notificationsDisabled: false });
    t.setU16(USED + 2, 0xfffe);
    t.desc(DESC, 0, BUF, 1, 2);
    // avail ring slots 6 and 7, then 0 (idx 0xfffe, 0xffff, 0x0000)
    for (const [slot] of [[6], [7], [0]]) t.setU16(AVAIL + 4 + 2 * slot!, 0);
    t.setU16(AVAIL + 2, 1);
    const c = new DescriptorChain();
    let n = 0;
    while (t.q.pop(c)) {
      t.q.push(c, 1);
      n++;
    }
    expect(n).toBe(3);
    expect(t.u16(USED + 2)).toBe(1);
    expect(t.q.state()).toMatchObject({ nextAvail: 1, nextUsed: 1 });
  });
});

describe('SplitRing: notification suppression (§2.7.7, §2.7.10)', () => {
  it('honours VIRTQ_AVAIL_F_NO_INTERRUPT without EVENT_IDX', () => {
    const t = setup();
    expect(t.q.needsNotification()).toBe(true);
    t.setU16(AVAIL, 1);
    expect(t.q.needsNotification()).toBe(false);
  });

  it('sets and clears VIRTQ_USED_F_NO_NOTIFY', () => {
    const t = setup();
    t.q.disableNotification();
    expect(t.u16(USED)).toBe(1);
    expect(t.q.enableNotification()).toBe(false);
    expect(t.u16(USED)).toBe(0);
    t.desc(DESC, 0, BUF, 1, 0);
    t.post(0);
    t.q.disableNotification();
    expect(t.q.enableNotification()).toBe(true); // a chain arrived meanwhile
    expect(t.q.state().notificationsDisabled).toBe(false);
  });

  it('with EVENT_IDX, notifies exactly when the used idx passes used_event', () => {
    const t = setup(8, true);
    t.desc(DESC, 0, BUF, 1, 2);
    const c = new DescriptorChain();
    const usedEvent = AVAIL + 4 + 2 * 8;
    t.setU16(AVAIL, 1); // NO_INTERRUPT is ignored with EVENT_IDX
    const seen: boolean[] = [];
    t.setU16(usedEvent, 2); // interrupt when entry 2 is used (idx goes 2 -> 3)
    for (let i = 0; i < 5; i++) {
      t.post(0);
      t.q.pop(c);
      t.q.push(c, 0);
      seen.push(t.q.needsNotification());
    }
    // The first decision has no reference point: notify.
    expect(seen).toEqual([true, false, true, false, false]);
  });

  it('with EVENT_IDX, counts a batch crossing used_event once', () => {
    const t = setup(8, true);
    const c = new DescriptorChain();
    t.desc(DESC, 0, BUF, 1, 2);
    t.post(0);
    t.q.pop(c);
    t.q.push(c, 0);
    t.q.needsNotification();
    t.setU16(AVAIL + 4 + 16, 2);
    for (let i = 0; i < 3; i++) {
      t.post(0);
      t.q.pop(c);
      t.q.addUsed(c, 0);
    }
    t.q.publishUsed();
    expect(t.q.needsNotification()).toBe(true);
    expect(t.q.needsNotification()).toBe(false);
  });

  it('with EVENT_IDX, writes avail_event = last_avail_idx on pop and enable, not while disabled', () => {
    const t = setup(8, true);
    const availEvent = USED + 4 + 8 * 8;
    t.desc(DESC, 0, BUF, 1, 0);
    t.post(0);
    t.post(0);
    const c = new DescriptorChain();
    t.q.pop(c);
    expect(t.u16(availEvent)).toBe(1);
    t.q.disableNotification();
    expect(t.u16(USED)).toBe(0); // the flag is not used with EVENT_IDX
    t.q.pop(c);
    expect(t.u16(availEvent)).toBe(1);
    expect(t.q.enableNotification()).toBe(false);
    expect(t.u16(availEvent)).toBe(2);
  });

  it('vring_need_event matches the spec formula across the wrap', () => {
    expect(vringNeedEvent(0xffff, 0, 0xfffe)).toBe(true);
    expect(vringNeedEvent(0, 0, 0xfffe)).toBe(false);
    expect(vringNeedEvent(0xfffe, 0, 0xffff)).toBe(false);
    expect(vringNeedEvent(5, 10, 3)).toBe(true);
    expect(vringNeedEvent(10, 10, 3)).toBe(false);
    expect(vringNeedEvent(3, 10, 3)).toBe(true);
  });

  it('saves and restores its indices', () => {
    const t = setup(8, true);
    const d = SplitDriverQueue.allocate(t.mem, new BumpAllocator(BASE + 0x4000, BASE + SIZE), 8, {
      eventIdx: true,
    });
    const q1 = createVirtqueue(t.mem, d.config, false);
    const c = new DescriptorChain();
    d.add([new Uint8Array(3)], []);
    d.add([new Uint8Array(3)], []);
    q1.pop(c);
    q1.push(c, 0);
    q1.needsNotification();
    const s = q1.state();
    expect(s).toEqual({ nextAvail: 1, nextUsed: 1, notificationsDisabled: false, signalledUsed: 1 });
    const q2 = createVirtqueue(t.mem, d.config, false);
    q2.restore(JSON.parse(JSON.stringify(s)));
    expect(q2.pop(c)).toBe(true);
    q2.push(c, 5);
    expect(d.getUsed()?.len).toBe(0);
    expect(d.getUsed()).toMatchObject({ id: c.head, len: 5 });
  });
});
