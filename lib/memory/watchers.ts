/** Who follows GuestMemory's region changes (worker threads that view the same memory), and what they see. */
import type { MemoryChange, MemoryWatcher, ThreadRegion } from './regions.js';

/** The listeners of `GuestMemory.watch`. */
export class Watchers {
  private list: MemoryWatcher[] = [];

  get size(): number {
    return this.list.length;
  }

  /** Adds `w`; the returned function removes it. */
  add(w: MemoryWatcher): () => void {
    this.list = [...this.list, w];
    return () => {
      this.list = this.list.filter((x) => x !== w);
    };
  }

  /**
   * Tells every watcher (all of them, even after one failed); false when one returned false or threw:
   * a watcher's failure must not leave the others behind or escape into the caller's DMA handling.
   */
  notify(change: MemoryChange): boolean {
    let ok = true;
    for (const w of this.list) {
      try {
        if (w(change) === false) ok = false;
      } catch {
        ok = false;
      }
    }
    return ok;
  }
}

/**
 * How another thread can view a region: its SharedArrayBuffer bytes, or its native address; null for
 * growable regions (their buffer is replaced) and bytes over a JS-owned ArrayBuffer without a host address.
 */
export function threadRegionOf(
  start: number,
  size: number,
  bytes: Uint8Array,
  growable: boolean,
  host: number,
): ThreadRegion | null {
  if (growable) return null;
  const b = bytes.buffer;
  if (b instanceof SharedArrayBuffer) return { address: start, size, buffer: b, offset: bytes.byteOffset };
  if (host >= 0) return { address: start, size, host };
  return null;
}
