// VIRTIO 1.4 UDP tunnel GSO through the public device and the synthetic guest: the offer (QEMU 11.1's
// properties and the spec's dependencies), the 24-byte header both ways, pass-through to a backend that
// takes tunnel GSO, software segmentation where it or the guest cannot, and malformed requests.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import * as fb from '../../lib/net/frames.test-support.js';
import type { NetOffload } from '../../lib/net/backend.js';
import { GsoType, NetHdrFlags } from '../../lib/net/vnet-header.js';
import { VXLAN4_OFFSETS, vxlan4 } from '../testing/frames.js';
import { LINUX_6_1_FEATURES } from '../testing/net-driver.js';
import { DEV_MAC, hexOf, makeBench, openBench, PEER_MAC, pattern } from './bench.test-support.js';
import { NetF, netHeaderSize } from './features.js';

const bit = (b: number) => 1n << BigInt(b);
const TUNNEL_BITS =
  bit(NetF.GUEST_UDP_TUNNEL_GSO) |
  bit(NetF.GUEST_UDP_TUNNEL_GSO_CSUM) |
  bit(NetF.HOST_UDP_TUNNEL_GSO) |
  bit(NetF.HOST_UDP_TUNNEL_GSO_CSUM);
/** What Linux 7.2 adds for this: USO and the tunnel bits (its features[] has them all). */
const WANT_TUNNEL =
  LINUX_6_1_FEATURES | bit(NetF.GUEST_USO4) | bit(NetF.GUEST_USO6) | bit(NetF.HOST_USO) | TUNNEL_BITS;

const INNER_DST = '02:00:00:00:00:0b';
const INNER_SRC = '02:00:00:00:00:0a';

interface Super {
  payload: Uint8Array;
  seq: number;
  mss: number;
  /** The outer UDP checksum as the guest leaves it. */
  outerCsum: 'none' | 'pseudo';
  toGuest?: boolean;
}

function innerTcp(payload: Uint8Array, seq: number, flags: number, id: number): Uint8Array {
  const ip = fb.withL4ChecksumV4(
    fb.ipv4({
      src: '10.1.0.1',
      dst: '10.1.0.2',
      proto: 6,
      payload: fb.tcp(40000, 5201, payload, flags, seq, 7),
      id,
    }),
  );
  return fb.ethernet(fb.macAddr(INNER_DST), fb.macAddr(INNER_SRC), 0x0800, ip);
}

function outer(s: Super, id: number) {
  return s.toGuest
    ? { dstMac: DEV_MAC, srcMac: PEER_MAC, src: '192.0.2.2', dst: '192.0.2.1', sport: 50000, id }
    : { dstMac: PEER_MAC, srcMac: DEV_MAC, src: '192.0.2.1', dst: '192.0.2.2', sport: 50000, id };
}

/** The VXLAN TSO super-frame and the request a driver sends with it. */
function superFrame(s: Super): { frame: Uint8Array; off: NetOffload } {
  const frame = vxlan4(outer(s, 0x40), 42, innerTcp(s.payload, s.seq, 0x18, 0x10), s.outerCsum);
  const off: NetOffload = {
    flags: NetHdrFlags.NEEDS_CSUM | (s.outerCsum === 'pseudo' ? NetHdrFlags.UDP_TUNNEL_CSUM : 0),
    gsoType: GsoType.TCPV4 | GsoType.UDP_TUNNEL_IPV4,
    hdrLen: VXLAN4_OFFSETS.innerNhOffset + 40,
    gsoSize: s.mss,
    csumStart: VXLAN4_OFFSETS.innerNhOffset + 20,
    csumOffset: 16,
    ...VXLAN4_OFFSETS,
  };
  return { frame, off };
}

/** The segments Linux would put on the wire for `s`: IDs +i, seq +i*mss, PSH on the last, checksums complete. */
function expectedSegments(s: Super): string[] {
  const out: string[] = [];
  for (let i = 0, o = 0; o < s.payload.length; i++, o += s.mss) {
    const chunk = s.payload.subarray(o, Math.min(o + s.mss, s.payload.length));
    const last = o + s.mss >= s.payload.length;
    const inner = innerTcp(chunk, s.seq + o, last ? 0x18 : 0x10, 0x10 + i);
    out.push(hexOf(vxlan4(outer(s, 0x40 + i), 42, inner, s.outerCsum === 'pseudo' ? 'full' : 'none')));
  }
  return out;
}

