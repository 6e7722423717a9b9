/**
 * The main thread's view of a backend whose queues run on workers (docs/workers.md). The pool needs no
 * more of a backend than `WorkerBackendControl`; `WorkerControlBackend` is the tap's: device-wide ioctls
 * (offloads, header size, RSS steering program, carrier) go to the tap here; the queues' reads and
 * writes happen in the workers, so this side never polls or writes them, and a queue's attach/detach
 * (TUNSETQUEUE, per fd) is recorded for the worker that owns the fd to apply.
 */
import { BackendError, OptionsError } from '../../../lib/errors.js';
import { F_DUPFD_CLOEXEC, libc } from '../../../lib/host/libc.js';
import type {
  BackendCapabilities,
  BackendOffloads,
  BackendRssConfig,
  BackendSink,
  NetBackend,
  TransmitResult,
} from '../../../lib/net/backend.js';
import type { TapBackend } from '../../../lib/tap/tap-backend.js';
import type { WorkerBackendInit } from './protocol.js';

/** What the pool lends its backend control. */
export interface WorkerPoolHooks {
  wake(pair: number): void;
  settle(): void;
  /** The queue pairs the driver uses now (VQ_PAIRS_SET; 1 without MQ). */
  pairsInUse(): number;
}

/** What the pool asks of the main thread's side of a backend whose queues run on workers. */
export interface WorkerBackendControl extends NetBackend {
  /** Per queue pair: attached (VQ_PAIRS_SET), as the device last asked; the owning worker applies it. */
  readonly attached: boolean[];
  /** The header size the workers' backends use (TUNSETVNETHDRSZ). */
  readonly vnetHeaderSize: number;
  /** Test mode (MemoryBackend `settle`): every kick is settled (WorkerPool.settle). */
  readonly settleKicks: boolean;
  /** The serialisable description a worker opens its side from, for device pairs `pairs`. */
  forWorker(pairs: number[]): WorkerBackendInit;
  /** Frees what `forWorker` made, for a worker that could not (it did not answer). */
  release(init: WorkerBackendInit): void;
  /** The pool's hooks: wake the worker owning `pair` (the doorbell's backend bit); settle; pairs in use. */
  bind(hooks: WorkerPoolHooks): void;
  /** After a settle round trip: takes what the workers left for this thread (frames they sent). */
  settled(): void;
}

export class WorkerControlBackend implements WorkerBackendControl {
  readonly settleKicks = false;
  readonly capabilities: BackendCapabilities;
  /** TUNSETQUEUE state per queue pair, as the device last asked. */
  readonly attached: boolean[];
  /** The last TUNSETOFFLOAD request (the workers re-apply it: adopting an fd probes offloads). */
  offloads: BackendOffloads | null = null;
  vnetHeaderSize = 12;

  constructor(
    readonly tap: TapBackend,
    queuePairs: number,
  ) {
    if (tap.fds.length < queuePairs)
      throw new OptionsError(`workers: the tap has ${tap.fds.length} queues for ${queuePairs} queue pairs`);
    this.capabilities = tap.capabilities;
    this.attached = tap.fds.map(() => true);
    this.vnetHeaderSize = tap.vnetHeaderSize;
  }

  /** `dup`s of the pairs' queue fds (fds are process-wide; the worker adopts them). */
  forWorker(pairs: number[]): WorkerBackendInit {
    const c = libc();
    const fds: number[] = [];
    try {
      for (const p of pairs) {
        const fd = c.fcntl(this.tap.fds[p]!, F_DUPFD_CLOEXEC, 0);
        if (fd < 0) throw new BackendError(`workers: dup of tap fd ${this.tap.fds[p]} failed`);
        fds.push(fd);
      }
    } catch (e) {
      for (const fd of fds) c.close(fd);
      throw e;
    }
    const t = this.tap;
    return {
      kind: 'tap',
      fds,
      tap: {
        zeroCopy: t.zeroCopy,
        batchTx: t.batchTx,
        batchRx: t.batchRx,
        zeroCopyRxMinBytes: t.zeroCopyRxMinBytes,
      },
    };
  }

  release(init: WorkerBackendInit): void {
    if (init.kind !== 'tap') return;
    const c = libc();
    for (const fd of init.fds) c.close(fd);
  }

  bind(): void {
    // The workers poll their own fds: nothing to wake.
  }

  settled(): void {}

  attach(sink: BackendSink): void {
    // Nothing is read on this thread: the workers read their queues.
    for (let q = 0; q < this.attached.length; q++) this.tap.pause(q);
    this.tap.attach(sink);
  }

  transmit(): TransmitResult {
    return 'dropped'; // the workers transmit
  }

  pause(): void {}

  resume(): void {}

  setOffloads(offloads: BackendOffloads): void {
    this.offloads = { ...offloads };
    this.tap.setOffloads(offloads);
  }

  setVnetHeaderSize(size: number): void {
    this.tap.setVnetHeaderSize(size);
    this.vnetHeaderSize = this.tap.vnetHeaderSize;
  }

  setQueuePairEnabled(queuePair: number, enabled: boolean): void {
    if (queuePair >= 0 && queuePair < this.attached.length) this.attached[queuePair] = enabled;
  }

  setCarrier(up: boolean): void {
    this.tap.setCarrier(up);
  }

  setRssSteering(config: BackendRssConfig | null): boolean {
    return this.tap.setRssSteering(config);
  }

  close(): void {
    this.tap.close();
  }
}
