/**
 * TapBackend against a real kernel tap, with the test playing the guest: each test creates its own
 * network namespace and tap (kernel side 10.77.0.1 inside the namespace) and removes both.
 */
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { emptyOffload } from '../../lib/net/backend.js';
import { cleanupNamespaces } from '../../lib/host/netns.js';
import {
  lines,
  PY_UDP_RECV,
  PY_UDP_SEND,
  type TapFixture,
  tapFixture,
  unavailable,
} from './fixture.test-support.js';
import {
  arpRequest,
  GUEST_IP,
  GUEST_MAC,
  icmpEcho,
  ipv4,
  KERNEL_IP,
  KERNEL_MAC,
  l4ChecksumOk,
  mac,
  parseIpv4,
  sum16,
  TCP_ACK,
  TCP_PSH,
  TCP_SYN,
  tcpFrame,
  udpFrame,
  waitUntil,
} from './frames.test-support.js';

const fixtures: TapFixture[] = [];
function fixture(...args: Parameters<typeof tapFixture>): TapFixture {
  const f = tapFixture(...args);
  fixtures.push(f);
  return f;
}
afterEach(() => {
  for (const f of fixtures.splice(0)) f.dispose();
});
afterAll(() => cleanupNamespaces());

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

describe.skipIf(unavailable !== null)(
  `TapBackend traffic${unavailable ? ` (skipped: ${unavailable})` : ''}`,
  () => {
    it('answers an ARP request from the guest with the kernel side MAC, byte for byte', async () => {
      const { tap, sink } = fixture();
      expect(tap.transmit(arpRequest(mac(GUEST_MAC), ipv4(GUEST_IP), ipv4(KERNEL_IP)), 0, null)).toBe('sent');
      const r = await sink.waitFor((f) => f.frame[12] === 0x08 && f.frame[13] === 0x06, 10_000, 'ARP reply');
      const expected = new Uint8Array(42);
      expected.set(mac(GUEST_MAC), 0);
      expected.set(mac(KERNEL_MAC), 6);
      expected.set([0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 2], 12);
      expected.set(mac(KERNEL_MAC), 22);
      expected.set(ipv4(KERNEL_IP), 28);
      expected.set(mac(GUEST_MAC), 32);
      expected.set(ipv4(GUEST_IP), 38);
      expect(hex(r.frame.subarray(0, 42))).toBe(hex(expected));
      expect(r.queuePair).toBe(0);
      expect(r.offload).toEqual(emptyOffload());
      expect(tap.stats().txFrames).toBe(1);
      expect(tap.stats().rxFrames).toBeGreaterThanOrEqual(1);
    });

    it('gets ICMP echo replies for echo requests, with the payload echoed and checksums valid', async () => {
      const { tap, sink } = fixture();
      const data = Uint8Array.from({ length: 56 }, (_, i) => (i * 13) & 0xff);
      for (let seq = 1; seq <= 3; seq++)
        expect(tap.transmit(icmpEcho(GUEST_IP, KERNEL_IP, 0x1234, seq, data), 0, null)).toBe('sent');
      for (let seq = 1; seq <= 3; seq++) {
        const r = await sink.waitFor((f) => {
          const p = parseIpv4(f.frame);
          return (
            !!p &&
            p.proto === 1 &&
            p.l4[0] === 0 &&
            (((p.l4[6] as number) << 8) | (p.l4[7] as number)) === seq
          );
        });
        const p = parseIpv4(r.frame);
        expect(p?.src).toBe(KERNEL_IP);
        expect(p?.dst).toBe(GUEST_IP);
        expect(hex(p?.l4.subarray(4, 6) as Uint8Array)).toBe('1234');
        expect(hex(p?.l4.subarray(8) as Uint8Array)).toBe(hex(data));
        expect(l4ChecksumOk(r.frame)).toBe(true);
        expect(sum16(p?.ip.subarray(0, 20) as Uint8Array)).toBe(0xffff);
      }
    });

    it('delivers UDP to a socket in the namespace and the socket’s reply to the guest', async () => {
      const { ns, tap, sink } = fixture();
      const child = ns.spawn('python3', [
        '-c',
        `${PY_UDP_RECV}\ns.sendto(b'pong', a)`,
        KERNEL_IP,
        '5555',
        '1',
      ]);
      const out = lines(child);
      await out.waitFor(/^ready$/);
      const payload = new TextEncoder().encode('hello from the guest');
      expect(tap.transmit(udpFrame(GUEST_IP, KERNEL_IP, 40000, 5555, payload), 0, null)).toBe('sent');
      expect(await out.waitFor(/ 40000$/)).toBe(`${hex(payload)} ${GUEST_IP} 40000`);
      const r = await sink.waitFor((f) => parseIpv4(f.frame)?.proto === 17);
      const p = parseIpv4(r.frame);
      expect(hex(p?.l4.subarray(0, 4) as Uint8Array)).toBe(hex(Uint8Array.of(0x15, 0xb3, 0x9c, 0x40))); // 5555 -> 40000
      expect(new TextDecoder().decode(p?.l4.subarray(8))).toBe('pong');
      expect(l4ChecksumOk(r.frame)).toBe(true);
    });

    it('accepts a NEEDS_CSUM frame with a partial checksum; the same frame without the flag is dropped', async () => {
      const { ns, tap } = fixture();
      const child = ns.spawn('python3', ['-c', PY_UDP_RECV, KERNEL_IP, '5556', '2']);
      const out = lines(child);
      await out.waitFor(/^ready$/);
      const bad = udpFrame(GUEST_IP, KERNEL_IP, 40001, 5556, new TextEncoder().encode('partial-no-flag'), {
        partial: true,
      });
      const ok = udpFrame(GUEST_IP, KERNEL_IP, 40002, 5556, new TextEncoder().encode('partial-with-flag'), {
        partial: true,
      });
      // Control: a partial checksum without NEEDS_CSUM is a wrong checksum: the kernel drops it. Sent
      // after the offloaded one, it also shows the previous frame's header does not stick.
      const off = { ...emptyOffload(), flags: 1, csumStart: 34, csumOffset: 6 };
      expect(tap.transmit(ok, 0, off)).toBe('sent');
      expect(tap.transmit(bad, 0, null)).toBe('sent');
      const csumErrors = () => {
        const udp = ns
          .exec('cat', ['/proc/net/snmp'])
          .split('\n')
          .filter((l) => l.startsWith('Udp:'));
        const names = (udp[0] as string).split(/\s+/);
        return Number((udp[1] as string).split(/\s+/)[names.indexOf('InCsumErrors')]);
      };
      const line = await out.waitFor(/ 4000[12]$/);
      expect(line).toBe(`${hex(new TextEncoder().encode('partial-with-flag'))} ${GUEST_IP} 40002`);
      await waitUntil(() => csumErrors() === 1, 10_000, 'InCsumErrors 1');
      expect(out.all.filter((l) => / 4000[12]$/.test(l))).toHaveLength(1);
    });

    it('hands over partial-checksum frames with NEEDS_CSUM once the guest enables csum offload', async () => {
      const { ns, tap, sink } = fixture();
      const send = (port: number) =>
        ns.exec('python3', ['-c', PY_UDP_SEND, GUEST_IP, String(port), '100', '1']);
      const isUdpTo = (port: number) => (f: { frame: Uint8Array }) => {
        const p = parseIpv4(f.frame);
        return !!p && p.proto === 17 && (((p.l4[2] as number) << 8) | (p.l4[3] as number)) === port;
      };
      send(7001);
      const plain = await sink.waitFor(isUdpTo(7001));
      expect(plain.offload?.flags ?? 0).not.toBe(1);
      expect(l4ChecksumOk(plain.frame)).toBe(true);

      tap.setOffloads({
        csum: true,
        tso4: false,
        tso6: false,
        ecn: false,
        ufo: false,
        uso4: false,
        uso6: false,
      });
      expect(tap.stats().ioctlErrors).toBe(0);
      send(7002);
      const partial = await sink.waitFor(isUdpTo(7002));
      expect(partial.offload).toMatchObject({ flags: 1, gsoType: 0, csumStart: 34, csumOffset: 6 });
      // The checksum field holds the pseudo-header sum: completing it over csumStart.. gives a valid frame.
      const f = partial.frame.slice();
      const c = ~sum16(f, 34) & 0xffff;
      f[40] = c >> 8;
      f[41] = c & 0xff;
      expect(l4ChecksumOk(partial.frame)).toBe(false);
      expect(l4ChecksumOk(f)).toBe(true);
    });

    it('delivers a TSO (GSO TCPv4) super-frame from the guest: the receiver reads every byte', async () => {
      const { ns, tap, sink } = fixture();
      const n = 8000;
      const child = ns.spawn('python3', [
        '-c',
        `
import socket, hashlib, sys
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
      const isTcp = (flags: number) => (f: { frame: Uint8Array }) => {
        const p = parseIpv4(f.frame);
        return !!p && p.proto === 6 && ((p.l4[13] as number) & flags) === flags;
      };
      const iss = 1000;
      expect(
        tap.transmit(tcpFrame(GUEST_IP, KERNEL_IP, 41000, 6000, iss, 0, TCP_SYN, new Uint8Array(0)), 0, null),
      ).toBe('sent');
      const synAck = await sink.waitFor(isTcp(TCP_SYN | TCP_ACK), 10_000, 'SYN-ACK');
      const kseq = new DataView(synAck.frame.buffer, synAck.frame.byteOffset).getUint32(14 + 20 + 4);
      tap.transmit(
        tcpFrame(GUEST_IP, KERNEL_IP, 41000, 6000, iss + 1, kseq + 1, TCP_ACK, new Uint8Array(0)),
        0,
        null,
      );
      const data = Uint8Array.from({ length: n }, (_, i) => (i * 31 + 7) & 0xff);
      const frame = tcpFrame(GUEST_IP, KERNEL_IP, 41000, 6000, iss + 1, kseq + 1, TCP_ACK | TCP_PSH, data, {
        partial: true,
        id: 2,
      });
      const off = { flags: 1, gsoType: 1, hdrLen: 54, gsoSize: 1000, csumStart: 34, csumOffset: 16 };
      expect(tap.transmit(frame, 0, off)).toBe('sent');
      const { createHash } = await import('node:crypto');
      expect(await out.waitFor(/^got /)).toBe(`got ${n} ${createHash('sha256').update(data).digest('hex')}`);
      // The kernel acknowledged every byte.
      await sink.waitFor(
        (f) => {
          const p = parseIpv4(f.frame);
          if (p?.proto !== 6) return false;
          return new DataView(p.l4.buffer, p.l4.byteOffset).getUint32(8) === iss + 1 + n;
        },
        10_000,
        'ACK of all data',
      );
    });

    it('hands TSO super-frames (GSO TCPv4, partial checksum) to the guest once tso4 is enabled', async () => {
      const { ns, tap, sink } = fixture();
      tap.setOffloads({
        csum: true,
        tso4: true,
        tso6: false,
        ecn: false,
        ufo: false,
        uso4: false,
        uso6: false,
      });
      expect(tap.stats().ioctlErrors).toBe(0);
      const child = ns.spawn('python3', [
        '-c',
        `
import socket, time
c = socket.create_connection(('${GUEST_IP}', 6001), timeout=20)
c.sendall(bytes((i * 3) & 0xff for i in range(20000)))
time.sleep(5)
`,
      ]);
      lines(child);
      const syn = await sink.waitFor(
        (f) => parseIpv4(f.frame)?.proto === 6 && f.frame[14 + 20 + 13] === TCP_SYN,
        10_000,
        'SYN',
      );
      const sv = new DataView(syn.frame.buffer, syn.frame.byteOffset);
      const kport = sv.getUint16(14 + 20);
      const kseq = sv.getUint32(14 + 20 + 4);
      tap.transmit(
        tcpFrame(GUEST_IP, KERNEL_IP, 6001, kport, 5000, kseq + 1, TCP_SYN | TCP_ACK, new Uint8Array(0)),
        0,
        null,
      );
      const gso = await sink.waitFor((f) => f.offload?.gsoType === 1, 10_000, 'a GSO TCPv4 frame');
      const off = gso.offload as NonNullable<typeof gso.offload>;
      const p = parseIpv4(gso.frame);
      expect(p?.proto).toBe(6);
      expect(off.flags & 1).toBe(1); // NEEDS_CSUM
      expect(off.csumStart).toBe(34);
      expect(off.csumOffset).toBe(16);
      expect(off.hdrLen).toBeGreaterThanOrEqual(54);
      expect(off.gsoSize).toBe(536); // no MSS option in our SYN-ACK: the RFC 1122 default
      expect(gso.frame.length - 54).toBeGreaterThan(off.gsoSize);
      // Every received payload byte is the sender's pattern at its sequence offset.
      const seq = new DataView(gso.frame.buffer, gso.frame.byteOffset).getUint32(14 + 20 + 4);
      const data = gso.frame.subarray(54);
      const start = seq - (kseq + 1);
      expect(data.every((b, i) => b === (((start + i) * 3) & 0xff))).toBe(true);
    });

    it('splits received flows across the two queue pairs of a multiqueue tap, and follows detach/attach', async () => {
      const { ns, tap, sink } = fixture({ queues: 2 });
      expect(tap.capabilities.queuePairs).toBe(2);
      expect(tap.fds).toHaveLength(2);
      const ports = Array.from({ length: 32 }, (_, i) => 8000 + i).join(',');
      ns.exec('python3', ['-c', PY_UDP_SEND, GUEST_IP, ports, '64', '64']);
      await waitUntil(
        () => sink.frames.filter((f) => parseIpv4(f.frame)?.proto === 17).length === 64,
        10_000,
        '64 UDP frames',
      );
      const perQueue = [0, 0];
      for (const f of sink.frames)
        if (parseIpv4(f.frame)?.proto === 17) perQueue[f.queuePair] = (perQueue[f.queuePair] ?? 0) + 1;
      expect(perQueue[0]).toBeGreaterThan(0);
      expect(perQueue[1]).toBeGreaterThan(0);

      // Both queues transmit.
      expect(tap.transmit(icmpEcho(GUEST_IP, KERNEL_IP, 1, 1, new Uint8Array(8)), 1, null)).toBe('sent');
      await sink.waitFor((f) => parseIpv4(f.frame)?.proto === 1);

      tap.setQueuePairEnabled(1, false);
      expect(tap.stats().ioctlErrors).toBe(0);
      expect(tap.transmit(icmpEcho(GUEST_IP, KERNEL_IP, 1, 2, new Uint8Array(8)), 1, null)).toBe('dropped');
      sink.frames.length = 0;
      ns.exec('python3', ['-c', PY_UDP_SEND, GUEST_IP, ports, '64', '64']);
      await waitUntil(
        () => sink.frames.filter((f) => parseIpv4(f.frame)?.proto === 17).length === 64,
        10_000,
        '64 UDP frames on queue 0',
      );
      expect(sink.frames.every((f) => f.queuePair === 0)).toBe(true);

      tap.setQueuePairEnabled(1, true);
      expect(tap.stats().ioctlErrors).toBe(0);
      expect(tap.transmit(icmpEcho(GUEST_IP, KERNEL_IP, 1, 3, new Uint8Array(8)), 1, null)).toBe('sent');
      await sink.waitFor((f) => parseIpv4(f.frame)?.proto === 1 && f.frame[14 + 20 + 7] === 3);
    });

    it('holds frames in the kernel while a queue pair is paused and delivers them on resume', async () => {
      const { tap, sink } = fixture();
      tap.pause(0);
      for (let seq = 1; seq <= 5; seq++)
        tap.transmit(icmpEcho(GUEST_IP, KERNEL_IP, 9, seq, new Uint8Array(8)), 0, null);
      // The replies are queued in the tap; give the kernel time to produce them, then check none arrived.
      await new Promise((r) => setTimeout(r, 200));
      expect(sink.frames.filter((f) => parseIpv4(f.frame)?.proto === 1)).toHaveLength(0);
      tap.resume(0);
      await waitUntil(
        () => sink.frames.filter((f) => parseIpv4(f.frame)?.proto === 1).length === 5,
        10_000,
        '5 echo replies',
      );
      const seqs = sink.frames
        .filter((f) => parseIpv4(f.frame)?.proto === 1)
        .map((f) => f.frame[14 + 20 + 7]);
      expect(seqs).toEqual([1, 2, 3, 4, 5]);
    });

    for (const batchRx of [false, true])
      it(`${batchRx ? 'with batched reads, a pause from inside receive takes effect after the batch being delivered' : 'without batched reads, stops reading as soon as the sink pauses from inside receive'} (backpressure), nothing lost, in order after resume`, async () => {
        const { tap, sink } = fixture({ batchRx });
        let budget = 3;
        sink.onReceive = (r) => {
          if (parseIpv4(r.frame)?.proto === 1 && --budget === 0) tap.pause(0);
        };
        tap.pause(0);
        for (let seq = 1; seq <= 40; seq++)
          tap.transmit(icmpEcho(GUEST_IP, KERNEL_IP, 11, seq, new Uint8Array(8)), 0, null);
        await new Promise((r) => setTimeout(r, 200)); // the replies are now queued in the tap
        const echoes = () =>
          sink.frames.filter((f) => parseIpv4(f.frame)?.proto === 1).map((f) => f.frame[14 + 20 + 7]);
        tap.resume(0);
        await waitUntil(() => echoes().length >= 3, 10_000, '3 replies');
        await new Promise((r) => setTimeout(r, 100));
        // Batches after a wake-up: a single read, then 2, 4, …; the pause lands on the 3rd frame, at
        // the end of the 2-read batch. Without batches the 3rd frame is the last read.
        expect(echoes()).toEqual([1, 2, 3]);
        const seen = tap.stats().rxFrames;
        budget = 20;
        tap.resume(0);
        await waitUntil(() => echoes().length >= 23, 10_000, '23 replies');
        await new Promise((r) => setTimeout(r, 100));
        // The pause on the 23rd frame: without batches it stops there; with them the batch it came in
        // (reads 4..7, 8..15, 16..31: the 8th read of the third) is delivered whole.
        expect(echoes()).toEqual(Array.from({ length: batchRx ? 31 : 23 }, (_, i) => i + 1));
        expect(tap.stats().rxFrames - seen).toBe(batchRx ? 28 : 20);
        expect(tap.stats().rxBatches > 0).toBe(batchRx);
        budget = 100;
        tap.resume(0);
        await waitUntil(() => echoes().length === 40, 10_000, '40 replies');
        expect(echoes()).toEqual(Array.from({ length: 40 }, (_, i) => i + 1));
      });

    it('works with a 20-byte vnet header (hash report layout) and a plain tap without a header', async () => {
      const a = fixture();
      a.tap.setVnetHeaderSize(20);
      expect(a.tap.vnetHeaderSize).toBe(20);
      a.tap.setOffloads({
        csum: true,
        tso4: false,
        tso6: false,
        ecn: false,
        ufo: false,
        uso4: false,
        uso6: false,
      });
      a.tap.transmit(udpFrame(GUEST_IP, KERNEL_IP, 40003, 9, new Uint8Array(10), { partial: true }), 0, {
        ...emptyOffload(),
        flags: 1,
        csumStart: 34,
        csumOffset: 6,
      });
      a.tap.transmit(icmpEcho(GUEST_IP, KERNEL_IP, 2, 1, new Uint8Array(8)), 0, null);
      const r = await a.sink.waitFor((f) => parseIpv4(f.frame)?.proto === 1);
      expect(r.frame.subarray(0, 6)).toEqual(mac(GUEST_MAC));
      expect(l4ChecksumOk(r.frame)).toBe(true);

      const b = fixture({ vnetHeader: false });
      expect(b.tap.capabilities.vnetHeader).toBe(false);
      b.tap.setVnetHeaderSize(12); // the device calls it whatever the backend: a no-op without IFF_VNET_HDR
      expect(b.tap.vnetHeaderSize).toBe(0);
      a.tap.setVnetHeaderSize(13);
      expect(a.tap.vnetHeaderSize).toBe(20);
      expect(a.tap.stats().ioctlErrors).toBe(1);
      expect(a.tap.lastError?.message).toMatch(/got 13/);
      expect(Object.values(b.tap.capabilities.offloads).every((v) => v === false)).toBe(true);
      b.tap.transmit(icmpEcho(GUEST_IP, KERNEL_IP, 3, 1, new Uint8Array(8)), 0, null);
      const rb = await b.sink.waitFor((f) => parseIpv4(f.frame)?.proto === 1);
      expect(rb.offload).toBeNull();
      expect(rb.frame.subarray(0, 6)).toEqual(mac(GUEST_MAC));
    });
  },
);
