/**
 * The main thread's view of a tap whose queues run on workers (docs/workers.md): device-wide ioctls
 * (offloads, header size, RSS steering program, carrier) go to the tap here; the queues' reads and
 * writes happen in the workers, so this side never polls or writes them, and a queue's attach/detach
 * (TUNSETQUEUE, per fd) is recorded for the worker that owns the fd to apply.
 */
import type {
  BackendCapabilities,
  BackendOffloads,
  BackendRssConfig,
  BackendSink,
  NetBackend,
  TransmitResult,
} from '../../../lib/net/backend.js';
import type { TapBackend } from '../../../lib/tap/tap-backend.js';

export class WorkerControlBackend implements NetBackend {
  readonly capabilities: BackendCapabilities;
  /** TUNSETQUEUE state per queue pair, as the device last asked. */
  readonly attached: boolean[];
  /** The last TUNSETOFFLOAD request (the workers re-apply it: adopting an fd probes offloads). */
  offloads: BackendOffloads | null = null;
  vnetHeaderSize = 12;

  constructor(readonly tap: TapBackend) {
    this.capabilities = tap.capabilities;
    this.attached = tap.fds.map(() => true);
    this.vnetHeaderSize = tap.vnetHeaderSize;
  }

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
