import { describe, expect, it } from 'vitest';
import type { NetOffload } from './backend.js';
import { verifyIpv4HeaderChecksum, verifyL4Checksum } from './checksum.js';
import {
  concat,
  eth,
  ethernet,
  fragmentHeader,
  hex,
  ipv4,
  ipv6,
  tcp,
  u16,
  u32,
  udp,
  withL4ChecksumV4,
  withL4ChecksumV6,
} from './frames.test-support.js';
import { L3_IPV4, L3_IPV6, ParsedPacket, parseIpPacket, parsePacket } from './packet-parser.js';
import { SEGMENT_ERR_GSO_SIZE, SEGMENT_ERR_TUNNEL, SEGMENT_OK, SoftwareSegmenter } from './segmentation.js';
import {
  checkTunnelOffload,
  TUNNEL_ERR_FLAGS,
  TUNNEL_ERR_GSO_TYPE,
  TUNNEL_ERR_INNER,
  TUNNEL_ERR_OUTER,
  TUNNEL_OK,
} from './tunnel.js';
import { GsoType, NetHdrFlags } from './vnet-header.js';

const INNER_MAC_DST = hex('02000000000b');
const INNER_MAC_SRC = hex('02000000000a');

function payloadOf(n: number, seed = 3): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * 13 + seed * 7 + (i >> 9)) & 0xff;
  return b;
}

/** VXLAN header (RFC 7348): I flag, VNI. */
function vxlan(vni: number): Uint8Array {
  return concat(Uint8Array.of(0x08, 0, 0, 0), u32(vni << 8));
}

/** GENEVE header (RFC 8926) with one 8-byte option, protocol Transparent Ethernet Bridging. */
function geneve(vni: number): Uint8Array {
  const option = concat(u16(0x0102), Uint8Array.of(0x03, 1), u32(0xdeadbeef));
  return concat(Uint8Array.of(option.length / 4, 0), u16(0x6558), u32(vni << 8), option);
}

interface Inner {
  v6: boolean;
  l4: 'tcp' | 'udp';
  payload: Uint8Array;
  seq?: number;
  flags?: number;
  id?: number;
}

/** The inner IP packet, L4 checksum complete. */
function innerIp(o: Inner): Uint8Array {
  const l4 =
    o.l4 === 'tcp'
      ? tcp(40000, 5201, o.payload, o.flags ?? 0x18, o.seq ?? 1000)
      : udp(40001, 5202, o.payload);
  const proto = o.l4 === 'tcp' ? 6 : 17;
  return o.v6
    ? withL4ChecksumV6(ipv6('fd00::1', 'fd00::2', proto, l4))
    : withL4ChecksumV4(ipv4({ src: '10.9.0.1', dst: '10.9.0.2', proto, payload: l4, id: o.id ?? 0x100 }));
}

interface Outer {
  v6: boolean;
  tunnelHeader: Uint8Array;
  id?: number;
  /** The outer UDP checksum: complete, or zero. */
  csum: boolean;
}

/** Outer Ethernet/IP/UDP around `tunnelHeader` + inner Ethernet + `inner`. */
function encap(inner: Uint8Array, innerV6: boolean, o: Outer): Uint8Array {
  const innerEth = ethernet(INNER_MAC_DST, INNER_MAC_SRC, innerV6 ? 0x86dd : 0x0800, inner);
  const u = udp(49152, 4789, concat(o.tunnelHeader, innerEth));
  let ip = o.v6
    ? ipv6('2001:db8::1', '2001:db8::2', 17, u)
    : ipv4({ src: '192.0.2.1', dst: '192.0.2.2', proto: 17, payload: u, id: o.id ?? 0x2000 });
  if (o.csum) ip = o.v6 ? withL4ChecksumV6(ip) : withL4ChecksumV4(ip);
  return eth(o.v6 ? 0x86dd : 0x0800, ip);
}

/** The offload a driver sends with `frame` (offsets from the frame's own layout). */
function tunnelOffload(frame: Uint8Array, gsoType: number, gsoSize: number, csumFlag: boolean): NetOffload {
  const outer = parsePacket(frame, new ParsedPacket());
  const outerTh = outer.l4Offset;
  // Inner network header: after UDP, the tunnel header and the inner Ethernet header.
  const tunnelLen = frame[outerTh + 8] === 0x08 ? 8 : 8 + (frame[outerTh + 8]! & 0x3f) * 4;
  const innerNh = outerTh + 8 + tunnelLen + 14;
  const inner = parseIpPacket(frame, new ParsedPacket(), innerNh, frame.length);
  const tcpInner = (gsoType & 7) !== GsoType.UDP_L4;
  return {
    flags: NetHdrFlags.NEEDS_CSUM | (csumFlag ? NetHdrFlags.UDP_TUNNEL_CSUM : 0),
    gsoType,
    hdrLen: inner.l4Offset + inner.l4HeaderLength,
    gsoSize,
    csumStart: inner.l4Offset,
    csumOffset: tcpInner ? 16 : 6,
    outerThOffset: outerTh,
    innerNhOffset: innerNh,
  };
}

