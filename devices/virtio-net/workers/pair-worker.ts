/**
 * A queue-pair worker (docs/workers.md): runs the device's own per-pair data paths (tx.ts, rx.ts,
 * direct-rx.ts) for the pairs it owns, over its own view of guest memory (memory.ts) and its own copies of
 * those pairs' tap queue fds, with its own poller and io_uring. The main thread keeps the control plane;
 * this thread holds a replica of what the paths read (NetShared), rebuilt from each request. Kicks
 * arrive as doorbell bits, interrupts leave as bits in the interrupt block; nothing is sent per frame.
 */
import {
  isMainThread,
  type MessagePort,
  parentPort,
  receiveMessageOnPort,
  workerData,
} from 'node:worker_threads';
import { libc } from '../../../lib/host/libc.js';
import { eventfdRead, eventfdSignal, type FdPoll, pollFd } from '../../../lib/host/socket.js';
import type { GuestMemory } from '../../../lib/memory/guest-memory.js';
import { createVirtqueue } from '../../../virtio/queue/create-virtqueue.js';
import type { Virtqueue, VirtqueueState } from '../../../virtio/queue/virtqueue.js';
import type { VirtioDeviceContext } from '../../../virtio/virtio-device.js';
import { Coalescer } from '../coalesce.js';
import { DirectReceiver } from '../direct-rx.js';
import { Receiver, type RxPath } from '../rx.js';
import { NetShared } from '../shared.js';
import { QueueStats } from '../stats.js';
import { TxPath } from '../tx.js';
import { CrossWorker, type ForwardedFrame, type ForwardedTx } from './forward.js';
import { WorkerMemory } from './memory.js';
import { PairBackend } from './pair-backend.js';
import {
  BACKEND_BIT,
  type BacklogFrame,
  CONTROL_BIT,
  type CoalesceHandoff,
  Door,
  Extra,
  IRQ_SEQ,
  type Reply,
  type Request,
  type SharedState,
  STAT_FIELDS,
  type WorkerInit,
  waitAsync,
} from './protocol.js';
import { CounterPublisher } from './publisher.js';
import { ROUTES_PER_PAIR } from './queue-routes.js';
import { openWorkerBackend, type WorkerSideBackend } from './worker-backend.js';
import { workerSink } from './worker-sink.js';

class PairWorker {
  private readonly door: Int32Array;
  private readonly irq: Int32Array;
  private readonly out: Float64Array;
  private readonly memory: GuestMemory;
  private readonly mem: WorkerMemory;
  /** Its side of the device's backend: its tap queues, or a MemoryBackend's rings (worker-backend.ts). */
  private readonly tap: WorkerSideBackend;
  private readonly backend: PairBackend;
  private readonly shared: NetShared;
  private readonly stats: QueueStats[];
  private readonly tx: TxPath[];
  private readonly rx: Receiver;
  private readonly direct: DirectReceiver;
  /** Queues by index while started (the device's context lends them). */
  private readonly queues = new Map<number, Virtqueue>();
  private features = 0n;
  private ctx: { -readonly [K in keyof VirtioDeviceContext]: VirtioDeviceContext[K] } | null = null;
  private seen = 0;
  private closed = false;
  /** Publishes the counters to `out` while anything moves (publisher.ts). */
  private readonly publisher: CounterPublisher;
  private wakeups = 0;
  private interrupts = 0;
  /** Per queue index: this worker's dup of the eventfd that notifies it (queue-routes.ts), or -1. */
  private readonly irqFd: Int32Array;
  private directInterrupts = 0;
  /** Per queue index: this worker's dup of the queue's kick eventfd and its poll, while it has one. */
  private readonly kickFds = new Map<number, { fd: number; poll: FdPoll }>();
  private directKicks = 0;
  /** Frames to and from the other workers' pairs (forward.ts); null with one worker. */
  private readonly cross: CrossWorker | null;
  private readonly ownedRx: RxPath[];
  /** Guest errors so far and the last one's reason ('ping' reports them: the message may come later). */
  private errors = 0;
  private lastError: string | null = null;

