/**
 * A queue-pair worker's guest memory (docs/workers.md): its own `GuestMemory` over the regions the main
 * thread's memory has, each viewed here — a SharedArrayBuffer's bytes, or a native mmap (a vfio-user DMA
 * mapping, lib/vfio-user/dma.ts) viewed with koffi at the host address the main thread passed — and kept
 * in step by `memory` requests (DMA_MAP / DMA_UNMAP reach the worker before the client's reply).
 */
import { libc } from '../../../lib/host/libc.js';
import { GuestMemory } from '../../../lib/memory/guest-memory.js';
import type { ThreadRegion } from '../../../lib/memory/regions.js';

/**
 * A view of `r` on this thread. A native region is viewed without a copy; the main thread keeps the
 * mmap (or, after an unmap, its placeholder) mapped until this thread confirmed it dropped the view.
 */
export function viewRegion(r: ThreadRegion): Uint8Array {
  if ('buffer' in r) return new Uint8Array(r.buffer, r.offset, r.size);
  if (!Number.isSafeInteger(r.host) || r.host <= 0 || !Number.isSafeInteger(r.size) || r.size < 0) {
    throw new RangeError(`region host address ${r.host} / size ${r.size} invalid`);
  }
  return libc().viewAt(r.host, r.size);
}

/** The worker's copy of guest memory and the changes the main thread sends it. */
export class WorkerMemory {
  readonly memory: GuestMemory;

  constructor(regions: ThreadRegion[]) {
    this.memory = new GuestMemory(regions.map((r) => ({ address: r.address, bytes: viewRegion(r) })));
  }

  /**
   * Removes the regions starting at `remove`, then adds `add`. Removals first: a client may unmap and map
   * the same range again. After it returns, this memory holds no view of a removed region (the caller
   * drops the views its paths cached). Throws on a region it cannot add (overlap, bad address).
   */
  apply(add: readonly ThreadRegion[], remove: readonly number[]): void {
    for (const a of remove) this.memory.removeRegion(a);
    for (const r of add) this.memory.addRegion({ address: r.address, bytes: viewRegion(r) });
  }
}
