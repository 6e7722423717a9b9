/**
 * The virtio-net device (VIRTIO 1.3 §5.1): lifecycle, feature negotiation, config space, the control
 * virtqueue, multiqueue, offload and RSS configuration. It implements the transport-independent
 * `VirtioDevice` and is a `BackendSink` for its network backend. Behaviour follows QEMU's
 * hw/net/virtio-net.c where QEMU is a defensible reading of the spec (docs/compatibility.md lists where
 * we differ).
 *
 * The data paths live per queue pair: tx.ts (transmit), rx.ts (the copying receive and its backlog),
 * direct-rx.ts (receive straight into lent guest buffers). Each owns its scratch state; what all pairs
 * read (negotiated layout, offload masks, filter, RSS, flow steering) is in shared.ts. Hot paths (one tx
 * chain, one rx frame) allocate nothing.
 */

import type { BackendSink, NetBackend, NetOffload, ReceiveTarget } from '../../lib/net/backend.js';
import type { DeviceMode, VirtioDevice, VirtioDeviceContext } from '../../virtio/virtio-device.js';
import type { Backlog } from './backlog.js';
import { Coalescer } from './coalesce.js';
import { NetStatus, netConfigByte, netConfigLength } from './config.js';
import { ControlQueue, type ControlQueueHost } from './control-queue.js';
import type { DataPlane } from './data-plane.js';
import { DirectReceiver } from './direct-rx.js';
import {
  GUEST_OFFLOAD_MASK,
  has,
  legacyOnlyNetFeatures,
  NetF,
  netFeatureDependencyError,
  netHeaderSize,
  offeredNetFeatures,
  VIRTIO_F_VERSION_1,
} from './features.js';
import type { FlowSteering } from './flow-steering.js';
import { backendOffloads, guestOffloadMask, hostOffloadMask } from './offloads.js';
import { supportedHashTypes, type VirtioNetPciConfig } from './options.js';
import { type NetSnapshot, parseNetSnapshot, restoreNet, snapshotNet } from './persist.js';
import type { RssState } from './rss.js';
import type { RssContexts } from './rss-context.js';
import { Receiver, RX_BACKLOG } from './rx.js';
import type { RxFilter } from './rx-filter.js';
import { NetShared } from './shared.js';
import { type NetDeviceStats, QueueStats } from './stats.js';
import { TxPath } from './tx.js';

export class VirtioNet implements VirtioDevice, BackendSink, ControlQueueHost {
  readonly deviceId = 1;
  readonly maxQueuePairs: number;
  readonly offered: bigint;
  readonly mac = new Uint8Array(6);
  readonly rxFilter: RxFilter;
  readonly rss: RssState;
  readonly rssContexts: RssContexts;
  readonly flows: FlowSteering;
  readonly queueStats: QueueStats[];
  readonly deviceStats: NetDeviceStats;

  /** Transport bits the embedding object adds (VIRTIO_F_SR_IOV on an SR-IOV PF). */
  extraFeatures = 0n;
  /** `struct virtio_net_config` status field. */
  status = 0;
  /** Current guest offloads (feature-bit layout), from negotiation or CTRL_GUEST_OFFLOADS_SET. */
  guestOffloads = 0n;
  /** May change its MAC and turn on promiscuous / all-multicast (false: an untrusted SR-IOV VF). */
  trusted = true;

  /** What every queue pair's data path reads (a worker data plane replicates it). */
  readonly shared: NetShared;
  /** Queue pairs on worker threads (`workers` option); null: on this thread. */
  dataPlane: DataPlane | null = null;
  private readonly tx: TxPath[];
  private readonly rx: Receiver;
  private readonly direct: DirectReceiver;
  private readonly control: ControlQueue;
  /** The `mac` option: reset returns to it after MAC_ADDR_SET (QEMU virtio_net_reset). */
  private readonly configuredMac: Uint8Array;
  private features = 0n;
  private driverVersion1 = false;
  /** The last RX_SET / TX_SET [max_packets, max_usecs]: a reset queue returns to them. */
  coalesceRx: [number, number] = [0, 0];
  coalesceTx: [number, number] = [0, 0];

