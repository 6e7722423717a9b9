/**
 * The virtio-net device (VIRTIO 1.3 §5.1): receive and transmit paths, the control virtqueue, multiqueue,
 * offloads, RSS / hash report and automatic flow steering. It implements the transport-independent
 * `VirtioDevice` and is a `BackendSink` for its network backend. Behaviour follows QEMU's
 * hw/net/virtio-net.c where QEMU is a defensible reading of the spec (docs/compatibility.md lists where
 * we differ).
 *
 * Hot paths (one tx chain, one rx frame) allocate nothing: chains, parse results, headers and the
 * gather buffer are reused.
 */

import { GuestMemoryError } from '../../lib/errors.js';
import type { GuestMemory } from '../../lib/memory/guest-memory.js';
import { memoryFence } from '../../lib/memory/fence.js';
import type { BackendOffloads, BackendSink, NetBackend, NetOffload } from '../../lib/net/backend.js';
import { emptyOffload, MAX_FRAME, ReceiveTarget } from '../../lib/net/backend.js';
import { ParsedPacket, parsePacket } from '../../lib/net/packet-parser.js';
import { VIRTIO_NET_HASH_REPORT_NONE } from '../../lib/net/rss-hash.js';
import { SEGMENT_OK, SoftwareSegmenter } from '../../lib/net/segmentation.js';
import { gatherReadable, scatterWritable } from '../../virtio/queue/descriptor-chain.js';
import type { VirtioDevice, VirtioDeviceContext } from '../../virtio/virtio-device.js';
import { DescriptorChain, type Virtqueue, VirtqueueError } from '../../virtio/queue/virtqueue.js';
import { ControlQueue } from './control-queue.js';
import { FlowSteering } from './flow-steering.js';
import { GsoType, NetHdrFlags, readVnetHeader, writeVnetHeader } from '../../lib/net/vnet-header.js';
import { type RssSnapshot, RssState } from './rss.js';
import { RxFilter, type RxFilterState } from './rx-filter.js';
import { NetConfig, NetStatus, netConfigLength } from './config.js';
import {
  GUEST_OFFLOAD_MASK,
  has,
  NetF,
  netFeatureDependencyError,
  netHeaderSize,
  offeredNetFeatures,
  VIRTIO_F_VERSION_1,
} from './features.js';
import type { VirtioNetPciConfig } from './options.js';

export { MAX_FRAME };
/** Frames held per rx queue while the guest has no buffers (then counted as dropped). */
export const RX_BACKLOG = 256;
/** Chains handled per tx kick before yielding to the event loop (QEMU's tx_burst default). */
export const TX_BURST = 256;
/** Frame bytes the receive filter reads (MACs, one VLAN tag): a lent buffer's first segment holds them. */
const FILTER_BYTES = 16;

/** Per-queue-pair counters. */
export class QueueStats {
  rxPackets = 0;
  rxBytes = 0;
  /** Frames for this pair dropped: no buffers and a full backlog, too big for the buffer, reset. */
  rxDropped = 0;
  /** Frames the receive filter rejected (not counted in rxDropped). */
  rxFiltered = 0;
  rxBacklogged = 0;
  rxInterrupts = 0;
  txPackets = 0;
  txBytes = 0;
  /** Frames taken from the tx queue and not sent: malformed, too big, backend refused, link down. */
  txDropped = 0;
  txInterrupts = 0;
  txKicks = 0;
}

/** JSON-serialisable device state (the transport keeps queue state). */
export interface NetSnapshot {
  mac: number[];
  status: number;
  linkUp: boolean;
  curQueuePairs: number;
  guestOffloads: string;
  rxFilter: RxFilterState;
  rss: RssSnapshot;
}

/** Device-wide counters. */
export interface NetDeviceStats {
  /** Frames dropped before a queue was chosen (device not running, queue pair disabled). */
  rxDroppedNotReady: number;
  ctrlCommands: number;
  ctrlErrors: number;
  /** Guest errors that set DEVICE_NEEDS_RESET. */
  guestErrors: number;
}

/** A bounded FIFO of frames copied out of the backend's buffers. Slots are reused. */
class Backlog {
  private readonly frames: Uint8Array[] = [];
  private readonly lengths: number[] = [];
  private readonly offloads: NetOffload[] = [];
  private readonly hasOffload: boolean[] = [];
  private readonly backendQueue: number[] = [];
  private readonly hashes: number[] = [];
  private readonly reports: number[] = [];
  private head = 0;
  count = 0;

  constructor(readonly capacity: number) {}

  push(
    frame: Uint8Array,
    offload: NetOffload | null,
    backendQueue: number,
    hash: number,
    report: number,
  ): boolean {
    if (this.count === this.capacity) return false;
    const slot = (this.head + this.count) % this.capacity;
    let buf = this.frames[slot];
    if (!buf || buf.length < frame.length) {
      buf = new Uint8Array(Math.max(frame.length, 2048));
      this.frames[slot] = buf;
      this.offloads[slot] = emptyOffload();
    }
    buf.set(frame);
    this.lengths[slot] = frame.length;
    this.hasOffload[slot] = offload !== null;
    if (offload) Object.assign(this.offloads[slot]!, offload);
    this.backendQueue[slot] = backendQueue;
    this.hashes[slot] = hash;
    this.reports[slot] = report;
    this.count++;
    return true;
  }

  peekFrame(): Uint8Array {
    return this.frames[this.head]!.subarray(0, this.lengths[this.head]);
  }

  peekOffload(): NetOffload | null {
    return this.hasOffload[this.head] ? this.offloads[this.head]! : null;
  }

  peekHash(): number {
    return this.hashes[this.head]!;
  }

  peekReport(): number {
    return this.reports[this.head]!;
  }

  shift(): void {
    this.head = (this.head + 1) % this.capacity;
    this.count--;
  }

  clear(): number {
    const n = this.count;
    this.head = 0;
    this.count = 0;
    return n;
  }
}

/** Outcome of delivering one frame into an rx queue. */
enum Delivery {
  Delivered,
  NoBuffers,
  Dropped,
}

export class VirtioNet implements VirtioDevice, BackendSink {
  readonly deviceId = 1;
  readonly maxQueuePairs: number;
  readonly offered: bigint;
  readonly mac = new Uint8Array(6);
  readonly rxFilter = new RxFilter();
  readonly rss: RssState;
  readonly flows = new FlowSteering();
  readonly queueStats: QueueStats[];
  readonly deviceStats: NetDeviceStats = {
    rxDroppedNotReady: 0,
    ctrlCommands: 0,
    ctrlErrors: 0,
    guestErrors: 0,
  };

