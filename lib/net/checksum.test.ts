import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  checksumAdd,
  checksumFinish,
  checksumFold,
  completeChecksum,
  internetChecksum,
  pseudoHeaderSumIpv4,
  pseudoHeaderSumIpv6,
  verifyIpv4HeaderChecksum,
  verifyL4Checksum,
  writeIpv4HeaderChecksum,
} from './checksum.js';
import {
  eth,
  hex,
  ipv4,
  ipv6,
  naiveChecksum,
  tcp,
  udp,
  withL4ChecksumV4,
  withL4ChecksumV6,
} from './frames.test-support.js';
import { ParsedPacket, parsePacket } from './packet-parser.js';

describe('internet checksum', () => {
  it('matches a known IPv4 header (checksum 0xb861)', () => {
    const h = hex('4500 0073 0000 4000 4011 0000 c0a8 0001 c0a8 00c7');
    expect(internetChecksum(h)).toBe(0xb861);
    h[10] = 0xb8;
    h[11] = 0x61;
    expect(checksumFold(checksumAdd(h, 0, 20))).toBe(0xffff);
    writeIpv4HeaderChecksum(h, 0, 20);
    expect([h[10], h[11]]).toEqual([0xb8, 0x61]);
  });

  it('matches an independently computed TCP SYN checksum (0x294f, Python struct/sum)', () => {
    // 192.168.0.1:1025 -> 192.168.0.199:80 SYN, seq 0, ack 42, window 65535.
    const ip = ipv4({
      src: '192.168.0.1',
      dst: '192.168.0.199',
      proto: 6,
      payload: tcp(1025, 80, new Uint8Array(0), 0x02, 0),
    });
    const frame = eth(0x0800, ip);
    const p = parsePacket(frame, new ParsedPacket());
    const ph = pseudoHeaderSumIpv4(frame, p.srcAddrOffset, p.dstAddrOffset, 6, 20);
    expect(checksumFinish(checksumAdd(frame, p.l4Offset, 20, ph))).toBe(0x294f);
    frame[p.l4Offset + 16] = 0x29;
    frame[p.l4Offset + 17] = 0x4f;
    expect(verifyL4Checksum(frame, p)).toBe(true);
    expect(verifyIpv4HeaderChecksum(frame, p)).toBe(true);
  });

  it('equals the naive reference for random data, offsets and lengths', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), fc.nat(300), fc.nat(300), (b, x, y) => {
        const off = Math.min(x, b.length);
        const len = Math.min(y, b.length - off);
        expect(internetChecksum(b, off, len)).toBe(naiveChecksum(b.subarray(off, off + len)));
      }),
      { numRuns: 1000 },
    );
  });

  it('combines partial sums split at even offsets', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 1, maxLength: 200 }), fc.nat(100), (b, k) => {
        const split = Math.min(2 * k, b.length);
        const s = checksumAdd(b, split, b.length - split, checksumAdd(b, 0, split));
        expect(checksumFinish(s)).toBe(naiveChecksum(b));
      }),
    );
  });

  it('folds large sums correctly', () => {
    expect(checksumFold(0xffff * 0x10001)).toBe(0xffff);
    expect(checksumFold(2 ** 40 + 5)).toBe(checksumFold((2 ** 40 % 0xffff) + 5));
  });
});

describe('pseudo-header checksums and verification', () => {
  const p = new ParsedPacket();
  const v4tcp = eth(
    0x0800,
    withL4ChecksumV4(
      ipv4({ src: '10.1.2.3', dst: '10.4.5.6', proto: 6, payload: tcp(1, 2, hex('0102030405')) }),
    ),
  );
  const v4udp = eth(
    0x0800,
    withL4ChecksumV4(
      ipv4({ src: '10.1.2.3', dst: '10.4.5.6', proto: 17, payload: udp(1, 2, hex('aabbcc')) }),
    ),
  );
  const v6tcp = eth(
    0x86dd,
    withL4ChecksumV6(ipv6('2001:db8::1', 'fe80::2', 6, tcp(443, 5555, hex('00ff00ff11')))),
  );
  const v6udp = eth(
    0x86dd,
    withL4ChecksumV6(ipv6('2001:db8::1', 'fe80::2', 17, udp(443, 5555, hex('0102')))),
  );

  it('verifies correct TCP/UDP checksums and rejects a flipped byte', () => {
    for (const f of [v4tcp, v4udp, v6tcp, v6udp]) {
      expect(verifyL4Checksum(f, parsePacket(f, p))).toBe(true);
      const bad = f.slice();
      bad[bad.length - 1]! ^= 0x40;
      expect(verifyL4Checksum(bad, parsePacket(bad, p))).toBe(false);
    }
  });

  it('completeChecksum does what a device does for NEEDS_CSUM (pseudo-header seeded by the driver)', () => {
    for (const [f, v6, field] of [
      [v4tcp, false, 16],
      [v4udp, false, 6],
      [v6tcp, true, 16],
      [v6udp, true, 6],
    ] as const) {
      const pk = parsePacket(f, p);
      const l4Len = f.length - pk.l4Offset;
      const seeded = f.slice();
      const ph = v6
        ? pseudoHeaderSumIpv6(f, pk.srcAddrOffset, pk.dstAddrOffset, pk.l4Proto, l4Len)
        : pseudoHeaderSumIpv4(f, pk.srcAddrOffset, pk.dstAddrOffset, pk.l4Proto, l4Len);
      // The driver stores the folded, uncomplemented pseudo-header sum (Linux ~csum_tcpudp_magic).
      const fold = checksumFold(ph);
      seeded[pk.l4Offset + field] = fold >> 8;
      seeded[pk.l4Offset + field + 1] = fold & 0xff;
      expect(completeChecksum(seeded, pk.l4Offset, field)).toBe(true);
      expect(Array.from(seeded)).toEqual(Array.from(f));
    }
  });

  it('completeChecksum refuses fields outside the frame and leaves it unchanged', () => {
    const f = v4tcp.slice();
    for (const [s, o] of [
      [f.length, 0],
      [f.length - 1, 0],
      [34, f.length],
      [-1, 0],
      [34, -2],
      [0.5, 2],
    ]) {
      expect(completeChecksum(f, s!, o!)).toBe(false);
    }
    expect(Array.from(f)).toEqual(Array.from(v4tcp));
  });

  it('stores a zero result as 0xffff', () => {
    // Find data whose checksum is 0: a word pair that sums to 0xffff.
    const f = hex('ffff 0000 0000');
    expect(completeChecksum(f, 0, 2)).toBe(true);
    expect([f[2], f[3]]).toEqual([0xff, 0xff]);
  });
});
