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

  constructor(
    private readonly net: VirtioNet,
    private readonly handoffs: WorkerHandoffs,
  ) {}

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
    // Frames crossing to a pair: put in flight by one worker, taken out by another (forward.ts).
    for (const [p, st] of net.queueStats.entries()) {
      let depth = 0;
      for (const w of workers) depth += w.stats[w.pairs.length * n + Extra.COUNT + p] ?? 0;
      st.rxCrossingDepth = depth;
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
