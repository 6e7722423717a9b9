/**
 * The main thread's side of queue pairs on worker threads (docs/workers.md): one worker per pair (or
 * pairs dealt round-robin over `workers` threads), each with its own copies of its pairs' tap queue
 * fds. Kicks ring the owning worker's doorbell; the workers' interrupt bits come back through one
 * shared block this thread waits on (Atomics.waitAsync) and raises through the transport. Control-plane
 * requests are synchronous: posted, the doorbell rung, and this thread waits (Atomics.wait) for the
 * worker's answer, which it gives between two bursts, so a request is also the quiesce. Guest memory
 * changes (vfio-user DMA_MAP / DMA_UNMAP) reach every worker the same way before they take effect.
 */
import { MessageChannel, Worker } from 'node:worker_threads';
import { OptionsError } from '../../../lib/errors.js';
import type { GuestMemory } from '../../../lib/memory/guest-memory.js';
import type { MemoryChange, ThreadRegion } from '../../../lib/memory/regions.js';
import type { VirtioDeviceContext } from '../../../virtio/virtio-device.js';
import type { DataPlane } from '../data-plane.js';
import type { VirtioNet } from '../device.js';
import { backendOffloads } from '../offloads.js';
import type { WorkerBackendControl } from './control-backend.js';
import { WorkerCounters } from './counters.js';
import { takeCrossing } from './crossing.js';
import {
  callWorker,
  forwardRings,
  handoff,
  noHandoffs,
  type PairWorkerHandle,
  ringWorker,
  type WorkerHandoffs,
  workerEntry,
} from './handle.js';
import { closeQueueFds, kickQueues, queueFdsFor } from './queue-routes.js';

export type { WorkerHandoffs } from './handle.js';

import {
  BACKEND_BIT,
  type BacklogFrame,
  CONTROL_BIT,
  type CoalesceHandoff,
  type CrossingFrame,
  Door,
  Extra,
  type ForwardInit,
  IRQ_SEQ,
  irqWords,
  MAX_PAIRS_PER_WORKER,
  type QueueHandoff,
  type Reply,
  type Request,
  type SharedState,
  STAT_FIELDS,
  statsLength,
  type WorkerBackendInit,
  type WorkerInit,
  waitAsync,
} from './protocol.js';

/** How long the main thread waits for a worker's answer before declaring it dead. */
const ANSWER_MS = 10_000;

export class WorkerPool implements DataPlane {
  running = false;
  private readonly workers: PairWorkerHandle[] = [];
  /** Per device pair: its worker, and its index among that worker's pairs. */
  private readonly owner: number[] = [];
  private readonly local: number[] = [];
  private readonly irq: Int32Array;
  private irqSeen = 0;
  /** The workers' rxDroppedNotReady already added to the device's. */
  /** The transport context through which the workers' kick eventfds are held (holdKicks). */
  private kickCtx: VirtioDeviceContext | null = null;
  private closed = false;
  private unwatch: (() => void) | null = null;
  /** How long a request waits for a worker's answer (tests shorten it). */
  answerMs = ANSWER_MS;
  readonly handoffs: WorkerHandoffs = noHandoffs();
  private readonly counters: WorkerCounters;

  constructor(
    private readonly net: VirtioNet,
    private readonly control: WorkerBackendControl,
    memory: GuestMemory,
    count: number,
  ) {
    this.counters = new WorkerCounters(net, this.handoffs);
    const regions = memory.threadRegions();
    if (!regions)
      throw new OptionsError(
        'workers: guest memory must be SharedArrayBuffer or mmap (host) regions without translate/onWrite hooks',
      );
    const n = net.maxQueuePairs;
    const threads = Math.min(count, n);
    if (Math.ceil(n / threads) > MAX_PAIRS_PER_WORKER)
      throw new OptionsError(`workers: at most ${MAX_PAIRS_PER_WORKER} queue pairs per worker`);
    this.irq = new Int32Array(new SharedArrayBuffer(4 * irqWords(2 * n)));
    for (let p = 0; p < n; p++) {
      this.owner[p] = p % threads;
      this.local[p] = Math.floor(p / threads);
    }
    const forward = forwardRings(threads, [...this.owner]);
    try {
      for (let w = 0; w < threads; w++) {
        const pairs: number[] = [];
        for (let p = w; p < n; p += threads) pairs.push(p);
        const backend = control.forWorker(pairs);
        try {
          this.workers.push(this.spawn(pairs, backend, regions, forward.doors[w]!, forward.init(w)));
        } catch (e) {
          control.release(backend);
          throw e;
        }
      }
      // Regions added or removed from now on reach the workers in order, after their initial ones.
      this.unwatch = memory.watch(this.onMemory);
    } catch (e) {
      this.close();
      throw e;
    }
    control.bind({
      wake: (pair) => this.wakeBackend(pair),
      settle: () => this.settle(),
      pairsInUse: () => net.shared.curQueuePairs,
    });
    this.waitInterrupts();
  }

