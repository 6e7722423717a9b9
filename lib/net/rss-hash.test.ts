import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  concat,
  eth,
  fragmentHeader,
  guarded,
  hex,
  homeAddressOption,
  ipv4,
  ipv4Addr,
  ipv6,
  ipv6Addr,
  optionsHeader,
  routingType2,
  tcp,
  toeplitzBitSerial,
  u16,
  udp,
} from './frames.test-support.js';
import { ParsedPacket, parsePacket } from './packet-parser.js';
import {
  RssHashResult,
  rssHash,
  rssHashParsed,
  VIRTIO_NET_HASH_REPORT_IPv4,
  VIRTIO_NET_HASH_REPORT_IPv6,
  VIRTIO_NET_HASH_REPORT_IPv6_EX,
  VIRTIO_NET_HASH_REPORT_NONE,
  VIRTIO_NET_HASH_REPORT_TCPv4,
  VIRTIO_NET_HASH_REPORT_TCPv6,
  VIRTIO_NET_HASH_REPORT_TCPv6_EX,
  VIRTIO_NET_HASH_REPORT_UDPv4,
  VIRTIO_NET_HASH_REPORT_UDPv6,
  VIRTIO_NET_HASH_REPORT_UDPv6_EX,
  VIRTIO_NET_RSS_HASH_TYPE_IP_EX,
  VIRTIO_NET_RSS_HASH_TYPE_IPv4,
  VIRTIO_NET_RSS_HASH_TYPE_IPv6,
  VIRTIO_NET_RSS_HASH_TYPE_TCP_EX,
  VIRTIO_NET_RSS_HASH_TYPE_TCPv4,
  VIRTIO_NET_RSS_HASH_TYPE_TCPv6,
  VIRTIO_NET_RSS_HASH_TYPE_UDP_EX,
  VIRTIO_NET_RSS_HASH_TYPE_UDPv4,
  VIRTIO_NET_RSS_HASH_TYPE_UDPv6,
} from './rss-hash.js';
import { ToeplitzKey, toeplitzHash } from './toeplitz.js';

interface Vector {
  key: string;
  src_ip: string;
  dst_ip: string;
  src_port: number;
  dst_port: number;
  hash_ipv4_or_ipv6_only: string;
  hash_with_ports: string;
}
const doc = JSON.parse(readFileSync(new URL('../../fixtures/rss-vectors.json', import.meta.url), 'utf8')) as {
  vectors: Vector[];
};
const KEY = hex('6d5a56da255b0ec24167253d43a38fb0d0ca2bcbae7b30b477cb2da38030f20c6a42b73bbeac01fa');
const ALL = 0x1ff;
/** Every type but the _EX ones (Linux's default set). */
const NO_EX = 0x3f;
const addr = (s: string) => (s.includes(':') ? ipv6Addr(s) : ipv4Addr(s));

function frameFor(v: Vector, proto: 'tcp' | 'udp'): Uint8Array {
  const l4 =
    proto === 'tcp'
      ? tcp(v.src_port, v.dst_port, new Uint8Array(5))
      : udp(v.src_port, v.dst_port, new Uint8Array(5));
  const p = proto === 'tcp' ? 6 : 17;
  return v.src_ip.includes(':')
    ? eth(0x86dd, ipv6(v.src_ip, v.dst_ip, p, l4))
    : eth(0x0800, ipv4({ src: v.src_ip, dst: v.dst_ip, proto: p, payload: l4 }));
}

