// Test support for the virtio-net device tests: a device from `createVirtioNetPci`, a MemoryBackend
// peer and the synthetic guest driver, wired the way a VMM wires them (accessors + guest memory only).
import { afterEach } from 'vitest';
import { GuestMemory } from '../../lib/memory/guest-memory.js';
import { MemoryBackend, type MemoryBackendOptions } from '../../lib/net/memory-backend.js';
import type { NetOffload } from '../../lib/net/backend.js';
import { BumpAllocator } from '../../virtio/testing/bump-allocator.js';
import { InterruptCollector } from '../../virtio/testing/pci-driver.js';
import { type NetDriverOptions, VirtioNetDriver } from '../testing/net-driver.js';
import type { VirtioNetPciOptions } from './options.js';
import { createVirtioNetPci, type VirtioNetPci } from '../virtio-net-pci.js';

export const DEV_MAC = '52:54:00:12:34:56';
export const PEER_MAC = '52:54:00:ab:cd:ef';
export const MEM_SIZE = 0x8000000;

export interface Bench {
  memory: GuestMemory;
  backend: MemoryBackend;
  dev: VirtioNetPci;
  irq: InterruptCollector;
  driver: VirtioNetDriver;
  /** Frames the guest sent, as the backend saw them. */
  sent: { frame: Uint8Array; queuePair: number; offload: NetOffload | null }[];
}

export type DeviceOptions = Omit<VirtioNetPciOptions, 'memory' | 'backend' | 'interrupts'>;

let defaultReceive: MemoryBackendOptions['receive'];
let workerMode = false;
const open: VirtioNetPci[] = [];

/**
 * The MemoryBackend receive mode of benches that do not choose one (module state: one test file). The
 * `*.copy-rx.test.ts` files rerun receive suites with 'copy', so both device receive paths are covered.
 */
export function setDefaultReceive(mode: MemoryBackendOptions['receive']): void {
  defaultReceive = mode;
}

/**
 * Worker mode (docs/workers.md, module state: one test file): benches get SharedArrayBuffer memory, the
 * device `workers: true` (unless the test chose `workers`) and a MemoryBackend with `settle`, so that a
 * suite written for one thread reruns with its queue pairs on workers (the `*.workers.test.ts` files).
 * Their devices are closed after each test (no thread left behind).
 */
export function setWorkerMode(on: boolean): void {
  if (on && !workerMode)
    afterEach(() => {
      for (const dev of open.splice(0)) dev.close();
    });
  workerMode = on;
}

/** Whether this file's benches run their queue pairs on workers (setWorkerMode). */
export function inWorkerMode(): boolean {
  return workerMode;
}

/** Guest memory for a bench: SharedArrayBuffer-backed in worker mode. */
export function benchMemory(size = MEM_SIZE): GuestMemory {
  const bytes = new Uint8Array(workerMode ? new SharedArrayBuffer(size) : new ArrayBuffer(size));
  return new GuestMemory([{ address: 0, bytes }]);
}

/**
 * Options for a device a test makes itself: in worker mode with `workers` on and a `settle` backend
 * (pass the backend options through `backendOptions` first).
 */
export function workerOptions<T extends object>(options: T): T {
  if (!workerMode || 'workers' in options) return options;
  return { ...options, workers: true };
}

/** MemoryBackend options with `settle` in worker mode. */
export function backendOptions(options: MemoryBackendOptions = {}): MemoryBackendOptions {
  return workerMode ? { settle: true, ...options } : options;
}

/**
 * After a test let this thread's event loop turn: on one thread one `setImmediate` is the device's next
 * turn; with workers, theirs come when they do, so this settles until `done()` holds (at most 5 s).
 */
export async function nextTurn(b: Bench, done: () => boolean): Promise<void> {
  await new Promise((r) => setImmediate(r));
  if (!workerMode) return;
  const pool = (b.dev as unknown as { net: { dataPlane: { settle(): void } | null } }).net.dataPlane;
  for (const end = Date.now() + 5000; Date.now() < end; ) {
    pool?.settle();
    if (done()) return;
    await new Promise((r) => setTimeout(r, 2));
  }
}

/**
 * Runs of a property that makes a device per run: a tenth in worker mode (each run starts threads), at
 * least 10; the one-thread files keep the full count.
 */
export function runs(n: number): number {
  return workerMode ? Math.max(10, Math.ceil(n / 10)) : n;
}

/** Closes a bench's device now in worker mode (a test that makes many: its threads go at once). */
export function release(b: Bench): void {
  if (!workerMode) return;
  const i = open.indexOf(b.dev);
  if (i >= 0) open.splice(i, 1);
  b.dev.close();
}

