/**
 * A single-producer single-consumer ring of frames on a SharedArrayBuffer, so that frames and their
 * offload metadata cross between threads without a message per frame (docs/workers.md, MemoryBackend in
 * worker mode). Each record is `[length u32][offload 16 bytes][frame]`, padded to 4 bytes and contiguous:
 * a record that would wrap is preceded by a wrap marker and starts again at 0. The producer owns `HEAD`,
 * the consumer `TAIL` (byte counters modulo 2^32, published with Atomics). The only allocation per frame
 * is the producer's source view for the copy (`subarray`: typed arrays have no ranged copy without one).
 */
import { emptyOffload, type NetOffload } from './backend.js';

const HEAD = 0;
const TAIL = 1;
/** Int32 words before the data. */
const WORDS = 2;
/** Length prefix + offload fields. */
export const RECORD_HEADER = 20;
const WRAP = 0xffffffff;
/** Bit of the flags byte: the frame carries offload metadata (not null). */
const HAS_OFFLOAD = 1;
const HAS_TUNNEL = 2;

const pad4 = (n: number) => (n + 3) & ~3;

export class FrameRing {
  /** The ring's bytes (data at `base`); a consumer reads frames in place from it. */
  readonly bytes: Uint8Array;
  readonly capacity: number;
  private readonly idx: Int32Array;
  private readonly view: DataView;
  private readonly base = 4 * WORDS;
  /** Set by `next`: where the frame lies in `bytes`, and its metadata (`offload` valid when `hasOffload`). */
  frameOffset = 0;
  frameLength = 0;
  hasOffload = false;
  readonly offload: NetOffload = emptyOffload();
  /** Bytes of the record `next` found, so that `consume` moves past it. */
  private pending = 0;

  /** A ring over `buffer` (from `FrameRing.allocate`, possibly made on another thread). */
  constructor(readonly buffer: SharedArrayBuffer) {
    this.idx = new Int32Array(buffer, 0, WORDS);
    this.capacity = buffer.byteLength - 4 * WORDS;
    this.bytes = new Uint8Array(buffer);
    this.view = new DataView(buffer);
  }

  /**
   * The shared memory of a ring holding at least `dataBytes` of records: a power of two, so that the
   * positions (counters modulo 2^32) stay consistent when the counters wrap.
   */
  static allocate(dataBytes: number): SharedArrayBuffer {
    let n = 64;
    while (n < dataBytes) n *= 2;
    return new SharedArrayBuffer(4 * WORDS + n);
  }

  /** The most bytes a record of a `length`-byte frame takes, wrap marker included. */
  static recordBytes(length: number): number {
    return pad4(RECORD_HEADER + length);
  }

  /** Bytes in use (written, not consumed). */
  get used(): number {
    return (Atomics.load(this.idx, HEAD) - Atomics.load(this.idx, TAIL)) >>> 0;
  }

  /** Whether a frame of `length` bytes fits now, wherever the write position is. */
  fits(length: number): boolean {
    return this.room(Atomics.load(this.idx, HEAD) >>> 0, FrameRing.recordBytes(length)) >= 0;
  }

  /** Where a record of `need` bytes goes (-1: no room), given the producer's head. */
  private room(head: number, need: number): number {
    const free = this.capacity - ((head - Atomics.load(this.idx, TAIL)) >>> 0);
    const at = head % this.capacity;
    const tail = this.capacity - at;
    if (need <= tail) return need <= free ? at : -1;
    // Skip the end (a wrap marker, when there is room for it) and start at 0.
    return need + tail <= free ? 0 : -1;
  }

  /**
   * Producer: appends `bytes[offset, offset + length)` with `offload` (null: none). False, and nothing
   * written, when it does not fit now.
   */
  write(bytes: Uint8Array, offset: number, length: number, offload: NetOffload | null): boolean {
    return this.put(bytes, offset, length, offload, false, 0, 0);
  }

  /**
   * `write` with two u32 words of the producer's own before the frame: the record's payload is
   * `[a][b][frame]` (the consumer reads them at `frameOffset`, the frame 8 bytes after).
   */
  writeTagged(
    a: number,
    b: number,
    bytes: Uint8Array,
    offset: number,
    length: number,
    offload: NetOffload | null,
  ): boolean {
    return this.put(bytes, offset, length, offload, true, a, b);
  }

