/**
 * Receive-side scaling state of virtio-net (VIRTIO 1.3 §5.1.6.5.7 "Receive-side scaling", §5.1.6.5.6.4
 * "Hash calculation"): the RSS_CONFIG and HASH_CONFIG commands with full validation, and queue selection
 * by the indirection table. A rejected command leaves the state exactly as it was (QEMU disables RSS
 * instead; see docs/compatibility.md).
 */
import type { ParsedPacket } from '../../lib/net/packet-parser.js';
import { RssHashResult, rssHashParsed, VIRTIO_NET_RSS_SUPPORTED_HASH_TYPES } from '../../lib/net/rss-hash.js';
import { ToeplitzKey } from '../../lib/net/toeplitz.js';
import { parseTunnelInner } from '../../lib/net/tunnel-inner.js';
import { HashTunnel } from './hash-tunnel.js';

/** QEMU's VIRTIO_NET_RSS_MAX_KEY_SIZE / VIRTIO_NET_RSS_MAX_TABLE_LEN. */
export const RSS_MAX_KEY_SIZE = 40;
export const RSS_MAX_TABLE_LEN = 128;
export const RSS_SUPPORTED_HASH_TYPES = VIRTIO_NET_RSS_SUPPORTED_HASH_TYPES;

/** Offsets in `struct virtio_net_rss_config` (§5.1.6.5.7.1); `n` = table length. */
const RssConfig = {
  HASH_TYPES: 0,
  TABLE_MASK: 4,
  UNCLASSIFIED: 6,
  TABLE: 8,
  maxTxVq: (n: number) => 8 + 2 * n,
  keyLength: (n: number) => 10 + 2 * n,
  key: (n: number) => 11 + 2 * n,
} as const;

/** Offsets in `struct virtio_net_hash_config` (§5.1.6.5.6.4). */
const HashConfig = { HASH_TYPES: 0, KEY_LENGTH: 12, KEY: 13 } as const;

/** The fields of `struct virtio_net_rss_config` a driver sends. */
export interface RssConfigFields {
  hashTypes: number;
  /** Receive queue pair per entry; the length (a power of two) gives indirection_table_mask + 1. */
  table: number[];
  unclassified?: number;
  maxTxVq: number;
  key: Uint8Array;
  /** hash_key_length as sent (default: key.length); tests use it to lie about the key. */
  keyLength?: number;
}

/** Encodes `struct virtio_net_rss_config` (§5.1.6.5.7.1), the driver's side of `RssState.rssConfig`. */
export function encodeRssConfig(o: RssConfigFields): Uint8Array {
  const n = o.table.length;
  const b = new Uint8Array(RssConfig.key(n) + o.key.length);
  const dv = new DataView(b.buffer);
  dv.setUint32(RssConfig.HASH_TYPES, o.hashTypes, true);
  dv.setUint16(RssConfig.TABLE_MASK, n - 1, true);
  dv.setUint16(RssConfig.UNCLASSIFIED, o.unclassified ?? 0, true);
  for (const [i, q] of o.table.entries()) dv.setUint16(RssConfig.TABLE + 2 * i, q, true);
  dv.setUint16(RssConfig.maxTxVq(n), o.maxTxVq, true);
  b[RssConfig.keyLength(n)] = o.keyLength ?? o.key.length;
  b.set(o.key, RssConfig.key(n));
  return b;
}

/** Encodes `struct virtio_net_hash_config` (§5.1.6.5.6.4). */
export function encodeHashConfig(hashTypes: number, key: Uint8Array): Uint8Array {
  const b = new Uint8Array(HashConfig.KEY + key.length);
  new DataView(b.buffer).setUint32(HashConfig.HASH_TYPES, hashTypes, true);
  b[HashConfig.KEY_LENGTH] = key.length;
  b.set(key, HashConfig.KEY);
  return b;
}

