/**
 * TapBackend lifecycle against a real tap: capabilities, carrier, adopt, errors, the tap deleted under
 * traffic, close. Each test creates its own namespace and tap and removes both.
 */
import fc from 'fast-check';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { BackendError, OptionsError } from '../../lib/errors.js';
import { libc, O_CLOEXEC, O_RDWR } from '../../lib/host/libc.js';
import { emptyOffload } from '../../lib/net/backend.js';
import { cleanupNamespaces, uniqueName } from '../../lib/host/netns.js';
import { TapBackend } from '../../lib/tap/tap-backend.js';
import { IFF_NO_PI, IFF_TAP, IFF_VNET_HDR, TUNSETIFF, TUNSETVNETHDRSZ } from '../../lib/tap/tap-fd.js';
import { lines, PY_UDP_SEND, type TapFixture, tapFixture, unavailable } from './fixture.test-support.js';
import {
  arpRequest,
  GUEST_IP,
  GUEST_MAC,
  icmpEcho,
  ipv4,
  KERNEL_IP,
  mac,
  parseIpv4,
  waitUntil,
} from './frames.test-support.js';

const fixtures: TapFixture[] = [];
const extra: TapBackend[] = [];
function fixture(...args: Parameters<typeof tapFixture>): TapFixture {
  const f = tapFixture(...args);
  fixtures.push(f);
  return f;
}
afterEach(() => {
  for (const t of extra.splice(0)) t.close();
  for (const f of fixtures.splice(0)) f.dispose();
});
afterAll(() => cleanupNamespaces());

const ALL_OFF = { csum: false, tso4: false, tso6: false, ecn: false, ufo: false, uso4: false, uso6: false };

