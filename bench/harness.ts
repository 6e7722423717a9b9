/**
 * A tiny benchmark helper shared by `bench/*.bench.ts`: runs a function after a warm-up, times it, and
 * reports ns/op, ops/s and what the garbage collector did meanwhile (a hot path that allocates nothing
 * shows no scavenges over millions of operations).
 */
import { performance } from 'node:perf_hooks';
import v8 from 'node:v8';

export interface BenchOptions {
  /** Timed iterations (calls of `fn`). */
  iterations: number;
  /** Untimed calls of `fn` before measuring (JIT warm-up). Default: iterations / 10. */
  warmup?: number;
  /** Operations one call of `fn` performs (e.g. chains per batch). Default 1. */
  opsPerIteration?: number;
  /** Runs before every call of `fn`, outside the timed section (e.g. the driver re-posting buffers). */
  beforeEach?: () => void;
}

export interface BenchResult {
  name: string;
  ops: number;
  nsPerOp: number;
  opsPerSec: number;
  /**
   * CPU time (user + system) of the process over the timed loop, per op, `beforeEach` included. Unlike
   * `nsPerOp` it leaves out time the process waited for a CPU: steadier on a shared machine.
   */
  cpuNsPerOp: number;
  /** GC events during the timed run, by kind. */
  minorGcs: number;
  majorGcs: number;
  otherGcs: number;
  gcMs: number;
  /**
   * heapUsed after minus before the timed run (bytes; a forced GC precedes the run with --expose-gc).
   * With no GC during the run, this is everything the run allocated on the JS heap.
   */
  heapDelta: number;
}

interface GcCounters {
  minor: number;
  major: number;
  other: number;
  ms: number;
}

const gc = (globalThis as { gc?: () => void }).gc;

function tick(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** Runs `fn` as configured and measures it. */
export async function bench(name: string, fn: () => void, options: BenchOptions): Promise<BenchResult> {
  const { iterations, beforeEach } = options;
  const warmup = options.warmup ?? Math.ceil(iterations / 10);
  const opsPer = options.opsPerIteration ?? 1;
  for (let i = 0; i < warmup; i++) {
    beforeEach?.();
    fn();
  }
  gc?.();
  await tick();
  // v8.GCProfiler reports synchronously (PerformanceObserver 'gc' entries arrive late or not at all).
  const profiler = new v8.GCProfiler();
  profiler.start();
  const heapBefore = process.memoryUsage().heapUsed;
  // performance.now() returns a double: timing itself allocates nothing (hrtime.bigint() would).
  let ms = 0;
  const cpu0 = process.cpuUsage();
  if (beforeEach === undefined) {
    const t0 = performance.now();
    for (let i = 0; i < iterations; i++) fn();
    ms = performance.now() - t0;
  } else {
    for (let i = 0; i < iterations; i++) {
      beforeEach();
      const t0 = performance.now();
      fn();
      ms += performance.now() - t0;
    }
  }
  const cpu = process.cpuUsage(cpu0);
  const heapDelta = process.memoryUsage().heapUsed - heapBefore;
  const counters: GcCounters = { minor: 0, major: 0, other: 0, ms: 0 };
  for (const e of profiler.stop()?.statistics ?? []) {
    if (e.gcType === 'Scavenge' || e.gcType === 'MinorMarkSweep' || e.gcType === 'MinorMarkCompact')
      counters.minor++;
    else if (e.gcType === 'MarkSweepCompact') counters.major++;
    else counters.other++;
    counters.ms += e.cost / 1000;
  }
  const ops = iterations * opsPer;
  const nsPerOp = (ms * 1e6) / ops;
  return {
    name,
    ops,
    nsPerOp,
    opsPerSec: 1e9 / nsPerOp,
    cpuNsPerOp: ((cpu.user + cpu.system) * 1e3) / ops,
    minorGcs: counters.minor,
    majorGcs: counters.major,
    otherGcs: counters.other,
    gcMs: counters.ms,
    heapDelta,
  };
}

function fmt(n: number, digits = 1): string {
  return n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });
}

/** Prints one line per result; with `baseline`, also each result's throughput as a ratio to it. */
export function report(results: BenchResult[], baseline?: BenchResult): void {
  for (const r of results) {
    const ratio = baseline === undefined ? '' : `  x${fmt(r.opsPerSec / baseline.opsPerSec, 2)} of baseline`;
    console.log(
      `${r.name.padEnd(40)} ${fmt(r.nsPerOp).padStart(8)} ns/op ${fmt(r.opsPerSec / 1e6, 2).padStart(7)} Mops/s` +
        `  gc minor/major ${r.minorGcs}/${r.majorGcs}  heap ${fmt(r.heapDelta / 1024, 0)} KiB${ratio}`,
    );
  }
}

/** Whether GC was exposed (`node --expose-gc`), which makes heap deltas meaningful. */
export const gcExposed = gc !== undefined;
