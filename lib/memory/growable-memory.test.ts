// Guest memory over a buffer that is replaced while the VM runs (a growing WebAssembly.Memory, a
// transferred ArrayBuffer), and the write hook a VMM with a JIT uses.
import { describe, expect, it } from 'vitest';
import { GuestMemoryError } from '../errors.js';
import { GuestMemory } from './guest-memory.js';

const PAGE = 65536;

// @types/node declares no WebAssembly values; the few used here, typed by hand.
interface WasmMemory {
  readonly buffer: ArrayBuffer;
  grow(pages: number): number;
}
const Wasm = (
  globalThis as unknown as {
    WebAssembly: { Memory: new (d: { initial: number; maximum?: number }) => WasmMemory };
  }
).WebAssembly;

/** Detaches `buf` (as a transfer does) and returns a new buffer of `size` bytes holding its bytes. */
function moved(buf: ArrayBuffer, size: number): ArrayBuffer {
  const kept = structuredClone(buf, { transfer: [buf] });
  const out = new ArrayBuffer(size);
  new Uint8Array(out).set(new Uint8Array(kept, 0, Math.min(size, kept.byteLength)));
  return out;
}

describe('GuestMemory over a growable buffer', () => {
  it('follows a WebAssembly.Memory across grow (old buffer detached), keeping every byte', () => {
    const wasm = new Wasm.Memory({ initial: 2, maximum: 16 });
    // The region starts 0x100 bytes into the wasm memory, as v86's guest RAM starts at its allocation.
    const mem = new GuestMemory([{ address: 0x1000, buffer: wasm, offset: 0x100, size: PAGE }]);
    mem.writeU32(0x1000, 0xdeadbeef);
    mem.write(0x1010, Uint8Array.of(1, 2, 3));
    const before = wasm.buffer;
    wasm.grow(1);
    expect(before.byteLength).toBe(0); // detached: a view kept from before would now throw or read nothing
    expect(mem.remaps).toBe(0);
    // Each accessor's fast path sees the stale view and goes through the slow path once.
    expect(mem.readU32(0x1000)).toBe(0xdeadbeef);
    expect(mem.remaps).toBe(1);
    expect([...mem.read(0x1010, 3)]).toEqual([1, 2, 3]);
    mem.writeU16(0x1020, 0xabcd);
    expect(new DataView(wasm.buffer).getUint16(0x100 + 0x20, true)).toBe(0xabcd);
    // locate hands out the current buffer, not the detached one.
    const b = mem.locate(0x1000, 4)!;
    expect(b.buffer).toBe(wasm.buffer);
    expect(mem.locatedOffset).toBe(0);
    expect(mem.remaps).toBe(1);
  });

  it('re-views on the first access of any kind after a grow', () => {
    const accesses: [string, (m: GuestMemory) => unknown][] = [
      ['readU8', (m) => m.readU8(4)],
      ['readU16', (m) => m.readU16(4)],
      ['readU64', (m) => m.readU64(8)],
      ['writeU8', (m) => m.writeU8(4, 1)],
      ['writeU32', (m) => m.writeU32(4, 1)],
      ['writeU64', (m) => m.writeU64(8, 1n)],
      ['write', (m) => m.write(4, new Uint8Array(100))],
      ['readInto', (m) => m.readInto(4, new Uint8Array(100))],
      ['isValid', (m) => expect(m.isValid(4, 100)).toBe(true)],
      ['locate', (m) => expect(m.locate(4, 100, true)).not.toBeNull()],
    ];
    for (const [name, access] of accesses) {
      const wasm = new Wasm.Memory({ initial: 1, maximum: 4 });
      const mem = new GuestMemory([{ address: 0, buffer: wasm, offset: 0, size: PAGE }]);
      mem.readU32(0); // warm the last-hit cache with the old view
      wasm.grow(1);
      expect(() => access(mem), name).not.toThrow();
      expect(mem.remaps, name).toBe(1);
    }
  });

  it('grows mid-traffic: the device keeps working while the memory grows between its accesses', () => {
    const wasm = new Wasm.Memory({ initial: 1, maximum: 64 });
    const mem = new GuestMemory([{ address: 0, buffer: () => wasm.buffer, offset: 0, size: PAGE }]);
    let grows = 0;
    for (let i = 0; i < 2000; i++) {
      const at = (i * 8) % (PAGE - 8);
      mem.writeU32(at, i);
      mem.write(at + 4, Uint8Array.of(i & 0xff));
      if (i % 50 === 0) {
        wasm.grow(1);
        grows++;
      }
      expect(mem.readU32(at)).toBe(i);
      expect(mem.readU8(at + 4)).toBe(i & 0xff);
    }
    expect(mem.remaps).toBe(grows);
  });

  it('follows a getter over a transferred ArrayBuffer', () => {
    let buf = new ArrayBuffer(0x2000);
    const mem = new GuestMemory([{ address: 0x10000, buffer: () => buf, offset: 0x1000, size: 0x1000 }]);
    mem.writeU32(0x10000, 0x11223344);
    buf = moved(buf, 0x4000);
    expect(mem.readU32(0x10000)).toBe(0x11223344);
    expect(new DataView(buf).getUint32(0x1000, true)).toBe(0x11223344);
  });

  it('a buffer that shrinks below the region, or fixed bytes whose buffer went away, give GuestMemoryError', () => {
    let buf = new ArrayBuffer(0x2000);
    const mem = new GuestMemory([{ address: 0, buffer: () => buf, offset: 0x1000, size: 0x1000 }]);
    buf = moved(buf, 0x1800);
    expect(() => mem.readU32(0)).toThrow(GuestMemoryError);
    expect(mem.isValid(0, 4)).toBe(false);
    const fixed = new ArrayBuffer(64);
    const m2 = new GuestMemory([{ address: 0, bytes: new Uint8Array(fixed) }]);
    structuredClone(fixed, { transfer: [fixed] });
    expect(() => m2.readU16(0)).toThrow(GuestMemoryError);
    expect(() => m2.write(0, new Uint8Array(4))).toThrow(GuestMemoryError);
  });

  it('refuses a growable region outside its buffer when added', () => {
    const wasm = new Wasm.Memory({ initial: 1 });
    expect(() => new GuestMemory([{ address: 0, buffer: wasm, offset: PAGE - 4, size: 8 }])).toThrow(
      GuestMemoryError,
    );
    expect(() => new GuestMemory([{ address: 0, buffer: wasm, offset: -1, size: 8 }])).toThrow(
      GuestMemoryError,
    );
  });
});