  /** Transport bits the embedding object adds (VIRTIO_F_SR_IOV on an SR-IOV PF). */
  extraFeatures = 0n;
  /** `struct virtio_net_config` status field. */
  status = 0;
  linkUp = true;
  /** Queue pairs in use (VQ_PAIRS_SET / RSS max_tx_vq); 1 after reset. */
  curQueuePairs = 1;
  /** Current guest offloads (feature-bit layout), from negotiation or CTRL_GUEST_OFFLOADS_SET. */
  guestOffloads = 0n;
  /** Offloads as `Offload` bits (no BigInt work per frame): what the guest may ask of us on tx, and
   * what it accepts on rx. */
  private hostOffloadMask = 0;
  private guestOffloadMask = 0;

  private ctx: VirtioDeviceContext | null = null;
  /** The `mac` option: reset returns to it after MAC_ADDR_SET (QEMU virtio_net_reset). */
  private readonly configuredMac: Uint8Array;
  private features = 0n;
  private hdrSize = 12;
  private mergeable = false;
  /** MQ or RSS negotiated: the control queue moves to index 2 * maxQueuePairs. */
  private multiqueue = false;
  private driverVersion1 = false;

  private readonly control: ControlQueue;
  private readonly backlogs: Backlog[];
  private readonly txChain = new DescriptorChain(64);
  private readonly rxChains: DescriptorChain[] = [new DescriptorChain(8)];
  private readonly txScratch = new Uint8Array(MAX_FRAME + 32);
  private readonly rxHeader = new Uint8Array(20);
  private readonly txHeader = new Uint8Array(20);
  /** Views of the first n bytes of rxHeader / txHeader, by n (a fresh subarray per frame would allocate). */
  private readonly rxHeaderViews: Uint8Array[] = [];
  private readonly txHeaderViews: Uint8Array[] = [];
  private readonly txOffload = emptyOffload();
  private readonly rxOffloadCopy = emptyOffload();
  private readonly pkt = new ParsedPacket();
  /** Separate tx and rx segmenters: a backend may deliver a frame from inside `transmit`. */
  private readonly txSegmenter = new SoftwareSegmenter();
  private readonly rxSegmenter = new SoftwareSegmenter();
  /** Backend queues paused because their frames could not be delivered. */
  private readonly paused: boolean[] = [];
  /** A guest error set DEVICE_NEEDS_RESET: nothing more is processed until reset (QEMU's vdev->broken). */
  private broken = false;
  /** Hash of the frame being delivered (RSS / HASH_CONFIG); report NONE when none was computed. */
  private rxHash = 0;
  private rxHashReport = 0;
  /** The backend steers by the guest's RSS configuration (NetBackend.setRssSteering accepted it). */
  private rssInBackend = false;
  /** Direct receive in progress (BackendSink.lendReceive): its pair (-1: none), backend queue, header size. */
  private lentPair = -1;
  private lentBackendQueue = 0;
  private lentHeaderSize = 0;
  private lentTarget: ReceiveTarget | null = null;
  /** The chains of the lend, in pop order, and the lent bytes up to the end of each. */
  private readonly lentChains: DescriptorChain[] = [new DescriptorChain(8)];
  private lentCount = 0;
  private readonly lentEnd = new Float64Array(ReceiveTarget.MAX_SEGMENTS);
  /** Running average of directly received lengths per pair: how much to lend with mergeable buffers. */
  private readonly rxAverage: Float64Array;
  private readonly lentOffload = emptyOffload();
  /** A lent receive that must take the copying path after all (rare): the frame is gathered here. */
  private readonly rxScratch = new Uint8Array(MAX_FRAME);
  private readonly rxExtraLength: number[] = [];
  /** Room of the buffers the last popRxBuffers took. */
  private poppedRoom = 0;
  private readonly txPending: boolean[];
  /** An rx drain is scheduled after finding buffers on a re-check (recheckRx). */
  private readonly rxRecheck: boolean[];
  private txCurrentPair = 0;
  /** Frames a batching backend reported 'sent' since its last flushTransmit. */
  private txUnflushed = 0;
  private readonly emitSegment = (segment: Uint8Array) =>
    this.transmitOne(segment, 0, segment.length, this.txCurrentPair, null, false);
  private rxSegmentPair = 0;
  private readonly deliverSegment = (segment: Uint8Array) => {
    if (this.deliverFrame(this.rxSegmentPair, segment, null) !== Delivery.Delivered)
      this.queueStats[this.rxSegmentPair]!.rxDropped++;
  };

  constructor(
    readonly options: VirtioNetPciConfig,
    readonly backend: NetBackend,
  ) {
    this.maxQueuePairs = options.mq || options.rss ? options.queues : 1;
    this.offered = offeredNetFeatures(options, backend.capabilities);
    this.rss = new RssState(this.maxQueuePairs);
    this.queueStats = Array.from({ length: this.maxQueuePairs }, () => new QueueStats());
    this.backlogs = Array.from({ length: this.maxQueuePairs }, () => new Backlog(RX_BACKLOG));
    this.txPending = new Array<boolean>(this.maxQueuePairs).fill(false);
    this.rxRecheck = new Array<boolean>(this.maxQueuePairs).fill(false);
    this.rxAverage = new Float64Array(this.maxQueuePairs);
    this.control = new ControlQueue(this);
    this.configuredMac = Uint8Array.from(options.mac.split(':').map((h) => Number.parseInt(h, 16)));
    this.mac.set(this.configuredMac);
    this.resetState();
    backend.attach(this);
  }

  // ---- VirtioDevice ------------------------------------------------------------------------------

  deviceFeatures(): bigint {
    return this.offered | this.extraFeatures;
  }

  validateFeatures(features: bigint): string | null {
    this.driverVersion1 = has(features, VIRTIO_F_VERSION_1);
    return netFeatureDependencyError(features);
  }

  numQueues(features: bigint): number {
    // QEMU: 2 queues until the driver acks MQ or RSS, then every pair; the control queue always exists.
    const mq = has(features, NetF.MQ) || has(features, NetF.RSS);
    return 2 * (mq ? this.maxQueuePairs : 1) + 1;
  }

  maxQueueSize(index: number, features?: bigint): number {
    // The control queue sits after the pairs the driver's features select (QEMU: size 64).
    const f = features ?? this.features;
    const mq = has(f, NetF.MQ) || has(f, NetF.RSS);
    if (index === 2 * (mq ? this.maxQueuePairs : 1)) return 64;
    return index % 2 === 0 ? this.options.rx_queue_size : this.options.tx_queue_size;
  }

  configLength(): number {
    return netConfigLength(this.offered);
  }

  readConfig(offset: number, size: number): number {
    let v = 0;
    for (let i = size - 1; i >= 0; i--) v = v * 256 + this.configByte(offset + i);
    return v;
  }

