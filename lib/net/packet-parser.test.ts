import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  eth,
  fragmentHeader,
  guarded,
  homeAddressOption,
  ipv4,
  ipv6,
  ipv6Addr,
  optionsHeader,
  routingType2,
  tcp,
  udp,
} from './frames.test-support.js';
import {
  L3_IPV4,
  L3_IPV6,
  L3_NONE,
  L3_OTHER,
  L4_NONE,
  L4_TCP,
  L4_UDP,
  ParsedPacket,
  parsePacket,
} from './packet-parser.js';

const tcp4 = eth(
  0x0800,
  ipv4({ src: '10.0.0.1', dst: '10.0.0.2', proto: 6, payload: tcp(1234, 80, new Uint8Array(10)) }),
);
const udp4 = eth(
  0x0800,
  ipv4({ src: '10.0.0.1', dst: '10.0.0.2', proto: 17, payload: udp(53, 5353, new Uint8Array(3)) }),
);
const rich6 = eth(
  0x86dd,
  ipv6(
    '2001:db8::1',
    '2001:db8::2',
    0,
    new Uint8Array([
      ...optionsHeader(60, new Uint8Array(4)),
      ...optionsHeader(43, homeAddressOption('2001:db8::aaaa')),
      ...routingType2(6, '2001:db8::bbbb'),
      ...tcp(4000, 443, new Uint8Array(7)),
    ]),
  ),
);

/** Random bytes, and valid-looking prefixes with random tails (deeper paths). */
const frames = fc.oneof(
  fc.uint8Array({ maxLength: 200 }),
  // Valid-looking prefixes with random tails exercise deeper paths.
  fc
    .tuple(
      fc.constantFrom(tcp4, udp4, rich6),
      fc.nat(120),
      fc.uint8Array({ maxLength: 80 }),
      fc.nat(100),
      fc.nat(255),
    )
    .map(([base, cut, tail, pos, val]) => {
      const f = new Uint8Array([...base.slice(0, cut), ...tail]);
      if (pos < f.length) f[pos] = val;
      return f;
    }),
);