describe('UDP tunnel GSO: what is offered (VIRTIO 1.4 §5.1.3, QEMU 11.1 properties)', () => {
  const word2 = (b: ReturnType<typeof makeBench>) => {
    b.driver.pci.probe();
    b.driver.pci.assignBars();
    return Number((b.driver.pci.deviceFeatures() >> 64n) & 0xffffffffn);
  };

  it('all four by default over a backend that carries tunnel GSO (word 2 = 0x1e, as QEMU 11.1 over a tap)', () => {
    expect(word2(makeBench())).toBe(0x1e);
  });

  it('a backend without tunnel GSO: only the HOST bits (the device segments in software)', () => {
    expect(word2(makeBench({}, { offloads: { tunnel: false, tunnelCsum: false } }))).toBe(0x18);
    expect(word2(makeBench({}, { offloads: { tunnelCsum: false } }))).toBe(0x1a);
    expect(word2(makeBench({}, { vnetHeader: false }))).toBe(0);
  });

  it('each property switches its bit; the spec dependencies prune the rest', () => {
    expect(word2(makeBench({ guest_tunnel: false }))).toBe(0x18); // GUEST_..._CSUM needs GUEST_UDP_TUNNEL_GSO
    expect(word2(makeBench({ guest_tunnel_csum: false }))).toBe(0x1a);
    expect(word2(makeBench({ host_tunnel: false }))).toBe(0x06);
    expect(word2(makeBench({ host_tunnel_csum: false }))).toBe(0x0e);
    expect(word2(makeBench({ host_uso: false }))).toBe(0x06); // HOST needs HOST_TSO4, TSO6 and USO
    expect(word2(makeBench({ host_tso6: false }))).toBe(0x06);
    expect(word2(makeBench({ guest_uso4: false }))).toBe(0x18); // GUEST needs GUEST_TSO4/6, USO4/6
    expect(word2(makeBench({ guest_tso4: false }))).toBe(0x18);
  });

  it('header: 24 bytes with either tunnel bit negotiated, else as before', () => {
    const v1 = bit(32);
    expect(netHeaderSize(v1 | bit(NetF.HOST_UDP_TUNNEL_GSO))).toBe(24);
    expect(netHeaderSize(v1 | bit(NetF.GUEST_UDP_TUNNEL_GSO))).toBe(24);
    expect(netHeaderSize(v1 | bit(NetF.HASH_REPORT))).toBe(20);
    const b = openBench({}, {}, { wanted: WANT_TUNNEL });
    expect(b.driver.features & TUNNEL_BITS).toBe(TUNNEL_BITS);
    expect(b.driver.hdrSize).toBe(24);
    expect(b.backend.vnetHeaderSizeCalls.at(-1)).toBe(24);
    expect(b.backend.offloadCalls.at(-1)).toMatchObject({ tunnel: true, tunnelCsum: true });
    // Linux 6.1 knows none of them: 12 bytes.
    expect(openBench().driver.hdrSize).toBe(12);
  });
});

