/**
 * An in-memory NetBackend: no privileges, no kernel. Tests and examples inject frames towards the guest
 * and observe the frames the guest sends. By default it behaves like a tap opened with IFF_VNET_HDR
 * (every offload accepted); with `vnetHeader: false` like a plain tap (no offload metadata at all).
 */
import { BackendError, OptionsError } from '../errors.js';
import type {
  BackendCapabilities,
  BackendOffloads,
  BackendRssConfig,
  BackendSink,
  NetBackend,
  NetOffload,
  TransmitResult,
} from './backend.js';
import { FrameDelivery } from './memory-delivery.js';
import { MemoryRingHost } from './memory-rings.js';

/** `ringBytes` bounds: room for a few of the largest frames, at most 1 GiB per ring. */
const MIN_RING_BYTES = 1 << 18;
const MAX_RING_BYTES = 1 << 30;

/** Options of `MemoryBackend`. */
export interface MemoryBackendOptions {
  /** Offload metadata crosses the backend (a tap with IFF_VNET_HDR). Default true. */
  vnetHeader?: boolean;
  /** Queue pairs. Default 1. */
  queues?: number;
  /** Override single offloads (ignored without vnetHeader, which means no offloads). */
  offloads?: Partial<BackendOffloads>;
  /** Frames held per queue pair while it is paused or before `attach`; beyond that they are dropped. Default 256. */
  backlog?: number;
  /**
   * How frames reach the device: 'direct' (default) writes them straight into a guest buffer the device
   * lends (BackendSink.lendReceive), as TapBackend's readv does; 'copy' always calls `receive`.
   */
  receive?: 'direct' | 'copy';
  /** Claim to steer flows itself like a multiqueue tap (BackendCapabilities.steersFlows). Default false. */
  steersFlows?: boolean;
  /**
   * Accept `setRssSteering` (true) as a tap with an eBPF steering program does; the test then injects
   * each frame on the queue RSS selects. Default false: `setRssSteering` is declined.
   */
  rssSteering?: boolean;
  /**
   * Worker mode (`workers` device option, docs/workers.md): bytes of each of a queue pair's two frame
   * rings (host -> worker, worker -> host), rounded up to a power of two. An injected frame that finds
   * its rx ring full is dropped (`rxDropped`); a full tx ring holds the guest's tx chains back. Default
   * 4 MiB; 256 KiB..1 GiB.
   */
  ringBytes?: number;
  /**
   * Worker mode, for tests: each `inject` and each guest kick waits (synchronously) until the workers
   * handled it, its tx frames reached `onFrame` handlers and its interrupts were raised, so that a test
   * written for one thread holds without sleeps. Default false.
   */
  settle?: boolean;
}

/** Counters (monotonic). */
export interface MemoryBackendStats {
  /** Frames injected (host -> guest), whether delivered, held or dropped. */
  injected: number;
  /** Frames handed to the sink. */
  delivered: number;
  /** Of `delivered`, those written straight into a buffer the device lent (receive: 'direct'). */
  deliveredDirect: number;
  /** Injected frames dropped because the queue's backlog was full (or the queue pair does not exist). */
  rxDropped: number;
  /** Frames the guest sent (transmit returned 'sent'). */
  transmitted: number;
  /** Transmits that returned 'dropped' (closed backend, bad queue pair). */
  txDropped: number;
}

/** A frame the guest sent, as `onFrame` handlers see it. */
export type MemoryFrameHandler = (frame: Uint8Array, queuePair: number, offload: NetOffload | null) => void;

interface Held {
  frame: Uint8Array;
  offload: NetOffload | null;
}

function allOffloads(on: boolean): BackendOffloads {
  return {
    csum: on,
    tso4: on,
    tso6: on,
    ecn: on,
    ufo: on,
    uso4: on,
    uso6: on,
    tunnel: on,
    tunnelCsum: on,
  };
}

/** An in-memory peer for the device (docs/backends.md). */
export class MemoryBackend implements NetBackend {
  readonly capabilities: BackendCapabilities;
  /** Every `setOffloads` call, in order (copies). */
  readonly offloadCalls: BackendOffloads[] = [];
  /** Every `setVnetHeaderSize` call, in order. */
  readonly vnetHeaderSizeCalls: number[] = [];
  /** Every `setQueuePairEnabled` call, in order. */
  readonly queuePairEnabledCalls: { queuePair: number; enabled: boolean }[] = [];
  /** Every `setRssSteering` call, in order (copies; null for stop). */
  readonly rssSteeringCalls: (BackendRssConfig | null)[] = [];
  /** Every `pause` / `resume` call, in order (in worker mode: the workers', as of their last settle). */
  readonly pauseCalls: { queuePair: number; paused: boolean }[] = [];

