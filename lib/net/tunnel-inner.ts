/**
 * Encapsulation recognition for the inner header hash (VIRTIO 1.4 §5.1.6 "Inner Header Hash",
 * "Encapsulation types supported/enabled for inner header hash"): given the parsed outer headers of a
 * frame and the enabled `VIRTIO_NET_HASH_TUNNEL_TYPE_*` bits, finds the inner packet of a tunnel of an
 * enabled type and parses it, so the RSS hash can be computed over the inner headers.
 *
 * How each type is recognised (readings of the cited RFCs, docs/compatibility.md "Inner header hash"):
 * - GRE (IP protocol 47), version 0, no routing bit nor reserved flag set: GRE_2784 when it carries no key
 *   and no sequence number, GRE_2890 when it carries either, GRE_7676 when the delivery header or the
 *   payload is IPv6, NVGRE when it has a key, no checksum, no sequence number and carries Ethernet
 *   (0x6558). A packet can be of several types; any enabled one selects the inner header.
 * - GRE_UDP: UDP destination port 4754 followed by such a GRE header (RFC 8086).
 * - VXLAN: UDP destination port 4789 with the I flag; VXLAN_GPE: port 4790, version 0, next protocol
 *   IPv4, IPv6 or Ethernet (Ethernet when the P flag is clear); GENEVE: port 6081, version 0.
 * - IPIP: IP protocol 4 (IPv4 payload) or 41 (IPv6 payload), under IPv4 or IPv6.
 * The payload must be IPv4, IPv6 or Ethernet; a tunnel carrying anything else is not recognised (the
 * outer header is hashed). Only one level of encapsulation is looked at, as the spec says. UDP tunnels
 * are recognised by their IANA ports only: the device cannot know other ports configured in the guest.
 */
import {
  ETH_P_IPV4,
  ETH_P_IPV6,
  L3_IPV4,
  L3_IPV6,
  L4_UDP,
  type ParsedPacket,
  parseIpPacketAs,
  parsePacket,
} from './packet-parser.js';

/** `VIRTIO_NET_HASH_TUNNEL_TYPE_*` (VIRTIO 1.4 §5.1.6, "Encapsulation types supported/enabled for inner header hash"). */
export const HashTunnelType = {
  GRE_2784: 1 << 0,
  GRE_2890: 1 << 1,
  GRE_7676: 1 << 2,
  GRE_UDP: 1 << 3,
  VXLAN: 1 << 4,
  VXLAN_GPE: 1 << 5,
  GENEVE: 1 << 6,
  IPIP: 1 << 7,
  NVGRE: 1 << 8,
} as const;

/** Every type this implementation recognises: the device's `supported_tunnel_types`. */
export const HASH_TUNNEL_SUPPORTED_TYPES = 0x1ff;

const IPPROTO_IPIP = 4;
const IPPROTO_IPV6 = 41;
const IPPROTO_GRE = 47;
const ETH_P_TEB = 0x6558;
const PORT_GRE_UDP = 4754;
const PORT_VXLAN = 4789;
const PORT_VXLAN_GPE = 4790;
const PORT_GENEVE = 6081;

const GRE_C = 0x8000;
const GRE_K = 0x2000;
const GRE_S = 0x1000;
/** Routing present, strict source route, recursion control, flags and version: all zero in RFC 2784/2890. */
const GRE_MUST_BE_ZERO = 0x4fff;

function be16(b: Uint8Array, o: number): number {
  return (b[o]! << 8) | b[o + 1]!;
}

/**
 * If the frame parsed into `outer` (offsets index `frame`) is a tunnel of a type in `enabled`, parses its
 * inner packet into `inner` and returns true; otherwise returns false and leaves `inner` unspecified.
 * The inner packet may be truncated or malformed (then it has no hashable headers). Allocates nothing,
 * never throws, never reads outside the frame.
 */
