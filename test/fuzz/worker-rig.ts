/**
 * Worker mode of the fuzz rig (device-rig.ts): the queue pairs of some cases run on worker threads
 * (`workers` option, docs/workers.md). Such a device handles kicks and injected frames on its workers,
 * asynchronously (the MemoryBackend has no `settle`), so the targets' invariants that hold "right after"
 * a kick or an inject on one thread are checked after an awaited settle point instead: `settleWorkers`
 * makes `WorkerPool.settle` round trips (the library's own quiesce for tests: every worker handles what
 * its doorbell held, the frames it sent reach the backend's handlers, its interrupts and guest errors are
 * raised on this thread) until nothing moves any more. No sleeps: between rounds this thread's event loop
 * turns once (setImmediate), so that its own wait callbacks (interrupts, tx drains) run too.
 */
import { readdirSync } from 'node:fs';
import type { WorkerPool } from '../../devices/virtio-net/workers/pool.js';
import type { VirtioNetPci } from '../../devices/virtio-net-pci.js';
import type { MemoryBackend } from '../../lib/net/memory-backend.js';
import { describeError, guard, InvariantError, invariant } from './engine.js';
import { mix32, Rng } from './rng.js';

/** What worker mode reads and sets of a rig's configuration (device-rig.ts RigConfig). */
interface WorkerConfig {
  device: { queues?: number; sriov?: unknown; workers?: boolean | number };
  backend: { ringBytes?: number };
}

/**
 * Puts half of the cases with 2 or more queue pairs on workers. Workers refuse SR-IOV: such a case stays
 * on one thread, or with `overSriov` (guest-ctrl, where most cases have VFs) goes on workers without its
 * VFs. The choice comes from a stream of its own derived from the case's setup seed, so every other draw
 * of a case, and every one-thread case, stays what it was before worker mode existed.
 */
export function chooseWorkers(
  rng: Rng,
  c: WorkerConfig,
  o: { overSriov?: boolean; maxThreads?: number } = {},
): void {
  if ((c.device.queues ?? 1) < 2 || (c.device.sriov && !o.overSriov)) return;
  const w = new Rng(mix32((rng.seed ^ 0x3017e5d) >>> 0));
  if (!w.bool()) return;
  delete c.device.sriov;
  // One thread per pair, or pairs dealt over fewer threads (two pairs on one worker, frames crossing).
  const workers = w.pick([true, true, 1, 2] as const);
  const threads = workers === true ? (c.device.queues ?? 1) : workers;
  // A worker takes a few hundred ms to start on a loaded machine: targets that start workers inside a
  // step (guest-snapshot's migration) keep to fewer threads, within the step's time budget.
  c.device.workers = o.maxThreads !== undefined && threads > o.maxThreads ? o.maxThreads : workers;
  // Small frame rings now and then: full rx rings drop, full tx rings hold the guest's chains back.
  if (w.chance(0.3)) c.backend.ringBytes = 1 << 18;
}

export function onWorkers(c: WorkerConfig): boolean {
  return c.device.workers !== undefined && c.device.workers !== false;
}

/** The device's worker pool (null on one thread). */
export function poolOf(dev: VirtioNetPci): WorkerPool | null {
  return (dev.net.dataPlane as WorkerPool | null) ?? null;
}

/** What moves while the workers work: compared between settle rounds. */
function progress(dev: VirtioNetPci, backend: MemoryBackend, irqs: number): string {
  const s = dev.stats();
  const b = backend.stats();
  let q = 0;
  for (const x of s.queues)
    q += x.rxPackets + x.rxDropped + x.rxFiltered + x.rxBacklogDepth + x.rxCrossingDepth + x.txPackets;
  return `${s.status}/${s.guestErrors}/${s.txPackets}/${q}/${b.delivered}/${b.transmitted}/${b.rxDropped}/${irqs}`;
}

const turn = () => new Promise<void>((resolve) => setImmediate(resolve));