export interface RssSnapshot {
  enabled: boolean;
  /** RSS_CONFIG (true) or HASH_CONFIG (false) set the active state. */
  redirect: boolean;
  hashTypes: number;
  table: number[];
  unclassified: number;
  key: number[];
}

/** Outcome of a config command: null if rejected, else the queue pairs the driver asked for (RSS) or 0. */
export type RssCommandResult = { queuePairs: number } | null;

export class RssState {
  /** A hash is computed for received frames (RSS_CONFIG or HASH_CONFIG with types and a key). */
  enabled = false;
  /** Queue selection by the indirection table (RSS_CONFIG); false: hash report only (HASH_CONFIG). */
  redirect = false;
  hashTypes = 0;
  table: Uint16Array<ArrayBufferLike> = new Uint16Array(1);
  tableMask = 0;
  unclassified = 0;
  readonly key = new ToeplitzKey();
  private keyBytes = new Uint8Array(0);
  /** Reused per frame. */
  readonly result = new RssHashResult();

  constructor(
    readonly maxQueuePairs: number,
    /** supported_hash_types (§5.1.4): a config naming any other type is refused. */
    readonly supportedHashTypes: number = RSS_SUPPORTED_HASH_TYPES,
    /** Inner header hash (VIRTIO 1.4): shared with the RSS contexts; not cleared by `reset`. */
    readonly tunnel: HashTunnel = new HashTunnel(),
  ) {}

  reset(): void {
    this.enabled = false;
    this.redirect = false;
    this.hashTypes = 0;
    this.table = new Uint16Array(1);
    this.tableMask = 0;
    this.unclassified = 0;
    this.keyBytes = new Uint8Array(0);
  }

  /**
   * VIRTIO_NET_CTRL_MQ_RSS_CONFIG. Rejects: short buffer, unsupported hash types, table length not a power
   * of two or over 128, unclassified queue or a table entry naming a queue pair that does not exist or with
   * the reserved bit 15 set, max_tx_vq of 0 or over max_virtqueue_pairs, key longer than 40, a key missing
   * while hash types are set, or a key shorter than the buffer claims. A config with no hash types and no
   * key disables RSS (§5.1.6.5.7.1).
   */
  rssConfig(cmd: Uint8Array): RssCommandResult {
    return this.configure(cmd, false);
  }

  /**
   * An RSS context's `struct virtio_net_rss_config` (VIRTIO 1.4 "RSS Context"): the same rules as RSS_CONFIG,
   * but the context always redirects: without a key (and so without hash types) every frame goes to its
   * unclassified queue, as "RSS processing" sends frames for which no hash was computed.
   */
  contextConfig(cmd: Uint8Array): RssCommandResult {
    return this.configure(cmd, true);
  }

  private configure(cmd: Uint8Array, context: boolean): RssCommandResult {
    const dv = new DataView(cmd.buffer, cmd.byteOffset, cmd.byteLength);
    if (cmd.length < RssConfig.TABLE) return null;
    const hashTypes = dv.getUint32(RssConfig.HASH_TYPES, true);
    const n = dv.getUint16(RssConfig.TABLE_MASK, true) + 1;
    const unclassified = dv.getUint16(RssConfig.UNCLASSIFIED, true);
    if ((hashTypes & ~this.supportedHashTypes) !== 0) return null;
    if ((n & (n - 1)) !== 0 || n > RSS_MAX_TABLE_LEN) return null;
    if (unclassified >= this.maxQueuePairs) return null;
    if (cmd.length < RssConfig.key(n)) return null;
    const table = new Uint16Array(n);
    for (let i = 0; i < n; i++) {
      const q = dv.getUint16(RssConfig.TABLE + 2 * i, true);
      if (q >= this.maxQueuePairs) return null;
      table[i] = q;
    }
    const maxTxVq = dv.getUint16(RssConfig.maxTxVq(n), true);
    if (maxTxVq === 0 || maxTxVq > this.maxQueuePairs) return null;
    const keyLength = cmd[RssConfig.keyLength(n)]!;
    if (!this.acceptKey(cmd, RssConfig.key(n), keyLength, hashTypes)) return null;
    if (keyLength === 0 && !context) {
      this.reset();
      return { queuePairs: maxTxVq };
    }
    this.commit(
      true,
      hashTypes,
      table,
      unclassified,
      cmd.subarray(RssConfig.key(n), RssConfig.key(n) + keyLength),
    );
    return { queuePairs: maxTxVq };
  }