describe('Toeplitz', () => {
  it('has the 16 vectors of rss-vectors.json exact (toeplitzHash, ToeplitzKey, bit-serial)', () => {
    expect(doc.vectors.length).toBe(8);
    for (const v of doc.vectors) {
      const key = hex(v.key);
      const ips = concat(addr(v.src_ip), addr(v.dst_ip));
      const withPorts = concat(ips, u16(v.src_port), u16(v.dst_port));
      expect(toeplitzHash(key, ips)).toBe(Number(v.hash_ipv4_or_ipv6_only));
      expect(toeplitzHash(key, withPorts)).toBe(Number(v.hash_with_ports));
      expect(new ToeplitzKey(key).hash(withPorts)).toBe(Number(v.hash_with_ports));
      expect(toeplitzBitSerial(key, withPorts)).toBe(Number(v.hash_with_ports));
    }
  });

  it('table form equals the bit-serial definition for random keys and inputs (short keys: zero bits)', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 0, maxLength: 52 }),
        fc.uint8Array({ maxLength: 48 }),
        (key, input) => {
          expect(toeplitzHash(key, input)).toBe(toeplitzBitSerial(key, input));
        },
      ),
      { numRuns: 500 },
    );
  });

  it('partial() sums of a split input equal the whole hash; setKey rebuilds only on change', () => {
    const k = new ToeplitzKey(KEY);
    const input = hex('42 09 95 bb a1 8e 64 50 0a ea 06 e6');
    const whole = k.hash(input);
    expect((k.partial(input, 0, 4, 0) ^ k.partial(input, 4, 4, 4) ^ k.partial(input, 8, 4, 8)) >>> 0).toBe(
      whole,
    );
    const before = k.key;
    k.setKey(KEY.slice());
    expect(k.key).toBe(before);
    const other = KEY.slice();
    other[0]! ^= 1;
    k.setKey(other);
    expect(k.key).not.toBe(before);
    expect(k.hash(input)).toBe(toeplitzBitSerial(other, input));
  });
});