  private put(
    bytes: Uint8Array,
    offset: number,
    frameLength: number,
    offload: NetOffload | null,
    tagged: boolean,
    a: number,
    b: number,
  ): boolean {
    const length = tagged ? frameLength + 8 : frameLength;
    const head = Atomics.load(this.idx, HEAD) >>> 0;
    const need = FrameRing.recordBytes(length);
    const at = this.room(head, need);
    if (at < 0) return false;
    const v = this.view;
    const here = head % this.capacity;
    let skip = 0;
    if (at !== here) {
      skip = this.capacity - here;
      if (skip >= 4) v.setUint32(this.base + here, WRAP, true);
    }
    const p = this.base + at;
    v.setUint32(p, length, true);
    if (offload) {
      const tunnel = offload.outerThOffset !== undefined && offload.innerNhOffset !== undefined;
      v.setUint8(p + 4, HAS_OFFLOAD | (tunnel ? HAS_TUNNEL : 0));
      v.setUint8(p + 5, offload.flags);
      v.setUint8(p + 6, offload.gsoType);
      v.setUint16(p + 8, offload.hdrLen, true);
      v.setUint16(p + 10, offload.gsoSize, true);
      v.setUint16(p + 12, offload.csumStart, true);
      v.setUint16(p + 14, offload.csumOffset, true);
      v.setUint16(p + 16, tunnel ? (offload.outerThOffset as number) : 0, true);
      v.setUint16(p + 18, tunnel ? (offload.innerNhOffset as number) : 0, true);
    } else v.setUint8(p + 4, 0);
    let data = p + RECORD_HEADER;
    if (tagged) {
      v.setUint32(data, a >>> 0, true);
      v.setUint32(data + 4, b >>> 0, true);
      data += 8;
    }
    if (offset === 0 && frameLength === bytes.length) this.bytes.set(bytes, data);
    else this.bytes.set(bytes.subarray(offset, offset + frameLength), data);
    // Publish after the bytes (Atomics are sequentially consistent).
    Atomics.store(this.idx, HEAD, (head + skip + need) | 0);
    return true;
  }

  /** Consumer: finds the next frame (`frameOffset`, `frameLength`, offload); false when empty. */
  next(): boolean {
    let tail = Atomics.load(this.idx, TAIL) >>> 0;
    const head = Atomics.load(this.idx, HEAD) >>> 0;
    if (tail === head) return false;
    const v = this.view;
    let at = tail % this.capacity;
    const left = this.capacity - at;
    if (left < RECORD_HEADER || v.getUint32(this.base + at, true) === WRAP) {
      tail = (tail + left) >>> 0;
      Atomics.store(this.idx, TAIL, tail | 0);
      if (tail === head) return false;
      at = 0;
    }
    const p = this.base + at;
    const length = v.getUint32(p, true);
    const flags = v.getUint8(p + 4);
    this.frameOffset = p + RECORD_HEADER;
    this.frameLength = length;
    this.pending = FrameRing.recordBytes(length);
    this.hasOffload = (flags & HAS_OFFLOAD) !== 0;
    if (this.hasOffload) {
      const o = this.offload;
      o.flags = v.getUint8(p + 5);
      o.gsoType = v.getUint8(p + 6);
      o.hdrLen = v.getUint16(p + 8, true);
      o.gsoSize = v.getUint16(p + 10, true);
      o.csumStart = v.getUint16(p + 12, true);
      o.csumOffset = v.getUint16(p + 14, true);
      const tunnel = (flags & HAS_TUNNEL) !== 0;
      o.outerThOffset = tunnel ? v.getUint16(p + 16, true) : undefined;
      o.innerNhOffset = tunnel ? v.getUint16(p + 18, true) : undefined;
    }
    return true;
  }

  /** Consumer: frees the frame `next` found (its bytes may be overwritten from now on). */
  consume(): void {
    const tail = Atomics.load(this.idx, TAIL) >>> 0;
    Atomics.store(this.idx, TAIL, (tail + this.pending) | 0);
    this.pending = 0;
  }

  /** Consumer: drops every frame; returns how many. */
  discard(): number {
    let n = 0;
    while (this.next()) {
      this.consume();
      n++;
    }
    return n;
  }
}