function segment(frame: Uint8Array, o: NetOffload) {
  const seg = new SoftwareSegmenter();
  const before = frame.slice();
  const out: Uint8Array[] = [];
  const rc = seg.process(frame, o, (s) => out.push(s.slice()));
  expect(Array.from(frame)).toEqual(Array.from(before));
  return { rc, out };
}

/** Recomputes every checksum of a tunnel segment: outer IPv4 header, outer UDP (unless 0), inner IP, inner L4. */
function verifyAll(segment: Uint8Array, outerCsum: boolean): void {
  const outer = parsePacket(segment, new ParsedPacket());
  if (outer.l3Kind === L3_IPV4) expect(verifyIpv4HeaderChecksum(segment, outer)).toBe(true);
  const udpCsum = (segment[outer.l4Offset + 6]! << 8) | segment[outer.l4Offset + 7]!;
  if (outerCsum) {
    expect(udpCsum).not.toBe(0);
    expect(verifyL4Checksum(segment, outer)).toBe(true);
  } else expect(udpCsum).toBe(0);
  const innerNh = outer.l4Offset + 8 + (segment[outer.l4Offset + 8] === 0x08 ? 8 : 16) + 14;
  const inner = parseIpPacket(segment, new ParsedPacket(), innerNh, segment.length);
  if (inner.l3Kind === L3_IPV4) expect(verifyIpv4HeaderChecksum(segment, inner)).toBe(true);
  expect(verifyL4Checksum(segment, inner)).toBe(true);
}

