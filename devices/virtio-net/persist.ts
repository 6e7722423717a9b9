/**
 * The virtio-net device's part of a snapshot (migration, save/restore): JSON-serialisable, the transport
 * keeps the queue state. Restoring writes the fields back; the device then tells its backend.
 */
import { z } from 'zod';
import { MAX_FRAME, type NetOffload } from '../../lib/net/backend.js';
import type { Backlog } from './backlog.js';
import type { Coalescer } from './coalesce.js';
import type { FlowSteering } from './flow-steering.js';

/** Slots of the flow table (FlowSteering's default size). */
const FLOW_SLOTS = 4096;

import { HASH_TUNNEL_SUPPORTED_TYPES } from '../../lib/net/tunnel-inner.js';
import { RSS_MAX_KEY_SIZE, RSS_MAX_TABLE_LEN, type RssSnapshot, type RssState } from './rss.js';
import { RSS_MAX_CONTEXTS, type RssContextSnapshot, type RssContexts } from './rss-context.js';
import { MAC_TABLE_ENTRIES, type RxFilter, type RxFilterState } from './rx-filter.js';
import type { NetDeviceStats, QueueStats } from './stats.js';

/** One frame waiting in a pair's backlog: bytes as base64, the backend's offload metadata, the hash. */
export interface BacklogFrameSnapshot {
  frame: string;
  offload: NetOffload | null;
  hash: number;
  report: number;
}

/** Counters in a snapshot: per pair, and device-wide. */
export interface NetStatsSnapshot {
  /**
   * Counters only: the gauge rxBacklogDepth follows from the saved backlog; rxCrossingDepth is 0 when the
   * workers are stopped for a snapshot (what crossed went to the backlogs).
   */
  queues: Record<Exclude<keyof QueueStats, 'rxBacklogDepth' | 'rxCrossingDepth'>, number>[];
  device: NetDeviceStats;
}

/**
 * Device part type of virtio-net-ts's state part (VIRTIO 1.4 device parts, docs/admin-queue.md): the
 * transport snapshot (ring positions, registers) and this device's state, as JSON. 1.4 defines only
 * VIRTIO_NET_DEV_PART_CVQ_CFG_PART (0x200) for virtio-net and no part for ring positions or queued
 * frames; 0x5ff is the last of the net range 1.4 leaves reserved.
 */
export const NET_STATE_PART = 0x05ff;

/** JSON-serialisable device state (the transport keeps queue state). */
export interface NetSnapshot {
  mac: number[];
  status: number;
  linkUp: boolean;
  curQueuePairs: number;
  guestOffloads: string;
  rxFilter: RxFilterState;
  rss: RssSnapshot;
  /** Frames each pair held for lack of receive buffers (absent in 'virtio-net-ts/1' states: none). */
  backlog?: BacklogFrameSnapshot[][];
  /** Counters (absent in 'virtio-net-ts/1' states: the target keeps its own). */
  stats?: NetStatsSnapshot;
  /** Backend queues held back for the backlogs (absent: all of them while any backlog holds frames). */
  rxPaused?: boolean[];
  /** Pairs with a delivery attempt scheduled from the event loop (absent: every pair with a backlog). */
  rxRecheck?: boolean[];
  /** Automatic steering's live flows: [slot, hash, pair, age ms] (absent: none). */
  flows?: [number, number, number, number][];
  /** Notification coalescing (absent in states from before NOTF_COAL: all 0, nothing held). */
  coalesce?: CoalesceSnapshot;
  /** VIRTIO 1.4 enabled_tunnel_types (absent in older states: 0, inner header hash off). */
  hashTunnel?: number;
  /** VIRTIO 1.4 RSS contexts (absent in older states: none). */
  rssContexts?: RssContextSnapshot[];
}

/** RX_SET / TX_SET parameters and, per data virtqueue, [max_packets, max_usecs, notification held]. */
export interface CoalesceSnapshot {
  rx: [number, number];
  tx: [number, number];
  queues: [number, number, boolean][];
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
  readonly rssContexts: RssContexts;
  readonly backlogs: readonly Backlog[];
  readonly queueStats: readonly QueueStats[];
  readonly deviceStats: NetDeviceStats;
  /** Backend queues paused for the backlogs, by backend queue. */
  readonly rxPaused: readonly boolean[];
  /** Per pair: a delivery attempt is scheduled from the event loop. */
  readonly rxRecheck: readonly boolean[];
  readonly flows: FlowSteering;
  coalesceRx: [number, number];
  coalesceTx: [number, number];
  readonly coalescers: readonly Coalescer[];
}

