import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { checksumFold, pseudoHeaderSumIpv4 } from './checksum.js';
import {
  concat,
  eth,
  ipv4,
  ipv6,
  naiveChecksum,
  optionsHeader,
  tcp,
  u16,
  u32,
  udp,
  withL4ChecksumV4,
  withL4ChecksumV6,
} from './frames.test-support.js';
import type { NetOffload } from './backend.js';
import { L4_TCP, ParsedPacket, parsePacket } from './packet-parser.js';
import {
  SEGMENT_ERR_CSUM,
  SEGMENT_ERR_GSO_SIZE,
  SEGMENT_ERR_HDR_LEN,
  SEGMENT_ERR_PROTOCOL,
  SEGMENT_ERR_TUNNEL,
  SEGMENT_ERR_UNSUPPORTED,
  SEGMENT_OK,
  SoftwareSegmenter,
} from './segmentation.js';
import { GsoType, NetHdrFlags } from './vnet-header.js';

function payloadOf(n: number, seed = 7): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed * 17 + (i >> 8)) & 0xff;
  return b;
}

function offload(
  gsoType: number,
  gsoSize: number,
  hdrLen: number,
  csumStart: number,
  csumOffset: number,
): NetOffload {
  return { flags: NetHdrFlags.NEEDS_CSUM, gsoType, gsoSize, hdrLen, csumStart, csumOffset };
}

function run(frame: Uint8Array, o: NetOffload | null) {
  const seg = new SoftwareSegmenter();
  const out: Uint8Array[] = [];
  const before = frame.slice();
  const rc = seg.process(frame, o, (s) => out.push(s.slice()));
  // The guest's frame is never modified.
  expect(Array.from(frame)).toEqual(Array.from(before));
  expect(seg.segments).toBe(out.length);
  return { rc, out };
}

const be16 = (b: Uint8Array, o: number) => (b[o]! << 8) | b[o + 1]!;
const be32 = (b: Uint8Array, o: number) =>
  ((b[o]! << 24) | (b[o + 1]! << 16) | (b[o + 2]! << 8) | b[o + 3]!) >>> 0;

/** Every L4 checksum recomputed by the naive reference must equal the segment's. */
function expectL4ChecksumOk(s: Uint8Array, v6: boolean): void {
  const ip = s.slice(14);
  const ref = v6 ? withL4ChecksumV6(ip) : withL4ChecksumV4(ip);
  expect(Array.from(ip)).toEqual(Array.from(ref));
}

describe('SoftwareSegmenter: TSO', () => {
  const p = new ParsedPacket();

  it('segments IPv4 TCP byte for byte (lengths, IDs, seq wrap, FIN/PSH last, CWR first, checksums)', () => {
    const data = payloadOf(5000);
    const seq0 = 0xfffff000;
    const flags = 0x80 | 0x10 | 0x08 | 0x01; // CWR ACK PSH FIN
    const ip = ipv4({
      src: '10.0.0.1',
      dst: '10.0.0.2',
      proto: 6,
      id: 0xfffe,
      payload: tcp(4321, 80, data, flags, seq0),
    });
    const frame = eth(0x0800, ip);
    const mss = 1448;
    const { rc, out } = run(frame, offload(GsoType.TCPV4 | GsoType.ECN, mss, 54, 34, 16));
    expect(rc).toBe(SEGMENT_OK);
    expect(out.length).toBe(Math.ceil(5000 / mss));
    const rebuilt: number[] = [];
    out.forEach((s, i) => {
      const chunk = Math.min(mss, 5000 - i * mss);
      expect(s.length).toBe(54 + chunk);
      parsePacket(s, p);
      expect(p.l4Kind).toBe(L4_TCP);
      expect(be16(s, 16)).toBe(40 + chunk); // total length
      expect(be16(s, 18)).toBe((0xfffe + i) & 0xffff); // ID
      expect(naiveChecksum(s.subarray(14, 34))).toBe(0); // header checksum valid
      expect(be32(s, 38)).toBe((seq0 + i * mss) >>> 0);
      const last = i === out.length - 1;
      expect(s[47]).toBe(0x10 | (last ? 0x09 : 0) | (i === 0 ? 0x80 : 0));
      // Everything else in the headers is the original's.
      const hdr = s.slice(0, 54);
      const orig = frame.slice(0, 54);
      for (const o of [16, 17, 18, 19, 24, 25, 38, 39, 40, 41, 47, 50, 51]) hdr[o] = orig[o] = 0;
      expect(Array.from(hdr)).toEqual(Array.from(orig));
      expectL4ChecksumOk(s, false);
      rebuilt.push(...s.subarray(54));
    });
    expect(rebuilt).toEqual(Array.from(data));
  });

  it('segments IPv6 TCP with an extension header (payload length, seq, checksum)', () => {
    const data = payloadOf(3000, 3);
    const hbh = optionsHeader(6, new Uint8Array(4));
    const frame = eth(0x86dd, ipv6('2001:db8::1', '2001:db8::2', 0, concat(hbh, tcp(1, 2, data, 0x18, 77))));
    const { rc, out } = run(frame, offload(GsoType.TCPV6, 1000, 82, 62, 16));
    expect(rc).toBe(SEGMENT_OK);
    expect(out.length).toBe(3);
    const rebuilt: number[] = [];
    out.forEach((s, i) => {
      expect(be16(s, 18)).toBe(8 + 20 + 1000); // payload length incl. the hop-by-hop header
      expect(be32(s, 62 + 4)).toBe(77 + i * 1000);
      expect(s[62 + 13]).toBe(i === 2 ? 0x18 : 0x10);
      // Naive TCP checksum over the pseudo-header (no routing header: plain dst).
      const l4 = s.slice(62);
      const ph = concat(s.slice(22, 54), u32(l4.length), Uint8Array.of(0, 0, 0, 6));
      expect(naiveChecksum(concat(ph, l4))).toBe(0);
      rebuilt.push(...s.subarray(82));
    });
    expect(rebuilt).toEqual(Array.from(data));
  });

  it('emits a frame that fits in one segment once, with checksums completed', () => {
    const frame = eth(
      0x0800,
      ipv4({ src: '1.1.1.1', dst: '2.2.2.2', proto: 6, payload: tcp(1, 2, payloadOf(100), 0x19) }),
    );
    const { rc, out } = run(frame, offload(GsoType.TCPV4, 1448, 54, 34, 16));
    expect(rc).toBe(SEGMENT_OK);
    expect(out.length).toBe(1);
    expect(out[0]![47]).toBe(0x19);
    expectL4ChecksumOk(out[0]!, false);
  });
});

