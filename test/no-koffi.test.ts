/**
 * The package on a machine where koffi cannot load (no prebuilt binary for the platform, another libc):
 * importing it must work and a MemoryBackend device must run; only the first TapBackend use fails, with a
 * BackendError that names koffi. A separate Node process imports index.ts through tsx with resolution
 * hooks that make every way of loading `koffi` throw (ESM `import`, and `require`/createRequire).
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, expect, it } from 'vitest';

const root = resolve(import.meta.dirname, '..');
const dir = mkdtempSync(join(tmpdir(), 'vnt-no-koffi-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** ESM resolve hook (module.register): `import 'koffi'` fails as a missing native module would. */
const ESM_HOOK = `
export async function resolve(specifier, context, next) {
  if (specifier === 'koffi' || specifier.startsWith('koffi/')) throw new Error('koffi blocked by the test (ESM import)');
  return next(specifier, context);
}
`;

/** Preloaded with --import: registers the ESM hook and blocks CommonJS resolution of koffi too. */
const PRELOAD = `
import Module, { register } from 'node:module';
register(${JSON.stringify(pathToFileURL(join(dir, 'esm-hook.mjs')).href)});
const resolveFilename = Module._resolveFilename;
Module._resolveFilename = function (request, ...rest) {
  if (request === 'koffi' || request.startsWith('koffi/')) throw new Error('koffi blocked by the test (require)');
  return resolveFilename.call(this, request, ...rest);
};
`;

const CONSUMER = `
const pkg = await import(${JSON.stringify(pathToFileURL(join(root, 'index.ts')).href)});
const kit = await import(${JSON.stringify(pathToFileURL(join(root, 'devices/testing/index.ts')).href)});
const { createVirtioNetPci, GuestMemory, MemoryBackend, parseQemuDevice, TapBackend, BackendError } = pkg;
const { VirtioNetDriver, InterruptCollector, frames } = kit;
const memory = new GuestMemory([{ address: 0, bytes: new Uint8Array(64 << 20) }]);
const backend = new MemoryBackend();
const irq = new InterruptCollector();
const nic = createVirtioNetPci({ memory, backend, interrupts: irq, ...parseQemuDevice('virtio-net-pci,mac=52:54:00:aa:bb:cc') });
const guest = new VirtioNetDriver(nic, memory, { interrupts: irq });
guest.open();
const peer = new frames.PeerResponder('02:00:00:00:00:02', '10.0.0.2');
backend.onFrame((f, q) => { const r = peer.handle(f); if (r) backend.inject(r, q); });
guest.send(frames.arp(1, guest.mac(), '10.0.0.1', '00:00:00:00:00:00', '10.0.0.2'));
let tap = null;
try { TapBackend.open({ name: 'vntnokoffi' }); tap = { opened: true }; }
catch (e) { tap = { backendError: e instanceof BackendError, message: String(e?.message) }; }
let koffi = 'loaded';
try { await import('koffi'); } catch (e) { koffi = String(e?.message); }
console.log(JSON.stringify({ received: guest.receive(0).length, tx: nic.stats().txPackets, tap, koffi }));
`;

it('imports and runs a MemoryBackend device without koffi; TapBackend then fails naming koffi', () => {
  writeFileSync(join(dir, 'esm-hook.mjs'), ESM_HOOK);
  writeFileSync(join(dir, 'no-koffi.mjs'), PRELOAD);
  writeFileSync(join(dir, 'consumer.mjs'), CONSUMER);
  const out = execFileSync(
    process.execPath,
    ['--import', 'tsx', '--import', pathToFileURL(join(dir, 'no-koffi.mjs')).href, join(dir, 'consumer.mjs')],
    { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const r = JSON.parse(out.trim().split('\n').at(-1) as string);
  expect(r.koffi).toMatch(/koffi blocked by the test/); // the hooks work: koffi really is unavailable
  expect(r.received).toBe(1);
  expect(r.tx).toBe(1);
  expect(r.tap.backendError).toBe(true);
  expect(r.tap.message).toMatch(/cannot load libc through koffi.*koffi blocked by the test \(require\)/);
  expect(r.tap.message).toMatch(/Install koffi/);
}, 60_000);