  private spawn(
    pairs: number[],
    backend: WorkerBackendInit,
    regions: ThreadRegion[],
    doorbell: SharedArrayBuffer,
    forward: ForwardInit | null,
  ): PairWorkerHandle {
    const door = new Int32Array(doorbell);
    const stats = new Float64Array(
      new SharedArrayBuffer(8 * statsLength(pairs.length, this.net.maxQueuePairs)),
    );
    const init: WorkerInit = {
      pairs,
      backend,
      maxQueuePairs: this.net.maxQueuePairs,
      supportedHashTypes: this.net.supportedHashTypes,
      regions,
      doorbell: door.buffer as SharedArrayBuffer,
      irq: this.irq.buffer as SharedArrayBuffer,
      stats: stats.buffer as SharedArrayBuffer,
      backendSteersOver: this.net.shared.backendSteersOver,
      forward,
      flows: this.net.shared.flows.share(),
    };
    const channel = new MessageChannel();
    const { entry, eval: isEval } = workerEntry();
    const worker = new Worker(entry, {
      eval: isEval,
      workerData: { kind: 'virtio-net-pairs', init, port: channel.port2 },
      transferList: [channel.port2],
    });
    const h: PairWorkerHandle = {
      worker,
      port: channel.port1,
      door,
      stats,
      pairs,
      backend,
      exited: false,
      posted: 0,
      taken: 0,
      closedOk: false,
      errorsSeen: 0,
      routeFds: [],
      kicksHeld: [],
    };
    worker.on('message', (m: { type?: string; reason?: string; seq?: number }) => {
      if (m?.type !== 'needsReset') return;
      // A settle may have handled it already (and a reset since then must not see it again).
      if (m.seq !== undefined && m.seq <= h.errorsSeen) return;
      h.errorsSeen = m.seq ?? h.errorsSeen;
      this.workerGuestError(m.reason ?? 'guest error in a queue-pair worker');
    });
    worker.on('error', () => {
      h.exited = true;
    });
    worker.on('exit', () => {
      h.exited = true;
    });
    return h;
  }

  // ---- DataPlane ---------------------------------------------------------------------------------

  kick(index: number): void {
    const pair = index >> 1;
    const h = this.workers[this.owner[pair]!]!;
    Atomics.or(h.door, Door.PENDING, 1 << (2 * this.local[pair]! + (index & 1)));
    Atomics.add(h.door, Door.WAKE, 1);
    Atomics.notify(h.door, Door.WAKE);
    this.handoffs.doorbells++;
    if (this.control.settleKicks) this.settle();
  }

  /** The backend has something for pair `pair`'s worker (frames injected, tx room made). */
  private wakeBackend(pair: number): void {
    const h = this.workers[this.owner[pair]!];
    if (!h) return;
    Atomics.or(h.door, Door.PENDING, BACKEND_BIT);
    Atomics.add(h.door, Door.WAKE, 1);
    Atomics.notify(h.door, Door.WAKE);
  }

  /**
   * A synchronous round trip to every worker, for tests (MemoryBackend `settle`): each answers after what
   * its doorbell held (kicks, injected frames); then the frames they sent reach the backend's handlers
   * and their interrupts and guest errors are raised here, as one thread would have done by now.
   */
  settle(): void {
    if (!this.running || this.settling) return;
    this.settling = true;
    try {
      // A second round when frames may cross: what a worker forwarded in the first reaches its owner.
      for (let round = this.workers.length > 1 ? 2 : 1; round > 0; round--)
        for (const h of this.workers) this.ping(h);
      this.control.settled();
      this.takeInterruptBits();
      this.refreshStats();
    } finally {
      this.settling = false;
    }
  }

  private settling = false;

  /** A round trip to `h`: its coalescing timers armed now, publishing rounds and pending immediates (tests). */
  private ping(h: PairWorkerHandle): { timers: number; publishRounds: number; immediates: number } {
    const r = this.call(h, { op: 'ping' });
    if (r.op !== 'pong') return { timers: 0, publishRounds: -1, immediates: 0 };
    if (r.errors > h.errorsSeen) {
      h.errorsSeen = r.errors;
      this.workerGuestError(r.needsReset ?? 'guest error in a queue-pair worker');
    }
    return r;
  }

