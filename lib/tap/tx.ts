/**
 * Transmit (guest -> tap) for TapBackend. `transmitRange` points iovecs at [a vnet header of ours, the
 * frame where it lies in guest memory]: no copy, nothing allocated per frame. With `batchTx` it only
 * queues them; `flush`, which the device calls once per guest kick, sends the burst with one io_uring
 * submission (lib/host/io-uring.ts), a lone frame with one `writev(2)`. `transmit` (a frame the caller
 * owns) copies behind the header and `write(2)`s.
 */
import { BackendError } from '../errors.js';
import { IoUring } from '../host/io-uring.js';
import { Errno, type Libc } from '../host/libc.js';
import { type NetOffload, MAX_FRAME, type TransmitResult } from '../net/backend.js';
import { VNET_HDR_OFFLOAD_BYTES, VNET_HDR_TUNNEL_BYTES, writeVnetHeader } from '../net/vnet-header.js';
import { type HostAddresses, setIovec } from './iovec.js';
import type { TapStats } from './options.js';
import { isGoneErrno } from './tap-fd.js';

/** Frames one flush can hold (the device's tx burst is 256). */
const TX_SLOTS = 256;
/** Header room per queued frame (the largest vnet header is 24 bytes). */
const TX_SLOT_HEADER = 24;
/** Longest wait for a batch of tap writes to complete (they complete inside the submission). */
const TX_BATCH_WAIT_MS = 1000;

/**
 * Header bytes tun reads offload data from: 10, or 24 with the UDP tunnel offsets (tun parses those
 * when its header size is at least 24, Linux 6.17+ tun_vnet_hdr_guest_features).
 */
function offloadBytes(hdrSize: number): number {
  return hdrSize >= VNET_HDR_TUNNEL_BYTES ? VNET_HDR_TUNNEL_BYTES : VNET_HDR_OFFLOAD_BYTES;
}

/** What transmit needs of a queue pair. */
export interface TxQueue {
  fd: number;
  attached: boolean;
}

/** What transmit reports to its backend. */
export interface TxEvents {
  /** A write found the tap deleted. */
  vanished(): void;
  /** A failure worth keeping in `lastError` (io_uring unusable, a batch that did not complete). */
  error(e: BackendError): void;
}

/** The transmit half of a TapBackend. */
export class TapTx {
  /** The vnet header size on the fds (0 without IFF_VNET_HDR); see `setHeaderSize`. */
  hdrSize: number;
  /** TapOpenOptions.zeroCopy. */
  zeroCopy = true;
  /** TapOpenOptions.batchTx; the ring (created on the first batch), or null when io_uring is unusable. */
  batchTx = true;
  /** The backend is closed or its tap gone: every frame is dropped as 'down'. */
  down = false;
  private ring: IoUring | null | undefined;
  private readonly txBuf = new Uint8Array(VNET_HDR_OFFLOAD_BYTES + 10 + MAX_FRAME);
  /** Frames transmitRange queued for flush: per slot its header, iovecs, fd and frame length. */
  private txQueued = 0;
  private readonly txSlotHeaders = new Uint8Array(TX_SLOTS * TX_SLOT_HEADER);
  /** Two struct iovec per slot (header, frame), as 32-bit words. */
  private readonly txSlotIov = new Uint32Array(TX_SLOTS * 8);
  private readonly txSlotIovCount = new Uint8Array(TX_SLOTS);
  private readonly txSlotFd = new Int32Array(TX_SLOTS);
  private readonly txSlotLength = new Uint32Array(TX_SLOTS);
  /** Completions of one batch: res and slot. */
  private readonly txRes = new Int32Array(TX_SLOTS);
  private readonly txResSlot = new Float64Array(TX_SLOTS);
  private txSlotHeadersAddress = 0;
  private txSlotIovAddress = 0;
  /** Frames that failed in a batch sent before the device's flush (the slots ran out mid-burst). */
  private txFailedUnreported = 0;
  private readonly txIov = new Uint32Array(8);
  /** Host address of txBuf (0: not resolved yet); kept apart so the region cache stays hot. */
  private txBufAddress = 0;
  /** The header bytes in txBuf hold a previous frame's offload (not all zero). */
  private txHdrDirty = false;

  constructor(
    private readonly c: Libc,
    private readonly queues: readonly TxQueue[],
    private readonly s: TapStats,
    private readonly addresses: HostAddresses,
    private readonly events: TxEvents,
    hdrSize: number,
  ) {
    this.hdrSize = hdrSize;
  }