describe('UDP tunnel GSO in software (VIRTIO 1.4 §5.1.6.2)', () => {
  it('VXLAN over IPv4, inner TSO over IPv4: each segment is the frame the sender would have built', () => {
    const payload = payloadOf(3000);
    const flags = 0x80 | 0x18 | 0x01; // CWR PSH ACK FIN
    const inner = innerIp({ v6: false, l4: 'tcp', payload, seq: 0xfffffc00, flags, id: 7 });
    const frame = encap(inner, false, { v6: false, tunnelHeader: vxlan(42), id: 0x2000, csum: false });
    const o = tunnelOffload(frame, GsoType.TCPV4 | GsoType.UDP_TUNNEL_IPV4, 1400, false);
    expect(o.outerThOffset).toBe(34);
    expect(o.innerNhOffset).toBe(34 + 8 + 8 + 14);
    expect(o.csumStart).toBe(64 + 20);
    const { rc, out } = segment(frame, o);
    expect(rc).toBe(SEGMENT_OK);
    expect(out.length).toBe(3);
    const sizes = [1400, 1400, 200];
    for (let i = 0; i < 3; i++) {
      let f = 0x10; // ACK, then CWR on the first, FIN/PSH on the last
      if (i === 0) f |= 0x80;
      if (i === 2) f |= 0x08 | 0x01;
      const want = encap(
        innerIp({
          v6: false,
          l4: 'tcp',
          payload: payload.subarray(i * 1400, i * 1400 + sizes[i]!),
          seq: (0xfffffc00 + i * 1400) >>> 0,
          flags: f,
          id: 7 + i,
        }),
        false,
        { v6: false, tunnelHeader: vxlan(42), id: 0x2000 + i, csum: false },
      );
      expect(Array.from(out[i]!)).toEqual(Array.from(want));
      verifyAll(out[i]!, false);
    }
  });

  it('UDP_TUNNEL_CSUM: the outer UDP checksum of each segment is computed (VXLAN over IPv4, inner IPv6)', () => {
    const payload = payloadOf(2500, 5);
    const inner = innerIp({ v6: true, l4: 'tcp', payload, seq: 77 });
    const frame = encap(inner, true, { v6: false, tunnelHeader: vxlan(7), csum: true });
    // The sender leaves the outer pseudo-header sum; the device recomputes from the addresses anyway.
    const o = tunnelOffload(frame, GsoType.TCPV6 | GsoType.UDP_TUNNEL_IPV4, 1000, true);
    const { rc, out } = segment(frame, o);
    expect(rc).toBe(SEGMENT_OK);
    expect(out.map((s) => s.length)).toEqual(
      [1, 2, 3].map((i) => 14 + 20 + 8 + 8 + 14 + 40 + 20 + (i < 3 ? 1000 : 500)),
    );
    for (let i = 0; i < 3; i++) {
      const want = encap(
        innerIp({
          v6: true,
          l4: 'tcp',
          payload: payload.subarray(i * 1000, Math.min(2500, (i + 1) * 1000)),
          seq: 77 + i * 1000,
          flags: i === 2 ? 0x18 : 0x10,
        }),
        true,
        { v6: false, tunnelHeader: vxlan(7), id: 0x2000 + i, csum: true },
      );
      expect(Array.from(out[i]!)).toEqual(Array.from(want));
      verifyAll(out[i]!, true);
    }
  });

  it('GENEVE (with an option) over IPv6, inner TSO over IPv6, outer checksum offloaded', () => {
    const payload = payloadOf(4000, 9);
    const inner = innerIp({ v6: true, l4: 'tcp', payload, seq: 5 });
    const frame = encap(inner, true, { v6: true, tunnelHeader: geneve(99), csum: true });
    const o = tunnelOffload(frame, GsoType.TCPV6 | GsoType.UDP_TUNNEL_IPV6, 1440, true);
    expect(o.outerThOffset).toBe(54);
    expect(o.innerNhOffset).toBe(54 + 8 + 16 + 14);
    const { rc, out } = segment(frame, o);
    expect(rc).toBe(SEGMENT_OK);
    expect(out.length).toBe(3);
    for (let i = 0; i < 3; i++) {
      const want = encap(
        innerIp({
          v6: true,
          l4: 'tcp',
          payload: payload.subarray(i * 1440, Math.min(4000, (i + 1) * 1440)),
          seq: 5 + i * 1440,
          flags: i === 2 ? 0x18 : 0x10,
        }),
        true,
        { v6: true, tunnelHeader: geneve(99), csum: true },
      );
      expect(Array.from(out[i]!)).toEqual(Array.from(want));
      verifyAll(out[i]!, true);
    }
  });

  it('inner USO: each segment a whole inner UDP datagram, inner and outer lengths per segment', () => {
    const payload = payloadOf(2000, 11);
    const inner = innerIp({ v6: false, l4: 'udp', payload, id: 0x300 });
    const frame = encap(inner, false, { v6: false, tunnelHeader: vxlan(1), csum: false });
    const o = tunnelOffload(frame, GsoType.UDP_L4 | GsoType.UDP_TUNNEL_IPV4, 800, false);
    const { rc, out } = segment(frame, o);
    expect(rc).toBe(SEGMENT_OK);
    expect(out.length).toBe(3);
    for (let i = 0; i < 3; i++) {
      const want = encap(
        innerIp({
          v6: false,
          l4: 'udp',
          payload: payload.subarray(i * 800, Math.min(2000, (i + 1) * 800)),
          id: 0x300 + i,
        }),
        false,
        { v6: false, tunnelHeader: vxlan(1), id: 0x2000 + i, csum: false },
      );
      expect(Array.from(out[i]!)).toEqual(Array.from(want));
      verifyAll(out[i]!, false);
    }
  });

  it('a frame of at most gso_size payload is one segment with every length and checksum fixed', () => {
    const payload = payloadOf(500);
    const frame = encap(innerIp({ v6: false, l4: 'tcp', payload }), false, {
      v6: false,
      tunnelHeader: vxlan(3),
      csum: true,
    });
    const o = tunnelOffload(frame, GsoType.TCPV4 | GsoType.UDP_TUNNEL_IPV4 | GsoType.ECN, 1400, true);
    const { rc, out } = segment(frame, o);
    expect(rc).toBe(SEGMENT_OK);
    expect(Array.from(out[0]!)).toEqual(Array.from(frame));
  });
});