export function snapshotNet(n: NetPersistentState): NetSnapshot {
  const backlog = n.backlogs.map((b) => {
    const out: BacklogFrameSnapshot[] = [];
    for (let i = 0; i < b.count; i++) {
      const e = b.at(i);
      out.push({
        frame: Buffer.from(e.frame).toString('base64'),
        offload: e.offload,
        hash: e.hash,
        report: e.report,
      });
    }
    return out;
  });
  return {
    mac: Array.from(n.mac),
    status: n.status,
    linkUp: n.linkUp,
    curQueuePairs: n.curQueuePairs,
    guestOffloads: n.guestOffloads.toString(),
    rxFilter: n.rxFilter.state(),
    rss: n.rss.snapshot(),
    hashTunnel: n.rss.tunnel.types,
    rssContexts: n.rssContexts.snapshot(),
    backlog,
    rxPaused: Array.from(n.rxPaused, (p) => p === true),
    rxRecheck: [...n.rxRecheck],
    flows: n.flows.snapshot(),
    coalesce: {
      rx: [...n.coalesceRx],
      tx: [...n.coalesceTx],
      queues: n.coalescers.map((c) => [c.maxPackets, c.maxUsecs, c.holding]),
    },
    stats: {
      queues: n.queueStats.map(({ rxBacklogDepth: _, rxCrossingDepth: __, ...q }) => q),
      device: { ...n.deviceStats },
    },
  };
}

const byte = z.number().int().min(0).max(255);
const u32 = z.number().int().min(0).max(0xffff_ffff);
const macString = z.string().regex(/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/i);
const u16 = z.number().int().min(0).max(0xffff);
const counter = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
/** Base64 of 14..MAX_FRAME bytes (what `Receiver.receive` accepts). */
const frameBase64 = z
  .string()
  .max(Math.ceil(MAX_FRAME / 3) * 4, `expected at most ${MAX_FRAME} bytes`)
  .regex(/^[A-Za-z0-9+/]*={0,2}$/, 'expected base64')
  .refine((f) => {
    const n = Buffer.from(f, 'base64').length;
    return n >= 14 && n <= MAX_FRAME;
  }, `expected a frame of 14..${MAX_FRAME} bytes`);
const offloadSchema = z
  .object({
    flags: z.number().int().min(0).max(0xff),
    gsoType: z.number().int().min(0).max(0xff),
    hdrLen: u16,
    gsoSize: u16,
    csumStart: u16,
    csumOffset: u16,
    // A tunnel GSO frame's offsets (VIRTIO 1.4), when the backend delivered 24-byte headers.
    outerThOffset: u16.optional(),
    innerNhOffset: u16.optional(),
  })
  .strict();
const queueStatsSchema = z
  .object({
    rxPackets: counter,
    rxBytes: counter,
    rxDropped: counter,
    rxFiltered: counter,
    rxBacklogged: counter,
    rxInterrupts: counter,
    txPackets: counter,
    txBytes: counter,
    txDropped: counter,
    txInterrupts: counter,
    txKicks: counter,
    // Absent in states from before DEVICE_STATS.
    rxKicks: counter.optional(),
    rxDropOverruns: counter.optional(),
    txDropMalformed: counter.optional(),
    rxCsumValid: counter.optional(),
    rxNeedsCsum: counter.optional(),
    rxCsumNone: counter.optional(),
    rxGsoPackets: counter.optional(),
    rxGsoBytes: counter.optional(),
    txCsumNone: counter.optional(),
    txNeedsCsum: counter.optional(),
    txGsoPackets: counter.optional(),
    txGsoBytes: counter.optional(),
    txGsoSegments: counter.optional(),
    txGsoSegmentsBytes: counter.optional(),
    txGsoPacketsNoseg: counter.optional(),
    txGsoBytesNoseg: counter.optional(),
    rxTunnelGsoPackets: counter.optional(),
    txTunnelGsoPackets: counter.optional(),
    // Absent in states from before IN_ORDER batching.
    rxUsedFolded: counter.optional(),
    txUsedFolded: counter.optional(),
  })
  .strict();

/**
 * The shape and bounds a snapshot must have before any of it is written: a state is as untrusted as a
 * migration stream (QEMU checks its loads since CVE-2013-4151 and CVE-2024-6505). Queue numbers must name
 * pairs this device has (QEMU fails a load whose curr_queues exceeds max_queues), and the key and table
 * fit what RSS_CONFIG accepts.
 */
