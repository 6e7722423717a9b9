/**
 * A kernel tap as a NetBackend, driven through koffi (as QEMU's `-netdev tap` drives it: net/tap-linux.c).
 *
 * One tap fd per queue pair (IFF_MULTI_QUEUE when more than one). Frames cross the fd with a
 * `struct virtio_net_hdr` in front when IFF_VNET_HDR is on (VIRTIO 1.3 §5.1.6; Linux tun_vnet.h), which
 * this module converts to/from the caller's `NetOffload` record.
 *
 * Receive (tap -> guest): every open backend in the process shares one poller: a single `poll(2)` on a
 * koffi worker thread over all readable-wanted tap fds plus an eventfd used to re-arm it. When it
 * returns, the main thread drains each ready fd with non-blocking reads (koffi, synchronous), up to a
 * budget, then re-arms. No busy-waiting, one worker thread whatever the number of taps, and the per-frame
 * cost is one FFI call (the async hop is paid per batch, not per frame). Each read is a `readv(2)` straight
 * into the guest's receive buffer when the device lends one (BackendSink.lendReceive), with a reused
 * buffer of ours as the overflow iovec so no frame is ever truncated; otherwise a `read(2)` into that
 * buffer and the device copies. `pause(qp)` removes the fd from the poll set (the kernel queues, then
 * drops, as for a slow QEMU).
 *
 * Transmit (guest -> tap): `transmitRange` points iovecs at [a vnet header of ours, the frame where it
 * lies in guest memory]: no copy, nothing allocated per frame. Guest-memory regions become host addresses
 * once per region (Libc.addressOf). With `batchTx` it only queues them; `flushTransmit`, which the device
 * calls once per guest kick, sends the burst with one io_uring submission (lib/host/io-uring.ts), a lone frame
 * with one `writev(2)`. `transmit` (a frame the caller owns) copies behind the header and `write(2)`s.
 *
 * Receive steering: a multiqueue tap steers flows itself (tun's automq), or, once the guest configures
 * RSS, by an eBPF program that applies it in the kernel (lib/tap/steering.ts).
 */
import { execFileSync } from 'node:child_process';
import { BackendError, OptionsError } from '../errors.js';
import { IoUring } from '../host/io-uring.js';
import {
  EFD_CLOEXEC,
  EFD_NONBLOCK,
  Errno,
  errnoName,
  F_GETFL,
  F_SETFL,
  type Libc,
  libc,
  O_CLOEXEC,
  O_NONBLOCK,
  O_RDWR,
  POLLERR,
  POLLHUP,
  POLLIN,
  POLLNVAL,
} from '../host/libc.js';
import { TapLinkWatch } from '../host/link-monitor.js';
import {
  type BackendCapabilities,
  type BackendOffloads,
  type BackendRssConfig,
  type BackendSink,
  emptyOffload,
  type NetBackend,
  type NetOffload,
  ReceiveTarget,
  type TransmitResult,
} from '../net/backend.js';
import { readVnetHeader, VNET_HDR_OFFLOAD_BYTES, writeVnetHeader } from '../net/vnet-header.js';
import { TapSteering } from './steering.js';

/** linux/if_tun.h ioctls (x86-64/aarch64 encodings of _IOW/_IOR('T', n, int)). */
export const TUNSETIFF = 0x400454ca;
export const TUNSETPERSIST = 0x400454cb;
export const TUNGETFEATURES = 0x800454cf;
export const TUNSETOFFLOAD = 0x400454d0;
export const TUNGETIFF = 0x800454d2;
export const TUNGETVNETHDRSZ = 0x800454d7;
export const TUNSETVNETHDRSZ = 0x400454d8;
export const TUNSETQUEUE = 0x400454d9;
export const TUNSETCARRIER = 0x400454e2;

/** linux/if_tun.h ifr_flags. */
export const IFF_TAP = 0x0002;
export const IFF_MULTI_QUEUE = 0x0100;
export const IFF_ATTACH_QUEUE = 0x0200;
export const IFF_DETACH_QUEUE = 0x0400;
export const IFF_NO_PI = 0x1000;
export const IFF_VNET_HDR = 0x4000;

/** linux/if_tun.h TUNSETOFFLOAD bits. */
export const TUN_F_CSUM = 0x01;
export const TUN_F_TSO4 = 0x02;
export const TUN_F_TSO6 = 0x04;
export const TUN_F_TSO_ECN = 0x08;
export const TUN_F_UFO = 0x10;
export const TUN_F_USO4 = 0x20;
export const TUN_F_USO6 = 0x40;

