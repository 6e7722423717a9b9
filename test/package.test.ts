/**
 * The package as a VMM project imports it: built ESM through the `exports` map (`virtio-net-ts` and
 * `virtio-net-ts/testing`), in a separate Node process, with no TypeScript tooling involved.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';

const root = resolve(import.meta.dirname, '..');
let dir = '';

beforeAll(() => {
  // `npm ci` builds dist/ through the prepare script; build it here too when running from a bare checkout.
  if (!existsSync(join(root, 'dist/index.js')) || !existsSync(join(root, 'dist/devices/testing/index.js'))) {
    execFileSync('npx', ['tsc', '-p', 'tsconfig.build.json'], { cwd: root, stdio: 'inherit' });
  }
  dir = mkdtempSync(join(tmpdir(), 'vnt-consumer-'));
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ type: 'module' }));
  mkdirSync(join(dir, 'node_modules'));
  symlinkSync(root, join(dir, 'node_modules', 'virtio-net-ts'));
}, 120_000);

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

it('works as an ESM dependency: create a device, bring it up with the testing kit, exchange a frame', () => {
  writeFileSync(
    join(dir, 'vmm.mjs'),
    `
import { createVirtioNetPci, GuestMemory, MemoryBackend, parseQemuDevice, OptionsError } from 'virtio-net-ts';
import { VirtioNetDriver, InterruptCollector, frames } from 'virtio-net-ts/testing';
const memory = new GuestMemory([{ address: 0, bytes: new Uint8Array(64 << 20) }]);
const backend = new MemoryBackend();
const irq = new InterruptCollector();
const nic = createVirtioNetPci({ memory, backend, interrupts: irq, ...parseQemuDevice('virtio-net-pci,mac=52:54:00:aa:bb:cc') });
const guest = new VirtioNetDriver(nic, memory, { interrupts: irq });
guest.open();
const peer = new frames.PeerResponder('02:00:00:00:00:02', '10.0.0.2');
backend.onFrame((f, q) => { const r = peer.handle(f); if (r) backend.inject(r, q); });
guest.send(frames.arp(1, guest.mac(), '10.0.0.1', '00:00:00:00:00:00', '10.0.0.2'));
let bad = '';
try { createVirtioNetPci({ memory, backend, interrupts: irq, mq: 'yes' }); } catch (e) { bad = e instanceof OptionsError ? e.message : 'wrong type'; }
console.log(JSON.stringify({ mac: guest.mac(), received: guest.receive(0).length, tx: nic.stats().txPackets, bad }));
`,
  );
  const out = JSON.parse(execFileSync('node', ['vmm.mjs'], { cwd: dir, encoding: 'utf8' }));
  expect(out.mac).toBe('52:54:00:aa:bb:cc');
  expect(out.received).toBe(1);
  expect(out.tx).toBe(1);
  expect(out.bad).toMatch(/option "mq"/);
}, 60_000);