function snapshotSchema(maxQueuePairs: number, backlogCapacity: number) {
  const queue = z
    .number()
    .int()
    .min(0)
    .max(maxQueuePairs - 1, `expected a queue pair below ${maxQueuePairs}`);
  const rssSchema = z.object({
    enabled: z.boolean(),
    redirect: z.boolean(),
    hashTypes: u32,
    table: z
      .array(queue)
      .max(RSS_MAX_TABLE_LEN)
      .refine((t) => (t.length & (t.length - 1)) === 0, 'expected a power-of-two length'),
    unclassified: queue,
    key: z.array(byte).max(RSS_MAX_KEY_SIZE),
  });
  return z.object({
    mac: z.array(byte).length(6),
    status: z.number().int().min(0).max(0xffff),
    linkUp: z.boolean(),
    curQueuePairs: z
      .number()
      .int()
      .min(1, `expected 1..${maxQueuePairs}`)
      .max(maxQueuePairs, `expected 1..${maxQueuePairs}`),
    guestOffloads: z.string().regex(/^\d{1,39}$/, 'expected a decimal feature mask'),
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
    rss: rssSchema,
    hashTunnel: u32
      .refine((t) => (t & ~HASH_TUNNEL_SUPPORTED_TYPES) === 0, 'expected supported tunnel types')
      .optional(),
    rssContexts: z
      .array(
        z
          .object({
            id: z.number().int().min(1).max(RSS_MAX_CONTEXTS),
            rss: rssSchema.refine((r) => r.enabled && r.redirect, 'expected a configured context'),
          })
          .strict(),
      )
      .max(RSS_MAX_CONTEXTS)
      .refine((l) => new Set(l.map((c) => c.id)).size === l.length, 'expected distinct context ids')
      .optional(),
    backlog: z
      .array(
        z
          .array(
            z
              .object({ frame: frameBase64, offload: offloadSchema.nullable(), hash: u32, report: u16 })
              .strict(),
          )
          .max(backlogCapacity, `expected at most ${backlogCapacity} frames (the backlog's bound)`),
      )
      .length(maxQueuePairs, `expected one backlog per queue pair (${maxQueuePairs})`)
      .optional(),
    stats: z
      .object({
        queues: z.array(queueStatsSchema).length(maxQueuePairs, `expected ${maxQueuePairs} queue pairs`),
        device: z
          .object({
            rxDroppedNotReady: counter,
            ctrlCommands: counter,
            ctrlErrors: counter,
            guestErrors: counter,
          })
          .strict(),
      })
      .optional(),
    rxPaused: z.array(z.boolean()).max(1024).optional(),
    rxRecheck: z.array(z.boolean()).length(maxQueuePairs).optional(),
    flows: z
      .array(
        z.tuple([
          z
            .number()
            .int()
            .min(0)
            .max(FLOW_SLOTS - 1),
          u32,
          queue,
          z.number().min(0).max(1e9),
        ]),
      )
      .max(FLOW_SLOTS)
      .optional(),
    coalesce: z
      .object({
        rx: z.tuple([u32, u32]),
        tx: z.tuple([u32, u32]),
        queues: z
          .array(z.tuple([u32, u32, z.boolean()]))
          .length(2 * maxQueuePairs, `expected ${2 * maxQueuePairs} data virtqueues`),
      })
      .strict()
      .optional(),
  });
}

/** `state` as a `NetSnapshot` for a device of `maxQueuePairs`, or a TypeError naming the bad field. */
export function parseNetSnapshot(
  state: unknown,
  maxQueuePairs: number,
  backlogCapacity: number,
): NetSnapshot {
  const r = snapshotSchema(maxQueuePairs, backlogCapacity).safeParse(state);
  if (r.success) return r.data as NetSnapshot;
  const issue = r.error.issues[0]!;
  throw new TypeError(`virtio-net snapshot: field "${issue.path.join('.')}": ${issue.message}`);
}

/**
 * Writes a `NetSnapshot` back. A malformed or out-of-bounds state throws a TypeError naming the field and
 * leaves the device as it was.
 */
export function restoreNet(n: NetPersistentState, state: unknown): void {
  const s = parseNetSnapshot(state, n.maxQueuePairs, n.backlogs[0]?.capacity ?? 0);
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
  n.rss.tunnel.types = s.hashTunnel ?? 0;
  n.rssContexts.restore(s.rssContexts ?? []);
  if (s.flows) n.flows.restore(s.flows);
  if (s.backlog) {
    for (const [pair, frames] of s.backlog.entries()) {
      const b = n.backlogs[pair]!;
      b.clear();
      for (const f of frames) b.push(Buffer.from(f.frame, 'base64'), f.offload, f.hash, f.report);
    }
  }
  if (s.stats) {
    for (const [pair, q] of s.stats.queues.entries()) Object.assign(n.queueStats[pair]!, q);
    Object.assign(n.deviceStats, s.stats.device);
  }
  if (s.coalesce) {
    n.coalesceRx = [...s.coalesce.rx];
    n.coalesceTx = [...s.coalesce.tx];
    for (const [i, q] of s.coalesce.queues.entries()) n.coalescers[i]!.reset(q[0], q[1]);
  } else {
    n.coalesceRx = [0, 0];
    n.coalesceTx = [0, 0];
    for (const c of n.coalescers) c.reset();
  }
  for (const [pair, q] of n.queueStats.entries()) q.rxBacklogDepth = n.backlogs[pair]?.count ?? 0;
}
