/**
 * `struct virtio_net_hdr` and its extensions (VIRTIO 1.3 §5.1.6 "Device Operation"): one offset table
 * for the 10-, 12- and 20-byte layouts, little-endian (the legacy interface on x86 is little-endian too).
 */
import type { NetOffload } from '../../lib/net/backend.js';

export const NetHdr = {
  FLAGS: 0,
  GSO_TYPE: 1,
  HDR_LEN: 2,
  GSO_SIZE: 4,
  CSUM_START: 6,
  CSUM_OFFSET: 8,
  /** 12- and 20-byte layouts. */
  NUM_BUFFERS: 10,
  /** 20-byte layout (VIRTIO_NET_F_HASH_REPORT). */
  HASH_VALUE: 12,
  HASH_REPORT: 16,
  PADDING: 18,
} as const;

export const NetHdrFlags = { NEEDS_CSUM: 1, DATA_VALID: 2, RSC_INFO: 4 } as const;
export const GsoType = { NONE: 0, TCPV4: 1, UDP: 3, TCPV6: 4, UDP_L4: 5, ECN: 0x80 } as const;

/** Reads the offload fields of a header at `offset` in `bytes` into `out`. */
export function readNetHeader(bytes: Uint8Array, offset: number, out: NetOffload): NetOffload {
  out.flags = bytes[offset + NetHdr.FLAGS]!;
  out.gsoType = bytes[offset + NetHdr.GSO_TYPE]!;
  out.hdrLen = le16(bytes, offset + NetHdr.HDR_LEN);
  out.gsoSize = le16(bytes, offset + NetHdr.GSO_SIZE);
  out.csumStart = le16(bytes, offset + NetHdr.CSUM_START);
  out.csumOffset = le16(bytes, offset + NetHdr.CSUM_OFFSET);
  return out;
}

/**
 * Writes a receive header of `size` bytes (10, 12 or 20) at `offset`: the offload fields from `offload`
 * (or zeros), num_buffers, and for 20 bytes the hash value/report (§5.1.6.4.3).
 */
export function writeNetHeader(
  bytes: Uint8Array,
  offset: number,
  size: number,
  offload: NetOffload | null,
  numBuffers: number,
  hashValue: number,
  hashReport: number,
): void {
  if (offload) {
    bytes[offset + NetHdr.FLAGS] = offload.flags;
    bytes[offset + NetHdr.GSO_TYPE] = offload.gsoType;
    put16(bytes, offset + NetHdr.HDR_LEN, offload.hdrLen);
    put16(bytes, offset + NetHdr.GSO_SIZE, offload.gsoSize);
    put16(bytes, offset + NetHdr.CSUM_START, offload.csumStart);
    put16(bytes, offset + NetHdr.CSUM_OFFSET, offload.csumOffset);
  } else {
    bytes.fill(0, offset, offset + 10);
  }
  if (size >= 12) put16(bytes, offset + NetHdr.NUM_BUFFERS, numBuffers);
  if (size >= 20) {
    put32(bytes, offset + NetHdr.HASH_VALUE, hashValue);
    put16(bytes, offset + NetHdr.HASH_REPORT, hashReport);
    put16(bytes, offset + NetHdr.PADDING, 0);
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