/** A device a test made itself, closed after the test in worker mode. */
export function track<T extends VirtioNetPci>(dev: T): T {
  if (workerMode) open.push(dev);
  return dev;
}

/** A device + backend + (unopened) driver. */
export function makeBench(
  options: Partial<DeviceOptions> = {},
  backendOpts: MemoryBackendOptions = {},
  driverOptions: NetDriverOptions = {},
  memory = benchMemory(),
): Bench {
  const backend = new MemoryBackend(backendOptions({ receive: defaultReceive, ...backendOpts }));
  const irq = driverOptions.interrupts ?? new InterruptCollector();
  const dev = track(
    createVirtioNetPci({
      memory,
      backend,
      interrupts: irq,
      ...workerOptions(options),
    } as VirtioNetPciOptions),
  );
  const driver = new VirtioNetDriver(dev, memory, {
    allocator: new BumpAllocator(0x100000, MEM_SIZE - 0x1000),
    ...driverOptions,
    interrupts: irq,
  });
  const sent: Bench['sent'] = [];
  backend.onFrame((frame, queuePair, offload) => sent.push({ frame, queuePair, offload }));
  return { memory, backend, dev, irq, driver, sent };
}

/** makeBench + driver.open(). */
export function openBench(
  options: Partial<DeviceOptions> = {},
  backendOptions: MemoryBackendOptions = {},
  driverOptions: NetDriverOptions = {},
): Bench {
  const b = makeBench(options, backendOptions, driverOptions);
  b.driver.open();
  return b;
}

export function macBytes(mac: string): Uint8Array {
  return Uint8Array.from(mac.split(':').map((h) => Number.parseInt(h, 16)));
}

/** An Ethernet frame of `length` bytes to `dst` from `src` with ether type 0x88b5 and a counting payload. */
export function rawFrame(
  length: number,
  dst = DEV_MAC,
  src = PEER_MAC,
  seed = 0,
  etherType = 0x88b5,
): Uint8Array {
  const f = new Uint8Array(length);
  f.set(macBytes(dst), 0);
  f.set(macBytes(src), 6);
  f[12] = etherType >> 8;
  f[13] = etherType & 0xff;
  for (let i = 14; i < length; i++) f[i] = (i * 7 + seed) & 0xff;
  return f;
}

/** `frame` with its destination MAC replaced. */
export function withDst(frame: Uint8Array, dst: string): Uint8Array {
  const f = frame.slice();
  f.set(macBytes(dst), 0);
  return f;
}

/** `frame` with destination and source MACs replaced. */
export function withMacs(frame: Uint8Array, dst: string, src: string): Uint8Array {
  const f = frame.slice();
  f.set(macBytes(dst), 0);
  f.set(macBytes(src), 6);
  return f;
}

export const hexOf = (b: Uint8Array) => Buffer.from(b).toString('hex');

export function offload(o: Partial<NetOffload> = {}): NetOffload {
  return { flags: 0, gsoType: 0, hdrLen: 0, gsoSize: 0, csumStart: 0, csumOffset: 0, ...o };
}

/** An 802.1Q-tagged raw frame with VLAN ID `vid`. */
export function taggedFrame(vid: number, length = 64, dst = DEV_MAC, src = PEER_MAC): Uint8Array {
  const f = rawFrame(length, dst, src, vid, 0x8100);
  f[14] = (vid >> 8) & 0x0f;
  f[15] = vid & 0xff;
  f[16] = 0x88;
  f[17] = 0xb5;
  return f;
}

function sum16(b: Uint8Array, start: number, end: number, init = 0): number {
  let s = init;
  for (let i = start; i < end; i += 2) s += (b[i]! << 8) | (i + 1 < end ? b[i + 1]! : 0);
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s;
}

/** Internet checksum (RFC 1071) written independently of lib/net/checksum.ts. */
export function inetChecksum(b: Uint8Array, start: number, end: number, init = 0): number {
  return ~sum16(b, start, end, init) & 0xffff;
}

export interface Tcp4Spec {
  dst?: string;
  src?: string;
  ipSrc?: number[];
  ipDst?: number[];
  sport?: number;
  dport?: number;
  seq?: number;
  flags?: number;
  id?: number;
  payload: Uint8Array;
  /** 'full' (valid checksums), 'partial' (TCP field = pseudo-header sum, as a guest with NEEDS_CSUM). */
  csum?: 'full' | 'partial';
}