  writeConfig(offset: number, size: number, value: number): void {
    // Only the legacy interface may write `mac` (§5.1.4.2; QEMU virtio_net_set_config).
    if (this.driverVersion1 || has(this.features, NetF.CTRL_MAC_ADDR)) return;
    for (let i = 0; i < size; i++) {
      const o = offset + i;
      if (o < 6) this.mac[o] = Math.floor(value / 256 ** i) & 0xff;
    }
    this.rxFilter.mac.set(this.mac);
  }

  activate(context: VirtioDeviceContext): void {
    this.ctx = context;
    this.features = context.features;
    this.driverVersion1 = has(this.features, VIRTIO_F_VERSION_1);
    this.hdrSize = netHeaderSize(this.features);
    this.mergeable = has(this.features, NetF.MRG_RXBUF);
    this.hostOffloadMask = offloadMask(this.features, HOST_OFFLOAD_FEATURES);
    this.multiqueue = has(this.features, NetF.MQ) || has(this.features, NetF.RSS);
    this.rxFilter.setVlanDefault(has(this.features, NetF.CTRL_VLAN));
    this.guestOffloads = this.features & GUEST_OFFLOAD_MASK;
    this.backend.setVnetHeaderSize?.(this.hdrSize);
    this.applyGuestOffloads();
    this.applyQueuePairs();
    // Frames that arrived while the driver was setting up are waiting in the backend.
    for (let q = 0; q < this.maxQueuePairs; q++) this.resumeBackend(q);
  }

  queueNotify(index: number): void {
    if (!this.ctx || this.broken) return;
    try {
      if (index === this.controlQueueIndex()) this.control.process();
      else if (index < 2 * this.maxQueuePairs) {
        const pair = index >> 1;
        if (index & 1) {
          this.queueStats[pair]!.txKicks++;
          this.processTx(pair);
        } else this.drainBacklog(pair);
      }
    } catch (e) {
      this.guestError(e);
    }
  }

  queueReset(index: number): void {
    if (index < 2 * this.maxQueuePairs && (index & 1) === 0) {
      const pair = index >> 1;
      this.queueStats[pair]!.rxDropped += this.backlogs[pair]!.clear();
    }
  }

  queueEnabled(index: number): void {
    if (this.ctx && index < 2 * this.maxQueuePairs && (index & 1) === 0) this.drainBacklog(index >> 1);
  }

  reset(): void {
    this.ctx = null;
    this.resetState();
  }

  // ---- BackendSink -------------------------------------------------------------------------------

  receive(frame: Uint8Array, queuePair: number, offload: NetOffload | null): void {
    try {
      this.receiveFrame(frame, queuePair, offload);
    } catch (e) {
      this.guestError(e);
    }
  }

  linkChanged(up: boolean): void {
    this.setLink(up);
  }

  lendReceive(queuePair: number, headerSize: number, target: ReceiveTarget): boolean {
    try {
      return this.lend(queuePair, headerSize, target);
    } catch (e) {
      this.guestError(e);
      return false;
    }
  }

  completeReceive(length: number, overflow: Uint8Array): void {
    try {
      this.completeLent(length, overflow);
    } catch (e) {
      this.guestError(e);
    }
  }

  cancelReceive(): void {
    if (this.lentPair < 0) return;
    const q = this.ctx?.queue(2 * this.lentPair);
    this.lentPair = -1;
    if (q) this.unpopLent(q, 0);
  }

  // ---- Embedder controls -------------------------------------------------------------------------

  /** Sets the link state; with VIRTIO_NET_F_STATUS the guest sees it in `status` with a config interrupt. */
  setLink(up: boolean): void {
    if (this.linkUp === up) return;
    this.linkUp = up;
    this.backend.setCarrier?.(up); // the host sees the virtual cable too (a tap: TUNSETCARRIER)
    this.status = up ? this.status | NetStatus.LINK_UP : this.status & ~NetStatus.LINK_UP;
    if (has(this.offered, NetF.STATUS)) this.ctx?.configChanged();
  }

  /**
   * Asks the guest to announce itself (gratuitous ARP / unsolicited NA), as QEMU does after migration:
   * sets VIRTIO_NET_S_ANNOUNCE and raises a config interrupt (§5.1.6.5.4). Returns false when the driver
   * did not negotiate GUEST_ANNOUNCE with CTRL_VQ.
   */
  announce(): boolean {
    if (!this.ctx || !has(this.features, NetF.GUEST_ANNOUNCE) || !has(this.features, NetF.CTRL_VQ))
      return false;
    this.status |= NetStatus.ANNOUNCE;
    this.ctx.configChanged();
    return true;
  }

  // ---- Used by the control queue -----------------------------------------------------------------

  get negotiated(): bigint {
    return this.features;
  }

  get context(): VirtioDeviceContext | null {
    return this.ctx;
  }

  controlQueueIndex(): number {
    return 2 * (this.multiqueue ? this.maxQueuePairs : 1);
  }

  /** VQ_PAIRS_SET / RSS max_tx_vq: the number of pairs in use (§5.1.6.5.5). */
  setQueuePairs(pairs: number): void {
    this.curQueuePairs = pairs;
    this.applyQueuePairs();
    this.flows.clear();
  }

  setGuestOffloads(offloads: bigint): void {
    this.guestOffloads = offloads;
    this.applyGuestOffloads();
  }

  setMac(mac: Uint8Array): void {
    this.mac.set(mac);
    this.rxFilter.mac.set(mac);
  }

  clearAnnounce(): boolean {
    if ((this.status & NetStatus.ANNOUNCE) === 0) return false;
    this.status &= ~NetStatus.ANNOUNCE;
    return true;
  }

  /** Runs deferred device work (from the event loop) with the same guest-error handling as a kick. */
  runGuarded(work: () => void): void {
    if (!this.ctx || this.broken) return;
    try {
      work();
    } catch (e) {
      this.guestError(e);
    }
  }

  guestError(e: unknown): void {
    if (e instanceof VirtqueueError || e instanceof GuestMemoryError) {
      this.deviceStats.guestErrors++;
      this.broken = true;
      this.ctx?.needsReset(e.message);
      return;
    }
    throw e;
  }

  // ---- Snapshot ----------------------------------------------------------------------------------

  snapshot(): NetSnapshot {
    return {
      mac: Array.from(this.mac),
      status: this.status,
      linkUp: this.linkUp,
      curQueuePairs: this.curQueuePairs,
      guestOffloads: this.guestOffloads.toString(),
      rxFilter: this.rxFilter.state(),
      rss: this.rss.snapshot(),
    };
  }