  constructor(
    private readonly init: WorkerInit,
    private readonly port: MessagePort,
  ) {
    this.door = new Int32Array(init.doorbell);
    this.irq = new Int32Array(init.irq);
    this.out = new Float64Array(init.stats);
    this.mem = new WorkerMemory(init.regions);
    this.memory = this.mem.memory;
    this.tap = openWorkerBackend(init.backend);
    const n = init.maxQueuePairs;
    this.backend = new PairBackend(this.tap, init.pairs, n, init.backendSteersOver > 0);
    const shared = new NetShared(n, this.backend, init.supportedHashTypes, init.flows);
    shared.backendSteersOver = init.backendSteersOver;
    this.shared = shared;
    this.stats = Array.from({ length: n }, () => new QueueStats());
    this.irqFd = new Int32Array(2 * n).fill(-1);
    for (const p of init.pairs)
      for (const i of [2 * p, 2 * p + 1]) shared.coalescers[i] = new Coalescer(i, shared, this.stats[p]!);
    this.tx = init.pairs.map((p) => new TxPath(p, shared, this.stats[p]!));
    this.rx = new Receiver(shared, this.stats);
    this.cross = init.forward ? new CrossWorker(init.forward, this.rx) : null;
    this.ownedRx = init.pairs.map((p) => this.rx.pairs[p]!);
    this.rx.foreign = this.cross;
    this.backend.foreign = this.cross;
    this.direct = new DirectReceiver(shared, this.rx.pairs);
    // Until started, frames wait in the kernel.
    for (let j = 0; j < init.pairs.length; j++) this.hold(j, true);
    this.publisher = new CounterPublisher(this.out, () => this.publish());
    this.backend.attach(
      workerSink({
        shared,
        rx: this.rx,
        direct: this.direct,
        pairs: init.pairs,
        active: () => this.publisher.active(),
        transmitReady: (q) => this.transmitReady(q),
      }),
    );
    this.active();
    Atomics.store(this.door, Door.READY, 1);
    Atomics.notify(this.door, Door.READY);
    this.wait();
  }

  /**
   * The device context, one object for the worker's life with its `features` brought up to date: a new
   * object (new closures) per start changed the call targets the JIT had inlined into the data path,
   * which then deoptimized and recompiled on every start (found with --trace-deopt).
   */
  private context(): VirtioDeviceContext {
    this.ctx ??= {
      memory: this.memory,
      features: this.features,
      queue: (i) => this.queues.get(i) ?? null,
      notifyQueue: (i) => this.raise(i),
      configChanged: () => {},
      needsReset: (reason) => {
        this.errors++;
        this.lastError = reason;
        parentPort?.postMessage({ type: 'needsReset', reason, seq: this.errors });
      },
    };
    this.ctx.features = this.features;
    return this.ctx;
  }

  /**
   * Closes the notification fds this worker holds and takes `fds` (queue-routes.ts: per owned pair, rx
   * and tx interrupt, rx and tx kick) instead. A kick eventfd is polled here while the worker has it.
   */
  private takeRoutes(fds: readonly number[] | null): void {
    const c = libc();
    for (const { fd, poll } of this.kickFds.values()) {
      poll.close();
      c.close(fd);
    }
    this.kickFds.clear();
    for (const [k, p] of this.init.pairs.entries()) {
      for (const d of [0, 1]) {
        const i = 2 * p + d;
        if (this.irqFd[i]! >= 0) c.close(this.irqFd[i]!);
        this.irqFd[i] = fds?.[ROUTES_PER_PAIR * k + d] ?? -1;
        const kick = fds?.[ROUTES_PER_PAIR * k + 2 + d] ?? -1;
        if (kick < 0) continue;
        const bit = 1 << (2 * k + d);
        const poll = pollFd(kick, (ev) => {
          if (ev.readable) this.kicked(kick, bit);
        });
        this.kickFds.set(i, { fd: kick, poll });
        poll.start({ readable: true, disconnect: false });
      }
    }
  }

  /** The guest kicked a queue by its eventfd: handled here as the doorbell bit `bit` would be. */
  private kicked(fd: number, bit: number): void {
    if (this.closed || eventfdRead(fd) === 0n) return;
    this.active();
    this.directKicks++;
    this.run(bit);
    this.receiveForwarded();
    this.publish();
  }

