/**
 * lib/host/link-monitor.ts: rtnetlink layouts (pure), and the host-side link of a real tap in a namespace the
 * test creates (root only): `ip link set TAP down|up` and `carrier off|on` reach the sink, the device's
 * own TUNSETCARRIER is not reported back, a tap moved to another namespace is followed, nothing leaks.
 */
import { readdirSync } from 'node:fs';
import fc from 'fast-check';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { BackendError } from '../../lib/errors.js';
import {
  getLinkRequest,
  hostLinkUp,
  IFF_LOWER_UP,
  IFF_RUNNING,
  IFF_UP,
  type LinkMessage,
  LinkMonitor,
  parseLinkMessages,
  RTM_DELLINK,
  RTM_GETLINK,
  RTM_NEWLINK,
  TapLinkWatch,
} from '../../lib/host/link-monitor.js';
import type { BackendSink } from '../../lib/net/backend.js';
import { cleanupNamespaces, NetNamespace, uniqueName } from '../../lib/host/netns.js';
import { TapBackend } from '../../lib/tap/tap-backend.js';
import { type TapFixture, tapFixture, unavailable } from './fixture.test-support.js';
import { CollectingSink, waitUntil } from './frames.test-support.js';

/** An RTM_NEWLINK/DELLINK as the kernel lays it out: nlmsghdr, ifinfomsg, IFLA_MTU, IFLA_IFNAME. */
function linkMsg(type: number, ifindex: number, flags: number, name: string): Uint8Array {
  const nameLen = 4 + name.length + 1;
  const len = 16 + 16 + 8 + ((nameLen + 3) & ~3);
  const b = new Uint8Array(len);
  const v = new DataView(b.buffer);
  v.setUint32(0, len, true);
  v.setUint16(4, type, true);
  v.setInt32(16 + 4, ifindex, true);
  v.setUint32(16 + 8, flags, true);
  v.setUint32(16 + 12, 0xffffffff, true);
  v.setUint16(32, 8, true); // IFLA_MTU
  v.setUint16(34, 4, true);
  v.setUint32(36, 1500, true);
  v.setUint16(40, nameLen, true);
  v.setUint16(42, 3, true); // IFLA_IFNAME
  b.set(new TextEncoder().encode(name), 44);
  return b;
}

function parseAll(b: Uint8Array, len = b.length): LinkMessage[] {
  const out: LinkMessage[] = [];
  parseLinkMessages(b, len, (m) => out.push(m));
  return out;
}

describe('rtnetlink link messages', () => {
  it('parses RTM_NEWLINK flags and name, RTM_DELLINK, and error replies', () => {
    const a = linkMsg(RTM_NEWLINK, 7, IFF_UP | IFF_RUNNING | IFF_LOWER_UP | 0x1000, 'vt0');
    const d = linkMsg(RTM_DELLINK, 7, 0, 'vt0');
    const err = new Uint8Array(36);
    new DataView(err.buffer).setUint32(0, 36, true);
    new DataView(err.buffer).setUint16(4, 2, true); // NLMSG_ERROR
    new DataView(err.buffer).setInt32(16, -19, true); // -ENODEV
    const all = new Uint8Array(a.length + d.length + err.length);
    all.set(a, 0);
    all.set(d, a.length);
    all.set(err, a.length + d.length);
    expect(parseAll(all)).toEqual([
      {
        kind: 'link',
        state: {
          ifindex: 7,
          name: 'vt0',
          flags: IFF_UP | IFF_RUNNING | IFF_LOWER_UP | 0x1000,
          adminUp: true,
          lowerUp: true,
          running: true,
        },
      },
      { kind: 'removed', ifindex: 7, name: 'vt0' },
      { kind: 'error', errno: 19 },
    ]);
    // Admin down: no LOWER_UP, no RUNNING.
    expect(parseAll(linkMsg(RTM_NEWLINK, 3, 0x1002, 'x'))).toEqual([
      {
        kind: 'link',
        state: { ifindex: 3, name: 'x', flags: 0x1002, adminUp: false, lowerUp: false, running: false },
      },
    ]);
  });

  it('stops at a truncated message and never reads past len', () => {
    const a = linkMsg(RTM_NEWLINK, 7, IFF_UP, 'abc');
    expect(parseAll(a, a.length - 1)).toEqual([]);
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), fc.nat(220), (bytes, cut) => {
        const out: LinkMessage[] = [];
        expect(() => parseLinkMessages(bytes, Math.min(cut, bytes.length), (m) => out.push(m))).not.toThrow();
        return out.length <= 12;
      }),
    );
  });

  it('lays out RTM_GETLINK by name and by index', () => {
    const byName = getLinkRequest(5, 0, 'vt0');
    expect([...byName]).toEqual([
      40,
      0,
      0,
      0,
      RTM_GETLINK,
      0,
      1,
      0,
      5,
      0,
      0,
      0,
      0,
      0,
      0,
      0, // nlmsghdr: len 40, GETLINK, REQUEST, seq 5
      0,
      0,
      0,
      0,
      0,
      0,
      0,
      0,
      0,
      0,
      0,
      0,
      0,
      0,
      0,
      0, // ifinfomsg: any family, index 0
      8,
      0,
      3,
      0,
      0x76,
      0x74,
      0x30,
      0, // IFLA_IFNAME "vt0\0"
    ]);
    const byIndex = getLinkRequest(6, 42, '');
    expect(byIndex.length).toBe(32);
    expect(new DataView(byIndex.buffer).getInt32(20, true)).toBe(42);
  });

  it('host link: admin up with carrier, or with a carrier the device itself took away', () => {
    const t = [true, false];
    const table = t.flatMap((adminUp) =>
      t.flatMap((lowerUp) =>
        t.map((carrierSet) => [adminUp, lowerUp, carrierSet, hostLinkUp({ adminUp, lowerUp }, carrierSet)]),
      ),
    );
    expect(table).toEqual([
      [true, true, true, true],
      [true, true, false, true],
      [true, false, true, false], // the host turned the carrier off
      [true, false, false, true], // our own TUNSETCARRIER off
      [false, true, true, false],
      [false, true, false, false],
      [false, false, true, false],
      [false, false, false, false],
    ]);
  });
});

