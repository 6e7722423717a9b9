/**
 * The fuzz engine: runs a target's seeded step sequences and checks the invariants every target shares.
 *
 * A run of `runs` steps is cut into cases of `target.stepsPerCase` steps, each on a fresh system built
 * by `setup`. Case c of seed S has its own seed (rng.ts `caseSeed`), so a failing case replays alone.
 * Steps are plain data generated from the case's step stream before they run and never depend on the
 * state, so any subset of a case's steps can be replayed (that is how failures are minimized).
 *
 * Checked around every step: no exception escapes (from the step, the target's invariants, or later
 * on the event loop), the step finishes within the time budget, and the heap after GC stays within a
 * bound over the run. Targets check their own invariants in `execute` and `check`.
 */
import { performance } from 'node:perf_hooks';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { caseSeed, Rng } from './rng.js';

/** A broken invariant (the target names what and where). */
export class InvariantError extends Error {
  override name = 'InvariantError';
}

/** An exception that escaped a public method of the library (`cause` is the original). */
export class EscapeError extends Error {
  override name = 'EscapeError';
  constructor(
    readonly method: string,
    override readonly cause: unknown,
  ) {
    super(`${method} threw ${describeError(cause)}`);
  }
}

export function invariant(ok: unknown, message: string | (() => string)): asserts ok {
  if (!ok) throw new InvariantError(typeof message === 'string' ? message : message());
}

/** Calls `fn`, turning anything it throws into an EscapeError naming `method`. */
export function guard<T>(method: string, fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if (e instanceof EscapeError || e instanceof InvariantError) throw e;
    throw new EscapeError(method, e);
  }
}

/** Async `guard`. */
export async function guardAsync<T>(method: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    if (e instanceof EscapeError || e instanceof InvariantError) throw e;
    throw new EscapeError(method, e);
  }
}

export function describeError(e: unknown): string {
  if (e instanceof Error) return `${e.name}: ${e.message}`;
  return String(e);
}

/** What a target can ask of the run. */
export interface RunContext {
  /**
   * A known library bug (known-bugs.ts) just showed: counts it and returns true when the run tolerates
   * it; on false the target fails the step as usual.
   */
  tolerate(bug: string): boolean;
  /** Whether the run tolerates `bug` (without counting a hit). */
  tolerates(bug: string): boolean;
}

export interface FuzzTarget<S = unknown, Step = unknown> {
  readonly name: string;
  readonly summary: string;
  /** Steps per case (each case starts from a fresh `setup`). */
  readonly stepsPerCase: number;
  /** False when failures depend on timing (re-running subsets would not be meaningful). Default true. */
  readonly minimize?: boolean;
  /** Null when the target can run here, else why not (the run is skipped with that message). */
  unavailable?(): string | null;
  /** Builds a fresh system under test; `rng` chooses its configuration. */
  setup(rng: Rng, ctx: RunContext): S | Promise<S>;
  /** The next step of a case, from the case's step stream (data only; independent of the state). */
  generate(rng: Rng): Step;
  /** Runs one step; throws InvariantError / EscapeError when something is wrong. */
  execute(state: S, step: Step): void | Promise<void>;
  /** Invariants after every step (after the event loop has run deferred work). */
  check?(state: S): void | Promise<void>;
  /** Invariants at the end of a case (e.g. conservation after a reset). */
  finish?(state: S): void | Promise<void>;
  /** Releases everything; also after a failure. Must not throw. */
  dispose(state: S): void | Promise<void>;
  describe(step: Step): string;
  describeSetup?(state: S): string;
  /** Counters that show what the run reached (summed over cases). */
  counters?(state: S): Record<string, number>;
  /** The known bug that would explain deferred work rescheduling itself in this state, if any. */
  explainSpin?(state: S): string | null;
  /** The known bug that explains heap growth over the run, if any (a leak not fixed yet). */
  readonly heapBug?: string;
}

