/**
 * The main thread's side of a MemoryBackend whose queues run on workers (docs/workers.md): frames cross
 * through the backend's shared-memory rings (lib/net/memory-rings.ts), which the workers' MemoryRingPeer
 * serve; the control-plane calls (offloads, header size, RSS steering, pairs attached) are recorded on
 * the MemoryBackend as on one thread, and the replica's state reaches the workers with each request.
 */
import type {
  BackendCapabilities,
  BackendOffloads,
  BackendRssConfig,
  BackendSink,
  TransmitResult,
} from '../../../lib/net/backend.js';
import type { MemoryBackend } from '../../../lib/net/memory-backend.js';
import type { MemoryRingHost } from '../../../lib/net/memory-rings.js';
import type { WorkerBackendControl, WorkerPoolHooks } from './control-backend.js';
import type { WorkerBackendInit } from './protocol.js';

export class MemoryWorkerControl implements WorkerBackendControl {
  readonly capabilities: BackendCapabilities;
  readonly attached: boolean[];
  readonly settleKicks: boolean;
  vnetHeaderSize = 10;
  private readonly rings: MemoryRingHost;

  constructor(
    readonly backend: MemoryBackend,
    queuePairs: number,
  ) {
    this.capabilities = backend.capabilities;
    this.attached = new Array<boolean>(queuePairs).fill(true);
    this.settleKicks = backend.settle;
    this.rings = backend.useRings(queuePairs);
  }

  forWorker(pairs: number[]): WorkerBackendInit {
    return this.rings.forWorker(pairs);
  }

  release(): void {
    // Shared memory only: nothing to free.
  }

  bind(hooks: WorkerPoolHooks): void {
    this.rings.wake = hooks.wake;
    // Backend queue q feeds the pair the device's pairOf gives it (shared.ts), on that pair's worker.
    this.rings.route = (q) => {
      const cur = Math.max(1, Math.min(hooks.pairsInUse(), this.rings.rx.length));
      return q < cur ? q : q % cur;
    };
    this.rings.injected = this.settleKicks
      ? (pair) => {
          hooks.wake(pair);
          hooks.settle();
        }
      : hooks.wake;
  }

  settled(): void {
    this.rings.drainTx();
    this.rings.takePauseCalls(this.backend.pauseCalls);
  }

  attach(sink: BackendSink): void {
    // In ring mode the backend only reports link changes to this thread's device.
    this.backend.attach(sink);
  }

  transmit(): TransmitResult {
    return 'dropped'; // the workers transmit
  }

  pause(): void {}

  resume(): void {}

  setOffloads(offloads: BackendOffloads): void {
    this.backend.setOffloads(offloads);
  }

  setVnetHeaderSize(size: number): void {
    this.backend.setVnetHeaderSize(size);
    this.vnetHeaderSize = size;
  }

  setQueuePairEnabled(queuePair: number, enabled: boolean): void {
    this.backend.setQueuePairEnabled(queuePair, enabled);
    if (queuePair >= 0 && queuePair < this.attached.length) this.attached[queuePair] = enabled;
  }

  setRssSteering(config: BackendRssConfig | null): boolean {
    return this.backend.setRssSteering(config);
  }

  close(): void {
    this.backend.close();
  }
}