  /** VIRTIO_NET_CTRL_MQ_HASH_CONFIG: hash report without RSS; same key and type rules as RSS_CONFIG. */
  hashConfig(cmd: Uint8Array): RssCommandResult {
    if (cmd.length < HashConfig.KEY) return null;
    const dv = new DataView(cmd.buffer, cmd.byteOffset, cmd.byteLength);
    const hashTypes = dv.getUint32(HashConfig.HASH_TYPES, true);
    if ((hashTypes & ~this.supportedHashTypes) !== 0) return null;
    const keyLength = cmd[HashConfig.KEY_LENGTH]!;
    if (!this.acceptKey(cmd, HashConfig.KEY, keyLength, hashTypes)) return null;
    if (keyLength === 0) {
      this.reset();
      return { queuePairs: 0 };
    }
    this.commit(
      false,
      hashTypes,
      new Uint16Array(1),
      0,
      cmd.subarray(HashConfig.KEY, HashConfig.KEY + keyLength),
    );
    return { queuePairs: 0 };
  }

  private acceptKey(cmd: Uint8Array, offset: number, keyLength: number, hashTypes: number): boolean {
    if (keyLength > RSS_MAX_KEY_SIZE) return false;
    if (keyLength === 0) return hashTypes === 0;
    return cmd.length >= offset + keyLength;
  }

  private commit(
    redirect: boolean,
    hashTypes: number,
    table: Uint16Array,
    unclassified: number,
    key: Uint8Array,
  ): void {
    this.enabled = true;
    this.redirect = redirect;
    this.hashTypes = hashTypes;
    this.table = table;
    this.tableMask = table.length - 1;
    this.unclassified = unclassified;
    this.keyBytes = Uint8Array.from(key);
    this.key.setKey(this.keyBytes);
  }

  /**
   * Hashes a parsed frame into `out` (report NONE when no enabled type applies) and returns the receive
   * queue pair RSS selects: the table entry, or the unclassified queue when no hash was computed. Returns
   * -1 when RSS does not redirect (hash report only). Allocates nothing; only reads this state, so each
   * queue pair can steer with its own `out`.
   */
  steer(frame: Uint8Array, pkt: ParsedPacket, out: RssHashResult = this.result): number {
    // Inner header hash: a tunnel of an enabled type is hashed over its inner headers (out.inner).
    const t = this.tunnel.types;
    const p = t !== 0 && parseTunnelInner(frame, pkt, t, out.inner) ? out.inner : pkt;
    const hashed = rssHashParsed(frame, p, this.hashTypes, this.key, out);
    if (!this.redirect) return -1;
    return hashed ? this.table[out.hash & this.tableMask]! : this.unclassified;
  }

  /** The Toeplitz key as configured (a copy). */
  keyCopy(): Uint8Array {
    return this.keyBytes.slice();
  }

  snapshot(): RssSnapshot {
    return {
      enabled: this.enabled,
      redirect: this.redirect,
      hashTypes: this.hashTypes,
      table: Array.from(this.table),
      unclassified: this.unclassified,
      key: Array.from(this.keyBytes),
    };
  }

  restore(s: RssSnapshot): void {
    this.reset();
    if (!s.enabled) return;
    const table = Uint16Array.from(s.table.length > 0 ? s.table : [0]);
    this.commit(s.redirect, s.hashTypes >>> 0, table, s.unclassified, Uint8Array.from(s.key));
  }
}
