/**
 * The virtio-net device end to end against a real Linux tap: the synthetic guest brings the device up
 * through the PCI transport and exchanges ARP, ICMP, UDP and TCP with the kernel inside a namespace.
 * Root and /dev/net/tun only; every test creates and removes its own namespace and tap.
 */
import { afterEach, describe, expect, it, onTestFinished, vi } from 'vitest';
import { readVnetHeader } from '../../lib/net/vnet-header.js';
import {
  arp,
  icmpEcho as echo,
  ethernet,
  formatIp,
  ipv4 as ipv4Packet,
} from '../../devices/testing/frames.js';
import { LINUX_6_1_FEATURES } from '../../devices/testing/net-driver.js';
import { NetF } from '../../devices/virtio-net/features.js';
import { IoUring } from '../../lib/host/io-uring.js';
import { emptyOffload, type ReceiveTarget } from '../../lib/net/backend.js';
import { rssHash } from '../../lib/net/rss-hash.js';
import { lines, PY_UDP_RECV, PY_UDP_SEND } from '../tap/fixture.test-support.js';
import {
  icmpEcho,
  l4ChecksumOk,
  parseIpv4,
  sum16,
  TCP_ACK,
  TCP_PSH,
  TCP_SYN,
  tcpFrame,
  udpFrame,
} from '../tap/frames.test-support.js';
import {
  type DeviceFixture,
  type DeviceFixtureOptions,
  deviceFixture,
  GUEST_IP,
  GUEST_MAC,
  type GuestFrame,
  KERNEL_IP,
  KERNEL_MAC,
  kernelOffloads,
  PY_PING,
  unavailable,
} from './fixture.test-support.js';

/** UDP echo server in the namespace: answers `count` datagrams to their senders. */
const PY_UDP_ECHO = `
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
s.settimeout(20)
print('ready', flush=True)
for _ in range(int(sys.argv[3])):
    d, a = s.recvfrom(65535)
    s.sendto(d, a)
`;

const enc = (s: string) => new TextEncoder().encode(s);
const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

const isArpReply = (f: GuestFrame) => f.frame[12] === 0x08 && f.frame[13] === 0x06 && f.frame[21] === 2;
const isUdpTo = (port: number) => (f: GuestFrame) => {
  const p = parseIpv4(f.frame);
  return !!p && p.proto === 17 && ((p.l4[2]! << 8) | p.l4[3]!) === port;
};
const isTcp = (flags: number) => (f: GuestFrame) => {
  const p = parseIpv4(f.frame);
  return !!p && p.proto === 6 && (p.l4[13]! & flags) === flags;
};

/** Linux's features without any GUEST_* receive offload (a guest that cannot take partial checksums). */
const NO_GUEST_OFFLOADS = [
  NetF.GUEST_CSUM,
  NetF.GUEST_TSO4,
  NetF.GUEST_TSO6,
  NetF.GUEST_ECN,
  NetF.GUEST_UFO,
  NetF.CTRL_GUEST_OFFLOADS,
].reduce((m, b) => m & ~(1n << BigInt(b)), LINUX_6_1_FEATURES);

