/**
 * Inside a queue-pair worker: the worker's own tap (adopted copies of its pairs' queue fds, queues
 * 0..k-1) seen by the shared per-pair data paths as the device's backend, whose queue numbers are device
 * pairs. Pair `pairs[j]` is tap queue j. A tx frame for a backend queue this worker does not own (a
 * pair beyond the pairs in use, shared.ts backendQueueOf) goes to the worker that owns it (`foreign`,
 * forward.ts): its own fd may be detached then, and a MemoryBackend's ring is that queue's only.
 */
import type {
  BackendCapabilities,
  BackendOffloads,
  BackendSink,
  NetBackend,
  NetOffload,
  ReceiveTarget,
  TransmitResult,
} from '../../../lib/net/backend.js';
import type { ForwardedTx } from './forward.js';

/** Backend queues other workers own, for tx (forward.ts CrossWorker). */
export interface ForeignTx {
  txRoom(queue: number): boolean;
  /** The frame copied into the ring to the owner; false when it has no room. */
  forwardTx: ForwardedTx;
}

export class PairBackend implements NetBackend, BackendSink {
  readonly capabilities: BackendCapabilities;
  /** Device pair -> tap queue of this worker (-1: another worker's). */
  private readonly local: Int32Array;
  private sink: BackendSink | null = null;
  /** Set with more than one worker: tx for the other workers' queues. */
  foreign: ForeignTx | null = null;

  constructor(
    private readonly inner: NetBackend,
    private readonly pairs: readonly number[],
    maxQueuePairs: number,
    steersFlows: boolean,
  ) {
    this.capabilities = { ...inner.capabilities, queuePairs: maxQueuePairs, steersFlows };
    this.local = new Int32Array(maxQueuePairs).fill(-1);
    for (const [j, p] of pairs.entries()) this.local[p] = j;
  }

  /** Whether tx for `pair` goes to another worker. */
  private elsewhere(pair: number): boolean {
    return this.foreign !== null && !(this.local[pair]! >= 0);
  }

  private q(pair: number): number {
    const j = pair >= 0 && pair < this.local.length ? this.local[pair]! : -1;
    return Math.max(j, 0);
  }

  attach(sink: BackendSink): void {
    this.sink = sink;
    this.inner.attach(this);
  }

  transmit(frame: Uint8Array, queuePair: number, offload: NetOffload | null): TransmitResult {
    if (this.elsewhere(queuePair))
      return this.foreign!.forwardTx(queuePair, frame, 0, frame.length, offload) ? 'sent' : 'dropped';
    return this.inner.transmit(frame, this.q(queuePair), offload);
  }

  transmitRange(
    bytes: Uint8Array,
    offset: number,
    length: number,
    queuePair: number,
    offload: NetOffload | null,
  ): TransmitResult {
    if (this.elsewhere(queuePair))
      return this.foreign!.forwardTx(queuePair, bytes, offset, length, offload) ? 'sent' : 'dropped';
    const i = this.inner;
    const q = this.q(queuePair);
    return i.transmitRange
      ? i.transmitRange(bytes, offset, length, q, offload)
      : i.transmit(bytes.subarray(offset, offset + length), q, offload);
  }

  transmitAllowed(queuePair: number): boolean {
    if (this.elsewhere(queuePair)) return this.foreign!.txRoom(queuePair);
    return this.inner.transmitAllowed?.(this.q(queuePair)) ?? true;
  }

  flushTransmit(queuePair: number): number {
    if (this.elsewhere(queuePair)) return 0; // copied into the ring already
    return this.inner.flushTransmit?.(this.q(queuePair)) ?? 0;
  }

  pause(queuePair: number): void {
    if (this.local[queuePair] !== undefined && this.local[queuePair]! >= 0)
      this.inner.pause(this.q(queuePair));
  }

  resume(queuePair: number): void {
    if (this.local[queuePair] !== undefined && this.local[queuePair]! >= 0)
      this.inner.resume(this.q(queuePair));
  }

  setOffloads(offloads: BackendOffloads): void {
    this.inner.setOffloads?.(offloads);
  }

  setVnetHeaderSize(size: number): void {
    this.inner.setVnetHeaderSize?.(size);
  }

  setQueuePairEnabled(queuePair: number, enabled: boolean): void {
    if (this.local[queuePair]! >= 0) this.inner.setQueuePairEnabled?.(this.q(queuePair), enabled);
  }

  close(): void {
    this.inner.close();
  }

  // ---- BackendSink: tap queue j -> device pair pairs[j] -----------------------------------------

  receive(frame: Uint8Array, queuePair: number, offload: NetOffload | null): void {
    this.sink?.receive(frame, this.pairs[queuePair] ?? -1, offload);
  }

  receiveRange(
    bytes: Uint8Array,
    offset: number,
    length: number,
    queuePair: number,
    offload: NetOffload | null,
  ): void {
    const s = this.sink;
    if (!s) return;
    const p = this.pairs[queuePair] ?? -1;
    if (s.receiveRange) s.receiveRange(bytes, offset, length, p, offload);
    else s.receive(bytes.subarray(offset, offset + length), p, offload);
  }

  linkChanged(): void {
    // The main thread's tap watches the link.
  }

  lendReceive(queuePair: number, headerSize: number, target: ReceiveTarget): boolean {
    return this.sink?.lendReceive?.(this.pairs[queuePair] ?? -1, headerSize, target) ?? false;
  }

  completeReceive(length: number, overflow: Uint8Array): void {
    this.sink?.completeReceive?.(length, overflow);
  }

  cancelReceive(): void {
    this.sink?.cancelReceive?.();
  }

  transmitReady(queuePair: number): void {
    this.sink?.transmitReady?.(this.pairs[queuePair] ?? -1);
  }
}