describe.skipIf(unavailable !== null)(
  `TapBackend lifecycle${unavailable ? ` (skipped: ${unavailable})` : ''}`,
  () => {
    it('reports only offloads the kernel accepts: each one enables without an ioctl error', () => {
      const { tap } = fixture();
      expect(tap.capabilities.vnetHeader).toBe(true);
      expect(tap.features & IFF_VNET_HDR).toBe(IFF_VNET_HDR);
      const offloads = tap.capabilities.offloads;
      for (const [key, can] of Object.entries(offloads)) {
        if (!can) continue;
        tap.setOffloads({
          ...ALL_OFF,
          csum: true,
          tso4: key === 'ecn',
          [key]: true,
          ...(key.startsWith('uso') ? { uso4: true, uso6: true } : {}),
        });
      }
      expect(tap.stats().ioctlErrors).toBe(0);
      expect(tap.lastError).toBeNull();
    });

    it('zeroes the header bytes past struct virtio_net_hdr on rx with a 20-byte header (kernel fact)', async () => {
      // Raw fd, no backend: the extra bytes (num_buffers, hash) never reach NetOffload, but a device reading
      // the header straight into guest memory would depend on this.
      const c = libc();
      const { ns } = fixture({}, false);
      const name = uniqueName('vr');
      const fd = c.open('/dev/net/tun', O_RDWR | O_CLOEXEC | 0o4000, 0);
      const ifr = new Uint8Array(40);
      Buffer.from(ifr.buffer).write(name, 0);
      new DataView(ifr.buffer).setUint16(16, IFF_TAP | IFF_NO_PI | IFF_VNET_HDR, true);
      try {
        expect(c.ioctlPtr(fd, TUNSETIFF, ifr)).toBe(0);
        expect(c.ioctlPtr(fd, TUNSETVNETHDRSZ, Int32Array.of(20))).toBe(0);
        ns.adopt(name);
        ns.exec('sysctl', ['-q', '-w', `net.ipv6.conf.${name}.disable_ipv6=1`]);
        ns.configure(name, '10.78.0.1/24');
        ns.ip('neigh', 'replace', '10.78.0.2', 'lladdr', GUEST_MAC, 'dev', name, 'nud', 'permanent');
        ns.exec('python3', ['-c', PY_UDP_SEND, '10.78.0.2', '9', '10', '1']);
        const buf = new Uint8Array(2048).fill(0xaa);
        const n = await waitUntil(() => {
          const r = c.read(fd, buf, buf.length);
          return r > 0 ? r : undefined;
        });
        expect(n).toBe(20 + 14 + 20 + 8 + 10);
        expect(Array.from(buf.subarray(10, 20))).toEqual(new Array(10).fill(0));
      } finally {
        c.close(fd);
      }
    });

    it('sets the kernel-side carrier off and on (TUNSETCARRIER), as `ip link` shows', () => {
      const { ns, tap } = fixture();
      const show = () => ns.ip('link', 'show', 'dev', tap.name);
      expect(show()).toMatch(/LOWER_UP/);
      tap.setCarrier(false);
      expect(show()).toMatch(/NO-CARRIER/);
      expect(show()).not.toMatch(/LOWER_UP/);
      tap.setCarrier(true);
      expect(show()).toMatch(/LOWER_UP/);
      expect(show()).not.toMatch(/NO-CARRIER/);
    });

    it('opens straight into a namespace with the netns option; the fd keeps carrying traffic', async () => {
      const { ns } = fixture({}, false);
      const tap = TapBackend.open({ name: uniqueName('vn'), netns: ns.name });
      extra.push(tap);
      expect(ns.ip('-o', 'link', 'show', 'dev', tap.name)).toContain(tap.name);
      expect(() => TapBackend.open({ name: uniqueName('vn'), netns: `${ns.name}-missing` })).toThrow(
        /cannot move/,
      );
      ns.exec('sysctl', ['-q', '-w', `net.ipv6.conf.${tap.name}.disable_ipv6=1`]);
      ns.configure(tap.name, '10.80.0.1/24');
      const sink = new (await import('./frames.test-support.js')).CollectingSink();
      tap.attach(sink);
      tap.transmit(arpRequest(mac(GUEST_MAC), ipv4('10.80.0.2'), ipv4('10.80.0.1')), 0, null);
      await sink.waitFor((f) => f.frame[12] === 0x08 && f.frame[13] === 0x06 && f.frame[21] === 2);
    });

    it('adopts an fd the VMM opened: reads name and header mode back, and carries traffic', async () => {
      const c = libc();
      const name = uniqueName('va');
      const fd = c.open('/dev/net/tun', O_RDWR | O_CLOEXEC, 0); // blocking: adopt must make it non-blocking
      const ifr = new Uint8Array(40);
      Buffer.from(ifr.buffer).write(name, 0);
      new DataView(ifr.buffer).setUint16(16, IFF_TAP | IFF_NO_PI | IFF_VNET_HDR, true);
      expect(c.ioctlPtr(fd, TUNSETIFF, ifr)).toBe(0);
      expect(() => TapBackend.adopt([fd], { vnetHeader: false })).toThrow(OptionsError);
      const tap = TapBackend.adopt([fd]);
      extra.push(tap);
      expect(tap.name).toBe(name);
      expect(tap.capabilities.vnetHeader).toBe(true);
      expect(tap.vnetHeaderSize).toBe(10);
      const { ns } = fixture({}, false);
      ns.adopt(name);
      ns.exec('sysctl', ['-q', '-w', `net.ipv6.conf.${name}.disable_ipv6=1`]);
      ns.configure(name, `${KERNEL_IP}/24`);
      const sink = new (await import('./frames.test-support.js')).CollectingSink();
      tap.attach(sink);
      expect(tap.transmit(arpRequest(mac(GUEST_MAC), ipv4(GUEST_IP), ipv4(KERNEL_IP)), 0, null)).toBe('sent');
      const r = await sink.waitFor((f) => f.frame[12] === 0x08 && f.frame[13] === 0x06 && f.frame[21] === 2);
      expect(Array.from(r.frame.subarray(38, 42))).toEqual(Array.from(ipv4(GUEST_IP)));
      tap.close();
      expect(tap.fds).toEqual([-1]);
    });

    it('maps TUNSETIFF on a tap already in use to a BackendError with EBUSY', () => {
      const a = TapBackend.open({ name: uniqueName('vb') });
      extra.push(a);
      let err: unknown;
      try {
        extra.push(TapBackend.open({ name: a.name }));
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(BackendError);
      expect((err as BackendError).errno).toBe(16);
      expect((err as BackendError).code).toBe('EBUSY');
      expect((err as BackendError).message).toMatch(/TUNSETIFF.*in use/);
      // No name: the kernel picks tapN (created down, never configured, closed at once).
      const anon = TapBackend.open();
      extra.push(anon);
      expect(anon.name).toMatch(/^tap\d+$/);
      anon.close();
      expect(() => TapBackend.open({ queues: 0 })).toThrow(OptionsError);
      expect(() => TapBackend.open({ name: 'x'.repeat(16) })).toThrow(OptionsError);
    });

    it('counts drops for a bad queue pair, an oversize frame and after close; close is idempotent', () => {
      const { tap } = fixture();
      const arp = arpRequest(mac(GUEST_MAC), ipv4(GUEST_IP), ipv4(KERNEL_IP));
      expect(tap.transmit(arp, 1, null)).toBe('dropped');
      expect(tap.transmit(arp, -1, null)).toBe('dropped');
      expect(tap.transmit(new Uint8Array(70_000), 0, null)).toBe('dropped');
      // A header the kernel refuses (GSO without a size) is a counted drop, not a throw.
      expect(tap.transmit(arp, 0, { ...emptyOffload(), gsoType: 1, gsoSize: 0, hdrLen: 54 })).toBe('dropped');
      expect(tap.stats()).toMatchObject({ txDropped: 4, txDroppedInvalid: 4, txFrames: 0 });
      tap.close();
      tap.close();
      expect(tap.transmit(arp, 0, null)).toBe('dropped');
      expect(tap.stats()).toMatchObject({ txDropped: 5, txDroppedDown: 1 });
      expect(tap.isClosed).toBe(true);
    });

    it('property: any guest header and frame length gives sent or a counted drop, never a throw', () => {
      const { tap } = fixture();
      tap.setVnetHeaderSize(12);
      const u16 = fc.integer({ min: 0, max: 0xffff });
      const offload = fc.option(
        fc.record({
          flags: fc.integer({ min: 0, max: 0xff }),
          gsoType: fc.constantFrom(0, 1, 3, 4, 5, 0x81, 0x84, 2, 0x7f, 0xff),
          hdrLen: u16,
          gsoSize: u16,
          csumStart: u16,
          csumOffset: u16,
        }),
        { nil: null },
      );
      let calls = 0;
      fc.assert(
        fc.property(
          offload,
          fc.integer({ min: 0, max: 2000 }),
          fc.integer({ min: 0, max: 255 }),
          (off, len, fillByte) => {
            const frame = new Uint8Array(len).fill(fillByte);
            if (len >= 14) frame.set([0x02, 0, 0, 0, 0, 0x99, 0x02, 0, 0, 0, 0, 0x02, 0x08, 0x00]);
            calls++;
            expect(['sent', 'dropped']).toContain(tap.transmit(frame, 0, off));
          },
        ),
        { numRuns: 300 },
      );
      const s = tap.stats();
      expect(s.txFrames + s.txDropped).toBe(calls);
      expect(s.txDropped).toBe(s.txDroppedBusy + s.txDroppedInvalid + s.txDroppedDown);
      expect(s.txDroppedDown).toBe(0);
      expect(tap.isClosed).toBe(false);
    });

    it('serves two taps at once from the shared poller, each frame to its own sink', async () => {
      const a = fixture();
      const b = fixture();
      for (let seq = 1; seq <= 20; seq++) {
        a.tap.transmit(icmpEcho(GUEST_IP, KERNEL_IP, 0xa, seq, new Uint8Array(8)), 0, null);
        b.tap.transmit(icmpEcho(GUEST_IP, KERNEL_IP, 0xb, seq, new Uint8Array(8)), 0, null);
      }
      const ids = (f: TapFixture) =>
        f.sink.frames.filter((r) => parseIpv4(r.frame)?.proto === 1).map((r) => r.frame[14 + 20 + 5]);
      await waitUntil(() => ids(a).length === 20 && ids(b).length === 20, 10_000, '20 replies on each tap');
      expect(new Set(ids(a))).toEqual(new Set([0xa]));
      expect(new Set(ids(b))).toEqual(new Set([0xb]));
    });

    it('stays consistent when the tap is deleted under traffic: link down, drops counted, no throw', async () => {
      const { ns, tap, sink } = fixture({ queues: 2 });
      const sender = ns.spawn('python3', [
        '-c',
        PY_UDP_SEND,
        GUEST_IP,
        '7000,7001,7002,7003',
        '200',
        '2000000',
      ]);
      lines(sender);
      let sent = 0;
      const echo = icmpEcho(GUEST_IP, KERNEL_IP, 5, 1, new Uint8Array(32));
      const timer = setInterval(() => {
        for (let i = 0; i < 50; i++) if (tap.transmit(echo, i & 1, null) === 'sent') sent++;
      }, 1);
      try {
        await waitUntil(() => tap.stats().rxFrames > 200 && sent > 100, 15_000, 'traffic both ways');
        ns.ip('link', 'del', 'dev', tap.name);
        await waitUntil(() => sink.links.includes(false), 10_000, 'linkChanged(false)');
        const before = tap.stats();
        await new Promise((r) => setTimeout(r, 50));
        expect(tap.isClosed).toBe(true);
        expect(tap.transmit(echo, 0, null)).toBe('dropped');
        const after = tap.stats();
        expect(after.txDroppedDown).toBeGreaterThan(before.txDroppedDown);
        expect(after.rxFrames).toBe(before.rxFrames);
        expect(sink.links).toEqual([false]);
        expect(tap.fds).toEqual([-1, -1]);
        expect(parseIpv4(sink.frames[0]?.frame as Uint8Array)).not.toBeNull();
      } finally {
        clearInterval(timer);
        sender.kill('SIGKILL');
      }
      tap.close();
      expect(() => tap.setOffloads(ALL_OFF)).not.toThrow();
      expect(() => tap.setQueuePairEnabled(1, false)).not.toThrow();
    });
  },
);