  /**
   * One used-buffer notification: the vector's eventfd written here when the VMM serves it so
   * (queue-routes.ts), else a bit for the main thread, which raises it through the transport.
   */
  private raise(index: number): void {
    // The guest may look at the counters as soon as it has the interrupt.
    this.publishPair(index >> 1);
    this.active();
    const fd = this.irqFd[index]!;
    if (fd >= 0 && eventfdSignal(fd)) {
      this.directInterrupts++;
      return;
    }
    Atomics.or(this.irq, 1 + (index >> 5), 1 << (index & 31));
    this.interrupts++;
    // The main thread is woken once per task of this thread (a burst of frames, a kick), not per
    // interrupt: as on one thread, where the guest sees a burst's interrupts only after the burst.
    if (this.irqPending) return;
    this.irqPending = true;
    queueMicrotask(this.wakeMain);
  }

  private irqPending = false;
  private readonly wakeMain = () => {
    this.irqPending = false;
    Atomics.add(this.irq, IRQ_SEQ, 1);
    Atomics.notify(this.irq, IRQ_SEQ);
  };

  private wait(): void {
    if (this.closed) return;
    const r = waitAsync(this.door, Door.WAKE, this.seen);
    if (r.async) r.value.then(() => this.wake());
    else queueMicrotask(() => this.wake());
  }

  private wake(): void {
    if (this.closed) return;
    this.active();
    this.seen = Atomics.load(this.door, Door.WAKE);
    this.wakeups++;
    const bits = Atomics.exchange(this.door, Door.PENDING, 0);
    this.run(bits);
    if (bits & CONTROL_BIT) this.serve();
    // Kicks may have emptied a backlog: frames waiting in the rings go in, held senders go on.
    this.receiveForwarded();
    this.publish();
    this.wait();
  }

  /**
   * The worker stops or lets go its queue j while it does not run the pair; a backend with `hold` keeps
   * that apart from the device's own pause (which the replica's receiver keeps across stop and start).
   */
  private hold(j: number, on: boolean): void {
    if (this.tap.hold) this.tap.hold(j, on);
    else if (on) this.tap.pause(j);
    else this.tap.resume(j);
  }

  /** The kicks and backend work of doorbell `bits`. */
  private run(bits: number): void {
    const s = this.shared;
    for (const [k, p] of this.init.pairs.entries()) {
      if (bits & (1 << (2 * k)) && s.ctx && !s.broken) {
        this.stats[p]!.rxKicks++;
        s.runGuarded(() => this.rx.pairs[p]!.drain());
      }
      if (bits & (1 << (2 * k + 1)) && s.ctx && !s.broken) s.runGuarded(() => this.tx[k]!.kick());
    }
    if (bits & BACKEND_BIT) {
      s.runGuarded(() => this.tap.wake?.());
      this.cross?.releaseSpill();
      this.cross?.releaseHeld();
      this.cross?.releaseTx(this.txReady);
    }
  }

  /** Delivers what the other workers' steering sent to this worker's pairs: one receive burst. */
  private receiveForwarded(): void {
    const c = this.cross;
    const s = this.shared;
    if (!c || !s.ctx) return; // not running: they wait in the rings
    s.runGuarded(() => {
      s.beginReceiveBurst();
      let done = false;
      try {
        c.drain(this.deliverForwarded, this.sendForwarded);
        done = true;
      } finally {
        s.endReceiveBurst(done);
      }
    });
    c.publishCongestion(this.ownedRx);
  }

  /**
   * One forwarded frame, filtered and delivered here as the worker's own: behind the pair's backlog when
   * it holds one, as on one thread (counted in `rxBacklogDepth`). Declined (left in its ring, with the
   * ring's later frames) only while that backlog is full: the ring holds the rest then, and the sender
   * holds its queue (forward.ts), so a slow guest loses nothing.
   */
  private readonly deliverForwarded: ForwardedFrame = (
    pair,
    bytes,
    offset,
    length,
    offload,
    hash,
    report,
  ) => {
    const s = this.shared;
    const rx = this.rx.pairs[pair];
    if (rx === undefined || !this.init.pairs.includes(pair) || s.broken || !s.linkUp) {
      s.deviceStats.rxDroppedNotReady++;
      return true;
    }
    if (rx.backlog.count >= rx.backlog.capacity) return false;
    if (!s.rxFilter.acceptsAt(bytes, offset, length)) rx.stats.rxFiltered++;
    else rx.deliverRange(bytes, offset, length, offload, pair, hash, report);
    return true;
  };

