// VIRTIO_NET_F_GUEST_HDRLEN (VIRTIO 1.3 §5.1.6.2): negotiated, a GSO frame's hdr_len must be its exact
// header length (Ethernet + IP + TCP/UDP, with VLAN tags and TCP options); one that says otherwise is a
// counted malformed drop. Not negotiated, hdr_len stays a hint the device does not rely on.
import { describe, expect, it } from 'vitest';
import { GsoType, NetHdrFlags } from '../../lib/net/vnet-header.js';
import { LINUX_6_1_FEATURES } from '../testing/net-driver.js';
import { DEV_MAC, hexOf, offload, openBench, PEER_MAC, pattern, tcp4Frame } from './bench.test-support.js';
import { NetF } from './features.js';

const bit = (b: number) => 1n << BigInt(b);
const spec = { payload: pattern(3000, 3), csum: 'partial' as const, dst: PEER_MAC, src: DEV_MAC, seq: 5 };
const tso = (hdrLen: number) =>
  offload({
    flags: NetHdrFlags.NEEDS_CSUM,
    gsoType: GsoType.TCPV4,
    hdrLen,
    gsoSize: 1000,
    csumStart: 34,
    csumOffset: 16,
  });

describe('GUEST_HDRLEN', () => {
  it('offered only with guest_hdrlen (off by default)', () => {
    expect(openBench().dev.net.offered & bit(NetF.GUEST_HDRLEN)).toBe(0n);
    expect(openBench({ guest_hdrlen: true }).dev.net.offered & bit(NetF.GUEST_HDRLEN)).toBe(
      bit(NetF.GUEST_HDRLEN),
    );
  });

  it('negotiated: the exact length (14 + 20 + 20) passes, any other is a malformed drop', () => {
    const b = openBench({ guest_hdrlen: true }, {}, { wanted: LINUX_6_1_FEATURES | bit(NetF.GUEST_HDRLEN) });
    expect(b.driver.has(NetF.GUEST_HDRLEN)).toBe(true);
    const f = tcp4Frame(spec);
    b.driver.send(f, { offload: tso(54) });
    expect(b.sent.map((x) => hexOf(x.frame))).toEqual([hexOf(f)]);
    for (const wrong of [0, 34, 53, 55, 1500]) b.driver.send(f, { offload: tso(wrong) });
    expect(b.sent).toHaveLength(1);
    const q = b.dev.stats().queues[0]!;
    expect([q.txPackets, q.txDropped, q.txDropMalformed]).toEqual([1, 5, 5]);
    // Not a GSO frame: hdr_len is not looked at.
    b.driver.send(f, {
      offload: offload({ flags: NetHdrFlags.NEEDS_CSUM, hdrLen: 3, csumStart: 34, csumOffset: 16 }),
    });
    expect(b.sent).toHaveLength(2);
  });

  it('negotiated: a VLAN tag is part of the header length (Linux: skb_transport_offset + TCP header)', () => {
    const b = openBench({ guest_hdrlen: true }, {}, { wanted: LINUX_6_1_FEATURES | bit(NetF.GUEST_HDRLEN) });
    const plain = tcp4Frame(spec);
    const tagged = new Uint8Array(plain.length + 4);
    tagged.set(plain.subarray(0, 12), 0);
    tagged.set([0x81, 0x00, 0x00, 0x05], 12);
    tagged.set(plain.subarray(12), 16);
    const o = (hdrLen: number) => ({ ...tso(hdrLen), csumStart: 38 });
    b.driver.send(tagged, { offload: o(54) });
    expect(b.sent).toHaveLength(0);
    b.driver.send(tagged, { offload: o(58) });
    expect(b.sent.map((x) => hexOf(x.frame))).toEqual([hexOf(tagged)]);
  });

  it('not negotiated: a wrong hdr_len is only a hint, the frame goes', () => {
    const b = openBench({ guest_hdrlen: true });
    expect(b.driver.has(NetF.GUEST_HDRLEN)).toBe(false);
    b.driver.send(tcp4Frame(spec), { offload: tso(40) });
    expect(b.sent).toHaveLength(1);
    expect(b.dev.stats().queues[0]!.txDropMalformed).toBe(0);
  });
});