  /**
   * Tests: each live worker's setImmediate callbacks pending now (a round trip to each). Deferred work
   * (a tx slice, an rx recheck) clears in a few turns; a count that never drops is a worker that spins.
   */
  pendingImmediates(): number[] {
    return this.workers.map((h) => (h.exited || h.closedOk ? 0 : this.ping(h).immediates));
  }

  /** Tests: the workers' coalescing timers armed now (a round trip to each live worker). */
  coalesceTimers(): number {
    return this.workers.reduce((n, h) => (h.exited || h.closedOk ? n : n + this.ping(h).timers), 0);
  }

  /** Tests: each live worker's counter-publishing rounds so far (the round trip itself wakes its timer). */
  publishRounds(): number[] {
    return this.workers.filter((h) => !h.exited && !h.closedOk).map((h) => this.ping(h).publishRounds);
  }

  start(): void {
    if (this.closed || this.running) return;
    const net = this.net;
    const ctx = net.shared.ctx;
    if (!ctx) return;
    const shared = this.sharedState();
    for (const h of this.workers) {
      const queues: [QueueHandoff | null, QueueHandoff | null][] = [];
      const backlogs: BacklogFrame[][] = [];
      const stats: number[][] = [];
      const coalesce: [CoalesceHandoff, CoalesceHandoff][] = [];
      for (const p of h.pairs) {
        // Count and hold go to the worker with the rings; none stays behind here (see stop).
        const c = net.shared.coalescers;
        coalesce.push([c[2 * p]!.handOff(), c[2 * p + 1]!.handOff()]);
        queues.push([handoff(ctx.queue(2 * p)), handoff(ctx.queue(2 * p + 1))]);
        const b = net.backlogs[p]!;
        const frames: BacklogFrame[] = [];
        for (let i = 0; i < b.count; i++) frames.push({ ...b.at(i), frame: Uint8Array.from(b.at(i).frame) });
        b.clear();
        backlogs.push(frames);
        const st = net.queueStats[p]!;
        stats.push(STAT_FIELDS.map((f) => st[f]));
      }
      this.post(h, {
        op: 'start',
        shared,
        queues,
        backlogs,
        stats,
        coalesce,
        routeFds: queueFdsFor(ctx, h.pairs),
      });
      this.counters.handedOver(h.pairs);
    }
    this.running = true;
    // Frames the workers delivered while starting: their interrupts now, in test mode.
    if (this.control.settleKicks) this.settle();
  }

  /** DataPlane.routesChanged: each worker has dropped its old notification fds when this returns. */
  routesChanged(): void {
    if (!this.running) return;
    const ctx = this.net.shared.ctx;
    for (const h of this.workers) this.post(h, { op: 'routes', routeFds: queueFdsFor(ctx, h.pairs) });
  }

  /**
   * `call` for a request that hands the worker fds: closed here when it never got them; once posted they
   * are the worker's even if it answers late. Once it answered, the kick eventfds it polls now are held
   * from the VMM's poller, and those it dropped are the VMM's again.
   */
  private post(h: PairWorkerHandle, req: Request & { routeFds: number[] }): Reply {
    const posted = h.posted;
    let reply: Reply | undefined;
    try {
      reply = this.call(h, req);
      return reply;
    } catch (e) {
      if (h.posted === posted) closeQueueFds(req.routeFds);
      throw e;
    } finally {
      if (h.posted !== posted) h.routeFds = req.routeFds;
      this.holdKicks(h, reply !== undefined && reply.op !== 'error' ? kickQueues(req.routeFds, h.pairs) : []);
    }
  }

  /** The VMM polls the kick eventfds of queues not in `held`, and not those in it (the worker does). */
  private holdKicks(h: PairWorkerHandle, held: number[]): void {
    // Released through the context that held them: a reset may have taken the device's since.
    if (held.length > 0) this.kickCtx = this.net.shared.ctx;
    for (const q of h.kicksHeld) if (!held.includes(q)) this.safeHold(q, false);
    for (const q of held) if (!h.kicksHeld.includes(q)) this.safeHold(q, true);
    h.kicksHeld = held;
  }

  private safeHold(q: number, held: boolean): void {
    try {
      this.kickCtx?.holdKick?.(q, held);
    } catch {
      // The VMM's hold threw: a kick still reaches the worker, by its doorbell or its eventfd.
    }
  }

  sync(): void {
    if (!this.running) return;
    const shared = this.sharedState();
    for (const h of this.workers) this.call(h, { op: 'sync', shared });
  }