  /**
   * A tx frame another worker's pair sent for backend queue `queue` of this worker (a pair beyond the
   * pairs in use, forward.ts), written out as that pair's own. Left in the ring while the backend has no
   * room; a write that fails counts as a tx drop of `queue`'s pair (the sender counted it sent).
   */
  private readonly sendForwarded: ForwardedTx = (queue, bytes, offset, length, offload) => {
    const b = this.backend;
    if (!b.transmitAllowed(queue)) return false;
    const r = b.transmitRange(bytes, offset, length, queue, offload);
    // At once: the record is consumed after this returns.
    const failed = b.flushTransmit(queue);
    const st = this.stats[queue];
    if (st && (r !== 'sent' || failed > 0)) st.txDropped++;
    return true;
  };

  private readonly txReady = (queue: number) => this.transmitReady(queue);

  /** The backend takes frames for backend queue `q` again: the paths that send there go on. */
  private transmitReady(q: number): void {
    const s = this.shared;
    for (const tx of this.tx) if (s.backendQueueOf(tx.pair) === q) tx.ready();
  }

  private serve(): void {
    for (;;) {
      const m = receiveMessageOnPort(this.port);
      if (!m) return;
      const req = m.message as Request;
      // Tests: a worker busy beyond the answer timeout; it answers nothing for it.
      if (req.op === 'stall') {
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, req.ms);
        continue;
      }
      let reply: Reply;
      try {
        reply = this.handle(req);
      } catch (e) {
        reply = { op: 'error', message: e instanceof Error ? e.message : String(e) };
      }
      this.publish();
      this.port.postMessage(reply);
      Atomics.add(this.door, Door.ACK, 1);
      Atomics.notify(this.door, Door.ACK);
    }
  }

  private handle(req: Request): Reply {
    switch (req.op) {
      case 'start': {
        this.apply(req.shared);
        for (const [k, p] of this.init.pairs.entries()) {
          const st = this.stats[p]!;
          const vals = req.stats[k]!;
          for (const [i, f] of STAT_FIELDS.entries()) st[f] = vals[i]!;
          for (const [d, h] of req.queues[k]!.entries()) {
            if (!h) continue;
            const q = createVirtqueue(this.memory, h.setup.config, h.setup.packed);
            q.restore(h.state);
            this.queues.set(2 * p + d, q);
          }
          const b = this.rx.pairs[p]!.backlog;
          for (const f of req.backlogs[k]!) b.push(f.frame, f.offload, f.hash, f.report);
          st.rxBacklogDepth = b.count;
        }
        this.takeRoutes(req.routeFds);
        this.shared.ctx = this.context();
        // The count and hold the main thread kept while no thread ran the pair (a hold's timer restarts).
        for (const [k, p] of this.init.pairs.entries())
          for (const d of [0, 1])
            this.shared.runGuarded(() => this.shared.coalescers[2 * p + d]!.takeOver(req.coalesce[k]![d]!));
        this.rx.restoredBacklogs();
        // Frames other workers steered here while this one did not run.
        this.receiveForwarded();
        for (const [j, p] of this.init.pairs.entries())
          if (!this.rx.pausedQueues[p] || this.tap.hold) this.hold(j, false);
        // Chains the guest posted while no thread ran this pair. Not an rx queue that is not enabled
        // (after RING_RESET, until re-enabled): its drain would resume the backend into no queue, where
        // one thread leaves the backend paused until the queue is enabled again.
        for (const [k, p] of this.init.pairs.entries()) {
          if (req.queues[k]![0]) this.shared.runGuarded(() => this.rx.pairs[p]!.drain());
          // Not a driver notification: tx_kicks stays what the driver did.
          const st = this.stats[p]!;
          const kicks = st.txKicks;
          this.shared.runGuarded(() => this.tx[k]!.kick());
          st.txKicks = kicks;
        }
        return { op: 'started' };
      }
      case 'sync':
        this.apply(req.shared);
        return { op: 'synced' };
      case 'routes':
        this.takeRoutes(req.routeFds);
        return { op: 'routed' };
      case 'memory':
        // Between bursts: the tap already dropped the guest views of its last lends (lib/tap/rx.ts), so
        // once this returns no view of a removed region is reachable here.
        this.mem.apply(req.add, req.remove);
        return { op: 'mapped' };
      case 'stall':
        return { op: 'error', message: 'stall is not answered' };
      case 'spin': {
        const end = performance.now() + req.ms;
        const again = () => {
          if (performance.now() < end && !this.closed) setImmediate(again);
        };
        setImmediate(again);
        return this.handle({ op: 'ping' });
      }
      case 'stop':
        return this.stop();
      case 'flush': {
        // The pool's second step of a stop: a tx frame the backend has no room for now is dropped.
        const drop = (q: number) => {
          this.stats[q]!.txDropped++;
        };
        const send = req.discard ? null : this.sendForwarded;
        return { op: 'flushed', rx: this.cross?.takeRings(send, drop) ?? [] };
      }
      case 'ping':
        // serve() may take this request before the wake-up of the doorbell bits rung before it (it
        // reads every message waiting): those bits are handled first, as the caller expects.
        this.run(Atomics.exchange(this.door, Door.PENDING, 0) & ~CONTROL_BIT);
        // Also what other workers forwarded before this round trip (WorkerPool.settle pings twice).
        this.receiveForwarded();
        return {
          op: 'pong',
          errors: this.errors,
          needsReset: this.lastError,
          timers: this.timers(),
          publishRounds: this.publisher.rounds,
          immediates: pendingImmediates(),
        };
      case 'close':
        this.stop();
        this.closed = true;
        this.publisher.close();
        this.tap.close();
        return { op: 'closed' };
    }
  }

  private stop(): Reply {
    // Frames this worker's spill holds go to the main thread; those in the rings to it come with the
    // pool's `flush`, once no worker forwards any more (WorkerPool.stop, crossing.ts).
    const spill = this.cross?.takeSpill() ?? [];
    const queues: [VirtqueueState | null, VirtqueueState | null][] = [];
    const backlogs: BacklogFrame[][] = [];
    const coalesce: [CoalesceHandoff, CoalesceHandoff][] = [];
    for (const [k, p] of this.init.pairs.entries()) {
      this.hold(k, true);
      const rxq = this.queues.get(2 * p);
      const txq = this.queues.get(2 * p + 1);
      queues.push([rxq?.state() ?? null, txq?.state() ?? null]);
      const b = this.rx.pairs[p]!.backlog;
      const frames: BacklogFrame[] = [];
      for (let i = 0; i < b.count; i++) {
        const e = b.at(i);
        frames.push({ frame: Uint8Array.from(e.frame), offload: e.offload, hash: e.hash, report: e.report });
      }
      backlogs.push(frames);
      b.clear();
      this.stats[p]!.rxBacklogDepth = 0;
      // Hold and count go with the rings: the main thread decides what becomes of them (a reset drops
      // them); left here, a later start would find them stale.
      const c = this.shared.coalescers;
      coalesce.push([c[2 * p]!.handOff(), c[2 * p + 1]!.handOff()]);
      this.tx[k]!.reset();
    }
    this.direct.cancel();
    this.queues.clear();
    this.shared.ctx = null;
    this.takeRoutes(null);
    // The backlogs went to the main thread: nothing here holds the senders back any more.
    this.cross?.publishCongestion(this.ownedRx);
    return { op: 'stopped', queues, backlogs, coalesce, spill };
  }

  /** Takes the control plane's state into the replica (between bursts: the worker is not in a path). */
  private apply(st: SharedState): void {
    const s = this.shared;
    this.features = BigInt(st.features);
    s.hdrSize = st.hdrSize;
    s.hashReport = st.hashReport;
    s.mergeable = st.mergeable;
    s.exactHdrLen = st.exactHdrLen;
    s.multiqueue = st.multiqueue;
    s.curQueuePairs = st.curQueuePairs;
    s.hostOffloadMask = st.hostOffloadMask;
    s.guestOffloadMask = st.guestOffloadMask;
    s.rssInBackend = st.rssInBackend;
    s.linkUp = st.linkUp;
    s.stopped = st.stopped;
    s.broken = st.broken;
    s.rxFilter.restore(st.rxFilter);
    s.rxFilter.mac.set(st.mac);
    s.rss.restore(st.rss);
    s.rss.tunnel.types = st.hashTunnel;
    s.rssContexts.restore(st.rssContexts);
    // Not s.flows.clear(): the table is the device's, shared by every worker; the main thread clears it
    // where one thread would (reset, VQ_PAIRS_SET).
    if (s.ctx) s.ctx = this.context(); // features may have changed
    this.backend.setVnetHeaderSize(st.vnetHeaderSize);
    if (st.offloads) this.backend.setOffloads(st.offloads);
    for (const p of this.init.pairs) {
      this.backend.setQueuePairEnabled(p, st.attached[p] !== false);
      for (const i of [2 * p, 2 * p + 1]) {
        const c = s.coalescers[i]!;
        const [mp, mu] = st.coalesce[i] ?? [0, 0];
        if (c.maxPackets !== mp || c.maxUsecs !== mu) c.set(mp, mu);
      }
    }
  }

  /** Coalescing timers armed on this thread (a 'ping' reports them). */
  private timers(): number {
    let n = 0;
    for (const c of this.shared.coalescers) if (c?.timing) n++;
    return n;
  }

  /** One pair's counters (no allocation: on every interrupt). */
  private publishPair(pair: number): void {
    const k = this.init.pairs.indexOf(pair);
    if (k < 0) return;
    const st = this.stats[pair]!;
    const n = STAT_FIELDS.length;
    for (let i = 0; i < n; i++) this.out[k * n + i] = st[STAT_FIELDS[i]!];
  }

  /** Something moved that may have changed a counter (publisher.ts). */
  private active(): void {
    this.publisher.active();
  }

  private publish(): void {
    const out = this.out;
    const n = STAT_FIELDS.length;
    let cross = this.cross?.drops ?? 0;
    for (const [i, st] of this.stats.entries()) if (!this.init.pairs.includes(i)) cross += st.rxDropped;
    for (const [k, p] of this.init.pairs.entries()) {
      const st = this.stats[p]!;
      for (let i = 0; i < n; i++) out[k * n + i] = st[STAT_FIELDS[i]!];
    }
    const e = this.init.pairs.length * n;
    const t = this.tap.stats();
    out[e + Extra.CROSS_PAIR_DROPS] = cross;
    out[e + Extra.INTERRUPTS] = this.interrupts;
    out[e + Extra.DIRECT_INTERRUPTS] = this.directInterrupts;
    out[e + Extra.KICKS_DIRECT] = this.directKicks;
    out[e + Extra.CROSS_PAIR_FORWARDS] = this.cross?.forwarded ?? 0;
    out[e + Extra.CROSS_PAIR_SPILLS] = this.cross?.spilled ?? 0;
    out[e + Extra.WAKEUPS] = this.wakeups;
    out[e + Extra.TAP_RX] = t.rxFrames;
    out[e + Extra.TAP_TX] = t.txFrames;
    out[e + Extra.RX_DROPPED_NOT_READY] = this.shared.deviceStats.rxDroppedNotReady;
    // Per pair: this worker's share of the frames crossing to it, then its drops of frames bound for it
    // that it does not own (protocol.ts statsLength).
    const c = this.cross;
    if (c) out.set(c.crossing, e + Extra.COUNT);
    const maxPairs = this.stats.length;
    for (let p = 0; p < maxPairs; p++) {
      const foreign = this.init.pairs.includes(p) ? 0 : this.stats[p]!.rxDropped;
      out[e + Extra.COUNT + maxPairs + p] = foreign + (c?.dropsFor[p] ?? 0);
    }
  }
}

/** setImmediate callbacks pending on this thread's event loop (a request, not the data path). */
function pendingImmediates(): number {
  let n = 0;
  for (const r of process.getActiveResourcesInfo()) if (r === 'Immediate') n++;
  return n;
}

if (!isMainThread && (workerData as { kind?: string } | null)?.kind === 'virtio-net-pairs') {
  const { init, port } = workerData as { init: WorkerInit; port: MessagePort };
  new PairWorker(init, port);
}