/** Ethernet + IPv4 (20 bytes, DF) + TCP (20 bytes) with checksums, built by hand for the tests. */
export function tcp4Frame(s: Tcp4Spec): Uint8Array {
  const p = s.payload;
  const f = new Uint8Array(54 + p.length);
  f.set(macBytes(s.dst ?? DEV_MAC), 0);
  f.set(macBytes(s.src ?? PEER_MAC), 6);
  f[12] = 0x08;
  const ipSrc = s.ipSrc ?? [10, 0, 0, 1];
  const ipDst = s.ipDst ?? [10, 0, 0, 2];
  const ip = 14;
  const ipLen = 40 + p.length;
  f.set(
    [0x45, 0, ipLen >> 8, ipLen & 0xff, (s.id ?? 0x1000) >> 8, (s.id ?? 0x1000) & 0xff, 0x40, 0, 64, 6],
    ip,
  );
  f.set(ipSrc, ip + 12);
  f.set(ipDst, ip + 16);
  const ipc = inetChecksum(f, ip, ip + 20);
  f[ip + 10] = ipc >> 8;
  f[ip + 11] = ipc & 0xff;
  const t = 34;
  const dv = new DataView(f.buffer);
  dv.setUint16(t, s.sport ?? 40000);
  dv.setUint16(t + 2, s.dport ?? 80);
  dv.setUint32(t + 4, (s.seq ?? 1000) >>> 0);
  dv.setUint32(t + 8, 7);
  f[t + 12] = 0x50;
  f[t + 13] = s.flags ?? 0x18;
  dv.setUint16(t + 14, 0xffff);
  f.set(p, t + 20);
  const tcpLen = 20 + p.length;
  let pseudo = sum16(Uint8Array.from([...ipSrc, ...ipDst]), 0, 8);
  pseudo = sum16(Uint8Array.of(0, 6, tcpLen >> 8, tcpLen & 0xff), 0, 4, pseudo);
  const c = s.csum === 'partial' ? pseudo : inetChecksum(f, t, t + tcpLen, pseudo);
  dv.setUint16(t + 16, c);
  return f;
}

/** The TSO segments Linux would produce for `s` at `mss` (ID +i, seq +i*mss, PSH/FIN last only, CWR first only). */
export function tsoSegments(s: Tcp4Spec, mss: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  const n = Math.ceil(s.payload.length / mss);
  for (let i = 0; i < n; i++) {
    const last = i === n - 1;
    let flags = last ? (s.flags ?? 0x18) : (s.flags ?? 0x18) & ~0x09;
    if (i > 0) flags &= ~0x80; // CWR only on the first segment
    out.push(
      tcp4Frame({
        ...s,
        csum: 'full',
        id: ((s.id ?? 0x1000) + i) & 0xffff,
        seq: ((s.seq ?? 1000) + i * mss) >>> 0,
        flags,
        payload: s.payload.subarray(i * mss, (i + 1) * mss),
      }),
    );
  }
  return out;
}

export function pattern(n: number, seed = 1): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed * 17 + (i >> 8)) & 0xff;
  return b;
}

/** Ethernet + IPv4 (20 bytes, DF clear) + UDP with the checksum full, partial (pseudo-header) or 0. */
export function udp4Frame(s: {
  payload: Uint8Array;
  dst?: string;
  src?: string;
  sport?: number;
  dport?: number;
  id?: number;
  csum?: 'full' | 'partial';
}): Uint8Array {
  const p = s.payload;
  const f = new Uint8Array(42 + p.length);
  f.set(macBytes(s.dst ?? DEV_MAC), 0);
  f.set(macBytes(s.src ?? PEER_MAC), 6);
  f[12] = 0x08;
  const ipLen = 28 + p.length;
  const id = s.id ?? 0x4242;
  f.set(
    [0x45, 0, ipLen >> 8, ipLen & 0xff, id >> 8, id & 0xff, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2],
    14,
  );
  const ipc = inetChecksum(f, 14, 34);
  f[24] = ipc >> 8;
  f[25] = ipc & 0xff;
  const dv = new DataView(f.buffer);
  dv.setUint16(34, s.sport ?? 5000);
  dv.setUint16(36, s.dport ?? 6000);
  dv.setUint16(38, 8 + p.length);
  f.set(p, 42);
  const pseudo = udpPseudo(f.subarray(26, 34), 8 + p.length);
  let c = s.csum === 'partial' ? pseudo : inetChecksum(f, 34, f.length, pseudo);
  if (s.csum !== 'partial' && c === 0) c = 0xffff;
  dv.setUint16(40, c);
  return f;
}

function udpPseudo(addrs: Uint8Array, len: number): number {
  return sum16(Uint8Array.of(0, 17, len >> 8, len & 0xff), 0, 4, sum16(addrs, 0, 8));
}

/** Whether the UDP checksum of an IPv4 UDP datagram (L4 at 34, `l4` bytes long) verifies. */
export function udp4ChecksumOk(datagram: Uint8Array, addrs: Uint8Array): boolean {
  return inetChecksum(datagram, 0, datagram.length, udpPseudo(addrs, datagram.length)) === 0;
}
