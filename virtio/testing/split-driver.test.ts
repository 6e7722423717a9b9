import { describe, expect, it } from 'vitest';
import { GuestMemory } from '../../lib/memory/guest-memory.js';
import { createVirtqueue } from '../queue/create-virtqueue.js';
import { DescriptorChain } from '../queue/virtqueue.js';
import { BumpAllocator } from './bump-allocator.js';
import { SplitDriverQueue } from './split-driver.js';

const BASE = 0x4000;

function setup(size = 4, eventIdx = false) {
  const bytes = new Uint8Array(0x4000);
  const mem = new GuestMemory([{ address: BASE, bytes }]);
  const alloc = new BumpAllocator(BASE + 1, BASE + 0x4000); // odd start: alignment must be applied
  const drv = SplitDriverQueue.allocate(mem, alloc, size, { eventIdx, index: 2 });
  const dev = createVirtqueue(mem, drv.config, false);
  const dv = new DataView(bytes.buffer);
  const u16 = (a: number) => dv.getUint16(a - BASE, true);
  const u32 = (a: number) => dv.getUint32(a - BASE, true);
  const u64 = (a: number) => Number(dv.getBigUint64(a - BASE, true));
  return { mem, drv, dev, u16, u32, u64, setU16: (a: number, v: number) => dv.setUint16(a - BASE, v, true) };
}

describe('SplitDriverQueue', () => {
  it('lays the rings out with the spec alignment', () => {
    const { drv } = setup(4);
    expect(drv.config).toEqual({
      index: 2,
      size: 4,
      descAddr: BASE + 16,
      driverAddr: BASE + 16 + 64,
      deviceAddr: BASE + 16 + 64 + 16, // avail is 6 + 2*4 = 14 bytes, used aligned to 4
      eventIdx: false,
    });
  });

  it('writes descriptors, the avail entry and the idx byte for byte', () => {
    const t = setup(4);
    const head = t.drv.add([new Uint8Array([9, 8, 7])], [{ addr: 0x7000, len: 100 }]);
    const { descAddr, driverAddr } = t.drv.config;
    expect(head).toBe(0);
    const buf = t.u64(descAddr);
    expect(t.mem.read(buf, 3)).toEqual(new Uint8Array([9, 8, 7]));
    expect([t.u32(descAddr + 8), t.u16(descAddr + 12), t.u16(descAddr + 14)]).toEqual([3, 1, 1]);
    expect([t.u64(descAddr + 16), t.u32(descAddr + 24), t.u16(descAddr + 28), t.u16(descAddr + 30)]).toEqual([
      0x7000, 100, 2, 0,
    ]);
    expect([t.u16(driverAddr + 2), t.u16(driverAddr + 4)]).toEqual([1, 0]);
    expect(t.drv.numFree).toBe(2);
  });

  it('posts an indirect chain through one descriptor', () => {
    const t = setup(4);
    const head = t.drv.add(
      [
        { addr: 0x7000, len: 1 },
        { addr: 0x7010, len: 2 },
      ],
      [{ addr: 0x7020, len: 3 }],
      {
        indirect: true,
      },
    );
    const d = t.drv.config.descAddr + 16 * head;
    expect([t.u32(d + 8), t.u16(d + 12)]).toEqual([48, 4]);
    const table = t.u64(d);
    expect(table % 16).toBe(0);
    expect(
      [0, 1, 2].map((i) => [t.u64(table + 16 * i), t.u16(table + 16 * i + 12), t.u16(table + 16 * i + 14)]),
    ).toEqual([
      [0x7000, 1, 1],
      [0x7010, 1, 2],
      [0x7020, 2, 0],
    ]);
    expect(t.drv.numFree).toBe(3);
    const c = new DescriptorChain();
    t.dev.pop(c);
    expect([c.readableLength, c.writableLength]).toEqual([3, 3]);
  });

  it('returns used entries and frees their descriptors', () => {
    const t = setup(4);
    const a = t.drv.add([{ addr: 0x7000, len: 1 }], [{ addr: 0x7000, len: 8 }]);
    const b = t.drv.add([{ addr: 0x7000, len: 1 }], []);
    expect(t.drv.getUsed()).toBeNull();
    const c = new DescriptorChain();
    const d = new DescriptorChain();
    t.dev.pop(c);
    t.dev.pop(d);
    t.dev.push(d, 0);
    t.dev.push(c, 8);
    expect(t.drv.pendingUsed()).toBe(2);
    expect(t.drv.getUsed()).toMatchObject({ id: b, len: 0 });
    expect(t.drv.getUsed()).toMatchObject({
      id: a,
      len: 8,
      segments: [{ write: false }, { write: true, len: 8 }],
    });
    expect(t.drv.getUsed()).toBeNull();
    expect(t.drv.numFree).toBe(4);
    expect(() => t.drv.add([], [])).toThrow(RangeError);
    expect(() => t.drv.add(Array(5).fill({ addr: 0x7000, len: 1 }), [])).toThrow(RangeError);
  });

  it('needsKick follows VIRTQ_USED_F_NO_NOTIFY, or avail_event with EVENT_IDX', () => {
    const t = setup(4);
    t.drv.add([{ addr: 0x7000, len: 1 }], []);
    expect(t.drv.needsKick()).toBe(true);
    t.dev.disableNotification();
    t.drv.add([{ addr: 0x7000, len: 1 }], []);
    expect(t.drv.needsKick()).toBe(false);

    const e = setup(4, true);
    const availEvent = e.drv.config.deviceAddr + 4 + 8 * 4;
    e.drv.add([{ addr: 0x7000, len: 1 }], []);
    expect(e.drv.needsKick()).toBe(true); // avail_event 0, idx 0 -> 1
    e.drv.add([{ addr: 0x7000, len: 1 }], []);
    expect(e.drv.needsKick()).toBe(false); // still asks for 0
    e.setU16(availEvent, 3);
    e.drv.add([{ addr: 0x7000, len: 1 }], []);
    expect(e.drv.needsKick()).toBe(false); // idx 2 -> 3 has not passed 3
    e.drv.add([{ addr: 0x7000, len: 1 }], []);
    expect(e.drv.needsKick()).toBe(true); // idx 3 -> 4
  });

  it('enables and disables interrupts in avail.flags / used_event', () => {
    const t = setup(4, true);
    const { driverAddr } = t.drv.config;
    t.drv.disableInterrupts();
    expect(t.u16(driverAddr)).toBe(1);
    t.drv.add([{ addr: 0x7000, len: 1 }], []);
    const c = new DescriptorChain();
    t.dev.pop(c);
    t.dev.push(c, 0);
    t.drv.getUsed();
    t.drv.enableInterrupts();
    expect([t.u16(driverAddr), t.u16(driverAddr + 4 + 2 * 4)]).toEqual([0, 1]);
    t.drv.setUsedEvent(0x1_0005);
    expect(t.u16(driverAddr + 12)).toBe(5);
  });
});