export interface FuzzOptions {
  seed: number;
  /** Total steps (over all cases). */
  runs: number;
  /** Run only this case of the seed (its steps limited by `runs`). */
  caseIndex?: number;
  /** With `caseIndex`: run only these step indices of the case. */
  only?: number[];
  /** A step (with its invariant checks) slower than this fails the run. Default 2000 ms. */
  budgetMs?: number;
  /** Heap (and array buffers) after GC may grow at most this much over the run. Default 256 MiB. */
  heapMb?: number;
  /** Stop starting new steps after this long (the result says how many ran). */
  timeLimitMs?: number;
  /** Minimize a failing case's step list. Default true. */
  minimize?: boolean;
  /** Re-runs minimizing may spend. Default 150 trials / 60 s. */
  minimizeTrials?: number;
  minimizeMs?: number;
  /** Printed for every step when set. */
  log?: (line: string) => void;
  /** Known bugs (known-bugs.ts) to tolerate: counted, not failed. */
  knownBugs?: readonly string[];
}

export interface FuzzFailure {
  kind: 'exception' | 'invariant' | 'slow' | 'memory' | 'uncaught' | 'spin' | 'error';
  message: string;
  stack: string;
  caseIndex: number;
  caseSeed: number;
  /** Index of the failing step in its case (-1: setup; the case's step count when `finish`). */
  step: number;
  /** The end-of-case checks failed (after every step ran). */
  finish: boolean;
  /** Index of the failing step in the whole run. */
  globalStep: number;
  description: string;
  setup: string;
  /** The case's steps up to the failure, shortened to a set that still fails the same way. */
  minimal?: { indices: number[]; descriptions: string[]; trials: number };
}

export interface FuzzResult {
  target: string;
  seed: number;
  runs: number;
  caseIndex?: number;
  only?: number[];
  skipped?: string;
  steps: number;
  cases: number;
  durationMs: number;
  stoppedByTimeLimit: boolean;
  failure?: FuzzFailure;
  stepMs: { max: number; p99: number; mean: number; slowest: string };
  heapGrowthMb: number;
  counters: Record<string, number>;
  /** Known bugs seen (tolerated or the failure), by id. */
  knownBugHits: Record<string, number>;
}

const tick = () => new Promise<void>((resolve) => setImmediate(resolve));

/**
 * Waits until no setImmediate callback is pending (the system went idle), for at most `ticks` turns of
 * the event loop. False means something keeps rescheduling itself: a guest that stopped doing anything
 * still makes the host spin.
 */
async function settle(ticks: number): Promise<boolean> {
  for (let i = 0; i < ticks; i++) {
    if (!process.getActiveResourcesInfo().includes('Immediate')) return true;
    await tick();
  }
  return false;
}

let gcFn: (() => void) | null | undefined;
/** A full GC when the runtime lets us have one (--expose-gc, enabled here at run time). */
function collect(): void {
  if (gcFn === undefined) {
    try {
      setFlagsFromString('--expose-gc');
      gcFn = runInNewContext('gc') as () => void;
    } catch {
      gcFn = null;
    }
  }
  gcFn?.();
}

/** Heap + array buffers after GC, once deferred work (setImmediate/timers) of disposed cases has run. */
async function heapNow(): Promise<number> {
  await new Promise((resolve) => setTimeout(resolve, 1));
  await tick();
  // Two collections: the first can leave objects that only weak processing (feedback, finalizers) frees.
  collect();
  await tick();
  collect();
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
}

/** What a failure looks like, for telling whether a re-run fails "the same way". */
function signature(kind: string, message: string): string {
  return `${kind}:${message.split('\n')[0]!.replace(/0x[0-9a-f]+|\d+/gi, '#')}`;
}

class Failure extends Error {
  constructor(
    readonly kind: FuzzFailure['kind'],
    message: string,
    readonly original: unknown,
  ) {
    super(message);
  }
}

function classify(e: unknown): Failure {
  if (e instanceof Failure) return e;
  if (e instanceof EscapeError) return new Failure('exception', e.message, e.cause ?? e);
  if (e instanceof InvariantError) return new Failure('invariant', e.message, e);
  return new Failure('error', describeError(e), e);
}

function stackOf(e: unknown): string {
  if (e instanceof Error) return e.stack ?? e.message;
  return String(e);
}

interface CaseOutcome {
  executed: number;
  failure: { failure: Failure; step: number; description: string } | null;
  setup: string;
}

