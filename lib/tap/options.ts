/** TapBackend's options and counters (the types are public: index.ts re-exports them). */
import { OptionsError } from '../errors.js';

/** TapOpenOptions.zeroCopyRxMinBytes default: a 512-byte copy costs about what readv's second iovec does. */
export const ZERO_COPY_RX_MIN_BYTES = 512;

/** Options of `TapBackend.open`. */
export interface TapOpenOptions {
  /** Interface name (≤15 bytes); a kernel-chosen `tapN` when absent. May contain `%d`. */
  name?: string;
  /** Queue pairs, one fd each (IFF_MULTI_QUEUE when > 1). Default 1. */
  queues?: number;
  /** Open with IFF_VNET_HDR (offload metadata). Default true. */
  vnetHeader?: boolean;
  /** Move the tap into this existing network namespace (`ip link set … netns`); the fds keep working. */
  netns?: string;
  /**
   * Watch the tap's host-side link (rtnetlink, lib/host/link-monitor.ts) from `attach` on, and report
   * `ip link set TAP down|up` (or carrier off|on) to the device as BackendSink.linkChanged. Default true.
   */
  watchLink?: boolean;
  /**
   * Zero copy: read frames straight into guest receive buffers the device lends, and write guest frames
   * from guest memory with writev. Default true; false reads into and writes from our own buffers.
   */
  zeroCopy?: boolean;
  /**
   * Frames are read straight into guest buffers while the queue's recent frames average at least this
   * many bytes (default 512). Below it a `read` into our buffer plus the device's copy is cheaper than a
   * two-iovec `readv` and the lend (measured, docs/performance.md); 0: always, when the device lends.
   */
  zeroCopyRxMinBytes?: number;
  /**
   * Send the frames of one guest burst with one io_uring submission (flushTransmit) instead of one
   * writev each: 1.3–1.5x the write rate for bursts of 8 or more (docs/performance.md). Needs zeroCopy
   * and io_uring (else writev per frame, as with false). A burst of one is a plain writev. Default true.
   */
  batchTx?: boolean;
  /**
   * Read up to 64 frames per kernel entry: io_uring READ submissions with RWF_NOWAIT into slots of the
   * backend's own memory, the device copying each frame out (docs/backends.md). Used while a queue's
   * frames average under 8 KiB and its last reads found frames waiting; larger frames still go one per
   * `readv` into lent guest buffers. Needs io_uring (else a read per frame, as with false). Default true.
   */
  batchRx?: boolean;
  /**
   * Apply the guest's RSS configuration in the kernel with an eBPF steering program
   * (lib/tap/steering.ts, TUNSETSTEERINGEBPF) on a multiqueue tap. Default true; where the kernel
   * refuses the program the device does RSS in software (the reason is in `lastError`).
   */
  rssSteering?: boolean;
}

/** Options of `TapBackend.adopt`. */
export interface TapAdoptOptions {
  /** Take over fds as they are; the header mode is read back with TUNGETIFF. */
  vnetHeader?: boolean;
  /** As TapOpenOptions.zeroCopy. Default true. */
  zeroCopy?: boolean;
  /** As TapOpenOptions.rssSteering. Default true. */
  rssSteering?: boolean;
  /** As TapOpenOptions.batchTx. Default true. */
  batchTx?: boolean;
  /** As TapOpenOptions.batchRx. Default true. */
  batchRx?: boolean;
  /** As TapOpenOptions.zeroCopyRxMinBytes. Default 512. */
  zeroCopyRxMinBytes?: number;
  /** As TapOpenOptions.watchLink. Default true. */
  watchLink?: boolean;
}

/** Counters of one TapBackend (monotonic). */
export interface TapStats {
  rxFrames: number;
  rxBytes: number;
  /** Of rxFrames, those read straight into a guest buffer (BackendSink.lendReceive), and their bytes. */
  rxDirect: number;
  rxDirectBytes: number;
  /** read(2) failures other than EAGAIN/EINTR, and frames shorter than the vnet header. */
  rxErrors: number;
  /** io_uring submissions of batched reads (batchRx), and the frames they delivered (of rxFrames). */
  rxBatches: number;
  rxBatchedFrames: number;
  /** poll wake-ups that found this backend's fds ready (frames per wake-up = rxFrames / rxWakeups). */
  rxWakeups: number;
  txFrames: number;
  txBytes: number;
  /** Of txFrames, those written from guest memory without a copy (transmitRange). */
  txDirect: number;
  /** io_uring submissions of a batch of frames (flushTransmit with batchTx), and the frames in them. */
  txBatches: number;
  txBatchedFrames: number;
  /** Every transmit that returned 'dropped' (the sum of the txDropped* below). */
  txDropped: number;
  /** EAGAIN / ENOBUFS / ENOMEM from the kernel. */
  txDroppedBusy: number;
  /** EINVAL (the kernel refused the header), frame larger than a tap takes, bad queue pair. */
  txDroppedInvalid: number;
  /** Backend closed, tap gone, queue pair detached. */
  txDroppedDown: number;
  /** ioctls that failed on device-driven calls (setOffloads, setVnetHeaderSize, setQueuePairEnabled, setCarrier). */
  ioctlErrors: number;
  /** RSS configurations applied in the kernel by the eBPF steering program (setRssSteering). */
  rssSteeringUpdates: number;
}

/** All counters at zero. */
export function newTapStats(): TapStats {
  return {
    rxFrames: 0,
    rxBytes: 0,
    rxDirect: 0,
    rxDirectBytes: 0,
    rxErrors: 0,
    rxBatches: 0,
    rxBatchedFrames: 0,
    rxWakeups: 0,
    txFrames: 0,
    txBytes: 0,
    txDirect: 0,
    txBatches: 0,
    txBatchedFrames: 0,
    txDropped: 0,
    txDroppedBusy: 0,
    txDroppedInvalid: 0,
    txDroppedDown: 0,
    ioctlErrors: 0,
    rssSteeringUpdates: 0,
  };
}

/** zeroCopyRxMinBytes, checked; the default when absent. */
export function zeroCopyRxMin(v: number | undefined, where: string): number {
  if (v === undefined) return ZERO_COPY_RX_MIN_BYTES;
  if (!Number.isInteger(v) || v < 0)
    throw new OptionsError(
      `TapBackend.${where}: zeroCopyRxMinBytes must be a non-negative integer, got ${v}`,
    );
  return v;
}
