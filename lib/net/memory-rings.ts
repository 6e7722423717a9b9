/**
 * MemoryBackend across threads (docs/workers.md): per queue pair one frame ring host -> worker (frames
 * injected for the guest) and one worker -> host (frames the guest sent), on SharedArrayBuffers. The host
 * side (`MemoryRingHost`) stays in MemoryBackend on the VMM's thread; `MemoryRingPeer` is the backend a
 * queue-pair worker uses in place of a tap. A full rx ring is a counted drop at `inject`; a full tx ring
 * is back-pressure (the worker stops taking tx chains until the host made room). No message per frame.
 */
import type {
  BackendCapabilities,
  BackendOffloads,
  BackendSink,
  NetBackend,
  NetOffload,
  TransmitResult,
} from './backend.js';
import { MAX_FRAME } from './backend.js';
import { FrameRing } from './frame-ring.js';
import { FrameDelivery } from './memory-delivery.js';

/** Int32 words of the shared state block. */
const HOST_SEQ = 0;
/** The workers' pause/resume calls (MemoryBackend.pauseCalls): entries written, then the entries. */
const LOG_COUNT = 1;
const LOG = 2;
const LOG_ENTRIES = 4096;
/** Then per pair: bit 0 paused (by the device, on the worker), bit 1 tx blocked (waiting for room). */
const PAIR_STATE = LOG + LOG_ENTRIES;
const PAUSED = 1;
const BLOCKED = 2;
/** Float64 counters per pair, written by the pair's worker only. */
const C_DELIVERED = 0;
const C_DIRECT = 1;
const C_CONSUMED = 2;
const C_TX_DROPPED = 3;
const COUNTERS = 4;
/** A tx chain is taken only with room for its frames (two largest frames when segmented) and a wrap. */
const TX_HEADROOM = 3 * FrameRing.recordBytes(MAX_FRAME);

/** What a worker needs to open its side (structured-clone safe). */
export interface MemoryRingsInit {
  kind: 'memory';
  capabilities: BackendCapabilities;
  direct: boolean;
  /** Device pairs this side serves (its queue j is pair pairs[j]) and their rings. */
  pairs: number[];
  rx: SharedArrayBuffer[];
  tx: SharedArrayBuffer[];
  state: SharedArrayBuffer;
  counters: SharedArrayBuffer;
}

/** Per-pair counters the workers publish (MemoryBackendStats adds them). */
export interface MemoryRingCounters {
  delivered: number;
  deliveredDirect: number;
  txDropped: number;
}

/** The VMM thread's side: injects into the rx rings, takes frames out of the tx rings. */
export class MemoryRingHost {
  readonly rx: FrameRing[];
  readonly tx: FrameRing[];
  readonly state: Int32Array;
  readonly counters: Float64Array;
  /** Frames written per rx ring (the worker counts those it consumed). */
  private readonly written: Float64Array;
  /** Rings the owner of pair p (pool: its doorbell's backend bit). */
  wake: (pair: number) => void = () => {};
  /**
   * The pair (ring) a frame injected on backend queue q goes to: as the device's `pairOf` would map it,
   * so that its worker takes it (set from the pairs in use; a tap feeds only attached queues anyway).
   */
  route: (queue: number) => number = (q) => q % this.rx.length;
  /** After a frame was injected for pair p: `wake`, and in settle mode a round trip to the workers. */
  injected: (pair: number) => void = (pair) => this.wake(pair);
  private seen = 0;
  private logSeen = 0;
  private closed = false;

  /** Rings for `pairs` queue pairs (the device's; the backend's `capabilities.queuePairs` may be fewer). */
  constructor(
    readonly capabilities: BackendCapabilities,
    pairs: number,
    private readonly direct: boolean,
    ringBytes: number,
    private readonly onFrame: (frame: Uint8Array, pair: number, offload: NetOffload | null) => void,
  ) {
    const n = pairs;
    this.rx = Array.from({ length: n }, () => new FrameRing(FrameRing.allocate(ringBytes)));
    this.tx = Array.from({ length: n }, () => new FrameRing(FrameRing.allocate(ringBytes)));
    this.state = new Int32Array(new SharedArrayBuffer(4 * (PAIR_STATE + n)));
    this.counters = new Float64Array(new SharedArrayBuffer(8 * COUNTERS * n));
    this.written = new Float64Array(n);
    this.waitTx();
  }

  /** The init of a worker serving `pairs`. */
  forWorker(pairs: number[]): MemoryRingsInit {
    return {
      kind: 'memory',
      capabilities: this.capabilities,
      direct: this.direct,
      pairs: [...pairs],
      rx: pairs.map((p) => this.rx[p]!.buffer),
      tx: pairs.map((p) => this.tx[p]!.buffer),
      state: this.state.buffer as SharedArrayBuffer,
      counters: this.counters.buffer as SharedArrayBuffer,
    };
  }

