/**
 * Receive (tap -> guest) for TapBackend. The queues' fds sit in this thread's poller (poller.ts); when
 * one is readable it is drained here with non-blocking reads, up to a budget. While frames keep coming
 * they are read in batches, many per io_uring submission into slots of ours (rx-batch.ts, `batchRx`).
 * A single read is a `readv(2)` straight into the guest's receive buffer when the device lends one
 * (BackendSink.lendReceive), with a reused buffer of ours as the overflow iovec so no frame is ever
 * truncated; otherwise a `read(2)` into that buffer and the device copies. `pause(qp)` takes the fd out
 * of the poll set (the kernel queues, then drops, as for a slow QEMU). The per-frame cost is at most one
 * FFI call and no allocation.
 */

import type { BackendError } from '../errors.js';
import { Errno, type Libc, POLLERR, POLLHUP, POLLNVAL } from '../host/libc.js';
import { type BackendSink, emptyOffload, MAX_FRAME, type NetOffload, ReceiveTarget } from '../net/backend.js';
import { readVnetHeader, VNET_HDR_OFFLOAD_BYTES } from '../net/vnet-header.js';
import { type HostAddresses, setIovec } from './iovec.js';
import { type TapStats, ZERO_COPY_RX_MIN_BYTES } from './options.js';
import { type PollEntry, type SharedPoller, sharedPoller } from './poller.js';
import { RX_BATCH, RX_SLOT, RxBatch } from './rx-batch.js';
import { isGoneErrno } from './tap-fd.js';

/** Frames read per ready fd before yielding back to the event loop. */
const RX_BUDGET = 256;
/**
 * Batches serve queues whose frames average less than this; larger ones (GSO bulk) are read one per
 * `readv` into lent guest buffers, where not copying them saves more than a syscall costs.
 */
export const BATCH_RX_MAX_AVERAGE = 8192;
/** What one read or batch ended with. */
const READ_FRAME = 1;
const READ_SKIP = 0;
const READ_STOP = -1;
const READ_GONE = -2;
/** What a ReceiveTarget slot holds between bursts (no guest region kept alive). */
const NO_BYTES = new Uint8Array(0);

/** Per queue pair state (transmit and the ioctls use `fd` and `attached` too). */
export interface TapQueue {
  fd: number;
  qp: number;
  paused: boolean;
  attached: boolean;
  drainScheduled: boolean;
  /** Still readable after a full budget: drained from setImmediate, out of the poll set meanwhile. */
  draining: boolean;
  /** Running average (1/8) of received frame lengths: small frames are cheaper to copy than to readv. */
  rxAverage: number;
  /** Reads the next batch submits (1: a single read; grows while every read finds a frame). */
  rxBatch: number;
  entry: PollEntry;
}

/** The receive half of a TapBackend; it owns the queue pairs' poll entries. */
export class TapRx {
  readonly queues: TapQueue[];
  /** The vnet header size on the fds (0 without IFF_VNET_HDR); see `setHeaderSize`. */
  hdrSize: number;
  /** TapOpenOptions.zeroCopy. */
  zeroCopy = true;
  /** TapOpenOptions.zeroCopyRxMinBytes. */
  zeroCopyRxMinBytes = ZERO_COPY_RX_MIN_BYTES;
  /** TapOpenOptions.batchRx. */
  batchRx = true;
  /** The backend is closed or its tap gone: nothing is read. */
  down = false;
  private sink: BackendSink | null = null;
  private poller: SharedPoller | undefined;
  /** Batched reads (created on first use; null where io_uring is refused or failed). */
  private batch: RxBatch | null | undefined;
  /** rx buffer: [vnet header][frame]; views over it are cached per length so receive allocates nothing. */
  private readonly rxBuf = new Uint8Array(VNET_HDR_OFFLOAD_BYTES + 10 + MAX_FRAME);
  private rxFrameViews: Uint8Array[] = [];
  private readonly rxOffload: NetOffload = emptyOffload();
  private readonly target = new ReceiveTarget();
  private readonly rxIov = new Uint32Array(4 * (ReceiveTarget.MAX_SEGMENTS + 1));
  /** Host address of rxBuf (0: not resolved yet); kept apart so the region cache stays hot. */
  private rxBufAddress = 0;
  /** Index of the overflow iovec last written into rxIov (-1: none). */
  private rxOverflowAt = -1;

