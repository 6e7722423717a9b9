/**
 * What `npm pack` would publish (issue 19): the built ESM and its declarations for both entry points and
 * the CLI, the TypeScript sources the source maps and doc comments point at, LICENSE / README /
 * CHANGELOG / docs; no tests, test support, fixtures, benches or examples; no reference to a file the
 * package does not contain, and nothing pointing at ../shared.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join, normalize, resolve } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';

const root = resolve(import.meta.dirname, '..');
let files: string[] = [];
let packed: Set<string>;

beforeAll(() => {
  // `npm pack` runs the prepare script (the build) first, as `npm publish` does.
  const out = execFileSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts=false'], {
    cwd: root,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const json = JSON.parse(out.slice(out.indexOf('['))) as { files: { path: string }[] }[];
  files = json[0]!.files.map((f) => f.path);
  packed = new Set(files);
}, 180_000);

const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));

describe('npm pack contents', () => {
  it('has the entry points, their declarations, the CLI and the project files', () => {
    for (const f of [
      'package.json',
      'LICENSE',
      'README.md',
      'CHANGELOG.md',
      'dist/index.js',
      'dist/index.d.ts',
      'dist/devices/testing/index.js',
      'dist/devices/testing/index.d.ts',
      'docs/compatibility.md',
    ])
      expect(packed.has(f), f).toBe(true);
    for (const entry of Object.values(pkg.exports) as (string | Record<string, string>)[]) {
      const targets = typeof entry === 'string' ? [entry] : Object.values(entry);
      for (const t of targets) expect(packed.has(normalize(t)), t).toBe(true);
    }
    for (const bin of Object.values(pkg.bin) as string[]) expect(packed.has(normalize(bin)), bin).toBe(true);
    expect(readFileSync(join(root, 'LICENSE'), 'utf8')).toMatch(/Apache License\s+Version 2\.0/);
  });

  it('holds no tests, test support, fixtures, benches or examples', () => {
    const bad = files.filter((f) =>
      /(\.test\.[jt]s|\.test-support\.|\.test-util\.|^test\/|^fixtures\/|^bench\/|^examples\/|^dist\/examples\/|^dist\/test\/)/.test(
        f,
      ),
    );
    expect(bad).toEqual([]);
  });

  it('every source map names sources the package contains', () => {
    const maps = files.filter((f) => f.endsWith('.js.map'));
    expect(maps.length).toBeGreaterThan(50);
    const missing: string[] = [];
    for (const m of maps) {
      const map = JSON.parse(readFileSync(join(root, m), 'utf8')) as { sources: string[] };
      for (const s of map.sources) {
        const p = normalize(join(dirname(m), s));
        if (!packed.has(p)) missing.push(`${m} → ${p}`);
      }
    }
    expect(missing).toEqual([]);
  });

  it('no declaration comment points at a file the package lacks', () => {
    const missing: string[] = [];
    for (const d of files.filter((f) => f.endsWith('.d.ts'))) {
      const text = readFileSync(join(root, d), 'utf8');
      for (const m of text.matchAll(
        /(?<![\w./-])((?:lib|pci|virtio|devices|docs)\/[\w./-]*\w\.(?:ts|md|json))/g,
      ))
        if (!packed.has(m[1]!)) missing.push(`${d}: ${m[1]}`);
      for (const m of text.matchAll(/(?<![\w.-])(?:fixtures|test|bench|examples)\/[\w./*-]+/g))
        missing.push(`${d}: ${m[0]}`);
    }
    expect(missing).toEqual([]);
  });

  it('nothing refers to ../shared or to this machine', () => {
    // The workspace's ../shared folder, not a module of ours named shared (`../shared.js`).
    const outside = /\.\.\/shared(?!\.(?:js|ts)\b)(?![\w-])|\/work\//;
    const bad = files.filter(
      (f) => /\.(js|ts|md|json|map)$/.test(f) && outside.test(readFileSync(join(root, f), 'utf8')),
    );
    expect(bad).toEqual([]);
  });

  it('installs on any OS (native parts load on first use; MemoryBackend needs none)', () => {
    expect(pkg.os).toBeUndefined();
  });
});