/** Runs one case; `steps` is the full generated list, `indices` those to execute. */
async function runCase<S, Step>(
  target: FuzzTarget<S, Step>,
  seed: number,
  steps: Step[],
  indices: number[],
  o: {
    budgetMs: number;
    finish: boolean;
    deadline: number;
    onStep?: (ms: number, i: number) => void;
    log?: (line: string) => void;
    counters?: Record<string, number>;
    ctx: RunContext;
  },
): Promise<CaseOutcome & { timeUp: boolean }> {
  const uncaught: unknown[] = [];
  const onUncaught = (e: unknown) => uncaught.push(e);
  process.on('uncaughtException', onUncaught);
  process.on('unhandledRejection', onUncaught);
  let state: S | undefined;
  let setupText = '';
  let executed = 0;
  let current = -1;
  let description = 'setup';
  let timeUp = false;
  const escaped = () => {
    if (uncaught.length > 0)
      throw new Failure('uncaught', `uncaught on the event loop: ${describeError(uncaught[0])}`, uncaught[0]);
  };
  try {
    state = await target.setup(new Rng((seed ^ 0x5e7a9) >>> 0), o.ctx);
    setupText = target.describeSetup?.(state) ?? '';
    await tick();
    escaped();
    for (const i of indices) {
      if (performance.now() > o.deadline) {
        timeUp = true;
        break;
      }
      current = i;
      const step = steps[i] as Step;
      description = target.describe(step);
      o.log?.(`  step ${i}: ${description}`);
      const t0 = performance.now();
      await target.execute(state, step);
      await tick();
      await tick();
      // A spin a tolerated known bug explains is counted after 50 turns, not waited out for 1000 (every step
      // would pay for it while it lasts); legitimate deferred work settles in a few turns.
      const known = target.explainSpin?.(state) ?? null;
      const turns = known !== null && o.ctx.tolerates(known) ? 50 : 1000;
      if (!(await settle(turns)) && !(known !== null && o.ctx.tolerate(known)))
        throw new Failure(
          'spin',
          `deferred work still rescheduling itself after ${turns} turns of the event loop${known ? ` (known bug ${known}?)` : ''}`,
          null,
        );
      escaped();
      await target.check?.(state);
      const ms = performance.now() - t0;
      executed++;
      o.onStep?.(ms, i);
      if (ms > o.budgetMs)
        throw new Failure('slow', `step took ${ms.toFixed(0)} ms (budget ${o.budgetMs} ms)`, null);
    }
    if (o.finish && !timeUp) {
      current = steps.length;
      description = 'finish (end-of-case invariants)';
      await target.finish?.(state);
      await tick();
      escaped();
    }
    return { executed, failure: null, setup: setupText, timeUp };
  } catch (e) {
    return {
      executed,
      failure: { failure: classify(e), step: current, description },
      setup: setupText,
      timeUp,
    };
  } finally {
    if (state !== undefined) {
      if (o.counters && target.counters) {
        for (const [k, v] of Object.entries(target.counters(state))) o.counters[k] = (o.counters[k] ?? 0) + v;
      }
      try {
        await target.dispose(state);
      } catch {
        // dispose must not throw; a failure here must not hide the one being reported
      }
    }
    await tick();
    process.off('uncaughtException', onUncaught);
    process.off('unhandledRejection', onUncaught);
  }
}

function generateSteps<S, Step>(target: FuzzTarget<S, Step>, seed: number, n: number): Step[] {
  const rng = new Rng(seed);
  const steps: Step[] = [];
  for (let i = 0; i < n; i++) steps.push(target.generate(rng));
  return steps;
}

/** Shortens a failing step list to one that still fails with the same signature (greedy chunk removal). */
async function minimize<S, Step>(
  target: FuzzTarget<S, Step>,
  seed: number,
  steps: Step[],
  failing: number,
  sig: string,
  o: { budgetMs: number; trials: number; ms: number; ctx: RunContext; from: number[] },
): Promise<{ indices: number[]; trials: number }> {
  // The steps that ran, up to the failing one.
  let current = o.from.filter((i) => i <= failing);
  const finish = failing >= steps.length;
  let trials = 0;
  const end = performance.now() + o.ms;
  const fails = async (indices: number[]) => {
    trials++;
    const r = await runCase(target, seed, steps, indices, {
      budgetMs: o.budgetMs,
      finish,
      deadline: Number.POSITIVE_INFINITY,
      ctx: o.ctx,
    });
    return r.failure !== null && signature(r.failure.failure.kind, r.failure.failure.message) === sig;
  };
  // The failing step alone first: many failures need nothing before them.
  const last = current[current.length - 1];
  if (!finish && last !== undefined && current.length > 1 && (await fails([last])))
    return { indices: [last], trials };
  for (let chunk = Math.max(1, current.length >> 1); chunk >= 1; chunk >>= 1) {
    for (let start = 0; start < current.length; ) {
      if (trials >= o.trials || performance.now() > end) return { indices: current, trials };
      const candidate = [...current.slice(0, start), ...current.slice(start + chunk)];
      if (candidate.length > 0 && (await fails(candidate))) current = candidate;
      else start += chunk;
    }
    if (chunk === 1) break;
  }
  return { indices: current, trials };
}