  constructor(
    private readonly c: Libc,
    fds: readonly number[],
    private readonly s: TapStats,
    private readonly addresses: HostAddresses,
    /** A read found the tap deleted. */
    private readonly vanished: () => void,
    hdrSize: number,
    /** A failure worth keeping in `lastError` (io_uring refused or failed for batched reads). */
    private readonly error: (e: BackendError) => void = () => {},
  ) {
    this.hdrSize = hdrSize;
    this.queues = fds.map((fd, qp) => {
      const q: TapQueue = {
        fd,
        qp,
        paused: false,
        attached: true,
        drainScheduled: false,
        rxAverage: 0,
        rxBatch: 1,
        draining: false,
        entry: { fd, enabled: false, ready: (revents) => this.onReadable(q, revents) },
      };
      return q;
    });
  }

  /** Starts delivering to `sink`: the queues join the shared poller (unless the backend is down). */
  attach(sink: BackendSink): void {
    this.sink = sink;
    if (this.down) return;
    const p = sharedPoller(this.c);
    this.poller = p;
    for (const q of this.queues) {
      q.entry.enabled = !q.paused && q.attached;
      p.add(q.entry);
    }
  }

  /** Leaves the poller for good (the backend closes the fds next). */
  stop(): void {
    for (const q of this.queues) {
      q.entry.enabled = false;
      this.poller?.remove(q.entry);
    }
    this.batch?.close();
    this.batch = null;
  }

  /** A new header size (TUNSETVNETHDRSZ succeeded). */
  setHeaderSize(size: number): void {
    this.hdrSize = size;
    this.rxFrameViews = [];
  }

  pause(queuePair: number): void {
    const q = this.queues[queuePair];
    if (!q || q.paused) return;
    q.paused = true;
    this.updatePoll(q);
  }

  resume(queuePair: number): void {
    const q = this.queues[queuePair];
    if (!q?.paused) return;
    q.paused = false;
    this.updatePoll(q);
    // Frames queued while paused are readable now: drain on the next turn instead of waiting for the
    // poller's re-arm round trip (deferred, since the device may call resume from inside receive).
    this.scheduleDrain(q);
  }

  /** Puts `q` in or out of the poll set after its state changed. */
  updatePoll(q: TapQueue): void {
    const want = !q.paused && q.attached && !q.draining && this.sink !== null && !this.down;
    if (q.entry.enabled === want) return;
    q.entry.enabled = want;
    if (this.sink) this.poller?.changed(q.entry);
  }

  /** Drains `q` on the next turn of the event loop (coalesced). */
  private scheduleDrain(q: TapQueue): void {
    if (q.drainScheduled || !this.sink) return;
    q.drainScheduled = true;
    setImmediate(() => {
      q.drainScheduled = false;
      this.onReadable(q, 0, false);
    });
  }

  /**
   * Reads up to RX_BUDGET frames. A queue still readable after a full budget is drained again from
   * setImmediate (other I/O gets its turn, but no poll round trip through the worker per batch) and
   * only returns to the poll set once it reads EAGAIN.
   */
  private onReadable(q: TapQueue, revents: number, fromPoll = true): void {
    if (fromPoll) this.s.rxWakeups++;
    const full = this.readBatch(q, revents);
    if (full) {
      if (!q.draining) {
        q.draining = true;
        this.updatePoll(q);
      }
      this.scheduleDrain(q);
    } else if (q.draining) {
      q.draining = false;
      this.updatePoll(q);
    }
  }