describe('parsePacket', () => {
  const p = new ParsedPacket();

  it('parses Ethernet/IPv4/TCP', () => {
    parsePacket(tcp4, p);
    expect(p).toMatchObject({
      l2Length: 14,
      vlanCount: 0,
      etherType: 0x0800,
      l3Kind: L3_IPV4,
      l3Offset: 14,
      ipHeaderLength: 20,
      srcAddrOffset: 26,
      dstAddrOffset: 30,
      addrLength: 4,
      isFragment: false,
      l4Proto: 6,
      l4Offset: 34,
      l4Kind: L4_TCP,
      portsPresent: true,
      l4HeaderLength: 20,
      truncated: false,
      malformed: false,
    });
  });

  it('parses UDP and IPv4 options', () => {
    const f = eth(
      0x0800,
      ipv4({
        src: '1.2.3.4',
        dst: '5.6.7.8',
        proto: 17,
        options: new Uint8Array([1, 1, 1, 0, 1, 1, 1, 0]),
        payload: udp(1, 2),
      }),
    );
    parsePacket(f, p);
    expect(p.ipHeaderLength).toBe(28);
    expect(p.l4Offset).toBe(42);
    expect(p.l4Kind).toBe(L4_UDP);
    expect(f[p.l4Offset + 1]).toBe(1);
    expect(f[p.l4Offset + 3]).toBe(2);
  });

  it('walks one and two VLAN tags and stops at a third', () => {
    const inner = ipv4({ src: '10.0.0.1', dst: '10.0.0.2', proto: 6, payload: tcp(1, 2) });
    parsePacket(eth(0x0800, inner, [[0x8100, 0x0064]]), p);
    expect([p.vlanCount, p.vlanTci0, p.l2Length, p.l3Kind, p.l4Offset]).toEqual([1, 0x64, 18, L3_IPV4, 38]);
    parsePacket(
      eth(0x0800, inner, [
        [0x88a8, 0x2005],
        [0x8100, 0x0007],
      ]),
      p,
    );
    expect([p.vlanCount, p.vlanTci0, p.vlanTci1, p.l2Length, p.l3Kind, p.l4Kind]).toEqual([
      2,
      0x2005,
      7,
      22,
      L3_IPV4,
      L4_TCP,
    ]);
    parsePacket(
      eth(0x0800, inner, [
        [0x88a8, 1],
        [0x8100, 2],
        [0x8100, 3],
      ]),
      p,
    );
    expect([p.vlanCount, p.l3Kind, p.l4Kind]).toEqual([2, L3_OTHER, L4_NONE]);
  });

  it('gives IPv4 fragments no L4 fields (MF or offset != 0), DF alone is not a fragment', () => {
    const mk = (fragField: number) =>
      parsePacket(
        eth(0x0800, ipv4({ src: '1.1.1.1', dst: '2.2.2.2', proto: 6, fragField, payload: tcp(1, 2) })),
        p,
      );
    mk(0x2000);
    expect([p.isFragment, p.l4Kind, p.portsPresent, p.l3Kind]).toEqual([true, L4_NONE, false, L3_IPV4]);
    mk(0x0010);
    expect([p.isFragment, p.l4Kind]).toEqual([true, L4_NONE]);
    mk(0x4000);
    expect([p.isFragment, p.l4Kind]).toEqual([false, L4_TCP]);
  });

  it('walks IPv6 extension headers and finds the _EX addresses', () => {
    parsePacket(rich6, p);
    expect(p.l3Kind).toBe(L3_IPV6);
    expect(p.hasExtHeaders).toBe(true);
    expect(p.l4Proto).toBe(6);
    expect(p.l4Kind).toBe(L4_TCP);
    expect(p.ipHeaderLength).toBe(40 + 8 + 24 + 24);
    expect(p.l4Offset).toBe(14 + 96);
    expect(Array.from(rich6.subarray(p.exSrcAddrOffset, p.exSrcAddrOffset + 16))).toEqual(
      Array.from(ipv6Addr('2001:db8::aaaa')),
    );
    expect(Array.from(rich6.subarray(p.exDstAddrOffset, p.exDstAddrOffset + 16))).toEqual(
      Array.from(ipv6Addr('2001:db8::bbbb')),
    );
    expect(Array.from(rich6.subarray(p.srcAddrOffset, p.srcAddrOffset + 16))).toEqual(
      Array.from(ipv6Addr('2001:db8::1')),
    );
    expect(rich6[p.l4Offset]! * 256 + rich6[p.l4Offset + 1]!).toBe(4000);
  });

  it('ignores routing headers other than type 2 with one segment left, and no HAO', () => {
    const f = eth(
      0x86dd,
      ipv6(
        '::1',
        '::2',
        60,
        new Uint8Array([
          ...optionsHeader(43, new Uint8Array(4)),
          ...routingType2(17, '::9', 0),
          ...udp(7, 8),
        ]),
      ),
    );
    parsePacket(f, p);
    expect([p.hasExtHeaders, p.l4Kind, p.exSrcAddrOffset, p.exDstAddrOffset]).toEqual([
      true,
      L4_UDP,
      p.srcAddrOffset,
      p.dstAddrOffset,
    ]);
  });

  it('handles the IPv6 fragment header (atomic fragments keep L4) and AH lengths', () => {
    parsePacket(
      eth(0x86dd, ipv6('::1', '::2', 44, new Uint8Array([...fragmentHeader(6, 0, true), ...tcp(1, 2)]))),
      p,
    );
    expect([p.isFragment, p.l4Kind, p.l4Proto, p.hasExtHeaders]).toEqual([true, L4_NONE, 6, true]);
    parsePacket(
      eth(0x86dd, ipv6('::1', '::2', 44, new Uint8Array([...fragmentHeader(6, 0, false), ...tcp(1, 2)]))),
      p,
    );
    expect([p.isFragment, p.l4Kind]).toEqual([false, L4_TCP]);
    // AH: payload length 4 → (4+2)*4 = 24 bytes
    const ah = new Uint8Array(24);
    ah[0] = 17;
    ah[1] = 4;
    parsePacket(eth(0x86dd, ipv6('::1', '::2', 51, new Uint8Array([...ah, ...udp(9, 10)]))), p);
    expect([p.l4Offset, p.l4Kind]).toEqual([14 + 40 + 24, L4_UDP]);
  });

  it('classifies malformed IP headers', () => {
    const bad = tcp4.slice();
    bad[14] = 0x44; // IHL 4
    parsePacket(bad, p);
    expect([p.l3Kind, p.malformed]).toEqual([L3_NONE, true]);
    bad[14] = 0x65; // version 6 in an IPv4 EtherType
    parsePacket(bad, p);
    expect([p.l3Kind, p.malformed]).toEqual([L3_NONE, true]);
    const arp = eth(0x0806, new Uint8Array(28));
    parsePacket(arp, p);
    expect(p.l3Kind).toBe(L3_OTHER);
  });

  it('guarded() really detects reads past the end', () => {
    const g = guarded(new Uint8Array(2));
    expect(g[1]).toBe(0);
    expect(() => g[2]).toThrow();
    expect(g.length).toBe(2);
  });

  it('classifies every truncation of several frames without reading past the end', () => {
    for (const full of [tcp4, udp4, rich6]) {
      const ref = parsePacket(full, new ParsedPacket());
      const l4End = ref.l4Offset + (ref.l4Kind === L4_TCP ? 20 : 8);
      const l3End = ref.l3Kind === L3_IPV4 ? ref.l4Offset : ref.l3Offset + 40;
      for (let n = 0; n < full.length; n++) {
        const cut = guarded(full.slice(0, n));
        parsePacket(cut, p);
        if (n < l4End) {
          expect(p.l4Kind).toBe(L4_NONE);
          expect(p.truncated).toBe(true);
        } else {
          expect(p.l4Kind).toBe(ref.l4Kind);
          expect(p.l4Offset).toBe(ref.l4Offset);
        }
        expect(p.l3Kind).toBe(n < l3End ? L3_NONE : ref.l3Kind);
      }
    }
  });

  it('parses a frame inside a larger buffer like the frame alone, offsets shifted (property)', () => {
    const q = new ParsedPacket();
    fc.assert(
      fc.property(
        frames,
        fc.uint8Array({ maxLength: 40 }),
        fc.uint8Array({ maxLength: 40 }),
        (f, before, after) => {
          const buf = new Uint8Array([...before, ...f, ...after]);
          const k = before.length;
          parsePacket(f, p);
          parsePacket(guarded(buf, k, k + f.length), q, k, k + f.length);
          const shift = (o: number) => (o < 0 ? o : o + k);
          expect({ ...q }).toEqual({
            ...p,
            l3Offset: shift(p.l3Offset),
            srcAddrOffset: shift(p.srcAddrOffset),
            dstAddrOffset: shift(p.dstAddrOffset),
            exSrcAddrOffset: shift(p.exSrcAddrOffset),
            exDstAddrOffset: shift(p.exDstAddrOffset),
            l4Offset: shift(p.l4Offset),
          });
        },
      ),
      { numRuns: 2000 },
    );
  });

  it('never throws or reads out of bounds, and offsets stay inside the frame (random bytes)', () => {
    fc.assert(
      fc.property(frames, (f) => {
        parsePacket(guarded(f), p);
        if (p.addrLength) {
          expect(p.srcAddrOffset + p.addrLength).toBeLessThanOrEqual(f.length);
          expect(p.dstAddrOffset + p.addrLength).toBeLessThanOrEqual(f.length);
          expect(p.exSrcAddrOffset + p.addrLength).toBeLessThanOrEqual(f.length);
          expect(p.exDstAddrOffset + p.addrLength).toBeLessThanOrEqual(f.length);
        }
        if (p.portsPresent) expect(p.l4Offset + 8).toBeLessThanOrEqual(f.length);
      }),
      { numRuns: 3000 },
    );
  });
});