  constructor(
    readonly options: VirtioNetPciConfig,
    readonly backend: NetBackend,
  ) {
    this.maxQueuePairs = options.mq || options.rss ? options.queues : 1;
    this.offered = offeredNetFeatures(options, backend.capabilities);
    const shared = new NetShared(this.maxQueuePairs, backend, supportedHashTypes(options));
    this.shared = shared;
    this.rxFilter = shared.rxFilter;
    this.rss = shared.rss;
    this.rssContexts = shared.rssContexts;
    this.flows = shared.flows;
    this.deviceStats = shared.deviceStats;
    this.queueStats = Array.from({ length: this.maxQueuePairs }, () => new QueueStats());
    for (let i = 0; i < 2 * this.maxQueuePairs; i++)
      shared.coalescers.push(new Coalescer(i, shared, this.queueStats[i >> 1]!));
    this.tx = this.queueStats.map((s, pair) => new TxPath(pair, shared, s));
    this.rx = new Receiver(shared, this.queueStats);
    this.direct = new DirectReceiver(shared, this.rx.pairs);
    this.control = new ControlQueue(this);
    this.configuredMac = Uint8Array.from(options.mac.split(':').map((h) => Number.parseInt(h, 16)));
    this.mac.set(this.configuredMac);
    this.resetState();
    backend.attach(this);
  }

  /** supported_hash_types in the config (§5.1.4), from the `hash-*` options. */
  get supportedHashTypes(): number {
    return this.rss.supportedHashTypes;
  }

  /** Link state; with VIRTIO_NET_F_STATUS the guest sees it in `status` (change it with setLink). */
  get linkUp(): boolean {
    return this.shared.linkUp;
  }

  set linkUp(up: boolean) {
    this.shared.linkUp = up;
  }

  /** Backend queues paused for the backlogs (snapshots). */
  get rxPaused(): readonly boolean[] {
    const p = this.rx.pausedQueues;
    return Array.from({ length: this.backend.capabilities.queuePairs }, (_, q) => p[q] === true);
  }

  /** Per pair: a delivery attempt is scheduled (snapshots). */
  get rxRecheck(): readonly boolean[] {
    return this.rx.pairs.map((p) => p.recheckPending);
  }

  /** Each pair's receive backlog (snapshots). */
  get backlogs(): readonly Backlog[] {
    return this.rx.pairs.map((p) => p.backlog);
  }

  /** Queue pairs in use (VQ_PAIRS_SET / RSS max_tx_vq); 1 after reset. */
  get curQueuePairs(): number {
    return this.shared.curQueuePairs;
  }

  set curQueuePairs(pairs: number) {
    this.shared.curQueuePairs = pairs;
  }

  // ---- VirtioDevice ------------------------------------------------------------------------------

  deviceFeatures(): bigint {
    return this.offered | this.extraFeatures;
  }

  legacyOnlyFeatures(): bigint {
    return legacyOnlyNetFeatures(this.options);
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
    for (let i = size - 1; i >= 0; i--) v = v * 256 + netConfigByte(this, offset + i);
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
    const s = this.shared;
    s.ctx = context;
    const f = context.features;
    this.features = f;
    this.driverVersion1 = has(f, VIRTIO_F_VERSION_1);
    s.hdrSize = netHeaderSize(f);
    s.hashReport = has(f, NetF.HASH_REPORT);
    s.mergeable = has(f, NetF.MRG_RXBUF);
    s.exactHdrLen = has(f, NetF.GUEST_HDRLEN);
    s.hostOffloadMask = hostOffloadMask(f);
    s.multiqueue = has(f, NetF.MQ) || has(f, NetF.RSS);
    this.rxFilter.setVlanDefault(has(f, NetF.CTRL_VLAN));
    this.guestOffloads = f & GUEST_OFFLOAD_MASK;
    this.backend.setVnetHeaderSize?.(s.hdrSize);
    this.applyGuestOffloads();
    this.applyQueuePairs();
    // Frames that arrived while the driver was setting up are waiting in the backend: every backend
    // queue, including those past the device's pairs (they feed a pair too, Shared.pairOf).
    this.rx.resumeAll();
    if (!s.stopped) this.dataPlane?.start();
  }

  queueNotify(index: number): void {
    const s = this.shared;
    if (!s.ctx || s.broken) return;
    try {
      if (index === this.controlQueueIndex()) {
        this.control.process();
        if (this.dataPlane?.running) this.dataPlane.sync();
      } else if (this.dataPlane?.running && index < 2 * this.maxQueuePairs) this.dataPlane.kick(index);
      else if (index < 2 * this.maxQueuePairs) {
        const pair = index >> 1;
        if (index & 1) this.tx[pair]!.kick();
        else {
          this.queueStats[pair]!.rxKicks++;
          this.rx.pairs[pair]!.drain();
        }
      }
    } catch (e) {
      s.guestError(e);
    }
  }

