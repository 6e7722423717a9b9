import { describe, expect, it } from 'vitest';
import { ParsedPacket, parsePacket } from '../../lib/net/packet-parser.js';
import { rssHash } from '../../lib/net/rss-hash.js';
import { encodeRssConfig, RSS_MAX_TABLE_LEN, RssState } from './rss.js';

const KEY = Uint8Array.from([
  0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3, 0x8f, 0xb0, 0xd0, 0xca,
  0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30, 0xf2, 0x0c, 0x6a, 0x42, 0xb7, 0x3b,
  0xbe, 0xac, 0x01, 0xfa,
]);

const rssConfig = encodeRssConfig;

function udp4(sport: number): Uint8Array {
  const f = new Uint8Array(14 + 20 + 8);
  f[12] = 0x08;
  f[14] = 0x45;
  f[16] = 0;
  f[17] = 28;
  f[23] = 17;
  f.set([10, 0, 0, 1], 26);
  f.set([10, 0, 0, 2], 30);
  f[34] = sport >> 8;
  f[35] = sport & 0xff;
  f[37] = 53;
  return f;
}

describe('RssState: RSS_CONFIG / HASH_CONFIG validation (§5.1.6.5.7.1)', () => {
  const valid = { hashTypes: 0x3f, table: [0, 1, 2, 3], maxTxVq: 4, key: KEY };

  it('accepts a valid config and steers by the indirection table', () => {
    const s = new RssState(4);
    expect(s.rssConfig(rssConfig(valid))).toEqual({ queuePairs: 4 });
    expect(s.enabled && s.redirect).toBe(true);
    const pkt = new ParsedPacket();
    for (let port = 1000; port < 1100; port++) {
      const f = udp4(port);
      const q = s.steer(f, parsePacket(f, pkt));
      const ref = rssHash(f, 0x3f, KEY)!;
      expect(s.result.hash).toBe(ref.hash);
      expect(s.result.reportType).toBe(ref.reportType);
      expect(q).toBe([0, 1, 2, 3][ref.hash & 3]);
    }
  });

  it.each([
    ['short buffer', rssConfig(valid).subarray(0, 7)],
    ['table not a power of two', rssConfig({ ...valid, table: [0, 1, 2] })],
    ['table too long', rssConfig({ ...valid, table: new Array(RSS_MAX_TABLE_LEN * 2).fill(0) })],
    ['unsupported hash type', rssConfig({ ...valid, hashTypes: 0x200 })],
    ['unclassified queue out of range', rssConfig({ ...valid, unclassified: 4 })],
    ['table entry out of range', rssConfig({ ...valid, table: [0, 1, 2, 4] })],
    ['max_tx_vq zero', rssConfig({ ...valid, maxTxVq: 0 })],
    ['max_tx_vq too large', rssConfig({ ...valid, maxTxVq: 5 })],
    ['key too long', rssConfig({ ...valid, key: new Uint8Array(41) })],
    ['no key with hash types', rssConfig({ ...valid, key: new Uint8Array(0) })],
    ['key shorter than announced', rssConfig({ ...valid, key: KEY.subarray(0, 20), keyLength: 40 })],
  ])('rejects %s and keeps the previous state', (_, cmd) => {
    const s = new RssState(4);
    s.rssConfig(rssConfig({ ...valid, table: [3, 2, 1, 0] }));
    const before = s.snapshot();
    expect(s.rssConfig(cmd)).toBeNull();
    expect(s.snapshot()).toEqual(before);
  });

  it('disables RSS with a zero-length config', () => {
    const s = new RssState(4);
    s.rssConfig(rssConfig(valid));
    expect(s.rssConfig(rssConfig({ ...valid, hashTypes: 0, key: new Uint8Array(0) }))).toEqual({
      queuePairs: 4,
    });
    expect(s.enabled).toBe(false);
  });

  it('sends frames with no applicable hash type to the unclassified queue', () => {
    const s = new RssState(4);
    s.rssConfig(rssConfig({ ...valid, hashTypes: 0x8 /* IPv6 only */, unclassified: 2 }));
    const f = udp4(1);
    expect(s.steer(f, parsePacket(f, new ParsedPacket()))).toBe(2);
    expect(s.result.reportType).toBe(0);
  });

  it('HASH_CONFIG computes the hash without redirecting', () => {
    const s = new RssState(1);
    const cmd = new Uint8Array(13 + 40);
    new DataView(cmd.buffer).setUint32(0, 0x4, true); // UDPv4
    cmd[12] = 40;
    cmd.set(KEY, 13);
    expect(s.hashConfig(cmd)).toEqual({ queuePairs: 0 });
    const f = udp4(4242);
    expect(s.steer(f, parsePacket(f, new ParsedPacket()))).toBe(-1);
    expect(s.result.hash).toBe(rssHash(f, 0x4, KEY)!.hash);
    cmd[12] = 41;
    expect(s.hashConfig(cmd)).toBeNull();
  });

  it('round-trips through a JSON snapshot', () => {
    const s = new RssState(4);
    s.rssConfig(rssConfig(valid));
    const t = new RssState(4);
    t.restore(JSON.parse(JSON.stringify(s.snapshot())));
    expect(t.snapshot()).toEqual(s.snapshot());
    const f = udp4(7);
    const pkt = parsePacket(f, new ParsedPacket());
    expect(t.steer(f, pkt)).toBe(s.steer(f, pkt));
  });
});
