/**
 * Guest physical memory as a set of non-overlapping regions, each a `Uint8Array` (ArrayBuffer,
 * SharedArrayBuffer, or external memory such as `koffi.view` of an mmap). Every access is bounds-checked
 * and fails with a typed `GuestMemoryError`; accessors are little-endian as virtio requires (VIRTIO 1.3 §1.4).
 *
 * Addresses are `number | bigint`. The number path is the fast one: one cached last-hit region and one
 * `DataView` per region, no allocation in the 16/32-bit accessors. Addresses must be below 2^53 (the range
 * a `number` holds exactly); anything above, or `address + length` beyond 2^64, is a `GuestMemoryError`.
 *
 * A region may follow a buffer that is replaced while the VM runs (a growing `WebAssembly.Memory`
 * detaches its old `ArrayBuffer`): the fast paths compare against the view's own length, which reads 0
 * once its buffer is detached, so a stale view falls to the slow path, which views the current buffer.
 * An optional write hook tells a VMM with a JIT which guest bytes the device wrote.
 */
import { GuestMemoryError } from '../errors.js';
import type {
  GrowableMemoryRegion,
  GuestMemoryOptions,
  GuestMemoryRegion,
  MemoryWatcher,
  ThreadRegion,
} from './regions.js';
import {
  checkLength,
  checkRange,
  describe,
  MAX_ADDRESS_BIG,
  readScalar,
  toNumber,
  writeScalar,
} from './scalar.js';
import { threadRegionOf, Watchers } from './watchers.js';

export type {
  GrowableMemoryRegion,
  GuestMemoryOptions,
  GuestMemoryRegion,
  MemoryChange,
  MemoryWatcher,
  ThreadRegion,
} from './regions.js';
export { readAddress } from './scalar.js';

interface Region {
  start: number;
  size: number;
  bytes: Uint8Array;
  dv: DataView;
  /** Growable regions: the current buffer and where the region starts in it; null for fixed bytes. */
  source: (() => ArrayBufferLike) | null;
  offset: number;
  /** GuestMemoryRegion.host, or -1. */
  host: number;
}

const NO_REGION: Region = {
  start: 0,
  size: 0,
  bytes: new Uint8Array(0),
  dv: new DataView(new ArrayBuffer(0)),
  source: null,
  offset: 0,
  host: -1,
};

/** Guest memory: bounds-checked little-endian access to the regions the VMM registered. */
export class GuestMemory {
  /** Sorted by start address. */
  private regions: Region[] = [];
  private last: Region = NO_REGION;
  private readonly translateFn: ((address: number, length: number, write: boolean) => number) | undefined;
  private readonly onWrite: ((address: number, length: number) => void) | undefined;
  /** How many times a growable region was re-viewed over a new buffer. */
  remaps = 0;
  /**
   * Set by each `removeRegion`: a watcher could not confirm that its thread dropped its view of the
   * region, so the memory must stay mapped (lib/vfio-user/dma.ts keeps it for good). Also set when a
   * refused `addRegion` was undone. A result field, as `locatedOffset`.
   */
  lastRemovalPinned = false;
  private readonly watchers = new Watchers();

  constructor(regions: (GuestMemoryRegion | GrowableMemoryRegion)[] = [], options: GuestMemoryOptions = {}) {
    this.translateFn = options.translate;
    this.onWrite = options.onWrite;
    for (const r of regions) this.addRegion(r);
  }

