/**
 * Inside a queue-pair worker: opens the worker's side of the device's backend from its description
 * (docs/workers.md): a tap adopted from dup'd queue fds, or a MemoryBackend's frame rings. Queue j of
 * what it returns is the worker's pair `pairs[j]`.
 */
import type { NetBackend } from '../../../lib/net/backend.js';
import { MemoryRingPeer } from '../../../lib/net/memory-rings.js';
import { TapBackend } from '../../../lib/tap/tap-backend.js';
import type { WorkerBackendInit } from './protocol.js';

/** A worker's backend: frame counters for the pool, and what the doorbell's backend bit runs. */
export type WorkerSideBackend = NetBackend & {
  stats(): { rxFrames: number; txFrames: number };
  /** The host rang the doorbell's backend bit (frames injected, tx room made). */
  wake?(): void;
  /** The worker's own stop/go of queue j (not started, stopped), apart from the device's pause/resume. */
  hold?(queue: number, on: boolean): void;
};

export function openWorkerBackend(init: WorkerBackendInit): WorkerSideBackend {
  if (init.kind === 'memory') return new MemoryRingPeer(init);
  return TapBackend.adopt(init.fds, { ...init.tap, rssSteering: false, watchLink: false });
}