describe('GuestMemory write hook', () => {
  function hooked() {
    const calls: [number, number][] = [];
    const a = new Uint8Array(0x100);
    const b = new Uint8Array(0x100);
    const mem = new GuestMemory(
      [
        { address: 0x1000, bytes: a },
        { address: 0x1100, bytes: b },
      ],
      { onWrite: (addr, len) => calls.push([addr, len]) },
    );
    return { mem, calls };
  }

  it('reports each write with its exact guest range, fast and slow paths, and nothing for reads', () => {
    const { mem, calls } = hooked();
    mem.writeU8(0x1001, 1);
    mem.writeU16(0x1002n, 2); // bigint: slow path
    mem.writeU32(0x1004, 3);
    mem.writeU64(0x1008, 4n);
    mem.write(0x1010, new Uint8Array(5));
    mem.write(0x10fe, new Uint8Array(4)); // spans both regions
    mem.writeU32(0x10fe, 7); // spans both regions
    mem.write(0x1020, new Uint8Array(0)); // nothing written, nothing reported
    mem.readU32(0x1000);
    mem.read(0x1000, 16);
    mem.locate(0x1000, 16, true); // a lend is not a write; the writer reports with noteWritten
    mem.noteWritten(0x1040, 60);
    expect(calls).toEqual([
      [0x1001, 1],
      [0x1002, 2],
      [0x1004, 4],
      [0x1008, 8],
      [0x1010, 5],
      [0x10fe, 4],
      [0x10fe, 4],
      [0x1040, 60],
    ]);
  });

  it('reports guest-physical addresses under an IOMMU translation', () => {
    const calls: [number, number][] = [];
    const mem = new GuestMemory([{ address: 0x8000, bytes: new Uint8Array(0x100) }], {
      translate: (a) => a + 0x8000,
      onWrite: (addr, len) => calls.push([addr, len]),
    });
    mem.writeU16(0x10, 1);
    mem.noteWritten(0x20, 3);
    expect(calls).toEqual([
      [0x8010, 2],
      [0x8020, 3],
    ]);
  });

  it('a failed write reports nothing', () => {
    const { mem, calls } = hooked();
    expect(() => mem.writeU32(0x11fe, 1)).toThrow(GuestMemoryError);
    expect(() => mem.write(0x11f0, new Uint8Array(32))).toThrow(GuestMemoryError);
    expect(calls).toEqual([]);
  });
});
