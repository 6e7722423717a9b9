/**
 * The Internet checksum (RFC 1071) over Uint8Array ranges, TCP/UDP pseudo-header sums (RFC 793/768,
 * RFC 8200 §8.1), and what a device does for VIRTIO_NET_HDR_F_NEEDS_CSUM (VIRTIO 1.3 §5.1.6.2) when the
 * backend cannot take the offload.
 *
 * Partial sums are plain (unfolded) numbers: add ranges with `checksumAdd`, then `checksumFinish`. A
 * range must start at an even offset relative to the start of the checksummed data for sums to combine.
 * JS numbers hold 53 bits, so sums of up to ~2^36 16-bit words need no intermediate folding.
 */

import { L3_IPV4, L3_IPV6, L4_TCP, L4_UDP, type ParsedPacket } from './packet-parser.js';

/** Adds `length` bytes from `offset` as big-endian 16-bit words (odd tail byte padded with zero). */
export function checksumAdd(bytes: Uint8Array, offset: number, length: number, sum = 0): number {
  let i = offset;
  const end = offset + length;
  const end8 = end - 7;
  // Unrolled: four words per step; each word is at most 0xffff so the inner sum stays small.
  for (; i < end8; i += 8) {
    sum +=
      ((bytes[i]! << 8) | bytes[i + 1]!) +
      ((bytes[i + 2]! << 8) | bytes[i + 3]!) +
      ((bytes[i + 4]! << 8) | bytes[i + 5]!) +
      ((bytes[i + 6]! << 8) | bytes[i + 7]!);
  }
  for (; i < end - 1; i += 2) sum += (bytes[i]! << 8) | bytes[i + 1]!;
  if (i < end) sum += bytes[i]! << 8;
  return sum;
}

/** Folds a partial sum to 16 bits (end-around carry), not complemented. */
export function checksumFold(sum: number): number {
  // Reduce the >32-bit part first without bit operators (they truncate to 32 bits).
  while (sum > 0xffff) sum = (sum % 0x10000) + Math.floor(sum / 0x10000);
  return sum;
}

/** The checksum field value for a partial sum: ~fold(sum) & 0xffff. */
export function checksumFinish(sum: number): number {
  return ~checksumFold(sum) & 0xffff;
}

/** The Internet checksum of a byte range. */
export function internetChecksum(bytes: Uint8Array, offset = 0, length = bytes.length - offset): number {
  return checksumFinish(checksumAdd(bytes, offset, length));
}

/** Pseudo-header partial sum for IPv4 (src, dst, zero, protocol, L4 length). */
export function pseudoHeaderSumIpv4(
  frame: Uint8Array,
  srcOffset: number,
  dstOffset: number,
  proto: number,
  l4Length: number,
): number {
  return checksumAdd(frame, srcOffset, 4, checksumAdd(frame, dstOffset, 4, proto + l4Length));
}

/** Pseudo-header partial sum for IPv6 (src, dst, 32-bit upper-layer length, next header). */
export function pseudoHeaderSumIpv6(
  frame: Uint8Array,
  srcOffset: number,
  dstOffset: number,
  proto: number,
  l4Length: number,
): number {
  const lenSum = (l4Length >>> 16) + (l4Length & 0xffff);
  return checksumAdd(frame, srcOffset, 16, checksumAdd(frame, dstOffset, 16, proto + lenSum));
}

/**
 * NEEDS_CSUM completion (VIRTIO 1.3 §5.1.6.2): checksums `frame[csumStart..]` (the field at
 * csumStart+csumOffset already holds the pseudo-header sum the driver seeded) and stores the result
 * there. A result of 0 is stored as 0xffff, as Linux skb_checksum_help does (CSUM_MANGLED_0), so a UDP
 * checksum never turns into "no checksum". Mutates `frame`: pass a copy, never a view of guest memory.
 * Returns false, changing nothing, when the field lies outside the frame.
 */
export function completeChecksum(frame: Uint8Array, csumStart: number, csumOffset: number): boolean {
  const field = csumStart + csumOffset;
  if (
    !Number.isInteger(csumStart) ||
    !Number.isInteger(csumOffset) ||
    csumStart < 0 ||
    csumOffset < 0 ||
    csumStart >= frame.length ||
    field + 2 > frame.length
  ) {
    return false;
  }
  const c = checksumFinish(checksumAdd(frame, csumStart, frame.length - csumStart)) || 0xffff;
  frame[field] = c >>> 8;
  frame[field + 1] = c & 0xff;
  return true;
}

/** Computes and stores the IPv4 header checksum of the header at `l3Offset` (`ihl` bytes). */
export function writeIpv4HeaderChecksum(frame: Uint8Array, l3Offset: number, ihl: number): void {
  frame[l3Offset + 10] = 0;
  frame[l3Offset + 11] = 0;
  const c = internetChecksum(frame, l3Offset, ihl);
  frame[l3Offset + 10] = c >>> 8;
  frame[l3Offset + 11] = c & 0xff;
}

/** True when the IPv4 header of a parsed frame has a correct checksum. */
export function verifyIpv4HeaderChecksum(frame: Uint8Array, pkt: ParsedPacket): boolean {
  if (pkt.l3Kind !== L3_IPV4) return false;
  return checksumFold(checksumAdd(frame, pkt.l3Offset, pkt.ipHeaderLength)) === 0xffff;
}

/**
 * True when the TCP or UDP checksum of a parsed, unfragmented frame is correct over
 * [l4Offset, frame end) (a UDP checksum of 0 over IPv4 means "none" and is accepted).
 */
export function verifyL4Checksum(frame: Uint8Array, pkt: ParsedPacket): boolean {
  if (pkt.l4Kind !== L4_TCP && pkt.l4Kind !== L4_UDP) return false;
  const l4Len = frame.length - pkt.l4Offset;
  if (pkt.l4Kind === L4_UDP && pkt.l3Kind === L3_IPV4) {
    if (frame[pkt.l4Offset + 6] === 0 && frame[pkt.l4Offset + 7] === 0) return true;
  }
  let sum: number;
  if (pkt.l3Kind === L3_IPV4) {
    sum = pseudoHeaderSumIpv4(frame, pkt.srcAddrOffset, pkt.dstAddrOffset, pkt.l4Proto, l4Len);
  } else if (pkt.l3Kind === L3_IPV6) {
    sum = pseudoHeaderSumIpv6(frame, pkt.srcAddrOffset, pkt.dstAddrOffset, pkt.l4Proto, l4Len);
  } else {
    return false;
  }
  return checksumFold(checksumAdd(frame, pkt.l4Offset, l4Len, sum)) === 0xffff;
}