describe('checkTunnelOffload: malformed tunnel requests are refused, never thrown', () => {
  const payload = payloadOf(3000);
  const frame = encap(innerIp({ v6: false, l4: 'tcp', payload }), false, {
    v6: false,
    tunnelHeader: vxlan(5),
    csum: false,
  });
  const good = tunnelOffload(frame, GsoType.TCPV4 | GsoType.UDP_TUNNEL_IPV4, 1400, false);
  const check = (o: Partial<NetOffload>, f = frame) =>
    checkTunnelOffload(f, { ...good, ...o }, new ParsedPacket(), new ParsedPacket());

  it('accepts the well-formed request, with either tunnel bit', () => {
    expect(check({})).toBe(TUNNEL_OK);
    expect(check({ gsoType: GsoType.TCPV4 | GsoType.UDP_TUNNEL_IPV6 })).toBe(TUNNEL_OK);
  });

  it.each([
    [
      'both tunnel bits',
      { gsoType: GsoType.TCPV4 | GsoType.UDP_TUNNEL_IPV4 | GsoType.UDP_TUNNEL_IPV6 },
      TUNNEL_ERR_GSO_TYPE,
    ],
    ['no inner GSO type', { gsoType: GsoType.UDP_TUNNEL_IPV4 }, TUNNEL_ERR_GSO_TYPE],
    ['inner UFO', { gsoType: GsoType.UDP | GsoType.UDP_TUNNEL_IPV4 }, TUNNEL_ERR_GSO_TYPE],
    ['unknown inner type', { gsoType: 2 | GsoType.UDP_TUNNEL_IPV4 }, TUNNEL_ERR_GSO_TYPE],
    ['no NEEDS_CSUM', { flags: 0 }, TUNNEL_ERR_FLAGS],
    ['DATA_VALID', { flags: NetHdrFlags.NEEDS_CSUM | NetHdrFlags.DATA_VALID }, TUNNEL_ERR_FLAGS],
    ['outer_th_offset not the outer UDP header', { outerThOffset: 30 }, TUNNEL_ERR_OUTER],
    ['inner_nh_offset inside the outer UDP header', { innerNhOffset: 36 }, TUNNEL_ERR_INNER],
    ['inner_nh_offset past the frame', { innerNhOffset: 70000 }, TUNNEL_ERR_INNER],
    ['inner_nh_offset not an IP header', { innerNhOffset: 34 + 8 }, TUNNEL_ERR_INNER],
    ['csum_start not the inner TCP header', { csumStart: 84 + 4 }, TUNNEL_ERR_INNER],
    ['csum_offset not the TCP checksum', { csumOffset: 6 }, TUNNEL_ERR_INNER],
    [
      'TCPV6 over an inner IPv4 header',
      { gsoType: GsoType.TCPV6 | GsoType.UDP_TUNNEL_IPV4 },
      TUNNEL_ERR_INNER,
    ],
    [
      'UDP_L4 over inner TCP',
      { gsoType: GsoType.UDP_L4 | GsoType.UDP_TUNNEL_IPV4, csumOffset: 6 },
      TUNNEL_ERR_INNER,
    ],
  ] as const)('%s', (_name, o, code) => {
    expect(check(o as Partial<NetOffload>)).toBe(code);
    // The segmenter refuses it as a counted error, emitting nothing.
    const { rc, out } = segment(frame, { ...good, ...(o as Partial<NetOffload>) });
    expect(rc).toBe(SEGMENT_ERR_TUNNEL);
    expect(out).toEqual([]);
  });

  it('an outer frame that is not UDP, or an outer fragment, has no tunnel', () => {
    const notUdp = frame.slice();
    notUdp[14 + 9] = 6;
    expect(check({}, notUdp)).toBe(TUNNEL_ERR_OUTER);
    const frag = frame.slice();
    frag[14 + 6] = 0x20; // MF
    expect(check({}, frag)).toBe(TUNNEL_ERR_OUTER);
  });

  it('an inner fragment is refused', () => {
    const inner = ipv6(
      'fd00::1',
      'fd00::2',
      44,
      concat(fragmentHeader(6, 0, true), tcp(1, 2, payloadOf(100))),
    );
    const f = encap(inner, true, { v6: false, tunnelHeader: vxlan(5), csum: false });
    const o = { ...good, gsoType: GsoType.TCPV6 | GsoType.UDP_TUNNEL_IPV4, csumStart: 64 + 48 };
    expect(checkTunnelOffload(f, o, new ParsedPacket(), new ParsedPacket())).toBe(TUNNEL_ERR_INNER);
  });

  it('a truncated frame and random offsets never throw', () => {
    for (let cut = 0; cut < 104; cut++) {
      const f = frame.subarray(0, cut);
      expect(() => check({}, f)).not.toThrow();
      expect(check({}, f)).not.toBe(TUNNEL_OK);
    }
    for (let i = 0; i < 2000; i++) {
      const o = {
        outerThOffset: (i * 7919) % 200,
        innerNhOffset: (i * 104729) % 300,
        csumStart: (i * 31) % 300,
        csumOffset: i % 20,
      };
      expect(() => check(o)).not.toThrow();
    }
  });

  it('gso_size 0 is a segmentation error', () => {
    expect(segment(frame, { ...good, gsoSize: 0 }).rc).toBe(SEGMENT_ERR_GSO_SIZE);
  });

  it('the outer IPv6 and IPv4 parse gives the layout the offsets name', () => {
    const p = parseIpPacket(frame, new ParsedPacket(), good.innerNhOffset!, frame.length);
    expect(p.l3Kind).toBe(L3_IPV4);
    expect(p.l4Offset).toBe(good.csumStart);
    const v6 = parseIpPacket(ipv6('::1', '::2', 17, udp(1, 2)), new ParsedPacket(), 0, 48);
    expect(v6.l3Kind).toBe(L3_IPV6);
  });
});
