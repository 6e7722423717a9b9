/**
 * Link state between the guest, the device and a real tap (root and /dev/net/tun only).
 *
 * What "carrier" means here: the device's link (VIRTIO_NET_S_LINK_UP as the guest sees it) is the
 * virtual cable. The VMM sets it with `dev.setLinkUp`; the device mirrors it to the tap's kernel-side
 * carrier (NetBackend.setCarrier → TUNSETCARRIER), so the host sees NO-CARRIER while the cable is out.
 * A tap that vanishes reports link down to the device, which the guest sees. A tap set administratively
 * down (or losing its carrier) on the host is seen through the TapBackend's netlink watch
 * (lib/host/link-monitor.ts) and reaches the guest as link down, then up again.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { lines, PY_UDP_RECV, PY_UDP_SEND } from '../tap/fixture.test-support.js';
import { icmpEcho, parseIpv4, udpFrame } from '../tap/frames.test-support.js';
import {
  type DeviceFixture,
  deviceFixture,
  GUEST_IP,
  GUEST_MAC,
  type GuestFrame,
  KERNEL_IP,
  unavailable,
} from './fixture.test-support.js';

const enc = (s: string) => new TextEncoder().encode(s);
const NEEDS_RESET = 0x40;

interface Stats {
  status: number;
  linkUp: boolean;
  txPackets: number;
  txDropped: number;
  rxPackets: number;
  guestErrors: number;
}

const isEchoReply = (seq: number) => (f: GuestFrame) => {
  const p = parseIpv4(f.frame);
  return !!p && p.proto === 1 && p.l4[0] === 0 && ((p.l4[6]! << 8) | p.l4[7]!) === seq;
};

describe.skipIf(unavailable !== null)('virtio-net device on a real tap: link and carrier', () => {
  const fixtures: DeviceFixture[] = [];
  const fixture = (o = {}) => {
    const f = deviceFixture(o);
    fixtures.push(f);
    return f;
  };
  afterEach(() => {
    for (const f of fixtures.splice(0)) f.dispose();
  });

  it('dev.setLinkUp(false/true): the guest sees the status bit with a config interrupt, the kernel sees the carrier', async () => {
    const fx = fixture();
    const { dev, drv, irq, ns, tap } = fx;
    const stats = () => dev.stats() as unknown as Stats;
    const show = () => ns.ip('link', 'show', 'dev', tap.name);
    const configIrqs = () => irq.count(0);
    expect(drv.linkUp()).toBe(true);
    expect(show()).toMatch(/LOWER_UP/);

    const before = configIrqs();
    dev.setLinkUp(false);
    expect(drv.linkUp()).toBe(false);
    expect(configIrqs()).toBe(before + 1);
    expect(show()).toMatch(/NO-CARRIER/);
    expect(stats().linkUp).toBe(false);

    // Cable out: guest frames are counted drops, nothing reaches the kernel.
    const kernelRx = fx.kernelStat('rx_packets');
    const dropped = stats().txDropped;
    drv.send(icmpEcho(GUEST_IP, KERNEL_IP, 9, 1, enc('while down')));
    expect(stats().txDropped).toBe(dropped + 1);
    expect(fx.kernelStat('rx_packets')).toBe(kernelRx);

    dev.setLinkUp(true);
    expect(drv.linkUp()).toBe(true);
    expect(configIrqs()).toBe(before + 2);
    expect(show()).toMatch(/LOWER_UP/);
    expect(show()).not.toMatch(/NO-CARRIER/);
    drv.send(icmpEcho(GUEST_IP, KERNEL_IP, 9, 2, enc('up again')));
    await fx.waitFor(isEchoReply(2), 5000, 'echo reply after link up');
    // Setting the same state again changes nothing (no interrupt storm).
    dev.setLinkUp(true);
    expect(configIrqs()).toBe(before + 2);
    expect(tap.stats().ioctlErrors).toBe(0);
  });

  it('the host sets the tap administratively down and up: the guest sees link down (transmits are counted drops), then up, and traffic resumes', async () => {
    const fx = fixture();
    const { dev, drv, ns, tap } = fx;
    const stats = () => dev.stats() as unknown as Stats;
    const configIrqs = fx.irq.count(0);
    ns.ip('link', 'set', 'dev', tap.name, 'down');
    await fx.until(() => !drv.linkUp(), 5000, 'guest sees link down');
    expect(fx.irq.count(0)).toBeGreaterThan(configIrqs); // a config interrupt told it
    const dropped = stats().txDropped;
    drv.send(icmpEcho(GUEST_IP, KERNEL_IP, 10, 1, enc('admin down')));
    expect(stats().txDropped).toBe(dropped + 1);
    // Not mistaken for a vanished tap (the kernel answers EIO to writes now, EBADFD once it is deleted).
    expect(tap.isClosed).toBe(false);

    ns.ip('link', 'set', 'dev', tap.name, 'up');
    await fx.until(() => drv.linkUp(), 5000, 'guest sees link up');
    // Link down flushed the kernel's neighbour table, permanent entries included.
    ns.ip('neigh', 'replace', GUEST_IP, 'lladdr', GUEST_MAC, 'dev', tap.name, 'nud', 'permanent');
    drv.send(icmpEcho(GUEST_IP, KERNEL_IP, 10, 2, enc('admin up')));
    await fx.waitFor(isEchoReply(2), 5000, 'echo reply after admin up');
    expect(stats().status & NEEDS_RESET).toBe(0);
  });

  it('the tap deleted under traffic: nothing throws, the guest sees link down, later frames are counted drops', async () => {
    const fx = fixture();
    const { dev, drv, irq, ns, tap } = fx;
    const stats = () => dev.stats() as unknown as Stats;
    const child = ns.spawn('python3', ['-c', PY_UDP_RECV, KERNEL_IP, '5560', '100000']);
    const out = lines(child);
    await out.waitFor(/^ready$/);
    // The kernel floods the guest while the guest sends; the tap goes away in the middle.
    const flood = ns.spawn('python3', ['-c', PY_UDP_SEND, GUEST_IP, '8000,8001,8002', '200', '20000']);
    const configBefore = irq.count(0);
    let sent = 0;
    await fx.until(
      () => {
        // Bursts of 20 with one kick: the tap writes each burst in one io_uring batch.
        for (let i = 0; i < 20; i++)
          drv.send(udpFrame(GUEST_IP, KERNEL_IP, 44000, 5560, enc(`n${sent++}`)), { kick: false });
        drv.kickTx();
        return stats().rxPackets > 50 && out.all.length > 20;
      },
      10_000,
      'traffic both ways',
    );

    ns.ip('link', 'del', 'dev', tap.name);
    await fx.until(
      () => {
        for (let i = 0; i < 20; i++)
          drv.send(udpFrame(GUEST_IP, KERNEL_IP, 44000, 5560, enc(`n${sent++}`)), { kick: false });
        drv.kickTx();
        return !drv.linkUp();
      },
      10_000,
      'link down seen by the guest',
    );
    flood.kill('SIGKILL');
    expect(irq.count(0)).toBeGreaterThan(configBefore);
    expect(tap.isClosed).toBe(true);
    expect(tap.stats().txBatches).toBeGreaterThan(0);

    // The device stays consistent: no NEEDS_RESET, no guest error, every later frame a counted drop.
    const s1 = stats();
    expect(s1.status & NEEDS_RESET).toBe(0);
    expect(s1.guestErrors).toBe(0);
    expect(s1.linkUp).toBe(false);
    for (let i = 0; i < 10; i++) drv.send(udpFrame(GUEST_IP, KERNEL_IP, 44000, 5560, enc('after')));
    const s2 = stats();
    expect(s2.txDropped).toBe(s1.txDropped + 10);
    expect(s2.txPackets).toBe(s1.txPackets);
    expect(drv.reclaimTx(0)).toBeGreaterThanOrEqual(0);
    expect(fx.poll()).toBeGreaterThanOrEqual(0);
    // The host bringing the link "up" again cannot revive a deleted tap: the guest is told, frames still drop.
    dev.setLinkUp(true);
    drv.send(udpFrame(GUEST_IP, KERNEL_IP, 44000, 5560, enc('into the void')));
    expect(stats().txDropped).toBe(s2.txDropped + 1);
    expect(tap.stats().txDroppedDown).toBeGreaterThan(0);
    expect(() => dev.close()).not.toThrow();
  });
});
