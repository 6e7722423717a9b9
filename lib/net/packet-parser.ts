/**
 * An allocation-free Ethernet/IP/TCP/UDP header parser for receive steering (RSS, VIRTIO 1.3 §5.1.6.4.3)
 * and software offloads.
 *
 * `parsePacket(frame, out)` fills a caller-owned `ParsedPacket` that is reused for every frame. It never
 * reads past `frame.length`: a header the frame cuts short sets `truncated` and stops the walk, and the
 * fields of layers not reached keep their "absent" values (offset -1, kind NONE).
 */

/** No L3 header recognised (frame shorter than an Ethernet header, or truncated/malformed IP header). */
export const L3_NONE = 0;
export const L3_IPV4 = 1;
export const L3_IPV6 = 2;
/** An EtherType we do not parse (ARP, MPLS, a third VLAN tag, ...). */
export const L3_OTHER = 3;

export const L4_NONE = 0;
export const L4_TCP = 1;
export const L4_UDP = 2;

export const ETH_P_IPV4 = 0x0800;
export const ETH_P_IPV6 = 0x86dd;
export const ETH_P_8021Q = 0x8100;
export const ETH_P_8021AD = 0x88a8;

export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;

const ETH_HLEN = 14;
const VLAN_HLEN = 4;
const IPV4_MIN_HLEN = 20;
const IPV6_HLEN = 40;
const TCP_MIN_HLEN = 20;
const UDP_HLEN = 8;

// IPv6 extension headers walked (RFC 8200 §4; Linux ipv6_ext_hdr()). Mobility (135) is left terminal as
// Linux does: its payload is not an upper-layer header.
const NH_HOP_BY_HOP = 0;
const NH_ROUTING = 43;
const NH_FRAGMENT = 44;
const NH_AH = 51;
const NH_DEST_OPTS = 60;
/** Mobile IPv6 Home Address destination option (RFC 6275 §6.3). */
const IPV6_OPT_HOME_ADDRESS = 0xc9;
/** Type 2 routing header (RFC 6275 §6.4): one 16-byte address, segments left 1. */
const IPV6_RT_TYPE2 = 2;

/** The result of `parsePacket`: offsets into the frame, reused across frames (allocate one per queue). */
export class ParsedPacket {
  /** Length of the parsed frame. */
  frameLength = 0;
  /** Bytes of Ethernet header including VLAN tags (= offset of L3). */
  l2Length = 0;
  /** VLAN tags seen (0..2); a frame with a third tag is L3_OTHER. */
  vlanCount = 0;
  /** TCI of the outer and inner tag (valid below `vlanCount`). */
  vlanTci0 = 0;
  vlanTci1 = 0;
  /** EtherType after the VLAN tags (-1 when the frame has no complete Ethernet header). */
  etherType = -1;
  /** L3_NONE / L3_IPV4 / L3_IPV6 / L3_OTHER. */
  l3Kind = L3_NONE;
  l3Offset = -1;
  /** IPv4: IHL*4. IPv6: 40 plus every extension header walked (= l4Offset - l3Offset). */
  ipHeaderLength = 0;
  /** Offsets of the source/destination address in the IP header (4 or 16 bytes each). */
  srcAddrOffset = -1;
  dstAddrOffset = -1;
  /** Address length: 4 (IPv4), 16 (IPv6), 0 otherwise. */
  addrLength = 0;
  /** IPv6 only: at least one extension header is present. */
  hasExtHeaders = false;
  /**
   * IPv6 only: the addresses the _EX hash types use (VIRTIO 1.3 §5.1.6.4.3.4): the Home Address option
   * in a Destination Options header, else the source; the Routing Header type 2 address, else the
   * destination.
   */
  exSrcAddrOffset = -1;
  exDstAddrOffset = -1;
  /** IPv4 MF set or fragment offset != 0; IPv6 a Fragment header with MF or offset != 0. */
  isFragment = false;
  /** IPv4 protocol / last IPv6 Next Header (-1 when no IP header). */
  l4Proto = -1;
  /** Offset just past the IP header(s) (-1 when not reached). */
  l4Offset = -1;
  /** L4_TCP / L4_UDP only when the whole minimal L4 header is in the frame and it is not a fragment. */
  l4Kind = L4_NONE;
  /** Source and destination ports are at l4Offset, l4Offset+2 (implied by l4Kind != NONE). */
  portsPresent = false;
  /** TCP: data offset in bytes (doff*4); UDP: 8; else 0. */
  l4HeaderLength = 0;
  /** The frame ended inside a header it announced. */
  truncated = false;
  /** A header field is invalid (IP version, IHL < 5, option lengths). */
  malformed = false;

