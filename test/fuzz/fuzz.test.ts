/**
 * The fuzz targets in `npm test`: a short seeded run of each (fixed seeds, so a failure here replays
 * with the command it prints), the engine's own guarantees (a failure names its seed, case and step,
 * replays exactly, and minimizes), and each known library bug's minimal reproduction, which must still
 * fail (`it.fails`): when a fix lands, its test fails here and the entry in known-bugs.ts goes.
 *
 * Longer runs: `npm run fuzz -- --target NAME --runs N` (docs/security.md, "Fuzzing").
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { describe, expect, it } from 'vitest';
import { virtioNetVfioUserDevice } from '../../devices/serve/vfio-user.js';
import * as sys from '../../lib/host/socket.js';
import { GuestMemory } from '../../lib/memory/guest-memory.js';
import { MemoryBackend } from '../../lib/net/memory-backend.js';
import { VfioUserServer } from '../../lib/vfio-user/server.js';
import { type FuzzTarget, formatResult, invariant, runFuzz } from './engine.js';
import { ALL_KNOWN_BUGS, KNOWN_BUGS, reproCommand } from './known-bugs.js';
import { targets } from './targets/index.js';

const SEED = 20261204;

/** Steps per target: a few seconds each on a 2-core machine. */
const RUNS: Record<string, number> = {
  'guest-config': 3000,
  'guest-rings': 2400,
  'guest-ctrl': 2400,
  'guest-snapshot': 1600,
  backend: 1600,
  'vfio-user': 2000,
  steering: 300,
};

/**
 * Targets with worker cases (worker-rig.ts: half the cases with 2+ queue pairs run them on worker
 * threads): their short run must include at least one. guest-snapshot's worker cases start workers at
 * every migration (a few hundred ms each on a loaded machine), so its run takes a seed with one such
 * case (17 migrations).
 */
const WORKER_TARGETS = new Set(['guest-rings', 'guest-ctrl', 'guest-config', 'guest-snapshot']);
const SEEDS: Record<string, number> = { 'guest-snapshot': 20261225 };

describe('fuzz targets (short seeded runs; known bugs tolerated and counted)', () => {
  it('every target has a short run here', () => {
    expect(Object.keys(RUNS).sort()).toEqual(Object.keys(targets).sort());
  });

  for (const [name, runs] of Object.entries(RUNS)) {
    const target = targets[name]!;
    const skip = target.unavailable?.() ?? null;
    const seed = SEEDS[name] ?? SEED;
    it.skipIf(skip !== null)(
      `${name}: ${runs} steps, seed ${seed}${WORKER_TARGETS.has(name) ? ' (worker cases included)' : ''}${skip ? ` (skipped: ${skip})` : ''}`,
      { timeout: 120_000 },
      async () => {
        // The step budget here only catches a hang: under a loaded CI run a migration that starts workers
        // took 2.6 s, over the 2 s `npm run fuzz` keeps for finding slow steps.
        const r = await runFuzz(target, {
          seed,
          runs,
          knownBugs: ALL_KNOWN_BUGS,
          minimizeMs: 20_000,
          budgetMs: 20_000,
        });
        if (r.failure) expect.fail(formatResult(r));
        expect(r.steps).toBe(runs);
        if (WORKER_TARGETS.has(name)) expect(r.counters.casesOnWorkers ?? 0).toBeGreaterThan(0);
      },
    );
  }
});

// Declared only while a bug is open (a suite without tests is an error).
if (Object.keys(KNOWN_BUGS).length > 0)
  describe('known library bugs: their minimal reproductions still fail (remove the entry once fixed)', () => {
    for (const [id, bug] of Object.entries(KNOWN_BUGS)) {
      const r = bug.repro;
      if (!('only' in r)) continue; // a leak: measured directly below (a run's heap is too noisy under vitest)
      it.fails(`${id}: ${reproCommand(bug)}`, { timeout: 60_000 }, async () => {
        const result = await runFuzz(targets[r.target]!, {
          seed: r.seed,
          runs: 0,
          caseIndex: r.caseIndex,
          only: r.only,
          minimize: false,
        });
        if (result.failure) expect.fail(`${id} still happens:\n${formatResult(result)}`);
      });
    }
  });

