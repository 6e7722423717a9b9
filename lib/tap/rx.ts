/**
 * Receive (tap -> guest) for TapBackend. The queues' fds sit in the process-wide poller (poller.ts); when
 * one is readable it is drained here with non-blocking reads, up to a budget. Each read is a `readv(2)`
 * straight into the guest's receive buffer when the device lends one (BackendSink.lendReceive), with a
 * reused buffer of ours as the overflow iovec so no frame is ever truncated; otherwise a `read(2)` into
 * that buffer and the device copies. `pause(qp)` takes the fd out of the poll set (the kernel queues,
 * then drops, as for a slow QEMU). The per-frame cost is one FFI call and no allocation.
 */
import { Errno, type Libc, POLLERR, POLLHUP, POLLNVAL } from '../host/libc.js';
import { type BackendSink, emptyOffload, type NetOffload, ReceiveTarget, MAX_FRAME } from '../net/backend.js';
import { readVnetHeader, VNET_HDR_OFFLOAD_BYTES } from '../net/vnet-header.js';
import { type HostAddresses, setIovec } from './iovec.js';
import { ZERO_COPY_RX_MIN_BYTES, type TapStats } from './options.js';
import { type PollEntry, type SharedPoller, sharedPoller } from './poller.js';
import { isGoneErrno } from './tap-fd.js';

/** Frames read per ready fd before yielding back to the event loop. */
const RX_BUDGET = 256;
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
  /** The backend is closed or its tap gone: nothing is read. */
  down = false;
  private sink: BackendSink | null = null;
  private poller: SharedPoller | undefined;
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
    if (this.sink) this.poller?.changed();
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
    try {
      return this.readFrames(q, revents);
    } finally {
      this.dropGuestViews();
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
    const c = this.c;
    const buf = this.rxBuf;
    const direct =
      this.zeroCopy &&
      sink.lendReceive !== undefined &&
      sink.completeReceive !== undefined &&
      sink.cancelReceive !== undefined;
    for (let i = 0; i < RX_BUDGET; i++) {
      if (q.paused || !q.attached || this.down) return false;
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
        const e = c.errno();
        if (e === Errno.EAGAIN || e === Errno.EINTR) break;
        if (isGoneErrno(e)) {
          this.vanished();
          return false;
        }
        this.s.rxErrors++;
        break;
      }
      if (n < hs || n === 0) {
        if (lent) sink.cancelReceive!();
        this.s.rxErrors++;
        continue;
      }
      const len = n - hs;
      q.rxAverage += (len - q.rxAverage) / 8;
      if (lent) {
        this.s.rxFrames++;
        this.s.rxDirect++;
        this.s.rxDirectBytes += len;
        this.s.rxBytes += len;
        sink.completeReceive!(n, buf);
        if (i === RX_BUDGET - 1) return true;
        continue;
      }
      let frame = this.rxFrameViews[len];
      if (frame === undefined) {
        frame = buf.subarray(hs, n);
        this.rxFrameViews[len] = frame;
      }
      let off: NetOffload | null = null;
      if (hs > 0) off = readVnetHeader(buf, 0, this.rxOffload, hs);
      this.s.rxFrames++;
      this.s.rxBytes += len;
      sink.receive(frame, q.qp, off);
      if (i === RX_BUDGET - 1) return true;
    }
    if (revents & (POLLERR | POLLHUP | POLLNVAL) && !this.down) {
      // tun reports POLLERR once its device is gone; confirm with a read before declaring it.
      const n = c.read(q.fd, buf, buf.length);
      if (n < 0 && isGoneErrno(c.errno())) this.vanished();
    }
    return false;
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
