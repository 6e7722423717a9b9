/**
 * Byte-level frame builders, the one implementation behind every layer's test frames: the parser, RSS,
 * checksum, segmentation and tap integration tests, and the public synthetic-guest kit
 * (devices/testing/frames.ts). Not used
 * by the device itself. Checksums here use a deliberately naive one's-complement sum (RFC 1071),
 * independent of lib/net/checksum.ts, so the checksum tests compare two implementations.
 */

export function hex(s: string): Uint8Array {
  const clean = s.replace(/[^0-9a-f]/gi, '');
  const out = new Uint8Array(clean.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = Number.parseInt(clean.slice(2 * i, 2 * i + 2), 16);
  return out;
}

export function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** "52:54:00:12:34:56" → 6 bytes. */
export function macAddr(s: string): Uint8Array {
  return Uint8Array.from(s.split(':').map((h) => Number.parseInt(h, 16)));
}

export function ipv4Addr(s: string): Uint8Array {
  return Uint8Array.from(s.split('.').map(Number));
}

export function ipv6Addr(s: string): Uint8Array {
  const [head, tail] = s.includes('::') ? s.split('::') : [s, undefined];
  const h = head ? head.split(':').filter((x) => x !== '') : [];
  const t = tail !== undefined && tail !== '' ? tail.split(':') : [];
  const groups = tail === undefined ? h : [...h, ...Array(8 - h.length - t.length).fill('0'), ...t];
  const out = new Uint8Array(16);
  groups.forEach((g, i) => {
    const v = Number.parseInt(g, 16);
    out[2 * i] = v >> 8;
    out[2 * i + 1] = v & 0xff;
  });
  return out;
}

/** Naive one's-complement checksum (reference for tests). */
export function naiveChecksum(bytes: Uint8Array): number {
  let sum = 0;
  for (let i = 0; i < bytes.length; i += 2) {
    sum += (bytes[i]! << 8) + (i + 1 < bytes.length ? bytes[i + 1]! : 0);
    sum = (sum & 0xffff) + (sum >>> 16);
  }
  return ~sum & 0xffff;
}

export function u16(v: number): Uint8Array {
  return Uint8Array.of((v >> 8) & 0xff, v & 0xff);
}

export function u32(v: number): Uint8Array {
  return Uint8Array.of((v >>> 24) & 0xff, (v >>> 16) & 0xff, (v >>> 8) & 0xff, v & 0xff);
}

const MAC_A = hex('525400123456');
const MAC_B = hex('525400abcdef');

/** Ethernet frame from `src` to `dst`; `tags` are [tpid, tci] pairs, outermost first. */
export function ethernet(
  dst: Uint8Array,
  src: Uint8Array,
  etherType: number,
  payload: Uint8Array,
  tags: [number, number][] = [],
): Uint8Array {
  const parts = [dst, src];
  for (const [tpid, tci] of tags) parts.push(u16(tpid), u16(tci));
  parts.push(u16(etherType), payload);
  return concat(...parts);
}

/** Ethernet frame between two fixed MACs; `tags` are [tpid, tci] pairs, outermost first. */
export function eth(etherType: number, payload: Uint8Array, tags: [number, number][] = []): Uint8Array {
  return ethernet(MAC_B, MAC_A, etherType, payload, tags);
}

const BROADCAST = Uint8Array.of(0xff, 0xff, 0xff, 0xff, 0xff, 0xff);

/** ARP request (op 1, broadcast) or reply (op 2, to `targetMac`) for IPv4 over Ethernet (RFC 826). */
export function arp(
  op: 1 | 2,
  senderMac: Uint8Array,
  senderIp: Uint8Array,
  targetMac: Uint8Array,
  targetIp: Uint8Array,
): Uint8Array {
  const p = concat(Uint8Array.of(0, 1, 8, 0, 6, 4, 0, op), senderMac, senderIp, targetMac, targetIp);
  return ethernet(op === 1 ? BROADCAST : targetMac, senderMac, 0x0806, p);
}

export interface Ipv4Options {
  src: string;
  dst: string;
  proto: number;
  payload: Uint8Array;
  options?: Uint8Array;
  id?: number;
  /** flags (3 bits) << 13 | fragment offset in 8-byte units */
  fragField?: number;
  tos?: number;
  /** Override total length (default: header + payload). */
  totalLength?: number;
}

export function ipv4(o: Ipv4Options): Uint8Array {
  const opts = o.options ?? new Uint8Array(0);
  const ihl = 20 + opts.length;
  const h = new Uint8Array(ihl);
  h[0] = 0x40 | (ihl / 4);
  h[1] = o.tos ?? 0;
  h.set(u16(o.totalLength ?? ihl + o.payload.length), 2);
  h.set(u16(o.id ?? 0x1234), 4);
  h.set(u16(o.fragField ?? 0x4000), 6);
  h[8] = 64;
  h[9] = o.proto;
  h.set(ipv4Addr(o.src), 12);
  h.set(ipv4Addr(o.dst), 16);
  h.set(opts, 20);
  h.set(u16(naiveChecksum(h)), 10);
  return concat(h, o.payload);
}

/** IPv6 packet; `ext` are complete extension headers whose first byte (next header) is already set. */
export function ipv6(src: string, dst: string, nextHeader: number, payload: Uint8Array, tc = 0): Uint8Array {
  const h = new Uint8Array(40);
  h[0] = 0x60 | (tc >> 4);
  h[1] = (tc & 0x0f) << 4;
  h.set(u16(payload.length), 4);
  h[6] = nextHeader;
  h[7] = 64;
  h.set(ipv6Addr(src), 8);
  h.set(ipv6Addr(dst), 24);
  return concat(h, payload);
}

/** Hop-by-hop or destination options header of 8*(1+n) bytes padded with PadN; `opts` raw TLVs. */
export function optionsHeader(nextHeader: number, opts: Uint8Array = new Uint8Array(0)): Uint8Array {
  const body = 2 + opts.length;
  const total = Math.ceil(body / 8) * 8;
  const h = new Uint8Array(total);
  h[0] = nextHeader;
  h[1] = total / 8 - 1;
  h.set(opts, 2);
  const pad = total - body;
  if (pad === 1) h[body] = 0;
  else if (pad > 1) {
    h[body] = 1;
    h[body + 1] = pad - 2;
  }
  return h;
}

/** Home Address destination option TLV (type 0xC9), preceded by PadN to align as RFC 6275 asks. */
export function homeAddressOption(addr: string): Uint8Array {
  return concat(Uint8Array.of(1, 2, 0, 0), Uint8Array.of(0xc9, 16), ipv6Addr(addr));
}

/** Type 2 routing header (24 bytes) carrying `addr`. */
export function routingType2(nextHeader: number, addr: string, segmentsLeft = 1): Uint8Array {
  return concat(Uint8Array.of(nextHeader, 2, 2, segmentsLeft, 0, 0, 0, 0), ipv6Addr(addr));
}

export function fragmentHeader(nextHeader: number, offset8: number, more: boolean, id = 0xabcd): Uint8Array {
  return concat(Uint8Array.of(nextHeader, 0), u16((offset8 << 3) | (more ? 1 : 0)), u32(id));
}

/** TCP segment with a 20-byte header (no options), window 65535, checksum 0 (see withL4ChecksumV4/V6). */
export function tcp(
  sport: number,
  dport: number,
  payload: Uint8Array = new Uint8Array(0),
  flags = 0x18,
  seq = 1000,
  ack = 42,
): Uint8Array {
  const h = new Uint8Array(20);
  h.set(u16(sport), 0);
  h.set(u16(dport), 2);
  h.set(u32(seq), 4);
  h.set(u32(ack), 8);
  h[12] = 5 << 4;
  h[13] = flags;
  h.set(u16(65535), 14);
  return concat(h, payload);
}

/** UDP datagram, checksum 0 (see withL4ChecksumV4/V6). */
export function udp(sport: number, dport: number, payload: Uint8Array = new Uint8Array(0)): Uint8Array {
  return concat(u16(sport), u16(dport), u16(8 + payload.length), u16(0), payload);
}

/** ICMP echo request (type 8) or reply (type 0) with its checksum. */
export function icmpEcho(type: 0 | 8, id: number, seq: number, data: Uint8Array): Uint8Array {
  const h = concat(Uint8Array.of(type, 0, 0, 0), u16(id), u16(seq), data);
  h.set(u16(naiveChecksum(h)), 2);
  return h;
}

/**
 * Fills in the TCP (off 16) or UDP (off 6) checksum of an IPv4 packet's L4 with the naive sum.
 * `partial`: only the pseudo-header sum, not inverted, as a driver using VIRTIO_NET_HDR_F_NEEDS_CSUM
 * leaves it for the device to finish.
 */
export function withL4ChecksumV4(ip: Uint8Array, partial = false): Uint8Array {
  const ihl = (ip[0]! & 15) * 4;
  const proto = ip[9]!;
  const l4 = ip.slice(ihl);
  const ph = concat(ip.slice(12, 20), Uint8Array.of(0, proto), u16(l4.length));
  const field = proto === 6 ? 16 : 6;
  l4[field] = 0;
  l4[field + 1] = 0;
  let c = partial ? ~naiveChecksum(ph) & 0xffff : naiveChecksum(concat(ph, l4));
  if (!partial && c === 0 && proto === 17) c = 0xffff;
  l4.set(u16(c), field);
  return concat(ip.slice(0, ihl), l4);
}

/** Same for an IPv6 packet without extension headers. */
export function withL4ChecksumV6(ip: Uint8Array): Uint8Array {
  const proto = ip[6]!;
  const l4 = ip.slice(40);
  const ph = concat(ip.slice(8, 40), u32(l4.length), Uint8Array.of(0, 0, 0, proto));
  const field = proto === 6 ? 16 : 6;
  l4[field] = 0;
  l4[field + 1] = 0;
  let c = naiveChecksum(concat(ph, l4));
  if (c === 0 && proto === 17) c = 0xffff;
  l4.set(u16(c), field);
  return concat(ip.slice(0, 40), l4);
}
