/**
 * A kernel tap as a NetBackend, driven through koffi (as QEMU's `-netdev tap` drives it: net/tap-linux.c).
 *
 * One tap fd per queue pair (IFF_MULTI_QUEUE when more than one). Frames cross the fd with a
 * `struct virtio_net_hdr` in front when IFF_VNET_HDR is on (VIRTIO 1.3 §5.1.6; Linux tun_vnet.h), which
 * this module converts to/from the caller's `NetOffload` record.
 *
 * The rooms: tap-fd.ts opens (or adopts) the fds and wraps the TUN* ioctls; rx.ts reads frames when the
 * thread's poller (poller.ts: a uv_poll handle per queue) finds an fd readable, up to 64 per io_uring submission with `batchRx`
 * (rx-batch.ts), or one at a time straight into lent guest buffers where that pays;
 * tx.ts writes guest frames from guest memory, a burst per io_uring submission with `batchTx`; this class
 * wires them to the device and owns the lifecycle (close, the tap vanishing under us).
 *
 * Receive steering: a multiqueue tap steers flows itself (tun's automq), or, once the guest configures
 * RSS, by an eBPF program that applies it in the kernel (lib/tap/steering.ts). The host side of the link
 * is watched through rtnetlink (lib/host/link-monitor.ts).
 */
import { BackendError, OptionsError } from '../errors.js';
import { type Libc, libc } from '../host/libc.js';
import { TapLinkWatch } from '../host/link-monitor.js';
import type {
  BackendCapabilities,
  BackendOffloads,
  BackendRssConfig,
  BackendSink,
  NetBackend,
  NetOffload,
  TransmitResult,
} from '../net/backend.js';
import { VNET_HDR_OFFLOAD_BYTES } from '../net/vnet-header.js';
import { HostAddresses } from './iovec.js';
import {
  newTapStats,
  type TapAdoptOptions,
  type TapOpenOptions,
  type TapStats,
  zeroCopyRxMin,
} from './options.js';
import { type TapQueue, TapRx } from './rx.js';
import { TapSteering } from './steering.js';
import {
  adoptTapFds,
  errnoError,
  IFF_MULTI_QUEUE,
  IFF_VNET_HDR,
  isGoneErrno,
  noOffloads,
  offloadBits,
  openTapFds,
  probeOffloads,
  setCarrier,
  setOffloadBits,
  setQueueAttached,
  setVnetHeaderSize,
  type TapFds,
  vnetHeaderSize,
} from './tap-fd.js';
import { TapTx } from './tx.js';

export type { TapAdoptOptions, TapOpenOptions, TapStats } from './options.js';