  restore(state: unknown): void {
    const s = state as NetSnapshot;
    this.mac.set(s.mac);
    this.rxFilter.mac.set(this.mac);
    this.status = s.status;
    this.linkUp = s.linkUp;
    this.curQueuePairs = Math.min(Math.max(1, s.curQueuePairs), this.maxQueuePairs);
    this.guestOffloads = BigInt(s.guestOffloads);
    this.rxFilter.restore(s.rxFilter);
    this.rss.restore(s.rss);
    // The transport re-activated us before this restore: tell the (new) backend the restored state.
    if (this.ctx) {
      this.applyGuestOffloads();
      this.applyQueuePairs();
    }
  }

  // ---- Internals ---------------------------------------------------------------------------------

  private resetState(): void {
    this.broken = false;
    if (this.rssInBackend) {
      this.rssInBackend = false;
      this.backend.setRssSteering?.(null);
    }
    this.lentPair = -1;
    this.lentCount = 0;
    this.rxAverage.fill(0);
    this.features = 0n;
    this.hdrSize = 12;
    this.mergeable = false;
    this.multiqueue = false;
    this.driverVersion1 = false;
    this.curQueuePairs = 1;
    this.guestOffloads = 0n;
    this.hostOffloadMask = 0;
    this.guestOffloadMask = 0;
    this.rxFilter.reset(false);
    this.mac.set(this.configuredMac);
    this.rxFilter.mac.set(this.mac);
    this.rss.reset();
    this.flows.clear();
    this.status = this.linkUp ? NetStatus.LINK_UP : 0;
    for (let q = 0; q < this.maxQueuePairs; q++) {
      this.queueStats[q]!.rxDropped += this.backlogs[q]!.clear();
      this.txPending[q] = false;
    }
  }

  private configByte(o: number): number {
    const opt = this.options;
    switch (o) {
      case 0:
      case 1:
      case 2:
      case 3:
      case 4:
      case 5:
        return this.mac[o]!;
      case NetConfig.STATUS:
        return this.status & 0xff;
      case NetConfig.STATUS + 1:
        return this.status >> 8;
      case NetConfig.MAX_VIRTQUEUE_PAIRS:
        return this.maxQueuePairs & 0xff;
      case NetConfig.MAX_VIRTQUEUE_PAIRS + 1:
        return this.maxQueuePairs >> 8;
      case NetConfig.MTU:
        return opt.host_mtu & 0xff;
      case NetConfig.MTU + 1:
        return opt.host_mtu >> 8;
      case NetConfig.SPEED:
      case NetConfig.SPEED + 1:
      case NetConfig.SPEED + 2:
      case NetConfig.SPEED + 3:
        return ((opt.speed >>> 0) >>> (8 * (o - NetConfig.SPEED))) & 0xff;
      case NetConfig.DUPLEX:
        return opt.duplex === 'full' ? 1 : opt.duplex === 'half' ? 0 : 0xff;
      case NetConfig.RSS_MAX_KEY_SIZE:
        return has(this.offered, NetF.RSS) || has(this.offered, NetF.HASH_REPORT) ? 40 : 0;
      case NetConfig.RSS_MAX_INDIRECTION_TABLE_LENGTH:
        return has(this.offered, NetF.RSS) ? 128 : has(this.offered, NetF.HASH_REPORT) ? 1 : 0;
      case NetConfig.RSS_MAX_INDIRECTION_TABLE_LENGTH + 1:
        return 0;
      case NetConfig.SUPPORTED_HASH_TYPES:
      case NetConfig.SUPPORTED_HASH_TYPES + 1:
        return has(this.offered, NetF.RSS) || has(this.offered, NetF.HASH_REPORT)
          ? (0x1ff >> (8 * (o - NetConfig.SUPPORTED_HASH_TYPES))) & 0xff
          : 0;
      default:
        return 0;
    }
  }

  private applyGuestOffloads(): void {
    const g = this.guestOffloads;
    this.guestOffloadMask = offloadMask(g, GUEST_OFFLOAD_FEATURES);
    const o: BackendOffloads = {
      csum: has(g, NetF.GUEST_CSUM),
      tso4: has(g, NetF.GUEST_TSO4),
      tso6: has(g, NetF.GUEST_TSO6),
      ecn: has(g, NetF.GUEST_ECN),
      ufo: has(g, NetF.GUEST_UFO),
      uso4: has(g, NetF.GUEST_USO4),
      uso6: has(g, NetF.GUEST_USO6),
    };
    if (this.backend.capabilities.vnetHeader) this.backend.setOffloads?.(o);
  }

  /**
   * Multiqueue with automatic receive steering (§5.1.6.5.5): MQ in use, RSS not redirecting, and a
   * backend that does not steer flows itself over as many queues (a multiqueue tap does: tun's automq).
   */
  private autoSteering(): boolean {
    if (!this.multiqueue || this.curQueuePairs < 2 || (this.rss.enabled && this.rss.redirect)) return false;
    const caps = this.backend.capabilities;
    return !(caps.steersFlows === true && caps.queuePairs >= this.curQueuePairs);
  }

  private applyQueuePairs(): void {
    for (let q = 0; q < this.backend.capabilities.queuePairs; q++) {
      this.backend.setQueuePairEnabled?.(q, q < this.curQueuePairs);
    }
    this.syncRssSteering();
  }

  /**
   * Hands the RSS configuration to a backend that can steer by it (after every MQ command, activation,
   * restore): only when every queue it can select is an attached backend queue, since backend queue i
   * feeds pair i. Otherwise (or when it refuses) RSS stays in software.
   */
  private syncRssSteering(): void {
    const b = this.backend;
    if (b.setRssSteering === undefined) return;
    const rss = this.rss;
    const queues = Math.min(this.curQueuePairs, b.capabilities.queuePairs);
    let fits = this.ctx !== null && rss.enabled && rss.redirect && rss.unclassified < queues;
    for (let i = 0; fits && i < rss.table.length; i++) fits = rss.table[i]! < queues;
    if (fits) {
      this.rssInBackend = b.setRssSteering({
        key: rss.keyCopy(),
        hashTypes: rss.hashTypes,
        table: rss.table,
        defaultQueue: rss.unclassified,
      });
    } else if (this.rssInBackend) {
      this.rssInBackend = false;
      b.setRssSteering(null);
    }
  }

  // ---- TX ----------------------------------------------------------------------------------------