  /**
   * DataPlane.stop. Frames crossing between workers (forward.ts) are not left behind: once every worker
   * stopped, each empties the rings to it (`flush`), and what they and the spills held is delivered or
   * counted here (crossing.ts); `discard` (reset, restore, close) counts them all dropped.
   */
  stop(discard = false): void {
    if (!this.running) return;
    this.running = false;
    const net = this.net;
    const ctx = net.shared.ctx;
    const spills: CrossingFrame[][] = [];
    for (const h of this.workers) {
      const r = this.call(h, { op: 'stop' });
      if (r.op !== 'stopped') continue;
      spills.push(r.spill);
      h.routeFds = []; // closed by the worker
      this.holdKicks(h, []);
      for (const [k, p] of h.pairs.entries()) {
        const [rx, tx] = r.queues[k]!;
        if (rx) ctx?.queue(2 * p)?.restore(rx);
        if (tx) ctx?.queue(2 * p + 1)?.restore(tx);
        const b = net.backlogs[p]!;
        for (const f of r.backlogs[k]!) b.push(f.frame, f.offload, f.hash, f.report);
      }
      // This thread's coalescers go on from where the worker's were (as on one thread: a held
      // notification waits its max_usecs, a reset drops it); the next start hands them back.
      for (const [k, p] of h.pairs.entries())
        for (const d of [0, 1]) net.shared.coalescers[2 * p + d]!.takeOver(r.coalesce[k]![d]!);
    }
    const rings = this.workers.length < 2 ? [] : this.workers.map((h) => this.flush(h, discard));
    // The counters after the flush (tx frames it wrote or dropped; the backlogs are this thread's now),
    // then the frames it gave back.
    this.counters.read(this.workers);
    for (const [p, st] of net.queueStats.entries()) st.rxBacklogDepth = net.backlogs[p]!.count;
    takeCrossing(net, [...rings.flat(), ...spills.flat()], discard);
    // Interrupts the workers raised before stopping that this thread had not taken yet: raised now,
    // while they still belong to this driver (a device reset drops them), not after a later start.
    this.takeInterruptBits(true);
  }

  private flush(h: PairWorkerHandle, discard: boolean): CrossingFrame[] {
    const r = this.call(h, { op: 'flush', discard });
    return r.op === 'flushed' ? r.rx : [];
  }

  refreshStats(): void {
    if (!this.running) return;
    this.counters.read(this.workers);
  }

  close(): void {
    if (this.closed) return;
    try {
      this.stop(true);
    } catch {
      // A dead worker: terminate below.
    }
    this.closed = true;
    this.running = false;
    for (const h of this.workers) {
      // A worker that closed its tap leaves by itself once its event loop is empty (terminating one with
      // a koffi call in flight aborts the process); one that did not answer is ended.
      let answered = false;
      try {
        if (!h.exited) {
          this.call(h, { op: 'close' });
          answered = true;
          h.closedOk = true;
        }
      } catch {
        // Not answering: its fds are closed here.
      }
      if (!answered) {
        this.control.release(h.backend);
        this.holdKicks(h, []);
        const fds = h.routeFds;
        const release = () => closeQueueFds(fds);
        void h.worker.terminate().then(release, release);
      } else h.routeFds = [];
      h.port.close();
    }
    // A worker that did not answer `close` may still view guest memory until it has exited: removals
    // stay pinned until then (onMemory).
    if (this.workers.every((h) => h.exited || h.closedOk)) this.stopWatching();
    else void this.exited().then(() => this.stopWatching());
    // Wake our own interrupt wait so it sees `closed` and stops.
    Atomics.add(this.irq, IRQ_SEQ, 1);
    Atomics.notify(this.irq, IRQ_SEQ);
  }

  /** Resolves once every worker thread has exited (close() terminates them). */
  async exited(): Promise<void> {
    await Promise.all(
      this.workers.map((h) => (h.exited ? undefined : new Promise((r) => h.worker.once('exit', r)))),
    );
  }

  get workerCount(): number {
    return this.workers.length;
  }

  /** Per worker, as it last published: its pairs, its tap's frame counters, its wake-ups and interrupts. */
  workerCounters(): { pairs: number[]; tapRx: number; tapTx: number; wakeups: number; interrupts: number }[] {
    return this.workers.map((h) => {
      const e = h.pairs.length * STAT_FIELDS.length;
      return {
        pairs: [...h.pairs],
        tapRx: h.stats[e + Extra.TAP_RX]!,
        tapTx: h.stats[e + Extra.TAP_TX]!,
        wakeups: h.stats[e + Extra.WAKEUPS]!,
        interrupts: h.stats[e + Extra.INTERRUPTS]!,
      };
    });
  }