const IFNAMSIZ = 16;

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
  private readonly queues: TapQueue[];
  private readonly multiQueue: boolean;
  private readonly rx: TapRx;
  private readonly tx: TapTx;
  private sink: BackendSink | null = null;
  private closed = false;
  private gone = false;
  private hdrSize: number;
  /** TapOpenOptions.rssSteering; the loaded program while the guest's RSS is applied by the kernel. */
  rssSteering = true;
  private steering: TapSteering | null = null;
  private readonly s: TapStats = newTapStats();
  /** Last error of a guest-driven ioctl (setOffloads, setQueuePairEnabled), for diagnostics. */
  lastError: BackendError | null = null;
  /** Host link watch (TapOpenOptions.watchLink); started by attach, stopped by close. */
  private watchLink = true;
  private linkWatch: TapLinkWatch | null = null;

  private constructor(c: Libc, tap: TapFds) {
    const { fds, flags } = tap;
    this.c = c;
    this.name = tap.name;
    this.features = tap.features;
    this.vnetHeader = (flags & IFF_VNET_HDR) !== 0;
    this.multiQueue = (flags & IFF_MULTI_QUEUE) !== 0;
    this.hdrSize = this.vnetHeader ? vnetHeaderSize(c, fds[0] as number, VNET_HDR_OFFLOAD_BYTES) : 0;
    const addresses = new HostAddresses(c);
    this.rx = new TapRx(
      c,
      fds,
      this.s,
      addresses,
      () => this.vanished(),
      this.hdrSize,
      (e) => {
        this.lastError = e;
      },
    );
    this.queues = this.rx.queues;
    this.tx = new TapTx(
      c,
      this.queues,
      this.s,
      addresses,
      {
        vanished: () => this.vanished(),
        error: (e) => {
          this.lastError = e;
        },
      },
      this.hdrSize,
    );
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
    const tap = openTapFds(c, name, queues, options.vnetHeader ?? true, options.netns);
    try {
      const b = new TapBackend(c, tap);
      b.watchLink = options.watchLink ?? true;
      b.zeroCopy = options.zeroCopy ?? true;
      b.rssSteering = options.rssSteering ?? true;
      b.batchTx = options.batchTx ?? true;
      b.batchRx = options.batchRx ?? true;
      b.zeroCopyRxMinBytes = zeroCopyRxMin(options.zeroCopyRxMinBytes, 'open');
      return b;
    } catch (err) {
      for (const fd of tap.fds) c.close(fd);
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
    const tap = new TapBackend(c, adoptTapFds(c, fds, options.vnetHeader));
    tap.zeroCopy = options.zeroCopy ?? true;
    tap.rssSteering = options.rssSteering ?? true;
    tap.batchTx = options.batchTx ?? true;
    tap.batchRx = options.batchRx ?? true;
    tap.zeroCopyRxMinBytes = zeroCopyRxMin(options.zeroCopyRxMinBytes, 'adopt');
    tap.watchLink = options.watchLink ?? true;
    return tap;
  }

  /** Zero copy (TapOpenOptions.zeroCopy): readv into lent guest buffers and writev from guest memory. */
  get zeroCopy(): boolean {
    return this.tx.zeroCopy;
  }
  set zeroCopy(on: boolean) {
    this.tx.zeroCopy = on;
    this.rx.zeroCopy = on;
  }

  /** TapOpenOptions.zeroCopyRxMinBytes. */
  get zeroCopyRxMinBytes(): number {
    return this.rx.zeroCopyRxMinBytes;
  }
  set zeroCopyRxMinBytes(bytes: number) {
    this.rx.zeroCopyRxMinBytes = bytes;
  }

  /** TapOpenOptions.batchTx. */
  get batchTx(): boolean {
    return this.tx.batchTx;
  }
  set batchTx(on: boolean) {
    this.tx.batchTx = on;
  }

  /** TapOpenOptions.batchRx. */
  get batchRx(): boolean {
    return this.rx.batchRx;
  }
  set batchRx(on: boolean) {
    this.rx.batchRx = on;
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
    this.rx.attach(sink);
    if (this.closed || this.gone) return;
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
    return this.tx.transmit(frame, queuePair, offload);
  }

  /**
   * The frame at `bytes[offset, offset + length)` (a guest-memory region, from the device): one writev
   * of [header, frame in place], or queued for `flushTransmit` with batchTx. Without zeroCopy, as
   * `transmit` on a view.
   */
  transmitRange(
    bytes: Uint8Array,
    offset: number,
    length: number,
    queuePair: number,
    offload: NetOffload | null,
  ): TransmitResult {
    return this.tx.transmitRange(bytes, offset, length, queuePair, offload);
  }

  /**
   * Sends what transmitRange queued: one writev for a single frame, else one io_uring submission for all
   * (tap writes complete inside it). Returns how many queued frames failed (counted in the tx stats).
   * The device calls it before it gives the chains back to the guest: the iovecs point into them.
   */
  flushTransmit(_queuePair: number): number {
    return this.tx.flush();
  }

  pause(queuePair: number): void {
    this.rx.pause(queuePair);
  }

  resume(queuePair: number): void {
    this.rx.resume(queuePair);
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
    if (!setOffloadBits(this.c, this.queues[0]?.fd as number, bits)) this.ioctlFailed('TUNSETOFFLOAD');
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
    if (!setVnetHeaderSize(this.c, this.queues[0]?.fd as number, size)) {
      this.ioctlFailed('TUNSETVNETHDRSZ');
      return;
    }
    this.hdrSize = size;
    this.rx.setHeaderSize(size);
    this.tx.setHeaderSize(size);
  }

  /**
   * TUNSETQUEUE IFF_ATTACH_QUEUE / IFF_DETACH_QUEUE on a multiqueue tap (QEMU: tap_fd_enable/disable).
   * A detached queue is neither polled nor written. A single-queue tap only records the state.
   */
  setQueuePairEnabled(queuePair: number, enabled: boolean): void {
    const q = this.queues[queuePair];
    if (!q || q.attached === enabled || this.closed || this.gone) return;
    if (this.multiQueue && !setQueueAttached(this.c, q.fd, enabled)) {
      this.ioctlFailed('TUNSETQUEUE');
      return;
    }
    q.attached = enabled;
    this.rx.updatePoll(q);
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
    if (!setCarrier(this.c, this.queues[0]?.fd as number, up)) this.ioctlFailed('TUNSETCARRIER');
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
    this.rx.down = true;
    this.tx.down = true;
    this.stopSteering();
    this.tx.close();
    this.linkWatch?.close();
    this.linkWatch = null;
    this.rx.stop();
    // Close after the poller let go: its handles are closed by rx.stop(), so epoll holds none of these.
    for (const q of this.queues) {
      if (q.fd >= 0) this.c.close(q.fd);
      q.fd = -1;
    }
  }

  /** The tap was deleted under us: stop everything, tell the device the link is down, keep counting drops. */
  private vanished(): void {
    if (this.gone || this.closed) return;
    this.gone = true;
    this.release();
    this.sink?.linkChanged?.(false);
  }

  private ioctlFailed(what: string): void {
    const e = this.c.errno();
    this.s.ioctlErrors++;
    this.lastError = errnoError(what, e, ` on '${this.name}'`);
    if (isGoneErrno(e)) this.vanished();
  }
}