  private sink: BackendSink | null = null;
  private readonly handlers: MemoryFrameHandler[] = [];
  private readonly paused: boolean[];
  private readonly held: Held[][];
  private readonly backlog: number;
  private closed = false;
  private linkUp = true;
  private readonly direct: boolean;
  private readonly rssSteering: boolean;
  private readonly delivery: FrameDelivery;
  private pumping = false;
  /** Worker mode: `ringBytes`, `settle`, and the rings once the device's workers took the queues. */
  readonly ringBytes: number;
  readonly settle: boolean;
  private rings: MemoryRingHost | null = null;
  private readonly s: MemoryBackendStats = {
    injected: 0,
    delivered: 0,
    deliveredDirect: 0,
    rxDropped: 0,
    transmitted: 0,
    txDropped: 0,
  };

  constructor(options: MemoryBackendOptions = {}) {
    const queues = options.queues ?? 1;
    if (!Number.isInteger(queues) || queues < 1 || queues > 0x8000)
      throw new OptionsError(`MemoryBackend: queues must be an integer in 1..32768, got ${queues}`);
    const backlog = options.backlog ?? 256;
    if (!Number.isInteger(backlog) || backlog < 0)
      throw new OptionsError(`MemoryBackend: backlog must be a non-negative integer, got ${backlog}`);
    const vnet = options.vnetHeader ?? true;
    const offloads = allOffloads(vnet);
    if (vnet && options.offloads) Object.assign(offloads, options.offloads);
    this.capabilities = {
      vnetHeader: vnet,
      offloads,
      queuePairs: queues,
      steersFlows: options.steersFlows ?? false,
    };
    this.backlog = backlog;
    const mode = options.receive ?? 'direct';
    if (mode !== 'direct' && mode !== 'copy')
      throw new OptionsError(`MemoryBackend: receive must be 'direct' or 'copy', got ${String(mode)}`);
    this.direct = mode === 'direct';
    this.delivery = new FrameDelivery(vnet, this.direct);
    const ringBytes = options.ringBytes ?? 4 << 20;
    if (!Number.isInteger(ringBytes) || ringBytes < MIN_RING_BYTES || ringBytes > MAX_RING_BYTES)
      throw new OptionsError(
        `MemoryBackend: ringBytes must be an integer in ${MIN_RING_BYTES}..${MAX_RING_BYTES}, got ${ringBytes}`,
      );
    this.ringBytes = ringBytes;
    this.settle = options.settle ?? false;
    this.rssSteering = options.rssSteering ?? false;
    this.paused = new Array<boolean>(queues).fill(false);
    this.held = Array.from({ length: queues }, () => []);
  }

  attach(sink: BackendSink): void {
    if (this.sink) throw new BackendError('MemoryBackend.attach: already attached');
    this.sink = sink;
    this.pump();
  }

  /**
   * Host -> guest: a frame as if received on backend queue `queuePair`. Delivered now when attached and
   * not paused; otherwise held (FIFO, up to `backlog` frames) and delivered on attach/resume; beyond that
   * counted in `rxDropped`. `offload` is ignored (null to the sink) without vnetHeader. Copies what it holds.
   */
  inject(frame: Uint8Array, queuePair = 0, offload?: NetOffload | null): void {
    this.s.injected++;
    if (this.closed || !Number.isInteger(queuePair) || queuePair < 0 || queuePair >= this.held.length) {
      this.s.rxDropped++;
      return;
    }
    const off = this.capabilities.vnetHeader ? (offload ?? null) : null;
    if (this.rings) {
      if (!this.rings.inject(frame, this.rings.route(queuePair), off)) this.s.rxDropped++;
      return;
    }
    const q = this.held[queuePair] as Held[];
    if (!this.pumping && q.length === 0 && this.deliverable(queuePair)) {
      // Fast path: no copy; the sink only uses the frame during the call.
      this.pumping = true;
      try {
        this.deliver(frame, queuePair, off);
      } finally {
        this.pumping = false;
      }
      this.pump();
      return;
    }
    if (q.length >= this.backlog) {
      this.s.rxDropped++;
      return;
    }
    q.push({ frame: frame.slice(), offload: off ? { ...off } : null });
    this.pump();
  }

  /** Registers a handler for frames the guest sends (header stripped; the handler gets its own copy). */
  onFrame(handler: MemoryFrameHandler): void {
    this.handlers.push(handler);
  }

  /** Link state as the peer sees it: calls the sink's linkChanged on a change. */
  setLinkUp(up: boolean): void {
    if (this.linkUp === up) return;
    this.linkUp = up;
    this.sink?.linkChanged?.(up);
  }

  /** Whether the link is up (as last set). */
  get isLinkUp(): boolean {
    return this.linkUp;
  }

  /** Frames held for `queuePair` (paused or not yet attached; in worker mode: in its rx ring). */
  pending(queuePair = 0): number {
    if (this.rings && queuePair >= 0 && queuePair < this.held.length)
      return this.rings.pending(this.rings.route(queuePair));
    return this.held[queuePair]?.length ?? 0;
  }