describe('fixed library bugs stay fixed', () => {
  // Fixed (lib/host/libc.ts uvPoll): koffi defined a class per poll handle, ~4.6 KiB each, kept forever.
  it('poll-handle-leak (fixed): 2000 clients that connect and leave leave < 2 MiB of heap', {
    timeout: 60_000,
  }, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'vfu-leak-'));
    const path = join(dir, 's');
    const server = new VfioUserServer(
      virtioNetVfioUserDevice({ memory: new GuestMemory(), backend: new MemoryBackend() }),
      { socketPath: path },
    );
    await server.listen();
    const once = async () => {
      const fd = sys.connectUnix(path);
      while (!server.connected) await new Promise((resolve) => setImmediate(resolve));
      sys.close(fd);
      await server.waitForDisconnect();
    };
    try {
      for (let i = 0; i < 100; i++) await once(); // warm up
      const before = await heapAfterGc();
      for (let i = 0; i < 2000; i++) await once();
      expect((await heapAfterGc()) - before).toBeLessThan(2 * 2 ** 20);
    } finally {
      await server.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

async function heapAfterGc(): Promise<number> {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  await new Promise((resolve) => setTimeout(resolve, 5));
  gc();
  gc();
  return process.memoryUsage().heapUsed;
}

/** A target with a planted bug: step kinds 'a', 'b', 'c'; the invariant breaks once a 'b' followed a 'c'. */
const planted: FuzzTarget<{ seenC: boolean }, string> = {
  name: 'planted',
  summary: 'a planted bug',
  stepsPerCase: 50,
  setup: () => ({ seenC: false }),
  generate: (rng) => rng.pick(['a', 'a', 'a', 'b', 'c']),
  execute(st, step) {
    if (step === 'c') st.seenC = true;
    invariant(!(step === 'b' && st.seenC), 'planted: b after c');
  },
  dispose() {},
  describe: (s) => s,
};

describe('fuzz engine', () => {
  it('reports seed, case and step, replays the case exactly, and shrinks the steps to the two that matter', async () => {
    const r = await runFuzz(planted, { seed: 7, runs: 500 });
    expect(r.failure?.kind).toBe('invariant');
    const f = r.failure!;
    const text = formatResult(r);
    expect(text).toContain('--seed 7 --runs 500');
    expect(text).toContain(`--case ${f.caseIndex} --runs ${f.step + 1}`);
    expect(f.minimal?.descriptions).toEqual(['c', 'b']);
    // The printed commands reproduce: the whole run, the case alone, the minimal list alone.
    const again = await runFuzz(planted, { seed: 7, runs: 500, minimize: false });
    expect([again.failure?.caseIndex, again.failure?.step]).toEqual([f.caseIndex, f.step]);
    const alone = await runFuzz(planted, {
      seed: 7,
      runs: f.step + 1,
      caseIndex: f.caseIndex,
      minimize: false,
    });
    expect(alone.failure?.step).toBe(f.step);
    const minimal = await runFuzz(planted, {
      seed: 7,
      runs: 0,
      caseIndex: f.caseIndex,
      only: f.minimal!.indices,
      minimize: false,
    });
    expect(minimal.failure?.step).toBe(f.minimal!.indices[1]);
  });

  it('fails a step that throws, one over the time budget, and one that leaves work rescheduling itself', async () => {
    const thrower: FuzzTarget<null, number> = {
      ...(planted as unknown as FuzzTarget<null, number>),
      setup: () => null,
      generate: (rng) => rng.int(0, 9),
      execute: (_, n) => {
        if (n === 9) throw new RangeError('boom');
      },
      describe: String,
    };
    expect((await runFuzz(thrower, { seed: 1, runs: 200 })).failure?.kind).toBe('error');
    const slow: FuzzTarget<null, number> = {
      ...thrower,
      execute: async () => new Promise((r) => setTimeout(r, 30)),
    };
    expect((await runFuzz(slow, { seed: 1, runs: 3, budgetMs: 10 })).failure?.kind).toBe('slow');
    let stop = false;
    const spin = () => {
      if (!stop) setImmediate(spin);
    };
    const spinning: FuzzTarget<null, number> = {
      ...thrower,
      execute: () => spin(),
      dispose: () => {
        stop = true;
      },
    };
    expect((await runFuzz(spinning, { seed: 1, runs: 3, minimize: false })).failure?.kind).toBe('spin');
  });
});
