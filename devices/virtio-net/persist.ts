/**
 * The virtio-net device's part of a snapshot (migration, save/restore): JSON-serialisable, the transport
 * keeps the queue state. Restoring writes the fields back; the device then tells its backend.
 */
import type { RssSnapshot, RssState } from './rss.js';
import type { RxFilter, RxFilterState } from './rx-filter.js';

/** JSON-serialisable device state (the transport keeps queue state). */
export interface NetSnapshot {
  mac: number[];
  status: number;
  linkUp: boolean;
  curQueuePairs: number;
  guestOffloads: string;
  rxFilter: RxFilterState;
  rss: RssSnapshot;
}

/** The device state a snapshot holds. */
export interface NetPersistentState {
  readonly mac: Uint8Array;
  readonly maxQueuePairs: number;
  status: number;
  linkUp: boolean;
  curQueuePairs: number;
  guestOffloads: bigint;
  readonly rxFilter: RxFilter;
  readonly rss: RssState;
}

export function snapshotNet(n: NetPersistentState): NetSnapshot {
  return {
    mac: Array.from(n.mac),
    status: n.status,
    linkUp: n.linkUp,
    curQueuePairs: n.curQueuePairs,
    guestOffloads: n.guestOffloads.toString(),
    rxFilter: n.rxFilter.state(),
    rss: n.rss.snapshot(),
  };
}

/** Writes a `NetSnapshot` back (queue pairs clamped to 1..maxQueuePairs). */
export function restoreNet(n: NetPersistentState, state: unknown): void {
  const s = state as NetSnapshot;
  n.mac.set(s.mac);
  n.rxFilter.mac.set(n.mac);
  n.status = s.status;
  n.linkUp = s.linkUp;
  n.curQueuePairs = Math.min(Math.max(1, s.curQueuePairs), n.maxQueuePairs);
  n.guestOffloads = BigInt(s.guestOffloads);
  n.rxFilter.restore(s.rxFilter);
  n.rss.restore(s.rss);
}
