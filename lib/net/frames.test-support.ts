/**
 * Test-only frame builders for the parser, RSS, checksum and segmentation tests. Checksums here use a
 * deliberately naive one's-complement sum, independent of lib/net/checksum.ts.
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

/** Ethernet frame; `tags` are [tpid, tci] pairs, outermost first. */
export function eth(etherType: number, payload: Uint8Array, tags: [number, number][] = []): Uint8Array {
  const parts = [MAC_B, MAC_A];
  for (const [tpid, tci] of tags) parts.push(u16(tpid), u16(tci));
  parts.push(u16(etherType), payload);
  return concat(...parts);
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

export function tcp(
  sport: number,
  dport: number,
  payload: Uint8Array = new Uint8Array(0),
  flags = 0x18,
  seq = 1000,
): Uint8Array {
  const h = new Uint8Array(20);
  h.set(u16(sport), 0);
  h.set(u16(dport), 2);
  h.set(u32(seq), 4);
  h.set(u32(42), 8);
  h[12] = 5 << 4;
  h[13] = flags;
  h.set(u16(65535), 14);
  return concat(h, payload);
}

export function udp(sport: number, dport: number, payload: Uint8Array = new Uint8Array(0)): Uint8Array {
  return concat(u16(sport), u16(dport), u16(8 + payload.length), u16(0), payload);
}

/** Fills in the TCP (off 16) or UDP (off 6) checksum of an IPv4 packet's L4 with the naive sum. */
export function withL4ChecksumV4(ip: Uint8Array): Uint8Array {
  const ihl = (ip[0]! & 15) * 4;
  const proto = ip[9]!;
  const l4 = ip.slice(ihl);
  const ph = concat(ip.slice(12, 20), Uint8Array.of(0, proto), u16(l4.length));
  const field = proto === 6 ? 16 : 6;
  l4[field] = 0;
  l4[field + 1] = 0;
  let c = naiveChecksum(concat(ph, l4));
  if (c === 0 && proto === 17) c = 0xffff;
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

/** Straightforward bit-serial Toeplitz (the spec's definition), reference for tests. */
export function toeplitzBitSerial(key: Uint8Array, input: Uint8Array): number {
  let result = 0;
  // window = key bits [i, i+32); shifted left one bit per input bit, next key bit enters at the bottom.
  let window = ((key[0] ?? 0) << 24) | ((key[1] ?? 0) << 16) | ((key[2] ?? 0) << 8) | (key[3] ?? 0);
  let nextBit = 32;
  for (let i = 0; i < input.length; i++) {
    for (let b = 7; b >= 0; b--) {
      if ((input[i]! >> b) & 1) result ^= window;
      const kb = ((key[nextBit >> 3] ?? 0) >> (7 - (nextBit & 7))) & 1;
      window = (window << 1) | kb;
      nextBit++;
    }
  }
  return result >>> 0;
}

/** A Uint8Array proxy that throws on any index read outside [0, length): proves no read past the frame. */
export function guarded(bytes: Uint8Array, start = 0, end = bytes.length): Uint8Array {
  return new Proxy(bytes, {
    get(target, prop) {
      if (typeof prop === 'string' && /^-?\d+$/.test(prop)) {
        const i = Number(prop);
        if (i < start || i >= end) throw new Error(`read at ${i} outside [${start}, ${end})`);
        return target[i];
      }
      const v = Reflect.get(target, prop, target);
      return typeof v === 'function' ? v.bind(target) : v;
    },
  });
}