  /** A new header size (TUNSETVNETHDRSZ succeeded). */
  setHeaderSize(size: number): void {
    this.hdrSize = size;
    this.txBuf.fill(0, 0, size); // frame bytes of the old layout may sit where the header tail now is
    this.txHdrDirty = false;
  }

  transmit(frame: Uint8Array, queuePair: number, offload: NetOffload | null): TransmitResult {
    if (this.txQueued > 0) this.txFailedUnreported += this.sendQueued(); // keep the wire order
    const q = this.queues[queuePair];
    if (q === undefined) return this.drop('invalid');
    if (this.down || !q.attached) return this.drop('down');
    const hs = this.hdrSize;
    const len = frame.length;
    if (len + hs > this.txBuf.length) return this.drop('invalid');
    this.putTxHeader(offload);
    this.txBuf.set(frame, hs);
    return this.txResult(this.c.write(q.fd, this.txBuf, len + hs), len + hs, false);
  }

  /** See TapBackend.transmitRange. */
  transmitRange(
    bytes: Uint8Array,
    offset: number,
    length: number,
    queuePair: number,
    offload: NetOffload | null,
  ): TransmitResult {
    if (!this.zeroCopy) return this.transmit(bytes.subarray(offset, offset + length), queuePair, offload);
    const q = this.queues[queuePair];
    if (q === undefined) return this.drop('invalid');
    if (this.down || !q.attached) return this.drop('down');
    const hs = this.hdrSize;
    // The kernel reads what the iovec says: the range must lie inside `bytes`.
    if (!(offset >= 0 && length >= 0 && offset + length <= bytes.length) || length + hs > this.txBuf.length)
      return this.drop('invalid');
    if (this.batchTx && this.ring !== null) return this.queueFrame(q.fd, bytes, offset, length, offload);
    const iov = this.txIov;
    let n = 0;
    if (hs > 0) {
      this.putTxHeader(offload);
      if (this.txBufAddress === 0) this.txBufAddress = this.c.addressOf(this.txBuf);
      setIovec(iov, n++, this.txBufAddress, hs);
    }
    setIovec(iov, n++, this.addresses.of(bytes) + offset, length);
    return this.txResult(this.c.writev(q.fd, iov, n), length + hs, true);
  }

  /** See TapBackend.flushTransmit. */
  flush(): number {
    const failed = this.txFailedUnreported + (this.txQueued > 0 ? this.sendQueued() : 0);
    this.txFailedUnreported = 0;
    // The burst is out: keep no guest region alive through the address cache (docs/vfio-user.md).
    this.addresses.forget();
    return failed;
  }

  /** Drops what is still queued and closes the ring. */
  close(): void {
    // Frames still queued are lost with the tap (the device flushes every burst, so this is rare).
    for (; this.txQueued > 0; this.txQueued--) this.drop('down');
    this.closeRing();
  }

  /** Queues one frame in the next slot (sending the slots first when they are all taken). */
  private queueFrame(
    fd: number,
    bytes: Uint8Array,
    offset: number,
    length: number,
    offload: NetOffload | null,
  ): TransmitResult {
    if (this.txQueued === TX_SLOTS) this.txFailedUnreported += this.sendQueued();
    const i = this.txQueued++;
    const hs = this.hdrSize;
    const iov = this.txSlotIov;
    let n = 0;
    if (hs > 0) {
      const h = this.txSlotHeaders;
      const o = i * TX_SLOT_HEADER;
      // Bytes past the offload fields (num_buffers, hash) stay zero: the kernel skips them on tx.
      const written = offloadBytes(hs);
      writeVnetHeader(h, o, offload, written);
      for (let k = o + written; k < o + hs; k++) h[k] = 0; // not fill(): a runtime call per frame
      if (this.txSlotHeadersAddress === 0) this.txSlotHeadersAddress = this.c.addressOf(h);
      setIovec(iov, 2 * i + n++, this.txSlotHeadersAddress + o, hs);
    }
    setIovec(iov, 2 * i + n++, this.addresses.of(bytes) + offset, length);
    this.txSlotFd[i] = fd;
    this.txSlotLength[i] = length;
    this.txSlotIovCount[i] = n;
    return 'sent';
  }

