import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { GuestMemoryError } from '../errors.js';
import { GuestMemory, readAddress } from './guest-memory.js';

function twoRegions(): { mem: GuestMemory; a: Uint8Array; b: Uint8Array } {
  const a = new Uint8Array(0x100);
  const b = new Uint8Array(0x100);
  // Adjacent: [0x1000, 0x1100) and [0x1100, 0x1200); plus a separate one at 0x8000.
  const mem = new GuestMemory([
    { address: 0x1100, bytes: b },
    { address: 0x1000n, bytes: a },
    { address: 0x8000, bytes: new Uint8Array(16) },
  ]);
  return { mem, a, b };
}

function expectGme(fn: () => unknown, address?: number | bigint, length?: number): void {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(GuestMemoryError);
    if (address !== undefined) expect((e as GuestMemoryError).address).toBe(address);
    if (length !== undefined) expect((e as GuestMemoryError).length).toBe(length);
    return;
  }
  throw new Error('expected a GuestMemoryError');
}

describe('GuestMemory', () => {
  it('reads and writes little-endian scalars at the exact bytes', () => {
    const { mem, a } = twoRegions();
    mem.writeU16(0x1000, 0x1234);
    mem.writeU32(0x1002, 0xdeadbeef);
    mem.writeU64(0x1008, 0x0102030405060708n);
    mem.writeU8(0x1010, 0x1ff);
    expect([...a.subarray(0, 0x11)]).toEqual([
      0x34, 0x12, 0xef, 0xbe, 0xad, 0xde, 0, 0, 8, 7, 6, 5, 4, 3, 2, 1, 0xff,
    ]);
    expect(mem.readU16(0x1000)).toBe(0x1234);
    expect(mem.readU32(0x1002n)).toBe(0xdeadbeef);
    expect(mem.readU64(0x1008)).toBe(0x0102030405060708n);
    expect(mem.readU8(0x1010)).toBe(0xff);
    mem.writeU64(0x1008, 2 ** 53 - 1);
    expect(mem.readU64(0x1008)).toBe(2n ** 53n - 1n);
    expect(readAddress(mem, 0x1008)).toBe(2 ** 53 - 1);
    mem.writeU64(0x1008, 2n ** 53n);
    expect(readAddress(mem, 0x1008)).toBe(-1);
  });

  it('writeRange writes exactly the range: from a region into itself (overlap too), from another array, across regions', () => {
    const { mem, a, b } = twoRegions();
    a.forEach((_, i) => {
      a[i] = i;
    });
    mem.read(0x1000, 1); // `a` is the region looked up last: the copy stays inside its bytes
    mem.writeRange(0x1080, a, 0x10, 0x20);
    expect([...a.subarray(0x80, 0xa0)]).toEqual(Array.from({ length: 0x20 }, (_, i) => 0x10 + i));
    expect(a[0xa0]).toBe(0xa0);
    mem.writeRange(0x1004, a, 0, 8); // overlapping: as memmove
    expect([...a.subarray(4, 12)]).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    const src = Uint8Array.from({ length: 32 }, (_, i) => 200 + i);
    mem.writeRange(0x10fc, src, 3, 8); // another array, spanning into `b`
    expect([...a.subarray(0xfc), ...b.subarray(0, 4)]).toEqual([203, 204, 205, 206, 207, 208, 209, 210]);
    expect(b[4]).toBe(0);
    expectGme(() => mem.writeRange(0x11fc, src, 0, 8), 0x11fc, 8);
  });

  it('writeRange reports every write to the onWrite hook, the copy within one region included', () => {
    const calls: [number, number][] = [];
    const a = new Uint8Array(0x100);
    const mem = new GuestMemory([{ address: 0x1000, bytes: a }], { onWrite: (x, n) => calls.push([x, n]) });
    a.forEach((_, i) => {
      a[i] = i;
    });
    mem.read(0x1000, 1);
    mem.writeRange(0x1080, a, 0x10, 0x20); // copyWithin inside the region
    mem.writeRange(0x1004, Uint8Array.of(9, 9, 9, 9, 9), 1, 3); // from another array
    mem.writeRange(0x1010, a, 0, 0); // nothing written, nothing reported
    expect(calls).toEqual([
      [0x1080, 0x20],
      [0x1004, 3],
    ]);
    expect([...a.subarray(0x80, 0x84)]).toEqual([0x10, 0x11, 0x12, 0x13]);
  });

  it('accesses scalars and byte ranges across adjacent regions', () => {
    const { mem, a, b } = twoRegions();
    mem.writeU32(0x10fe, 0x44332211);
    expect(a[0xfe]).toBe(0x11);
    expect(a[0xff]).toBe(0x22);
    expect(b[0]).toBe(0x33);
    expect(b[1]).toBe(0x44);
    expect(mem.readU32(0x10fe)).toBe(0x44332211);
    mem.writeU64(0x10fc, 0xffeeddccbbaa9988n);
    expect(mem.readU64(0x10fc)).toBe(0xffeeddccbbaa9988n);
    const data = Uint8Array.from({ length: 0x20 }, (_, i) => i + 1);
    mem.write(0x10f0, data);
    expect(mem.read(0x10f0, 0x20)).toEqual(data);
    const dst = new Uint8Array(0x20);
    mem.readInto(0x10f0, dst);
    expect(dst).toEqual(data);
    expect(mem.tryView(0x10f0, 0x20)).toBeNull();
    expectGme(() => mem.view(0x10f0, 0x20), 0x10f0, 0x20);
    expect(mem.isValid(0x1000, 0x200)).toBe(true);
    expect(mem.isValid(0x1000, 0x201)).toBe(false);
  });

  it('returns views without copying', () => {
    const { mem, b } = twoRegions();
    const v = mem.view(0x1110, 4);
    v[0] = 0x99;
    expect(b[0x10]).toBe(0x99);
    b[0x11] = 0x77;
    expect(v[1]).toBe(0x77);
    expect(v.buffer).toBe(b.buffer);
    expect(mem.tryView(0x1100, 0x100)?.length).toBe(0x100);
  });

  it('locates a range as its region bytes and offset, without a view', () => {
    const { mem, a, b } = twoRegions();
    expect(mem.locate(0x1110, 4)).toBe(b);
    expect(mem.locatedOffset).toBe(0x10);
    expect(mem.locate(0x1000n, 0x100)).toBe(a); // bigint path, a whole region
    expect(mem.locatedOffset).toBe(0);
    expect(mem.locate(0x11ff, 1)).toBe(b);
    expect(mem.locatedOffset).toBe(0xff);
    expect(mem.locate(0x10f0, 0x20)).toBeNull(); // valid, but spans two regions
    expectGme(() => mem.locate(0x11f0, 0x11), 0x11f0, 0x11);
    expectGme(() => mem.locate(0x7fff, 2), 0x7fff, 2);
    const calls: boolean[] = [];
    const iommu = new GuestMemory([{ address: 0x1000, bytes: a }], {
      translate: (iova, _len, write) => {
        calls.push(write);
        return iova - 0x10_0000 + 0x1000;
      },
    });
    expect(iommu.locate(0x10_0020, 8, true)).toBe(a);
    expect(iommu.locatedOffset).toBe(0x20);
    expect(calls).toEqual([true]);
  });

  it('rejects accesses outside every region with the address and length', () => {
    const { mem, a } = twoRegions();
    expectGme(() => mem.readU16(0x11ff), 0x11ff, 2);
    expectGme(() => mem.readU32(0xffe), 0xffe, 4);
    expectGme(() => mem.read(0x1200, 1), 0x1200, 1);
    expectGme(() => mem.write(0x11f8, new Uint8Array(9)), 0x11f8, 9);
    expectGme(() => mem.view(0x8010, 1), 0x8010, 1);
    expectGme(() => mem.tryView(0x7fff, 2), 0x7fff, 2);
    expectGme(() => mem.readU64(0x800c), 0x800c, 8);
    expectGme(() => mem.writeU8(0, 1), 0, 1);
    // A failed write writes nothing, even where part of the range is valid.
    a.fill(0);
    expectGme(() => mem.write(0x1100 + 0xf8, new Uint8Array(16).fill(5)));
    expect(mem.read(0x11f8, 8)).toEqual(new Uint8Array(8));
    expect(mem.isValid(0x8000, 17)).toBe(false);
    expect(mem.isValid(0x1200, 0)).toBe(true);
  });

  it('turns 64-bit and non-integer addresses into GuestMemoryError, never RangeError', () => {
    const { mem } = twoRegions();
    const bad: (number | bigint)[] = [
      2n ** 53n,
      2n ** 64n - 1n,
      2n ** 64n,
      -1n,
      -1,
      2 ** 53,
      2 ** 64,
      1.5,
      Number.NaN,
      Number.POSITIVE_INFINITY,
      4096.5,
    ];
    for (const addr of bad) {
      expectGme(() => mem.readU8(addr), addr, 1);
      expectGme(() => mem.readU16(addr));
      expectGme(() => mem.readU32(addr));
      expectGme(() => mem.readU64(addr));
      expectGme(() => mem.writeU32(addr, 1));
      expectGme(() => mem.read(addr, 4));
      expectGme(() => mem.view(addr, 4));
      expect(mem.isValid(addr, 1)).toBe(false);
    }
    expectGme(() => mem.read(0x1000, -1));
    expectGme(() => mem.read(0x1000, 1.5));
    expectGme(() => mem.writeU64(0x1000, -1));
  });

  it('rejects overlapping regions and regions beyond 2^53', () => {
    expectGme(
      () =>
        new GuestMemory([
          { address: 0x1000, bytes: new Uint8Array(0x100) },
          { address: 0x10ff, bytes: new Uint8Array(1) },
        ]),
      0x10ff,
      1,
    );
    const mem = new GuestMemory([{ address: 0x1000, bytes: new Uint8Array(0x100) }]);
    expectGme(() => mem.addRegion({ address: 0xf01, bytes: new Uint8Array(0x100) }));
    mem.addRegion({ address: 0xf00, bytes: new Uint8Array(0x100) });
    expectGme(() => mem.addRegion({ address: 2n ** 53n, bytes: new Uint8Array(1) }));
    expectGme(() => mem.addRegion({ address: 2 ** 53 - 1, bytes: new Uint8Array(2) }));
  });

  it('adds and removes regions (DMA map/unmap) and drops the cached region', () => {
    const mem = new GuestMemory([]);
    const r = new Uint8Array(0x10);
    mem.addRegion({ address: 0x2000, bytes: r });
    mem.writeU32(0x2000, 7);
    expect(mem.readU32(0x2000)).toBe(7);
    expect(mem.removeRegion(0x2001)).toBe(false);
    expect(mem.removeRegion(0x2000n)).toBe(true);
    expectGme(() => mem.readU32(0x2000), 0x2000, 4);
    expect(mem.removeRegion(0x2000)).toBe(false);
  });

  it('works on SharedArrayBuffer and offset views', () => {
    const sab = new SharedArrayBuffer(64);
    const outer = new Uint8Array(sab);
    const mem = new GuestMemory([{ address: 0x100, bytes: new Uint8Array(sab, 16, 32) }]);
    mem.writeU32(0x100, 0xaabbccdd);
    expect([...outer.subarray(16, 20)]).toEqual([0xdd, 0xcc, 0xbb, 0xaa]);
    expectGme(() => mem.readU8(0x120), 0x120, 1);
    expect(outer[48]).toBe(0);
    expect(mem.view(0x100, 4).buffer).toBe(sab);
  });

  it('translates addresses through the IOMMU hook and reports failures as GuestMemoryError', () => {
    const bytes = new Uint8Array(0x100);
    const calls: [number, number, boolean][] = [];
    const mem = new GuestMemory([{ address: 0x1000, bytes }], {
      translate: (iova, length, write) => {
        calls.push([iova, length, write]);
        if (iova < 0x10_0000 || iova + length > 0x10_0100)
          throw new GuestMemoryError('iommu fault', iova, length);
        return iova - 0x10_0000 + 0x1000;
      },
    });
    mem.writeU32(0x10_0004, 0x01020304);
    expect([...bytes.subarray(4, 8)]).toEqual([4, 3, 2, 1]);
    expect(mem.readU16(0x10_0004n)).toBe(0x0304);
    expect(calls).toEqual([
      [0x10_0004, 4, true],
      [0x10_0004, 2, false],
    ]);
    expectGme(() => mem.readU8(0x1000), 0x1000, 1); // a GPA is not a valid IOVA
    expect(mem.isValid(0x10_00ff, 2)).toBe(false);
    const throwing = new GuestMemory([{ address: 0, bytes }], {
      translate: () => {
        throw new Error('boom');
      },
    });
    expectGme(() => throwing.readU32(0), 0, 4);
    const nonsense = new GuestMemory([{ address: 0, bytes }], { translate: () => -5 });
    expectGme(() => nonsense.readU32(0), 0, 4);
  });

  it('matches a plain byte-array model for random accesses (property)', () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.record({
            op: fc.constantFrom('r8', 'r16', 'r32', 'r64', 'w8', 'w16', 'w32', 'w64', 'read', 'write'),
            addr: fc.integer({ min: 0xf00, max: 0x1300 }),
            value: fc.integer({ min: 0, max: 0xffffffff }),
            len: fc.integer({ min: 0, max: 40 }),
          }),
          { maxLength: 60 },
        ),
        (ops) => {
          const { mem } = twoRegions();
          const model = new Uint8Array(0x200); // mirrors [0x1000, 0x1200)
          const mv = new DataView(model.buffer);
          const inRange = (a: number, n: number) => a >= 0x1000 && a + n <= 0x1200;
          for (const { op, addr, value, len } of ops) {
            const size = op === 'read' || op === 'write' ? len : Number(op.slice(1)) / 8;
            const ok = size === 0 || inRange(addr, size); // empty ranges touch nothing: valid anywhere
            expect(mem.isValid(addr, size)).toBe(ok);
            const run = (): unknown => {
              const o = addr - 0x1000;
              switch (op) {
                case 'r8':
                  expect(mem.readU8(addr)).toBe(model[o]);
                  break;
                case 'r16':
                  expect(mem.readU16(addr)).toBe(mv.getUint16(o, true));
                  break;
                case 'r32':
                  expect(mem.readU32(addr)).toBe(mv.getUint32(o, true));
                  break;
                case 'r64':
                  expect(mem.readU64(addr)).toBe(mv.getBigUint64(o, true));
                  break;
                case 'w8':
                  mem.writeU8(addr, value & 0xff);
                  model[o] = value & 0xff;
                  break;
                case 'w16':
                  mem.writeU16(addr, value & 0xffff);
                  mv.setUint16(o, value & 0xffff, true);
                  break;
                case 'w32':
                  mem.writeU32(addr, value);
                  mv.setUint32(o, value, true);
                  break;
                case 'w64':
                  mem.writeU64(addr, BigInt(value) * 0x10001n);
                  mv.setBigUint64(o, BigInt(value) * 0x10001n, true);
                  break;
                case 'read':
                  expect(mem.read(addr, len)).toEqual(model.slice(o, o + len));
                  break;
                case 'write': {
                  const d = Uint8Array.from({ length: len }, (_, i) => (value + i) & 0xff);
                  mem.write(addr, d);
                  if (len > 0) model.set(d, o);
                  break;
                }
              }
              return undefined;
            };
            if (ok) run();
            else expectGme(run, addr, size);
          }
          expect(mem.read(0x1000, 0x200)).toEqual(model);
        },
      ),
    );
  });
});