/** sizeof(struct virtio_net_hdr): the part of any header size the kernel reads and writes. */
const VNET_HDR_BASE = VNET_HDR_OFFLOAD_BYTES;
/** Largest frame a tap hands out or takes: 64 KiB GSO super-frame plus link headers. */
const MAX_FRAME = 65_536 + 256;
/** TapOpenOptions.zeroCopyRxMinBytes default: a 512-byte copy costs about what readv's second iovec does. */
const ZERO_COPY_RX_MIN_BYTES = 512;
/** Frames one flushTransmit can hold (the device's tx burst is 256). */
const TX_SLOTS = 256;
/** Header room per queued frame (the largest vnet header is 24 bytes). */
const TX_SLOT_HEADER = 24;
/** Longest wait for a batch of tap writes to complete (they complete inside the submission). */
const TX_BATCH_WAIT_MS = 1000;
/** Frames read per ready fd before yielding back to the event loop. */
const RX_BUDGET = 256;
const IFNAMSIZ = 16;
const IFREQ_SIZE = 40;

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
  /** As TapOpenOptions.zeroCopyRxMinBytes. Default 512. */
  zeroCopyRxMinBytes?: number;
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

interface PollEntry {
  fd: number;
  enabled: boolean;
  ready(revents: number): void;
}

/**
 * The process-wide poller: one outstanding koffi async `poll` over the enabled fds plus a wake eventfd.
 * Changes to the set write the eventfd so the in-flight poll returns and is re-armed with the new set.
 */
class SharedPoller {
  private readonly entries = new Set<PollEntry>();
  private readonly c: Libc;
  private readonly wakeFd: number;
  private readonly wakeBuf = new Uint8Array(8);
  private mem: { ptr: unknown; bytes: Uint8Array } | undefined;
  private view: DataView | undefined;
  private capacity = 0;
  /** Entries in the in-flight poll array, by index (slot 0 is the eventfd). */
  private armed: PollEntry[] = [];
  private inFlight = false;
  private dispatching = false;
  private failures = 0;

  constructor(c: Libc) {
    this.c = c;
    this.wakeFd = c.eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (this.wakeFd < 0) throw errnoError('eventfd', c.errno());
    new DataView(this.wakeBuf.buffer).setBigUint64(0, 1n, true);
  }

  add(entry: PollEntry): void {
    this.entries.add(entry);
    this.changed();
  }

  remove(entry: PollEntry): void {
    if (this.entries.delete(entry)) this.changed();
  }

  /** Call after flipping an entry's `enabled`. */
  changed(): void {
    if (this.dispatching) return; // re-armed with the new set once dispatch ends
    if (this.inFlight) this.c.write(this.wakeFd, this.wakeBuf, 8);
    else this.arm();
  }

  private arm(): void {
    if (this.inFlight) return;
    const list = this.armed;
    list.length = 0;
    for (const e of this.entries) if (e.enabled) list.push(e);
    if (list.length === 0) return; // nothing wanted: no pending work keeps the process alive
    const n = list.length + 1;
    if (n > this.capacity) {
      this.capacity = Math.max(n, this.capacity * 2, 8);
      this.mem = this.c.alloc(this.capacity * 8);
      this.view = new DataView(this.mem.bytes.buffer, this.mem.bytes.byteOffset, this.capacity * 8);
    }
    const v = this.view as DataView;
    v.setInt32(0, this.wakeFd, true);
    v.setInt16(4, POLLIN, true);
    v.setInt16(6, 0, true);
    for (let i = 0; i < list.length; i++) {
      v.setInt32((i + 1) * 8, (list[i] as PollEntry).fd, true);
      v.setInt16((i + 1) * 8 + 4, POLLIN, true);
      v.setInt16((i + 1) * 8 + 6, 0, true);
    }
    this.inFlight = true;
    this.c.pollAsync(this.mem?.ptr, n, -1, this.onPolled);
  }

  private readonly onPolled = (err: unknown, res: number): void => {
    this.inFlight = false;
    const v = this.view as DataView;
    if (err || res < 0) {
      // EINTR or worse: re-arm, backing off if it keeps failing so an error cannot spin the CPU.
      this.failures++;
      if (this.failures > 3) {
        setTimeout(() => this.arm(), Math.min(1000, 10 * this.failures)).unref?.();
        return;
      }
      this.arm();
      return;
    }
    this.failures = 0;
    if (v.getInt16(6, true) !== 0) this.c.read(this.wakeFd, this.wakeBuf, 8);
    // Sinks may pause/resume/close from inside `ready`: `changed()` defers to the arm() below, so the
    // poll array is not rewritten while it is being read. A throwing sink still leaves the poller armed.
    this.dispatching = true;
    let thrown: unknown;
    const list = this.armed;
    for (let i = 0; i < list.length; i++) {
      const revents = v.getInt16((i + 1) * 8 + 6, true);
      const e = list[i] as PollEntry;
      if (revents === 0 || !e.enabled || !this.entries.has(e)) continue;
      try {
        e.ready(revents);
      } catch (err) {
        thrown ??= err;
      }
    }
    this.dispatching = false;
    this.arm();
    if (thrown !== undefined) throw thrown;
  };
}

