/**
 * The main thread's side of the queue-pair workers (docs/workers.md), apart from the pool's logic: a
 * worker's handle, the synchronous request round trip (post, ring the doorbell, wait for the answer word),
 * and what the pool hands a new worker (its entry module, queue handoffs, the forwarding rings).
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { type MessagePort, receiveMessageOnPort, type Worker } from 'node:worker_threads';
import { BackendError } from '../../../lib/errors.js';
import { FrameRing } from '../../../lib/net/frame-ring.js';
import { virtqueueSetup } from '../../../virtio/queue/create-virtqueue.js';
import type { VirtioNet } from '../device.js';
import { FORWARD_RING_BYTES } from './forward.js';
import {
  CONTROL_BIT,
  Door,
  type ForwardInit,
  type QueueHandoff,
  type Reply,
  type Request,
  type WorkerBackendInit,
} from './protocol.js';

/** Cross-thread handoffs since the device was made (the bench divides them by frames). */
export interface WorkerHandoffs {
  /** Doorbells rung for kicks (one per driver notification of a data queue). */
  doorbells: number;
  /** Interrupt-block wake-ups this thread handled, and the interrupts they carried. */
  interruptWakeups: number;
  interrupts: number;
  /** Control-plane requests (start, sync, stop, close): none per frame. */
  requests: number;
  /** Interrupts the workers signalled on the vectors' eventfds themselves (no handoff; queue-routes.ts). */
  interruptsDirect: number;
  /** Kicks the workers read from the queues' kick eventfds themselves (no handoff; queue-routes.ts). */
  kicksDirect: number;
  /**
   * Frames software steering (RSS, automatic steering) sent to a pair another worker runs: handed over
   * through a frame ring (forward.ts), or dropped when that ring and the sender's spill were full. Forwards also count tx frames
   * of a pair beyond the pairs in use sent to the worker owning their backend queue.
   */
  crossPairForwards: number;
  /** Of those, frames that waited in the sender's spill while the ring was full (no drop). */
  crossPairSpills: number;
  crossPairDrops: number;
}

/** Handoff counters at zero (a new pool, or a bench row without one). */
export function noHandoffs(): WorkerHandoffs {
  return {
    doorbells: 0,
    interruptWakeups: 0,
    interrupts: 0,
    interruptsDirect: 0,
    kicksDirect: 0,
    requests: 0,
    crossPairForwards: 0,
    crossPairSpills: 0,
    crossPairDrops: 0,
  };
}

/** The main thread's side of one worker. */
export interface PairWorkerHandle {
  worker: Worker;
  port: MessagePort;
  door: Int32Array;
  stats: Float64Array;
  pairs: number[];
  backend: WorkerBackendInit;
  exited: boolean;
  /** Requests posted; the worker's Door.ACK counts those it answered (a late answer is taken later). */
  posted: number;
  /** Replies taken from its port (late ones are dropped). */
  taken: number;
  /** It answered `close`: it touches guest memory no more. */
  closedOk: boolean;
  /** The worker's guest errors already handled (by message or by a settle's 'pong'). */
  errorsSeen: number;
  /** The route fds last handed over (the worker's; closed here only if it had to be terminated). */
  routeFds: number[];
  /** Queues whose kick eventfd the worker polls: held from the VMM's poller (VirtioDeviceContext.holdKick). */
  kicksHeld: number[];
}

/** Sets `bits` in the worker's doorbell and wakes it. */
export function ringWorker(h: PairWorkerHandle, bits: number): void {
  Atomics.or(h.door, Door.PENDING, bits);
  Atomics.add(h.door, Door.WAKE, 1);
  Atomics.notify(h.door, Door.WAKE);
}

