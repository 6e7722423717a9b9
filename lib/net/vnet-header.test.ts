import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { emptyOffload } from './backend.js';
import {
  GsoType,
  NetHdrFlags,
  readVnetHeader,
  VNET_HDR_OFFLOAD_BYTES,
  VNET_HDR_TUNNEL_BYTES,
  writeVnetHeader,
} from './vnet-header.js';

describe('struct virtio_net_hdr wire layout (VIRTIO 1.3 §5.1.6)', () => {
  it('writes flags, gso_type and four little-endian u16 fields, byte for byte', () => {
    const b = new Uint8Array(14).fill(0xee);
    writeVnetHeader(b, 2, {
      flags: 1,
      gsoType: 0x81,
      hdrLen: 0x0136,
      gsoSize: 0x05a8,
      csumStart: 0x0022,
      csumOffset: 0x0010,
    });
    expect([...b]).toEqual([0xee, 0xee, 1, 0x81, 0x36, 1, 0xa8, 5, 0x22, 0, 0x10, 0, 0xee, 0xee]);
    writeVnetHeader(b, 2, null);
    expect([...b]).toEqual([0xee, 0xee, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xee, 0xee]);
    expect(VNET_HDR_OFFLOAD_BYTES).toBe(10);
  });

  it('12- and 20-byte layouts: num_buffers, then hash value, hash report and zero padding (§5.1.6.4.3)', () => {
    const b = new Uint8Array(22).fill(0xee);
    writeVnetHeader(b, 1, null, 12, 0x0203);
    expect([...b.subarray(0, 14)]).toEqual([0xee, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 2, 0xee]);
    writeVnetHeader(b, 1, null, 20, 1, 0x11223344, 7);
    expect([...b.subarray(11)]).toEqual([1, 0, 0x44, 0x33, 0x22, 0x11, 7, 0, 0, 0, 0xee]);
  });

  it('24-byte layout (VIRTIO 1.4 UDP tunnel GSO): hash fields, then le16 outer_th_offset and inner_nh_offset', () => {
    const b = new Uint8Array(26).fill(0xee);
    const o = {
      flags: NetHdrFlags.NEEDS_CSUM | NetHdrFlags.UDP_TUNNEL_CSUM,
      gsoType: GsoType.TCPV4 | GsoType.UDP_TUNNEL_IPV4,
      hdrLen: 104,
      gsoSize: 1400,
      csumStart: 84,
      csumOffset: 16,
      outerThOffset: 34,
      innerNhOffset: 0x0140,
    };
    writeVnetHeader(b, 1, o, VNET_HDR_TUNNEL_BYTES, 1);
    expect([...b]).toEqual([
      0xee, 9, 0x21, 104, 0, 0x78, 5, 84, 0, 16, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 34, 0, 0x40, 1, 0xee,
    ]);
    expect(readVnetHeader(b, 1, emptyOffload(), 24)).toEqual(o);
    // Shorter layouts carry no tunnel offsets.
    expect(readVnetHeader(b, 1, emptyOffload(), 20).outerThOffset).toBeUndefined();
    writeVnetHeader(b, 1, null, 24);
    expect([...b.subarray(1, 25)]).toEqual(new Array(24).fill(0));
  });

  it('reads back what it writes (property)', () => {
    const u16 = fc.integer({ min: 0, max: 0xffff });
    const u8 = fc.integer({ min: 0, max: 0xff });
    fc.assert(
      fc.property(
        u8,
        u8,
        u16,
        u16,
        u16,
        u16,
        fc.nat(20),
        (flags, gsoType, hdrLen, gsoSize, csumStart, csumOffset, at) => {
          const o = { flags, gsoType, hdrLen, gsoSize, csumStart, csumOffset };
          const b = new Uint8Array(at + 10);
          writeVnetHeader(b, at, o);
          expect(readVnetHeader(b, at, emptyOffload())).toEqual(o);
          const t = { ...o, outerThOffset: csumOffset ^ 0x5a5a, innerNhOffset: hdrLen ^ 0xa5 };
          const b24 = new Uint8Array(at + 24);
          writeVnetHeader(b24, at, t, 24);
          expect(readVnetHeader(b24, at, emptyOffload(), 24)).toEqual(t);
        },
      ),
    );
  });
});