  reset(frameLength: number): void {
    this.frameLength = frameLength;
    this.l2Length = 0;
    this.vlanCount = 0;
    this.vlanTci0 = 0;
    this.vlanTci1 = 0;
    this.etherType = -1;
    this.l3Kind = L3_NONE;
    this.l3Offset = -1;
    this.ipHeaderLength = 0;
    this.srcAddrOffset = -1;
    this.dstAddrOffset = -1;
    this.addrLength = 0;
    this.hasExtHeaders = false;
    this.exSrcAddrOffset = -1;
    this.exDstAddrOffset = -1;
    this.isFragment = false;
    this.l4Proto = -1;
    this.l4Offset = -1;
    this.l4Kind = L4_NONE;
    this.portsPresent = false;
    this.l4HeaderLength = 0;
    this.truncated = false;
    this.malformed = false;
  }
}

function be16(b: Uint8Array, o: number): number {
  return (b[o]! << 8) | b[o + 1]!;
}

/**
 * Parses the Ethernet frame (without virtio-net header) at `frame[start, end)` into `out`. Returns `out`.
 * Offsets in `out` index `frame` (so they are frame offsets when `start` is 0); `start`/`end` let a caller
 * parse a frame inside guest memory without a view. Never throws and never reads outside `[start, end)`.
 */
export function parsePacket(
  frame: Uint8Array,
  out: ParsedPacket,
  start = 0,
  end = frame.length,
): ParsedPacket {
  const len = end;
  out.reset(end - start);
  if (end - start < ETH_HLEN) {
    out.truncated = true;
    return out;
  }
  let et = be16(frame, start + 12);
  let off = start + ETH_HLEN;
  while (et === ETH_P_8021Q || et === ETH_P_8021AD) {
    if (out.vlanCount === 2) {
      // A third tag: we do not look further (QEMU's eth_get_l2_hdr_length stops at two as well).
      out.l2Length = off - start;
      out.etherType = et;
      out.l3Offset = off;
      out.l3Kind = L3_OTHER;
      return out;
    }
    if (off + VLAN_HLEN > len) {
      out.truncated = true;
      out.l2Length = off - start;
      return out;
    }
    if (out.vlanCount === 0) out.vlanTci0 = be16(frame, off);
    else out.vlanTci1 = be16(frame, off);
    out.vlanCount++;
    et = be16(frame, off + 2);
    off += VLAN_HLEN;
  }
  out.l2Length = off - start;
  out.etherType = et;
  out.l3Offset = off;
  if (et === ETH_P_IPV4) parseIpv4(frame, off, len, out);
  else if (et === ETH_P_IPV6) parseIpv6(frame, off, len, out);
  else out.l3Kind = L3_OTHER;
  return out;
}

/**
 * Parses the IP packet (no Ethernet header) at `frame[start, end)` into `out`, IPv4 or IPv6 by the
 * version nibble: the inner packet of a tunnel (VIRTIO 1.4 `inner_nh_offset`). `l2Length` is 0, offsets
 * index `frame`; a version other than 4 or 6 is `malformed`. Never throws.
 */
export function parseIpPacket(
  frame: Uint8Array,
  out: ParsedPacket,
  start: number,
  end: number,
): ParsedPacket {
  out.reset(end - start);
  out.l3Offset = start;
  if (start >= end) {
    out.truncated = true;
    return out;
  }
  const version = frame[start]! >> 4;
  if (version === 4) parseIpv4(frame, start, end, out);
  else if (version === 6) parseIpv6(frame, start, end, out);
  else out.malformed = true;
  return out;
}

/**
 * Parses an IP packet without link-layer header at `frame[start, end)` (the payload of a GRE, IP-in-IP or
 * VXLAN-GPE tunnel) into `out`, as `parsePacket` would after an Ethernet header of EtherType `etherType`.
 * `l2Length` is 0. Never throws and never reads outside `[start, end)`.
 */
export function parseIpPacketAs(
  frame: Uint8Array,
  etherType: number,
  out: ParsedPacket,
  start: number,
  end: number,
): ParsedPacket {
  out.reset(end - start);
  out.etherType = etherType;
  out.l3Offset = start;
  if (etherType === ETH_P_IPV4) parseIpv4(frame, start, end, out);
  else if (etherType === ETH_P_IPV6) parseIpv6(frame, start, end, out);
  else out.l3Kind = L3_OTHER;
  return out;
}