/** One synchronous control-plane request: the worker answers between two of its bursts. */
export function callWorker(
  h: PairWorkerHandle,
  req: Request,
  answerMs: number,
  counters: { requests: number },
): Reply {
  if (h.exited) throw new BackendError('workers: a queue-pair worker exited');
  const deadline = Date.now() + answerMs;
  while (Atomics.load(h.door, Door.READY) === 0) {
    if (h.exited || Date.now() > deadline)
      throw new BackendError('workers: a queue-pair worker did not start');
    Atomics.wait(h.door, Door.READY, 0, 50);
  }
  // Answers still owed for earlier requests that timed out: a memory change does not wait for them
  // again (see onMemory); other requests give them the usual time. Their replies are dropped.
  if (!catchUp(h, req.op === 'memory' ? 0 : deadline))
    throw new BackendError(`workers: a worker has not answered an earlier request ('${req.op}' not sent)`);
  for (; h.taken < h.posted; h.taken++) receiveMessageOnPort(h.port);
  counters.requests++;
  h.posted++;
  h.port.postMessage(req);
  ringWorker(h, CONTROL_BIT);
  if (!catchUp(h, deadline)) throw new BackendError(`workers: no answer to '${req.op}'`);
  h.taken++;
  const m = receiveMessageOnPort(h.port);
  const reply = m?.message as Reply | undefined;
  if (!reply) throw new BackendError(`workers: '${req.op}' answered without a reply`);
  if (reply.op === 'error') throw new BackendError(`workers: '${req.op}' failed: ${reply.message}`);
  return reply;
}

/** Waits until `deadline` for the worker to have answered every request posted; true when it has. */
function catchUp(h: PairWorkerHandle, deadline: number): boolean {
  for (;;) {
    const acked = Atomics.load(h.door, Door.ACK);
    if (acked === (h.posted | 0)) break;
    if (h.exited || Date.now() > deadline) return false;
    Atomics.wait(h.door, Door.ACK, acked, 50);
  }
  return true;
}

export function handoff(q: ReturnType<NonNullable<VirtioNet['context']>['queue']>): QueueHandoff | null {
  if (!q) return null;
  const setup = virtqueueSetup(q);
  if (!setup) throw new BackendError(`workers: queue ${q.index} was not made by createVirtqueue`);
  return { setup, state: q.state() };
}

/**
 * The worker module next to this one: compiled JavaScript, or (running from source: tests, benches) the
 * TypeScript through tsx's ESM API inside the worker (a worker's entry is loaded before `--import` hooks
 * apply, and tsx's require hook would turn every imported function into a getter call).
 */
export function workerEntry(): { entry: URL | string; eval: boolean } {
  const js = new URL('./pair-worker.js', import.meta.url);
  if (existsSync(fileURLToPath(js))) return { entry: js, eval: false };
  const ts = JSON.stringify(new URL('./pair-worker.ts', import.meta.url).href);
  const api = JSON.stringify(import.meta.resolve('tsx/esm/api'));
  return { entry: `import(${api}).then(({ tsImport }) => tsImport(${ts}, ${ts}));`, eval: true };
}

/**
 * Every worker's doorbell, and with more than one worker a frame ring from each worker to each other
 * (forward.ts): software steering to another worker's pair.
 */
export function forwardRings(threads: number, owner: number[]) {
  const doors = Array.from({ length: threads }, () => new SharedArrayBuffer(4 * Door.WORDS));
  const congestion = new SharedArrayBuffer(4 * owner.length);
  const roomWanted = new SharedArrayBuffer(4 * threads);
  const rings = Array.from({ length: threads }, (_, src) =>
    Array.from({ length: threads }, (_, dst) =>
      src === dst ? null : FrameRing.allocate(FORWARD_RING_BYTES),
    ),
  );
  return {
    doors,
    init: (w: number): ForwardInit | null =>
      threads < 2
        ? null
        : {
            index: w,
            owner,
            out: rings[w]!,
            in: rings.map((r) => r[w]!),
            doors,
            congestion,
            roomWanted,
          },
  };
}