describe('GuestMemory region bookkeeping', () => {
  it('adds and removes many regions with a logarithmic search each (DMA maps one by one)', () => {
    // Counts element reads of the region list (a private field, wrapped in a counting Proxy): a scan per
    // add (as before) grows as n², a binary search as n log n. In address order, as a VMM maps its RAM,
    // so that no element is shifted.
    const reads = (n: number): number => {
      const mem = new GuestMemory();
      const m = mem as unknown as { regions: unknown[] };
      let count = 0;
      m.regions = new Proxy(m.regions, {
        get(target, key, receiver) {
          if (typeof key === 'string' && /^\d+$/.test(key)) count++;
          return Reflect.get(target, key, receiver);
        },
      });
      const bytes = new Uint8Array(16);
      for (let i = 0; i < n; i++) mem.addRegion({ address: i * 32, bytes });
      let removed = 0;
      for (let i = n - 1; i >= 0; i--) if (mem.removeRegion(i * 32)) removed++;
      expect(removed).toBe(n);
      return count;
    };
    const small = reads(2_000);
    const big = reads(20_000);
    // n² would make this 100; n log n about 13.
    expect(big / small).toBeLessThan(20);
    expect(big).toBeLessThan(2 * 20_000 * 20);
  });

  it('still refuses overlaps next to zero-sized regions and keeps regions sorted', () => {
    const mem = new GuestMemory();
    mem.addRegion({ address: 0x1000, bytes: new Uint8Array(0x100) });
    mem.addRegion({ address: 0x1000, bytes: new Uint8Array(0) });
    expectGme(() => mem.addRegion({ address: 0x1080, bytes: new Uint8Array(1) }));
    expectGme(() => mem.addRegion({ address: 0xfff, bytes: new Uint8Array(2) }));
    mem.addRegion({ address: 0x1100, bytes: new Uint8Array([7]) });
    mem.addRegion({ address: 0xfff, bytes: new Uint8Array([5]) });
    expect([...mem.read(0xfff, 1)]).toEqual([5]);
    expect(mem.readU8(0x1100)).toBe(7);
    expect(mem.isValid(0xfff, 0x102)).toBe(true);
  });
});
