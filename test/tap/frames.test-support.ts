/**
 * Ethernet/IPv4/ARP/ICMP/UDP/TCP frames for the tap integration tests: the tests play the guest, so they
 * need real frames the kernel accepts, byte for byte. The bytes come from the shared builders in
 * lib/net/frames.ts; this module fixes the guest/kernel addresses and adds the tap tests' checkers.
 */
import type { BackendSink, NetOffload } from '../../lib/net/backend.js';
import * as F from '../../lib/net/frames.js';

export const KERNEL_MAC = '02:00:00:00:00:01';
export const GUEST_MAC = '02:00:00:00:00:02';
export const KERNEL_IP = '10.77.0.1';
export const GUEST_IP = '10.77.0.2';

export function mac(s: string): Uint8Array {
  return F.macAddr(s);
}
export function ipv4(s: string): Uint8Array {
  return F.ipv4Addr(s);
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
  return F.ethernet(dst, src, type, payload);
}

export function arpRequest(senderMac: Uint8Array, senderIp: Uint8Array, targetIp: Uint8Array): Uint8Array {
  return F.arp(1, senderMac, senderIp, new Uint8Array(6), targetIp);
}

/** An IPv4 packet (F.ipv4: DF, TTL 64) in a frame from the guest to the kernel. */
function fromGuest(ip: Uint8Array): Uint8Array {
  return ethernet(mac(KERNEL_MAC), mac(GUEST_MAC), 0x0800, ip);
}

export function icmpEcho(src: string, dst: string, id: number, seq: number, data: Uint8Array): Uint8Array {
  return fromGuest(F.ipv4({ src, dst, proto: 1, payload: F.icmpEcho(8, id, seq, data), id: 1 }));
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
  const ip = F.withL4ChecksumV4(
    F.ipv4({ src, dst, proto: 17, payload: F.udp(sport, dport, payload), id: 1 }),
    opts.partial,
  );
  if (opts.badChecksum && !opts.partial) {
    ip[20 + 6]! ^= 0x5a;
    ip[20 + 7]! ^= 0x5a;
  }
  return fromGuest(ip);
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
  const l4 = F.tcp(sport, dport, payload, flags, seq, ack);
  const ip = F.withL4ChecksumV4(F.ipv4({ src, dst, proto: 6, payload: l4, id: opts.id ?? 1 }), opts.partial);
  return fromGuest(ip);
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
