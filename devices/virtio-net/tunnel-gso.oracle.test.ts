// QEMU 11.1's UDP tunnel GSO as measured (test/oracle/tunnel/tunnel_gso.py; fixtures/qemu-11.1/
// virtio-net-tunnel-gso*.json) against ours: the same offer and negotiation, the same tx headers
// accepted, and on rx the one difference docs/compatibility.md lists (QEMU leaves the offsets 0).
import { describe, expect, it } from 'vitest';
import { hexOf, openBench, PEER_MAC, DEV_MAC } from './bench.test-support.js';
import { fixtureJson } from '../../pci/qemu-oracle.test-support.js';
import { VXLAN4_OFFSETS, vxlan4 } from '../testing/frames.js';
import * as fb from '../../lib/net/frames.test-support.js';
import { readVnetHeader } from '../../lib/net/vnet-header.js';
import { emptyOffload } from '../../lib/net/backend.js';

interface Fixture {
  mrg_rxbuf: boolean;
  offered: string;
  features: string;
  rx: { header: string; used_len: number; frame_len: number }[];
  tx: { outer_csum: boolean; datagrams: number[]; payload_ok: boolean }[];
}

for (const name of ['virtio-net-tunnel-gso.json', 'virtio-net-tunnel-gso-mrg.json']) {
  describe(`UDP tunnel GSO vs QEMU 11.1 (${name})`, () => {
    const fx = fixtureJson<Fixture>(name, '11.1');
    const wanted = BigInt(fx.features);

    it('offers bits 65-68 as QEMU 11.1 does over a tunnel-capable tap, and takes the same driver features', () => {
      const b = openBench({}, {}, { wanted });
      expect((b.driver.pci.deviceFeatures() >> 64n) & 0xffffffffn).toBe(
        (BigInt(fx.offered) >> 64n) & 0xffffffffn,
      );
      expect(b.driver.features).toBe(wanted);
      expect(b.driver.hdrSize).toBe(24);
    });

    it('rx: the same 24-byte header as QEMU but for the tunnel offsets, which QEMU leaves 0', () => {
      const q = fx.rx[0]!;
      expect(q.used_len - q.frame_len).toBe(24);
      const qemu = Buffer.from(q.header, 'hex');
      const b = openBench({}, {}, { wanted });
      // The frame QEMU's tap delivered (VXLAN, inner UDP 5000 bytes), with the tap's tunnel header.
      const payload = Uint8Array.from({ length: 5000 }, (_, i) => (i * 7 + (i >> 8)) & 0xff);
      const innerIp = fb.withL4ChecksumV4(
        fb.ipv4({ src: '10.99.0.1', dst: '10.99.0.2', proto: 17, payload: fb.udp(33000, 9000, payload) }),
        true,
      );
      const frame = vxlan4(
        { dstMac: DEV_MAC, srcMac: PEER_MAC, src: '10.77.0.1', dst: '10.77.0.2', sport: 50000 },
        42,
        fb.ethernet(fb.macAddr('06:00:00:00:00:02'), fb.macAddr('06:00:00:00:00:01'), 0x0800, innerIp),
        'pseudo',
      );
      const tapHeader = { ...readVnetHeader(qemu, 0, emptyOffload(), 24), ...VXLAN4_OFFSETS };
      b.backend.inject(frame, 0, tapHeader);
      const [r] = b.driver.receive();
      expect(hexOf(r!.frame)).toBe(hexOf(frame));
      const ours = r!.offload;
      const theirs = readVnetHeader(qemu, 0, emptyOffload(), 24);
      expect({ ...ours, outerThOffset: 0, innerNhOffset: 0 }).toEqual(theirs);
      expect([theirs.outerThOffset, theirs.innerNhOffset]).toEqual([0, 0]);
      expect([ours.outerThOffset, ours.innerNhOffset]).toEqual([34, 64]);
    });

    it("tx: the probe's VXLAN USO super-frames go to the backend whole with their header, as QEMU passed them to its tap", () => {
      // QEMU's tap delivered every segment to the host's vxlan and UDP socket, payload intact.
      expect(fx.tx.map((t) => [t.outer_csum, t.datagrams, t.payload_ok])).toEqual([
        [false, [1200, 1200, 600], true],
        [true, [1200, 1200, 600], true],
      ]);
      const b = openBench({}, {}, { wanted });
      const data = Uint8Array.from({ length: 3000 }, (_, i) => (i * 11 + 3) & 0xff);
      for (const t of fx.tx) {
        // The bytes tunnel_gso.py sends.
        const innerIp = fb.withL4ChecksumV4(
          fb.ipv4({
            src: '10.99.0.2',
            dst: '10.99.0.1',
            proto: 17,
            payload: fb.udp(40000, 9001, data),
            id: 1,
          }),
          true,
        );
        const frame = vxlan4(
          {
            dstMac: '02:00:00:00:00:01',
            srcMac: DEV_MAC,
            src: '10.77.0.2',
            dst: '10.77.0.1',
            sport: 50000,
            id: 9,
          },
          42,
          fb.ethernet(fb.macAddr('06:00:00:00:00:01'), fb.macAddr('06:00:00:00:00:02'), 0x0800, innerIp),
          t.outer_csum ? 'pseudo' : 'none',
        );
        const offload = {
          flags: 1 | (t.outer_csum ? 8 : 0),
          gsoType: 0x25,
          hdrLen: 92,
          gsoSize: 1200,
          csumStart: 84,
          csumOffset: 6,
          ...VXLAN4_OFFSETS,
        };
        b.driver.send(frame, { offload });
        expect(hexOf(b.sent.at(-1)!.frame)).toBe(hexOf(frame));
        expect(b.sent.at(-1)!.offload).toEqual(offload);
      }
      expect(b.sent).toHaveLength(2);
    });
  });
}