/** Runs `target` for `options.runs` steps (or one case of it) and returns what happened. */
export async function runFuzz<S, Step>(
  target: FuzzTarget<S, Step>,
  options: FuzzOptions,
): Promise<FuzzResult> {
  const budgetMs = options.budgetMs ?? 2000;
  const heapBound = (options.heapMb ?? 256) * 1024 * 1024;
  const t0 = performance.now();
  const deadline = options.timeLimitMs === undefined ? Number.POSITIVE_INFINITY : t0 + options.timeLimitMs;
  const result: FuzzResult = {
    target: target.name,
    seed: options.seed >>> 0,
    runs: options.runs,
    ...(options.caseIndex !== undefined ? { caseIndex: options.caseIndex } : {}),
    ...(options.only ? { only: options.only } : {}),
    steps: 0,
    cases: 0,
    durationMs: 0,
    stoppedByTimeLimit: false,
    stepMs: { max: 0, p99: 0, mean: 0, slowest: '' },
    heapGrowthMb: 0,
    counters: {},
    knownBugHits: {},
  };
  const tolerated = new Set(options.knownBugs ?? []);
  let counting = true;
  const ctx: RunContext = {
    tolerate(bug) {
      if (counting) result.knownBugHits[bug] = (result.knownBugHits[bug] ?? 0) + 1;
      return tolerated.has(bug);
    },
    tolerates: (bug) => tolerated.has(bug),
  };
  const skip = target.unavailable?.() ?? null;
  if (skip !== null) {
    result.skipped = skip;
    return result;
  }
  const times: number[] = [];
  const baseline = await heapNow();
  let maxGrowth = 0;
  const per = target.stepsPerCase;
  const caseList =
    options.caseIndex !== undefined
      ? [options.caseIndex]
      : Array.from({ length: Math.ceil(options.runs / per) }, (_, c) => c);
  let globalBase = 0;
  for (const c of caseList) {
    const cSeed = caseSeed(result.seed, c);
    // A replayed case with --only runs whole (its end-of-case checks included).
    const n =
      options.caseIndex !== undefined
        ? options.only
          ? per
          : Math.min(per, options.runs)
        : Math.min(per, options.runs - c * per);
    const steps = generateSteps(target, cSeed, n);
    const indices = options.only ?? steps.map((_, i) => i);
    globalBase = options.caseIndex !== undefined ? c * per : globalBase;
    const outcome = await runCase(target, cSeed, steps, indices, {
      budgetMs,
      finish: true,
      deadline,
      log: options.log,
      counters: result.counters,
      ctx,
      onStep: (ms, i) => {
        times.push(ms);
        if (ms > result.stepMs.max) {
          result.stepMs.max = ms;
          result.stepMs.slowest = `case ${c} step ${i}: ${target.describe(steps[i] as Step)}`;
        }
      },
    });
    result.cases++;
    result.steps += outcome.executed;
    let failure = outcome.failure;
    if (failure === null) {
      const growth = (await heapNow()) - baseline;
      maxGrowth = Math.max(maxGrowth, growth);
      if (growth > heapBound && !(target.heapBug !== undefined && ctx.tolerate(target.heapBug)))
        failure = {
          failure: new Failure(
            'memory',
            `heap + array buffers after GC grew ${(growth / 2 ** 20).toFixed(0)} MiB over the run (bound ${options.heapMb ?? 256} MiB)`,
            null,
          ),
          step: n,
          description: 'after the case (GC)',
        };
    }
    if (failure) {
      const f = failure.failure;
      result.failure = {
        kind: f.kind,
        message: f.message,
        stack: stackOf(f.original ?? f),
        caseIndex: c,
        caseSeed: cSeed,
        step: failure.step,
        finish: failure.step >= steps.length,
        globalStep: globalBase + Math.max(failure.step, 0),
        description: failure.description,
        setup: outcome.setup,
      };
      const deterministic = ['exception', 'invariant', 'error', 'spin'].includes(f.kind);
      if ((options.minimize ?? true) && target.minimize !== false && deterministic && failure.step >= 0) {
        counting = false;
        const m = await minimize(target, cSeed, steps, failure.step, signature(f.kind, f.message), {
          from: indices,
          ctx,
          budgetMs,
          trials: options.minimizeTrials ?? 150,
          ms: options.minimizeMs ?? 60_000,
        });
        result.failure.minimal = {
          indices: m.indices,
          descriptions: m.indices.map((i) =>
            i < steps.length ? target.describe(steps[i] as Step) : 'finish',
          ),
          trials: m.trials,
        };
      }
      break;
    }
    globalBase += per;
    if (outcome.timeUp) {
      result.stoppedByTimeLimit = true;
      break;
    }
  }
  times.sort((a, b) => a - b);
  result.stepMs.p99 = times[Math.min(times.length - 1, Math.floor(times.length * 0.99))] ?? 0;
  result.stepMs.mean = times.length ? times.reduce((a, b) => a + b, 0) / times.length : 0;
  result.heapGrowthMb = maxGrowth / 2 ** 20;
  result.durationMs = performance.now() - t0;
  return result;
}