  /** Sends the queued slots; returns how many failed. Never throws. */
  private sendQueued(): number {
    const n = this.txQueued;
    this.txQueued = 0;
    if (n === 1) {
      // One frame: a plain writev is cheaper than a ring round trip.
      const cnt = this.txSlotIovCount[0] as number;
      const r = this.txResult(this.c.writev(this.txSlotFd[0] as number, this.txSlotIov, cnt), 0, true);
      return r === 'sent' ? 0 : 1;
    }
    const ring = this.txRing();
    if (this.txSlotIovAddress === 0)
      this.txSlotIovAddress = this.c.addressOf(new Uint8Array(this.txSlotIov.buffer));
    let failed = 0;
    if (ring !== null) {
      for (let i = 0; i < n; i++)
        ring.queueWritev(
          this.txSlotFd[i] as number,
          this.txSlotIovAddress + 32 * i,
          this.txSlotIovCount[i]!,
          i,
        );
      // Tap writes complete inside the submission; the bound only guards against a kernel that defers.
      // Results are taken off the ring before they are accounted: a gone tap closes the ring.
      const ready = ring.wait(n, TX_BATCH_WAIT_MS);
      const got = ring.reap(this.txRes, this.txResSlot);
      this.s.txBatches++;
      this.s.txBatchedFrames += n;
      for (let k = 0; k < got; k++) {
        const res = this.txRes[k] as number;
        const len = this.hdrSize + (this.txSlotLength[this.txResSlot[k] as number] as number);
        if (this.txResult(res, len, true, -res) !== 'sent') failed++;
      }
      if (ready >= n) return failed;
      // Not all completed: never expected from a tap. Give up on the ring (closing it cancels what is
      // left) and count the rest as lost.
      this.events.error(new BackendError(`TapBackend: ${n - got} io_uring tap writes did not complete`));
      this.closeRing();
      for (let k = got; k < n; k++) this.drop('busy');
      return failed + (n - got);
    }
    // No io_uring here: writev each.
    for (let i = 0; i < n; i++) {
      const cnt = this.txSlotIovCount[i] as number;
      const iov = this.txSlotIov.subarray(8 * i, 8 * i + 8);
      const len = this.hdrSize + (this.txSlotLength[i] as number);
      if (this.txResult(this.c.writev(this.txSlotFd[i] as number, iov, cnt), len, true) !== 'sent') failed++;
    }
    return failed;
  }

  /** The tx ring, created on first use; null (and writev per frame from then on) where io_uring is unusable. */
  private txRing(): IoUring | null {
    if (this.ring !== undefined) return this.ring;
    const why = IoUring.supported();
    if (why !== null) {
      this.ring = null;
      return null;
    }
    try {
      this.ring = IoUring.create(TX_SLOTS);
    } catch (e) {
      this.events.error(e instanceof BackendError ? e : new BackendError(String((e as Error)?.message ?? e)));
      this.ring = null;
    }
    return this.ring;
  }

  private closeRing(): void {
    this.ring?.close();
    this.ring = null;
  }

  /** The vnet header of the next frame in txBuf[0, hdrSize). */
  private putTxHeader(offload: NetOffload | null): void {
    if (this.hdrSize === 0) return;
    // Bytes past the offload fields (num_buffers, hash) stay zero: the kernel skips them on tx.
    if (offload === null && !this.txHdrDirty) return;
    writeVnetHeader(this.txBuf, 0, offload, offloadBytes(this.hdrSize));
    this.txHdrDirty = offload !== null;
  }

  /**
   * Accounts one write of `total` bytes that returned `n`. `total` 0: whatever the slot-0 frame was
   * (a single queued frame). `errno` of a failed write when it does not come from errno(2) (io_uring).
   */
  private txResult(n: number, total: number, direct: boolean, errno = -1): TransmitResult {
    if (total === 0) total = this.hdrSize + (this.txSlotLength[0] as number);
    if (n === total) {
      this.s.txFrames++;
      this.s.txBytes += total - this.hdrSize;
      if (direct) this.s.txDirect++;
      return 'sent';
    }
    if (n >= 0) return this.drop('busy'); // a tap never writes short; treat it as a lost frame
    const e = errno >= 0 ? errno : this.c.errno();
    if (e === Errno.EAGAIN || e === Errno.ENOBUFS || e === Errno.ENOMEM || e === Errno.EINTR)
      return this.drop('busy');
    if (e === Errno.EINVAL || e === Errno.EMSGSIZE || e === Errno.EFAULT) return this.drop('invalid');
    if (isGoneErrno(e)) this.events.vanished();
    return this.drop('down');
  }

  private drop(kind: 'busy' | 'invalid' | 'down'): TransmitResult {
    this.s.txDropped++;
    if (kind === 'busy') this.s.txDroppedBusy++;
    else if (kind === 'invalid') this.s.txDroppedInvalid++;
    else this.s.txDroppedDown++;
    return 'dropped';
  }
}
