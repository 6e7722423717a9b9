/**
 * `npm run bench`: runs every `bench/*.bench.ts` in sequence, each in its own process (so one JIT and
 * heap state does not colour the next), with GC exposed for meaningful heap numbers.
 */
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const dir = dirname(fileURLToPath(import.meta.url));
const files = readdirSync(dir)
  .filter((f) => f.endsWith('.bench.ts'))
  .sort();
let failed = 0;
for (const f of files) {
  console.log(`\n# ${f}`);
  const r = spawnSync(process.execPath, ['--expose-gc', '--import', 'tsx', join(dir, f)], {
    stdio: 'inherit',
  });
  if (r.status !== 0) {
    console.error(`${f} exited with ${r.status ?? r.signal}`);
    failed++;
  }
}
process.exitCode = failed === 0 ? 0 : 1;
