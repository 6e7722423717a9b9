// Inner header hash (VIRTIO 1.4 "Inner Header Hash"): every supported encapsulation, the inner flow
// hashed as an independent bit-serial Toeplitz over the inner tuple says; a type not enabled, a header we
// do not recognise, or an unknown payload falls back to the outer header; no read outside the frame.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { concat, eth, guarded, hex, ipv4, toeplitzBitSerial, u16, udp } from './frames.test-support.js';
import { ParsedPacket, parsePacket } from './packet-parser.js';
import { RssHashResult, rssHashParsed, VIRTIO_NET_RSS_SUPPORTED_HASH_TYPES } from './rss-hash.js';
import { ToeplitzKey } from './toeplitz.js';
import { HASH_TUNNEL_SUPPORTED_TYPES, HashTunnelType, parseTunnelInner } from './tunnel-inner.js';
import {
  encapsulations,
  ethPacket,
  type Flow,
  greHeader,
  ipPacket,
  outerIp,
  outerUdp,
  tuple,
} from './tunnel-frames.test-support.js';

/** The Microsoft RSS verification key. */
const KEY = hex('6d5a56da255b0ec24167253d43a38fb0d0ca2bcbae7b30b477cb2da38030f20c6a42b73bbeac01fa');
const ALL = VIRTIO_NET_RSS_SUPPORTED_HASH_TYPES;

/**
 * Report type of a flow hashed with every hash type enabled: TCPv4 2, UDPv4 3; IPv6 gets the _EX types
 * (TCPv6_EX 8, UDPv6_EX 9), which take precedence (lib/net/rss-hash.ts) and equal the plain ones without
 * extension headers.
 */
function report(f: Flow): number {
  return f.v6 ? (f.proto === 6 ? 8 : 9) : f.proto === 6 ? 2 : 3;
}

/** What the device computes: the hash over the inner headers when `enabled` selects the tunnel. */
function deviceHash(frame: Uint8Array, enabled: number, types = ALL) {
  const outer = parsePacket(frame, new ParsedPacket());
  const r = new RssHashResult();
  const matched = parseTunnelInner(frame, outer, enabled, r.inner);
  rssHashParsed(frame, matched ? r.inner : outer, types, new ToeplitzKey(KEY), r);
  return { matched, hash: r.hash >>> 0, report: r.reportType };
}

const FLOWS: Flow[] = [
  { v6: false, src: '10.0.0.1', dst: '10.0.0.2', proto: 6, sport: 40000, dport: 443 },
  { v6: false, src: '172.16.5.9', dst: '192.168.7.3', proto: 17, sport: 5353, dport: 53 },
  { v6: true, src: 'fd00::1', dst: 'fd00::2:3', proto: 6, sport: 1234, dport: 80 },
  { v6: true, src: '2001:db8:1::5', dst: '2001:db8:2::6', proto: 17, sport: 999, dport: 4500 },
];

