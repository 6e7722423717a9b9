/**
 * Frame builders for the synthetic guest and its peers: Ethernet, ARP, IPv4 with ICMP echo, UDP and TCP,
 * checksums complete. Plus `PeerResponder`, a tiny host that answers ARP requests and ICMP echo
 * requests, used by the demo and tests as the far end of a `MemoryBackend`.
 */
import { checksumAdd, checksumFinish, pseudoHeaderSumIpv4 } from '../../lib/net/checksum.js';

export function macBytes(mac: string): Uint8Array {
  return Uint8Array.from(mac.split(':').map((h) => Number.parseInt(h, 16)));
}

export function ipBytes(ip: string): Uint8Array {
  return Uint8Array.from(ip.split('.').map(Number));
}

export function formatIp(b: Uint8Array, o = 0): string {
  return `${b[o]}.${b[o + 1]}.${b[o + 2]}.${b[o + 3]}`;
}

export function formatMacAt(b: Uint8Array, o = 0): string {
  return Array.from(b.subarray(o, o + 6), (x) => x.toString(16).padStart(2, '0')).join(':');
}

export function ethernet(dst: string, src: string, etherType: number, payload: Uint8Array): Uint8Array {
  const f = new Uint8Array(14 + payload.length);
  f.set(macBytes(dst), 0);
  f.set(macBytes(src), 6);
  f[12] = etherType >> 8;
  f[13] = etherType & 0xff;
  f.set(payload, 14);
  return f;
}

/** ARP request or reply (RFC 826) for IPv4 over Ethernet. */
export function arp(
  op: 1 | 2,
  senderMac: string,
  senderIp: string,
  targetMac: string,
  targetIp: string,
): Uint8Array {
  const p = new Uint8Array(28);
  p.set([0, 1, 8, 0, 6, 4, 0, op]);
  p.set(macBytes(senderMac), 8);
  p.set(ipBytes(senderIp), 14);
  p.set(macBytes(targetMac), 18);
  p.set(ipBytes(targetIp), 24);
  const dst = op === 1 ? 'ff:ff:ff:ff:ff:ff' : targetMac;
  return ethernet(dst, senderMac, 0x0806, p);
}

/** IPv4 header + payload with the header checksum. */
export function ipv4(src: string, dst: string, proto: number, payload: Uint8Array, id = 0): Uint8Array {
  const p = new Uint8Array(20 + payload.length);
  p[0] = 0x45;
  p[2] = p.length >> 8;
  p[3] = p.length & 0xff;
  p[4] = id >> 8;
  p[5] = id & 0xff;
  p[6] = 0x40; // DF
  p[8] = 64;
  p[9] = proto;
  p.set(ipBytes(src), 12);
  p.set(ipBytes(dst), 16);
  const c = checksumFinish(checksumAdd(p, 0, 20));
  p[10] = c >> 8;
  p[11] = c & 0xff;
  p.set(payload, 20);
  return p;
}

/** ICMP echo request (type 8) or reply (type 0). */
export function icmpEcho(type: 0 | 8, id: number, seq: number, data: Uint8Array): Uint8Array {
  const p = new Uint8Array(8 + data.length);
  p[0] = type;
  p[4] = id >> 8;
  p[5] = id & 0xff;
  p[6] = seq >> 8;
  p[7] = seq & 0xff;
  p.set(data, 8);
  const c = checksumFinish(checksumAdd(p, 0, p.length));
  p[2] = c >> 8;
  p[3] = c & 0xff;
  return p;
}

/** UDP datagram in IPv4 with its checksum. */
export function udp4(src: string, dst: string, sport: number, dport: number, data: Uint8Array): Uint8Array {
  const u = new Uint8Array(8 + data.length);
  u[0] = sport >> 8;
  u[1] = sport & 0xff;
  u[2] = dport >> 8;
  u[3] = dport & 0xff;
  u[4] = u.length >> 8;
  u[5] = u.length & 0xff;
  u.set(data, 8);
  let c = checksumFinish(checksumAdd(u, 0, u.length, pseudoSum(src, dst, 17, u.length)));
  if (c === 0) c = 0xffff;
  u[6] = c >> 8;
  u[7] = c & 0xff;
  return ipv4(src, dst, 17, u);
}

/** TCP segment (20-byte header, given flags) in IPv4 with its checksum. */
export function tcp4(
  src: string,
  dst: string,
  sport: number,
  dport: number,
  seq: number,
  flags: number,
  data: Uint8Array,
): Uint8Array {
  const t = new Uint8Array(20 + data.length);
  t[0] = sport >> 8;
  t[1] = sport & 0xff;
  t[2] = dport >> 8;
  t[3] = dport & 0xff;
  new DataView(t.buffer).setUint32(4, seq >>> 0);
  t[12] = 0x50;
  t[13] = flags;
  t[14] = 0xff;
  t[15] = 0xff;
  t.set(data, 20);
  const c = checksumFinish(checksumAdd(t, 0, t.length, pseudoSum(src, dst, 6, t.length)));
  t[16] = c >> 8;
  t[17] = c & 0xff;
  return ipv4(src, dst, 6, t);
}

function pseudoSum(src: string, dst: string, proto: number, length: number): number {
  const s = ipBytes(src);
  const d = ipBytes(dst);
  const both = new Uint8Array(8);
  both.set(s, 0);
  both.set(d, 4);
  return pseudoHeaderSumIpv4(both, 0, 4, proto, length);
}

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