/**
 * The settle point of worker mode: `WorkerPool.settle` round trips until two rounds in a row changed
 * nothing and `done` holds (at most `rounds` rounds: the invariant checked after it then fails as it
 * would have). A worker that died or stopped answering makes `settle` throw: an escape.
 */
export async function settleWorkers(
  dev: VirtioNetPci,
  backend: MemoryBackend,
  irqs: () => number,
  done: () => boolean = () => true,
  rounds = 200,
): Promise<number> {
  const pool = poolOf(dev);
  if (!pool) return 0;
  let last = '';
  let quiet = 0;
  for (let r = 1; r <= rounds; r++) {
    guard('WorkerPool.settle()', () => pool.settle());
    const now = guard('stats()', () => progress(dev, backend, irqs()));
    if (now === last && done()) {
      if (++quiet >= 2) return r;
    } else quiet = 0;
    last = now;
    await turn();
  }
  return rounds;
}

/**
 * The engine's spin check for the worker threads (it sees this thread's event loop only): every worker
 * must come to have no setImmediate callback pending within `limitMs`. Deferred work (a tx slice, an
 * rx recheck) clears in a few turns; a worker rescheduling itself for ever would burn a core while its
 * guest does nothing, which a hostile guest must not be able to cause.
 */
export async function checkWorkersIdle(pool: WorkerPool | null, limitMs = 3000): Promise<void> {
  if (!pool) return;
  const end = performance.now() + limitMs;
  for (;;) {
    const pending = guard('WorkerPool.pendingImmediates()', () => pool.pendingImmediates());
    if (pending.every((n) => n === 0)) return;
    if (performance.now() > end)
      throw new InvariantError(
        `spin: a queue-pair worker still has deferred work rescheduling itself ${limitMs} ms after the step (setImmediate callbacks pending per worker: ${pending.join(', ')})`,
      );
    await new Promise<void>((resolve) => setTimeout(resolve, 1));
  }
}

/** Descriptors and threads of this process (a worker is a thread; its event loop holds descriptors). */
export function processResources(): { fds: number; threads: number } {
  return { fds: readdirSync('/proc/self/fd').length, threads: readdirSync('/proc/self/task').length };
}

/**
 * Closes the devices of a worker case and waits (at most 10 s) for every worker thread to exit. Never
 * throws (dispose); returns what went wrong, if anything.
 */
export async function shutdownWorkers(devices: readonly VirtioNetPci[]): Promise<string | null> {
  const pools: WorkerPool[] = [];
  for (const dev of devices) {
    const pool = poolOf(dev);
    try {
      dev.close();
    } catch (e) {
      return `close(): ${describeError(e)}`;
    }
    if (pool) pools.push(pool);
  }
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<'timeout'>((resolve) => {
    timer = setTimeout(() => resolve('timeout'), 10_000);
  });
  try {
    const r = await Promise.race([Promise.all(pools.map((p) => p.exited())), timeout]);
    return r === 'timeout' ? 'worker threads did not exit within 10 s of close()' : null;
  } finally {
    clearTimeout(timer);
  }
}

/**
 * End of a worker case: the devices closed, every worker thread gone and the process back to the
 * descriptors and threads it had before the first worker started (the vfio-user target's fd baseline,
 * with /proc/self/task too).
 */
export async function checkWorkersGone(
  devices: readonly VirtioNetPci[],
  baseline: { fds: number; threads: number },
): Promise<void> {
  const problem = await shutdownWorkers(devices);
  if (problem) throw new InvariantError(`worker case shutdown: ${problem}`);
  const now = processResources();
  invariant(
    now.fds === baseline.fds,
    `${now.fds - baseline.fds} descriptors left after the workers exited (${now.fds} open, ${baseline.fds} before they started)`,
  );
  invariant(
    now.threads === baseline.threads,
    `${now.threads - baseline.threads} threads left after the workers exited (${now.threads}, ${baseline.threads} before they started)`,
  );
}