  private processTx(pair: number): void {
    const ctx = this.ctx;
    const q = ctx?.queue(2 * pair + 1);
    if (!ctx || !q) return;
    const stats = this.queueStats[pair]!;
    const chain = this.txChain;
    let done = 0;
    q.disableNotification();
    for (;;) {
      let batch = 0;
      try {
        while (done < TX_BURST && q.pop(chain)) {
          this.transmitChain(chain, pair, stats);
          q.addUsed(chain, 0); // QEMU reports 0 bytes written for tx
          done++;
          batch++;
        }
      } finally {
        // Also when a broken chain throws: the chains before it were sent and counted, so the guest
        // must see them completed (QEMU pushes each tx element before looking at the next). A batching
        // backend writes them first: its queued frames still point into these chains.
        if (batch > 0) {
          this.flushTransmit(pair, stats);
          q.publishUsed();
          if (q.needsNotification()) {
            stats.txInterrupts++;
            ctx.notifyQueue(2 * pair + 1);
          }
        }
      }
      if (done >= TX_BURST) {
        // Yield to the event loop; keep kicks disabled while more work is scheduled.
        this.scheduleTx(pair);
        return;
      }
      if (!q.enableNotification()) return;
      q.disableNotification();
    }
  }

  private scheduleTx(pair: number): void {
    if (this.txPending[pair]) return;
    this.txPending[pair] = true;
    setImmediate(() => {
      this.txPending[pair] = false;
      this.runGuarded(() => this.processTx(pair));
    });
  }

  private transmitChain(chain: DescriptorChain, pair: number, stats: QueueStats): void {
    const hdr = this.hdrSize;
    const total = chain.readableLength;
    if (total < hdr) {
      // QEMU: "virtio-net header incorrect" (virtio_error). A missing header is a broken driver.
      throw new VirtqueueError(
        'length-overflow',
        `tx chain of ${total} bytes is shorter than the ${hdr}-byte header`,
      );
    }
    const frameLength = total - hdr;
    if (frameLength < 14 || frameLength > MAX_FRAME) {
      stats.txDropped++;
      return;
    }
    if (!this.linkUp) {
      stats.txDropped++;
      return;
    }
    const mem = this.ctx!.memory;
    // Zero copy when the frame lies in one segment (after the header in it, or after a separate header
    // descriptor): located as (region bytes, offset), no view; the header is copied into a scratch.
    // Otherwise gather header and frame into the scratch.
    let bytes: Uint8Array | null = null;
    if (chain.readableCount === 1) bytes = mem.locate(chain.addr[0]! + hdr, frameLength);
    else if (chain.readableCount === 2 && chain.len[0] === hdr)
      bytes = mem.locate(chain.addr[1]!, frameLength);
    let at: number;
    let headerBytes = this.txHeader;
    // Guest memory stays put until the chain completes (after flushTransmit); the scratch does not.
    const inGuestMemory = bytes !== null;
    if (bytes) {
      at = mem.locatedOffset;
      let h = this.txHeaderViews[hdr];
      if (h === undefined) h = this.txHeaderViews[hdr] = this.txHeader.subarray(0, hdr);
      gatherReadable(mem, chain, h);
    } else {
      gatherReadable(mem, chain, this.txScratch.subarray(0, total));
      headerBytes = bytes = this.txScratch;
      at = hdr;
    }
    const offload = readVnetHeader(headerBytes, 0, this.txOffload);
    const wantsOffload =
      (offload.flags & NetHdrFlags.NEEDS_CSUM) !== 0 || (offload.gsoType & ~GsoType.ECN) !== GsoType.NONE;
    if (this.autoSteering()) {
      this.flows.recordTx(bytes, parsePacket(bytes, this.pkt, at, at + frameLength), pair);
    }
    if (!wantsOffload) {
      this.transmitOne(bytes, at, frameLength, pair, null, inGuestMemory);
      return;
    }
    if (this.backend.capabilities.vnetHeader && offloadPermitted(offload, this.hostOffloadMask)) {
      this.transmitOne(bytes, at, frameLength, pair, offload, inGuestMemory);
      return;
    }
    // No vnet header on the backend (or an offload the guest may not use): finish it in software.
    this.txCurrentPair = pair;
    const frame = bytes.subarray(at, at + frameLength);
    if (this.txSegmenter.process(frame, offload, this.emitSegment) !== SEGMENT_OK) stats.txDropped++;
  }

  /** Lets a batching backend write what it queued for `pair`; its failures become counted drops. */
  private flushTransmit(pair: number, stats: QueueStats): void {
    const backend = this.backend;
    if (backend.flushTransmit === undefined) return;
    const handed = this.txUnflushed;
    this.txUnflushed = 0;
    // Only frames it reported 'sent' since the last flush can have failed (a broken count is clamped).
    const reported = backend.flushTransmit(this.backendQueue(pair));
    const failed = Number.isInteger(reported) ? Math.min(Math.max(reported, 0), handed) : 0;
    if (failed > 0) {
      stats.txPackets -= failed;
      stats.txDropped += failed;
    }
  }

  /**
   * The backend queue for tx pair `pair`. A driver may keep transmitting on pairs beyond the ones in use
   * (Linux 6.1 sends a stale max_tx_vq in RSS_CONFIG after `ethtool -L`): such frames go through an
   * attached backend queue, never dropped.
   */
  private backendQueue(pair: number): number {
    const inUse = pair < this.curQueuePairs ? pair : pair % this.curQueuePairs;
    return inUse % this.backend.capabilities.queuePairs;
  }

  /**
   * Hands `bytes[at, at + length)` to the backend: `transmitRange` (no view; the backend may queue it
   * until flushTransmit) when the bytes are guest memory of a chain not yet completed, else `transmit`
   * (the device's scratch buffers are reused by the next frame).
   */
  private transmitOne(
    bytes: Uint8Array,
    at: number,
    length: number,
    pair: number,
    offload: NetOffload | null,
    inGuestMemory: boolean,
  ): void {
    const stats = this.queueStats[pair]!;
    const backend = this.backend;
    const qp = this.backendQueue(pair);
    const r =
      backend.transmitRange !== undefined && inGuestMemory
        ? backend.transmitRange(bytes, at, length, qp, offload)
        : backend.transmit(
            at === 0 && length === bytes.length ? bytes : bytes.subarray(at, at + length),
            qp,
            offload,
          );
    if (r === 'sent') {
      stats.txPackets++;
      stats.txBytes += length;
      this.txUnflushed++;
    } else stats.txDropped++;
  }

  // ---- RX ----------------------------------------------------------------------------------------

