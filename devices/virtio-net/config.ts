/**
 * `struct virtio_net_config` (VIRTIO 1.3 §5.1.4), field by field, and its length as QEMU sizes it from
 * the offered features (hw/net/virtio-net.c `feature_sizes`): bytes past the length read as 0xff through
 * the transport.
 */
import { has, NetF } from './features.js';

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
  SIZE: 24,
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
  return end;
}