  /** VirtioDevice.interruptRoutesChanged: the workers take the new queue eventfds before the old go. */
  interruptRoutesChanged(): void {
    if (!this.dataPlane?.running) return;
    try {
      this.dataPlane.routesChanged?.();
    } catch {
      // A worker that does not answer keeps its own dups of the old eventfds (never another file's fd);
      // the pool reports it on its next request.
    }
  }

  queueReset(index: number): void {
    if (index >= 2 * this.maxQueuePairs) return;
    // The workers give every ring back and take the others again at once (the reset one is gone until
    // queueEnabled, which hands the rings out anew).
    const plane = this.dataPlane;
    plane?.stop();
    if ((index & 1) === 0) this.rx.pairs[index >> 1]!.clearBacklog();
    // A re-enabled queue takes the TX_SET / RX_SET parameters (VIRTIO 1.3 "Notifications Coalescing").
    const d = index & 1 ? this.coalesceTx : this.coalesceRx;
    this.shared.coalescers[index]!.reset(d[0], d[1]);
    if (plane && this.shared.ctx && !this.shared.stopped) plane.start();
  }

  queueEnabled(index: number): void {
    const plane = this.dataPlane;
    if (plane && this.shared.ctx && !this.shared.stopped && index < 2 * this.maxQueuePairs) {
      plane.stop();
      plane.start();
      return;
    }
    if (this.shared.ctx && !this.shared.stopped && index < 2 * this.maxQueuePairs && (index & 1) === 0)
      this.rx.pairs[index >> 1]!.drain();
  }

  reset(): void {
    this.dataPlane?.stop(true);
    this.shared.ctx = null;
    this.resetState();
  }

  /**
   * The group owner's DEV_MODE_SET (VIRTIO 1.4 §2.12.1.5, docs/admin-queue.md): 'stopped' halts the data
   * path (no ring or buffer access; backend frames wait in the bounded backlogs); 'frozen' also pauses
   * every backend queue at once, so nothing arrives to change the state. The transport withholds
   * interrupts and re-kicks every queue on 'active', which drains the backlogs and lets the backend go.
   */
  setMode(mode: DeviceMode): void {
    if (mode !== 'active') this.dataPlane?.stop();
    this.shared.stopped = mode !== 'active';
    // A notification held while stopped (its timer found the device stopped) goes out now.
    for (const c of this.shared.coalescers)
      if (mode === 'active') c.flush();
      else c.suspend();
    if (mode === 'frozen') for (let q = 0; q < this.backend.capabilities.queuePairs; q++) this.rx.pause(q);
    if (mode === 'active' && this.shared.ctx && this.dataPlane && !this.dataPlane.running)
      this.dataPlane.start();
  }

  /**
   * The device is going away (VirtioNetPci.close, after its data plane stopped and froze): frames that
   * wait in the receive backlogs will never reach the guest, so they count as dropped.
   */
  discardBacklogs(): void {
    for (const p of this.rx.pairs) p.clearBacklog();
  }

  snapshot(): NetSnapshot {
    // The workers' rings, backlogs and counters come back first (VirtioNetPci quiesces them around the
    // transport's part too).
    this.dataPlane?.refreshStats();
    return snapshotNet(this);
  }

  /** Throws (naming the field) if `state` is not a snapshot `restore` would take; writes nothing. */
  validateSnapshot(state: unknown): void {
    parseNetSnapshot(state, this.maxQueuePairs, RX_BACKLOG);
  }

  restore(state: unknown): void {
    // The state replaces the device's: frames the workers were passing between them are counted dropped.
    this.dataPlane?.stop(true);
    restoreNet(this, state);
    const { rxPaused: paused, rxRecheck: recheck, coalesce } = state as NetSnapshot;
    // The transport re-activated us before this restore: tell the (new) backend the restored state.
    if (this.shared.ctx) {
      this.applyGuestOffloads();
      this.applyQueuePairs();
      this.rx.restoredBacklogs(paused, recheck);
      // A notification the source held is sent within its max_usecs (at once without coalescing).
      for (const [i, q] of (coalesce?.queues ?? []).entries())
        if (q[2]) this.shared.coalescers[i]?.used(0, true);
      this.dataPlane?.start();
    }
  }