  /** True when the budget ran out with the fd possibly still readable. */
  private readBatch(q: TapQueue, revents: number): boolean {
    // One burst per wake-up: the device decides each queue's interrupt once for everything read here.
    const sink = this.sink;
    sink?.beginReceiveBurst?.();
    try {
      return this.readFrames(q, revents);
    } finally {
      this.dropGuestViews();
      sink?.endReceiveBurst?.();
    }
  }

  /**
   * Forgets the guest-memory arrays of the last lends: a region removed afterwards (a vfio-user client
   * gone, its memory unmapped) would otherwise stay referenced, with its placeholder mapping, until the
   * next lend overwrote the slot.
   */
  private dropGuestViews(): void {
    const b = this.target.bytes;
    for (let i = 0; i < b.length; i++) b[i] = NO_BYTES;
    this.addresses.forget();
  }

  private readFrames(q: TapQueue, revents: number): boolean {
    const sink = this.sink;
    if (!sink) return false;
    const direct =
      this.zeroCopy &&
      sink.lendReceive !== undefined &&
      sink.completeReceive !== undefined &&
      sink.cancelReceive !== undefined;
    const batch = this.batchReader();
    for (let i = 0; i < RX_BUDGET; ) {
      if (q.paused || !q.attached || this.down) return false;
      let end: number;
      if (batch?.usable && q.rxBatch > 1 && q.rxAverage < BATCH_RX_MAX_AVERAGE) {
        // No more than the guest has buffers for (at least one: a frame without a buffer pauses the queue).
        const room = sink.receiveRoom?.(q.qp) ?? RX_BATCH;
        const want = Math.max(1, Math.min(q.rxBatch, RX_BATCH, RX_BUDGET - i, room));
        end = this.readMany(q, sink, batch, want);
        i += want;
      } else {
        end = this.readOne(q, sink, direct);
        if (end === READ_FRAME && batch !== null) q.rxBatch = 2;
        i++;
      }
      if (end === READ_GONE) {
        this.vanished();
        return false;
      }
      if (end === READ_STOP) break;
      if (i >= RX_BUDGET) return true;
    }
    if (revents & (POLLERR | POLLHUP | POLLNVAL) && !this.down) {
      // tun reports POLLERR once its device is gone; confirm with a read before declaring it.
      const n = this.c.read(q.fd, this.rxBuf, this.rxBuf.length);
      if (n < 0 && isGoneErrno(this.c.errno())) this.vanished();
    }
    return false;
  }

  /** The batch reader when batches apply (batchRx, io_uring usable), else null. */
  private batchReader(): RxBatch | null {
    if (!this.batchRx) return null;
    if (this.batch === undefined) this.batch = RxBatch.create(this.c, this.error);
    if (this.batch !== null && !this.batch.usable) this.batch = null;
    return this.batch;
  }

  /**
   * One frame with one syscall: `readv` into a lent guest buffer, or `read` into rxBuf and the device
   * copies. READ_FRAME, READ_SKIP (a bad frame, counted), READ_STOP (EAGAIN or an error) or READ_GONE.
   */
  private readOne(q: TapQueue, sink: BackendSink, direct: boolean): number {
    const c = this.c;
    const buf = this.rxBuf;
    const hs = this.hdrSize;
    let lent = direct && q.rxAverage >= this.zeroCopyRxMinBytes && sink.lendReceive!(q.qp, hs, this.target);
    let n: number;
    if (lent) {
      const cnt = this.rxIovecs();
      if (cnt === 0) {
        sink.cancelReceive!();
        lent = false;
        n = c.read(q.fd, buf, buf.length);
      } else n = c.readv(q.fd, this.rxIov, cnt);
    } else n = c.read(q.fd, buf, buf.length);
    if (n < 0) {
      if (lent) sink.cancelReceive!();
      return this.readFailed(c.errno());
    }
    if (n < hs || n === 0) {
      if (lent) sink.cancelReceive!();
      this.s.rxErrors++;
      return READ_SKIP;
    }
    const len = n - hs;
    q.rxAverage += (len - q.rxAverage) / 8;
    this.s.rxFrames++;
    this.s.rxBytes += len;
    if (lent) {
      this.s.rxDirect++;
      this.s.rxDirectBytes += len;
      sink.completeReceive!(n, buf);
      return READ_FRAME;
    }
    let frame = this.rxFrameViews[len];
    if (frame === undefined) {
      frame = buf.subarray(hs, n);
      this.rxFrameViews[len] = frame;
    }
    sink.receive(frame, q.qp, hs > 0 ? readVnetHeader(buf, 0, this.rxOffload, hs) : null);
    return READ_FRAME;
  }