describe('UDP tunnel GSO, guest to host (VIRTIO 1.4 §5.1.6.2)', () => {
  const s: Super = { payload: pattern(4000, 3), seq: 0xfffff000, mss: 1400, outerCsum: 'none' };

  it('passes the super-frame and its offsets to a backend that takes tunnel GSO', () => {
    const b = openBench({}, {}, { wanted: WANT_TUNNEL });
    const { frame, off } = superFrame({ ...s, outerCsum: 'pseudo' });
    b.driver.send(frame, { offload: off });
    expect(b.sent).toHaveLength(1);
    expect(hexOf(b.sent[0]!.frame)).toBe(hexOf(frame));
    expect(b.sent[0]!.offload).toEqual(off);
    const st = b.dev.stats().queues[0]!;
    expect([st.txGsoPackets, st.txGsoPacketsNoseg, st.txDropped]).toEqual([1, 1, 0]);
  });

  for (const outerCsum of ['none', 'pseudo'] as const) {
    it(`segments in software when the backend cannot take it (outer checksum ${outerCsum === 'none' ? '0' : 'offloaded'})`, () => {
      const b = openBench({}, { offloads: { tunnel: false, tunnelCsum: false } }, { wanted: WANT_TUNNEL });
      expect(b.driver.has(NetF.HOST_UDP_TUNNEL_GSO_CSUM)).toBe(true);
      const { frame, off } = superFrame({ ...s, outerCsum });
      b.driver.send(frame, { offload: off });
      expect(b.sent.map((x) => hexOf(x.frame))).toEqual(expectedSegments({ ...s, outerCsum }));
      expect(b.sent.every((x) => x.offload === null)).toBe(true);
      const st = b.dev.stats().queues[0]!;
      expect([st.txGsoPackets, st.txGsoSegments, st.txPackets]).toEqual([1, 3, 3]);
    });
  }

  it('a backend with tunnel GSO but not its outer checksum: UDP_TUNNEL_CSUM frames are segmented', () => {
    const b = openBench({}, { offloads: { tunnelCsum: false } }, { wanted: WANT_TUNNEL });
    const { frame, off } = superFrame({ ...s, outerCsum: 'pseudo' });
    b.driver.send(frame, { offload: off });
    expect(b.sent.map((x) => hexOf(x.frame))).toEqual(expectedSegments({ ...s, outerCsum: 'pseudo' }));
    // Without the flag it goes through whole.
    const plain = superFrame(s);
    b.driver.send(plain.frame, { offload: plain.off });
    expect(b.sent.at(-1)!.offload).toEqual(plain.off);
  });

  it('GUEST_HDRLEN: hdr_len counts up to the inner transport header; the outer one is a counted drop', () => {
    const b = openBench({ guest_hdrlen: true }, {}, { wanted: WANT_TUNNEL | bit(NetF.GUEST_HDRLEN) });
    const { frame, off } = superFrame(s);
    b.driver.send(frame, { offload: off });
    b.driver.send(frame, { offload: { ...off, hdrLen: VXLAN4_OFFSETS.outerThOffset + 8 } });
    expect(b.sent).toHaveLength(1);
    expect(b.dev.stats().queues[0]!.txDropMalformed).toBe(1);
  });

  const { frame, off } = superFrame(s);
  it.each([
    ['both tunnel bits', { gsoType: GsoType.TCPV4 | GsoType.UDP_TUNNEL_IPV4 | GsoType.UDP_TUNNEL_IPV6 }],
    ['a tunnel bit over no GSO type', { gsoType: GsoType.UDP_TUNNEL_IPV4 }],
    ['a tunnel bit over UFO', { gsoType: GsoType.UDP | GsoType.UDP_TUNNEL_IPV4 }],
    ['without NEEDS_CSUM', { flags: 0 }],
    ['with DATA_VALID', { flags: NetHdrFlags.NEEDS_CSUM | NetHdrFlags.DATA_VALID }],
    ['UDP_TUNNEL_CSUM without a tunnel bit', { gsoType: GsoType.TCPV4, flags: 9 }],
    ['outer_th_offset off the outer UDP header', { outerThOffset: 30 }],
    ['inner_nh_offset inside the outer UDP header', { innerNhOffset: 38 }],
    ['inner_nh_offset past the frame', { innerNhOffset: 0xffff }],
    ['csum_start off the inner TCP header', { csumStart: 90 }],
  ])('%s: a counted malformed drop, the chain completed, nothing thrown', (_n, bad) => {
    const b = openBench({}, {}, { wanted: WANT_TUNNEL });
    const q = b.driver.queue(1);
    expect(() => b.driver.send(frame, { offload: { ...off, ...bad } })).not.toThrow();
    expect(q.getUsed()).not.toBeNull();
    expect(b.sent).toHaveLength(0);
    expect(b.dev.stats().queues[0]!.txDropMalformed).toBe(1);
    expect(b.driver.pci.status & 0x40).toBe(0);
  });

  it('not negotiated: a tunnel bit is a counted drop, UDP_TUNNEL_CSUM alone an unknown flag ignored', () => {
    const b = openBench({}, {}, { wanted: WANT_TUNNEL & ~TUNNEL_BITS });
    expect(b.driver.hdrSize).toBe(12);
    b.driver.send(frame, { offload: off });
    expect(b.dev.stats().queues[0]!.txDropMalformed).toBe(1);
    const plain = fb.withL4ChecksumV4(
      fb.ipv4({ src: '10.0.0.1', dst: '10.0.0.2', proto: 17, payload: fb.udp(1, 2, pattern(50)) }),
      true,
    );
    const f = fb.ethernet(fb.macAddr(PEER_MAC), fb.macAddr(DEV_MAC), 0x0800, plain);
    b.driver.send(f, { offload: { flags: 9, csumStart: 34, csumOffset: 6 } });
    expect(b.sent).toHaveLength(1);
    expect(b.sent[0]!.offload?.flags).toBe(NetHdrFlags.NEEDS_CSUM);
  });

  it('HOST_UDP_TUNNEL_GSO without its _CSUM: UDP_TUNNEL_CSUM is a counted drop', () => {
    const b = openBench({}, {}, { wanted: WANT_TUNNEL & ~bit(NetF.HOST_UDP_TUNNEL_GSO_CSUM) });
    const p = superFrame({ ...s, outerCsum: 'pseudo' });
    b.driver.send(p.frame, { offload: p.off });
    b.driver.send(frame, { offload: off });
    expect(b.sent).toHaveLength(1);
    expect(b.dev.stats().queues[0]!.txDropMalformed).toBe(1);
  });
});