  /** Registers a region (vfio-user DMA_MAP); throws `GuestMemoryError` if it overlaps another one. */
  addRegion(region: GuestMemoryRegion | GrowableMemoryRegion): void {
    this.lastRemovalPinned = false;
    let source: (() => ArrayBufferLike) | null = null;
    let bytes: Uint8Array;
    let offset = 0;
    let host = -1;
    if ('bytes' in region) {
      bytes = region.bytes;
      if (region.host !== undefined) {
        if (!Number.isSafeInteger(region.host) || region.host <= 0) {
          throw new GuestMemoryError(`region host address ${region.host} invalid`, region.address, 0);
        }
        host = region.host;
      }
    } else {
      const b = region.buffer;
      source = typeof b === 'function' ? b : () => b.buffer;
      offset = region.offset;
      if (
        !Number.isSafeInteger(offset) ||
        offset < 0 ||
        !Number.isSafeInteger(region.size) ||
        region.size < 0
      ) {
        throw new GuestMemoryError(
          `growable region offset ${offset} / size ${region.size} invalid`,
          region.address,
          0,
        );
      }
      try {
        bytes = new Uint8Array(source(), offset, region.size);
      } catch (e) {
        throw new GuestMemoryError(
          `growable region [${offset}, +${region.size}) is outside its buffer: ${(e as Error).message}`,
          region.address,
          region.size,
        );
      }
    }
    const size = bytes.byteLength;
    const start = checkRange(region.address, size);
    const rs = this.regions;
    // Sorted and disjoint: find the first region starting after `start`; only the region before it
    // (or several, past zero-sized ones) and those starting inside the new range can overlap.
    let lo = 0;
    let hi = rs.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (rs[mid]!.start <= start) lo = mid + 1;
      else hi = mid;
    }
    const overlap = (r: Region) => start < r.start + r.size && r.start < start + size;
    let clash: Region | undefined;
    for (let i = lo - 1; i >= 0 && clash === undefined; i--) {
      const r = rs[i]!;
      if (overlap(r)) clash = r;
      else if (r.size > 0) break;
    }
    for (let i = lo; i < rs.length && clash === undefined && rs[i]!.start < start + size; i++) {
      if (overlap(rs[i]!)) clash = rs[i];
    }
    if (clash !== undefined) {
      throw new GuestMemoryError(
        `guest memory region ${describe(start, size)} overlaps region ${describe(clash.start, clash.size)}`,
        region.address,
        size,
      );
    }
    const dv = new DataView(bytes.buffer, bytes.byteOffset, size);
    rs.splice(lo, 0, { start, size, bytes, dv, source, offset, host });
    this.last = NO_REGION;
    if (this.watchers.size === 0) return;
    const hooks = this.translateFn !== undefined || this.onWrite !== undefined;
    const shared = hooks ? null : threadRegionOf(start, size, bytes, source !== null, host);
    if (!this.watchers.notify({ op: 'add', region: shared })) {
      this.removeRegion(start);
      throw new GuestMemoryError(
        `guest memory region ${describe(start, size)} refused: a thread viewing guest memory could not map it`,
        region.address,
        size,
      );
    }
  }

  /** Unregisters the region starting at `address` (vfio-user DMA_UNMAP); false if there is none. */
  removeRegion(address: number | bigint): boolean {
    const a = typeof address === 'bigint' ? (address <= MAX_ADDRESS_BIG ? Number(address) : -1) : address;
    const rs = this.regions;
    let lo = 0;
    let hi = rs.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (rs[mid]!.start < a) lo = mid + 1;
      else hi = mid;
    }
    this.lastRemovalPinned = false;
    if (lo >= rs.length || rs[lo]!.start !== a) return false;
    const [r] = rs.splice(lo, 1);
    this.last = NO_REGION;
    if (this.watchers.size > 0 && !this.watchers.notify({ op: 'remove', address: a, size: r!.size })) {
      this.lastRemovalPinned = true;
    }
    return true;
  }

  /**
   * Every region as another thread can view it (a SharedArrayBuffer, or the native address of an mmap
   * with `host`), for queue-pair workers; null when one cannot be (growable, ArrayBuffer bytes) or the
   * memory translates or reports writes (hooks of this thread).
   */
  threadRegions(): ThreadRegion[] | null {
    if (this.translateFn !== undefined || this.onWrite !== undefined) return null;
    const out: ThreadRegion[] = [];
    for (const r of this.regions) {
      const t = threadRegionOf(r.start, r.size, r.bytes, r.source !== null, r.host);
      if (t === null) return null;
      out.push(t);
    }
    return out;
  }

  /**
   * Calls `listener` synchronously on every later region add and removal (vfio-user DMA_MAP / DMA_UNMAP),
   * before `addRegion`/`removeRegion` return; see `MemoryWatcher` for what its result means. Returns the
   * function that stops watching.
   */
  watch(listener: MemoryWatcher): () => void {
    return this.watchers.add(listener);
  }

  /** Whether `[address, address + length)` lies entirely in guest memory (possibly across adjacent regions). */
  isValid(address: number | bigint, length: number): boolean {
    if (typeof address === 'number' && this.translateFn === undefined) {
      const r = this.last;
      const off = address - r.start;
      if (off >>> 0 === off && length >>> 0 === length && off + length <= r.bytes.length) return true;
    }
    try {
      const a = this.resolve(address, length, false);
      return this.coveredLength(a, length) === length;
    } catch (e) {
      if (e instanceof GuestMemoryError) return false;
      throw e;
    }
  }

  /** A copy of `length` bytes at `address`; the range may span adjacent regions. */
  read(address: number | bigint, length: number): Uint8Array {
    const out = new Uint8Array(checkLength(address, length));
    this.readInto(address, out);
    return out;
  }

  /** Copies `dst.length` bytes at `address` into `dst`. */
  readInto(address: number | bigint, dst: Uint8Array): void {
    const length = dst.length;
    if (typeof address === 'number' && this.translateFn === undefined) {
      const r = this.last;
      const off = address - r.start;
      if (off >>> 0 === off && off + length <= r.bytes.length) {
        dst.set(r.bytes.subarray(off, off + length));
        return;
      }
    }
    const a = this.resolve(address, length, false);
    this.requireCovered(address, a, length);
    let done = 0;
    while (done < length) {
      const r = this.find(a + done)!;
      const off = a + done - r.start;
      const n = Math.min(length - done, r.size - off);
      dst.set(r.bytes.subarray(off, off + n), done);
      done += n;
    }
  }

  /** Writes `data` at `address`; the range may span adjacent regions. Nothing is written if it is invalid. */
  write(address: number | bigint, data: Uint8Array): void {
    const length = data.length;
    if (typeof address === 'number' && this.translateFn === undefined) {
      const r = this.last;
      const off = address - r.start;
      if (off >>> 0 === off && off + length <= r.bytes.length) {
        r.bytes.set(data, off);
        if (this.onWrite !== undefined && length > 0) this.onWrite(address, length);
        return;
      }
    }
    const a = this.resolve(address, length, true);
    this.requireCovered(address, a, length);
    let done = 0;
    while (done < length) {
      const r = this.find(a + done)!;
      const off = a + done - r.start;
      const n = Math.min(length - done, r.size - off);
      r.bytes.set(n === length ? data : data.subarray(done, done + n), off);
      done += n;
    }
    if (this.onWrite !== undefined && length > 0) this.onWrite(a, length);
  }

  /**
   * Reports that `[address, address + length)` was written through bytes from `locate(…, true)` (direct
   * receive), so the write hook sees it; nothing without a hook.
   */
  noteWritten(address: number | bigint, length: number): void {
    if (this.onWrite === undefined || length <= 0) return;
    this.onWrite(this.resolve(address, length, true), length);
  }

  /**
   * Writes `src[srcOffset, srcOffset + length)` at `address`. No view of `src` is made when it is the
   * whole of `src`, or when `src` is the bytes of the region written to (a frame copied from guest memory
   * into guest memory, as the SR-IOV switch does: copyWithin, which allows overlap); otherwise as `write`
   * of a view. The caller checked `srcOffset` and `length` against `src`.
   */
  writeRange(address: number | bigint, src: Uint8Array, srcOffset: number, length: number): void {
    if (srcOffset === 0 && length === src.length) {
      this.write(address, src);
      return;
    }
    if (typeof address === 'number' && this.translateFn === undefined) {
      const r = this.last;
      const off = address - r.start;
      if (src === r.bytes && off >>> 0 === off && off + length <= r.size) {
        r.bytes.copyWithin(off, srcOffset, srcOffset + length);
        if (this.onWrite !== undefined && length > 0) this.onWrite(address, length);
        return;
      }
    }
    this.write(address, src.subarray(srcOffset, srcOffset + length));
  }

  /** A live view (no copy) of a range inside one region; throws if the range is invalid or spans regions. */
  view(address: number | bigint, length: number): Uint8Array {
    const v = this.tryView(address, length);
    if (v === null) {
      throw new GuestMemoryError(
        `guest memory range ${describe(address, length)} spans regions; use read/readInto`,
        address,
        length,
      );
    }
    return v;
  }

  /**
   * Offset of `[address, address + length)` inside the region bytes `locate` returned last, in
   * `locatedOffset`. Split from the return value so hot paths allocate nothing.
   */
  locatedOffset = 0;

  /**
   * Where a range lives, without a view: the whole region's bytes (the same array every time), with the
   * range at `locatedOffset` in it. Null when the range is valid but spans regions; throws when invalid.
   * For zero-copy hand-offs that must not allocate (NetBackend.transmitRange, direct receive); `write`
   * is passed to the IOMMU translation.
   */
  locate(address: number | bigint, length: number, write = false): Uint8Array | null {
    if (typeof address === 'number' && this.translateFn === undefined) {
      const r = this.last;
      const off = address - r.start;
      if (off >>> 0 === off && length >>> 0 === length && off + length <= r.bytes.length) {
        this.locatedOffset = off;
        return r.bytes;
      }
    }
    const a = this.resolve(address, length, write);
    const r = this.find(a);
    if (r !== undefined && a + length <= r.start + r.size) {
      this.locatedOffset = a - r.start;
      return r.bytes;
    }
    this.requireCovered(address, a, length);
    return null;
  }

  /** Like `view`, but null when the range is valid yet spans regions. Throws when it is invalid. */
  tryView(address: number | bigint, length: number): Uint8Array | null {
    const bytes = this.locate(address, length);
    if (bytes === null) return null;
    const off = this.locatedOffset;
    return bytes.subarray(off, off + length);
  }

  readU8(address: number | bigint): number {
    if (typeof address === 'number' && this.translateFn === undefined) {
      const r = this.last;
      const off = address - r.start;
      if (off >>> 0 === off && off < r.bytes.length) return r.bytes[off]!;
    }
    return this.slowRead(address, 1) as number;
  }

  readU16(address: number | bigint): number {
    if (typeof address === 'number' && this.translateFn === undefined) {
      const r = this.last;
      const off = address - r.start;
      if (off >>> 0 === off && off + 2 <= r.bytes.length) return r.dv.getUint16(off, true);
    }
    return this.slowRead(address, 2) as number;
  }

  readU32(address: number | bigint): number {
    if (typeof address === 'number' && this.translateFn === undefined) {
      const r = this.last;
      const off = address - r.start;
      if (off >>> 0 === off && off + 4 <= r.bytes.length) return r.dv.getUint32(off, true);
    }
    return this.slowRead(address, 4) as number;
  }

  readU64(address: number | bigint): bigint {
    if (typeof address === 'number' && this.translateFn === undefined) {
      const r = this.last;
      const off = address - r.start;
      if (off >>> 0 === off && off + 8 <= r.bytes.length) return r.dv.getBigUint64(off, true);
    }
    return this.slowRead(address, 8) as bigint;
  }

  writeU8(address: number | bigint, value: number): void {
    if (typeof address === 'number' && this.translateFn === undefined) {
      const r = this.last;
      const off = address - r.start;
      if (off >>> 0 === off && off < r.bytes.length) {
        r.bytes[off] = value;
        if (this.onWrite !== undefined) this.onWrite(address, 1);
        return;
      }
    }
    this.slowWrite(address, 1, value);
  }

  writeU16(address: number | bigint, value: number): void {
    if (typeof address === 'number' && this.translateFn === undefined) {
      const r = this.last;
      const off = address - r.start;
      if (off >>> 0 === off && off + 2 <= r.bytes.length) {
        r.dv.setUint16(off, value, true);
        if (this.onWrite !== undefined) this.onWrite(address, 2);
        return;
      }
    }
    this.slowWrite(address, 2, value);
  }

  writeU32(address: number | bigint, value: number): void {
    if (typeof address === 'number' && this.translateFn === undefined) {
      const r = this.last;
      const off = address - r.start;
      if (off >>> 0 === off && off + 4 <= r.bytes.length) {
        r.dv.setUint32(off, value, true);
        if (this.onWrite !== undefined) this.onWrite(address, 4);
        return;
      }
    }
    this.slowWrite(address, 4, value);
  }

  /** Writes a 64-bit value; a number must be a non-negative integer below 2^53, a bigint is taken mod 2^64. */
  writeU64(address: number | bigint, value: bigint | number): void {
    if (typeof value === 'number') {
      if (!Number.isSafeInteger(value) || value < 0) {
        throw new GuestMemoryError(`writeU64 value ${value} is not an integer in [0, 2^53)`, address, 8);
      }
    }
    this.slowWrite(address, 8, value);
  }

  // ---- slow paths -------------------------------------------------------------------------------------

  /** Address checks and IOMMU translation; returns the guest-physical start address. */
  private resolve(address: number | bigint, length: number, write: boolean): number {
    const a = toNumber(address, length);
    const tr = this.translateFn;
    if (tr === undefined) return a;
    let t: number;
    try {
      t = tr(a, length, write);
    } catch (e) {
      if (e instanceof GuestMemoryError) throw e;
      throw new GuestMemoryError(
        `address translation of ${describe(address, length)} failed: ${(e as Error)?.message ?? e}`,
        address,
        length,
      );
    }
    if (typeof t !== 'number' || !Number.isSafeInteger(t) || t < 0) {
      throw new GuestMemoryError(
        `address translation of ${describe(address, length)} returned ${t}`,
        address,
        length,
      );
    }
    return t;
  }

  /** The region containing guest-physical `a`, or undefined. Updates the last-hit cache. */
  private find(a: number): Region | undefined {
    const rs = this.regions;
    let lo = 0;
    let hi = rs.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const r = rs[mid]!;
      if (a < r.start) hi = mid - 1;
      else if (a >= r.start + r.size) lo = mid + 1;
      else {
        // A growable region whose buffer was replaced: its view reads length 0 (detached) or short.
        if (r.bytes.length !== r.size) this.remap(r);
        this.last = r;
        return r;
      }
    }
    return undefined;
  }

  /** Views a growable region over its current buffer; a fixed region whose bytes went away throws. */
  private remap(r: Region): void {
    const src = r.source;
    let bytes: Uint8Array | null = null;
    if (src !== null) {
      try {
        const buf = src();
        if (r.offset + r.size <= buf.byteLength) bytes = new Uint8Array(buf, r.offset, r.size);
      } catch {
        bytes = null;
      }
    }
    if (bytes === null) {
      throw new GuestMemoryError(
        `guest memory region ${describe(r.start, r.size)} has no buffer (detached or shrunk)`,
        r.start,
        r.size,
      );
    }
    r.bytes = bytes;
    r.dv = new DataView(bytes.buffer, bytes.byteOffset, r.size);
    this.remaps++;
  }

  /** How many bytes from guest-physical `a` are covered by adjacent regions, up to `length`. */
  private coveredLength(a: number, length: number): number {
    if (length === 0) return 0;
    let done = 0;
    // At most one iteration per region: the loop is bounded.
    for (let i = 0; i <= this.regions.length && done < length; i++) {
      const r = this.find(a + done);
      if (r === undefined) return done;
      done += Math.min(length - done, r.start + r.size - (a + done));
    }
    return done;
  }

  private requireCovered(address: number | bigint, a: number, length: number): void {
    if (this.coveredLength(a, length) !== length) {
      throw new GuestMemoryError(
        `guest memory range ${describe(address, length)} is not in guest memory`,
        address,
        length,
      );
    }
  }

  private readonly scratch = new Uint8Array(8);
  private readonly scratchView = new DataView(this.scratch.buffer);

  private slowRead(address: number | bigint, size: 1 | 2 | 4 | 8): number | bigint {
    const a = this.resolve(address, size, false);
    const r = this.find(a);
    if (r !== undefined && a + size <= r.start + r.size) return readScalar(r.dv, a - r.start, size);
    // Spans adjacent regions: go through the scratch buffer.
    this.requireCovered(address, a, size);
    const s = this.scratch.subarray(0, size);
    let done = 0;
    while (done < size) {
      const q = this.find(a + done)!;
      s[done] = q.bytes[a + done - q.start]!;
      done++;
    }
    return readScalar(this.scratchView, 0, size);
  }

  private slowWrite(address: number | bigint, size: 1 | 2 | 4 | 8, value: number | bigint): void {
    const a = this.resolve(address, size, true);
    const r = this.find(a);
    if (r !== undefined && a + size <= r.start + r.size) {
      writeScalar(r.dv, a - r.start, size, value);
    } else {
      this.requireCovered(address, a, size);
      writeScalar(this.scratchView, 0, size, value);
      for (let done = 0; done < size; done++) {
        const q = this.find(a + done)!;
        q.bytes[a + done - q.start] = this.scratch[done]!;
      }
    }
    if (this.onWrite !== undefined) this.onWrite(a, size);
  }
}
