/**
 * `npm run fuzz -- --target NAME [--runs N] [--seed S] [--case C [--only i,j,...]] [--time-limit SECONDS]
 * [--budget-ms MS] [--heap-mb MB] [--known-bugs all|ID,...] [--no-minimize] [--verbose] [--json]`
 *
 * Runs a fuzz target (test/fuzz/targets) for N steps from seed S (random when not given; always
 * printed). On failure it prints the seed, the case and step, commands that replay the run, the case
 * and a minimal step list exactly, and exits 1. `--target all` runs every target in turn.
 */
import { formatResult, type FuzzOptions, runFuzz } from './engine.js';
import { ALL_KNOWN_BUGS, KNOWN_BUGS, reproCommand } from './known-bugs.js';
import { targets } from './targets/index.js';

function usage(message?: string): never {
  if (message) console.error(`fuzz: ${message}`);
  console.error(
    'usage: npm run fuzz -- --target NAME|all [--runs N] [--seed S] [--case C [--only i,j,...]] [--time-limit SECONDS] [--budget-ms MS] [--heap-mb MB] [--known-bugs all|ID,...] [--no-minimize] [--verbose] [--json]',
  );
  console.error(`targets: ${Object.keys(targets).join(', ')}`);
  console.error(`known bugs (tolerated only when named): ${ALL_KNOWN_BUGS.join(', ')}`);
  process.exit(2);
}

function parse(argv: string[]) {
  const o: Record<string, string | boolean> = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] as string;
    if (!a.startsWith('--')) usage(`unexpected argument "${a}"`);
    const key = a.slice(2);
    if (['no-minimize', 'verbose', 'json', 'help'].includes(key)) o[key] = true;
    else {
      const v = argv[++i];
      if (v === undefined) usage(`--${key} needs a value`);
      o[key] = v;
    }
  }
  return o;
}

function int(v: string | boolean | undefined, name: string): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (typeof v !== 'string' || !Number.isInteger(n) || n < 0) usage(`--${name} needs a non-negative integer`);
  return n;
}

async function main(): Promise<number> {
  const a = parse(process.argv.slice(2));
  if (a.help) usage();
  const name = a.target;
  if (typeof name !== 'string') usage('--target is required');
  const names = name === 'all' ? Object.keys(targets) : [name];
  for (const n of names) if (!targets[n]) usage(`unknown target "${n}"`);
  const seed = int(a.seed, 'seed') ?? Math.floor(Math.random() * 0x1_0000_0000);
  const runs = int(a.runs, 'runs') ?? 1000;
  const caseIndex = int(a.case, 'case');
  const only =
    typeof a.only === 'string'
      ? a.only.split(',').map((x) => {
          const n = Number(x);
          if (!Number.isInteger(n) || n < 0) usage('--only takes step indices like 3,17,40');
          return n;
        })
      : undefined;
  if (only && caseIndex === undefined) usage('--only needs --case');
  const timeLimit = int(a['time-limit'], 'time-limit');
  const knownBugs =
    a['known-bugs'] === 'all'
      ? ALL_KNOWN_BUGS
      : typeof a['known-bugs'] === 'string'
        ? a['known-bugs'].split(',')
        : [];
  for (const b of knownBugs) if (!KNOWN_BUGS[b]) usage(`unknown bug id "${b}"`);
  let failed = false;
  for (const n of names) {
    const options: FuzzOptions = {
      seed,
      runs,
      ...(caseIndex !== undefined ? { caseIndex } : {}),
      ...(only ? { only } : {}),
      ...(timeLimit !== undefined ? { timeLimitMs: timeLimit * 1000 } : {}),
      budgetMs: int(a['budget-ms'], 'budget-ms') ?? 2000,
      heapMb: int(a['heap-mb'], 'heap-mb') ?? 256,
      minimize: !a['no-minimize'],
      knownBugs,
      ...(a.verbose ? { log: (line: string) => console.log(line) } : {}),
    };
    console.log(
      `fuzz ${n}: seed ${seed}, ${caseIndex !== undefined ? `case ${caseIndex}` : `${runs} steps`} …`,
    );
    const r = await runFuzz(targets[n]!, options);
    console.log(
      a.json ? JSON.stringify(r, (_, v) => (typeof v === 'bigint' ? v.toString() : v), 2) : formatResult(r),
    );
    if (r.failure) failed = true;
    for (const b of Object.keys(r.knownBugHits))
      if (KNOWN_BUGS[b])
        console.log(`  known bug ${b}: ${KNOWN_BUGS[b].summary}\n    repro: ${reproCommand(KNOWN_BUGS[b])}`);
  }
  return failed ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (e) => {
    console.error(e);
    process.exit(3);
  },
);