let poller: SharedPoller | undefined;
function sharedPoller(c: Libc): SharedPoller {
  poller ??= new SharedPoller(c);
  return poller;
}

/** A BackendError for a failed call, with the errno's usual meaning for taps spelled out. */
function errnoError(what: string, errnum: number, context = ''): BackendError {
  const name = errnoName(errnum);
  let hint = '';
  if (errnum === Errno.EPERM || errnum === Errno.EACCES)
    hint = ': needs CAP_NET_ADMIN (run as root or grant the capability), or the tap belongs to another user';
  else if (errnum === Errno.EBUSY)
    hint =
      ': the interface name is in use (by a non-tap or with other flags) or the queue is already attached';
  else if (errnum === Errno.ENOENT || errnum === Errno.ENODEV || errnum === Errno.ENXIO)
    hint = ': no /dev/net/tun (load the tun module, or give the container the device)';
  else if (errnum === Errno.EINVAL) hint = ': the kernel rejected the request (flags or value not supported)';
  let msg = `${what}${context} failed with ${name}${hint}`;
  try {
    msg += ` (${libc().strerror(errnum)})`;
  } catch {
    // strerror is cosmetic
  }
  return new BackendError(msg, errnum, name);
}

/** Per queue pair state. */
interface Queue {
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

/** A tap device as a NetBackend. Create with `TapBackend.open` or `TapBackend.adopt`. */
export class TapBackend implements NetBackend {
  readonly capabilities: BackendCapabilities;
  /** The interface name the kernel gave the tap. */
  readonly name: string;
  /** TUNGETFEATURES: the IFF_* flags this kernel's tun driver supports. */
  readonly features: number;
  /** Whether the fds carry a vnet header (IFF_VNET_HDR). */
  readonly vnetHeader: boolean;