describe('rssHash', () => {
  it('matches every vector on built frames (IPv4 and IPv6, with and without ports)', () => {
    for (const v of doc.vectors) {
      const six = v.src_ip.includes(':');
      const key = hex(v.key);
      const t = frameFor(v, 'tcp');
      const u = frameFor(v, 'udp');
      expect(rssHash(t, NO_EX, key)).toEqual({
        hash: Number(v.hash_with_ports),
        reportType: six ? VIRTIO_NET_HASH_REPORT_TCPv6 : VIRTIO_NET_HASH_REPORT_TCPv4,
      });
      expect(rssHash(u, NO_EX, key)).toEqual({
        hash: Number(v.hash_with_ports),
        reportType: six ? VIRTIO_NET_HASH_REPORT_UDPv6 : VIRTIO_NET_HASH_REPORT_UDPv4,
      });
      if (six) {
        expect(rssHash(t, ALL, key)).toEqual({
          hash: Number(v.hash_with_ports),
          reportType: VIRTIO_NET_HASH_REPORT_TCPv6_EX,
        });
        expect(rssHash(u, ALL, key)).toEqual({
          hash: Number(v.hash_with_ports),
          reportType: VIRTIO_NET_HASH_REPORT_UDPv6_EX,
        });
      }
      const ipOnly = six ? VIRTIO_NET_RSS_HASH_TYPE_IPv6 : VIRTIO_NET_RSS_HASH_TYPE_IPv4;
      const ipReport = six ? VIRTIO_NET_HASH_REPORT_IPv6 : VIRTIO_NET_HASH_REPORT_IPv4;
      expect(rssHash(t, ipOnly, key)).toEqual({
        hash: Number(v.hash_ipv4_or_ipv6_only),
        reportType: ipReport,
      });
      expect(rssHash(u, ipOnly, key)).toEqual({
        hash: Number(v.hash_ipv4_or_ipv6_only),
        reportType: ipReport,
      });
    }
  });

  const v4 = doc.vectors[0]!;
  const v6 = doc.vectors[5]!;
  const tcp4 = frameFor(v4, 'tcp');
  const udp4 = frameFor(v4, 'udp');
  const tcp6 = frameFor(v6, 'tcp');
  const udp6 = frameFor(v6, 'udp');
  const H4 = Number(v4.hash_ipv4_or_ipv6_only);
  const H4P = Number(v4.hash_with_ports);
  const H6 = Number(v6.hash_ipv4_or_ipv6_only);
  const H6P = Number(v6.hash_with_ports);

  it('IPv4 selection: TCPv4, UDPv4, IPv4 fallback, no hash', () => {
    expect(rssHash(tcp4, VIRTIO_NET_RSS_HASH_TYPE_TCPv4, KEY)).toEqual({
      hash: H4P,
      reportType: VIRTIO_NET_HASH_REPORT_TCPv4,
    });
    expect(rssHash(tcp4, VIRTIO_NET_RSS_HASH_TYPE_UDPv4, KEY)).toBeNull();
    expect(rssHash(tcp4, VIRTIO_NET_RSS_HASH_TYPE_UDPv4 | VIRTIO_NET_RSS_HASH_TYPE_IPv4, KEY)).toEqual({
      hash: H4,
      reportType: VIRTIO_NET_HASH_REPORT_IPv4,
    });
    expect(rssHash(udp4, VIRTIO_NET_RSS_HASH_TYPE_UDPv4, KEY)).toEqual({
      hash: H4P,
      reportType: VIRTIO_NET_HASH_REPORT_UDPv4,
    });
    expect(rssHash(udp4, VIRTIO_NET_RSS_HASH_TYPE_TCPv4, KEY)).toBeNull();
    // IPv6 types never apply to IPv4 and vice versa.
    expect(rssHash(tcp4, 0x1f8, KEY)).toBeNull();
    expect(rssHash(tcp6, 0x007, KEY)).toBeNull();
    const icmp = eth(0x0800, ipv4({ src: v4.src_ip, dst: v4.dst_ip, proto: 1, payload: new Uint8Array(8) }));
    expect(rssHash(icmp, VIRTIO_NET_RSS_HASH_TYPE_TCPv4 | VIRTIO_NET_RSS_HASH_TYPE_UDPv4, KEY)).toBeNull();
    expect(rssHash(icmp, ALL, KEY)).toEqual({ hash: H4, reportType: VIRTIO_NET_HASH_REPORT_IPv4 });
    expect(rssHash(eth(0x0806, new Uint8Array(28)), ALL, KEY)).toBeNull();
  });

  it('IPv6 without extension headers: TCPv6, UDPv6, IPv6; _EX types apply with the plain addresses', () => {
    expect(rssHash(tcp6, VIRTIO_NET_RSS_HASH_TYPE_TCPv6, KEY)).toEqual({
      hash: H6P,
      reportType: VIRTIO_NET_HASH_REPORT_TCPv6,
    });
    expect(rssHash(udp6, VIRTIO_NET_RSS_HASH_TYPE_UDPv6, KEY)).toEqual({
      hash: H6P,
      reportType: VIRTIO_NET_HASH_REPORT_UDPv6,
    });
    expect(rssHash(udp6, VIRTIO_NET_RSS_HASH_TYPE_TCPv6 | VIRTIO_NET_RSS_HASH_TYPE_IPv6, KEY)).toEqual({
      hash: H6,
      reportType: VIRTIO_NET_HASH_REPORT_IPv6,
    });
    // QEMU 7.2 measured (docs/compatibility.md): TCP_EX wins over TCPv6 even without extension headers.
    expect(rssHash(tcp6, VIRTIO_NET_RSS_HASH_TYPE_TCP_EX, KEY)).toEqual({
      hash: H6P,
      reportType: VIRTIO_NET_HASH_REPORT_TCPv6_EX,
    });
    expect(rssHash(tcp6, VIRTIO_NET_RSS_HASH_TYPE_TCP_EX | VIRTIO_NET_RSS_HASH_TYPE_TCPv6, KEY)).toEqual({
      hash: H6P,
      reportType: VIRTIO_NET_HASH_REPORT_TCPv6_EX,
    });
    expect(rssHash(udp6, ALL, KEY)).toEqual({ hash: H6P, reportType: VIRTIO_NET_HASH_REPORT_UDPv6_EX });
    expect(rssHash(tcp6, VIRTIO_NET_RSS_HASH_TYPE_IP_EX, KEY)).toEqual({
      hash: H6,
      reportType: VIRTIO_NET_HASH_REPORT_IPv6_EX,
    });
    expect(rssHash(tcp6, VIRTIO_NET_RSS_HASH_TYPE_UDP_EX, KEY)).toBeNull();
  });

  describe('IPv6 with extension headers', () => {
    const home = '2001:db8::aaaa';
    const rt2 = '2001:db8::bbbb';
    const mk = (l4: Uint8Array, proto: number, withHome: boolean, withRt: boolean) => {
      const parts: Uint8Array[] = [];
      let first = proto;
      if (withRt) {
        parts.unshift(routingType2(first, rt2));
        first = 43;
      }
      if (withHome) {
        parts.unshift(optionsHeader(first, homeAddressOption(home)));
        first = 60;
      }
      parts.unshift(optionsHeader(first, new Uint8Array(4))); // hop-by-hop always
      return eth(0x86dd, ipv6(v6.src_ip, v6.dst_ip, 0, concat(...parts, l4)));
    };
    const ports = concat(u16(v6.src_port), u16(v6.dst_port));
    const exAddrs = concat(ipv6Addr(home), ipv6Addr(rt2));
    const plainAddrs = concat(ipv6Addr(v6.src_ip), ipv6Addr(v6.dst_ip));
    const t = mk(tcp(v6.src_port, v6.dst_port), 6, true, true);
    const u = mk(udp(v6.src_port, v6.dst_port), 17, true, true);

    it('TCP_EX / UDP_EX hash the home address, the type 2 routing address and the ports', () => {
      expect(rssHash(t, ALL, KEY)).toEqual({
        hash: toeplitzHash(KEY, concat(exAddrs, ports)),
        reportType: VIRTIO_NET_HASH_REPORT_TCPv6_EX,
      });
      expect(rssHash(u, ALL, KEY)).toEqual({
        hash: toeplitzHash(KEY, concat(exAddrs, ports)),
        reportType: VIRTIO_NET_HASH_REPORT_UDPv6_EX,
      });
    });

    it('order: TCP_EX, TCPv6, (UDP alike), IP_EX, IPv6 (QEMU 7.2 measured)', () => {
      const ipEx = { hash: toeplitzHash(KEY, exAddrs), reportType: VIRTIO_NET_HASH_REPORT_IPv6_EX };
      // TCPv6 beats IP_EX for a TCP packet with extension headers (QEMU: report 5, plain addresses).
      expect(rssHash(t, VIRTIO_NET_RSS_HASH_TYPE_IP_EX | VIRTIO_NET_RSS_HASH_TYPE_TCPv6, KEY)).toEqual({
        hash: toeplitzHash(KEY, concat(plainAddrs, ports)),
        reportType: VIRTIO_NET_HASH_REPORT_TCPv6,
      });
      expect(rssHash(t, VIRTIO_NET_RSS_HASH_TYPE_UDP_EX | VIRTIO_NET_RSS_HASH_TYPE_IP_EX, KEY)).toEqual(ipEx);
      expect(rssHash(u, VIRTIO_NET_RSS_HASH_TYPE_IP_EX | VIRTIO_NET_RSS_HASH_TYPE_IPv6, KEY)).toEqual(ipEx);
      expect(rssHash(t, VIRTIO_NET_RSS_HASH_TYPE_IP_EX, KEY)).toEqual({ hash: 0xa4bdb66c, reportType: 7 }); // QEMU 7.2
      expect(rssHash(t, ALL, KEY)).toEqual({ hash: 0xc85c4784, reportType: 8 }); // QEMU 7.2
    });

    it('falls back to TCPv6/UDPv6/IPv6 on the plain addresses when no _EX type applies', () => {
      expect(rssHash(t, VIRTIO_NET_RSS_HASH_TYPE_TCPv6, KEY)).toEqual({
        hash: toeplitzHash(KEY, concat(plainAddrs, ports)),
        reportType: VIRTIO_NET_HASH_REPORT_TCPv6,
      });
      expect(rssHash(t, VIRTIO_NET_RSS_HASH_TYPE_UDP_EX | VIRTIO_NET_RSS_HASH_TYPE_IPv6, KEY)).toEqual({
        hash: H6,
        reportType: VIRTIO_NET_HASH_REPORT_IPv6,
      });
      expect(rssHash(u, VIRTIO_NET_RSS_HASH_TYPE_TCP_EX | VIRTIO_NET_RSS_HASH_TYPE_UDPv6, KEY)).toEqual({
        hash: H6P,
        reportType: VIRTIO_NET_HASH_REPORT_UDPv6,
      });
      expect(rssHash(t, VIRTIO_NET_RSS_HASH_TYPE_UDP_EX, KEY)).toBeNull();
    });

    it('uses the source/destination when the home address option or type 2 header is absent', () => {
      const onlyHome = mk(tcp(v6.src_port, v6.dst_port), 6, true, false);
      const onlyRt = mk(tcp(v6.src_port, v6.dst_port), 6, false, true);
      const none = mk(tcp(v6.src_port, v6.dst_port), 6, false, false);
      const h = (a: Uint8Array, b: Uint8Array) => toeplitzHash(KEY, concat(a, b, ports));
      expect(rssHash(onlyHome, ALL, KEY)!.hash).toBe(h(ipv6Addr(home), ipv6Addr(v6.dst_ip)));
      expect(rssHash(onlyRt, ALL, KEY)!.hash).toBe(h(ipv6Addr(v6.src_ip), ipv6Addr(rt2)));
      expect(rssHash(none, ALL, KEY)).toEqual({ hash: H6P, reportType: VIRTIO_NET_HASH_REPORT_TCPv6_EX });
    });
  });

  it('hashes fragments on addresses only (IPv4 MF, IPv4 offset, IPv6 fragment header)', () => {
    const f4 = (fragField: number) =>
      eth(
        0x0800,
        ipv4({ src: v4.src_ip, dst: v4.dst_ip, proto: 6, fragField, payload: tcp(v4.src_port, v4.dst_port) }),
      );
    for (const ff of [0x2000, 0x0001, 0x20b9]) {
      expect(rssHash(f4(ff), ALL, KEY)).toEqual({ hash: H4, reportType: VIRTIO_NET_HASH_REPORT_IPv4 });
      expect(rssHash(f4(ff), VIRTIO_NET_RSS_HASH_TYPE_TCPv4, KEY)).toBeNull();
    }
    const f6 = eth(
      0x86dd,
      ipv6(v6.src_ip, v6.dst_ip, 44, concat(fragmentHeader(6, 0, true), tcp(v6.src_port, v6.dst_port))),
    );
    expect(rssHash(f6, ALL, KEY)).toEqual({ hash: H6, reportType: VIRTIO_NET_HASH_REPORT_IPv6_EX });
    expect(rssHash(f6, VIRTIO_NET_RSS_HASH_TYPE_TCPv6 | VIRTIO_NET_RSS_HASH_TYPE_IPv6, KEY)).toEqual({
      hash: H6,
      reportType: VIRTIO_NET_HASH_REPORT_IPv6,
    });
  });

  it('gives VLAN-tagged frames (one and two tags) the untagged hash', () => {
    const inner = tcp4.slice(14);
    const one = eth(0x0800, inner, [[0x8100, 5]]);
    const two = eth(0x0800, inner, [
      [0x88a8, 9],
      [0x8100, 5],
    ]);
    const two6 = eth(0x86dd, tcp6.slice(14), [
      [0x8100, 9],
      [0x8100, 5],
    ]);
    expect(rssHash(one, ALL, KEY)).toEqual({ hash: H4P, reportType: VIRTIO_NET_HASH_REPORT_TCPv4 });
    expect(rssHash(two, ALL, KEY)).toEqual({ hash: H4P, reportType: VIRTIO_NET_HASH_REPORT_TCPv4 });
    expect(rssHash(two6, NO_EX, KEY)).toEqual({ hash: H6P, reportType: VIRTIO_NET_HASH_REPORT_TCPv6 });
  });

  it('classifies every truncation: no hash before the IP header ends, address hash before L4 ends', () => {
    for (const [full, ipEnd, l4End, ipH, l4H, ipRep, l4Rep] of [
      [tcp4, 34, 54, H4, H4P, VIRTIO_NET_HASH_REPORT_IPv4, VIRTIO_NET_HASH_REPORT_TCPv4],
      [udp4, 34, 42, H4, H4P, VIRTIO_NET_HASH_REPORT_IPv4, VIRTIO_NET_HASH_REPORT_UDPv4],
      [tcp6, 54, 74, H6, H6P, VIRTIO_NET_HASH_REPORT_IPv6, VIRTIO_NET_HASH_REPORT_TCPv6],
      [udp6, 54, 62, H6, H6P, VIRTIO_NET_HASH_REPORT_IPv6, VIRTIO_NET_HASH_REPORT_UDPv6],
    ] as const) {
      for (let n = 0; n <= full.length; n++) {
        const r = rssHash(guarded(full.slice(0, n)), NO_EX, KEY);
        if (n < ipEnd) expect(r).toBeNull();
        else if (n < l4End) expect(r).toEqual({ hash: ipH, reportType: ipRep });
        else expect(r).toEqual({ hash: l4H, reportType: l4Rep });
      }
    }
  });

  it('rssHashParsed equals rssHash and reports NONE when nothing applies', () => {
    const k = new ToeplitzKey(KEY);
    const p = new ParsedPacket();
    const out = new RssHashResult();
    for (const f of [tcp4, udp4, tcp6, udp6]) {
      for (const types of [0, 1, 2, 4, 8, 0x10, 0x20, 0x1ff, 0x0f0]) {
        const got = rssHashParsed(f, parsePacket(f, p), types, k, out);
        const want = rssHash(f, types, KEY);
        expect(got).toBe(want !== null);
        if (want) expect({ hash: out.hash, reportType: out.reportType }).toEqual(want);
        else expect([out.hash, out.reportType]).toEqual([0, VIRTIO_NET_HASH_REPORT_NONE]);
      }
    }
  });

  it('equals a bit-serial hash over the expected tuple for random flows, types and keys', () => {
    const arb = fc.record({
      six: fc.boolean(),
      proto: fc.constantFrom(6, 17, 1),
      src: fc.uint8Array({ minLength: 16, maxLength: 16 }),
      dst: fc.uint8Array({ minLength: 16, maxLength: 16 }),
      sp: fc.nat(0xffff),
      dp: fc.nat(0xffff),
      types: fc.nat(0x1ff),
      key: fc.uint8Array({ minLength: 40, maxLength: 40 }),
      vlan: fc.nat(2),
    });
    fc.assert(
      fc.property(arb, (a) => {
        const fmt4 = (b: Uint8Array) => Array.from(b.subarray(0, 4)).join('.');
        const fmt6 = (b: Uint8Array) =>
          Array.from({ length: 8 }, (_, i) => ((b[2 * i]! << 8) | b[2 * i + 1]!).toString(16)).join(':');
        const l4 = a.proto === 6 ? tcp(a.sp, a.dp) : a.proto === 17 ? udp(a.sp, a.dp) : new Uint8Array(8);
        const tags: [number, number][] =
          a.vlan === 0
            ? []
            : a.vlan === 1
              ? [[0x8100, 1]]
              : [
                  [0x88a8, 2],
                  [0x8100, 3],
                ];
        const f = a.six
          ? eth(0x86dd, ipv6(fmt6(a.src), fmt6(a.dst), a.proto, l4), tags)
          : eth(0x0800, ipv4({ src: fmt4(a.src), dst: fmt4(a.dst), proto: a.proto, payload: l4 }), tags);
        const n = a.six ? 16 : 4;
        const addrs = concat(a.src.subarray(0, n), a.dst.subarray(0, n));
        const ports = concat(u16(a.sp), u16(a.dp));
        // Independent statement of the selection (VIRTIO_NET_HASH_TYPE_X = 1 << (REPORT_X - 1)).
        const want: [number, boolean][] = a.six
          ? [
              [a.proto === 6 ? 8 : 0, true],
              [a.proto === 6 ? 5 : 0, true],
              [a.proto === 17 ? 9 : 0, true],
              [a.proto === 17 ? 6 : 0, true],
              [7, false],
              [4, false],
            ]
          : [
              [a.proto === 6 ? 2 : 0, true],
              [a.proto === 17 ? 3 : 0, true],
              [1, false],
            ];
        const hit = want.find(([r]) => r !== 0 && a.types & (1 << (r - 1)));
        const got = rssHash(f, a.types, a.key);
        if (!hit) expect(got).toBeNull();
        else
          expect(got).toEqual({
            hash: toeplitzBitSerial(a.key, hit[1] ? concat(addrs, ports) : addrs),
            reportType: hit[0],
          });
      }),
      { numRuns: 1000 },
    );
  });

  it('never throws or reads past the frame for random bytes and mutated frames', () => {
    const frames = fc.oneof(
      fc.uint8Array({ maxLength: 160 }),
      fc
        .tuple(
          fc.constantFrom(tcp4, udp4, tcp6, udp6),
          fc.nat(100),
          fc.uint8Array({ maxLength: 64 }),
          fc.nat(90),
          fc.nat(255),
        )
        .map(([base, cut, tail, pos, val]) => {
          const f = new Uint8Array([...base.slice(0, cut), ...tail]);
          if (pos < f.length) f[pos] = val;
          return f;
        }),
    );
    fc.assert(
      fc.property(
        frames,
        fc.integer({ min: 0, max: 0xffffffff }),
        fc.uint8Array({ maxLength: 44 }),
        (f, types, key) => {
          const r = rssHash(guarded(f), types, key);
          if (r) {
            expect(r.hash >>> 0).toBe(r.hash);
            expect(r.reportType).toBeGreaterThanOrEqual(1);
            expect(r.reportType).toBeLessThanOrEqual(9);
          }
        },
      ),
      { numRuns: 3000 },
    );
  });
});
