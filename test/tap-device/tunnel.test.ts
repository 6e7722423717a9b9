/**
 * VIRTIO 1.4 UDP tunnel GSO end to end on a real tap (root only; Linux 6.17+ tun, which takes
 * TUN_F_UDP_TUNNEL_GSO and the 24-byte header): a VXLAN device in the test's namespace tunnels to the
 * guest over the tap. Host to guest, the kernel hands a VXLAN USO super-frame through the device with
 * its tunnel header; guest to host, the guest's super-frame goes to the tap whole and the kernel's
 * vxlan and UDP stack receive every segment.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { VXLAN4_OFFSETS, vxlan4 } from '../../devices/testing/frames.js';
import { LINUX_6_1_FEATURES } from '../../devices/testing/net-driver.js';
import { NetF } from '../../devices/virtio-net/features.js';
import * as fb from '../../lib/net/frames.js';
import { ParsedPacket } from '../../lib/net/packet-parser.js';
import { SEGMENT_OK, SoftwareSegmenter } from '../../lib/net/segmentation.js';
import { checkTunnelOffload, TUNNEL_OK } from '../../lib/net/tunnel.js';
import { GsoType, NetHdrFlags } from '../../lib/net/vnet-header.js';
import { lines, PY_UDP_RECV } from '../tap/fixture.test-support.js';
import {
  type DeviceFixture,
  deviceFixture,
  GUEST_IP,
  GUEST_MAC,
  KERNEL_IP,
  unavailable,
} from './fixture.test-support.js';

const bit = (b: number) => 1n << BigInt(b);
const WANT_TUNNEL =
  LINUX_6_1_FEATURES |
  bit(NetF.GUEST_USO4) |
  bit(NetF.GUEST_USO6) |
  bit(NetF.HOST_USO) |
  bit(NetF.GUEST_UDP_TUNNEL_GSO) |
  bit(NetF.GUEST_UDP_TUNNEL_GSO_CSUM) |
  bit(NetF.HOST_UDP_TUNNEL_GSO) |
  bit(NetF.HOST_UDP_TUNNEL_GSO_CSUM);

const VX_KERNEL_MAC = '06:00:00:00:00:01';
const VX_GUEST_MAC = '06:00:00:00:00:02';
const VX_KERNEL_IP = '10.99.0.1';
const VX_GUEST_IP = '10.99.0.2';
const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

/** The kernel side of the tunnel: vxlan VNI 42 over the tap to the guest's address. */
function vxlanToGuest(fx: DeviceFixture): void {
  const { ns, tap } = fx;
  // biome-ignore format: one ip command
  ns.ip('link', 'add', 'vx0', 'type', 'vxlan', 'id', '42', 'remote', GUEST_IP, 'local', KERNEL_IP, 'dstport', '4789', 'dev', tap.name);
  ns.exec('sysctl', ['-q', '-w', 'net.ipv6.conf.vx0.disable_ipv6=1']);
  ns.configure('vx0', `${VX_KERNEL_IP}/24`, VX_KERNEL_MAC);
  ns.ip('neigh', 'replace', VX_GUEST_IP, 'lladdr', VX_GUEST_MAC, 'dev', 'vx0', 'nud', 'permanent');
}

/** Sends one UDP GSO (UDP_SEGMENT) write of argv[3] bytes in argv[4]-byte segments to argv[1]:argv[2]. */
const PY_UDP_GSO_SEND = `
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_UDP, 103, int(sys.argv[4]))  # UDP_SEGMENT
s.sendto(bytes((i * 7 + (i >> 8)) & 0xff for i in range(int(sys.argv[3]))), (sys.argv[1], int(sys.argv[2])))
print('sent', flush=True)
`;

