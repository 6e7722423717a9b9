import { describe, expect, it } from 'vitest';
import { GuestMemory } from '../../lib/memory/guest-memory.js';
import { createVirtqueue } from '../queue/create-virtqueue.js';
import { DescriptorChain } from '../queue/virtqueue.js';
import { BumpAllocator } from './bump-allocator.js';
import { PackedDriverQueue } from './packed-driver.js';

const BASE = 0x4000;

/** Records the order of 16-bit writes, to see which flags become visible last. */
class OrderMemory extends GuestMemory {
  u16Writes: number[] = [];
  override writeU16(a: number | bigint, v: number): void {
    this.u16Writes.push(Number(a));
    super.writeU16(a, v);
  }
}

function setup(size = 3, eventIdx = false) {
  const bytes = new Uint8Array(0x4000);
  const mem = new OrderMemory([{ address: BASE, bytes }]);
  const drv = PackedDriverQueue.allocate(mem, new BumpAllocator(BASE, BASE + 0x4000), size, { eventIdx });
  const dev = createVirtqueue(mem, drv.config, true);
  const dv = new DataView(bytes.buffer);
  const u16 = (a: number) => dv.getUint16(a - BASE, true);
  const u32 = (a: number) => dv.getUint32(a - BASE, true);
  const u64 = (a: number) => Number(dv.getBigUint64(a - BASE, true));
  return { mem, drv, dev, u16, u32, u64, setU16: (a: number, v: number) => dv.setUint16(a - BASE, v, true) };
}

describe('PackedDriverQueue', () => {
  it('lays out the ring and event structures', () => {
    const { drv } = setup(3);
    expect(drv.config).toEqual({
      index: 0,
      size: 3,
      descAddr: BASE,
      driverAddr: BASE + 48,
      deviceAddr: BASE + 52,
      eventIdx: false,
    });
  });

  it('writes every descriptor with the id and the first flags last', () => {
    const t = setup(3);
    t.mem.u16Writes = [];
    const id = t.drv.add([{ addr: 0x7000, len: 5 }], [{ addr: 0x7100, len: 6 }]);
    expect(id).toBe(0);
    const r = t.drv.config.descAddr;
    expect([t.u64(r), t.u32(r + 8), t.u16(r + 12), t.u16(r + 14)]).toEqual([0x7000, 5, 0, 0x80 | 1]);
    expect([t.u64(r + 16), t.u32(r + 24), t.u16(r + 28), t.u16(r + 30)]).toEqual([0x7100, 6, 0, 0x80 | 2]);
    expect(t.mem.u16Writes.at(-1)).toBe(r + 14);
    // Second lap: AVAIL clear, USED set.
    const c = new DescriptorChain();
    t.dev.pop(c);
    t.dev.push(c, 6);
    expect(t.drv.getUsed()).toMatchObject({ id: 0, len: 6 });
    t.drv.add(
      [
        { addr: 0x7000, len: 1 },
        { addr: 0x7000, len: 2 },
      ],
      [],
    ); // slots 2, 0
    expect([t.u16(r + 32 + 14), t.u16(r + 14)]).toEqual([0x80 | 1, 0x8000]);
  });

  it('posts an indirect chain in one slot', () => {
    const t = setup(3);
    const id = t.drv.add([new Uint8Array([1, 2])], [new Uint8Array(4), new Uint8Array(8)], {
      indirect: true,
    });
    const r = t.drv.config.descAddr;
    expect([t.u32(r + 8), t.u16(r + 12), t.u16(r + 14)]).toEqual([48, id, 0x80 | 4]);
    const table = t.u64(r);
    expect([0, 1, 2].map((i) => [t.u32(table + 16 * i + 8), t.u16(table + 16 * i + 14)])).toEqual([
      [2, 0],
      [4, 2],
      [8, 2],
    ]);
    expect(t.mem.read(t.u64(table), 2)).toEqual(new Uint8Array([1, 2]));
    expect(t.drv.numFree).toBe(2);
  });

  it('reads used descriptors in order across the wrap and frees their slots', () => {
    const t = setup(3);
    const c = new DescriptorChain();
    for (let i = 0; i < 7; i++) {
      const id = t.drv.add([{ addr: 0x7000, len: 1 }], [{ addr: 0x7000, len: 1 }]); // 2 slots each
      expect(t.drv.getUsed()).toBeNull();
      t.dev.pop(c);
      t.dev.push(c, i);
      expect(t.drv.getUsed()).toMatchObject({ id, len: i });
      expect(t.drv.numFree).toBe(3);
    }
  });

  it('needsKick follows the device event structure', () => {
    const t = setup(4, true);
    t.drv.add([{ addr: 0x7000, len: 1 }], []);
    expect(t.drv.needsKick()).toBe(true); // ENABLE
    t.dev.disableNotification();
    t.drv.add([{ addr: 0x7000, len: 1 }], []);
    expect(t.drv.needsKick()).toBe(false);
    const dev = t.drv.config.deviceAddr;
    t.setU16(dev, 3 | 0x8000);
    t.setU16(dev + 2, 2); // DESC: kick when the driver makes slot 3 (first lap) available
    t.drv.add([{ addr: 0x7000, len: 1 }], []); // slot 2
    expect(t.drv.needsKick()).toBe(false);
    t.drv.add([{ addr: 0x7000, len: 1 }], []); // slot 3
    expect(t.drv.needsKick()).toBe(true);
  });

  it('writes the driver event structure', () => {
    const t = setup(4, true);
    const d = t.drv.config.driverAddr;
    t.drv.disableInterrupts();
    expect(t.u16(d + 2)).toBe(1);
    t.drv.enableInterrupts();
    expect([t.u16(d), t.u16(d + 2)]).toEqual([0x8000, 2]);
    t.drv.setUsedEvent(3, false);
    expect([t.u16(d), t.u16(d + 2)]).toEqual([3, 2]);
    const n = setup(4, false);
    n.drv.disableInterrupts();
    n.drv.enableInterrupts();
    expect(n.u16(n.drv.config.driverAddr + 2)).toBe(0);
  });
});