function parseIpv4(b: Uint8Array, off: number, len: number, out: ParsedPacket): void {
  if (off + IPV4_MIN_HLEN > len) {
    out.truncated = true;
    return;
  }
  const vihl = b[off]!;
  const ihl = (vihl & 0x0f) * 4;
  if (vihl >> 4 !== 4 || ihl < IPV4_MIN_HLEN) {
    out.malformed = true;
    return;
  }
  if (off + ihl > len) {
    out.truncated = true;
    return;
  }
  out.l3Kind = L3_IPV4;
  out.ipHeaderLength = ihl;
  out.srcAddrOffset = off + 12;
  out.dstAddrOffset = off + 16;
  out.exSrcAddrOffset = off + 12;
  out.exDstAddrOffset = off + 16;
  out.addrLength = 4;
  out.isFragment = (be16(b, off + 6) & 0x3fff) !== 0;
  out.l4Proto = b[off + 9]!;
  out.l4Offset = off + ihl;
  if (!out.isFragment) parseL4(b, len, out);
}

function parseIpv6(b: Uint8Array, off: number, len: number, out: ParsedPacket): void {
  if (off + IPV6_HLEN > len) {
    out.truncated = true;
    return;
  }
  if (b[off]! >> 4 !== 6) {
    out.malformed = true;
    return;
  }
  out.l3Kind = L3_IPV6;
  out.srcAddrOffset = off + 8;
  out.dstAddrOffset = off + 24;
  out.addrLength = 16;
  let exSrc = -1;
  let exDst = -1;
  let nh = b[off + 6]!;
  let p = off + IPV6_HLEN;
  // Every header consumes at least 8 bytes, so the walk is bounded by the frame length.
  while (
    nh === NH_HOP_BY_HOP ||
    nh === NH_ROUTING ||
    nh === NH_DEST_OPTS ||
    nh === NH_FRAGMENT ||
    nh === NH_AH
  ) {
    out.hasExtHeaders = true;
    let hlen = 0;
    if (p + 2 <= len) {
      hlen = nh === NH_FRAGMENT ? 8 : nh === NH_AH ? (b[p + 1]! + 2) * 4 : (b[p + 1]! + 1) * 8;
    }
    if (hlen === 0 || p + hlen > len) {
      out.truncated = true;
      out.exSrcAddrOffset = exSrc >= 0 ? exSrc : out.srcAddrOffset;
      out.exDstAddrOffset = exDst >= 0 ? exDst : out.dstAddrOffset;
      out.l4Proto = nh;
      return;
    }
    const end = p + hlen;
    if (nh === NH_ROUTING) {
      if (exDst < 0 && b[p + 2] === IPV6_RT_TYPE2 && b[p + 1] === 2 && b[p + 3] === 1) exDst = p + 8;
    } else if (nh === NH_DEST_OPTS) {
      if (exSrc < 0) exSrc = findHomeAddress(b, p + 2, end, out);
    } else if (nh === NH_FRAGMENT) {
      if ((be16(b, p + 2) & 0xfff9) !== 0) out.isFragment = true;
    }
    nh = b[p]!;
    p = end;
  }
  out.exSrcAddrOffset = exSrc >= 0 ? exSrc : out.srcAddrOffset;
  out.exDstAddrOffset = exDst >= 0 ? exDst : out.dstAddrOffset;
  out.l4Proto = nh;
  out.l4Offset = p;
  out.ipHeaderLength = p - off;
  if (!out.isFragment) parseL4(b, len, out);
}

/** Scans TLV options in [q, end) for the Home Address option; returns the address offset or -1. */
function findHomeAddress(b: Uint8Array, q: number, end: number, out: ParsedPacket): number {
  while (q < end) {
    const type = b[q]!;
    if (type === 0) {
      q += 1; // Pad1
      continue;
    }
    if (q + 2 > end) {
      out.malformed = true;
      return -1;
    }
    const optLen = b[q + 1]!;
    if (q + 2 + optLen > end) {
      out.malformed = true;
      return -1;
    }
    if (type === IPV6_OPT_HOME_ADDRESS && optLen >= 16) return q + 2;
    q += 2 + optLen;
  }
  return -1;
}

function parseL4(b: Uint8Array, len: number, out: ParsedPacket): void {
  const l4 = out.l4Offset;
  const proto = out.l4Proto;
  if (proto === IPPROTO_TCP) {
    if (l4 + TCP_MIN_HLEN > len) {
      out.truncated = true;
      return;
    }
    out.l4Kind = L4_TCP;
    out.portsPresent = true;
    out.l4HeaderLength = (b[l4 + 12]! >> 4) * 4;
  } else if (proto === IPPROTO_UDP) {
    if (l4 + UDP_HLEN > len) {
      out.truncated = true;
      return;
    }
    out.l4Kind = L4_UDP;
    out.portsPresent = true;
    out.l4HeaderLength = UDP_HLEN;
  }
}
