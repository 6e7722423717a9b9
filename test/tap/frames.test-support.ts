/**
 * Hand-built Ethernet/IPv4/ARP/ICMP/UDP/TCP frames for the tap integration tests and the bench: the
 * tests play the guest, so they need real frames the kernel accepts, byte for byte.
 */
import type { BackendSink, NetOffload } from '../../lib/net/backend.js';

export const KERNEL_MAC = '02:00:00:00:00:01';
export const GUEST_MAC = '02:00:00:00:00:02';
export const KERNEL_IP = '10.77.0.1';
export const GUEST_IP = '10.77.0.2';

export function mac(s: string): Uint8Array {
  return Uint8Array.from(s.split(':').map((h) => Number.parseInt(h, 16)));
}
export function ipv4(s: string): Uint8Array {
  return Uint8Array.from(s.split('.').map(Number));
}

/** RFC 1071 ones' complement sum of `b[start, end)`, folded, not inverted. */
export function sum16(b: Uint8Array, start = 0, end = b.length, initial = 0): number {
  let s = initial;
  for (let i = start; i + 1 < end; i += 2) s += ((b[i] as number) << 8) | (b[i + 1] as number);
  if ((end - start) & 1) s += (b[end - 1] as number) << 8;
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s;
}

function pseudoSum(src: Uint8Array, dst: Uint8Array, proto: number, len: number): number {
  const p = new Uint8Array(12);
  p.set(src, 0);
  p.set(dst, 4);
  p[9] = proto;
  p[10] = len >> 8;
  p[11] = len & 0xff;
  return sum16(p);
}

export function ethernet(dst: Uint8Array, src: Uint8Array, type: number, payload: Uint8Array): Uint8Array {
  const f = new Uint8Array(14 + payload.length);
  f.set(dst, 0);
  f.set(src, 6);
  f[12] = type >> 8;
  f[13] = type & 0xff;
  f.set(payload, 14);
  return f;
}

export function arpRequest(senderMac: Uint8Array, senderIp: Uint8Array, targetIp: Uint8Array): Uint8Array {
  const a = new Uint8Array(28);
  a.set([0, 1, 8, 0, 6, 4, 0, 1], 0);
  a.set(senderMac, 8);
  a.set(senderIp, 14);
  a.set(targetIp, 24);
  return ethernet(mac('ff:ff:ff:ff:ff:ff'), senderMac, 0x0806, a);
}

function ipv4Packet(src: Uint8Array, dst: Uint8Array, proto: number, l4: Uint8Array, id = 1): Uint8Array {
  const p = new Uint8Array(20 + l4.length);
  const v = new DataView(p.buffer);
  p[0] = 0x45;
  v.setUint16(2, p.length);
  v.setUint16(4, id);
  v.setUint16(6, 0x4000); // DF
  p[8] = 64;
  p[9] = proto;
  p.set(src, 12);
  p.set(dst, 16);
  v.setUint16(10, ~sum16(p, 0, 20) & 0xffff);
  p.set(l4, 20);
  return p;
}

export function icmpEcho(src: string, dst: string, id: number, seq: number, data: Uint8Array): Uint8Array {
  const icmp = new Uint8Array(8 + data.length);
  icmp[0] = 8;
  icmp[4] = id >> 8;
  icmp[5] = id & 0xff;
  icmp[6] = seq >> 8;
  icmp[7] = seq & 0xff;
  icmp.set(data, 8);
  const c = ~sum16(icmp) & 0xffff;
  icmp[2] = c >> 8;
  icmp[3] = c & 0xff;
  return ethernet(mac(KERNEL_MAC), mac(GUEST_MAC), 0x0800, ipv4Packet(ipv4(src), ipv4(dst), 1, icmp));
}

/**
 * A UDP/IPv4 frame from the guest. `partial`: leave the checksum as the pseudo-header sum only, as a
 * driver using VIRTIO_NET_HDR_F_NEEDS_CSUM does; `badChecksum`: a wrong full checksum.
 */
export function udpFrame(
  src: string,
  dst: string,
  sport: number,
  dport: number,
  payload: Uint8Array,
  opts: { partial?: boolean; badChecksum?: boolean } = {},
): Uint8Array {
  const u = new Uint8Array(8 + payload.length);
  const v = new DataView(u.buffer);
  v.setUint16(0, sport);
  v.setUint16(2, dport);
  v.setUint16(4, u.length);
  u.set(payload, 8);
  const ps = pseudoSum(ipv4(src), ipv4(dst), 17, u.length);
  if (opts.partial) v.setUint16(6, ps);
  else {
    let c = ~sum16(u, 0, u.length, ps) & 0xffff;
    if (c === 0) c = 0xffff;
    if (opts.badChecksum) c ^= 0x5a5a;
    v.setUint16(6, c);
  }
  return ethernet(mac(KERNEL_MAC), mac(GUEST_MAC), 0x0800, ipv4Packet(ipv4(src), ipv4(dst), 17, u));
}

