/**
 * Library bugs the fuzz targets found and that are not fixed yet (fixing library code is not the
 * fuzzer's job). A run tolerates the ones named in `--known-bugs` (counting each hit, so a report shows
 * they still happen); by default every one of them fails the run like any other invariant.
 * `npm test` tolerates them in its short runs and checks each minimal reproduction with `it.fails`:
 * when a fix lands, that test fails and the entry goes.
 */
export interface KnownBug {
  summary: string;
  /**
   * A run that shows it: steps `only` of case `caseIndex` of `seed` (a minimal step list), or `runs`
   * steps of `seed` with the heap bound `heapMb` (a leak).
   */
  repro:
    | { target: string; seed: number; caseIndex: number; only: number[] }
    | { target: string; seed: number; runs: number; heapMb: number };
}

/** The command that replays a known bug's reproduction. */
export function reproCommand(b: KnownBug): string {
  const r = b.repro;
  const base = `npm run fuzz -- --target ${r.target} --seed ${r.seed}`;
  return 'only' in r
    ? `${base} --case ${r.caseIndex} --only ${r.only.join(',')}`
    : `${base} --runs ${r.runs} --heap-mb ${r.heapMb}`;
}

// Empty: every bug the targets found is fixed (docs/security.md, "Known bugs", lists them and their tests).
export const KNOWN_BUGS: Record<string, KnownBug> = {};

export const ALL_KNOWN_BUGS = Object.keys(KNOWN_BUGS);
