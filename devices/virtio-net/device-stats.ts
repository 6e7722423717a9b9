/**
 * VIRTIO_NET_CTRL_STATS (VIRTIO 1.3 "Device Statistics", VIRTIO_NET_F_DEVICE_STATS): the capability
 * mask STATS_QUERY returns and the STATS_GET codec, from the device's own counters (stats.ts). Each reply
 * is `struct virtio_net_stats_reply_hdr` (u8 type, u8 reserved, le16 vq_index, le16 reserved1, le16
 * size) followed by le64 counters, which wrap at 2^64 (ours are below 2^53).
 */
import { has, NetF } from './features.js';
import type { NetDeviceStats, QueueStats } from './stats.js';

/** VIRTIO_NET_STATS_TYPE_* bits of supported_stats_types / types_bitmap (the reply type is the bit number). */
export const StatsType = {
  RX_BASIC: 0,
  RX_CSUM: 1,
  RX_GSO: 2,
  RX_SPEED: 3,
  TX_BASIC: 16,
  TX_CSUM: 17,
  TX_GSO: 18,
  TX_SPEED: 19,
  CVQ: 32,
} as const;

/** Reply sizes in bytes by type, header included (8-byte header + 8 per counter), every type 1.3 defines. */
export const STATS_REPLY_SIZE: Readonly<Record<number, number>> = {
  [StatsType.CVQ]: 8 + 2 * 8,
  [StatsType.RX_BASIC]: 8 + 6 * 8,
  [StatsType.RX_CSUM]: 8 + 4 * 8,
  [StatsType.RX_GSO]: 8 + 4 * 8,
  [StatsType.RX_SPEED]: 8 + 2 * 8,
  [StatsType.TX_BASIC]: 8 + 6 * 8,
  [StatsType.TX_CSUM]: 8 + 2 * 8,
  [StatsType.TX_GSO]: 8 + 6 * 8,
  [StatsType.TX_SPEED]: 8 + 2 * 8,
};

/** One `struct virtio_net_ctrl_queue_stats` entry: le16 vq_index, le16 reserved[3], le64 types_bitmap. */
const REQUEST_ENTRY = 16;

const typeBit = (t: number) => 1n << BigInt(t);

/**
 * The types this device supports for the negotiated features: the control queue's and both basic
 * groups always; a checksum or GSO group when the feature the spec ties it to is negotiated (RX_CSUM:
 * GUEST_CSUM, TX_CSUM: CSUM, RX_GSO: GUEST_TSO4/6, TX_GSO: HOST_TSO4/6 or HOST_USO). Never the speed
 * groups: they count drops for exceeding `speed`, which this device never makes.
 */
export function statsCapabilities(f: bigint): bigint {
  let caps = typeBit(StatsType.CVQ) | typeBit(StatsType.RX_BASIC) | typeBit(StatsType.TX_BASIC);
  if (has(f, NetF.GUEST_CSUM)) caps |= typeBit(StatsType.RX_CSUM);
  if (has(f, NetF.CSUM)) caps |= typeBit(StatsType.TX_CSUM);
  if (has(f, NetF.GUEST_TSO4) || has(f, NetF.GUEST_TSO6)) caps |= typeBit(StatsType.RX_GSO);
  if (has(f, NetF.HOST_TSO4) || has(f, NetF.HOST_TSO6) || has(f, NetF.HOST_USO))
    caps |= typeBit(StatsType.TX_GSO);
  return caps;
}

/** What STATS_GET reads. */
export interface StatsSource {
  readonly negotiated: bigint;
  readonly queueStats: readonly QueueStats[];
  readonly deviceStats: Pick<NetDeviceStats, 'ctrlCommands' | 'ctrlErrors'>;
  /** Data virtqueues the driver's features give (2 per pair in use by the layout, MQ or not). */
  readonly dataQueues: number;
  controlQueueIndex(): number;
}

function le16(b: Uint8Array, o: number): number {
  return b[o]! | (b[o + 1]! << 8);
}

function le32(b: Uint8Array, o: number): number {
  return (b[o]! | (b[o + 1]! << 8) | (b[o + 2]! << 16) | (b[o + 3]! << 24)) >>> 0;
}

function put16(b: Uint8Array, o: number, v: number): void {
  b[o] = v & 0xff;
  b[o + 1] = (v >>> 8) & 0xff;
}

/** A counter as le64 (a JS number below 2^53: low and high words). */
function put64(b: Uint8Array, o: number, v: number): void {
  const lo = v % 0x1_0000_0000;
  const hi = Math.floor(v / 0x1_0000_0000);
  for (let i = 0; i < 4; i++) {
    b[o + i] = (lo >>> (8 * i)) & 0xff;
    b[o + 4 + i] = (hi >>> (8 * i)) & 0xff;
  }
}

/** Bits 0..63 of an entry's types_bitmap that the queue at `vq` may ask for, as [low word, high word]. */
function allowedTypes(src: StatsSource, vq: number, caps: bigint): [number, number] | null {
  const lo = Number(caps & 0xffff_ffffn);
  const hi = Number(caps >> 32n);
  if (vq === src.controlQueueIndex()) return [0, hi & 1];
  if (vq >= src.dataQueues) return null;
  // Receive types are bits 0..15, transmit types 16..31.
  return [vq & 1 ? lo & 0xffff_0000 : lo & 0xffff, 0];
}

/**
 * STATS_GET: validates every entry of `data` before writing anything (one bad entry fails the whole
 * command: vq_index out of range, a type unknown, not for that queue, or not negotiated), then writes the
 * replies in request order (types ascending within an entry) into `out`, as many whole replies as fit.
 * Returns the bytes written, or -1 for VIRTIO_NET_ERR.
 */
