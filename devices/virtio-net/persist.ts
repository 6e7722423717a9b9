/**
 * The virtio-net device's part of a snapshot (migration, save/restore): JSON-serialisable, the transport
 * keeps the queue state. Restoring writes the fields back; the device then tells its backend.
 */
import { z } from 'zod';
import { RSS_MAX_KEY_SIZE, RSS_MAX_TABLE_LEN, type RssSnapshot, type RssState } from './rss.js';
import { MAC_TABLE_ENTRIES, type RxFilter, type RxFilterState } from './rx-filter.js';

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

const byte = z.number().int().min(0).max(255);
const u32 = z.number().int().min(0).max(0xffff_ffff);
const macString = z.string().regex(/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/i);

/**
 * The shape and bounds a snapshot must have before any of it is written: a state is as untrusted as a
 * migration stream (QEMU checks its loads since CVE-2013-4151 and CVE-2024-6505). Queue numbers must name
 * pairs this device has (QEMU fails a load whose curr_queues exceeds max_queues), and the key and table
 * fit what RSS_CONFIG accepts.
 */
function snapshotSchema(maxQueuePairs: number) {
  const queue = z
    .number()
    .int()
    .min(0)
    .max(maxQueuePairs - 1, `expected a queue pair below ${maxQueuePairs}`);
  return z.object({
    mac: z.array(byte).length(6),
    status: z.number().int().min(0).max(0xffff),
    linkUp: z.boolean(),
    curQueuePairs: z
      .number()
      .int()
      .min(1, `expected 1..${maxQueuePairs}`)
      .max(maxQueuePairs, `expected 1..${maxQueuePairs}`),
    guestOffloads: z.string().regex(/^\d{1,20}$/, 'expected a decimal feature mask'),
    rxFilter: z.object({
      promisc: z.boolean(),
      allmulti: z.boolean(),
      alluni: z.boolean(),
      nomulti: z.boolean(),
      nouni: z.boolean(),
      nobcast: z.boolean(),
      unicast: z.array(macString).max(65_536),
      multicast: z.array(macString).max(65_536),
      uniOverflow: z.boolean(),
      multiOverflow: z.boolean(),
      vlans: z.array(u32).length(128),
    }),
    rss: z.object({
      enabled: z.boolean(),
      redirect: z.boolean(),
      hashTypes: u32,
      table: z
        .array(queue)
        .max(RSS_MAX_TABLE_LEN)
        .refine((t) => (t.length & (t.length - 1)) === 0, 'expected a power-of-two length'),
      unclassified: queue,
      key: z.array(byte).max(RSS_MAX_KEY_SIZE),
    }),
  });
}

/** `state` as a `NetSnapshot` for a device of `maxQueuePairs`, or a TypeError naming the bad field. */
export function parseNetSnapshot(state: unknown, maxQueuePairs: number): NetSnapshot {
  const r = snapshotSchema(maxQueuePairs).safeParse(state);
  if (r.success) return r.data as NetSnapshot;
  const issue = r.error.issues[0]!;
  throw new TypeError(`virtio-net snapshot: field "${issue.path.join('.')}": ${issue.message}`);
}

/**
 * Writes a `NetSnapshot` back. A malformed or out-of-bounds state throws a TypeError naming the field and
 * leaves the device as it was.
 */
export function restoreNet(n: NetPersistentState, state: unknown): void {
  const s = parseNetSnapshot(state, n.maxQueuePairs);
  n.mac.set(s.mac);
  n.rxFilter.mac.set(n.mac);
  n.status = s.status;
  n.linkUp = s.linkUp;
  n.curQueuePairs = s.curQueuePairs;
  n.guestOffloads = BigInt(s.guestOffloads);
  const f = s.rxFilter;
  // More entries than the table holds: QEMU's load keeps none and sets both overflow flags.
  if (f.unicast.length + f.multicast.length > MAC_TABLE_ENTRIES)
    n.rxFilter.restore({ ...f, unicast: [], multicast: [], uniOverflow: true, multiOverflow: true });
  else n.rxFilter.restore(f);
  n.rss.restore(s.rss);
}