  private receiveFrame(frame: Uint8Array, backendQueue: number, offload: NetOffload | null): void {
    const ctx = this.ctx;
    if (!ctx || this.broken || frame.length < 14 || frame.length > MAX_FRAME || !this.linkUp) {
      this.deviceStats.rxDroppedNotReady++;
      return;
    }
    let pair = backendQueue < this.curQueuePairs ? backendQueue : backendQueue % this.curQueuePairs;
    // RSS applied by the backend: its queue is the RSS queue; hash only for the hash report.
    const steeredByBackend = this.rssInBackend && this.rss.redirect;
    const needHash = this.rss.enabled && (!steeredByBackend || this.hdrSize >= 20);
    this.rxHash = 0;
    this.rxHashReport = VIRTIO_NET_HASH_REPORT_NONE;
    // Automatic steering unless RSS redirects (hash report alone, from HASH_CONFIG, does not).
    const needFlow = this.autoSteering();
    if (needHash || needFlow) {
      parsePacket(frame, this.pkt);
      if (needHash) {
        const steered = this.rss.steer(frame, this.pkt);
        if (steered >= 0 && !steeredByBackend) pair = steered;
        this.rxHash = this.rss.result.hash;
        this.rxHashReport = this.rss.result.reportType;
      }
      if (needFlow) {
        const p = this.flows.lookupRx(frame, this.pkt);
        if (p >= 0 && p < this.curQueuePairs) pair = p;
      }
    }
    const stats = this.queueStats[pair]!;
    if (!this.rxFilter.accepts(frame)) {
      stats.rxFiltered++;
      return;
    }
    const backlog = this.backlogs[pair]!;
    if (backlog.count === 0) {
      const r = this.deliverOrSegment(pair, frame, offload);
      if (r !== Delivery.NoBuffers) return;
    }
    if (backlog.push(frame, offload, backendQueue, this.rxHash, this.rxHashReport)) {
      stats.rxBacklogged++;
      this.pauseBackend(backendQueue);
      this.recheckRx(pair);
    } else {
      stats.rxDropped++;
    }
  }

  /**
   * Lends the next receive buffer of the pair a backend queue feeds, when the frame's buffer can be
   * chosen before the frame is seen: no RSS or flow steering, nothing waiting in the backlog. With
   * mergeable buffers it lends as many as recent frames needed on average (a 64 KiB GSO frame then lands
   * in place; what a lend lacks is copied from the overflow, what it has extra goes back to the ring).
   * The first writable segment must hold the header and the bytes the filter reads (Linux's layouts do).
   */
  private lend(backendQueue: number, hs: number, t: ReceiveTarget): boolean {
    const ctx = this.ctx;
    if (!ctx || this.broken || !this.linkUp || this.lentPair >= 0) return false;
    const hdr = this.hdrSize;
    if (hs !== 0 && hs !== hdr) return false;
    // RSS must see the frame first, unless the backend applied it and no hash is reported.
    if (this.rss.enabled && !(this.rssInBackend && this.rss.redirect && hdr < 20)) return false;
    if (this.autoSteering()) return false;
    const pair = backendQueue < this.curQueuePairs ? backendQueue : backendQueue % this.curQueuePairs;
    if (this.backlogs[pair]!.count > 0) return false;
    const q = ctx.queue(2 * pair);
    if (!q) return false;
    const want = this.mergeable ? Math.min(this.rxAverage[pair]!, hdr + MAX_FRAME) : 0;
    const chains = this.lentChains;
    t.count = 0;
    t.capacity = 0;
    let n = 0;
    do {
      if (n === chains.length) chains.push(new DescriptorChain(8));
      const chain = chains[n]!;
      if (!q.pop(chain)) break;
      n++;
      if (!this.lendSegments(ctx.memory, chain, t, n === 1 ? hdr - hs : 0)) {
        q.unpop(chain);
        n--;
        break;
      }
      this.lentEnd[n - 1] = t.capacity;
    } while (t.capacity < want && n < t.offsets.length);
    if (n === 0) return false;
    this.lentCount = n;
    this.lentPair = pair;
    this.lentBackendQueue = backendQueue;
    this.lentHeaderSize = hs;
    this.lentTarget = t;
    return true;
  }

  /**
   * Appends `chain`'s writable segments to `t`, the first `skip` bytes left out (the header, when the
   * backend writes none). False, with `t` unchanged, when they cannot be lent (see lend).
   */
  private lendSegments(mem: GuestMemory, chain: DescriptorChain, t: ReceiveTarget, skip: number): boolean {
    requireWritable(chain);
    const first = chain.readableCount;
    const end = first + chain.writableCount;
    if (t.count + chain.writableCount > t.offsets.length) return false;
    if (t.count === 0 && chain.len[first]! < this.hdrSize + FILTER_BYTES) return false;
    let count = t.count;
    let capacity = t.capacity;
    for (let i = first; i < end; i++) {
      // The first descriptor is located whole: the header the device writes before `skip` must lie in
      // the same region as the bytes lent after it.
      const cut = i === first ? skip : 0;
      const len = chain.len[i]! - cut;
      if (len === 0) continue;
      const bytes = mem.locate(chain.addr[i]!, chain.len[i]!, true);
      if (bytes === null) return false; // spans regions: the copying path handles it
      t.bytes[count] = bytes;
      t.offsets[count] = mem.locatedOffset + cut;
      t.lengths[count] = len;
      count++;
      capacity += len;
    }
    t.count = count;
    t.capacity = capacity;
    return true;
  }

  /** Gives the lent chains from `from` on back to the ring (last popped first). */
  private unpopLent(q: Virtqueue, from: number): void {
    for (let i = this.lentCount - 1; i >= from; i--) q.unpop(this.lentChains[i]!);
    this.lentCount = from;
  }