  private readonly c: Libc;
  private readonly queues: Queue[];
  private readonly multiQueue: boolean;
  private sink: BackendSink | null = null;
  private closed = false;
  private gone = false;
  private hdrSize: number;
  /** rx buffer: [vnet header][frame]; views over it are cached per length so receive allocates nothing. */
  private readonly rxBuf = new Uint8Array(VNET_HDR_BASE + 10 + MAX_FRAME);
  private rxFrameViews: Uint8Array[] = [];
  private readonly rxOffload: NetOffload = emptyOffload();
  private readonly txBuf = new Uint8Array(VNET_HDR_BASE + 10 + MAX_FRAME);
  /** Zero copy (TapOpenOptions.zeroCopy): iovecs for readv into lent guest buffers and writev from guest memory. */
  zeroCopy = true;
  /** TapOpenOptions.zeroCopyRxMinBytes. */
  zeroCopyRxMinBytes = ZERO_COPY_RX_MIN_BYTES;
  /** TapOpenOptions.rssSteering; the loaded program while the guest's RSS is applied by the kernel. */
  rssSteering = true;
  private steering: TapSteering | null = null;
  /** TapOpenOptions.batchTx; the ring (created on the first batch), or null when io_uring is unusable. */
  batchTx = true;
  private ring: IoUring | null | undefined;
  /** Frames transmitRange queued for flushTransmit: per slot its header, iovecs, fd and frame length. */
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
  private readonly target = new ReceiveTarget();
  private readonly rxIov = new Uint32Array(4 * (ReceiveTarget.MAX_SEGMENTS + 1));
  private readonly txIov = new Uint32Array(8);
  /** Host addresses of guest-memory regions (and our buffers), resolved once per array. */
  private readonly addresses = new WeakMap<Uint8Array, number>();
  private lastBytes: Uint8Array | null = null;
  private lastAddress = 0;
  /** Host addresses of rxBuf / txBuf (0: not resolved yet); kept apart so the region cache stays hot. */
  private rxBufAddress = 0;
  /** Index of the overflow iovec last written into rxIov (-1: none). */
  private rxOverflowAt = -1;
  private txBufAddress = 0;
  /** The first 10 header bytes in txBuf hold a previous frame's offload (not all zero). */
  private txHdrDirty = false;
  private readonly s: TapStats = {
    rxFrames: 0,
    rxBytes: 0,
    rxDirect: 0,
    rxDirectBytes: 0,
    rxErrors: 0,
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
  /** Last error of a guest-driven ioctl (setOffloads, setQueuePairEnabled), for diagnostics. */
  lastError: BackendError | null = null;
  /** Host link watch (TapOpenOptions.watchLink); started by attach, stopped by close. */
  private watchLink = true;
  private linkWatch: TapLinkWatch | null = null;

  private constructor(c: Libc, fds: number[], name: string, flags: number, features: number) {
    this.c = c;
    this.name = name;
    this.features = features;
    this.vnetHeader = (flags & IFF_VNET_HDR) !== 0;
    this.multiQueue = (flags & IFF_MULTI_QUEUE) !== 0;
    this.hdrSize = this.vnetHeader ? VNET_HDR_BASE : 0;
    if (this.vnetHeader) {
      const sz = new Int32Array(1);
      if (c.ioctlPtr(fds[0] as number, TUNGETVNETHDRSZ, sz) === 0) this.hdrSize = sz[0] as number;
    }
    this.queues = fds.map((fd, qp) => {
      const q: Queue = {
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
    const offloads = this.vnetHeader ? probeOffloads(c, fds[0] as number) : noOffloads();
    // tun's automq steers flows over the queues of a multiqueue tap (tun_automq_select_queue).
    this.capabilities = {
      vnetHeader: this.vnetHeader,
      offloads,
      queuePairs: fds.length,
      steersFlows: this.multiQueue && fds.length > 1,
    };
  }

  /**
   * Creates (or attaches to) a tap: opens /dev/net/tun once per queue pair and TUNSETIFF with
   * IFF_TAP | IFF_NO_PI [| IFF_VNET_HDR] [| IFF_MULTI_QUEUE]. Offloads start off (the kernel hands over
   * plain, checksummed frames) until the device calls `setOffloads`.
   */
  static open(options: TapOpenOptions = {}): TapBackend {
    const queues = options.queues ?? 1;
    if (!Number.isInteger(queues) || queues < 1 || queues > 256)
      throw new OptionsError(`TapBackend.open: queues must be an integer in 1..256, got ${queues}`);
    const name = options.name ?? '';
    if (Buffer.byteLength(name) >= IFNAMSIZ || /[\s/:]/.test(name))
      throw new OptionsError(
        `TapBackend.open: name must be < 16 bytes without spaces, '/' or ':', got '${name}'`,
      );
    const c = libc();
    const vnet = options.vnetHeader ?? true;
    let flags = IFF_TAP | IFF_NO_PI | (vnet ? IFF_VNET_HDR : 0);
    if (queues > 1) flags |= IFF_MULTI_QUEUE;
    const fds: number[] = [];
    const ifr = new Uint8Array(IFREQ_SIZE);
    const ifrView = new DataView(ifr.buffer);
    let features = 0;
    let actual = name;
    try {
      for (let i = 0; i < queues; i++) {
        const fd = c.open('/dev/net/tun', O_RDWR | O_NONBLOCK | O_CLOEXEC, 0);
        if (fd < 0) throw errnoError('open(/dev/net/tun)', c.errno());
        fds.push(fd);
        if (i === 0) {
          const f = new Uint32Array(1);
          if (c.ioctlPtr(fd, TUNGETFEATURES, f) === 0) features = f[0] as number;
          if (queues > 1 && features !== 0 && !(features & IFF_MULTI_QUEUE))
            throw new BackendError('TapBackend.open: this kernel has no multiqueue tap (IFF_MULTI_QUEUE)');
          if (vnet && features !== 0 && !(features & IFF_VNET_HDR))
            throw new BackendError('TapBackend.open: this kernel has no IFF_VNET_HDR; use vnetHeader: false');
        }
        ifr.fill(0);
        Buffer.from(ifr.buffer).write(actual, 0, IFNAMSIZ - 1);
        ifrView.setUint16(IFNAMSIZ, flags, true);
        if (c.ioctlPtr(fd, TUNSETIFF, ifr) < 0)
          throw errnoError('TUNSETIFF', c.errno(), ` on '${actual || 'tap%d'}'`);
        const end = ifr.indexOf(0);
        actual = Buffer.from(ifr.subarray(0, end < 0 || end > IFNAMSIZ ? IFNAMSIZ : end)).toString();
      }
      if (options.netns) {
        try {
          execFileSync('ip', ['link', 'set', 'dev', actual, 'netns', options.netns], { stdio: 'pipe' });
        } catch (err) {
          throw new BackendError(
            `TapBackend.open: cannot move '${actual}' into netns '${options.netns}': ${String((err as { stderr?: Buffer }).stderr ?? err).trim()}`,
          );
        }
      }
      const tap = new TapBackend(c, fds, actual, flags, features);
      tap.watchLink = options.watchLink ?? true;
      tap.zeroCopy = options.zeroCopy ?? true;
      tap.rssSteering = options.rssSteering ?? true;
      tap.batchTx = options.batchTx ?? true;
      tap.zeroCopyRxMinBytes = zeroCopyRxMin(options.zeroCopyRxMinBytes, 'open');
      return tap;
    } catch (err) {
      for (const fd of fds) c.close(fd);
      throw err;
    }
  }

  /**
   * Takes ownership of tap fds the VMM opened (one per queue pair, same tap): sets O_NONBLOCK and reads
   * the interface name and flags back with TUNGETIFF. `close()` closes them.
   */
  static adopt(fds: number[], options: TapAdoptOptions = {}): TapBackend {
    if (fds.length < 1 || fds.some((fd) => !Number.isInteger(fd) || fd < 0))
      throw new OptionsError('TapBackend.adopt: fds must be a non-empty array of open file descriptors');
    const c = libc();
    const ifr = new Uint8Array(IFREQ_SIZE);
    let name = '';
    let flags = 0;
    for (const fd of fds) {
      ifr.fill(0);
      if (c.ioctlPtr(fd, TUNGETIFF, ifr) < 0)
        throw errnoError('TUNGETIFF', c.errno(), ` on fd ${fd} (is it a tap fd?)`);
      const end = ifr.indexOf(0);
      const n = Buffer.from(ifr.subarray(0, end < 0 || end > IFNAMSIZ ? IFNAMSIZ : end)).toString();
      const f = new DataView(ifr.buffer).getUint16(IFNAMSIZ, true);
      if (name && n !== name)
        throw new OptionsError(`TapBackend.adopt: fds belong to different taps ('${name}', '${n}')`);
      name = n;
      flags = f;
      if (!(f & IFF_TAP) || !(f & IFF_NO_PI))
        throw new OptionsError(`TapBackend.adopt: fd ${fd} must be a tap opened with IFF_TAP | IFF_NO_PI`);
      const fl = c.fcntl(fd, F_GETFL, 0);
      if (fl < 0 || c.fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        throw errnoError('fcntl(O_NONBLOCK)', c.errno());
    }
    if (options.vnetHeader !== undefined && options.vnetHeader !== ((flags & IFF_VNET_HDR) !== 0))
      throw new OptionsError(
        `TapBackend.adopt: vnetHeader ${options.vnetHeader} does not match the tap (IFF_VNET_HDR is ${flags & IFF_VNET_HDR ? 'on' : 'off'})`,
      );
    if (fds.length > 1 && !(flags & IFF_MULTI_QUEUE))
      throw new OptionsError('TapBackend.adopt: several fds need a tap opened with IFF_MULTI_QUEUE');
    const f = new Uint32Array(1);
    const features = c.ioctlPtr(fds[0] as number, TUNGETFEATURES, f) === 0 ? (f[0] as number) : 0;
    const tap = new TapBackend(c, [...fds], name, flags, features);
    tap.zeroCopy = options.zeroCopy ?? true;
    tap.rssSteering = options.rssSteering ?? true;
    tap.batchTx = options.batchTx ?? true;
    tap.zeroCopyRxMinBytes = zeroCopyRxMin(options.zeroCopyRxMinBytes, 'adopt');
    return tap;
  }

  /** The header size on the fds now (TUNGETVNETHDRSZ as last set; 0 without IFF_VNET_HDR). */
  get vnetHeaderSize(): number {
    return this.hdrSize;
  }

  /** The fds, one per queue pair (-1 once closed). */
  get fds(): readonly number[] {
    return this.queues.map((q) => q.fd);
  }

  attach(sink: BackendSink): void {
    if (this.sink) throw new BackendError('TapBackend.attach: already attached');
    this.sink = sink;
    if (this.closed || this.gone) return;
    const p = sharedPoller(this.c);
    for (const q of this.queues) {
      q.entry.enabled = !q.paused && q.attached;
      p.add(q.entry);
    }
    if (this.watchLink) this.startLinkWatch();
  }

  /** Host link changes reach the device; a watch that cannot start is recorded, never thrown. */
  private startLinkWatch(): void {
    const fail = (e: Error) => {
      if (this.closed || this.gone) return;
      this.lastError = e instanceof BackendError ? e : new BackendError(e.message);
    };
    try {
      this.linkWatch = TapLinkWatch.start(
        this.queues[0]?.fd as number,
        (up) => this.sink?.linkChanged?.(up),
        fail,
      );
    } catch (e) {
      fail(e as Error);
    }
  }

  transmit(frame: Uint8Array, queuePair: number, offload: NetOffload | null): TransmitResult {
    if (this.txQueued > 0) this.txFailedUnreported += this.sendQueued(); // keep the wire order
    const q = this.queues[queuePair];
    if (q === undefined) return this.drop('invalid');
    if (this.closed || this.gone || !q.attached) return this.drop('down');
    const hs = this.hdrSize;
    const len = frame.length;
    if (len + hs > this.txBuf.length) return this.drop('invalid');
    this.putTxHeader(offload);
    this.txBuf.set(frame, hs);
    return this.txResult(this.c.write(q.fd, this.txBuf, len + hs), len + hs, false);
  }

  /**
   * The frame at `bytes[offset, offset + length)` (a guest-memory region, from the device): one writev
   * of [header, frame in place]. Without zeroCopy, as `transmit` on a view.
   */
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
    if (this.closed || this.gone || !q.attached) return this.drop('down');
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
    setIovec(iov, n++, this.addressOf(bytes) + offset, length);
    return this.txResult(this.c.writev(q.fd, iov, n), length + hs, true);
  }

  /**
   * Sends what transmitRange queued: one writev for a single frame, else one io_uring submission for all
   * (tap writes complete inside it). Returns how many queued frames failed (counted in the tx stats).
   * The device calls it before it gives the chains back to the guest: the iovecs point into them.
   */
  flushTransmit(_queuePair: number): number {
    const failed = this.txFailedUnreported + (this.txQueued > 0 ? this.sendQueued() : 0);
    this.txFailedUnreported = 0;
    return failed;
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
      // Bytes past the first 10 (num_buffers, hash) stay zero: the kernel skips them on tx.
      writeVnetHeader(h, o, offload);
      if (hs > VNET_HDR_OFFLOAD_BYTES) h.fill(0, o + VNET_HDR_OFFLOAD_BYTES, o + hs);
      if (this.txSlotHeadersAddress === 0) this.txSlotHeadersAddress = this.c.addressOf(h);
      setIovec(iov, 2 * i + n++, this.txSlotHeadersAddress + o, hs);
    }
    setIovec(iov, 2 * i + n++, this.addressOf(bytes) + offset, length);
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
      this.lastError = new BackendError(`TapBackend: ${n - got} io_uring tap writes did not complete`);
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
      this.lastError = e instanceof BackendError ? e : new BackendError(String((e as Error)?.message ?? e));
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
    // Bytes past the first 10 (num_buffers, hash) stay zero: the kernel skips them on tx.
    if (offload === null && !this.txHdrDirty) return;
    writeVnetHeader(this.txBuf, 0, offload);
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
    if (isGoneErrno(e)) this.vanished();
    return this.drop('down');
  }

  /** Host address of `bytes[0]`: one FFI call per array, then a cache hit. */
  private addressOf(bytes: Uint8Array): number {
    if (bytes === this.lastBytes) return this.lastAddress;
    let a = this.addresses.get(bytes);
    if (a === undefined) {
      a = this.c.addressOf(bytes);
      this.addresses.set(bytes, a);
    }
    this.lastBytes = bytes;
    this.lastAddress = a;
    return a;
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
      setIovec(iov, i, this.addressOf(b) + o, l);
    }
    // The overflow iovec only moves when the segment count does.
    if (t.count !== this.rxOverflowAt) {
      if (this.rxBufAddress === 0) this.rxBufAddress = this.c.addressOf(this.rxBuf);
      setIovec(iov, t.count, this.rxBufAddress, this.rxBuf.length);
      this.rxOverflowAt = t.count;
    }
    return t.count + 1;
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

  /**
   * TUNSETOFFLOAD from the guest's choice: the kernel then hands over frames with those offloads left
   * undone (partial checksum, GSO super-frames) and segments/checksums everything else itself. Requests
   * beyond `capabilities.offloads` are ignored; TSO/UFO/USO need csum, ECN needs TSO, and the kernel only
   * takes USO4 and USO6 together (tun.c set_offload), so a lone USO4 or USO6 stays off.
   */
  setOffloads(offloads: BackendOffloads): void {
    if (!this.vnetHeader || this.closed || this.gone) return;
    const bits = offloadBits(offloads, this.capabilities.offloads);
    if (this.c.ioctlVal(this.queues[0]?.fd as number, TUNSETOFFLOAD, bits) < 0)
      this.ioctlFailed('TUNSETOFFLOAD');
  }

  /**
   * The negotiated header size: TUNSETVNETHDRSZ (the tap is one device: any fd sets it for all queues).
   * Only the first 10 bytes carry offload data either way (see docs/backends.md). Called by the device at
   * feature negotiation, so it never throws: without IFF_VNET_HDR it does nothing (the header is then the
   * device's alone), an unsupported size or a failed ioctl is recorded in `lastError`/`ioctlErrors`.
   */
  setVnetHeaderSize(size: number): void {
    if (!this.vnetHeader || this.closed || this.gone) return;
    if (size !== 10 && size !== 12 && size !== 20 && size !== 24) {
      this.s.ioctlErrors++;
      this.lastError = new BackendError(
        `TapBackend.setVnetHeaderSize: size must be 10, 12, 20 or 24, got ${size}`,
      );
      return;
    }
    const sz = new Int32Array([size]);
    if (this.c.ioctlPtr(this.queues[0]?.fd as number, TUNSETVNETHDRSZ, sz) < 0) {
      this.ioctlFailed('TUNSETVNETHDRSZ');
      return;
    }
    this.hdrSize = size;
    this.rxFrameViews = [];
    this.txBuf.fill(0, 0, size); // frame bytes of the old layout may sit where the header tail now is
    this.txHdrDirty = false;
  }

  /**
   * TUNSETQUEUE IFF_ATTACH_QUEUE / IFF_DETACH_QUEUE on a multiqueue tap (QEMU: tap_fd_enable/disable).
   * A detached queue is neither polled nor written. A single-queue tap only records the state.
   */
  setQueuePairEnabled(queuePair: number, enabled: boolean): void {
    const q = this.queues[queuePair];
    if (!q || q.attached === enabled || this.closed || this.gone) return;
    if (this.multiQueue) {
      const ifr = new Uint8Array(IFREQ_SIZE);
      new DataView(ifr.buffer).setUint16(IFNAMSIZ, enabled ? IFF_ATTACH_QUEUE : IFF_DETACH_QUEUE, true);
      if (this.c.ioctlPtr(q.fd, TUNSETQUEUE, ifr) < 0) {
        this.ioctlFailed('TUNSETQUEUE');
        return;
      }
    }
    q.attached = enabled;
    this.updatePoll(q);
  }

  /**
   * The guest's RSS in the kernel (NetBackend.setRssSteering): on a multiqueue tap, an eBPF program
   * attached with TUNSETSTEERINGEBPF picks the tap queue by Toeplitz hash and indirection table, so each
   * frame is read from the fd of the queue pair RSS names. Loaded on first use, then only its map is
   * rewritten; null detaches it (tun's automq again). False (software RSS in the device) on a
   * single-queue tap, with `rssSteering: false`, or when the kernel refuses (recorded in `lastError`).
   */
  setRssSteering(config: BackendRssConfig | null): boolean {
    if (config === null || !this.rssSteering || !this.multiQueue || this.closed || this.gone) {
      this.stopSteering();
      return false;
    }
    const c = {
      key: config.key,
      hashTypes: config.hashTypes,
      table: Array.from(config.table),
      defaultQueue: config.defaultQueue,
    };
    try {
      if (this.steering) this.steering.update(c);
      else {
        const st = TapSteering.load(c);
        try {
          st.attach(this.queues[0]?.fd as number);
        } catch (e) {
          st.close();
          throw e;
        }
        this.steering = st;
      }
      this.s.rssSteeringUpdates++;
      return true;
    } catch (e) {
      this.s.ioctlErrors++;
      this.lastError = e instanceof BackendError ? e : new BackendError(String((e as Error)?.message ?? e));
      this.stopSteering();
      return false;
    }
  }

  /** Detaches and unloads the steering program, if any. Never throws. */
  private stopSteering(): void {
    const st = this.steering;
    if (!st) return;
    this.steering = null;
    try {
      if (!this.closed && !this.gone) st.detach(this.queues[0]?.fd as number);
    } catch {
      // the tap is going away: tun drops the program with it
    }
    st.close();
  }

  /**
   * TUNSETCARRIER: the kernel side of the link (what `ip link` shows as NO-CARRIER / LOWER_UP). The device
   * calls it with its link state (NetBackend.setCarrier), so it never throws: a closed or vanished tap
   * ignores it, a failed ioctl is recorded in `lastError` / `ioctlErrors`.
   */
  setCarrier(up: boolean): void {
    if (this.closed || this.gone || this.linkWatch?.applyCarrier(up) === false) return; // echo of a host change
    const v = new Int32Array([up ? 1 : 0]);
    if (this.c.ioctlPtr(this.queues[0]?.fd as number, TUNSETCARRIER, v) < 0)
      this.ioctlFailed('TUNSETCARRIER');
    else this.linkWatch?.carrierApplied(up);
  }

  /** A snapshot of the counters. */
  stats(): TapStats {
    return { ...this.s };
  }

  /** Whether the guest's RSS is applied in the kernel now (an eBPF steering program is attached). */
  get rssSteeringActive(): boolean {
    return this.steering !== null;
  }

  /** True once `close()` ran or the tap vanished. */
  get isClosed(): boolean {
    return this.closed || this.gone;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.release();
  }

  private release(): void {
    this.stopSteering();
    // Frames still queued are lost with the tap (the device flushes every burst, so this is rare).
    for (; this.txQueued > 0; this.txQueued--) this.drop('down');
    this.closeRing();
    this.linkWatch?.close();
    this.linkWatch = null;
    for (const q of this.queues) {
      q.entry.enabled = false;
      poller?.remove(q.entry);
    }
    // Close after the poller let go (the in-flight poll holds its own file reference; a reused fd number
    // would only produce a spurious EAGAIN read, which is harmless).
    for (const q of this.queues) {
      if (q.fd >= 0) this.c.close(q.fd);
      q.fd = -1;
    }
  }

  private updatePoll(q: Queue): void {
    const want = !q.paused && q.attached && !q.draining && this.sink !== null && !this.closed && !this.gone;
    if (q.entry.enabled === want) return;
    q.entry.enabled = want;
    if (this.sink) poller?.changed();
  }

  /** Drains `q` on the next turn of the event loop (coalesced). */
  private scheduleDrain(q: Queue): void {
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
  private onReadable(q: Queue, revents: number, fromPoll = true): void {
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
  private readBatch(q: Queue, revents: number): boolean {
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
      if (q.paused || !q.attached || this.closed || this.gone) return false;
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
      if (hs > 0) off = readVnetHeader(buf, 0, this.rxOffload);
      this.s.rxFrames++;
      this.s.rxBytes += len;
      sink.receive(frame, q.qp, off);
      if (i === RX_BUDGET - 1) return true;
    }
    if (revents & (POLLERR | POLLHUP | POLLNVAL) && !this.closed && !this.gone) {
      // tun reports POLLERR once its device is gone; confirm with a read before declaring it.
      const n = c.read(q.fd, buf, buf.length);
      if (n < 0 && isGoneErrno(c.errno())) this.vanished();
    }
    return false;
  }

  /** The tap was deleted under us: stop everything, tell the device the link is down, keep counting drops. */
  private vanished(): void {
    if (this.gone || this.closed) return;
    this.gone = true;
    this.release();
    this.sink?.linkChanged?.(false);
  }

  private drop(kind: 'busy' | 'invalid' | 'down'): TransmitResult {
    this.s.txDropped++;
    if (kind === 'busy') this.s.txDroppedBusy++;
    else if (kind === 'invalid') this.s.txDroppedInvalid++;
    else this.s.txDroppedDown++;
    return 'dropped';
  }

  private ioctlFailed(what: string): void {
    const e = this.c.errno();
    this.s.ioctlErrors++;
    this.lastError = errnoError(what, e, ` on '${this.name}'`);
    if (isGoneErrno(e)) this.vanished();
  }
}

/**
 * The tap no longer exists (tun.c answers EBADFD once the interface is deleted). Not EIO: that is a
 * write to a tap that is administratively down (`ip link set … down`), which comes back up.
 */
function isGoneErrno(e: number): boolean {
  return e === Errno.EBADFD || e === Errno.ENODEV || e === Errno.ENXIO || e === Errno.EBADF;
}

function noOffloads(): BackendOffloads {
  return { csum: false, tso4: false, tso6: false, ecn: false, ufo: false, uso4: false, uso6: false };
}

/** TUN_F_* bits for `want`, limited to `can` and to the combinations the kernel takes. */
export function offloadBits(want: BackendOffloads, can: BackendOffloads): number {
  if (!(want.csum && can.csum)) return 0;
  let bits = TUN_F_CSUM;
  if (want.tso4 && can.tso4) bits |= TUN_F_TSO4;
  if (want.tso6 && can.tso6) bits |= TUN_F_TSO6;
  if (want.ecn && can.ecn && bits & (TUN_F_TSO4 | TUN_F_TSO6)) bits |= TUN_F_TSO_ECN;
  if (want.ufo && can.ufo) bits |= TUN_F_UFO;
  if (want.uso4 && want.uso6 && can.uso4 && can.uso6) bits |= TUN_F_USO4 | TUN_F_USO6;
  return bits;
}

/** Which TUNSETOFFLOAD combinations this kernel accepts; leaves the tap with offloads off. */
function probeOffloads(c: Libc, fd: number): BackendOffloads {
  const ok = (bits: number) => c.ioctlVal(fd, TUNSETOFFLOAD, bits) === 0;
  const csum = ok(TUN_F_CSUM);
  const o: BackendOffloads = {
    csum,
    tso4: csum && ok(TUN_F_CSUM | TUN_F_TSO4),
    tso6: csum && ok(TUN_F_CSUM | TUN_F_TSO6),
    ecn: csum && ok(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO_ECN),
    ufo: csum && ok(TUN_F_CSUM | TUN_F_UFO),
    uso4: false,
    uso6: false,
  };
  o.uso4 = o.uso6 = csum && ok(TUN_F_CSUM | TUN_F_USO4 | TUN_F_USO6);
  c.ioctlVal(fd, TUNSETOFFLOAD, 0);
  return o;
}

/** iovec `i` of an array of `struct iovec { void *base; size_t len; }` (x86-64/aarch64), as 32-bit words. */
function setIovec(iov: Uint32Array, i: number, address: number, length: number): void {
  iov[4 * i] = address >>> 0;
  iov[4 * i + 1] = Math.floor(address / 0x1_0000_0000);
  iov[4 * i + 2] = length;
  iov[4 * i + 3] = 0;
}

function zeroCopyRxMin(v: number | undefined, where: string): number {
  if (v === undefined) return ZERO_COPY_RX_MIN_BYTES;
  if (!Number.isInteger(v) || v < 0)
    throw new OptionsError(
      `TapBackend.${where}: zeroCopyRxMinBytes must be a non-negative integer, got ${v}`,
    );
  return v;
}
