/**
 * Frame builders for the synthetic guest and its peers: Ethernet, ARP, IPv4 with ICMP echo, UDP and TCP,
 * checksums complete, and VXLAN encapsulation with the offsets a UDP tunnel GSO header names. Plus `PeerResponder`, a tiny host that answers ARP requests and ICMP echo
 * requests, used by the demo and tests as the far end of a `MemoryBackend`. The bytes come from the
 * shared builders in lib/net/frames.ts; this module gives them string addresses.
 */
import * as F from '../../lib/net/frames.js';

export function macBytes(mac: string): Uint8Array {
  return F.macAddr(mac);
}

export function ipBytes(ip: string): Uint8Array {
  return F.ipv4Addr(ip);
}

export function formatIp(b: Uint8Array, o = 0): string {
  return `${b[o]}.${b[o + 1]}.${b[o + 2]}.${b[o + 3]}`;
}

export function formatMacAt(b: Uint8Array, o = 0): string {
  return Array.from(b.subarray(o, o + 6), (x) => x.toString(16).padStart(2, '0')).join(':');
}

export function ethernet(dst: string, src: string, etherType: number, payload: Uint8Array): Uint8Array {
  return F.ethernet(macBytes(dst), macBytes(src), etherType, payload);
}

/** ARP request or reply (RFC 826) for IPv4 over Ethernet. */
export function arp(
  op: 1 | 2,
  senderMac: string,
  senderIp: string,
  targetMac: string,
  targetIp: string,
): Uint8Array {
  return F.arp(op, macBytes(senderMac), ipBytes(senderIp), macBytes(targetMac), ipBytes(targetIp));
}

/** IPv4 header (DF, TTL 64) + payload with the header checksum. */
export function ipv4(src: string, dst: string, proto: number, payload: Uint8Array, id = 0): Uint8Array {
  return F.ipv4({ src, dst, proto, payload, id });
}

/** ICMP echo request (type 8) or reply (type 0). */
export function icmpEcho(type: 0 | 8, id: number, seq: number, data: Uint8Array): Uint8Array {
  return F.icmpEcho(type, id, seq, data);
}

/** UDP datagram in IPv4 with its checksum. */
export function udp4(src: string, dst: string, sport: number, dport: number, data: Uint8Array): Uint8Array {
  return F.withL4ChecksumV4(ipv4(src, dst, 17, F.udp(sport, dport, data)));
}

/** TCP segment (20-byte header, given flags, ack 0) in IPv4 with its checksum. */
export function tcp4(
  src: string,
  dst: string,
  sport: number,
  dport: number,
  seq: number,
  flags: number,
  data: Uint8Array,
): Uint8Array {
  return F.withL4ChecksumV4(ipv4(src, dst, 6, F.tcp(sport, dport, data, flags, seq, 0)));
}

/** VXLAN's IANA port (RFC 7348). */
export const VXLAN_PORT = 4789;

/**
 * `inner` (an Ethernet frame) in VXLAN (RFC 7348, VNI `vni`) over UDP/IPv4 from `src` to `dst`, outer
 * UDP checksum 0 (none) unless `udpChecksum`: 'full' computes it, 'pseudo' leaves the pseudo-header sum a
 * driver leaves with VIRTIO_NET_HDR_F_UDP_TUNNEL_CSUM. Outer IPv4 ID `id`, DF set.
 */
export function vxlan4(
  outer: { dstMac: string; srcMac: string; src: string; dst: string; sport: number; id?: number },
  vni: number,
  inner: Uint8Array,
  udpChecksum: 'none' | 'full' | 'pseudo' = 'none',
): Uint8Array {
  const body = F.concat(Uint8Array.of(0x08, 0, 0, 0), F.u32(vni << 8), inner);
  let ip = ipv4(outer.src, outer.dst, 17, F.udp(outer.sport, VXLAN_PORT, body), outer.id ?? 0);
  if (udpChecksum !== 'none') ip = F.withL4ChecksumV4(ip, udpChecksum === 'pseudo');
  return ethernet(outer.dstMac, outer.srcMac, 0x0800, ip);
}

/** The UDP tunnel offsets of a `vxlan4` frame (VIRTIO 1.4 outer_th_offset, inner_nh_offset). */
export const VXLAN4_OFFSETS = { outerThOffset: 14 + 20, innerNhOffset: 14 + 20 + 8 + 8 + 14 } as const;

/**
 * A host on the other side of a backend that answers ARP requests for its IP and ICMP echo requests to
 * it, like the kernel would. `handle` takes a guest frame and returns the reply frame, or null.
 */
export class PeerResponder {
  arpAnswered = 0;
  echoAnswered = 0;
  constructor(
    readonly mac: string,
    readonly ip: string,
  ) {}

  handle(frame: Uint8Array): Uint8Array | null {
    if (frame.length < 14) return null;
    const type = (frame[12]! << 8) | frame[13]!;
    if (type === 0x0806 && frame.length >= 42 && frame[21] === 1 && formatIp(frame, 38) === this.ip) {
      this.arpAnswered++;
      return arp(2, this.mac, this.ip, formatMacAt(frame, 22), formatIp(frame, 28));
    }
    if (type === 0x0800 && frame.length >= 42 && frame[23] === 1 && formatIp(frame, 30) === this.ip) {
      const ihl = (frame[14]! & 0xf) * 4;
      const icmp = frame.subarray(14 + ihl);
      if (icmp[0] !== 8) return null;
      this.echoAnswered++;
      const id = (icmp[4]! << 8) | icmp[5]!;
      const seq = (icmp[6]! << 8) | icmp[7]!;
      const reply = icmpEcho(0, id, seq, icmp.subarray(8));
      return ethernet(formatMacAt(frame, 6), this.mac, 0x0800, ipv4(this.ip, formatIp(frame, 26), 1, reply));
    }
    return null;
  }
}
