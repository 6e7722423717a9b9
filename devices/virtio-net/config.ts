/**
 * `struct virtio_net_config` (VIRTIO 1.3 §5.1.4), field by field, and its length as QEMU sizes it from
 * the offered features (hw/net/virtio-net.c `feature_sizes`): bytes past the length read as 0xff through
 * the transport.
 */
import { HASH_TUNNEL_SUPPORTED_TYPES } from '../../lib/net/tunnel-inner.js';
import { has, NetF } from './features.js';
import type { VirtioNetPciConfig } from './options.js';

export const NetConfig = {
  MAC: 0, // u8[6]
  STATUS: 6, // le16: LINK_UP 1, ANNOUNCE 2
  MAX_VIRTQUEUE_PAIRS: 8, // le16
  MTU: 10, // le16
  SPEED: 12, // le32, Mbit/s, 0xffffffff unknown
  DUPLEX: 16, // u8: 0 half, 1 full, 0xff unknown
  RSS_MAX_KEY_SIZE: 17, // u8
  RSS_MAX_INDIRECTION_TABLE_LENGTH: 18, // le16
  SUPPORTED_HASH_TYPES: 20, // le32
  SUPPORTED_TUNNEL_TYPES: 24, // le32 (VIRTIO 1.4, HASH_TUNNEL)
  SIZE: 28,
} as const;

export const NetStatus = { LINK_UP: 1, ANNOUNCE: 2 } as const;

/** Config length for the offered features: the end of the last field any offered feature makes valid. */
export function netConfigLength(offered: bigint): number {
  let end = 6; // mac: QEMU always offers VIRTIO_NET_F_MAC
  if (has(offered, NetF.STATUS)) end = 8;
  if (has(offered, NetF.MQ)) end = 10;
  if (has(offered, NetF.MTU)) end = 12;
  if (has(offered, NetF.SPEED_DUPLEX)) end = 17;
  if (has(offered, NetF.RSS) || has(offered, NetF.HASH_REPORT)) end = 24;
  if (has(offered, NetF.HASH_TUNNEL)) end = 28;
  return end;
}

/** What `struct virtio_net_config` shows. */
export interface NetConfigSource {
  readonly mac: Uint8Array;
  readonly status: number;
  readonly maxQueuePairs: number;
  /** Offered features: which RSS / hash report limits are advertised. */
  readonly offered: bigint;
  readonly options: Pick<VirtioNetPciConfig, 'host_mtu' | 'speed' | 'duplex'>;
  /** supported_hash_types (the `hash-*` options). */
  readonly supportedHashTypes: number;
}

/** Byte `o` of `struct virtio_net_config` (little-endian fields; unknown offsets read 0). */
export function netConfigByte(c: NetConfigSource, o: number): number {
  const opt = c.options;
  const offered = c.offered;
  switch (o) {
    case 0:
    case 1:
    case 2:
    case 3:
    case 4:
    case 5:
      return c.mac[o]!;
    case NetConfig.STATUS:
      return c.status & 0xff;
    case NetConfig.STATUS + 1:
      return c.status >> 8;
    case NetConfig.MAX_VIRTQUEUE_PAIRS:
      return c.maxQueuePairs & 0xff;
    case NetConfig.MAX_VIRTQUEUE_PAIRS + 1:
      return c.maxQueuePairs >> 8;
    case NetConfig.MTU:
      return opt.host_mtu & 0xff;
    case NetConfig.MTU + 1:
      return opt.host_mtu >> 8;
    case NetConfig.SPEED:
    case NetConfig.SPEED + 1:
    case NetConfig.SPEED + 2:
    case NetConfig.SPEED + 3:
      return ((opt.speed >>> 0) >>> (8 * (o - NetConfig.SPEED))) & 0xff;
    case NetConfig.DUPLEX:
      return opt.duplex === 'full' ? 1 : opt.duplex === 'half' ? 0 : 0xff;
    case NetConfig.RSS_MAX_KEY_SIZE:
      return has(offered, NetF.RSS) || has(offered, NetF.HASH_REPORT) ? 40 : 0;
    case NetConfig.RSS_MAX_INDIRECTION_TABLE_LENGTH:
      return has(offered, NetF.RSS) ? 128 : has(offered, NetF.HASH_REPORT) ? 1 : 0;
    case NetConfig.RSS_MAX_INDIRECTION_TABLE_LENGTH + 1:
      return 0;
    case NetConfig.SUPPORTED_HASH_TYPES:
    case NetConfig.SUPPORTED_HASH_TYPES + 1:
      return has(offered, NetF.RSS) || has(offered, NetF.HASH_REPORT)
        ? (c.supportedHashTypes >> (8 * (o - NetConfig.SUPPORTED_HASH_TYPES))) & 0xff
        : 0;
    case NetConfig.SUPPORTED_TUNNEL_TYPES:
    case NetConfig.SUPPORTED_TUNNEL_TYPES + 1:
      return has(offered, NetF.HASH_TUNNEL)
        ? (HASH_TUNNEL_SUPPORTED_TYPES >> (8 * (o - NetConfig.SUPPORTED_TUNNEL_TYPES))) & 0xff
        : 0;
    default:
      return 0;
  }
}