  /** Tests: worker `w` blocks its thread `ms` and answers nothing for it: a worker that does not answer. */
  stallForTest(w: number, ms: number): void {
    const h = this.workers[w]!;
    h.port.postMessage({ op: 'stall', ms } satisfies Request);
    ringWorker(h, CONTROL_BIT);
  }

  /** Tests: worker `w` keeps rescheduling a setImmediate callback for `ms` (a worker that spins). */
  spinForTest(w: number, ms: number): void {
    this.call(this.workers[w]!, { op: 'spin', ms });
  }

  // ---- Internals ---------------------------------------------------------------------------------

  private stopWatching(): void {
    this.unwatch?.();
    this.unwatch = null;
  }

  /**
   * A guest memory change (GuestMemory.watch): every worker takes it before the change is done (before
   * the vfio-user reply, before the mmap goes). False when a worker did not answer or refused: an add is
   * then refused, a removed region stays mapped for good (lib/vfio-user/dma.ts pins it). A worker still
   * owing an earlier answer is not waited for again, so a map/unmap storm costs one timeout, not one each.
   */
  private readonly onMemory = (c: MemoryChange): boolean => {
    if (c.op === 'add' && c.region === null) return false;
    const req: Request =
      c.op === 'add'
        ? { op: 'memory', add: [c.region!], remove: [] }
        : { op: 'memory', add: [], remove: [c.address] };
    let ok = true;
    for (const h of this.workers) {
      // A worker that is gone, or answered close, views nothing any more.
      if (h.exited || h.closedOk) continue;
      try {
        this.call(h, req);
      } catch {
        ok = false;
      }
    }
    return ok;
  };

  /** One synchronous control-plane request (handle.ts `callWorker`). */
  private call(h: PairWorkerHandle, req: Request): Reply {
    return callWorker(h, req, this.answerMs, this.handoffs);
  }

  private sharedState(): SharedState {
    const net = this.net;
    const s = net.shared;
    const coalesce: [number, number][] = s.coalescers.map((c) => [c.maxPackets, c.maxUsecs]);
    return {
      features: net.negotiated.toString(),
      hdrSize: s.hdrSize,
      hashReport: s.hashReport,
      mergeable: s.mergeable,
      exactHdrLen: s.exactHdrLen,
      multiqueue: s.multiqueue,
      curQueuePairs: s.curQueuePairs,
      hostOffloadMask: s.hostOffloadMask,
      guestOffloadMask: s.guestOffloadMask,
      rssInBackend: s.rssInBackend,
      linkUp: s.linkUp,
      stopped: s.stopped,
      broken: s.broken,
      rxFilter: s.rxFilter.state(),
      mac: Array.from(s.rxFilter.mac),
      rss: s.rss.snapshot(),
      hashTunnel: s.rss.tunnel.types,
      rssContexts: s.rssContexts.snapshot(),
      offloads: this.control.capabilities.vnetHeader ? backendOffloads(net.guestOffloads) : null,
      vnetHeaderSize: this.control.vnetHeaderSize,
      attached: [...this.control.attached],
      coalesce,
    };
  }

  /** Interrupt bits from the workers, raised here: one wake-up carries every bit set since the last. */
  private waitInterrupts(): void {
    if (this.closed) return;
    const r = waitAsync(this.irq, IRQ_SEQ, this.irqSeen);
    if (r.async) r.value.then(() => this.takeInterrupts());
    else setImmediate(() => this.takeInterrupts());
  }

  private takeInterrupts(): void {
    if (this.closed) return;
    this.irqSeen = Atomics.load(this.irq, IRQ_SEQ);
    this.handoffs.interruptWakeups++;
    this.takeInterruptBits();
    this.waitInterrupts();
  }

  /** Raises every interrupt bit the workers set (from the wait, synchronously by `settle` or `stop`). */
  private takeInterruptBits(raise = this.running): void {
    const ctx = this.net.shared.ctx;
    for (let w = 1; w < this.irq.length; w++) {
      let bits = Atomics.exchange(this.irq, w, 0);
      while (bits !== 0) {
        const b = 31 - Math.clz32(bits);
        bits &= ~(1 << b);
        this.handoffs.interrupts++;
        if (raise) ctx?.notifyQueue(((w - 1) << 5) + b);
      }
    }
  }

  private workerGuestError(reason: string): void {
    const s = this.net.shared;
    if (s.broken) return;
    s.deviceStats.guestErrors++;
    s.broken = true;
    s.ctx?.needsReset(reason);
    try {
      this.sync();
    } catch {
      // Reported by the next request.
    }
  }
}
