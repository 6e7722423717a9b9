/**
 * GSO over a UDP tunnel (VIRTIO 1.4 §5.1.6.2 "Packet Transmission", VIRTIO_NET_F_HOST_UDP_TUNNEL_GSO and
 * VIRTIO_NET_F_GUEST_UDP_TUNNEL_GSO): the checks a device applies to a frame whose gso_type carries
 * VIRTIO_NET_HDR_GSO_UDP_TUNNEL_IPV4 or _IPV6 before it segments the frame or hands it on with its
 * metadata. The frame is an outer Ethernet/IP/UDP packet (VXLAN, GENEVE, ...) whose payload, past the
 * tunnel header, holds an inner IP packet with TCP (TSO) or UDP (USO) to be segmented.
 *
 * Both readings of the tunnel bit are accepted: the spec's text ties it to the inner network header,
 * Linux (include/linux/virtio_net.h) and QEMU to the outer one; the device reads each version from the
 * packet itself and only requires exactly one bit (docs/compatibility.md).
 */
import type { NetOffload } from './backend.js';
import {
  L3_IPV4,
  L3_IPV6,
  L4_TCP,
  L4_UDP,
  type ParsedPacket,
  parseIpPacket,
  parsePacket,
} from './packet-parser.js';
import { GSO_UDP_TUNNEL, GsoType, NetHdrFlags } from './vnet-header.js';

/** The frame's tunnel metadata is valid. */
export const TUNNEL_OK = 0;
/** Both tunnel bits, or a tunnel bit over no GSO type, UFO or an unknown inner type (§5.1.6.2.2). */
export const TUNNEL_ERR_GSO_TYPE = 1;
/** NEEDS_CSUM missing or DATA_VALID set (the device "MUST NOT accept the packet"). */
export const TUNNEL_ERR_FLAGS = 2;
/** outer_th_offset is not an outer UDP header the frame has (Ethernet + IPv4/IPv6, not a fragment). */
export const TUNNEL_ERR_OUTER = 3;
/** inner_nh_offset / csum_start / csum_offset do not name the inner IP and TCP/UDP header gso_type says. */
export const TUNNEL_ERR_INNER = 4;

const UDP_HLEN = 8;
/** Offset of the checksum in a TCP and a UDP header. */
const TCP_CSUM = 16;
const UDP_CSUM = 6;

/** Whether `o` asks for GSO over a UDP tunnel (either tunnel bit). */
export function isTunnelGso(o: NetOffload): boolean {
  return (o.gsoType & GSO_UDP_TUNNEL) !== 0;
}

/** The GSO type inside the tunnel: gso_type without the tunnel and ECN bits. */
export function innerGsoType(o: NetOffload): number {
  return o.gsoType & ~(GSO_UDP_TUNNEL | GsoType.ECN);
}

/**
 * Checks a tunnel GSO request against `frame` (VIRTIO 1.4 §5.1.6.2.2, device requirements, and the
 * offsets Linux's virtio_net_hdr_tnl_to_skb insists on): exactly one tunnel bit; NEEDS_CSUM without
 * DATA_VALID; an inner TCPV4, TCPV6 or UDP_L4 (UFO is not carried in tunnels); `outer_th_offset` the UDP
 * header of the outer IPv4/IPv6 packet; `inner_nh_offset` an IP header at least 8 bytes past it, of the
 * version TCPV4/TCPV6 name; `csum_start` its TCP/UDP header and `csum_offset` that header's checksum.
 * The frame is `bytes[start, end)` (offsets in `o` count from `start`, so a frame in guest memory needs
 * no view); `outer` (from the Ethernet header) and `inner` (from `inner_nh_offset`) get offsets that
 * index `bytes`. Returns TUNNEL_OK or a TUNNEL_ERR_* code; never throws.
 */
export function checkTunnelOffload(
  bytes: Uint8Array,
  o: NetOffload,
  outer: ParsedPacket,
  inner: ParsedPacket,
  start = 0,
  end = bytes.length,
): number {
  const tunnel = o.gsoType & GSO_UDP_TUNNEL;
  if (tunnel === 0 || tunnel === GSO_UDP_TUNNEL) return TUNNEL_ERR_GSO_TYPE;
  const gso = innerGsoType(o);
  if (gso !== GsoType.TCPV4 && gso !== GsoType.TCPV6 && gso !== GsoType.UDP_L4) return TUNNEL_ERR_GSO_TYPE;
  if ((o.flags & NetHdrFlags.NEEDS_CSUM) === 0 || (o.flags & NetHdrFlags.DATA_VALID) !== 0)
    return TUNNEL_ERR_FLAGS;
  const len = end - start;
  const outerTh = o.outerThOffset ?? 0;
  const innerNh = o.innerNhOffset ?? 0;
  parsePacket(bytes, outer, start, end);
  if (
    (outer.l3Kind !== L3_IPV4 && outer.l3Kind !== L3_IPV6) ||
    outer.isFragment ||
    outer.l4Kind !== L4_UDP ||
    outer.l4Offset - start !== outerTh
  )
    return TUNNEL_ERR_OUTER;
  if (!Number.isInteger(innerNh) || innerNh < outerTh + UDP_HLEN || innerNh >= len) return TUNNEL_ERR_INNER;
  parseIpPacket(bytes, inner, start + innerNh, end);
  if (inner.isFragment || inner.truncated || inner.malformed) return TUNNEL_ERR_INNER;
  if (gso === GsoType.UDP_L4) {
    if (inner.l4Kind !== L4_UDP || o.csumOffset !== UDP_CSUM) return TUNNEL_ERR_INNER;
  } else {
    const wantL3 = gso === GsoType.TCPV4 ? L3_IPV4 : L3_IPV6;
    if (inner.l3Kind !== wantL3 || inner.l4Kind !== L4_TCP || o.csumOffset !== TCP_CSUM)
      return TUNNEL_ERR_INNER;
    if (inner.l4HeaderLength < 20 || inner.l4Offset + inner.l4HeaderLength > end) return TUNNEL_ERR_INNER;
  }
  if (inner.l4Offset - start !== o.csumStart) return TUNNEL_ERR_INNER;
  return TUNNEL_OK;
}