export function statsGet(src: StatsSource, data: Uint8Array, out: Uint8Array): number {
  if (!has(src.negotiated, NetF.DEVICE_STATS)) return -1;
  if (data.length === 0 || data.length % REQUEST_ENTRY !== 0) return -1;
  const caps = statsCapabilities(src.negotiated);
  for (let o = 0; o < data.length; o += REQUEST_ENTRY) {
    const allowed = allowedTypes(src, le16(data, o), caps);
    if (allowed === null) return -1;
    const lo = le32(data, o + 8);
    const hi = le32(data, o + 12);
    if ((lo & ~allowed[0]) !== 0 || (hi & ~allowed[1]) !== 0) return -1;
  }
  let at = 0;
  for (let o = 0; o < data.length; o += REQUEST_ENTRY) {
    const vq = le16(data, o);
    const lo = le32(data, o + 8);
    const hi = le32(data, o + 12);
    for (let t = 0; t < 64; t++) {
      if (((t < 32 ? lo >>> t : hi >>> (t - 32)) & 1) === 0) continue;
      const size = STATS_REPLY_SIZE[t]!;
      if (at + size > out.length) return at; // "fill up only upto the valid bytes"
      writeReply(src, t, vq, out, at);
      at += size;
    }
  }
  return at;
}

function writeReply(src: StatsSource, type: number, vq: number, out: Uint8Array, at: number): void {
  const size = STATS_REPLY_SIZE[type]!;
  out.fill(0, at, at + size);
  out[at] = type;
  put16(out, at + 2, vq);
  put16(out, at + 6, size);
  const c = at + 8;
  const d = src.deviceStats;
  if (type === StatsType.CVQ) {
    // "including the current command", which succeeds.
    put64(out, c, d.ctrlCommands + 1);
    put64(out, c + 8, d.ctrlCommands - d.ctrlErrors + 1);
    return;
  }
  const q = src.queueStats[vq >> 1]!;
  switch (type) {
    case StatsType.RX_BASIC:
      put64s(out, c, q.rxKicks, q.rxPackets, q.rxBytes, q.rxInterrupts, q.rxDropped, q.rxDropOverruns);
      return;
    case StatsType.RX_CSUM:
      // rx_csum_bad: frames are delivered without being checked, none is known bad.
      put64s(out, c, q.rxCsumValid, q.rxNeedsCsum, q.rxCsumNone, 0);
      return;
    case StatsType.RX_GSO:
      // The coalesced pair: the device never merges frames (no RSC).
      put64s(out, c, q.rxGsoPackets, q.rxGsoBytes, 0, 0);
      return;
    case StatsType.TX_BASIC:
      put64s(out, c, q.txKicks, q.txPackets, q.txBytes, q.txInterrupts, q.txDropped, q.txDropMalformed);
      return;
    case StatsType.TX_CSUM:
      put64s(out, c, q.txCsumNone, q.txNeedsCsum);
      return;
    case StatsType.TX_GSO:
      put64s(
        out,
        c,
        q.txGsoPackets,
        q.txGsoBytes,
        q.txGsoSegments,
        q.txGsoSegmentsBytes,
        q.txGsoPacketsNoseg,
        q.txGsoBytesNoseg,
      );
      return;
  }
}

function put64s(b: Uint8Array, o: number, ...v: number[]): void {
  for (let i = 0; i < v.length; i++) put64(b, o + 8 * i, v[i]!);
}

/** STATS_QUERY's `struct virtio_net_stats_capabilities` (le64 supported_stats_types[1]) into `out`. */
export function statsQuery(negotiated: bigint, out: Uint8Array): number {
  if (!has(negotiated, NetF.DEVICE_STATS) || out.length < 8) return -1;
  const caps = statsCapabilities(negotiated);
  put64(out, 0, Number(caps & 0xffff_ffffn) + Number(caps >> 32n) * 0x1_0000_0000);
  return 8;
}

/** One STATS_GET reply as a driver reads it: header fields and the le64 counters. */
export interface StatsReply {
  type: number;
  vqIndex: number;
  size: number;
  counters: bigint[];
}

/**
 * The driver's side: `struct virtio_net_ctrl_queue_stats` for `requests` and the result size the
 * requested types need (as Linux sizes its buffer). For the synthetic guest and tests.
 */
export function encodeStatsRequest(requests: { vq: number; types: bigint }[]): {
  data: Uint8Array;
  need: number;
} {
  const data = new Uint8Array(REQUEST_ENTRY * requests.length);
  const dv = new DataView(data.buffer);
  let need = 0;
  requests.forEach((r, i) => {
    dv.setUint16(REQUEST_ENTRY * i, r.vq, true);
    dv.setBigUint64(REQUEST_ENTRY * i + 8, r.types, true);
    for (let t = 0n; t < 64n; t++) if ((r.types >> t) & 1n) need += STATS_REPLY_SIZE[Number(t)] ?? 0;
  });
  return { data, need };
}

/** The driver's side: the replies in a STATS_GET result, walked by each header's size (Linux does). */
export function parseStatsReplies(result: Uint8Array): StatsReply[] {
  const replies: StatsReply[] = [];
  const rv = new DataView(result.buffer, result.byteOffset, result.byteLength);
  for (let o = 0; o + 8 <= result.length; ) {
    const size = rv.getUint16(o + 6, true);
    if (size < 8 || o + size > result.length) break;
    const counters: bigint[] = [];
    for (let c = o + 8; c + 8 <= o + size; c += 8) counters.push(rv.getBigUint64(c, true));
    replies.push({ type: result[o]!, vqIndex: rv.getUint16(o + 2, true), size, counters });
    o += size;
  }
  return replies;
}