  /**
   * `want` reads with one io_uring submission (rx-batch.ts), then every frame they got handed to the
   * device in order. All of them are delivered even when the device pauses (or a queue is detached)
   * half way: they have left the tap, and the device backlogs or counts what it cannot place. The next
   * batch doubles while every read found a frame, and shrinks to what the last one found otherwise.
   */
  private readMany(q: TapQueue, sink: BackendSink, batch: RxBatch, want: number): number {
    const got = batch.read(q.fd, want);
    if (got < 0) return READ_SKIP; // the ring failed before reading anything: single reads from now on
    this.s.rxBatches++;
    const hs = this.hdrSize;
    const slots = batch.slots;
    let end = got < want ? READ_STOP : READ_FRAME;
    let frames = 0;
    for (let k = 0; k < got; k++) {
      const n = batch.res[k] as number;
      if (n < 0) {
        const e = this.readFailed(-n);
        if (e === READ_GONE || end !== READ_GONE) end = e;
        continue;
      }
      // The kernel's answer is checked like any backend input: a slot we queued, a whole header, no more
      // than the slot holds.
      const slot = batch.slot[k] as number;
      if (n < hs || n === 0 || n > RX_SLOT || !(slot < want)) {
        this.s.rxErrors++;
        continue;
      }
      const len = n - hs;
      q.rxAverage += (len - q.rxAverage) / 8;
      frames++;
      this.s.rxFrames++;
      this.s.rxBytes += len;
      this.s.rxBatchedFrames++;
      const off = hs > 0 ? readVnetHeader(slots, slot * RX_SLOT, this.rxOffload, hs) : null;
      sink.receive(batch.frame(slot, hs, len), q.qp, off);
    }
    // Every read found a frame: grow (a read capped by the guest's room says nothing about the tap, so
    // it never shrinks the batch); otherwise shrink to what the tap had.
    q.rxBatch = frames === want ? Math.min(Math.max(2 * want, q.rxBatch), RX_BATCH) : Math.max(1, frames);
    return end;
  }

  /** Classifies a failed read: READ_STOP (EAGAIN, EINTR, an error counted in rxErrors) or READ_GONE. */
  private readFailed(e: number): number {
    if (e === Errno.EAGAIN || e === Errno.EINTR) return READ_STOP;
    if (isGoneErrno(e)) return READ_GONE;
    this.s.rxErrors++;
    return READ_STOP;
  }

  /**
   * iovecs for a lent receive: the guest segments, then rxBuf as the overflow. 0 when a segment does not
   * lie inside its array (never from our device; the kernel must not write outside it).
   */
  private rxIovecs(): number {
    const t = this.target;
    const iov = this.rxIov;
    for (let i = 0; i < t.count; i++) {
      const b = t.bytes[i] as Uint8Array;
      const o = t.offsets[i] as number;
      const l = t.lengths[i] as number;
      if (!(o >= 0 && o + l <= b.length)) return 0;
      setIovec(iov, i, this.addresses.of(b) + o, l);
    }
    // The overflow iovec only moves when the segment count does.
    if (t.count !== this.rxOverflowAt) {
      if (this.rxBufAddress === 0) this.rxBufAddress = this.c.addressOf(this.rxBuf);
      setIovec(iov, t.count, this.rxBufAddress, this.rxBuf.length);
      this.rxOverflowAt = t.count;
    }
    return t.count + 1;
  }
}