  // ---- BackendSink -------------------------------------------------------------------------------

  /** BackendSink.receiveRoom (lib/net/backend.ts). */
  receiveRoom(queuePair: number): number {
    return this.rx.room(queuePair);
  }

  receive(frame: Uint8Array, queuePair: number, offload: NetOffload | null): void {
    this.receiveRange(frame, 0, frame.length, queuePair, offload);
  }

  receiveRange(
    bytes: Uint8Array,
    offset: number,
    length: number,
    queuePair: number,
    offload: NetOffload | null,
  ): void {
    // A backend is untrusted too: a queue it does not have, or a range outside its bytes, is a counted
    // drop, not a TypeError.
    if (
      !this.validBackendQueue(queuePair) ||
      !(Number.isInteger(offset) && Number.isInteger(length) && offset >= 0 && length >= 0) ||
      offset + length > bytes.length
    ) {
      this.shared.deviceStats.rxDroppedNotReady++;
      return;
    }
    try {
      this.rx.receive(bytes, offset, length, queuePair, offload);
    } catch (e) {
      // The guest broke the ring under this frame: it is lost with the device, and counted.
      this.shared.deviceStats.rxDroppedNotReady++;
      this.shared.guestError(e);
    }
  }

  private validBackendQueue(q: number): boolean {
    return Number.isInteger(q) && q >= 0 && q < this.backend.capabilities.queuePairs;
  }

  linkChanged(up: boolean): void {
    this.setLink(up);
  }

  lendReceive(queuePair: number, headerSize: number, target: ReceiveTarget): boolean {
    if (!this.validBackendQueue(queuePair)) return false;
    try {
      return this.direct.lend(queuePair, headerSize, target);
    } catch (e) {
      this.shared.guestError(e);
      return false;
    }
  }

  completeReceive(length: number, overflow: Uint8Array): void {
    try {
      this.direct.complete(length, overflow);
    } catch (e) {
      this.shared.deviceStats.rxDroppedNotReady++;
      this.shared.guestError(e);
    }
  }

  cancelReceive(): void {
    this.direct.cancel();
  }

  /** BackendSink.beginReceiveBurst: notifications of the frames until the matching end are decided once. */
  beginReceiveBurst(): void {
    this.shared.beginReceiveBurst();
  }

  /** BackendSink.endReceiveBurst. */
  endReceiveBurst(): void {
    this.shared.endReceiveBurst();
  }

  transmitReady(queuePair: number): void {
    const shared = this.shared;
    for (const tx of this.tx) if (shared.backendQueueOf(tx.pair) === queuePair) tx.ready();
  }

  // ---- Embedder controls -------------------------------------------------------------------------

  /** Sets the link state; with VIRTIO_NET_F_STATUS the guest sees it in `status` with a config interrupt. */
  setLink(up: boolean): void {
    if (this.shared.linkUp === up) return;
    this.shared.linkUp = up;
    this.backend.setCarrier?.(up); // the host sees the virtual cable too (a tap: TUNSETCARRIER)
    if (this.dataPlane?.running) this.dataPlane.sync();
    this.status = up ? this.status | NetStatus.LINK_UP : this.status & ~NetStatus.LINK_UP;
    if (has(this.offered, NetF.STATUS)) this.shared.ctx?.configChanged();
  }

  /**
   * Asks the guest to announce itself (gratuitous ARP / unsolicited NA), as QEMU does after migration:
   * sets VIRTIO_NET_S_ANNOUNCE and raises a config interrupt (§5.1.6.5.4). Returns false when the driver
   * did not negotiate GUEST_ANNOUNCE with CTRL_VQ.
   */
  announce(): boolean {
    const ctx = this.shared.ctx;
    if (!ctx || !has(this.features, NetF.GUEST_ANNOUNCE) || !has(this.features, NetF.CTRL_VQ)) return false;
    this.status |= NetStatus.ANNOUNCE;
    ctx.configChanged();
    return true;
  }

  // ---- ControlQueueHost --------------------------------------------------------------------------

  get negotiated(): bigint {
    return this.features;
  }

  get context(): VirtioDeviceContext | null {
    return this.shared.ctx;
  }

  /** Data virtqueues of the driver's layout (2 per pair, every pair with MQ or RSS). */
  get dataQueues(): number {
    return 2 * (this.shared.multiqueue ? this.maxQueuePairs : 1);
  }

  get coalescers(): readonly Coalescer[] {
    return this.shared.coalescers;
  }