describe('SoftwareSegmenter: USO and UFO', () => {
  it('USO over IPv4: every segment a full UDP datagram with its own length and checksum', () => {
    const data = payloadOf(2500, 9);
    const frame = eth(
      0x0800,
      ipv4({ src: '10.9.8.7', dst: '10.6.5.4', proto: 17, id: 100, payload: udp(5000, 6000, data) }),
    );
    const { rc, out } = run(frame, offload(GsoType.UDP_L4, 1000, 42, 34, 6));
    expect(rc).toBe(SEGMENT_OK);
    expect(out.length).toBe(3);
    const rebuilt: number[] = [];
    out.forEach((s, i) => {
      const chunk = Math.min(1000, 2500 - 1000 * i);
      expect(be16(s, 16)).toBe(28 + chunk);
      expect(be16(s, 18)).toBe(100 + i);
      expect(be16(s, 38)).toBe(8 + chunk);
      expect(naiveChecksum(s.subarray(14, 34))).toBe(0);
      expectL4ChecksumOk(s, false);
      rebuilt.push(...s.subarray(42));
    });
    expect(rebuilt).toEqual(Array.from(data));
  });

  it('USO over IPv6', () => {
    const data = payloadOf(1500, 1);
    const frame = eth(0x86dd, ipv6('fd00::1', 'fd00::2', 17, udp(1, 2, data)));
    const { rc, out } = run(frame, offload(GsoType.UDP_L4, 600, 62, 54, 6));
    expect(rc).toBe(SEGMENT_OK);
    expect(out.map((s) => be16(s, 18))).toEqual([608, 608, 308]);
    for (const s of out) expectL4ChecksumOk(s, true);
    expect(out.flatMap((s) => Array.from(s.subarray(62)))).toEqual(Array.from(data));
  });

  it('UFO over IPv4: fragments (8-byte multiples, MF, offsets, same ID) reassemble to a valid datagram', () => {
    const data = payloadOf(4000, 5);
    const ip = ipv4({ src: '192.0.2.1', dst: '192.0.2.2', proto: 17, id: 0x4242, payload: udp(7, 9, data) });
    const frame = eth(0x0800, ip);
    const { rc, out } = run(frame, offload(GsoType.UDP, 1475, 42, 34, 6)); // rounds down to 1472
    expect(rc).toBe(SEGMENT_OK);
    const ipPayload: number[] = [];
    out.forEach((s, i) => {
      const ff = be16(s, 20);
      expect(ff & 0x1fff).toBe((i * 1472) / 8);
      expect(ff & 0x2000).toBe(i === out.length - 1 ? 0 : 0x2000);
      expect(ff & 0x4000).toBe(0); // DF cleared on fragments
      expect(be16(s, 18)).toBe(0x4242);
      expect(be16(s, 16)).toBe(s.length - 14);
      expect(naiveChecksum(s.subarray(14, 34))).toBe(0);
      if (i !== out.length - 1) expect(s.length - 34).toBe(1472);
      ipPayload.push(...s.subarray(34));
    });
    expect(out.length).toBe(Math.ceil(4008 / 1472));
    // Reassembled datagram: UDP length and checksum over the whole datagram.
    const whole = Uint8Array.from(ipPayload);
    expect(be16(whole, 4)).toBe(4008);
    expect(Array.from(whole.subarray(8))).toEqual(Array.from(data));
    const reassembled = concat(ip.slice(0, 20), whole);
    expect(Array.from(withL4ChecksumV4(reassembled))).toEqual(Array.from(reassembled));
  });

  it('UFO keeps only options with the copied flag in later fragments (RFC 791)', () => {
    const data = payloadOf(2000, 2);
    const options = Uint8Array.of(0x94, 4, 0, 0, 0x07, 3, 4, 0); // Router Alert (copied), Record Route, EOL
    const ip = ipv4({ src: '192.0.2.1', dst: '192.0.2.2', proto: 17, options, payload: udp(7, 9, data) });
    const { rc, out } = run(eth(0x0800, ip), offload(GsoType.UDP, 1000, 50, 42, 6));
    expect(rc).toBe(SEGMENT_OK);
    expect(out.length).toBe(3);
    const payload: number[] = [];
    out.forEach((s, i) => {
      const ihl = (s[14]! & 15) * 4;
      expect(ihl).toBe(i === 0 ? 28 : 24);
      expect(Array.from(s.subarray(34, 14 + ihl))).toEqual(i === 0 ? Array.from(options) : [0x94, 4, 0, 0]);
      expect(naiveChecksum(s.subarray(14, 14 + ihl))).toBe(0);
      expect(be16(s, 16)).toBe(s.length - 14);
      expect(be16(s, 20) & 0x1fff).toBe((i * 1000) / 8);
      payload.push(...s.subarray(14 + ihl));
    });
    const whole = Uint8Array.from(payload);
    expect(Array.from(whole.subarray(8))).toEqual(Array.from(data));
    const reassembled = concat(ip.slice(0, 28), whole);
    expect(Array.from(withL4ChecksumV4(reassembled))).toEqual(Array.from(reassembled));
  });

  it('refuses UFO over IPv6 as unsupported', () => {
    const frame = eth(0x86dd, ipv6('fd00::1', 'fd00::2', 17, udp(1, 2, payloadOf(3000))));
    expect(run(frame, offload(GsoType.UDP, 1000, 62, 54, 6))).toEqual({
      rc: SEGMENT_ERR_UNSUPPORTED,
      out: [],
    });
  });
});