  /** Host -> guest: false when the rx ring has no room (the caller counts the drop). */
  inject(frame: Uint8Array, pair: number, offload: NetOffload | null): boolean {
    if (!this.rx[pair]!.write(frame, 0, frame.length, offload)) return false;
    this.written[pair]!++;
    this.injected(pair);
    return true;
  }

  /** Frames injected for `pair` that its worker has not taken yet. */
  pending(pair: number): number {
    return this.written[pair]! - this.counters[pair * COUNTERS + C_CONSUMED]!;
  }

  isPaused(pair: number): boolean {
    return (Atomics.load(this.state, PAIR_STATE + pair) & PAUSED) !== 0;
  }

  counter(pair: number): MemoryRingCounters {
    const c = this.counters;
    const o = pair * COUNTERS;
    return {
      delivered: c[o + C_DELIVERED]!,
      deliveredDirect: c[o + C_DIRECT]!,
      txDropped: c[o + C_TX_DROPPED]!,
    };
  }

  /** Takes every frame the workers sent; wakes a worker whose tx was waiting for room. Returns how many. */
  drainTx(): number {
    let n = 0;
    for (let p = 0; p < this.tx.length; p++) {
      const r = this.tx[p]!;
      let took = false;
      while (r.next()) {
        const off = r.hasOffload ? { ...r.offload } : null;
        const frame = r.bytes.slice(r.frameOffset, r.frameOffset + r.frameLength);
        r.consume();
        took = true;
        n++;
        this.onFrame(frame, p, off);
      }
      if (took && (Atomics.load(this.state, PAIR_STATE + p) & BLOCKED) !== 0) this.wake(p);
    }
    return n;
  }

  /**
   * The pause/resume calls the workers made since the last look, in order (at most the last 4096: a
   * record for tests, like MemoryBackend.pauseCalls on one thread).
   */
  takePauseCalls(out: { queuePair: number; paused: boolean }[]): void {
    const n = Atomics.load(this.state, LOG_COUNT);
    for (let i = Math.max(this.logSeen, n - LOG_ENTRIES); i < n; i++) {
      const e = Atomics.load(this.state, LOG + (i % LOG_ENTRIES));
      out.push({ queuePair: e >> 1, paused: (e & 1) === 1 });
    }
    this.logSeen = n;
  }

  /** Stops waiting for the workers' tx (the backend closed). */
  close(): void {
    this.closed = true;
    Atomics.add(this.state, HOST_SEQ, 1);
    Atomics.notify(this.state, HOST_SEQ);
  }

  private waitTx(): void {
    if (this.closed) return;
    const r = waitAsync(this.state, HOST_SEQ, this.seen);
    const next = () => {
      if (this.closed) return;
      this.seen = Atomics.load(this.state, HOST_SEQ);
      this.drainTx();
      this.waitTx();
    };
    if (r.async) void r.value.then(next);
    else setImmediate(next);
  }
}

/** The worker's side: a NetBackend whose queue j is pair `init.pairs[j]`'s two rings. */
export class MemoryRingPeer implements NetBackend {
  readonly capabilities: BackendCapabilities;
  private readonly rx: FrameRing[];
  private readonly tx: FrameRing[];
  private readonly state: Int32Array;
  private readonly counters: Float64Array;
  private readonly paused: boolean[];
  /** The worker holds queue j (not started or stopped): frames wait in the ring. */
  private readonly held: boolean[];
  private readonly delivery: FrameDelivery;
  private sink: BackendSink | null = null;
  private pumping = false;
  private hostPending = false;
  private txFrames = 0;

  constructor(private readonly init: MemoryRingsInit) {
    this.capabilities = init.capabilities;
    this.rx = init.rx.map((b) => new FrameRing(b));
    this.tx = init.tx.map((b) => new FrameRing(b));
    this.state = new Int32Array(init.state);
    this.counters = new Float64Array(init.counters);
    this.paused = init.pairs.map(() => false);
    this.held = init.pairs.map(() => true);
    this.delivery = new FrameDelivery(init.capabilities.vnetHeader, init.direct);
  }

  /** Frames delivered to the device / written for the host (the worker's tap-like counters). */
  stats(): { rxFrames: number; txFrames: number } {
    return { rxFrames: this.delivery.delivered, txFrames: this.txFrames };
  }

  attach(sink: BackendSink): void {
    this.sink = sink;
  }

