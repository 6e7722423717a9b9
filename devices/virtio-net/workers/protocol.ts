/**
 * What the main thread and a queue-pair worker share (docs/workers.md): the layout of the doorbell words
 * and counter blocks in SharedArrayBuffers, and the control-plane requests. Frames never cross: a kick
 * is a doorbell, an interrupt is a bit in the interrupt block, counters are published in shared memory;
 * messages carry only control-plane requests (start, sync, stop, close, memory), each a request and its
 * reply.
 */

import type { ThreadRegion } from '../../../lib/memory/regions.js';
import type { BackendOffloads, NetOffload } from '../../../lib/net/backend.js';
import type { MemoryRingsInit } from '../../../lib/net/memory-rings.js';
import type { VirtqueueSetup } from '../../../virtio/queue/create-virtqueue.js';
import type { VirtqueueState } from '../../../virtio/queue/virtqueue.js';
import type { RssSnapshot } from '../rss.js';
import type { RssContextSnapshot } from '../rss-context.js';
import type { RxFilterState } from '../rx-filter.js';
import { QueueStats } from '../stats.js';

/** Int32 words of a worker's doorbell block. */
export const Door = {
  /** Bumped (then Atomics.notify) after setting bits in PENDING: the worker's one wait. */
  WAKE: 0,
  /** Bit 2k: rx kick of the worker's k-th pair; bit 2k+1: its tx kick; CONTROL: a request waits. */
  PENDING: 1,
  /** Bumped by the worker when it answered a request (the main thread waits on it). */
  ACK: 2,
  /** 1 once the worker took its tap fds and waits for requests. */
  READY: 3,
  WORDS: 4,
} as const;
export const CONTROL_BIT = 1 << 30;
/** The worker's backend has something for it (MemoryBackend: frames injected, tx room made). */
export const BACKEND_BIT = 1 << 31;
/** Pairs one worker may own (two doorbell bits each below CONTROL_BIT). */
export const MAX_PAIRS_PER_WORKER = 15;

/**
 * The interrupt block, shared by every worker of a device: word 0 is bumped (then notified) after a
 * worker sets queue `q`'s bit in word 1 + (q >> 5); the main thread takes the bits and raises them.
 */
export const IRQ_SEQ = 0;
export const irqWords = (queues: number) => 1 + ((queues + 31) >> 5);

/** The per-pair counters, in this order, as float64s in a worker's counter block. */
export const STAT_FIELDS = Object.keys(new QueueStats()) as (keyof QueueStats)[];
/** After the per-pair counters: worker-wide counters. */
export const Extra = {
  /** Frames software steering sent to another worker's pair that its ring had no room for (forward.ts). */
  CROSS_PAIR_DROPS: 0,
  /** Interrupt bits the worker set (each one main-thread notifyQueue). */
  INTERRUPTS: 1,
  /** Doorbell wake-ups the worker handled. */
  WAKEUPS: 2,
  /** Frames the worker's tap read / wrote (the tap's own counters). */
  TAP_RX: 3,
  TAP_TX: 4,
  /** The replica's DeviceStats.rxDroppedNotReady (frames the worker's sink refused). */
  RX_DROPPED_NOT_READY: 5,
  /** Interrupts the worker signalled itself on the vector's eventfd (queue-routes.ts), not counted in INTERRUPTS. */
  DIRECT_INTERRUPTS: 6,
  /** Frames handed to another worker (forward.ts): steered rx frames, stale-pair tx frames. */
  CROSS_PAIR_FORWARDS: 7,
  /** Kicks the worker read from its queues' kick eventfds itself (queue-routes.ts), no doorbell rung. */
  KICKS_DIRECT: 8,
  /** Frames a full forward ring refused that waited in the sender's spill (forward.ts). */
  CROSS_PAIR_SPILLS: 9,
  COUNT: 10,
} as const;
/**
 * A worker's counter block: its pairs' counters, the worker-wide ones, then per pair of the device the
 * worker's share of the rx frames crossing to it (forward.ts `crossing`), then per pair the frames bound
 * for it this worker dropped without owning it (forward.ts `dropsFor`, and rxDropped of a pair not its own).
 */
export const statsLength = (pairs: number, maxPairs: number) =>
  pairs * STAT_FIELDS.length + Extra.COUNT + 2 * maxPairs;

/** A tap's queues for a worker: its tap fds (dup'd for it), in the order of its pairs. */
export interface TapWorkerInit {
  kind: 'tap';
  fds: number[];
  /** The tap's data-path options. */
  tap: { zeroCopy: boolean; batchTx: boolean; batchRx: boolean; zeroCopyRxMinBytes: number };
}

/** How a worker opens its side of the device's backend (its queue j is its pair `pairs[j]`). */
export type WorkerBackendInit = TapWorkerInit | MemoryRingsInit;

/** Cross-worker forwarding (forward.ts): this worker's index, owners, its rings out and in, every doorbell. */
export interface ForwardInit {
  index: number;
  /** Worker index per device queue pair. */
  owner: number[];
  /** Per worker: the ring from this worker to it (null for itself). */
  out: (SharedArrayBuffer | null)[];
  /** Per worker: the ring from it to this worker (null for itself). */
  in: (SharedArrayBuffer | null)[];
  doors: SharedArrayBuffer[];
  /** Int32 per device pair: 1 while its owner holds a backlog for it (the senders hold their queue). */
  congestion: SharedArrayBuffer;
  /** Int32 per worker: 1 while it waits for room to forward a tx frame (its owners wake it). */
  roomWanted: SharedArrayBuffer;
}

