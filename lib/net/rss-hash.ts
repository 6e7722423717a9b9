/**
 * RSS hash selection (VIRTIO 1.3 §5.1.6.4.3 "Hash calculation for incoming packets"): which fields of a
 * frame are hashed for a set of enabled hash types, and which VIRTIO_NET_HASH_REPORT_* type results.
 *
 * Rules (first match wins):
 * - IPv4: TCPv4 and a TCP header → addresses + ports; else UDPv4 and a UDP header → addresses + ports;
 *   else IPv4 → addresses; else no hash.
 * - IPv6: TCP header and TCP_EX → _EX addresses + ports (TCPv6_EX), else TCP and TCPv6 → addresses +
 *   ports; the same for UDP with UDP_EX / UDPv6; else IP_EX → _EX addresses; else IPv6 → addresses.
 *   This is QEMU 7.2's order (measured, see docs/compatibility.md) and NDIS's, from which the spec's
 *   text comes; the spec words it per "with/without extension headers", which reads differently for
 *   a few type combinations (documented there).
 * _EX addresses: Home Address option (Destination Options) else source; Routing Header type 2 address
 * else destination. Fragments carry no L4 header for hashing (MF or offset != 0), so they fall to the
 * address rules. Truncated or malformed IP headers get no hash (QEMU 7.2 hashes stale bytes there).
 */

import { L3_IPV4, L3_IPV6, L4_TCP, L4_UDP, ParsedPacket, parsePacket } from './packet-parser.js';
import { ToeplitzKey } from './toeplitz.js';

/** `hash_types` bits (VIRTIO 1.3 §5.1.6.4.3.1). */
export const VIRTIO_NET_RSS_HASH_TYPE_IPv4 = 1 << 0;
export const VIRTIO_NET_RSS_HASH_TYPE_TCPv4 = 1 << 1;
export const VIRTIO_NET_RSS_HASH_TYPE_UDPv4 = 1 << 2;
export const VIRTIO_NET_RSS_HASH_TYPE_IPv6 = 1 << 3;
export const VIRTIO_NET_RSS_HASH_TYPE_TCPv6 = 1 << 4;
export const VIRTIO_NET_RSS_HASH_TYPE_UDPv6 = 1 << 5;
export const VIRTIO_NET_RSS_HASH_TYPE_IP_EX = 1 << 6;
export const VIRTIO_NET_RSS_HASH_TYPE_TCP_EX = 1 << 7;
export const VIRTIO_NET_RSS_HASH_TYPE_UDP_EX = 1 << 8;
/** Every hash type this implementation supports (QEMU's supported_hash_types is the same 0x1ff). */
export const VIRTIO_NET_RSS_SUPPORTED_HASH_TYPES = 0x1ff;

/** `hash_report` values of `struct virtio_net_hdr_v1_hash` (VIRTIO 1.3 §5.1.6). */
export const VIRTIO_NET_HASH_REPORT_NONE = 0;
export const VIRTIO_NET_HASH_REPORT_IPv4 = 1;
export const VIRTIO_NET_HASH_REPORT_TCPv4 = 2;
export const VIRTIO_NET_HASH_REPORT_UDPv4 = 3;
export const VIRTIO_NET_HASH_REPORT_IPv6 = 4;
export const VIRTIO_NET_HASH_REPORT_TCPv6 = 5;
export const VIRTIO_NET_HASH_REPORT_UDPv6 = 6;
export const VIRTIO_NET_HASH_REPORT_IPv6_EX = 7;
export const VIRTIO_NET_HASH_REPORT_TCPv6_EX = 8;
export const VIRTIO_NET_HASH_REPORT_UDPv6_EX = 9;

/** Reusable output of `rssHashParsed`. */
export class RssHashResult {
  /** Unsigned 32-bit hash (valid when `reportType` != NONE). */
  hash = 0;
  /** VIRTIO_NET_HASH_REPORT_*; NONE when no enabled type applies. */
  reportType = VIRTIO_NET_HASH_REPORT_NONE;
  /** Scratch for a tunnel's inner headers (inner header hash), owned by whoever owns this result. */
  readonly inner = new ParsedPacket();
}