  controlQueueIndex(): number {
    return 2 * (this.shared.multiqueue ? this.maxQueuePairs : 1);
  }

  /** VQ_PAIRS_SET / RSS max_tx_vq: the number of pairs in use (§5.1.6.5.5). */
  setQueuePairs(pairs: number): void {
    this.shared.curQueuePairs = pairs;
    this.applyQueuePairs();
    this.flows.clear();
  }

  /** HASH_TUNNEL_SET changed how frames are hashed: the backend may no longer be able to steer. */
  rssChanged(): void {
    this.syncRssSteering();
  }

  setGuestOffloads(offloads: bigint): void {
    this.guestOffloads = offloads;
    this.applyGuestOffloads();
  }

  setMac(mac: Uint8Array): void {
    this.mac.set(mac);
    this.rxFilter.mac.set(mac);
  }

  /**
   * The VMM assigns a MAC (an SR-IOV VF's `ip link … vf N mac`): the config-space `mac` and the filter
   * take it now, and reset returns to it, with a configuration change notification (§5.1.4).
   */
  assignMac(mac: Uint8Array): void {
    this.configuredMac.set(mac);
    this.setMac(mac);
    this.shared.ctx?.configChanged();
  }

  clearAnnounce(): boolean {
    if ((this.status & NetStatus.ANNOUNCE) === 0) return false;
    this.status &= ~NetStatus.ANNOUNCE;
    return true;
  }

  /** Runs deferred device work (from the event loop) with the same guest-error handling as a kick. */
  runGuarded(work: () => void): void {
    this.shared.runGuarded(work);
  }

  /** A guest error sets DEVICE_NEEDS_RESET (nothing more is processed until reset); others are rethrown. */
  guestError(e: unknown): void {
    this.shared.guestError(e);
  }

  // ---- Internals ---------------------------------------------------------------------------------

  private resetState(): void {
    const s = this.shared;
    s.broken = false;
    if (s.rssInBackend) {
      s.rssInBackend = false;
      this.backend.setRssSteering?.(null);
    }
    this.direct.reset();
    this.features = 0n;
    s.hdrSize = 12;
    s.hashReport = false;
    s.mergeable = false;
    s.exactHdrLen = false;
    s.multiqueue = false;
    this.driverVersion1 = false;
    s.curQueuePairs = 1;
    this.guestOffloads = 0n;
    s.hostOffloadMask = 0;
    s.guestOffloadMask = 0;
    this.rxFilter.reset(false);
    this.mac.set(this.configuredMac);
    this.rxFilter.mac.set(this.mac);
    this.rss.reset();
    this.rss.tunnel.reset();
    this.rssContexts.reset();
    this.flows.clear();
    this.status = s.linkUp ? NetStatus.LINK_UP : 0;
    // "Upon reset, a device MUST initialize all coalescing parameters to 0"; no timer survives.
    this.coalesceRx = [0, 0];
    this.coalesceTx = [0, 0];
    for (const c of s.coalescers) c.reset();
    for (let q = 0; q < this.maxQueuePairs; q++) {
      this.rx.pairs[q]!.clearBacklog();
      this.tx[q]!.reset();
    }
  }

  private applyGuestOffloads(): void {
    const g = this.guestOffloads;
    this.shared.guestOffloadMask = guestOffloadMask(g);
    if (this.backend.capabilities.vnetHeader) this.backend.setOffloads?.(backendOffloads(g));
  }

  private applyQueuePairs(): void {
    for (let q = 0; q < this.backend.capabilities.queuePairs; q++) {
      this.backend.setQueuePairEnabled?.(q, q < this.shared.curQueuePairs);
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
    const s = this.shared;
    const rss = this.rss;
    const queues = Math.min(s.curQueuePairs, b.capabilities.queuePairs);
    // The kernel program hashes outer headers only: an inner header hash stays in software.
    let fits =
      s.ctx !== null && rss.enabled && rss.redirect && rss.unclassified < queues && rss.tunnel.types === 0;
    for (let i = 0; fits && i < rss.table.length; i++) fits = rss.table[i]! < queues;
    if (fits) {
      s.rssInBackend = b.setRssSteering({
        key: rss.keyCopy(),
        hashTypes: rss.hashTypes,
        table: rss.table,
        defaultQueue: rss.unclassified,
      });
    } else if (s.rssInBackend) {
      s.rssInBackend = false;
      b.setRssSteering(null);
    }
  }
}