/** What `workerData` carries. */
export interface WorkerInit {
  /** Device queue pairs this worker owns. */
  pairs: number[];
  backend: WorkerBackendInit;
  maxQueuePairs: number;
  supportedHashTypes: number;
  regions: ThreadRegion[];
  doorbell: SharedArrayBuffer;
  irq: SharedArrayBuffer;
  stats: SharedArrayBuffer;
  /** The queues the device's backend steers flows over itself (tun's automq), 0 if it does not (NetShared). */
  backendSteersOver: number;
  /** Frames steered to another worker's pair go there (null with one worker). */
  forward: ForwardInit | null;
  /** Automatic steering's flow table (FlowSteering.share), one for every worker of the device. */
  flows: SharedArrayBuffer;
}

/** The device state the per-pair paths read (NetShared), as the control plane last set it. */
export interface SharedState {
  features: string;
  hdrSize: number;
  hashReport: boolean;
  mergeable: boolean;
  exactHdrLen: boolean;
  multiqueue: boolean;
  curQueuePairs: number;
  hostOffloadMask: number;
  guestOffloadMask: number;
  rssInBackend: boolean;
  linkUp: boolean;
  stopped: boolean;
  broken: boolean;
  rxFilter: RxFilterState;
  /** The filter's own MAC (config-space `mac`, MAC_ADDR_SET). */
  mac: number[];
  rss: RssSnapshot;
  hashTunnel: number;
  rssContexts: RssContextSnapshot[];
  /** TUNSETOFFLOAD for the tap (null: leave it); the header size for TUNSETVNETHDRSZ. */
  offloads: BackendOffloads | null;
  vnetHeaderSize: number;
  /** Per device pair: its tap queue attached (TUNSETQUEUE, done by the owning worker). */
  attached: boolean[];
  /** Per data virtqueue: [max_packets, max_usecs]. */
  coalesce: [number, number][];
}

/** A coalescer's state crossing threads with its queue (Coalescer.handOff): [packets counted, held]. */
export type CoalesceHandoff = [number, boolean];

/** One frame of a pair's backlog. */
export interface BacklogFrame {
  frame: Uint8Array;
  offload: NetOffload | null;
  hash: number;
  report: number;
}

/**
 * An rx frame found crossing between workers when they stopped (forward.ts: a ring to its owner, or the
 * sender's spill), for device pair `pair`; the main thread takes it (crossing.ts).
 */
export interface CrossingFrame extends BacklogFrame {
  pair: number;
}

/** A queue handed to a worker: how to build it over the shared memory, and where the device left it. */
export interface QueueHandoff {
  setup: VirtqueueSetup;
  state: VirtqueueState;
}

export type Request =
  | {
      op: 'start';
      shared: SharedState;
      /** Per owned pair: [rx, tx] (null: that queue is not enabled). */
      queues: [QueueHandoff | null, QueueHandoff | null][];
      backlogs: BacklogFrame[][];
      stats: number[][];
      /** Per owned pair (queue-routes.ts): the worker's own dups of its queues' eventfds, or -1. */
      routeFds: number[];
      /** Per owned pair: [rx, tx] coalescer state, held notifications included. */
      coalesce: [CoalesceHandoff, CoalesceHandoff][];
    }
  | { op: 'sync'; shared: SharedState }
  /** New notification routes (queue-routes.ts): the worker closes its previous fds and takes these. */
  | { op: 'routes'; routeFds: number[] }
  /** Guest memory changed (DMA_MAP / DMA_UNMAP): regions to drop (by address), then regions to view. */
  | { op: 'memory'; add: ThreadRegion[]; remove: number[] }
  | { op: 'stop' }
  /**
   * After every worker answered `stop` (none forwards any more): the worker empties the rings from the
   * others (WorkerPool.stop): tx frames written out on its backend queue (`discard`: counted dropped),
   * rx frames given to the main thread.
   */
  | { op: 'flush'; discard: boolean }
  /** A round trip only (WorkerPool.settle): answered after what the worker's doorbell held. */
  | { op: 'ping' }
  | { op: 'close' }
  /** Tests: the worker blocks its thread `ms` and sends no answer (a worker that does not answer in time). */
  | { op: 'stall'; ms: number }
  /** Tests: the worker reschedules a setImmediate callback for `ms` (a worker that spins), then pongs. */
  | { op: 'spin'; ms: number };

export type Reply =
  | { op: 'started' | 'synced' | 'closed' | 'mapped' | 'routed' }
  /**
   * Guest errors the worker met so far (each also sent as a message, numbered), the last one's reason,
   * its coalescing timers armed now, and how many counter-publishing rounds it ran so far (tests).
   */
  | {
      op: 'pong';
      errors: number;
      needsReset: string | null;
      timers: number;
      publishRounds: number;
      /** setImmediate callbacks pending on the worker's event loop (tests: a worker that spins). */
      immediates: number;
    }
  | {
      op: 'stopped';
      /** Per owned pair: [rx, tx] ring states (null where the worker had no queue). */
      queues: [VirtqueueState | null, VirtqueueState | null][];
      backlogs: BacklogFrame[][];
      /** Per owned pair: [rx, tx] coalescer state, which the main thread's coalescers take over. */
      coalesce: [CoalesceHandoff, CoalesceHandoff][];
      /** The frames the worker's spill held (forward.ts), oldest first per owner. */
      spill: CrossingFrame[];
    }
  /** The rx frames the rings to this worker held, in ring order. */
  | { op: 'flushed'; rx: CrossingFrame[] }
  | { op: 'error'; message: string };

/** Atomics.waitAsync (Node 16+; the ES2024 lib this project does not target yet). */
export const waitAsync = (
  Atomics as unknown as {
    waitAsync(
      a: Int32Array,
      index: number,
      value: number,
    ): { async: false; value: 'not-equal' | 'timed-out' } | { async: true; value: Promise<string> };
  }
).waitAsync;