  /** Whether `queuePair` is paused now (in worker mode: as its worker last set it). */
  isPaused(queuePair = 0): boolean {
    if (this.rings && queuePair >= 0 && queuePair < this.held.length)
      return this.rings.isPaused(this.rings.route(queuePair));
    return this.paused[queuePair] ?? false;
  }

  stats(): MemoryBackendStats {
    const s = { ...this.s };
    s.delivered += this.delivery.delivered;
    s.deliveredDirect += this.delivery.deliveredDirect;
    if (this.rings)
      for (let p = 0; p < this.rings.tx.length; p++) {
        const c = this.rings.counter(p);
        s.delivered += c.delivered;
        s.deliveredDirect += c.deliveredDirect;
        s.txDropped += c.txDropped;
      }
    return s;
  }

  /**
   * Worker mode (docs/workers.md): from now on frames cross through shared-memory rings, served by the
   * workers' `MemoryRingPeer`s; frames held so far move into the rings. Called once, by the device.
   */
  useRings(devicePairs = 1): MemoryRingHost {
    if (this.rings) throw new BackendError('MemoryBackend.useRings: already in worker mode');
    const rings = new MemoryRingHost(
      this.capabilities,
      devicePairs,
      this.direct,
      this.ringBytes,
      (frame, p, off) => this.sent(frame, p, off),
    );
    this.rings = rings;
    for (const [p, q] of this.held.entries()) {
      for (const h of q) if (!rings.inject(h.frame, p % devicePairs, h.offload)) this.s.rxDropped++;
      q.length = 0;
    }
    return rings;
  }

  /**
   * A frame pair `pair`'s worker sent (worker mode): counted and handed to the handlers as `transmit`
   * does, on the backend queue the device would have used on one thread (a pair beyond this backend's
   * queues shares one, shared.ts backendQueueOf).
   */
  private sent(frame: Uint8Array, pair: number, off: NetOffload | null): void {
    const queuePair = pair % this.held.length;
    this.s.transmitted++;
    for (const h of this.handlers) h(frame.slice(), queuePair, off ? { ...off } : null);
  }

  transmit(frame: Uint8Array, queuePair: number, offload: NetOffload | null): TransmitResult {
    if (this.closed || !Number.isInteger(queuePair) || queuePair < 0 || queuePair >= this.held.length) {
      this.s.txDropped++;
      return 'dropped';
    }
    this.s.transmitted++;
    const off = this.capabilities.vnetHeader && offload ? { ...offload } : null;
    for (const h of this.handlers) h(frame.slice(), queuePair, off ? { ...off } : null);
    return 'sent';
  }

  pause(queuePair: number): void {
    if (queuePair < 0 || queuePair >= this.paused.length) return;
    this.pauseCalls.push({ queuePair, paused: true });
    this.paused[queuePair] = true;
  }

  resume(queuePair: number): void {
    if (queuePair < 0 || queuePair >= this.paused.length) return;
    this.pauseCalls.push({ queuePair, paused: false });
    this.paused[queuePair] = false;
    this.pump();
  }

  setOffloads(offloads: BackendOffloads): void {
    this.offloadCalls.push({ ...offloads });
  }

  setVnetHeaderSize(size: number): void {
    this.vnetHeaderSizeCalls.push(size);
    this.delivery.hdrSize = size;
  }

  setRssSteering(config: BackendRssConfig | null): boolean {
    this.rssSteeringCalls.push(
      config && { ...config, key: config.key.slice(), table: Array.from(config.table) },
    );
    return config !== null && this.rssSteering && !this.closed;
  }

  setQueuePairEnabled(queuePair: number, enabled: boolean): void {
    this.queuePairEnabledCalls.push({ queuePair, enabled });
  }

  /** Drops held frames (counted) and refuses further traffic. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.rings) {
      // Frames still in the rx rings never reach the guest (the workers stop with the device).
      for (let p = 0; p < this.rings.rx.length; p++) this.s.rxDropped += this.rings.pending(p);
      this.rings.close();
    }
    for (const q of this.held) {
      this.s.rxDropped += q.length;
      q.length = 0;
    }
  }

  private deliverable(qp: number): boolean {
    return this.sink !== null && !this.paused[qp] && !this.closed;
  }

  private deliver(frame: Uint8Array, qp: number, off: NetOffload | null): void {
    this.delivery.deliver(this.sink as BackendSink, frame, 0, frame.length, qp, off);
  }

  /**
   * Delivers held frames, FIFO per queue pair, until none is deliverable. Not re-entrant: a sink that
   * resumes or injects from inside receive is served by the outer loop.
   */
  private pump(): void {
    if (this.pumping) return;
    this.pumping = true;
    try {
      let progress = true;
      while (progress) {
        progress = false;
        for (let qp = 0; qp < this.held.length; qp++) {
          const q = this.held[qp] as Held[];
          while (q.length > 0 && this.deliverable(qp)) {
            const h = q.shift() as Held;
            this.deliver(h.frame, qp, h.offload);
            progress = true;
          }
        }
      }
    } finally {
      this.pumping = false;
    }
  }
}
