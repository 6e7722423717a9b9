/**
 * Register values and per-virtqueue registers of the virtio transport (VIRTIO 1.3 §2.1 status,
 * §4.1.4.3 queue configuration, §4.1.4.5 ISR): what `TransportCore` keeps for each queue_select value,
 * how a queue's ring is created from them, and their JSON form in snapshots.
 */
import type { GuestMemory } from '../../lib/memory/guest-memory.js';
import { hasFeature, VIRTIO_F_EVENT_IDX, VIRTIO_F_IN_ORDER, VIRTIO_F_RING_PACKED } from '../features.js';
import { createVirtqueue } from '../queue/create-virtqueue.js';
import type { Virtqueue, VirtqueueState } from '../queue/virtqueue.js';

/** Device status bits (§2.1). */
export const VIRTIO_CONFIG_S_ACKNOWLEDGE = 1;
export const VIRTIO_CONFIG_S_DRIVER = 2;
export const VIRTIO_CONFIG_S_DRIVER_OK = 4;
export const VIRTIO_CONFIG_S_FEATURES_OK = 8;
export const VIRTIO_CONFIG_S_NEEDS_RESET = 0x40;
export const VIRTIO_CONFIG_S_FAILED = 0x80;

/** "No MSI-X vector" (§4.1.5.1.2). */
export const VIRTIO_MSI_NO_VECTOR = 0xffff;
/** ISR bits (§4.1.4.5). */
export const VIRTIO_ISR_QUEUE = 1;
export const VIRTIO_ISR_CONFIG = 2;
/** QEMU's VIRTIO_QUEUE_MAX: queue_select values at or above it are ignored. */
export const VIRTIO_QUEUE_MAX = 1024;

/** One virtqueue's transport registers (what queue_select exposes). */
export interface QueueRegisters {
  /** Current queue_size (the driver may lower it); `maxSize` after reset. */
  size: number;
  maxSize: number;
  vector: number;
  enabled: boolean;
  /** 64-bit addresses as 32-bit halves: the driver writes them independently. */
  descLo: number;
  descHi: number;
  driverLo: number;
  driverHi: number;
  deviceLo: number;
  deviceHi: number;
  /** The device-side ring, created when the driver enables the queue. */
  vq: Virtqueue | null;
}

/** One queue's registers and ring indices in a snapshot. */
export interface QueueSnapshot {
  size: number;
  vector: number;
  enabled: boolean;
  desc: [number, number];
  driver: [number, number];
  device: [number, number];
  ring: VirtqueueState | null;
}

export function isPow2(n: number): boolean {
  return n > 0 && (n & (n - 1)) === 0;
}

const TWO_32 = 0x1_0000_0000;

export function address(lo: number, hi: number): number {
  // Guest addresses past 2^53 cannot be named by a number; they are outside any guest memory anyway.
  return hi >= 0x200000 ? Number.NaN : hi * TWO_32 + lo;
}

/** A queue's registers at reset: queue_size = `max` (0: no such queue), no vector, disabled. */
export function freshQueueRegisters(max: number): QueueRegisters {
  return {
    size: max,
    maxSize: max,
    vector: VIRTIO_MSI_NO_VECTOR,
    enabled: false,
    descLo: 0,
    descHi: 0,
    driverLo: 0,
    driverHi: 0,
    deviceLo: 0,
    deviceHi: 0,
    vq: null,
  };
}

/** The device-side ring on queue `index`'s registers, in the format the driver features choose. */
export function createRing(
  memory: GuestMemory,
  q: QueueRegisters,
  index: number,
  features: bigint,
): Virtqueue {
  return createVirtqueue(
    memory,
    {
      index,
      size: q.size,
      descAddr: address(q.descLo, q.descHi),
      driverAddr: address(q.driverLo, q.driverHi),
      deviceAddr: address(q.deviceLo, q.deviceHi),
      eventIdx: hasFeature(features, VIRTIO_F_EVENT_IDX),
      inOrder: hasFeature(features, VIRTIO_F_IN_ORDER),
    },
    hasFeature(features, VIRTIO_F_RING_PACKED),
  );
}

export function queueSnapshot(q: QueueRegisters): QueueSnapshot {
  return {
    size: q.size,
    vector: q.vector,
    enabled: q.enabled,
    desc: [q.descLo, q.descHi],
    driver: [q.driverLo, q.driverHi],
    device: [q.deviceLo, q.deviceHi],
    ring: q.vq ? q.vq.state() : null,
  };
}

/** Put a `queueSnapshot` back into `q`; an enabled queue gets its ring re-created with the saved indices. */
export function restoreQueueRegisters(
  memory: GuestMemory,
  q: QueueRegisters,
  index: number,
  src: QueueSnapshot,
  features: bigint,
): void {
  q.size = src.size;
  q.vector = src.vector;
  [q.descLo, q.descHi] = src.desc;
  [q.driverLo, q.driverHi] = src.driver;
  [q.deviceLo, q.deviceHi] = src.device;
  if (!src.enabled) return;
  q.enabled = true;
  q.vq = createRing(memory, q, index, features);
  if (src.ring) q.vq.restore(src.ring);
}