for (const receive of ['direct', 'copy'] as const) {
  describe(`UDP tunnel GSO, host to guest (VIRTIO 1.4 §5.1.6.4), ${receive} receive`, () => {
    const s: Super = { payload: pattern(3000, 8), seq: 1, mss: 1448, outerCsum: 'pseudo', toGuest: true };

    it('delivered with its 24-byte header when the guest negotiated it', () => {
      const b = openBench({}, { receive }, { wanted: WANT_TUNNEL });
      const { frame, off } = superFrame(s);
      b.backend.inject(frame, 0, off);
      const got = b.driver.receive();
      expect(got).toHaveLength(1);
      expect(hexOf(got[0]!.frame)).toBe(hexOf(frame));
      expect(got[0]!.offload).toEqual(off);
      expect(b.dev.stats().queues[0]!.rxDropped).toBe(0);
      // Direct: the headers were checked where the backend wrote them, no copy.
      expect(b.backend.stats().deliveredDirect).toBe(receive === 'direct' ? 1 : 0);
    });

    it('segmented in software for a guest without it (Linux 6.1), every checksum complete', () => {
      const b = openBench({}, { receive });
      const { frame, off } = superFrame(s);
      b.backend.inject(frame, 0, off);
      const got = b.driver.receive();
      expect(got.map((r) => hexOf(r.frame))).toEqual(expectedSegments(s));
      expect(got.every((r) => r.offload.gsoType === 0 && r.offload.flags === 0)).toBe(true);
    });

    it('GUEST_UDP_TUNNEL_GSO without its _CSUM: only UDP_TUNNEL_CSUM frames are segmented', () => {
      const b = openBench({}, { receive }, { wanted: WANT_TUNNEL & ~bit(NetF.GUEST_UDP_TUNNEL_GSO_CSUM) });
      const a = superFrame(s);
      b.backend.inject(a.frame, 0, a.off);
      expect(b.driver.receive().map((r) => hexOf(r.frame))).toEqual(expectedSegments(s));
      const z = superFrame({ ...s, outerCsum: 'none' });
      b.backend.inject(z.frame, 0, z.off);
      expect(b.driver.receive().map((r) => r.offload)).toEqual([z.off]);
    });

    it('CTRL_GUEST_OFFLOADS_SET turns it off and on (bits 46/47 of the le64) and tells the backend', () => {
      const b = openBench({}, { receive }, { wanted: WANT_TUNNEL });
      const base = bit(NetF.GUEST_CSUM) | bit(NetF.GUEST_TSO4) | bit(NetF.GUEST_TSO6);
      expect(b.driver.setGuestOffloads(base)).toBe(0);
      expect(b.backend.offloadCalls.at(-1)).toMatchObject({ tunnel: false, tunnelCsum: false });
      const { frame, off } = superFrame(s);
      b.backend.inject(frame, 0, off);
      expect(b.driver.receive()).toHaveLength(3);
      const tunnel = bit(NetF.GUEST_UDP_TUNNEL_GSO) | bit(NetF.GUEST_UDP_TUNNEL_GSO_CSUM);
      expect(b.driver.setGuestOffloads(base | tunnel)).toBe(0);
      expect(b.backend.offloadCalls.at(-1)).toMatchObject({ tunnel: true, tunnelCsum: true });
      b.backend.inject(frame, 0, off);
      expect(b.driver.receive().map((r) => r.offload)).toEqual([off]);
      // Bit 46 in the le64 is the tunnel offload: a guest that negotiated none may not set it.
      const g = openBench({}, { receive });
      expect(g.driver.setGuestOffloads(base | bit(NetF.GUEST_UDP_TUNNEL_GSO))).toBe(1);
    });

    it('a tunnel frame waiting in the backlog keeps its offsets, through a snapshot too', () => {
      const b = openBench({}, { receive }, { wanted: WANT_TUNNEL, rxBuffers: 0 });
      const { frame, off } = superFrame(s);
      b.backend.inject(frame, 0, off);
      const state = JSON.parse(JSON.stringify(b.dev.snapshot()));
      expect(JSON.stringify(state)).toContain('"outerThOffset":34,"innerNhOffset":64');
      b.dev.restore(state);
      b.driver.postRx(0);
      b.driver.pci.kick(0);
      const got = b.driver.receive();
      expect(got.map((r) => r.offload)).toEqual([off]);
    });

    it('tunnel offsets from the backend that do not fit the frame: a counted drop, nothing delivered', () => {
      for (const wanted of [WANT_TUNNEL, LINUX_6_1_FEATURES]) {
        const b = openBench({}, { receive }, { wanted });
        const { frame, off } = superFrame(s);
        for (const bad of [{ innerNhOffset: 40 }, { csumStart: 10 }, { outerThOffset: 0 }, { flags: 0 }]) {
          expect(() => b.backend.inject(frame, 0, { ...off, ...bad })).not.toThrow();
        }
        expect(b.driver.receive()).toHaveLength(0);
        expect(b.dev.stats().queues[0]!.rxDropped).toBe(4);
      }
    });
  });
}

