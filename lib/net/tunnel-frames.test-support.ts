/**
 * Test-only builders of encapsulated frames for the inner header hash tests: one per
 * `VIRTIO_NET_HASH_TUNNEL_TYPE_*`, each with its inner flow and what an independent Toeplitz computation
 * over the inner (and outer) tuple must give.
 */
import { concat, eth, ipv4, ipv4Addr, ipv6, ipv6Addr, tcp, u16, u32, udp } from './frames.js';
import { HashTunnelType } from './tunnel-inner.js';

/** An inner flow: addresses, protocol (6 TCP, 17 UDP) and ports. */
export interface Flow {
  v6: boolean;
  src: string;
  dst: string;
  proto: 6 | 17;
  sport: number;
  dport: number;
}

/** The IP packet of a flow (no Ethernet header). */
export function ipPacket(f: Flow, payload = new Uint8Array(16)): Uint8Array {
  const l4 = f.proto === 6 ? tcp(f.sport, f.dport, payload) : udp(f.sport, f.dport, payload);
  return f.v6
    ? ipv6(f.src, f.dst, f.proto, l4)
    : ipv4({ src: f.src, dst: f.dst, proto: f.proto, payload: l4 });
}

/** The flow as an Ethernet frame. */
export function ethPacket(f: Flow): Uint8Array {
  return eth(f.v6 ? 0x86dd : 0x0800, ipPacket(f));
}

/** The Toeplitz input RSS hashes for a flow: addresses, then ports when `ports`. */
export function tuple(f: Flow, ports: boolean): Uint8Array {
  const a = f.v6 ? concat(ipv6Addr(f.src), ipv6Addr(f.dst)) : concat(ipv4Addr(f.src), ipv4Addr(f.dst));
  return ports ? concat(a, u16(f.sport), u16(f.dport)) : a;
}

/** A GRE header (RFC 2784 / 2890): optional checksum, key and sequence number words. */
export function greHeader(
  protocol: number,
  o: { csum?: boolean; key?: number; seq?: number } = {},
): Uint8Array {
  const flags =
    (o.csum ? 0x8000 : 0) | (o.key !== undefined ? 0x2000 : 0) | (o.seq !== undefined ? 0x1000 : 0);
  const parts = [u16(flags), u16(protocol)];
  if (o.csum) parts.push(u32(0));
  if (o.key !== undefined) parts.push(u32(o.key));
  if (o.seq !== undefined) parts.push(u32(o.seq));
  return concat(...parts);
}

/** The outer delivery: IPv4 198.51.100.1 → 198.51.100.2 or IPv6 2001:db8::1 → 2001:db8::2. */
export function outerIp(v6: boolean, proto: number, payload: Uint8Array): Uint8Array {
  return v6
    ? eth(0x86dd, ipv6('2001:db8::1', '2001:db8::2', proto, payload))
    : eth(0x0800, ipv4({ src: '198.51.100.1', dst: '198.51.100.2', proto, payload }));
}

/** An outer UDP datagram to `port` from source port 49152 carrying `payload`. */
export function outerUdp(v6: boolean, port: number, payload: Uint8Array): Uint8Array {
  return outerIp(v6, 17, udp(49152, port, payload));
}

/** One encapsulated frame, the type it is (the bit that makes the inner header hashed) and its flows. */
export interface Encapsulated {
  name: string;
  type: number;
  frame: Uint8Array;
  inner: Flow;
  /** The outer flow the hash falls back to (UDP ports for UDP tunnels; addresses only otherwise). */
  outer: Flow;
  outerHasPorts: boolean;
}

const OUTER_V4 = { src: '198.51.100.1', dst: '198.51.100.2' };
const OUTER_V6 = { src: '2001:db8::1', dst: '2001:db8::2' };

/** Every supported encapsulation around `inner` (an IPv4 or IPv6 TCP/UDP flow). */
export function encapsulations(inner: Flow, outerV6 = false): Encapsulated[] {
  const ethIn = ethPacket(inner);
  const ipIn = ipPacket(inner);
  const et = inner.v6 ? 0x86dd : 0x0800;
  const o = outerV6 ? OUTER_V6 : OUTER_V4;
  const udpOuter = (port: number): Flow => ({ v6: outerV6, ...o, proto: 17, sport: 49152, dport: port });
  const ipOuter = (proto: number): Flow => ({ v6: outerV6, ...o, proto: proto as 6, sport: 0, dport: 0 });
  const vxlan = concat(Uint8Array.of(0x08, 0, 0, 0), u32(0x123400)); // I flag, VNI 0x1234
  const gpeNext = inner.v6 ? 2 : 1;
  const genOpt = concat(u16(0x0102), Uint8Array.of(0x03, 1), u32(0xdeadbeef)); // one 8-byte option
  const geneve = concat(Uint8Array.of(2, 0), u16(0x6558), u32(0x00567800), genOpt); // opt len 2 words
  const list: Encapsulated[] = [
    {
      name: 'VXLAN',
      type: HashTunnelType.VXLAN,
      frame: outerUdp(outerV6, 4789, concat(vxlan, ethIn)),
      inner,
      outer: udpOuter(4789),
      outerHasPorts: true,
    },
    {
      name: 'VXLAN-GPE',
      type: HashTunnelType.VXLAN_GPE,
      frame: outerUdp(outerV6, 4790, concat(Uint8Array.of(0x0c, 0, 0, gpeNext), u32(0x000abc00), ipIn)),
      inner,
      outer: udpOuter(4790),
      outerHasPorts: true,
    },
    {
      name: 'GENEVE',
      type: HashTunnelType.GENEVE,
      frame: outerUdp(outerV6, 6081, concat(geneve, ethIn)),
      inner,
      outer: udpOuter(6081),
      outerHasPorts: true,
    },
    {
      name: 'GRE-in-UDP',
      type: HashTunnelType.GRE_UDP,
      frame: outerUdp(outerV6, 4754, concat(greHeader(et), ipIn)),
      inner,
      outer: udpOuter(4754),
      outerHasPorts: true,
    },
    {
      name: 'GRE (RFC 2784, checksum)',
      type: HashTunnelType.GRE_2784 | (outerV6 || inner.v6 ? HashTunnelType.GRE_7676 : 0),
      frame: outerIp(outerV6, 47, concat(greHeader(et, { csum: true }), ipIn)),
      inner,
      outer: ipOuter(47),
      outerHasPorts: false,
    },
    {
      name: 'GRE (RFC 2890, key and sequence)',
      type: HashTunnelType.GRE_2890 | (outerV6 || inner.v6 ? HashTunnelType.GRE_7676 : 0),
      frame: outerIp(outerV6, 47, concat(greHeader(et, { key: 7, seq: 9 }), ipIn)),
      inner,
      outer: ipOuter(47),
      outerHasPorts: false,
    },
    {
      name: 'NVGRE',
      type: HashTunnelType.NVGRE | HashTunnelType.GRE_2890 | (outerV6 ? HashTunnelType.GRE_7676 : 0),
      frame: outerIp(outerV6, 47, concat(greHeader(0x6558, { key: 0x12345600 }), ethIn)),
      inner,
      outer: ipOuter(47),
      outerHasPorts: false,
    },
    {
      name: 'IPIP',
      type: HashTunnelType.IPIP,
      frame: outerIp(outerV6, inner.v6 ? 41 : 4, ipIn),
      inner,
      outer: ipOuter(inner.v6 ? 41 : 4),
      outerHasPorts: false,
    },
  ];
  return list;
}