export function parseTunnelInner(
  frame: Uint8Array,
  outer: ParsedPacket,
  enabled: number,
  inner: ParsedPacket,
): boolean {
  if (enabled === 0 || outer.l4Offset < 0 || outer.isFragment) return false;
  if (outer.l3Kind !== L3_IPV4 && outer.l3Kind !== L3_IPV6) return false;
  const end = outer.l3Offset - outer.l2Length + outer.frameLength;
  const l4 = outer.l4Offset;
  const proto = outer.l4Proto;
  const v6 = outer.l3Kind === L3_IPV6;
  if (proto === IPPROTO_GRE) return gre(frame, l4, end, v6, 0, enabled, inner);
  if (proto === IPPROTO_IPIP || proto === IPPROTO_IPV6) {
    if ((enabled & HashTunnelType.IPIP) === 0) return false;
    parseIpPacketAs(frame, proto === IPPROTO_IPIP ? ETH_P_IPV4 : ETH_P_IPV6, inner, l4, end);
    return true;
  }
  if (outer.l4Kind !== L4_UDP) return false;
  const p = l4 + 8;
  switch (be16(frame, l4 + 2)) {
    case PORT_GRE_UDP:
      return gre(frame, p, end, v6, HashTunnelType.GRE_UDP, enabled, inner);
    case PORT_VXLAN:
      if ((enabled & HashTunnelType.VXLAN) === 0 || p + 8 > end || (frame[p]! & 0x08) === 0) return false;
      parsePacket(frame, inner, p + 8, end);
      return true;
    case PORT_VXLAN_GPE: {
      if ((enabled & HashTunnelType.VXLAN_GPE) === 0 || p + 8 > end) return false;
      const flags = frame[p]!;
      if ((flags & 0x30) !== 0) return false; // version 0 only
      const next = (flags & 0x04) === 0 ? 3 : frame[p + 3]!;
      return payload(
        frame,
        next === 1 ? ETH_P_IPV4 : next === 2 ? ETH_P_IPV6 : next === 3 ? ETH_P_TEB : -1,
        p + 8,
        end,
        inner,
      );
    }
    case PORT_GENEVE: {
      if ((enabled & HashTunnelType.GENEVE) === 0 || p + 8 > end || frame[p]! >> 6 !== 0) return false;
      const start = p + 8 + (frame[p]! & 0x3f) * 4;
      if (start > end) return false;
      return payload(frame, be16(frame, p + 2), start, end, inner);
    }
    default:
      return false;
  }
}

/** A GRE header at `p`; `types` holds the types the delivery already implies (GRE_UDP). */
function gre(
  frame: Uint8Array,
  p: number,
  end: number,
  v6: boolean,
  types: number,
  enabled: number,
  inner: ParsedPacket,
): boolean {
  if (p + 4 > end) return false;
  const flags = be16(frame, p);
  if ((flags & GRE_MUST_BE_ZERO) !== 0) return false;
  const protocol = be16(frame, p + 2);
  let t = types;
  if (types === 0) {
    t = (flags & (GRE_K | GRE_S)) === 0 ? HashTunnelType.GRE_2784 : HashTunnelType.GRE_2890;
    if (v6 || protocol === ETH_P_IPV6) t |= HashTunnelType.GRE_7676;
    if ((flags & (GRE_C | GRE_K | GRE_S)) === GRE_K && protocol === ETH_P_TEB) t |= HashTunnelType.NVGRE;
  }
  if ((t & enabled) === 0) return false;
  const start =
    p +
    4 +
    ((flags & GRE_C) !== 0 ? 4 : 0) +
    ((flags & GRE_K) !== 0 ? 4 : 0) +
    ((flags & GRE_S) !== 0 ? 4 : 0);
  if (start > end) return false;
  return payload(frame, protocol, start, end, inner);
}

/** Parses the tunnel payload of EtherType `protocol` at `start`; false for a payload we do not hash. */
function payload(
  frame: Uint8Array,
  protocol: number,
  start: number,
  end: number,
  inner: ParsedPacket,
): boolean {
  if (protocol === ETH_P_TEB) parsePacket(frame, inner, start, end);
  else if (protocol === ETH_P_IPV4 || protocol === ETH_P_IPV6)
    parseIpPacketAs(frame, protocol, inner, start, end);
  else return false;
  return true;
}