describe('UDP tunnel GSO: hostile headers and backends (property)', () => {
  const base = superFrame({ payload: pattern(2000, 4), seq: 9, mss: 700, outerCsum: 'pseudo' });
  const u16 = fc.integer({ min: 0, max: 0xffff });
  const hostile = fc.record({
    flags: fc.integer({ min: 0, max: 0xff }),
    gsoType: fc.constantFrom(0x21, 0x41, 0x24, 0x44, 0x25, 0x45, 0x61, 0x23, 0x20, 0xa1, 0x05, 0x01),
    hdrLen: u16,
    gsoSize: fc.oneof(u16, fc.constantFrom(1, 700, 1400)),
    csumStart: fc.oneof(u16, fc.constant(84)),
    csumOffset: fc.oneof(fc.integer({ min: 0, max: 40 }), fc.constant(16)),
    outerThOffset: fc.oneof(u16, fc.constant(34)),
    innerNhOffset: fc.oneof(u16, fc.constant(64)),
  });
  const mutation = fc.array(fc.tuple(fc.nat(base.frame.length - 1), fc.integer({ min: 0, max: 0xff })), {
    maxLength: 4,
  });

  it('tx: every frame sent whole, as segments, or counted as dropped; nothing thrown, no reset', () => {
    const b = openBench({}, { offloads: { tunnel: false } }, { wanted: WANT_TUNNEL });
    fc.assert(
      fc.property(hostile, mutation, fc.nat(200), (o, muts, cut) => {
        const f = base.frame.slice(0, base.frame.length - cut);
        for (const [i, v] of muts) if (i < f.length) f[i] = v;
        const before = b.dev.stats().queues[0]!;
        const sent = b.sent.length;
        expect(() => b.driver.send(f, { offload: o })).not.toThrow();
        const after = b.dev.stats().queues[0]!;
        expect(b.driver.pci.status & 0x40).toBe(0);
        const out = b.sent.length - sent;
        expect(out + (after.txDropped - before.txDropped)).toBeGreaterThan(0);
        expect(after.txPackets - before.txPackets).toBe(out);
      }),
      { numRuns: 300 },
    );
  });

  it('rx: hostile tunnel metadata from the backend is delivered, segmented or dropped, never thrown', () => {
    for (const wanted of [WANT_TUNNEL, LINUX_6_1_FEATURES]) {
      const b = openBench({}, {}, { wanted });
      fc.assert(
        fc.property(hostile, mutation, (o, muts) => {
          const f = base.frame.slice();
          f.set(fb.macAddr(DEV_MAC), 0);
          for (const [i, v] of muts) if (i >= 6 && i < f.length) f[i] = v;
          expect(() => b.backend.inject(f, 0, o)).not.toThrow();
          for (const r of b.driver.receive()) {
            expect(r.frame.length).toBeGreaterThanOrEqual(14);
            // What reaches a guest without tunnel GSO never carries tunnel bits.
            if (wanted === LINUX_6_1_FEATURES) expect(r.offload.gsoType & 0x60).toBe(0);
          }
          expect(b.driver.pci.status & 0x40).toBe(0);
        }),
        { numRuns: 300 },
      );
    }
  });
});
