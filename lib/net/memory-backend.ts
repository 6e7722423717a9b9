/**
 * An in-memory NetBackend: no privileges, no kernel. Tests and examples inject frames towards the guest
 * and observe the frames the guest sends. By default it behaves like a tap opened with IFF_VNET_HDR
 * (every offload accepted); with `vnetHeader: false` like a plain tap (no offload metadata at all).
 */
import { BackendError, OptionsError } from '../errors.js';
import {
  type BackendCapabilities,
  type BackendOffloads,
  type BackendRssConfig,
  type BackendSink,
  type NetBackend,
  type NetOffload,
  ReceiveTarget,
  type TransmitResult,
} from './backend.js';
import {
  GSO_UDP_TUNNEL,
  VNET_HDR_OFFLOAD_BYTES,
  VNET_HDR_TUNNEL_BYTES,
  writeVnetHeader,
} from './vnet-header.js';

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
  /** Every `pause` / `resume` call, in order. */
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
  /** The vnet header size, as a tap's TUNSETVNETHDRSZ (10 until the device sets it). */
  private hdrSize = 10;
  private readonly target = new ReceiveTarget();
  private overflow = new Uint8Array(0);
  private readonly header = new Uint8Array(VNET_HDR_TUNNEL_BYTES);
  private pumping = false;
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

  /** Frames held for `queuePair` (paused or not yet attached). */
  pending(queuePair = 0): number {
    return this.held[queuePair]?.length ?? 0;
  }

  /** Whether `queuePair` is paused now. */
  isPaused(queuePair = 0): boolean {
    return this.paused[queuePair] ?? false;
  }

  stats(): MemoryBackendStats {
    return { ...this.s };
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
    this.hdrSize = size;
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
    for (const q of this.held) {
      this.s.rxDropped += q.length;
      q.length = 0;
    }
  }

  private deliverable(qp: number): boolean {
    return this.sink !== null && !this.paused[qp] && !this.closed;
  }

  private deliver(frame: Uint8Array, qp: number, off: NetOffload | null): void {
    this.s.delivered++;
    const sink = this.sink as BackendSink;
    const hs = this.capabilities.vnetHeader ? this.hdrSize : 0;
    // Tunnel offsets need a 24-byte header; a shorter one cannot carry them (tun would not deliver it).
    const fits = hs >= VNET_HDR_TUNNEL_BYTES || off === null || (off.gsoType & GSO_UDP_TUNNEL) === 0;
    if (this.direct && fits && sink.completeReceive && sink.lendReceive?.(qp, hs, this.target)) {
      this.s.deliveredDirect++;
      sink.completeReceive(this.writeLent(hs, off, frame), this.overflow);
      return;
    }
    sink.receive(frame, qp, off);
  }

  /**
   * What tun's read does with a vnet header: the 10 offload bytes (24 with the tunnel offsets when the
   * header is that large), the rest of the header skipped (left as it was), then the frame, over the lent
   * segments and then the overflow. Returns the bytes written.
   */
  private writeLent(hs: number, off: NetOffload | null, frame: Uint8Array): number {
    const t = this.target;
    const total = hs + frame.length;
    if (this.overflow.length < total) this.overflow = new Uint8Array(total);
    const h = this.header;
    const written = hs >= VNET_HDR_TUNNEL_BYTES ? VNET_HDR_TUNNEL_BYTES : VNET_HDR_OFFLOAD_BYTES;
    writeVnetHeader(h, 0, hs > 0 ? off : null, written);
    const put = (dst: Uint8Array, o: number, from: number, to: number) => {
      // Stream bytes [from, to) at dst[o...]: header bytes past `written` are skipped, not written.
      for (let p = from; p < Math.min(to, hs, written); p++) dst[o + p - from] = h[p] as number;
      const f = Math.max(from, hs);
      if (f < to) dst.set(frame.subarray(f - hs, to - hs), o + f - from);
    };
    let pos = 0;
    for (let i = 0; i < t.count && pos < total; i++) {
      const n = Math.min(t.lengths[i] as number, total - pos);
      put(t.bytes[i] as Uint8Array, t.offsets[i] as number, pos, pos + n);
      pos += n;
    }
    if (pos < total) put(this.overflow, 0, pos, total);
    return total;
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
