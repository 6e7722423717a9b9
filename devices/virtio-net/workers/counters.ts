/**
 * The main thread's reading of the workers' counter blocks (protocol.ts `statsLength`): each pair's
 * counters from the worker running it, the handoff totals, and the gauges no single worker knows.
 */
import type { VirtioNet } from '../device.js';
import type { PairWorkerHandle, WorkerHandoffs } from './handle.js';
import { Extra, STAT_FIELDS } from './protocol.js';

export class WorkerCounters {
  /** The workers' summed rxDroppedNotReady as last taken into the device's (each is cumulative). */
  private notReadySeen = 0;
  /** Per pair: the workers' summed drops of frames bound for it they do not own, as last read. */
  private readonly foreignSeen: Float64Array;
  /** Per pair: of those, the ones not handed to its owner yet (added to its rxDropped here). */
  private readonly foreignCarried: Float64Array;

  constructor(
    private readonly net: VirtioNet,
    private readonly handoffs: WorkerHandoffs,
  ) {
    this.foreignSeen = new Float64Array(net.maxQueuePairs);
    this.foreignCarried = new Float64Array(net.maxQueuePairs);
  }

  /** The worker owning `pairs` started with the device's counters, the foreign drops read so far in them. */
  handedOver(pairs: readonly number[]): void {
    for (const p of pairs) this.foreignCarried[p] = 0;
  }

  /**
   * Copies what `workers` published into the device's counters. A worker publishes before it answers a
   * request, so after a round trip to each (WorkerPool.settle, stop) the figures are consistent.
   */
  read(workers: readonly PairWorkerHandle[]): void {
    const net = this.net;
    const n = STAT_FIELDS.length;
    for (const h of workers)
      for (const [k, p] of h.pairs.entries()) {
        const st = net.queueStats[p]!;
        for (let i = 0; i < n; i++) st[STAT_FIELDS[i]!] = h.stats[k * n + i]!;
      }
    let cross = 0;
    let notReady = 0;
    let direct = 0;
    let kicks = 0;
    let forwards = 0;
    let spills = 0;
    for (const w of workers) {
      const e = w.pairs.length * n;
      forwards += w.stats[e + Extra.CROSS_PAIR_FORWARDS]!;
      spills += w.stats[e + Extra.CROSS_PAIR_SPILLS]!;
      cross += w.stats[e + Extra.CROSS_PAIR_DROPS]!;
      direct += w.stats[e + Extra.DIRECT_INTERRUPTS]!;
      kicks += w.stats[e + Extra.KICKS_DIRECT]!;
      notReady += w.stats[e + Extra.RX_DROPPED_NOT_READY]!;
    }
    // Frames crossing to a pair: put in flight by one worker, taken out by another (forward.ts); and
    // frames bound for it that a worker not owning it dropped, which count in its rxDropped as they
    // would have on one thread (where the pair's full backlog drops them).
    const maxPairs = net.maxQueuePairs;
    for (const [p, st] of net.queueStats.entries()) {
      let depth = 0;
      let foreign = 0;
      for (const w of workers) {
        const at = w.pairs.length * n + Extra.COUNT + p;
        depth += w.stats[at] ?? 0;
        foreign += w.stats[at + maxPairs] ?? 0;
      }
      // Each worker publishes on its own schedule: while frames move, the owner's share may be newer than
      // the sender's (a frame taken out before its sender published putting it in).
      st.rxCrossingDepth = Math.max(0, depth);
      this.foreignCarried[p]! += foreign - this.foreignSeen[p]!;
      this.foreignSeen[p] = foreign;
      st.rxDropped += this.foreignCarried[p]!;
    }
    const h = this.handoffs;
    h.crossPairDrops = cross;
    h.interruptsDirect = direct;
    h.kicksDirect = kicks;
    h.crossPairForwards = forwards;
    h.crossPairSpills = spills;
    net.shared.deviceStats.rxDroppedNotReady += notReady - this.notReadySeen;
    this.notReadySeen = notReady;
  }
}