/** The command that replays a run (or one case of it) exactly. */
export function reproCommand(r: { target: string; seed: number; runs: number }, extra = ''): string {
  return `npm run fuzz -- --target ${r.target} --seed ${r.seed} --runs ${r.runs}${extra}`;
}

/** A human-readable report (what `npm run fuzz` prints, and what a failing test shows). */
export function formatResult(r: FuzzResult): string {
  const lines: string[] = [];
  if (r.skipped) return `fuzz ${r.target}: SKIPPED (${r.skipped})`;
  const ok = r.failure ? 'FAILED' : 'ok';
  lines.push(
    `fuzz ${r.target}: ${ok} — ${r.steps} steps in ${r.cases} case(s), seed ${r.seed}, ${(r.durationMs / 1000).toFixed(1)} s` +
      (r.stoppedByTimeLimit ? ' (stopped by the time limit)' : ''),
  );
  lines.push(
    `  step time: mean ${r.stepMs.mean.toFixed(2)} ms, p99 ${r.stepMs.p99.toFixed(1)} ms, max ${r.stepMs.max.toFixed(1)} ms (${r.stepMs.slowest || '-'}); heap growth after GC ${r.heapGrowthMb.toFixed(1)} MiB`,
  );
  const counters = Object.entries(r.counters)
    .filter(([, v]) => v !== 0)
    .map(([k, v]) => `${k}=${v}`);
  if (counters.length) lines.push(`  reached: ${counters.join(', ')}`);
  const bugs = Object.entries(r.knownBugHits).map(([k, v]) => `${k} ×${v}`);
  if (bugs.length) lines.push(`  known bugs seen: ${bugs.join(', ')}`);
  const f = r.failure;
  if (f) {
    lines.push(`  ${f.kind.toUpperCase()}: ${f.message}`);
    lines.push(
      `  at case ${f.caseIndex} (case seed ${f.caseSeed}), step ${f.step} (run step ${f.globalStep}): ${f.description}`,
    );
    if (f.setup) lines.push(`  setup: ${f.setup}`);
    lines.push(`  reproduce the run:  ${reproCommand(r)}`);
    lines.push(
      `  reproduce the case: npm run fuzz -- --target ${r.target} --seed ${r.seed} --case ${f.caseIndex} --runs ${f.finish ? f.step : f.step + 1}`,
    );
    if (f.minimal) {
      lines.push(
        `  minimal steps (${f.minimal.indices.length}, ${f.minimal.trials} re-runs): npm run fuzz -- --target ${r.target} --seed ${r.seed} --case ${f.caseIndex} --only ${f.minimal.indices.join(',')}`,
      );
      f.minimal.indices.forEach((i, k) => {
        lines.push(`    ${i}: ${f.minimal!.descriptions[k]}`);
      });
    }
    lines.push(`  stack: ${f.stack.split('\n').slice(0, 8).join('\n    ')}`);
  }
  return lines.join('\n');
}