describe.skipIf(unavailable !== null)('virtio-net device on a real tap: traffic', () => {
  const fixtures: DeviceFixture[] = [];
  const fixture = (o: DeviceFixtureOptions = {}) => {
    const f = deviceFixture(o);
    fixtures.push(f);
    return f;
  };
  afterEach(() => {
    for (const f of fixtures.splice(0)) f.dispose();
  });

  it('brings the device up on the tap: header size and offloads reach the kernel (TUNSETVNETHDRSZ, TUNSETOFFLOAD)', () => {
    const { tap, drv, ns } = fixture();
    expect(drv.hdrSize).toBe(12);
    expect(tap.vnetHeaderSize).toBe(12);
    // Linux's guest takes csum + TSO: the tap may hand over partial checksums and TCP super-frames.
    expect(kernelOffloads(ns, tap.name)).toMatchObject({ txcsum: 1, tso: 1 });
    expect(tap.stats().ioctlErrors).toBe(0);
  });

  it('with hash reports negotiated the tap takes the 20-byte header', () => {
    const { tap, drv } = fixture({ device: { hash: true } });
    expect(drv.has(NetF.HASH_REPORT)).toBe(true);
    expect(drv.hdrSize).toBe(20);
    expect(tap.vnetHeaderSize).toBe(20);
  });

  for (const zeroCopy of [true, false])
    it(`guest ↔ kernel: ARP both ways, ping the kernel, and answer the kernel’s ping (zeroCopy ${zeroCopy})`, async () => {
      // Small frames: read into guest buffers only because the threshold is 0 here (default 512 B).
      const fx = fixture({ zeroCopy, zeroCopyRxMinBytes: 0 });
      const { drv, ns, tap } = fx;
      // The kernel does not know the guest yet: drop the fixture's static entry so it has to ARP.
      ns.ip('neigh', 'del', GUEST_IP, 'dev', tap.name);
      drv.send(arp(1, GUEST_MAC, GUEST_IP, '00:00:00:00:00:00', KERNEL_IP));
      const reply = await fx.waitFor(isArpReply, 5000, 'ARP reply');
      expect(hex(reply.frame.subarray(22, 28))).toBe(KERNEL_MAC.replaceAll(':', ''));
      expect(formatIp(reply.frame, 28)).toBe(KERNEL_IP);
      expect(hex(reply.frame.subarray(0, 6))).toBe(GUEST_MAC.replaceAll(':', ''));

      for (let seq = 1; seq <= 3; seq++) {
        drv.send(icmpEcho(GUEST_IP, KERNEL_IP, 0x77, seq, enc(`guest ping ${seq}`)));
        const r = await fx.waitFor((f) => {
          const p = parseIpv4(f.frame);
          return !!p && p.proto === 1 && p.l4[0] === 0 && ((p.l4[6]! << 8) | p.l4[7]!) === seq;
        });
        const p = parseIpv4(r.frame)!;
        expect(p.src).toBe(KERNEL_IP);
        expect(l4ChecksumOk(r.frame)).toBe(true);
        expect(new TextDecoder().decode(p.l4.subarray(8))).toBe(`guest ping ${seq}`);
      }

      // Kernel -> guest: ping from the namespace; the guest answers ARP and echo requests as a host does.
      ns.ip('neigh', 'flush', 'dev', tap.name);
      const child = ns.spawn('python3', ['-c', PY_PING, GUEST_IP, '4242', '2']);
      const out = lines(child);
      const answered = new Set<GuestFrame>();
      const done = fx.until(
        () => {
          for (const f of fx.frames) {
            if (answered.has(f)) continue;
            const t = (f.frame[12]! << 8) | f.frame[13]!;
            if (t === 0x0806 && f.frame[21] === 1 && formatIp(f.frame, 38) === GUEST_IP) {
              answered.add(f);
              drv.send(arp(2, GUEST_MAC, GUEST_IP, KERNEL_MAC, KERNEL_IP));
            }
            const p = parseIpv4(f.frame);
            if (p && p.proto === 1 && p.l4[0] === 8 && p.dst === GUEST_IP) {
              answered.add(f);
              const id = (p.l4[4]! << 8) | p.l4[5]!;
              const seq = (p.l4[6]! << 8) | p.l4[7]!;
              const body = echo(0, id, seq, p.l4.subarray(8));
              drv.send(ethernet(KERNEL_MAC, GUEST_MAC, 0x0800, ipv4Packet(GUEST_IP, KERNEL_IP, 1, body)));
            }
          }
          return out.all.includes('reply 2');
        },
        15_000,
        'the kernel’s ping answered',
      );
      await done;
      expect(out.all.filter((l) => l.startsWith('reply'))).toEqual(['reply 1', 'reply 2']);
      const arpRequests = fx.frames.filter(
        (f) => f.frame[12] === 0x08 && f.frame[13] === 0x06 && f.frame[21] === 1,
      );
      expect(arpRequests.length).toBeGreaterThan(0);
      const s = fx.dev.stats() as { txDropped: number; rxDropped: number; guestErrors: number };
      expect(s).toMatchObject({ txDropped: 0, rxDropped: 0, guestErrors: 0 });
      // Zero copy: every frame was read straight into a guest buffer and written from guest memory.
      const t = tap.stats();
      expect(t.rxFrames).toBeGreaterThan(0);
      expect(t.txFrames).toBeGreaterThan(0);
      expect([t.rxDirect, t.txDirect]).toEqual(zeroCopy ? [t.rxFrames, t.txFrames] : [0, 0]);
    });

  for (const [batchTx, ioUring] of [
    [true, true],
    [false, true],
    [true, false],
  ] as const)
    it(`a burst of 64 frames with one kick reaches the kernel intact and in order (io_uring batch ${batchTx ? 'on' : 'off'}${ioUring ? '' : ', io_uring unavailable'})`, async () => {
      // Where io_uring is refused (e.g. a container's seccomp profile) the tap falls back to writev.
      const refused = ioUring ? null : vi.spyOn(IoUring, 'supported').mockReturnValue('refused for the test');
      onTestFinished(() => refused?.mockRestore());
      const fx = fixture({ batchTx });
      const { drv, ns, tap } = fx;
      const N = 64;
      const child = ns.spawn('python3', ['-c', PY_UDP_RECV, KERNEL_IP, '5562', String(N)]);
      const out = lines(child);
      await out.waitFor(/^ready$/);
      const payloads = Array.from({ length: N }, (_, i) =>
        enc(`burst ${i} `.padEnd(20 + ((i * 37) % 1400), 'x')),
      );
      for (const [i, p] of payloads.entries())
        drv.send(udpFrame(GUEST_IP, KERNEL_IP, 44000 + i, 5562, p), { kick: false });
      drv.kickTx();
      for (const [i, p] of payloads.entries())
        expect(await out.waitFor(new RegExp(` ${44000 + i}$`))).toBe(`${hex(p)} ${GUEST_IP} ${44000 + i}`);
      const t = tap.stats();
      expect([t.txFrames, t.txDirect, t.txDropped]).toEqual([N, N, 0]);
      // On: one io_uring submission for the burst (the device flushes once per burst of up to 256).
      expect([t.txBatches, t.txBatchedFrames]).toEqual(batchTx && ioUring ? [1, N] : [0, 0]);
      expect(tap.lastError).toBeNull();
      const q = (fx.dev.stats() as { queues: { txPackets: number; txDropped: number }[] }).queues[0]!;
      expect([q.txPackets, q.txDropped]).toEqual([N, 0]);
    });

  it('without batched reads small frames are read into the tap buffer and copied, large ones straight into guest buffers', async () => {
    // Batched reads (default; test/tap-device/rx-batch.test.ts) copy bursts of either size.
    const fx = fixture({ batchRx: false });
    const { ns, tap } = fx;
    expect(tap.zeroCopyRxMinBytes).toBe(512);
    const small = [9300, 9301, 9302];
    ns.exec('python3', ['-c', PY_UDP_SEND, GUEST_IP, small.join(','), '64', '30']);
    await fx.until(() => fx.frames.filter((f) => small.some((p) => isUdpTo(p)(f))).length === 30);
    expect(tap.stats().rxDirect).toBe(0);
    ns.exec('python3', ['-c', PY_UDP_SEND, GUEST_IP, '9400', '1400', '60']);
    await fx.until(() => fx.frames.filter((f) => isUdpTo(9400)(f)).length === 60);
    // The running average crosses 512 B after a few large frames; from then on they are read in place.
    const t = tap.stats();
    expect(t.rxDirect).toBeGreaterThanOrEqual(50);
    expect(t.rxDirectBytes).toBe(t.rxDirect * (14 + 20 + 8 + 1400));
    for (const f of fx.frames.filter((x) => isUdpTo(9400)(x)))
      expect(f.frame.length).toBe(14 + 20 + 8 + 1400);
  });

  // Also with the pair on a worker thread (docs/workers.md): same frames, same counters.
  for (const workers of [false, true])
    it(`UDP both ways between the guest and a socket in the namespace${workers ? ' (pair on a worker)' : ''}`, async () => {
      const fx = fixture({ sharedMemory: workers, device: { workers } });
      const { drv, ns } = fx;
      const child = ns.spawn('python3', ['-c', PY_UDP_RECV, KERNEL_IP, '5555', '3']);
      const out = lines(child);
      await out.waitFor(/^ready$/);
      for (let i = 0; i < 3; i++)
        drv.send(udpFrame(GUEST_IP, KERNEL_IP, 41000 + i, 5555, enc(`datagram ${i}`)));
      for (let i = 0; i < 3; i++)
        expect(await out.waitFor(new RegExp(` ${41000 + i}$`))).toBe(
          `${hex(enc(`datagram ${i}`))} ${GUEST_IP} ${41000 + i}`,
        );

      ns.exec('python3', ['-c', PY_UDP_SEND, GUEST_IP, '6001', '300', '4']);
      await fx.until(() => fx.frames.filter(isUdpTo(6001)).length === 4, 10_000, '4 datagrams');
      for (const f of fx.frames.filter(isUdpTo(6001))) {
        const p = parseIpv4(f.frame)!;
        expect(p.l4.length).toBe(308);
        expect(p.l4[8 + 5]).toBe((5 * 7) & 0xff);
      }
      // A worker publishes its counters after each burst and every 5 ms: the guest's ring (which the
      // synthetic guest polls) can be ahead of them for that long.
      const s = () => fx.dev.stats() as { txPackets: number; rxPackets: number };
      await fx.until(() => s().rxPackets >= 4 && s().txPackets >= 3, 5_000, 'counters');
      expect(s().txPackets).toBe(3);
      expect(s().rxPackets).toBeGreaterThanOrEqual(4);
    });

  it('TSO from the guest: one GSO TCPv4 super-frame, segmented by the kernel, received whole by a socket', async () => {
    const fx = fixture();
    const { drv, ns } = fx;
    const n = 20_000;
    const child = ns.spawn('python3', [
      '-c',
      `
import socket, hashlib
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(('${KERNEL_IP}', 6000)); l.listen(1); l.settimeout(20)
print('ready', flush=True)
c, a = l.accept(); c.settimeout(20)
got = b''
while len(got) < ${n}:
    d = c.recv(65536)
    if not d: break
    got += d
print('got', len(got), hashlib.sha256(got).hexdigest(), flush=True)
`,
    ]);
    const out = lines(child);
    await out.waitFor(/^ready$/);
    const iss = 5000;
    drv.send(tcpFrame(GUEST_IP, KERNEL_IP, 43000, 6000, iss, 0, TCP_SYN, new Uint8Array(0)));
    const synAck = await fx.waitFor(isTcp(TCP_SYN | TCP_ACK), 5000, 'SYN-ACK');
    const l4 = parseIpv4(synAck.frame)!.l4;
    const peerSeq = new DataView(l4.buffer, l4.byteOffset).getUint32(4);
    drv.send(tcpFrame(GUEST_IP, KERNEL_IP, 43000, 6000, iss + 1, peerSeq + 1, TCP_ACK, new Uint8Array(0)));

    const payload = Uint8Array.from({ length: n }, (_, i) => (i * 31 + (i >> 8)) & 0xff);
    // A driver using TSO: one frame with the pseudo-header sum in the checksum field, NEEDS_CSUM + GSO.
    const big = tcpFrame(GUEST_IP, KERNEL_IP, 43000, 6000, iss + 1, peerSeq + 1, TCP_ACK | TCP_PSH, payload, {
      partial: true,
    });
    const kernelRx = fx.kernelStat('rx_packets');
    const txBefore = (fx.dev.stats() as { txPackets: number }).txPackets;
    drv.send(big, {
      offload: { flags: 1, gsoType: 1, hdrLen: 54, gsoSize: 1448, csumStart: 34, csumOffset: 16 },
    });
    const line = await out.waitFor(/^got /, 15_000);
    const { createHash } = await import('node:crypto');
    expect(line).toBe(`got ${n} ${createHash('sha256').update(payload).digest('hex')}`);
    // The device passed it as one frame with its offload (not segmented in software: that would be 14).
    expect((fx.dev.stats() as { txPackets: number }).txPackets - txBefore).toBe(1);
    expect(fx.kernelStat('rx_packets') - kernelRx).toBe(1);
    expect(fx.tap.stats().txDroppedInvalid).toBe(0);
  });

  /** The namespace connects to a fake TCP server in the guest and sends; returns the data frames' offloads. */
  async function tcpIntoGuest(fx: DeviceFixture, port: number): Promise<GuestFrame[]> {
    const { drv, ns } = fx;
    ns.spawn('python3', [
      '-c',
      `
import socket, time
c = socket.create_connection(('${GUEST_IP}', ${port}), timeout=10)
c.sendall(b'y' * 30000)
time.sleep(5)
`,
    ]);
    const syn = await fx.waitFor(isTcp(TCP_SYN), 10_000, 'SYN from the namespace');
    const l4 = parseIpv4(syn.frame)!.l4;
    const dv = new DataView(l4.buffer, l4.byteOffset);
    const clientPort = dv.getUint16(0);
    const clientSeq = dv.getUint32(4);
    // SYN-ACK without options: the kernel then sends segments of the default MSS (536).
    drv.send(
      tcpFrame(
        GUEST_IP,
        KERNEL_IP,
        port,
        clientPort,
        90000,
        clientSeq + 1,
        TCP_SYN | TCP_ACK,
        new Uint8Array(0),
      ),
    );
    const isData = (f: GuestFrame) => {
      const p = parseIpv4(f.frame);
      return !!p && p.proto === 6 && ((p.l4[2]! << 8) | p.l4[3]!) === port && p.l4.length > 20;
    };
    await fx.waitFor(isData, 10_000, 'TCP data from the namespace');
    await fx.until(() => fx.frames.filter(isData).length >= 2 || null, 300, 'more data').catch(() => null);
    return fx.frames.filter(isData);
  }

  it('rx TSO: with GUEST_TSO4 the kernel hands the guest TCP super-frames (GSO TCPv4, gso_size 536)', async () => {
    const fx = fixture();
    expect(fx.drv.has(NetF.GUEST_TSO4)).toBe(true);
    const data = await tcpIntoGuest(fx, 7777);
    const big = data.find((f) => f.offload.gsoType === 1);
    expect(big).toBeDefined();
    expect(big!.offload).toMatchObject({ gsoType: 1, gsoSize: 536, flags: 1, csumStart: 34, csumOffset: 16 });
    // More than one MSS of payload in one frame (the kernel's first flights are 2+ segments).
    expect(big!.frame.length).toBeGreaterThan(14 + 20 + 20 + 536);
    // Mergeable rx buffers of 1548 bytes: the super-frame spans several (num_buffers in the header).
    expect(big!.numBuffers).toBe(Math.ceil((12 + big!.frame.length) / 1548));
  });

  it('rx TSO: a guest without GUEST_TSO4 gets MSS-sized segments (the tap is told, the kernel segments)', async () => {
    const wanted = [NetF.GUEST_TSO4, NetF.GUEST_TSO6, NetF.GUEST_ECN, NetF.GUEST_UFO].reduce(
      (m, b) => m & ~(1n << BigInt(b)),
      LINUX_6_1_FEATURES,
    );
    const fx = fixture({ wanted });
    expect(fx.drv.has(NetF.GUEST_TSO4)).toBe(false);
    expect(kernelOffloads(fx.ns, fx.tap.name)).toMatchObject({ txcsum: 1, tso: 0 });
    const data = await tcpIntoGuest(fx, 7778);
    for (const f of data) {
      expect(f.offload.gsoType).toBe(0);
      expect(f.frame.length).toBeLessThanOrEqual(14 + 20 + 20 + 536);
    }
  });

  it('tx checksum offload: a NEEDS_CSUM datagram is accepted; the same bytes without the flag are a checksum error', async () => {
    const fx = fixture();
    const { drv, ns } = fx;
    const child = ns.spawn('python3', ['-c', PY_UDP_RECV, KERNEL_IP, '5556', '2']);
    const out = lines(child);
    await out.waitFor(/^ready$/);
    const csumErrors = () => {
      const udp = ns
        .exec('cat', ['/proc/net/snmp'])
        .split('\n')
        .filter((l) => l.startsWith('Udp:'));
      const names = udp[0]!.split(/\s+/);
      return Number(udp[1]!.split(/\s+/)[names.indexOf('InCsumErrors')]);
    };
    const before = csumErrors();
    drv.send(udpFrame(GUEST_IP, KERNEL_IP, 40002, 5556, enc('with NEEDS_CSUM'), { partial: true }), {
      offload: { flags: 1, csumStart: 34, csumOffset: 6 },
    });
    drv.send(udpFrame(GUEST_IP, KERNEL_IP, 40001, 5556, enc('partial, no flag'), { partial: true }));
    expect(await out.waitFor(/ 4000[12]$/)).toBe(`${hex(enc('with NEEDS_CSUM'))} ${GUEST_IP} 40002`);
    await fx.until(() => csumErrors() === before + 1, 10_000, 'InCsumErrors + 1');
    expect(out.all.filter((l) => / 4000[12]$/.test(l))).toHaveLength(1);
  });

  it('rx checksum offload: partial checksums reach a GUEST_CSUM guest with NEEDS_CSUM; CTRL_GUEST_OFFLOADS off makes the kernel complete them', async () => {
    const fx = fixture();
    const { drv, ns, tap } = fx;
    expect(drv.has(NetF.GUEST_CSUM)).toBe(true);
    ns.exec('python3', ['-c', PY_UDP_SEND, GUEST_IP, '7001', '100', '1']);
    const partial = await fx.waitFor(isUdpTo(7001));
    expect(partial.offload).toMatchObject({ flags: 1, gsoType: 0, csumStart: 34, csumOffset: 6 });
    expect(l4ChecksumOk(partial.frame)).toBe(false);
    const f = partial.frame.slice();
    const c = ~sum16(f, 34) & 0xffff;
    f[40] = c >> 8;
    f[41] = c & 0xff;
    expect(l4ChecksumOk(f)).toBe(true);

    // The guest turns its receive offloads off at runtime: TUNSETOFFLOAD 0, full checksums from the kernel.
    expect(drv.setGuestOffloads(0n)).toBe(0);
    expect(kernelOffloads(ns, tap.name)).toMatchObject({ txcsum: 0, tso: 0 });
    ns.exec('python3', ['-c', PY_UDP_SEND, GUEST_IP, '7002', '100', '1']);
    const full = await fx.waitFor(isUdpTo(7002));
    expect(full.offload.flags & 1).toBe(0);
    expect(l4ChecksumOk(full.frame)).toBe(true);

    // And back on.
    expect(drv.setGuestOffloads(1n << BigInt(NetF.GUEST_CSUM))).toBe(0);
    expect(kernelOffloads(ns, tap.name)).toMatchObject({ txcsum: 1, tso: 0 });
    ns.exec('python3', ['-c', PY_UDP_SEND, GUEST_IP, '7003', '100', '1']);
    expect((await fx.waitFor(isUdpTo(7003))).offload.flags).toBe(1);
  });

  it('rx checksum: a guest without GUEST_CSUM never sees NEEDS_CSUM (the tap is told, and the device completes strays)', async () => {
    const fx = fixture({ wanted: NO_GUEST_OFFLOADS, zeroCopyRxMinBytes: 0 });
    const { drv, ns, tap } = fx;
    expect(drv.has(NetF.GUEST_CSUM)).toBe(false);
    expect(kernelOffloads(ns, tap.name)).toMatchObject({ txcsum: 0, tso: 0 });
    ns.exec('python3', ['-c', PY_UDP_SEND, GUEST_IP, '7101', '100', '1']);
    const a = await fx.waitFor(isUdpTo(7101));
    expect(a.offload.flags & 1).toBe(0);
    expect(l4ChecksumOk(a.frame)).toBe(true);

    // A backend that hands over partial checksums anyway (here: the tap's offloads switched on behind the
    // device's back): the device completes the checksum in software before the guest sees the frame.
    tap.setOffloads({
      csum: true,
      tso4: false,
      tso6: false,
      ecn: false,
      ufo: false,
      uso4: false,
      uso6: false,
    });
    expect(kernelOffloads(ns, tap.name).txcsum).toBe(1);
    // Watch what the tap hands the device (the sink is the VirtioNet object; the tap looks its methods up
    // per call): read straight into a lent guest buffer, the vnet header is at the start of the first
    // segment (and the device must then take the frame out again to complete the checksum).
    const net = fx.dev.net;
    const fromTap: number[] = [];
    let lent: ReceiveTarget | null = null;
    const lend = net.lendReceive.bind(net);
    const complete = net.completeReceive.bind(net);
    net.lendReceive = (qp, hs, target) => {
      const ok = lend(qp, hs, target);
      lent = ok ? target : null;
      return ok;
    };
    net.completeReceive = (n, overflow) => {
      const t = lent!;
      const stream = Uint8Array.from(
        t.bytes[0]!.subarray(t.offsets[0]!, t.offsets[0]! + Math.min(n, t.lengths[0]!)),
      );
      const hs = tap.vnetHeaderSize;
      const offload = readVnetHeader(stream, 0, emptyOffload());
      if (isUdpTo(7102)({ frame: stream.subarray(hs), offload, pair: 0, numBuffers: 1 }))
        fromTap.push(offload.flags);
      complete(n, overflow);
    };
    const directBefore = tap.stats().rxDirect;
    ns.exec('python3', ['-c', PY_UDP_SEND, GUEST_IP, '7102', '100', '1']);
    const b = await fx.waitFor(isUdpTo(7102));
    expect(tap.stats().rxDirect).toBeGreaterThan(directBefore);
    expect(fromTap).toEqual([1]);
    expect(b.offload.flags & 1).toBe(0);
    expect(l4ChecksumOk(b.frame)).toBe(true);
  });

  it('a multiqueue tap steers flows itself (tun automq): replies return on the pair the guest sent on, read straight into guest buffers', async () => {
    const fx = fixture({ queues: 2, zeroCopyRxMinBytes: 0, batchRx: false });
    const { drv, ns, tap } = fx;
    expect(tap.capabilities.steersFlows).toBe(true);
    const FLOWS = 16;
    const echo = ns.spawn('python3', ['-c', PY_UDP_ECHO, KERNEL_IP, '5560', String(FLOWS)]);
    await lines(echo).waitFor(/^ready$/);
    for (let i = 0; i < FLOWS; i++)
      drv.send(udpFrame(GUEST_IP, KERNEL_IP, 43000 + i, 5560, enc(`flow ${i}`)), { pair: i % 2 });
    const replies = (f: GuestFrame) => {
      const p = parseIpv4(f.frame);
      return !!p && p.proto === 17 && ((p.l4[0]! << 8) | p.l4[1]!) === 5560;
    };
    await fx.until(() => fx.frames.filter(replies).length === FLOWS, 10_000, 'every echo');
    for (const f of fx.frames.filter(replies)) {
      const p = parseIpv4(f.frame)!;
      const port = (p.l4[2]! << 8) | p.l4[3]!;
      expect(f.pair, `reply to port ${port}`).toBe((port - 43000) % 2);
    }
    // No device-side steering in the way: every frame was read straight into the chosen pair's buffers.
    const t = tap.stats();
    expect(t.rxDirect).toBe(t.rxFrames);
    expect(t.rxDirect).toBeGreaterThanOrEqual(FLOWS);
  });

  for (const [hash, rssSteering] of [
    [false, true],
    [true, true],
    [false, false],
  ] as const)
    it(`RSS from the guest on a 4-queue tap (hash report ${hash ? 'on' : 'off'}, kernel steering ${rssSteering ? 'on' : 'off'}): every flow on the pair its Toeplitz hash names`, async () => {
      const fx = fixture({ queues: 4, device: { rss: true, hash }, rssSteering, zeroCopyRxMinBytes: 0 });
      const { drv, ns, tap } = fx;
      const key = Uint8Array.from({ length: 40 }, (_, i) => (i * 29 + 3) & 0xff);
      const table = Array.from({ length: 16 }, (_, i) => (i * 3 + 1) % 4);
      const types = 0x3f; // IPv4/IPv6 with TCP and UDP ports
      expect(drv.setRss({ hashTypes: types, table, key, unclassified: 0 })).toBe(0);
      const ports = Array.from({ length: 48 }, (_, i) => 20000 + i * 37);
      ns.exec('python3', ['-c', PY_UDP_SEND, GUEST_IP, ports.join(','), '64', String(ports.length)]);
      const udp = (f: GuestFrame) => ports.some((p) => isUdpTo(p)(f));
      await fx.until(() => fx.frames.filter(udp).length === ports.length, 10_000, 'every flow');
      const used = new Set<number>();
      for (const f of fx.frames.filter(udp)) {
        const h = rssHash(f.frame, types, key)!;
        expect(f.pair).toBe(table[h.hash & 15]);
        used.add(f.pair);
        if (hash) expect([(f.hashValue ?? 0) >>> 0, f.hashReport]).toEqual([h.hash >>> 0, h.reportType]);
      }
      expect(used.size).toBe(4);
      const t = tap.stats();
      // Kernel steering: the device keeps the tap's queue and (without hash report) reads zero copy.
      expect(t.rxDirect > 0).toBe(rssSteering && !hash);
      expect([tap.rssSteeringActive, t.rssSteeringUpdates]).toEqual([rssSteering, rssSteering ? 1 : 0]);
      expect(tap.lastError).toBeNull();
      // VQ_PAIRS_SET ends RSS (the last command wins): the program is detached, tun's automq again.
      expect(drv.setQueuePairs(4)).toBe(0);
      expect(tap.rssSteeringActive).toBe(false);
    });

  for (const workers of [false, true])
    it(`two queue pairs on a multiqueue tap: VQ_PAIRS_SET attaches/detaches tap queues, traffic on both pairs${workers ? ' (each pair on a worker)' : ''}`, async () => {
      const fx = fixture({ queues: 2, sharedMemory: workers, device: { workers } });
      const { drv, ns, tap } = fx;
      const realQueues = () =>
        ns
          .exec('ls', [`/sys/class/net/${tap.name}/queues`])
          .split(/\s+/)
          .filter((q) => q.startsWith('tx-'))
          .sort();
      expect(drv.pairs).toBe(2);
      expect(realQueues()).toEqual(['tx-0', 'tx-1']);
      // VQ_PAIRS_SET 1: TUNSETQUEUE IFF_DETACH_QUEUE on the second fd; the kernel has one queue left.
      expect(drv.setQueuePairs(1)).toBe(0);
      expect(realQueues()).toEqual(['tx-0']);
      expect(drv.setQueuePairs(2)).toBe(0);
      expect(realQueues()).toEqual(['tx-0', 'tx-1']);
      expect(tap.stats().ioctlErrors).toBe(0);

      const child = ns.spawn('python3', ['-c', PY_UDP_RECV, KERNEL_IP, '5557', '2']);
      const out = lines(child);
      await out.waitFor(/^ready$/);
      drv.send(udpFrame(GUEST_IP, KERNEL_IP, 42000, 5557, enc('via pair 0')), { pair: 0 });
      drv.send(udpFrame(GUEST_IP, KERNEL_IP, 42001, 5557, enc('via pair 1')), { pair: 1 });
      expect(await out.waitFor(/ 42000$/)).toContain(hex(enc('via pair 0')));
      expect(await out.waitFor(/ 42001$/)).toContain(hex(enc('via pair 1')));

      // Kernel -> guest: 32 flows; the tap spreads them over its queues by flow hash, one pair each.
      const ports = Array.from({ length: 32 }, (_, i) => 9000 + i);
      ns.exec('python3', ['-c', PY_UDP_SEND, GUEST_IP, ports.join(','), '64', '32']);
      await fx.until(
        () => fx.frames.filter((f) => ports.some((p) => isUdpTo(p)(f))).length === 32,
        10_000,
        '32 flows',
      );
      const perPair = [0, 0];
      for (const f of fx.frames) if (ports.some((p) => isUdpTo(p)(f))) perPair[f.pair]!++;
      expect(perPair[0]).toBeGreaterThan(0);
      expect(perPair[1]).toBeGreaterThan(0);
      const q = () => (fx.dev.stats() as { queues: { txPackets: number; rxPackets: number }[] }).queues;
      // A worker publishes its counters after each wake-up and every 5 ms: the guest may see a frame in
      // its ring a little before the counter moves.
      await fx.until(
        () => q()[0]!.rxPackets >= perPair[0]! && q()[1]!.rxPackets >= perPair[1]!,
        2000,
        'the rx counters',
      );
      expect(q().map((x) => x.txPackets)).toEqual([1, 1]);
    });
});