export const TCP_FIN = 0x01;
export const TCP_SYN = 0x02;
export const TCP_RST = 0x04;
export const TCP_PSH = 0x08;
export const TCP_ACK = 0x10;

/** A TCP/IPv4 frame from the guest (20-byte TCP header, no options). */
export function tcpFrame(
  src: string,
  dst: string,
  sport: number,
  dport: number,
  seq: number,
  ack: number,
  flags: number,
  payload: Uint8Array,
  opts: { partial?: boolean; id?: number } = {},
): Uint8Array {
  const t = new Uint8Array(20 + payload.length);
  const v = new DataView(t.buffer);
  v.setUint16(0, sport);
  v.setUint16(2, dport);
  v.setUint32(4, seq >>> 0);
  v.setUint32(8, ack >>> 0);
  t[12] = 5 << 4;
  t[13] = flags;
  v.setUint16(14, 65535);
  t.set(payload, 20);
  const ps = pseudoSum(ipv4(src), ipv4(dst), 6, t.length);
  v.setUint16(16, opts.partial ? ps : ~sum16(t, 0, t.length, ps) & 0xffff);
  return ethernet(
    mac(KERNEL_MAC),
    mac(GUEST_MAC),
    0x0800,
    ipv4Packet(ipv4(src), ipv4(dst), 6, t, opts.id ?? 1),
  );
}

/** Parsed view of an IPv4 frame's headers (enough for assertions). */
export interface Ipv4Info {
  proto: number;
  src: string;
  dst: string;
  l4: Uint8Array;
  ip: Uint8Array;
}

export function parseIpv4(frame: Uint8Array): Ipv4Info | null {
  if (frame.length < 34 || frame[12] !== 0x08 || frame[13] !== 0x00) return null;
  const ip = frame.subarray(14);
  const ihl = ((ip[0] as number) & 0x0f) * 4;
  const total = ((ip[2] as number) << 8) | (ip[3] as number);
  return {
    proto: ip[9] as number,
    src: Array.from(ip.subarray(12, 16)).join('.'),
    dst: Array.from(ip.subarray(16, 20)).join('.'),
    l4: ip.subarray(ihl, total),
    ip: ip.subarray(0, total),
  };
}

/** True when the L4 checksum of an IPv4 TCP/UDP/ICMP frame verifies. */
export function l4ChecksumOk(frame: Uint8Array): boolean {
  const p = parseIpv4(frame);
  if (!p) return false;
  if (p.proto === 1) return sum16(p.l4) === 0xffff;
  const ps = pseudoSum(p.ip.subarray(12, 16), p.ip.subarray(16, 20), p.proto, p.l4.length);
  return sum16(p.l4, 0, p.l4.length, ps) === 0xffff;
}

export interface Received {
  frame: Uint8Array;
  queuePair: number;
  offload: NetOffload | null;
}

/** A BackendSink that keeps copies of everything (frames and offload records are reused by backends). */
export class CollectingSink implements BackendSink {
  readonly frames: Received[] = [];
  readonly links: boolean[] = [];
  onReceive: ((r: Received) => void) | null = null;

  receive(frame: Uint8Array, queuePair: number, offload: NetOffload | null): void {
    const r = { frame: frame.slice(), queuePair, offload: offload ? { ...offload } : null };
    this.frames.push(r);
    this.onReceive?.(r);
  }

  linkChanged(up: boolean): void {
    this.links.push(up);
  }

  /** Resolves with the first received frame matching `pred` (now or later); rejects after `timeoutMs`. */
  waitFor(pred: (r: Received) => boolean, timeoutMs = 10_000, what = 'frame'): Promise<Received> {
    return waitUntil(() => this.frames.find(pred), timeoutMs, what);
  }
}

/** Polls `probe` every 5 ms until it returns a value; rejects with `what` after `timeoutMs`. */
export function waitUntil<T>(
  probe: () => T | undefined | null | false,
  timeoutMs = 10_000,
  what = 'condition',
): Promise<T> {
  return new Promise((resolve, reject) => {
    const t0 = Date.now();
    const tick = () => {
      const v = probe();
      if (v) return resolve(v);
      if (Date.now() - t0 > timeoutMs) return reject(new Error(`timed out waiting for ${what}`));
      setTimeout(tick, 5);
    };
    tick();
  });
}