describe.skipIf(unavailable !== null)('UDP tunnel GSO on a real tap (VXLAN)', () => {
  const fixtures: DeviceFixture[] = [];
  const fixture = () => {
    const f = deviceFixture({ wanted: WANT_TUNNEL });
    fixtures.push(f);
    return f;
  };
  afterEach(() => {
    for (const f of fixtures.splice(0)) f.dispose();
  });

  it('the tap probes tunnel GSO; the guest negotiates it: 24-byte header on the tap and in the rings', () => {
    const fx = fixture();
    expect(fx.tap.capabilities.offloads).toMatchObject({ tunnel: true, tunnelCsum: true });
    expect(fx.drv.has(NetF.HOST_UDP_TUNNEL_GSO_CSUM) && fx.drv.has(NetF.GUEST_UDP_TUNNEL_GSO_CSUM)).toBe(
      true,
    );
    expect(fx.drv.hdrSize).toBe(24);
    expect(fx.tap.vnetHeaderSize).toBe(24);
  });

  it('host to guest: a VXLAN USO super-frame reaches the guest whole, with its tunnel offsets', async () => {
    const fx = fixture();
    vxlanToGuest(fx);
    const size = 5000;
    const child = fx.ns.spawn('python3', ['-c', PY_UDP_GSO_SEND, VX_GUEST_IP, '9000', String(size), '1400']);
    await lines(child).waitFor(/^sent$/);
    const r = await fx.waitFor(
      (f) => (f.offload.gsoType & GsoType.UDP_TUNNEL_IPV4) !== 0,
      10_000,
      'tunnel GSO',
    );
    const o = r.offload;
    expect(o.gsoType & ~GsoType.ECN).toBe(GsoType.UDP_L4 | GsoType.UDP_TUNNEL_IPV4);
    expect(o.flags & NetHdrFlags.NEEDS_CSUM).toBe(NetHdrFlags.NEEDS_CSUM);
    expect([o.gsoSize, o.outerThOffset, o.innerNhOffset, o.csumStart, o.csumOffset]).toEqual([
      1400,
      VXLAN4_OFFSETS.outerThOffset,
      VXLAN4_OFFSETS.innerNhOffset,
      VXLAN4_OFFSETS.innerNhOffset + 20,
      6,
    ]);
    expect(checkTunnelOffload(r.frame, o, new ParsedPacket(), new ParsedPacket())).toBe(TUNNEL_OK);
    // The whole payload rode in one frame.
    const payload = r.frame.subarray(VXLAN4_OFFSETS.innerNhOffset + 28);
    expect(hex(payload)).toBe(hex(Uint8Array.from({ length: size }, (_, i) => (i * 7 + (i >> 8)) & 0xff)));
    expect(fx.dev.stats().queues[0]!.rxDropped).toBe(0);
  });

  for (const outerCsum of [false, true]) {
    it(`guest to host: a VXLAN USO super-frame goes to the tap whole and arrives as datagrams (outer checksum ${outerCsum ? 'offloaded' : '0'})`, async () => {
      const fx = fixture();
      vxlanToGuest(fx);
      const child = fx.ns.spawn('python3', ['-c', PY_UDP_RECV, VX_KERNEL_IP, '9000', '3']);
      const out = lines(child);
      await out.waitFor(/^ready$/);
      const data = Uint8Array.from({ length: 3000 }, (_, i) => (i * 11 + 3) & 0xff);
      // Inner checksum: the pseudo-header sum, as a driver leaves it with NEEDS_CSUM.
      const innerIp = fb.withL4ChecksumV4(
        fb.ipv4({
          src: VX_GUEST_IP,
          dst: VX_KERNEL_IP,
          proto: 17,
          payload: fb.udp(40000, 9000, data),
          id: 1,
        }),
        true,
      );
      const inner = fb.ethernet(fb.macAddr(VX_KERNEL_MAC), fb.macAddr(VX_GUEST_MAC), 0x0800, innerIp);
      const frame = vxlan4(
        {
          dstMac: '02:00:00:00:00:01',
          srcMac: GUEST_MAC,
          src: GUEST_IP,
          dst: KERNEL_IP,
          sport: 50000,
          id: 9,
        },
        42,
        inner,
        outerCsum ? 'pseudo' : 'none',
      );
      fx.drv.send(frame, {
        offload: {
          flags: NetHdrFlags.NEEDS_CSUM | (outerCsum ? NetHdrFlags.UDP_TUNNEL_CSUM : 0),
          gsoType: GsoType.UDP_L4 | GsoType.UDP_TUNNEL_IPV4,
          hdrLen: VXLAN4_OFFSETS.innerNhOffset + 28,
          gsoSize: 1200,
          csumStart: VXLAN4_OFFSETS.innerNhOffset + 20,
          csumOffset: 6,
          ...VXLAN4_OFFSETS,
        },
      });
      const q = fx.dev.stats().queues[0]!;
      expect([q.txGsoPackets, q.txGsoPacketsNoseg, q.txDropped]).toEqual([1, 1, 0]);
      await out.waitFor(/ 40000$/);
      await fx.until(
        () => out.all.filter((l) => l.endsWith(' 40000')).length === 3,
        10_000,
        'three datagrams',
      );
      const got = out.all.filter((l) => l.endsWith(' 40000')).map((l) => l.split(' ')[0]);
      expect(got).toEqual([0, 1200, 2400].map((o) => hex(data.subarray(o, o + 1200))));
    });
  }

  it("guest to host: a VXLAN TSO super-frame goes to the tap whole; the kernel's vxlan takes it and TCP answers", async () => {
    const fx = fixture();
    vxlanToGuest(fx);
    const data = Uint8Array.from({ length: 3500 }, (_, i) => (i * 3 + 7) & 0xff);
    // To a closed port: the kernel's TCP answers with a RST back through vxlan.
    const tcpIp = fb.withL4ChecksumV4(
      fb.ipv4({
        src: VX_GUEST_IP,
        dst: VX_KERNEL_IP,
        proto: 6,
        payload: fb.tcp(40003, 9, data, 0x18, 1000, 1),
        id: 3,
      }),
      true,
    );
    const inner = fb.ethernet(fb.macAddr(VX_KERNEL_MAC), fb.macAddr(VX_GUEST_MAC), 0x0800, tcpIp);
    const frame = vxlan4(
      { dstMac: '02:00:00:00:00:01', srcMac: GUEST_MAC, src: GUEST_IP, dst: KERNEL_IP, sport: 50002, id: 4 },
      42,
      inner,
      'pseudo',
    );
    fx.drv.send(frame, {
      offload: {
        flags: NetHdrFlags.NEEDS_CSUM | NetHdrFlags.UDP_TUNNEL_CSUM,
        gsoType: GsoType.TCPV4 | GsoType.UDP_TUNNEL_IPV4,
        hdrLen: VXLAN4_OFFSETS.innerNhOffset + 40,
        gsoSize: 1000,
        csumStart: VXLAN4_OFFSETS.innerNhOffset + 20,
        csumOffset: 16,
        ...VXLAN4_OFFSETS,
      },
    });
    const q = fx.dev.stats().queues[0]!;
    expect([q.txGsoPackets, q.txGsoPacketsNoseg, q.txDropped]).toEqual([1, 1, 0]);
    const innerTcp = VXLAN4_OFFSETS.innerNhOffset + 20;
    const rsts = () =>
      fx.frames.filter(
        (f) =>
          f.frame.length >= innerTcp + 20 &&
          f.frame[innerTcp] === 0 &&
          f.frame[innerTcp + 1] === 9 &&
          (f.frame[innerTcp + 13]! & 4) !== 0,
      );
    await fx.until(() => rsts().length > 0, 10_000, 'a RST');
    await new Promise((r) => setTimeout(r, 300));
    fx.poll();
    // Delivered locally, the GSO packet is not cut: one RST for it, seq = its ack (1).
    expect(
      rsts().map((f) => new DataView(f.frame.buffer, f.frame.byteOffset).getUint32(innerTcp + 4)),
    ).toEqual([1]);
  });

  it("software segments of VXLAN super-frames (the device's segmenter) pass the kernel's checksum checks", async () => {
    const fx = fixture();
    vxlanToGuest(fx);
    const outer = {
      dstMac: '02:00:00:00:00:01',
      srcMac: GUEST_MAC,
      src: GUEST_IP,
      dst: KERNEL_IP,
      sport: 50001,
    };
    const seg = new SoftwareSegmenter();
    const send = (frame: Uint8Array, gsoType: number, csumOffset: number, l4Len: number) =>
      seg.process(
        frame,
        {
          flags: NetHdrFlags.NEEDS_CSUM | NetHdrFlags.UDP_TUNNEL_CSUM,
          gsoType,
          hdrLen: VXLAN4_OFFSETS.innerNhOffset + 20 + l4Len,
          gsoSize: 1000,
          csumStart: VXLAN4_OFFSETS.innerNhOffset + 20,
          csumOffset,
          ...VXLAN4_OFFSETS,
        },
        (s) => expect(fx.tap.transmit(s, 0, null)).toBe('sent'),
      );
    const innerEth = (ip: Uint8Array) =>
      fb.ethernet(fb.macAddr(VX_KERNEL_MAC), fb.macAddr(VX_GUEST_MAC), 0x0800, ip);
    // Inner USO: the kernel's UDP socket gets each datagram only if inner and outer checksums hold.
    const child = fx.ns.spawn('python3', ['-c', PY_UDP_RECV, VX_KERNEL_IP, '9001', '3']);
    const out = lines(child);
    await out.waitFor(/^ready$/);
    const data = Uint8Array.from({ length: 2500 }, (_, i) => (i * 5 + 1) & 0xff);
    const udpIp = fb.ipv4({
      src: VX_GUEST_IP,
      dst: VX_KERNEL_IP,
      proto: 17,
      payload: fb.udp(40001, 9001, data),
    });
    const udpFrame = vxlan4({ ...outer, id: 1 }, 42, innerEth(udpIp), 'pseudo');
    expect(send(udpFrame, GsoType.UDP_L4 | GsoType.UDP_TUNNEL_IPV4, 6, 8)).toBe(SEGMENT_OK);
    await fx.until(() => out.all.filter((l) => l.endsWith(' 40001')).length === 3, 10_000, 'three datagrams');
    expect(out.all.filter((l) => l.endsWith(' 40001')).map((l) => l.split(' ')[0])).toEqual(
      [0, 1000, 2000].map((o) => hex(data.subarray(o, o + 1000))),
    );
    // Inner TSO to a closed port: the kernel answers each valid segment with a RST, back through vxlan.
    const tcpIp = fb.ipv4({
      src: VX_GUEST_IP,
      dst: VX_KERNEL_IP,
      proto: 6,
      payload: fb.tcp(40002, 9, data, 0x18, 1000, 1),
      id: 5,
    });
    const tcpFrame = vxlan4({ ...outer, id: 2 }, 42, innerEth(tcpIp), 'pseudo');
    expect(send(tcpFrame, GsoType.TCPV4 | GsoType.UDP_TUNNEL_IPV4, 16, 20)).toBe(SEGMENT_OK);
    const innerTcp = VXLAN4_OFFSETS.innerNhOffset + 20;
    const rsts = () =>
      fx.frames.filter(
        (f) =>
          f.frame.length >= innerTcp + 20 &&
          f.frame[innerTcp + 2] === 0x9c &&
          (f.frame[innerTcp + 13]! & 4) !== 0,
      );
    await fx.until(() => rsts().length === 3, 10_000, 'three RSTs');
    // A RST answers an ACK segment with seq = its ack (1): one per segment the kernel found valid.
    const seqs = rsts().map((f) => new DataView(f.frame.buffer, f.frame.byteOffset).getUint32(innerTcp + 4));
    expect(seqs).toEqual([1, 1, 1]);
  });
});