describe('inner header hash per encapsulation type', () => {
  for (const outerV6 of [false, true]) {
    for (const flow of FLOWS) {
      for (const e of encapsulations(flow, outerV6)) {
        const label = `${e.name} over IPv${outerV6 ? 6 : 4}, inner ${flow.v6 ? 'IPv6' : 'IPv4'}/${flow.proto === 6 ? 'TCP' : 'UDP'}`;
        it(`${label}: enabled → inner tuple; every other type → outer`, () => {
          // Enabled alone (each bit the frame is of, one at a time) and with every type.
          for (let bit = 1; bit <= HASH_TUNNEL_SUPPORTED_TYPES; bit <<= 1) {
            if ((e.type & bit) === 0) continue;
            const got = deviceHash(e.frame, bit);
            expect(got).toEqual({
              matched: true,
              hash: toeplitzBitSerial(KEY, tuple(e.inner, true)),
              report: report(e.inner),
            });
          }
          expect(deviceHash(e.frame, HASH_TUNNEL_SUPPORTED_TYPES).hash).toBe(
            toeplitzBitSerial(KEY, tuple(e.inner, true)),
          );
          // Every type but the frame's: the outer header is hashed.
          const outer = deviceHash(e.frame, HASH_TUNNEL_SUPPORTED_TYPES & ~e.type);
          expect(outer.matched).toBe(false);
          expect(outer.hash).toBe(toeplitzBitSerial(KEY, tuple(e.outer, e.outerHasPorts)));
          expect(outer.report).toBe(e.outerHasPorts ? report(e.outer) : outerV6 ? 7 : 1);
        });
      }
    }
  }

  it('the inner hash follows the enabled hash types: IPv4 only → inner addresses, report IPv4', () => {
    const f = FLOWS[0]!;
    for (const e of encapsulations(f)) {
      expect(deviceHash(e.frame, e.type, 1 /* IPv4 */)).toEqual({
        matched: true,
        hash: toeplitzBitSerial(KEY, tuple(f, false)),
        report: 1,
      });
    }
  });

  it('frames that are not tunnels, or not of a form we recognise, keep the outer hash', () => {
    const f = FLOWS[0]!;
    const ipIn = ipPacket(f);
    const cases: [string, Uint8Array][] = [
      ['plain TCP', ethPacket(f)],
      [
        'UDP to another port',
        outerUdp(false, 4788, concat(Uint8Array.of(8, 0, 0, 0, 0, 0, 0, 0), ethPacket(f))),
      ],
      ['VXLAN without the I flag', outerUdp(false, 4789, concat(new Uint8Array(8), ethPacket(f)))],
      [
        'VXLAN-GPE version 1',
        outerUdp(false, 4790, concat(Uint8Array.of(0x1c, 0, 0, 1), new Uint8Array(4), ipIn)),
      ],
      [
        'VXLAN-GPE carrying NSH',
        outerUdp(false, 4790, concat(Uint8Array.of(0x0c, 0, 0, 4), new Uint8Array(4), ipIn)),
      ],
      [
        'GENEVE version 1',
        outerUdp(false, 6081, concat(Uint8Array.of(0x40, 0), u16(0x0800), new Uint8Array(4), ipIn)),
      ],
      [
        'GENEVE options past the end',
        outerUdp(false, 6081, concat(Uint8Array.of(0x3f, 0), u16(0x0800), new Uint8Array(4))),
      ],
      ['GRE with the routing bit', outerIp(false, 47, concat(u16(0x4000), u16(0x0800), ipIn))],
      ['GRE version 1 (PPTP)', outerIp(false, 47, concat(u16(0x2001), u16(0x880b), new Uint8Array(8), ipIn))],
      ['GRE carrying ARP', outerIp(false, 47, concat(greHeader(0x0806), new Uint8Array(28)))],
      ['GRE header cut short', outerIp(false, 47, greHeader(0x0800, { key: 1, seq: 2 }).subarray(0, 10))],
      ['IPIP non-first fragment', eth(0x0800, fragmentOf(ipIn))],
    ];
    for (const [name, frame] of cases) {
      const outer = parsePacket(frame, new ParsedPacket());
      expect(parseTunnelInner(frame, outer, HASH_TUNNEL_SUPPORTED_TYPES, new ParsedPacket()), name).toBe(
        false,
      );
    }
  });

  it('VLAN tags on the outer frame and on the inner Ethernet frame are walked', () => {
    const f = FLOWS[2]!;
    const inner = eth(0x86dd, ipPacket(f), [[0x8100, 0x0064]]);
    const vxlan = concat(Uint8Array.of(0x08, 0, 0, 0, 0, 0, 0x2a, 0), inner);
    const outer = eth(
      0x0800,
      ipv4({ src: '192.0.2.1', dst: '192.0.2.2', proto: 17, payload: udp(1, 4789, vxlan) }),
      [
        [0x88a8, 0x0005],
        [0x8100, 0x0006],
      ],
    );
    expect(deviceHash(outer, HashTunnelType.VXLAN)).toEqual({
      matched: true,
      hash: toeplitzBitSerial(KEY, tuple(f, true)),
      report: report(f),
    });
  });

  it('a recognised tunnel whose inner packet is cut short gets no hash (the inner header is the one used)', () => {
    const f = FLOWS[0]!;
    const vx = encapsulations(f).find((e) => e.type === HashTunnelType.VXLAN)!;
    // Cut inside the inner IPv4 header: outer UDP still complete, inner unhashable.
    const cut = vx.frame.subarray(0, 14 + 20 + 8 + 8 + 14 + 10);
    // The outer UDP length is now wrong; the parser looks only at the bytes present.
    expect(deviceHash(cut, HashTunnelType.VXLAN)).toEqual({ matched: true, hash: 0, report: 0 });
  });

  it('a single level only: VXLAN in VXLAN hashes the first inner packet (itself a VXLAN datagram)', () => {
    const f = FLOWS[1]!;
    const once = encapsulations(f).find((e) => e.type === HashTunnelType.VXLAN)!.frame;
    const twice = outerUdp(false, 4789, concat(Uint8Array.of(0x08, 0, 0, 0, 0, 0, 1, 0), once));
    // The first inner packet is 198.51.100.1:49152 → 198.51.100.2:4789 (UDP).
    const mid: Flow = {
      v6: false,
      src: '198.51.100.1',
      dst: '198.51.100.2',
      proto: 17,
      sport: 49152,
      dport: 4789,
    };
    expect(deviceHash(twice, HashTunnelType.VXLAN)).toEqual({
      matched: true,
      hash: toeplitzBitSerial(KEY, tuple(mid, true)),
      report: 3,
    });
  });

  it('never throws nor reads outside the frame, for random bytes behind each tunnel header', () => {
    const heads = encapsulations(FLOWS[0]!).map((e) => e.frame.subarray(0, e.frame.length - 40));
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: heads.length - 1 }),
        fc.uint8Array({ maxLength: 96 }),
        fc.integer({ min: 0, max: HASH_TUNNEL_SUPPORTED_TYPES }),
        (i, tail, enabled) => {
          const bytes = concat(heads[i]!, tail);
          const frame = guarded(bytes);
          const outer = parsePacket(frame, new ParsedPacket());
          const inner = new ParsedPacket();
          if (parseTunnelInner(frame, outer, enabled, inner)) {
            rssHashParsed(frame, inner, ALL, new ToeplitzKey(KEY), new RssHashResult());
            expect(inner.l4Offset).toBeLessThanOrEqual(bytes.length);
          }
        },
      ),
      { numRuns: 3000 },
    );
  });
});

/** `ip` as a non-first fragment (offset 8 bytes) inside an outer IPv4 header of protocol 4. */
function fragmentOf(ip: Uint8Array): Uint8Array {
  const h = outerIp(false, 4, ip).subarray(14);
  const out = Uint8Array.from(h);
  out[6] = 0x20; // MF
  out[7] = 0x01; // offset 1
  return out;
}
