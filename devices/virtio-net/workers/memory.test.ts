/**
 * Guest memory seen from queue-pair workers: GuestMemory.threadRegions / watch, the worker's own views of
 * native (mmap'd) regions, and the pinning of a vfio-user DMA mapping a watcher could not release.
 */
import { readFileSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import { GuestMemoryError } from '../../../lib/errors.js';
import * as sys from '../../../lib/host/socket.js';
import { GuestMemory, type MemoryChange } from '../../../lib/memory/guest-memory.js';
import { DmaError, DmaMappings, MAX_PINNED } from '../../../lib/vfio-user/dma.js';
import { Errno } from '../../../lib/vfio-user/protocol.js';
import { viewRegion, WorkerMemory } from './memory.js';

const PAGE = 4096;
const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

/** An anonymous shared mapping of `size` bytes: its pointer, host address and a view of it. */
function anon(size: number) {
  const ptr = sys.mmap(
    null,
    size,
    sys.PROT_READ | sys.PROT_WRITE,
    sys.MAP_SHARED | sys.MAP_ANONYMOUS,
    -1,
    0n,
  );
  return { ptr, host: Number(sys.addressOf(ptr)), bytes: new Uint8Array(sys.viewOf(ptr, size)) };
}

describe('GuestMemory.threadRegions', () => {
  it('gives SharedArrayBuffer bytes and native host addresses; null for anything another thread cannot view', () => {
    const sab = new SharedArrayBuffer(3 * PAGE);
    const m = anon(PAGE);
    const mem = new GuestMemory([
      { address: 0x10000, bytes: new Uint8Array(sab, PAGE, 2 * PAGE) },
      { address: 0x20000, bytes: m.bytes, host: m.host },
    ]);
    expect(mem.threadRegions()).toEqual([
      { address: 0x10000, size: 2 * PAGE, buffer: sab, offset: PAGE },
      { address: 0x20000, size: PAGE, host: m.host },
    ]);
    // An ArrayBuffer without a host address, a growable region, hooks: not viewable elsewhere.
    expect(new GuestMemory([{ address: 0, bytes: new Uint8Array(PAGE) }]).threadRegions()).toBeNull();
    // A growable region (its buffer may be replaced), even over a SharedArrayBuffer.
    expect(
      new GuestMemory([{ address: 0, buffer: () => sab, offset: 0, size: PAGE }]).threadRegions(),
    ).toBeNull();
    const regions = [{ address: 0, bytes: new Uint8Array(sab) }];
    expect(new GuestMemory(regions, { translate: (a) => a }).threadRegions()).toBeNull();
    expect(new GuestMemory(regions, { onWrite: () => {} }).threadRegions()).toBeNull();
    expect(new GuestMemory().threadRegions()).toEqual([]);
    // A host address that is not a positive integer is refused.
    expect(() => mem.addRegion({ address: 0x30000, bytes: m.bytes, host: -5 })).toThrow(GuestMemoryError);
    expect(() => mem.addRegion({ address: 0x30000, bytes: m.bytes, host: 1.5 })).toThrow(GuestMemoryError);
    sys.munmap(m.ptr, PAGE);
  });
});

describe('GuestMemory.watch', () => {
  it('tells every watcher of each add and removal before the call returns; a refused add is undone', () => {
    const sab = new SharedArrayBuffer(4 * PAGE);
    const mem = new GuestMemory();
    const seen: MemoryChange[] = [];
    mem.watch((c) => {
      seen.push(c);
      return true;
    });
    const other: string[] = [];
    mem.watch((c) => {
      other.push(c.op);
      throw new Error('a watcher that throws counts as refusing, and does not escape');
    });
    // The throwing watcher refuses: the add is undone (a removal is announced) and fails.
    expect(() => mem.addRegion({ address: 0x1000, bytes: new Uint8Array(sab, 0, PAGE) })).toThrow(
      /refused: a thread viewing guest memory could not map it/,
    );
    expect(mem.isValid(0x1000, 1)).toBe(false);
    expect(mem.lastRemovalPinned).toBe(true);
    expect(seen).toEqual([
      { op: 'add', region: { address: 0x1000, size: PAGE, buffer: sab, offset: 0 } },
      { op: 'remove', address: 0x1000, size: PAGE },
    ]);
    expect(other).toEqual(['add', 'remove']);
  });

  it('marks a removal pinned when a watcher could not follow; stops calling an unsubscribed watcher', () => {
    const sab = new SharedArrayBuffer(4 * PAGE);
    const mem = new GuestMemory();
    const seen: MemoryChange[] = [];
    let answer = true;
    const stop = mem.watch((c) => {
      seen.push(c);
      return answer;
    });
    mem.addRegion({ address: 0x1000, bytes: new Uint8Array(sab, 0, PAGE) });
    mem.addRegion({ address: 0x3000, bytes: new Uint8Array(sab, PAGE, PAGE) });
    expect(mem.removeRegion(0x1000)).toBe(true);
    expect(mem.lastRemovalPinned).toBe(false);
    answer = false;
    expect(mem.removeRegion(0x3000)).toBe(true);
    expect(mem.lastRemovalPinned).toBe(true);
    // No such region: nothing announced, nothing pinned.
    expect(mem.removeRegion(0x5000)).toBe(false);
    expect(mem.lastRemovalPinned).toBe(false);
    expect(seen.map((c) => `${c.op}:${c.op === 'add' ? c.region?.address : c.address}`)).toEqual([
      'add:4096',
      'add:12288',
      'remove:4096',
      'remove:12288',
    ]);
    // A region no other thread can view is announced as null (the pool refuses it).
    answer = true;
    mem.addRegion({ address: 0x8000, bytes: new Uint8Array(PAGE) });
    expect(seen.at(-1)).toEqual({ op: 'add', region: null });
    stop();
    mem.removeRegion(0x8000);
    expect(seen).toHaveLength(5);
  });
});

describe('native views (devices/virtio-net/workers/memory.ts)', () => {
  it('a WorkerMemory views the same mmap at its host address: writes on either side are seen on the other', () => {
    const m = anon(2 * PAGE);
    const main = new GuestMemory([{ address: 0x40000, bytes: m.bytes, host: m.host }]);
    main.write(0x40010, Uint8Array.of(1, 2, 3, 4));
    const w = new WorkerMemory(main.threadRegions()!);
    expect(hex(w.memory.read(0x40010, 4))).toBe('01020304');
    w.memory.writeU32(0x41ffc, 0xdeadbeef);
    expect(main.readU32(0x41ffc)).toBe(0xdeadbeef);
    // Removal then add of the same range (an unmap and a map again): the old view is gone from it.
    const n = anon(PAGE);
    n.bytes[0] = 0x77;
    w.apply([{ address: 0x40000, size: PAGE, host: n.host }], [0x40000]);
    expect(w.memory.readU8(0x40000)).toBe(0x77);
    expect(w.memory.isValid(0x41000, 1)).toBe(false);
    expect(() => w.apply([{ address: 0x40000, size: PAGE, host: n.host }], [])).toThrow(GuestMemoryError);
    expect(() => viewRegion({ address: 0, size: PAGE, host: 0 })).toThrow(RangeError);
    sys.munmap(m.ptr, 2 * PAGE);
    sys.munmap(n.ptr, PAGE);
  });

  it('a worker thread views a native region through koffi and writes into it', async () => {
    const m = anon(PAGE);
    m.bytes.set([9, 8, 7, 6], 100);
    const ts = JSON.stringify(new URL('./memory.ts', import.meta.url).href);
    const api = JSON.stringify(import.meta.resolve('tsx/esm/api'));
    const code = `
      const { parentPort, workerData } = require('node:worker_threads');
      import(${api}).then(({ tsImport }) => tsImport(${ts}, ${ts})).then(({ WorkerMemory }) => {
        const w = new WorkerMemory(workerData.regions);
        const got = Array.from(w.memory.read(0x9000 + 100, 4));
        w.memory.write(0x9000 + 200, Uint8Array.of(0xaa, 0xbb));
        parentPort.postMessage(got);
      });`;
    const worker = new Worker(code, {
      eval: true,
      workerData: { regions: [{ address: 0x9000, size: PAGE, host: m.host }] },
    });
    const got = await new Promise((resolve, reject) => {
      worker.once('message', resolve);
      worker.once('error', reject);
    });
    await new Promise((r) => worker.once('exit', r));
    expect(got).toEqual([9, 8, 7, 6]);
    expect(hex(m.bytes.subarray(200, 202))).toBe('aabb');
    sys.munmap(m.ptr, PAGE);
  });
});

describe('DMA mappings a worker could not release (lib/vfio-user/dma.ts)', () => {
  function memfd(size: number): number {
    return sys.memfdCreate('vfu-pin-test', size);
  }
  const mapsOf = () =>
    readFileSync('/proc/self/maps', 'utf8')
      .split('\n')
      .filter((l) => l.includes('memfd:vfu-pin-test')).length;

  it('hands the host address to guest memory; pins a refused removal (file released, never unmapped) and caps pins', () => {
    const mem = new GuestMemory();
    const seen: MemoryChange[] = [];
    let answer = true;
    mem.watch((c) => {
      seen.push(c);
      return answer;
    });
    const d = new DmaMappings(mem, 1000);
    d.map(0x100000n, 2n * BigInt(PAGE), 0n, 3, memfd(2 * PAGE));
    const region = mem.threadRegions()![0]!;
    expect('host' in region && region.host > 0).toBe(true);
    expect(seen).toEqual([{ op: 'add', region }]);
    mem.writeU32(0x100000, 0x12345678);
    answer = false;
    d.unmap(0x100000n, 2n * BigInt(PAGE));
    expect(d.pinned).toBe(1);
    // The guest's file is not mapped any more: the range is anonymous scratch, kept for good.
    expect(mapsOf()).toBe(0);
    // A map a watcher refuses is refused (and its chunk pinned too).
    let err: unknown;
    try {
      d.map(0x200000n, BigInt(PAGE), 0n, 3, memfd(PAGE));
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(DmaError);
    expect((err as DmaError).errno).toBe(Errno.EINVAL);
    expect(d.count).toBe(0);
    expect(d.pinned).toBe(2);
    // The cap: past MAX_PINNED pinned chunks every DMA_MAP with a file is refused (ENOSPC), so a
    // map/unmap storm against a worker that never answers stays bounded.
    answer = true;
    for (let i = d.pinned; i < MAX_PINNED; i++) {
      d.map(0x300000n, BigInt(PAGE), 0n, 3, memfd(PAGE));
      answer = false;
      d.unmap(0x300000n, BigInt(PAGE));
      answer = true;
    }
    expect(d.pinned).toBe(MAX_PINNED);
    const fd = memfd(PAGE);
    try {
      d.map(0x300000n, BigInt(PAGE), 0n, 3, fd);
      expect.unreachable();
    } catch (e) {
      expect((e as DmaError).errno).toBe(Errno.ENOSPC);
    }
    expect(mapsOf()).toBe(0);
  });
});