describe('SoftwareSegmenter: checksum only and validation', () => {
  const tcpFrame = eth(
    0x0800,
    ipv4({ src: '10.0.0.1', dst: '10.0.0.2', proto: 6, payload: tcp(1, 2, payloadOf(3000)) }),
  );

  it('passes a frame without offload through untouched (same object)', () => {
    const seg = new SoftwareSegmenter();
    const seen: Uint8Array[] = [];
    expect(seg.process(tcpFrame, null, (s) => seen.push(s))).toBe(SEGMENT_OK);
    expect(seen).toEqual([tcpFrame]);
    expect(seen[0]).toBe(tcpFrame);
  });

  it('NEEDS_CSUM without GSO: completes the checksum in a copy', () => {
    const frame = tcpFrame.slice();
    const fold = checksumFold(pseudoHeaderSumIpv4(frame, 26, 30, 6, frame.length - 34));
    frame.set(u16(fold), 50);
    const { rc, out } = run(frame, offload(0, 0, 0, 34, 16));
    expect(rc).toBe(SEGMENT_OK);
    expect(out.length).toBe(1);
    expectL4ChecksumOk(out[0]!, false);
  });

  it('NEEDS_CSUM after a larger frame: stale scratch bytes never enter the checksum', () => {
    const seg = new SoftwareSegmenter();
    const big = tcpFrame.slice();
    big.set(u16(checksumFold(pseudoHeaderSumIpv4(big, 26, 30, 6, big.length - 34))), 50);
    const small = eth(
      0x0800,
      ipv4({ src: '10.0.0.1', dst: '10.0.0.2', proto: 6, payload: tcp(1, 2, payloadOf(101)) }),
    );
    small.set(u16(checksumFold(pseudoHeaderSumIpv4(small, 26, 30, 6, small.length - 34))), 50);
    const out: Uint8Array[] = [];
    expect(seg.process(big, offload(0, 0, 0, 34, 16), () => {})).toBe(SEGMENT_OK);
    expect(seg.process(small, offload(0, 0, 0, 34, 16), (s) => out.push(s.slice()))).toBe(SEGMENT_OK);
    expect(out[0]!.length).toBe(small.length);
    expectL4ChecksumOk(out[0]!, false);
  });

  it('rejects guest-controlled fields it cannot honour, emitting nothing', () => {
    const udpFrame = eth(
      0x0800,
      ipv4({ src: '10.0.0.1', dst: '10.0.0.2', proto: 17, payload: udp(1, 2, payloadOf(3000)) }),
    );
    const cases: [Uint8Array, NetOffload, number][] = [
      [tcpFrame, offload(GsoType.TCPV4, 0, 54, 34, 16), SEGMENT_ERR_GSO_SIZE],
      // From an untrusted backend: not a le16 (a frame that segmented to nothing went uncounted before).
      [tcpFrame, offload(GsoType.TCPV4, Number.NaN, 54, 34, 16), SEGMENT_ERR_GSO_SIZE],
      [tcpFrame, offload(GsoType.TCPV4, 2 ** 31, 54, 34, 16), SEGMENT_ERR_GSO_SIZE],
      [tcpFrame, offload(GsoType.TCPV4, 1448.5, 54, 34, 16), SEGMENT_ERR_GSO_SIZE],
      [tcpFrame, offload(GsoType.TCPV4, 1448, tcpFrame.length + 1, 34, 16), SEGMENT_ERR_HDR_LEN],
      [tcpFrame, offload(GsoType.TCPV4, 1448, 54, tcpFrame.length, 0), SEGMENT_ERR_CSUM],
      [tcpFrame, offload(GsoType.TCPV4, 1448, 54, 34, tcpFrame.length), SEGMENT_ERR_CSUM],
      [tcpFrame, offload(0, 0, 0, 34, tcpFrame.length - 35), SEGMENT_ERR_CSUM],
      [udpFrame, offload(GsoType.TCPV4, 1448, 42, 34, 6), SEGMENT_ERR_PROTOCOL],
      [tcpFrame, offload(GsoType.TCPV6, 1448, 54, 34, 16), SEGMENT_ERR_PROTOCOL],
      [tcpFrame, offload(GsoType.UDP_L4, 1448, 54, 34, 16), SEGMENT_ERR_PROTOCOL],
      [tcpFrame, offload(2, 1448, 54, 34, 16), SEGMENT_ERR_UNSUPPORTED],
      [udpFrame, offload(GsoType.UDP, 7, 42, 34, 6), SEGMENT_ERR_GSO_SIZE],
    ];
    for (const [f, o, want] of cases) expect(run(f, o)).toEqual({ rc: want, out: [] });
    const frag = eth(
      0x0800,
      ipv4({
        src: '1.1.1.1',
        dst: '2.2.2.2',
        proto: 6,
        fragField: 0x2000,
        payload: tcp(1, 2, payloadOf(100)),
      }),
    );
    expect(run(frag, offload(GsoType.TCPV4, 50, 54, 34, 16)).rc).toBe(SEGMENT_ERR_PROTOCOL);
  });

  it('never throws for random frames and offload fields (property)', () => {
    const seg = new SoftwareSegmenter();
    fc.assert(
      fc.property(
        fc.oneof(
          fc.uint8Array({ maxLength: 300 }),
          fc.tuple(fc.nat(3100), fc.nat(255), fc.nat(3100)).map(([cut, v, pos]) => {
            const f = tcpFrame.slice(0, cut);
            if (pos < f.length) f[pos] = v;
            return f;
          }),
        ),
        fc.record({
          flags: fc.nat(255),
          gsoType: fc.constantFrom(0, 1, 2, 3, 4, 5, 0x81, 0x84, 0xff),
          hdrLen: fc.nat(0xffff),
          gsoSize: fc.nat(0xffff),
          csumStart: fc.nat(0xffff),
          csumOffset: fc.nat(0xffff),
        }),
        (f, o) => {
          let bytes = 0;
          const rc = seg.process(f, o, (s) => {
            bytes += s.length;
          });
          expect(rc).toBeGreaterThanOrEqual(0);
          expect(rc).toBeLessThanOrEqual(SEGMENT_ERR_TUNNEL);
          if (rc !== SEGMENT_OK) expect(bytes).toBe(0);
        },
      ),
      { numRuns: 1500 },
    );
  });
});
