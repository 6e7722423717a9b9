/**
 * The one place that picks a ring format: the transport calls this when the driver sets queue_enable.
 */
import type { GuestMemory } from '../../lib/memory/guest-memory.js';
import { PackedRing } from './packed-ring.js';
import { SplitRing } from './split-ring.js';
import type { Virtqueue, VirtqueueConfig } from './virtqueue.js';

/**
 * Device side of queue `config.index`: packed (§2.8) when VIRTIO_F_RING_PACKED was negotiated, split
 * (§2.7) otherwise. Throws `VirtqueueError('memory')` when a ring part lies outside guest memory or is
 * misaligned, or when the size is not valid for the format.
 */
export function createVirtqueue(memory: GuestMemory, config: VirtqueueConfig, packed: boolean): Virtqueue {
  const q = packed ? new PackedRing(memory, config) : new SplitRing(memory, config);
  setups.set(q, { config: { ...config }, packed });
  return q;
}

/** What a queue was created from: another thread over the same memory builds the same ring with it. */
export interface VirtqueueSetup {
  config: VirtqueueConfig;
  packed: boolean;
}

const setups = new WeakMap<Virtqueue, VirtqueueSetup>();

/** The config and format `createVirtqueue` built `q` with (null for a ring made otherwise). */
export function virtqueueSetup(q: Virtqueue): VirtqueueSetup | null {
  return setups.get(q) ?? null;
}
