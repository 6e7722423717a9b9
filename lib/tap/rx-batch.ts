/**
 * Batched tap reads for TapRx: n `IORING_OP_READ` with RWF_NOWAIT, one per slot of a buffer of ours,
 * submitted with one `io_uring_enter`. tun honours RWF_NOWAIT (verified on 6.18), so every read completes
 * inside that call, with a frame or -EAGAIN: when it returns no read is left armed, and no read ever
 * targets guest memory (the device copies each frame out of its slot). See docs/backends.md.
 */
import { BackendError } from '../errors.js';
import { IoUring, RWF_NOWAIT } from '../host/io-uring.js';
import type { Libc } from '../host/libc.js';
import { MAX_FRAME } from '../net/backend.js';

/** Reads per submission at most (the enter's fixed cost, ~2 µs through koffi here, spread over 64). */
export const RX_BATCH = 64;
/** Frame views cached over all slots before the cache starts again (bounds it against varied lengths). */
const MAX_VIEWS = 4096;
/** One slot holds the largest frame a tap hands over (64 KiB GSO) behind the largest vnet header (24). */
export const RX_SLOT = (24 + MAX_FRAME + 63) & ~63;

/** The ring and slots of one TapRx (its queues are drained one at a time, so they share them). */
export class RxBatch {
  /** The frames: slot i is `slots[i * RX_SLOT, (i + 1) * RX_SLOT)`; pages are touched only as written. */
  readonly slots: Uint8Array;
  /** Per completion of the last `read`: bytes read or -errno, and the slot it filled. */
  readonly res = new Int32Array(RX_BATCH);
  readonly slot = new Float64Array(RX_BATCH);
  private readonly slotsAddress: number;
  private ring: IoUring | null;
  /** Per slot, views of the frame bytes by (header size, length): receive gets a whole view, no copy. */
  private views: Uint8Array[][] = [];
  private viewCount = 0;
  private viewsHeader = -1;

  private constructor(
    c: Libc,
    ring: IoUring,
    private readonly error: (e: BackendError) => void,
  ) {
    this.ring = ring;
    this.slots = new Uint8Array(RX_BATCH * RX_SLOT);
    this.slotsAddress = c.addressOf(this.slots);
  }

  /**
   * `slots[slot * RX_SLOT + hs, … + hs + length)` as a view made once per (slot, length) and reused, so a
   * burst of like-sized frames allocates nothing. The cache starts over past MAX_VIEWS views.
   */
  frame(slot: number, hs: number, length: number): Uint8Array {
    if (hs !== this.viewsHeader || this.viewCount >= MAX_VIEWS) {
      this.views = [];
      this.viewCount = 0;
      this.viewsHeader = hs;
    }
    let bySlot = this.views[slot];
    if (bySlot === undefined) {
      bySlot = [];
      this.views[slot] = bySlot;
    }
    let v = bySlot[length];
    if (v === undefined) {
      const at = slot * RX_SLOT + hs;
      v = this.slots.subarray(at, at + length);
      bySlot[length] = v;
      this.viewCount++;
    }
    return v;
  }

  /** A batch reader, or null where io_uring is refused (the reason goes to `error` unless just unsupported). */
  static create(c: Libc, error: (e: BackendError) => void): RxBatch | null {
    if (IoUring.supported() !== null) return null;
    try {
      return new RxBatch(c, IoUring.create(RX_BATCH), error);
    } catch (e) {
      error(e instanceof BackendError ? e : new BackendError(String((e as Error)?.message ?? e)));
      return null;
    }
  }

  /** False once the ring failed (the caller reads one frame per call from then on). */
  get usable(): boolean {
    return this.ring !== null;
  }

  /**
   * Reads up to `n` (≤ RX_BATCH) frames from `fd` into slots 0..n-1; returns how many completions are in
   * `res`/`slot` (in the order the kernel ran the reads, which is the order of the tap's queue), or -1
   * when the ring failed (nothing was read; it is closed and `usable` is false).
   */
  read(fd: number, n: number): number {
    const ring = this.ring;
    if (ring === null) return -1;
    for (let i = 0; i < n; i++) ring.queueRead(fd, this.slotsAddress + i * RX_SLOT, RX_SLOT, i, RWF_NOWAIT);
    let got: number;
    try {
      ring.submit();
      got = ring.reap(this.res, this.slot);
    } catch (e) {
      this.fail(e instanceof BackendError ? e : new BackendError(String((e as Error)?.message ?? e)));
      return -1;
    }
    if (got < n) {
      // A read still armed (never seen: tun completes RWF_NOWAIT reads inline). Closing the ring cancels
      // it; it could only ever write into our slots, which live as long as this object.
      this.fail(new BackendError(`TapBackend: ${n - got} io_uring tap reads did not complete inline`));
    }
    return got;
  }

  /** Closes the ring (idempotent). */
  close(): void {
    this.ring?.close();
    this.ring = null;
  }

  private fail(e: BackendError): void {
    this.error(e);
    this.close();
  }
}