  /** The backend filled a lent buffer: publish it, or fall back to the copying path (see lendReceive). */
  private completeLent(n: number, overflow: Uint8Array): void {
    const pair = this.lentPair;
    if (pair < 0) return;
    this.lentPair = -1;
    const ctx = this.ctx;
    const q = ctx?.queue(2 * pair);
    if (!ctx || !q) {
      this.lentCount = 0;
      return;
    }
    const t = this.lentTarget!;
    const hs = this.lentHeaderSize;
    const hdr = this.hdrSize;
    const frameLength = n - hs;
    // Also NaN-safe: a backend that reports a length it cannot have read gives the buffers back.
    if (
      !(Number.isInteger(n) && frameLength >= 14 && frameLength <= MAX_FRAME) ||
      !this.linkUp ||
      n > t.capacity + overflow.length
    ) {
      this.unpopLent(q, 0);
      this.deviceStats.rxDroppedNotReady++;
      return;
    }
    const b0 = t.bytes[0]!;
    const o0 = t.offsets[0]!;
    const headerAt = o0 - hdr + hs;
    const frameAt = o0 + hs;
    const stats = this.queueStats[pair]!;
    if (!this.rxFilter.acceptsAt(b0, frameAt, frameLength)) {
      this.unpopLent(q, 0);
      stats.rxFiltered++;
      return;
    }
    // EWMA (1/8) of what frames needed, as Linux sizes its mergeable buffers.
    this.rxAverage[pair]! += (n - this.rxAverage[pair]!) / 8;
    const offload = hs > 0 ? readVnetHeader(b0, headerAt, this.lentOffload) : null;
    if (
      (offload && !offloadPermitted(offload, this.guestOffloadMask)) ||
      (n > t.capacity && !this.mergeable)
    ) {
      // Software offloads, or (without mergeable buffers) a frame larger than the buffer: take the frame
      // back out and let the copying path decide, as if `receive` had been called.
      this.fallBackLent(q, t, n, overflow, offload);
      return;
    }
    // The lent chains the frame reaches; the rest go back.
    let used = 1;
    while (used < this.lentCount && this.lentEnd[used - 1]! < n) used++;
    this.unpopLent(q, used);
    let extra = 0;
    if (n > t.capacity) {
      // Mergeable: the rest went to the overflow; it continues in further buffers (§5.1.6.4.2).
      extra = this.scatterOverflow(q, ctx.memory, overflow, n - t.capacity);
      if (extra === 0) {
        this.fallBackLent(q, t, n, overflow, offload);
        return;
      }
      extra--;
    }
    writeVnetHeader(b0, headerAt, offload, hdr, used + extra, 0, VIRTIO_NET_HASH_REPORT_NONE);
    let before = 0;
    for (let i = 0; i < used; i++) {
      const end = Math.min(n, this.lentEnd[i]!);
      q.addUsed(this.lentChains[i]!, (i === 0 ? hdr - hs : 0) + end - before);
      before = end;
    }
    for (let i = 0; i < extra; i++) q.addUsed(this.rxChains[i]!, this.rxExtraLength[i]!);
    this.lentCount = 0;
    q.publishUsed();
    stats.rxPackets++;
    stats.rxBytes += frameLength;
    if (q.needsNotification()) {
      stats.rxInterrupts++;
      ctx.notifyQueue(2 * pair);
    }
  }

  /** A lent frame takes the copying path after all: copied out, every lent buffer back to the ring. */
  private fallBackLent(
    q: Virtqueue,
    t: ReceiveTarget,
    n: number,
    overflow: Uint8Array,
    offload: NetOffload | null,
  ): void {
    this.copyLentFrame(t, n, overflow);
    this.unpopLent(q, 0);
    this.receiveFrame(this.rxScratch.subarray(0, n - this.lentHeaderSize), this.lentBackendQueue, offload);
  }

  /**
   * Mergeable direct receive: pops buffers for the `remaining` bytes that overflowed the lent one and
   * copies them in. Returns the buffers the frame spans, the lent one included (lengths written in
   * rxExtraLength), or 0 with nothing popped when the ring has too few.
   */
  private scatterOverflow(q: Virtqueue, mem: GuestMemory, overflow: Uint8Array, remaining: number): number {
    const extra = this.popRxBuffers(q, remaining, Number.POSITIVE_INFINITY);
    if (extra === 0) return 0;
    let pos = 0;
    for (let i = 0; i < extra; i++) {
      const c = this.rxChains[i]!;
      const k = Math.min(c.writableLength, remaining - pos);
      scatterWritable(mem, c, overflow.subarray(pos, pos + k), 0);
      this.rxExtraLength[i] = k;
      pos += k;
    }
    return extra + 1;
  }

  /**
   * Pops receive buffers into rxChains until they hold `need` bytes or `max` are taken; returns how
   * many (their room in `poppedRoom`), or 0 with every one given back when the ring runs out first.
   */
  private popRxBuffers(q: Virtqueue, need: number, max: number): number {
    let n = 0;
    let room = 0;
    while (room < need && n < max) {
      if (n === this.rxChains.length) this.rxChains.push(new DescriptorChain(8));
      const chain = this.rxChains[n]!;
      if (!q.pop(chain)) {
        for (let i = n - 1; i >= 0; i--) q.unpop(this.rxChains[i]!);
        return 0;
      }
      requireWritable(chain);
      n++;
      room += chain.writableLength;
    }
    this.poppedRoom = room;
    return n;
  }

  /** Gathers the frame of a lent receive (without the backend's header) into rxScratch. */
  private copyLentFrame(t: ReceiveTarget, n: number, overflow: Uint8Array): void {
    const hs = this.lentHeaderSize;
    let pos = 0; // in the [header][frame] stream the backend wrote
    let out = 0;
    for (let i = 0; i < t.count && pos < n; i++) {
      const len = Math.min(t.lengths[i]!, n - pos);
      const from = Math.max(hs - pos, 0);
      const o = t.offsets[i]!;
      if (from < len) {
        this.rxScratch.set(t.bytes[i]!.subarray(o + from, o + len), out);
        out += len - from;
      }
      pos += len;
    }
    if (pos < n) this.rxScratch.set(overflow.subarray(0, n - pos), out);
  }

  /** Delivers a frame, finishing offloads the guest did not negotiate in software. */
  private deliverOrSegment(pair: number, frame: Uint8Array, offload: NetOffload | null): Delivery {
    const q = this.ctx?.queue(2 * pair);
    if (!q) {
      // The receive queue is not enabled or is being reset (an RSS table may name it): the frame is
      // dropped (§5.1.6.5.7.2), never held, so one absent queue cannot stall the backend for all.
      this.queueStats[pair]!.rxDropped++;
      return Delivery.Dropped;
    }
    if (offload && !offloadPermitted(offload, this.guestOffloadMask)) {
      // Copy the metadata: the backend owns `offload` and segmentation calls back into delivery.
      const o = Object.assign(this.rxOffloadCopy, offload);
      if ((o.gsoType & ~GsoType.ECN) !== GsoType.NONE && !q.hasAvailable()) return Delivery.NoBuffers;
      this.rxSegmentPair = pair;
      if (this.rxSegmenter.process(frame, o, this.deliverSegment) !== SEGMENT_OK)
        this.queueStats[pair]!.rxDropped++;
      return Delivery.Delivered;
    }
    const r = this.deliverFrame(pair, frame, offload);
    if (r === Delivery.Dropped) this.queueStats[pair]!.rxDropped++;
    return r;
  }

