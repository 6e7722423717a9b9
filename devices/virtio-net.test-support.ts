// Test support for the virtio-net device tests: a device from `createVirtioNetPci`, a MemoryBackend
// peer and the synthetic guest driver, wired the way a VMM wires them (accessors + guest memory only).
import { GuestMemory } from '../lib/guest-memory.js';
import { MemoryBackend, type MemoryBackendOptions } from '../lib/memory-backend.js';
import type { NetOffload } from '../lib/net-backend.js';
import { BumpAllocator } from '../virtio/testing/bump-allocator.js';
import { InterruptCollector } from '../virtio/testing/pci-driver.js';
import { type NetDriverOptions, VirtioNetDriver } from './testing/net-driver.js';
import { createVirtioNetPci, type VirtioNetPci } from './virtio-net-pci.js';
import type { VirtioNetPciOptions } from './virtio-net-options.js';

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

/** A device + backend + (unopened) driver. */
export function makeBench(
  options: Partial<DeviceOptions> = {},
  backendOptions: MemoryBackendOptions = {},
  driverOptions: NetDriverOptions = {},
  memory = new GuestMemory([{ address: 0, bytes: new Uint8Array(MEM_SIZE) }]),
): Bench {
  const backend = new MemoryBackend(backendOptions);
  const irq = driverOptions.interrupts ?? new InterruptCollector();
  const dev = createVirtioNetPci({ memory, backend, interrupts: irq, ...options } as VirtioNetPciOptions);
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
export function rawFrame(length: number, dst = DEV_MAC, src = PEER_MAC, seed = 0, etherType = 0x88b5): Uint8Array {
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