const fdCount = () => readdirSync('/proc/self/fd').length;

describe.skipIf(unavailable !== null)('host link of a real tap', () => {
  const fixtures: TapFixture[] = [];
  const extra: { close(): void }[] = [];
  const fixture = (...args: Parameters<typeof tapFixture>) => {
    const f = tapFixture(...args);
    fixtures.push(f);
    return f;
  };
  afterEach(() => {
    for (const x of extra.splice(0)) x.close();
    for (const f of fixtures.splice(0)) f.dispose();
  });
  afterAll(() => cleanupNamespaces());

  it('LinkMonitor reads the state at open, reports flag changes, and throws for a missing interface', async () => {
    const fx = fixture({ watchLink: false });
    const seen: [boolean, boolean][] = [];
    const watch = TapLinkWatch.start(fx.tap.fds[0] as number, () => {});
    extra.push(watch);
    const mon = watch.monitor as LinkMonitor;
    expect(mon.state.name).toBe(fx.tap.name);
    expect([mon.state.adminUp, mon.state.lowerUp]).toEqual([true, true]);
    expect(mon.state.ifindex).toBeGreaterThan(0);
    expect(Number(fx.ns.exec('cat', [`/sys/class/net/${fx.tap.name}/ifindex`]).trim())).toBe(
      mon.state.ifindex,
    );
    // A second monitor on the same interface, through the generic API, in our own namespace: absent here.
    expect(() => LinkMonitor.open({ name: fx.tap.name, onChange: () => {} })).toThrow(BackendError);
    // Changes: watch.monitor's onChange feeds TapLinkWatch; observe the monitor's counters and state.
    fx.ns.ip('link', 'set', 'dev', fx.tap.name, 'down');
    await waitUntil(() => !mon.state.adminUp, 5000, 'admin down seen');
    seen.push([mon.state.adminUp, mon.state.lowerUp]);
    fx.ns.ip('link', 'set', 'dev', fx.tap.name, 'up');
    await waitUntil(() => mon.state.adminUp && mon.state.lowerUp, 5000, 'admin up seen');
    seen.push([mon.state.adminUp, mon.state.lowerUp]);
    expect(seen).toEqual([
      [false, false],
      [true, true],
    ]);
    expect(mon.stats().changes).toBeGreaterThanOrEqual(1);
  });

  it('TapBackend reports ip link set down/up and carrier off/on to the sink, each once', async () => {
    const fx = fixture();
    const name = fx.tap.name;
    fx.ns.ip('link', 'set', 'dev', name, 'down');
    await waitUntil(() => fx.sink.links.length === 1, 5000, 'link down reported');
    expect(fx.sink.links).toEqual([false]);
    fx.ns.ip('link', 'set', 'dev', name, 'up');
    await waitUntil(() => fx.sink.links.length === 2, 5000, 'link up reported');
    fx.ns.ip('link', 'set', 'dev', name, 'carrier', 'off');
    await waitUntil(() => fx.sink.links.length === 3, 5000, 'carrier off reported');
    fx.ns.ip('link', 'set', 'dev', name, 'carrier', 'on');
    await waitUntil(() => fx.sink.links.length === 4, 5000, 'carrier on reported');
    expect(fx.sink.links).toEqual([false, true, false, true]);
    // A change without a flag change (MTU) reports nothing; the next report is the next host change.
    fx.ns.ip('link', 'set', 'dev', name, 'mtu', '1400');
    fx.ns.ip('link', 'set', 'dev', name, 'down');
    await waitUntil(() => fx.sink.links.length === 5, 5000, 'down again');
    expect(fx.sink.links).toEqual([false, true, false, true, false]);
    expect(fx.tap.lastError).toBeNull();
  });

  it('a device that mirrors its link into TUNSETCARRIER: no feedback loop, no flapping, carrier restored', async () => {
    const fx = fixture({}, false);
    const name = fx.tap.name;
    const links: boolean[] = [];
    // What VirtioNet does: linkChanged → setLink → backend.setCarrier(up).
    const sink: BackendSink = {
      receive: () => {},
      linkChanged: (up) => {
        links.push(up);
        fx.tap.setCarrier(up);
      },
    };
    fx.tap.attach(sink);
    const show = () => fx.ns.ip('link', 'show', 'dev', name);
    fx.ns.ip('link', 'set', 'dev', name, 'down');
    await waitUntil(() => links.length === 1, 5000, 'down');
    fx.ns.ip('link', 'set', 'dev', name, 'up');
    await waitUntil(() => links.length === 2, 5000, 'up');
    // Let any echo arrive: a later host change must be the next thing reported.
    fx.ns.ip('link', 'set', 'dev', name, 'carrier', 'off');
    await waitUntil(() => links.length === 3, 5000, 'carrier off');
    fx.ns.ip('link', 'set', 'dev', name, 'carrier', 'on');
    await waitUntil(() => links.length === 4, 5000, 'carrier on');
    expect(links).toEqual([false, true, false, true]);
    expect(show()).toMatch(/LOWER_UP/);
    // The device dropping its own carrier (VMM setLinkUp(false)) is not reported back as the host.
    fx.tap.setCarrier(false);
    expect(show()).toMatch(/NO-CARRIER/);
    fx.tap.setCarrier(true);
    fx.ns.ip('link', 'set', 'dev', name, 'down'); // a barrier: the next report must be this one
    await waitUntil(() => links.length === 5, 5000, 'down after own carrier flips');
    expect(links).toEqual([false, true, false, true, false]);
    expect(fx.tap.stats().ioctlErrors).toBe(0);
  });

  it('follows a tap moved to another namespace, and closes its socket with the tap', async () => {
    const fds0 = fdCount();
    const fx = fixture();
    const ns2 = NetNamespace.create('vt');
    extra.push({ close: () => ns2.delete() });
    const name = fx.tap.name;
    fx.ns.ip('link', 'set', 'dev', name, 'netns', ns2.name);
    // Give the watch a turn to re-open in ns2 (the move itself reports nothing: the tap stays down
    // there, administratively, so the first report is "down").
    await waitUntil(() => fx.sink.links.length === 1, 5000, 'down after the move');
    expect(fx.sink.links).toEqual([false]);
    ns2.ip('link', 'set', 'dev', name, 'up');
    await waitUntil(() => fx.sink.links.length === 2, 5000, 'up in the new namespace');
    expect(fx.sink.links).toEqual([false, true]);
    fixtures.splice(fixtures.indexOf(fx), 1);
    fx.dispose();
    expect(fdCount()).toBe(fds0);
  });

  it('a deleted tap stops the watch quietly (the tap itself reports the link down once)', async () => {
    const fx = fixture();
    fx.ns.ip('link', 'del', 'dev', fx.tap.name);
    await waitUntil(() => fx.tap.isClosed || fx.sink.links.length > 0, 5000, 'tap gone');
    // Whatever saw it first, the device hears "down" and nothing else.
    await new Promise((r) => setTimeout(r, 100));
    expect(fx.sink.links.every((l) => l === false)).toBe(true);
    expect(fx.sink.links.length).toBeGreaterThanOrEqual(1);
  });

  it('watchLink: false leaves the host link unreported (as before)', async () => {
    const tap = TapBackend.open({ name: uniqueName('vt'), watchLink: false });
    extra.push(tap);
    const sink = new CollectingSink();
    tap.attach(sink);
    const ns = NetNamespace.create('vt');
    extra.push({ close: () => ns.delete() });
    ns.adopt(tap.name);
    ns.ip('link', 'set', 'dev', tap.name, 'up');
    ns.ip('link', 'set', 'dev', tap.name, 'down');
    await new Promise((r) => setTimeout(r, 100));
    expect(sink.links).toEqual([]);
  });
});