/**
 * The device's hot-path form: hashes an already parsed frame with a precomputed key. Fills `out` and
 * returns true when a hash was computed; otherwise sets `out.reportType` = NONE, `out.hash` = 0 and
 * returns false (the frame goes to the unclassified queue). Allocates nothing.
 */
export function rssHashParsed(
  frame: Uint8Array,
  pkt: ParsedPacket,
  hashTypes: number,
  key: ToeplitzKey,
  out: RssHashResult,
): boolean {
  out.hash = 0;
  out.reportType = VIRTIO_NET_HASH_REPORT_NONE;
  let report = VIRTIO_NET_HASH_REPORT_NONE;
  let ports = false;
  let ex = false;
  if (pkt.l3Kind === L3_IPV4) {
    if (pkt.l4Kind === L4_TCP && hashTypes & VIRTIO_NET_RSS_HASH_TYPE_TCPv4) {
      report = VIRTIO_NET_HASH_REPORT_TCPv4;
      ports = true;
    } else if (pkt.l4Kind === L4_UDP && hashTypes & VIRTIO_NET_RSS_HASH_TYPE_UDPv4) {
      report = VIRTIO_NET_HASH_REPORT_UDPv4;
      ports = true;
    } else if (hashTypes & VIRTIO_NET_RSS_HASH_TYPE_IPv4) {
      report = VIRTIO_NET_HASH_REPORT_IPv4;
    } else {
      return false;
    }
  } else if (pkt.l3Kind === L3_IPV6) {
    // QEMU's order (virtio_net_get_hash_type), NDIS's too: per L4 kind the _EX type first, then the plain.
    if (
      pkt.l4Kind === L4_TCP &&
      hashTypes & (VIRTIO_NET_RSS_HASH_TYPE_TCP_EX | VIRTIO_NET_RSS_HASH_TYPE_TCPv6)
    ) {
      ex = (hashTypes & VIRTIO_NET_RSS_HASH_TYPE_TCP_EX) !== 0;
      report = ex ? VIRTIO_NET_HASH_REPORT_TCPv6_EX : VIRTIO_NET_HASH_REPORT_TCPv6;
      ports = true;
    } else if (
      pkt.l4Kind === L4_UDP &&
      hashTypes & (VIRTIO_NET_RSS_HASH_TYPE_UDP_EX | VIRTIO_NET_RSS_HASH_TYPE_UDPv6)
    ) {
      ex = (hashTypes & VIRTIO_NET_RSS_HASH_TYPE_UDP_EX) !== 0;
      report = ex ? VIRTIO_NET_HASH_REPORT_UDPv6_EX : VIRTIO_NET_HASH_REPORT_UDPv6;
      ports = true;
    } else if (hashTypes & VIRTIO_NET_RSS_HASH_TYPE_IP_EX) {
      report = VIRTIO_NET_HASH_REPORT_IPv6_EX;
      ex = true;
    } else if (hashTypes & VIRTIO_NET_RSS_HASH_TYPE_IPv6) {
      report = VIRTIO_NET_HASH_REPORT_IPv6;
    } else {
      return false;
    }
  } else {
    return false;
  }
  const n = pkt.addrLength;
  let h = key.partial(frame, ex ? pkt.exSrcAddrOffset : pkt.srcAddrOffset, n, 0);
  h ^= key.partial(frame, ex ? pkt.exDstAddrOffset : pkt.dstAddrOffset, n, n);
  if (ports) h ^= key.partial(frame, pkt.l4Offset, 4, 2 * n);
  out.hash = h >>> 0;
  out.reportType = report;
  return true;
}

const scratchPacket = new ParsedPacket();
const scratchKey = new ToeplitzKey();
const scratchResult = new RssHashResult();

/**
 * The RSS hash of an Ethernet frame (no virtio-net header) for enabled `hashTypes` and `key`
 * `{ hash, reportType }`, or null when no enabled hash type applies (report NONE).
 * Never throws for any frame content.
 */
export function rssHash(
  frame: Uint8Array,
  hashTypes: number,
  key: Uint8Array,
): { hash: number; reportType: number } | null {
  scratchKey.setKey(key);
  parsePacket(frame, scratchPacket);
  if (!rssHashParsed(frame, scratchPacket, hashTypes, scratchKey, scratchResult)) return null;
  return { hash: scratchResult.hash, reportType: scratchResult.reportType };
}
