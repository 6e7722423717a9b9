/**
 * `struct virtio_net_hdr` and its extensions (VIRTIO 1.3 §5.1.6 "Device Operation"): the one codec of
 * this wire layout, for the device (headers in guest buffers), the backends (a tap's IFF_VNET_HDR header)
 * and the synthetic driver. One offset table for the 10-, 12- and 20-byte layouts, little-endian (the
 * legacy interface on x86 is little-endian too).
 */
import type { NetOffload } from './backend.js';

/** Field offsets. */
export const NetHdr = {
  FLAGS: 0,
  GSO_TYPE: 1,
  HDR_LEN: 2,
  GSO_SIZE: 4,
  CSUM_START: 6,
  CSUM_OFFSET: 8,
  /** 12- and 20-byte layouts (VIRTIO_F_VERSION_1 or VIRTIO_NET_F_MRG_RXBUF). */
  NUM_BUFFERS: 10,
  /** 20-byte layout (VIRTIO_NET_F_HASH_REPORT). */
  HASH_VALUE: 12,
  HASH_REPORT: 16,
  PADDING: 18,
  /** 24-byte layout (VIRTIO_NET_F_HOST_UDP_TUNNEL_GSO or _GUEST_UDP_TUNNEL_GSO, VIRTIO 1.4 §5.1.6). */
  OUTER_TH_OFFSET: 20,
  INNER_NH_OFFSET: 22,
} as const;

/** Bytes of the header that carry a NetOffload: sizeof(struct virtio_net_hdr), what a tap reads and writes. */
export const VNET_HDR_OFFLOAD_BYTES = 10;

/** Size of the header with the UDP tunnel fields (`struct virtio_net_hdr_v1_hash_tunnel`). */
export const VNET_HDR_TUNNEL_BYTES = 24;

/** VIRTIO_NET_HDR_F_*; UDP_TUNNEL_CSUM: the outer UDP checksum is offloaded too (VIRTIO 1.4). */
export const NetHdrFlags = { NEEDS_CSUM: 1, DATA_VALID: 2, RSC_INFO: 4, UDP_TUNNEL_CSUM: 8 } as const;
/**
 * VIRTIO_NET_HDR_GSO_*; ECN is a flag or-ed onto a GSO type, and so are UDP_TUNNEL_IPV4 / _IPV6 (VIRTIO
 * 1.4: the GSO type is carried in a UDP tunnel, `outer_th_offset` / `inner_nh_offset` say where).
 */
export const GsoType = {
  NONE: 0,
  TCPV4: 1,
  UDP: 3,
  TCPV6: 4,
  UDP_L4: 5,
  UDP_TUNNEL_IPV4: 0x20,
  UDP_TUNNEL_IPV6: 0x40,
  ECN: 0x80,
} as const;
/** Both tunnel bits. */
export const GSO_UDP_TUNNEL = GsoType.UDP_TUNNEL_IPV4 | GsoType.UDP_TUNNEL_IPV6;

/**
 * Reads the offload fields of a header of `size` bytes at `bytes[at]` into `out`; returns `out`. The
 * tunnel offsets are read from a 24-byte header and are undefined otherwise.
 */
export function readVnetHeader(
  bytes: Uint8Array,
  at: number,
  out: NetOffload,
  size = VNET_HDR_OFFLOAD_BYTES,
): NetOffload {
  out.flags = bytes[at + NetHdr.FLAGS]!;
  out.gsoType = bytes[at + NetHdr.GSO_TYPE]!;
  out.hdrLen = le16(bytes, at + NetHdr.HDR_LEN);
  out.gsoSize = le16(bytes, at + NetHdr.GSO_SIZE);
  out.csumStart = le16(bytes, at + NetHdr.CSUM_START);
  out.csumOffset = le16(bytes, at + NetHdr.CSUM_OFFSET);
  const tunnel = size >= VNET_HDR_TUNNEL_BYTES;
  out.outerThOffset = tunnel ? le16(bytes, at + NetHdr.OUTER_TH_OFFSET) : undefined;
  out.innerNhOffset = tunnel ? le16(bytes, at + NetHdr.INNER_NH_OFFSET) : undefined;
  return out;
}

/**
 * Writes a header of `size` bytes (10, the default, 12, 20 or 24) at `bytes[at]`: the offload fields from
 * `o` (zeros for null), then for 12 and more num_buffers, for 20 and 24 the hash value and report
 * (§5.1.6.4.3) and zero padding, for 24 the tunnel offsets (VIRTIO 1.4; zeros for null).
 */
export function writeVnetHeader(
  bytes: Uint8Array,
  at: number,
  o: NetOffload | null,
  size = VNET_HDR_OFFLOAD_BYTES,
  numBuffers = 0,
  hashValue = 0,
  hashReport = 0,
): void {
  if (o === null) {
    // A loop, not fill(): TypedArray fill is a runtime call, twice the cost for 10 bytes (per frame).
    for (let i = 0; i < VNET_HDR_OFFLOAD_BYTES; i++) bytes[at + i] = 0;
  } else {
    bytes[at + NetHdr.FLAGS] = o.flags;
    bytes[at + NetHdr.GSO_TYPE] = o.gsoType;
    put16(bytes, at + NetHdr.HDR_LEN, o.hdrLen);
    put16(bytes, at + NetHdr.GSO_SIZE, o.gsoSize);
    put16(bytes, at + NetHdr.CSUM_START, o.csumStart);
    put16(bytes, at + NetHdr.CSUM_OFFSET, o.csumOffset);
  }
  if (size >= 12) put16(bytes, at + NetHdr.NUM_BUFFERS, numBuffers);
  if (size >= 20) {
    put32(bytes, at + NetHdr.HASH_VALUE, hashValue);
    put16(bytes, at + NetHdr.HASH_REPORT, hashReport);
    put16(bytes, at + NetHdr.PADDING, 0);
  }
  if (size >= VNET_HDR_TUNNEL_BYTES) {
    put16(bytes, at + NetHdr.OUTER_TH_OFFSET, o?.outerThOffset ?? 0);
    put16(bytes, at + NetHdr.INNER_NH_OFFSET, o?.innerNhOffset ?? 0);
  }
}

function le16(b: Uint8Array, o: number): number {
  return b[o]! | (b[o + 1]! << 8);
}

function put16(b: Uint8Array, o: number, v: number): void {
  b[o] = v & 0xff;
  b[o + 1] = (v >>> 8) & 0xff;
}

function put32(b: Uint8Array, o: number, v: number): void {
  b[o] = v & 0xff;
  b[o + 1] = (v >>> 8) & 0xff;
  b[o + 2] = (v >>> 16) & 0xff;
  b[o + 3] = (v >>> 24) & 0xff;
}