  /**
   * Writes header + frame into rx buffers of `pair` (§5.1.6.3.2): one chain without MRG_RXBUF, else as many
   * as needed with num_buffers in the first header, all published at once.
   */
  private deliverFrame(pair: number, frame: Uint8Array, offload: NetOffload | null): Delivery {
    const ctx = this.ctx!;
    const q = ctx.queue(2 * pair);
    if (!q) return Delivery.NoBuffers;
    const hdr = this.hdrSize;
    const total = hdr + frame.length;
    const mem = ctx.memory;
    const used = this.popRxBuffers(q, total, this.mergeable ? Number.POSITIVE_INFINITY : 1);
    if (used === 0) return Delivery.NoBuffers;
    if (this.poppedRoom < total) {
      // Without mergeable buffers a frame must fit one chain: QEMU drops it and gives the buffer back.
      q.unpop(this.rxChains[0]!);
      return Delivery.Dropped;
    }
    writeVnetHeader(this.rxHeader, 0, offload, hdr, used, this.rxHash, this.rxHashReport);
    // Header and frame are one stream over the buffers: a (non-conforming) first buffer smaller than
    // the header continues the header in the next one.
    let offset = 0; // into header+frame
    for (let i = 0; i < used; i++) {
      const chain = this.rxChains[i]!;
      const cap = chain.writableLength;
      let written = 0;
      if (offset === 0 && cap >= hdr) {
        let h = this.rxHeaderViews[hdr];
        if (h === undefined) h = this.rxHeaderViews[hdr] = this.rxHeader.subarray(0, hdr);
        written = scatterWritable(mem, chain, h, 0);
      } else if (offset < hdr) {
        written = scatterWritable(mem, chain, this.rxHeader.subarray(offset, Math.min(hdr, offset + cap)), 0);
      }
      const pos = offset + written;
      const fStart = pos - hdr;
      const n = Math.min(cap - written, total - pos);
      if (fStart >= 0 && n > 0) {
        // The whole frame in one buffer (the common case) needs no view.
        const part = fStart === 0 && n === frame.length ? frame : frame.subarray(fStart, fStart + n);
        written += scatterWritable(mem, chain, part, written);
      }
      offset += written;
      q.addUsed(chain, written);
    }
    q.publishUsed();
    const stats = this.queueStats[pair]!;
    stats.rxPackets++;
    stats.rxBytes += frame.length;
    if (q.needsNotification()) {
      stats.rxInterrupts++;
      ctx.notifyQueue(2 * pair);
    }
    return Delivery.Delivered;
  }

  /** The guest posted rx buffers (or re-enabled the queue): deliver what waited, then let the backend go. */
  private drainBacklog(pair: number): void {
    const backlog = this.backlogs[pair]!;
    while (backlog.count > 0) {
      this.rxHash = backlog.peekHash();
      this.rxHashReport = backlog.peekReport();
      const r = this.deliverOrSegment(pair, backlog.peekFrame(), backlog.peekOffload());
      if (r === Delivery.NoBuffers) {
        this.recheckRx(pair);
        return;
      }
      backlog.shift();
    }
    for (let q = 0; q < this.backend.capabilities.queuePairs; q++) this.resumeBackend(q);
  }

  /**
   * Out of rx buffers: the driver kicks only for buffers past the avail_event our last pop wrote. If it
   * added some while we were finding the ring empty, neither side saw the other: look once more after a
   * barrier, and drain from the event loop if buffers are there.
   */
  private recheckRx(pair: number): void {
    if (this.rxRecheck[pair]) return;
    memoryFence();
    const q = this.ctx?.queue(2 * pair);
    if (!q?.hasAvailable()) return;
    this.rxRecheck[pair] = true;
    setImmediate(() => {
      this.rxRecheck[pair] = false;
      this.runGuarded(() => this.drainBacklog(pair));
    });
  }

  private pauseBackend(q: number): void {
    if (this.paused[q]) return;
    this.paused[q] = true;
    this.backend.pause(q);
  }

  private resumeBackend(q: number): void {
    if (!this.paused[q]) return;
    // Keep it paused while any pair still has a backlog: new frames would only add to it.
    for (const bl of this.backlogs) if (bl.count > 0) return;
    this.paused[q] = false;
    this.backend.resume(q);
  }
}

/** An rx chain must have a device-writable part (QEMU: "virtio-net receive queue contains no in buffers", virtio_error). */
function requireWritable(chain: DescriptorChain): void {
  if (chain.writableCount === 0) {
    throw new VirtqueueError(
      'readable-after-writable',
      `rx chain ${chain.head} has no device-writable buffer`,
    );
  }
}

/** Offload kinds as bits, so the per-frame checks are plain integer tests. */
const Offload = { CSUM: 1, TSO4: 2, TSO6: 4, UFO: 8, USO: 16, ECN: 32 } as const;

/** Feature bits granting each offload kind: transmit (host) side and receive (guest) side (§5.1.3). */
const HOST_OFFLOAD_FEATURES: readonly [number, number][] = [
  [Offload.CSUM, NetF.CSUM],
  [Offload.TSO4, NetF.HOST_TSO4],
  [Offload.TSO6, NetF.HOST_TSO6],
  [Offload.UFO, NetF.HOST_UFO],
  [Offload.USO, NetF.HOST_USO],
  [Offload.ECN, NetF.HOST_ECN],
];
const GUEST_OFFLOAD_FEATURES: readonly [number, number][] = [
  [Offload.CSUM, NetF.GUEST_CSUM],
  [Offload.TSO4, NetF.GUEST_TSO4],
  [Offload.TSO6, NetF.GUEST_TSO6],
  [Offload.UFO, NetF.GUEST_UFO],
  [Offload.USO, NetF.GUEST_USO4],
  [Offload.USO, NetF.GUEST_USO6],
  [Offload.ECN, NetF.GUEST_ECN],
];

function offloadMask(features: bigint, table: readonly [number, number][]): number {
  let m = 0;
  for (const [kind, feature] of table) if (has(features, feature)) m |= kind;
  return m;
}

/**
 * Whether a frame's offload request is covered by `mask` (§5.1.6.2.1: the driver only asks for offloads
 * it negotiated; §5.1.6.4: the device only delivers what the driver accepts): NEEDS_CSUM needs CSUM, each
 * GSO type its TSO/UFO/USO kind, and the ECN bit ECN.
 */
function offloadPermitted(o: NetOffload, mask: number): boolean {
  if ((o.flags & NetHdrFlags.NEEDS_CSUM) !== 0 && (mask & Offload.CSUM) === 0) return false;
  if ((o.gsoType & GsoType.ECN) !== 0 && (mask & Offload.ECN) === 0) return false;
  switch (o.gsoType & ~GsoType.ECN) {
    case GsoType.NONE:
      return true;
    case GsoType.TCPV4:
      return (mask & Offload.TSO4) !== 0;
    case GsoType.TCPV6:
      return (mask & Offload.TSO6) !== 0;
    case GsoType.UDP:
      return (mask & Offload.UFO) !== 0;
    case GsoType.UDP_L4:
      return (mask & Offload.USO) !== 0;
    default:
      return false;
  }
}