  /** The host injected frames or made tx room (the doorbell's backend bit). */
  wake(): void {
    this.pump();
    for (let j = 0; j < this.tx.length; j++) {
      const w = PAIR_STATE + this.init.pairs[j]!;
      if ((Atomics.load(this.state, w) & BLOCKED) !== 0 && this.txRoom(j)) {
        Atomics.and(this.state, w, ~BLOCKED);
        this.sink?.transmitReady?.(j);
      }
    }
  }

  transmit(frame: Uint8Array, queuePair: number, offload: NetOffload | null): TransmitResult {
    return this.transmitRange(frame, 0, frame.length, queuePair, offload);
  }

  transmitRange(
    bytes: Uint8Array,
    offset: number,
    length: number,
    queuePair: number,
    offload: NetOffload | null,
  ): TransmitResult {
    const r = this.tx[queuePair];
    if (!r) return 'dropped'; // PairBackend maps every pair to one of ours: not reached
    if (!r.write(bytes, offset, length, this.capabilities.vnetHeader ? offload : null)) {
      this.counters[this.init.pairs[queuePair]! * COUNTERS + C_TX_DROPPED]!++;
      return 'dropped';
    }
    this.txFrames++;
    if (!this.hostPending) {
      // One host wake-up per burst of this thread, not per frame.
      this.hostPending = true;
      queueMicrotask(this.wakeHost);
    }
    return 'sent';
  }

  private readonly wakeHost = () => {
    this.hostPending = false;
    Atomics.add(this.state, HOST_SEQ, 1);
    Atomics.notify(this.state, HOST_SEQ);
  };

  transmitAllowed(queuePair: number): boolean {
    if (this.txRoom(queuePair)) return true;
    // Back-pressure: the chain stays in the guest's ring; the host wakes us once it took frames.
    Atomics.or(this.state, PAIR_STATE + this.init.pairs[queuePair]!, BLOCKED);
    // The host may have drained between the check and the flag: look again.
    if (!this.txRoom(queuePair)) return false;
    Atomics.and(this.state, PAIR_STATE + this.init.pairs[queuePair]!, ~BLOCKED);
    return true;
  }

  private txRoom(j: number): boolean {
    const r = this.tx[j];
    return r === undefined || r.capacity - r.used >= TX_HEADROOM;
  }

  pause(queuePair: number): void {
    this.setPaused(queuePair, true);
  }

  resume(queuePair: number): void {
    this.setPaused(queuePair, false);
    this.pump();
  }

  /** The worker's own stop/go of queue j, apart from the device's pause (not logged in pauseCalls). */
  hold(j: number, on: boolean): void {
    if (j < 0 || j >= this.held.length) return;
    this.held[j] = on;
    if (!on) this.pump();
  }

  private setPaused(j: number, paused: boolean): void {
    if (j < 0 || j >= this.paused.length) return;
    this.paused[j] = paused;
    const pair = this.init.pairs[j]!;
    const at = Atomics.add(this.state, LOG_COUNT, 1);
    Atomics.store(this.state, LOG + (at % LOG_ENTRIES), (pair << 1) | (paused ? 1 : 0));
    const w = PAIR_STATE + pair;
    if (paused) Atomics.or(this.state, w, PAUSED);
    else Atomics.and(this.state, w, ~PAUSED);
  }

  setOffloads(_offloads: BackendOffloads): void {}

  setVnetHeaderSize(size: number): void {
    this.delivery.hdrSize = size;
  }

  close(): void {
    this.sink = null;
  }

  /** Delivers waiting frames, FIFO per queue, until each queue is empty or paused. Not re-entrant. */
  private pump(): void {
    const sink = this.sink;
    if (this.pumping || !sink) return;
    this.pumping = true;
    try {
      const d = this.delivery;
      for (let j = 0; j < this.rx.length; j++) {
        const r = this.rx[j]!;
        const o = this.init.pairs[j]! * COUNTERS;
        while (!this.paused[j] && !this.held[j] && r.next()) {
          const direct = d.deliveredDirect;
          try {
            d.deliver(sink, r.bytes, r.frameOffset, r.frameLength, j, r.hasOffload ? r.offload : null);
          } finally {
            r.consume();
            this.counters[o + C_CONSUMED]!++;
            this.counters[o + C_DELIVERED]!++;
            if (d.deliveredDirect !== direct) this.counters[o + C_DIRECT]!++;
          }
        }
      }
    } finally {
      this.pumping = false;
    }
  }
}

/** Atomics.waitAsync (Node 16+; the ES2024 lib this project does not target yet). */
const waitAsync = (
  Atomics as unknown as {
    waitAsync(
      a: Int32Array,
      index: number,
      value: number,
    ): { async: false; value: string } | { async: true; value: Promise<string> };
  }
).waitAsync;
