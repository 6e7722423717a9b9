/**
 * The state every queue pair's data path reads and no pair owns: negotiated layout, offload masks, the
 * receive filter, RSS, flow steering, link and error state, and the device context. The device writes it
 * (activation, control commands, reset); the per-pair paths (tx.ts, rx.ts, direct-rx.ts) only read it,
 * apart from device-wide counters and the guest-error latch.
 */
import { GuestMemoryError } from '../../lib/errors.js';
import type { NetBackend } from '../../lib/net/backend.js';
import { type Virtqueue, VirtqueueError } from '../../virtio/queue/virtqueue.js';
import type { VirtioDeviceContext } from '../../virtio/virtio-device.js';
import type { CoalesceHost, Coalescer } from './coalesce.js';
import { FlowSteering } from './flow-steering.js';
import { RssState } from './rss.js';
import { RssContexts } from './rss-context.js';
import { RxFilter } from './rx-filter.js';
import type { NetDeviceStats } from './stats.js';

export class NetShared implements CoalesceHost {
  /** Set while the driver has the device running (activate .. reset). */
  ctx: VirtioDeviceContext | null = null;
  /** A guest error set DEVICE_NEEDS_RESET: nothing more is processed until reset (QEMU's vdev->broken). */
  broken = false;
  /**
   * Stopped or frozen by the group owner (VIRTIO 1.4 DEV_MODE_SET): no ring or buffer access, no
   * interrupt; frames from the backend wait in the backlogs. Survives device reset.
   */
  stopped = false;
  linkUp = true;
  /** Negotiated `struct virtio_net_hdr` size (10, 12, 20 or 24). */
  hdrSize = 12;
  /** VIRTIO_NET_F_HASH_REPORT negotiated: the header's hash fields carry the hash (not implied by size 24). */
  hashReport = false;
  /** VIRTIO_NET_F_GUEST_HDRLEN negotiated: a GSO frame's hdr_len must be its exact header length. */
  exactHdrLen = false;
  /** VIRTIO_NET_F_MRG_RXBUF negotiated. */
  mergeable = false;
  /** MQ or RSS negotiated: the control queue moves to index 2 * maxQueuePairs. */
  multiqueue = false;
  /** Queue pairs in use (VQ_PAIRS_SET / RSS max_tx_vq); 1 after reset. */
  curQueuePairs = 1;
  /** Offloads as offloads.ts bits: what the guest may ask of us on tx, and what it accepts on rx. */
  hostOffloadMask = 0;
  guestOffloadMask = 0;
  /**
   * The queues the backend steers flows over itself (BackendCapabilities.steersFlows: its queue pairs),
   * 0 when it does not. A worker's replica takes the device backend's: its own backend has a queue per pair.
   */
  backendSteersOver: number;
  /** The backend steers by the guest's RSS configuration (NetBackend.setRssSteering accepted it). */
  rssInBackend = false;
  /** Notification coalescing of each data virtqueue, by queue index (filled by the device). */
  readonly coalescers: Coalescer[] = [];
  readonly rxFilter = new RxFilter();
  readonly rss: RssState;
  /** RSS contexts (VIRTIO 1.4); the inner header hash state is `rss.tunnel`. */
  readonly rssContexts: RssContexts;
  /** Automatic steering's flows; on a worker, the view of the table all the device's workers share. */
  readonly flows: FlowSteering;
  readonly deviceStats: NetDeviceStats = {
    rxDroppedNotReady: 0,
    ctrlCommands: 0,
    ctrlErrors: 0,
    guestErrors: 0,
  };

  /** Open receive bursts (BackendSink.beginReceiveBurst nests). */
  private burstDepth = 0;
  /** Per rx queue pair, frames published during the open burst whose notification is still to decide. */
  private readonly burstFrames: Uint32Array;
  /** The pairs with burstFrames > 0, in the order they first got a frame (no allocation per burst). */
  private readonly burstPairs: Uint16Array;
  private burstPairCount = 0;

