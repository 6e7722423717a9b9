/**
 * RSS contexts (VIRTIO 1.4 §5.1.6.5 "RSS Context", VIRTIO_NET_F_RSS_CONTEXT): extra RSS configurations besides the
 * default one, each a full `struct virtio_net_rss_config`, managed with the VIRTNET_RSS_CTX_CTRL class
 * (9): CAP_GET (result `le16 max_rss_contexts`), ADD and MOD (`le16 rss_ctx_id`, `u8 reserved[6]`, the
 * RSS config), DEL (`le16 rss_ctx_id`). A rejected command leaves every context as it was.
 *
 * VIRTIO 1.4 defines no way for a frame to reach a context (the flow filter actions are DROP,
 * DIRECT_RX_VQ and the IPsec ones): received frames follow the default configuration, and a context
 * steers only where an embedder asks it to (`steer`). See docs/compatibility.md "RSS contexts".
 */
import type { ParsedPacket } from '../../lib/net/packet-parser.js';
import type { RssHashResult } from '../../lib/net/rss-hash.js';
import {
  encodeRssConfig,
  type RssCommandResult,
  type RssConfigFields,
  type RssSnapshot,
  RssState,
} from './rss.js';

/** VIRTNET_RSS_CTX_CTRL and its commands ("Querying RSS Context Capability", "Setting RSS Context Parameters"). */
export const CTRL_RSS_CTX = 9;
export const CtrlRssCtx = { CAP_GET: 0, ADD: 1, MOD: 2, DEL: 3 } as const;

/** max_rss_contexts this device reports: each context is at most a 128-entry table and a 40-byte key. */
export const RSS_MAX_CONTEXTS = 16;

/** `rss_ctx_id` and `reserved[6]` precede the RSS config in `struct virtnet_rss_ctx_add_modify`. */
const ADD_MODIFY_HEADER = 8;

/** Encodes `struct virtnet_rss_ctx_add_modify` (ADD / MOD); `reserved` is sent as zeros. */
export function encodeRssContext(id: number, rss: RssConfigFields): Uint8Array {
  const cfg = encodeRssConfig(rss);
  const b = new Uint8Array(ADD_MODIFY_HEADER + cfg.length);
  b[0] = id & 0xff;
  b[1] = (id >> 8) & 0xff;
  b.set(cfg, ADD_MODIFY_HEADER);
  return b;
}

/** Encodes `struct virtnet_rss_ctx_del`. */
export function encodeRssContextDel(id: number): Uint8Array {
  return Uint8Array.of(id & 0xff, (id >> 8) & 0xff);
}

/** One context in a snapshot. */
export interface RssContextSnapshot {
  id: number;
  rss: RssSnapshot;
}

export class RssContexts {
  private readonly contexts = new Map<number, RssState>();

  /** `base` lends its limits and its inner header hash state to every context. */
  constructor(
    private readonly base: RssState,
    readonly max: number = RSS_MAX_CONTEXTS,
  ) {}

  /** Contexts configured. */
  get size(): number {
    return this.contexts.size;
  }

  /** The context `id`, or undefined. */
  get(id: number): RssState | undefined {
    return this.contexts.get(id);
  }

  /** "Upon reset, the device MUST clear all previously configured RSS contexts." */
  reset(): void {
    this.contexts.clear();
  }

  /** CAP_GET: writes `le16 max_rss_contexts` into `out`; -1 when `out` has no room for it. */
  capGet(out: Uint8Array): number {
    if (out.length < 2) return -1;
    out[0] = this.max & 0xff;
    out[1] = this.max >> 8;
    return 2;
  }

  /**
   * ADD (`add` true) or MOD: refused for a short buffer, an id outside 1..max_rss_contexts, an id in use
   * (ADD) or not in use (MOD), or an RSS config RSS_CONFIG would refuse. `max_tx_vq` is checked like
   * RSS_CONFIG's and otherwise ignored: the default configuration sets the transmit queues.
   */
  addOrModify(data: Uint8Array, add: boolean): boolean {
    if (data.length < ADD_MODIFY_HEADER) return false;
    const id = data[0]! | (data[1]! << 8);
    if (id < 1 || id > this.max) return false;
    if (this.contexts.has(id) === add) return false;
    const ctx = new RssState(this.base.maxQueuePairs, this.base.supportedHashTypes, this.base.tunnel);
    const r: RssCommandResult = ctx.contextConfig(data.subarray(ADD_MODIFY_HEADER));
    if (!r) return false;
    this.contexts.set(id, ctx);
    return true;
  }

  /** DEL: refused for a short buffer or an id that names no context. */
  del(data: Uint8Array): boolean {
    if (data.length < 2) return false;
    return this.contexts.delete(data[0]! | (data[1]! << 8));
  }

  /**
   * The receive queue pair context `id` selects for a parsed frame (hash and report in `out`), or -1
   * when there is no such context. Allocates nothing.
   */
  steer(id: number, frame: Uint8Array, pkt: ParsedPacket, out: RssHashResult): number {
    const ctx = this.contexts.get(id);
    return ctx ? ctx.steer(frame, pkt, out) : -1;
  }

  snapshot(): RssContextSnapshot[] {
    return [...this.contexts].map(([id, c]) => ({ id, rss: c.snapshot() }));
  }

  restore(list: readonly RssContextSnapshot[]): void {
    this.contexts.clear();
    for (const { id, rss } of list) {
      const ctx = new RssState(this.base.maxQueuePairs, this.base.supportedHashTypes, this.base.tunnel);
      ctx.restore(rss);
      this.contexts.set(id, ctx);
    }
  }
}