  constructor(
    readonly maxQueuePairs: number,
    readonly backend: NetBackend,
    supportedHashTypes?: number,
    flowTable?: SharedArrayBuffer,
  ) {
    this.flows = flowTable ? FlowSteering.over(flowTable) : new FlowSteering();
    const caps = backend.capabilities;
    this.backendSteersOver = caps.steersFlows === true ? caps.queuePairs : 0;
    this.rss = new RssState(maxQueuePairs, supportedHashTypes);
    this.rssContexts = new RssContexts(this.rss);
    this.burstFrames = new Uint32Array(maxQueuePairs);
    this.burstPairs = new Uint16Array(maxQueuePairs);
  }

  /**
   * Rx queue `2 * pair` (`q`) published one frame: its used buffer notification is decided now, or once
   * for all of them at the end of an open receive burst. The ring's suppression check covers every entry
   * published since the last one (EVENT_IDX compares against the last signalled index), so one decision
   * per burst raises what the per-frame ones would have, once.
   */
  rxPublished(pair: number, q: Virtqueue): void {
    if (this.burstDepth === 0) {
      this.coalescers[2 * pair]!.used(1, q.needsNotification());
      return;
    }
    if (this.burstFrames[pair]!++ === 0) this.burstPairs[this.burstPairCount++] = pair;
  }

  /** BackendSink.beginReceiveBurst. */
  beginReceiveBurst(): void {
    this.burstDepth++;
  }

  /**
   * BackendSink.endReceiveBurst: the burst's notification decisions, one per rx queue that got frames
   * (none when `raise` is false: the burst ended in a guest error).
   */
  endReceiveBurst(raise = true): void {
    if (this.burstDepth === 0 || --this.burstDepth > 0) return;
    const n = this.burstPairCount;
    this.burstPairCount = 0;
    for (let i = 0; i < n; i++) {
      const pair = this.burstPairs[i]!;
      const frames = this.burstFrames[pair]!;
      this.burstFrames[pair] = 0;
      // Reset, stopped or broken since: nothing to raise (a reset queue has no used entries to signal).
      const q = this.ctx?.queue(2 * pair);
      if (!raise || !q || this.broken || this.stopped) continue;
      try {
        this.coalescers[2 * pair]!.used(frames, q.needsNotification());
      } catch (e) {
        this.guestError(e);
      }
    }
  }

  /** The pair a backend queue feeds: itself, or wrapped onto the pairs in use. */
  pairOf(backendQueue: number): number {
    return backendQueue < this.curQueuePairs ? backendQueue : backendQueue % this.curQueuePairs;
  }

  /**
   * The backend queue for tx pair `pair`. A driver may keep transmitting on pairs beyond the ones in use
   * (Linux 6.1 sends a stale max_tx_vq in RSS_CONFIG after `ethtool -L`): such frames go through an
   * attached backend queue, never dropped.
   */
  backendQueueOf(pair: number): number {
    const inUse = pair < this.curQueuePairs ? pair : pair % this.curQueuePairs;
    return inUse % this.backend.capabilities.queuePairs;
  }

  /**
   * Multiqueue with automatic receive steering (§5.1.6.5.5): MQ in use, RSS not redirecting, and a
   * backend that does not steer flows itself over as many queues (a multiqueue tap does: tun's automq).
   */
  autoSteering(): boolean {
    if (!this.multiqueue || this.curQueuePairs < 2 || (this.rss.enabled && this.rss.redirect)) return false;
    return this.backendSteersOver < this.curQueuePairs;
  }

  /** Raises queue `index`'s used buffer notification (the coalescers call it). */
  notifyQueue(index: number): void {
    this.ctx?.notifyQueue(index);
  }

  /** Runs deferred device work (from the event loop) with the same guest-error handling as a kick. */
  runGuarded(work: () => void): void {
    if (!this.ctx || this.broken || this.stopped) return;
    try {
      work();
    } catch (e) {
      this.guestError(e);
    }
  }

  /** A guest error (broken ring, bad address) sets DEVICE_NEEDS_RESET; anything else is a bug and rethrown. */
  guestError(e: unknown): void {
    if (e instanceof VirtqueueError || e instanceof GuestMemoryError) {
      this.deviceStats.guestErrors++;
      this.broken = true;
      this.ctx?.needsReset(e.message);
      return;
    }
    throw e;
  }
}
