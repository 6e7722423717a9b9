/** The embedded switch on its own: ports with recording sinks, an in-memory uplink. */
import { describe, expect, it } from 'vitest';
import type { BackendSink, NetOffload } from '../../lib/net/backend.js';
import { MemoryBackend } from '../../lib/net/memory-backend.js';
import { parseMac } from '../virtio-net/rx-filter.js';
import { defaultVfInfo, parseVfPolicy, type VfInfo } from './policy.js';
import type { SwitchPort } from './port.js';
import { EmbeddedSwitch } from './switch.js';
import { TokenBucket } from './token-bucket.js';

const PF = '52:54:00:00:00:01';
const VF0 = '52:54:00:00:00:10';
const VF1 = '52:54:00:00:00:11';
const OUT = '02:00:00:00:00:99';
const BCAST = 'ff:ff:ff:ff:ff:ff';

interface Got {
  frame: Uint8Array;
  queuePair: number;
  offload: NetOffload | null;
}

/** A function behind a port: its MAC, a filter (own MAC + broadcast unless promiscuous), what it got. */
function attach(port: SwitchPort, mac: string, opts: { promisc?: boolean; multicast?: boolean } = {}) {
  const got: Got[] = [];
  const links: boolean[] = [];
  const ready: number[] = [];
  const own = parseMac(mac);
  port.owner = {
    mac: own,
    accepts: (b, o, l) => {
      if (l < 14) return false;
      if (opts.promisc) return true;
      if (b[o]! & 1) return b[o] === 0xff ? true : opts.multicast === true;
      return own.every((x, i) => b[o + i] === x);
    },
  };
  const sink: BackendSink = {
    receive: (frame, queuePair, offload) =>
      got.push({ frame: frame.slice(), queuePair, offload: offload && { ...offload } }),
    linkChanged: (up) => links.push(up),
    transmitReady: (q) => ready.push(q),
  };
  port.attach(sink);
  return { got, links, ready, own };
}

function frame(dst: string, src: string, payload = 46, etherType = 0x0800): Uint8Array {
  const f = new Uint8Array(14 + payload);
  f.set(parseMac(dst), 0);
  f.set(parseMac(src), 6);
  f[12] = etherType >> 8;
  f[13] = etherType & 0xff;
  for (let i = 14; i < f.length; i++) f[i] = i & 0xff;
  return f;
}

function tagged(dst: string, src: string, vid: number, pcp = 0): Uint8Array {
  const inner = frame(dst, src);
  const f = new Uint8Array(inner.length + 4);
  f.set(inner.subarray(0, 12), 0);
  f.set([0x81, 0x00, (pcp << 5) | (vid >> 8), vid & 0xff], 12);
  f.set(inner.subarray(12), 16);
  return f;
}

function setup(vfInfo: Partial<VfInfo>[] = [{}, {}], uplinkOpts = {}) {
  const uplink = new MemoryBackend({ queues: 2, receive: 'copy', ...uplinkOpts });
  const sent: Got[] = [];
  uplink.onFrame((f, q, o) => sent.push({ frame: f.slice(), queuePair: q, offload: o && { ...o } }));
  const sw = new EmbeddedSwitch(uplink);
  const pf = attach(sw.pf, PF);
  const vfs = vfInfo.map((p, i) => {
    const info = { ...defaultVfInfo(i === 0 ? VF0 : VF1), ...p };
    const port = sw.addVf(i, 1, info);
    return { port, ...attach(port, info.mac) };
  });
  return { uplink, sent, sw, pf, vfs };
}

describe('embedded switch', () => {
  it('passes straight through to the uplink while no VF is enabled', () => {
    const uplink = new MemoryBackend({ queues: 2, receive: 'copy' });
    const sent: number[] = [];
    uplink.onFrame((_f, q) => sent.push(q));
    const sw = new EmbeddedSwitch(uplink);
    const pf = attach(sw.pf, PF);
    expect(sw.passthrough).toBe(true);
    expect(sw.pf.capabilities.queuePairs).toBe(2);
    expect(sw.pf.transmit(frame(VF0, PF), 1, null)).toBe('sent');
    expect(sent).toEqual([1]);
    uplink.inject(frame(OUT, '02:00:00:00:00:01'), 1); // not the PF's MAC: the PF's device filters it
    expect(pf.got.map((g) => g.queuePair)).toEqual([1]);
    expect(sw.stats().uplink.txFrames).toBe(0); // no switching happened
  });

  it('unicast goes to the owner: VF↔VF, VF↔PF, from the uplink by MAC; unknown unicast to the uplink', () => {
    const { sw, pf, vfs, sent, uplink } = setup();
    const [a, b] = vfs as [(typeof vfs)[0], (typeof vfs)[0]];
    expect(a.port.transmit(frame(VF1, VF0), 0, null)).toBe('sent');
    expect(b.got).toHaveLength(1);
    expect(b.got[0]!.frame).toEqual(frame(VF1, VF0));
    expect(a.port.transmit(frame(PF, VF0), 0, null)).toBe('sent');
    expect(pf.got).toHaveLength(1);
    expect(sw.pf.transmit(frame(VF0, PF), 1, null)).toBe('sent');
    expect(a.got).toHaveLength(1);
    expect(a.got[0]!.queuePair).toBe(0); // the VF has one pair
    expect(b.port.transmit(frame(OUT, VF1), 0, null)).toBe('sent');
    expect(sent.map((s) => s.frame)).toEqual([frame(OUT, VF1)]);
    uplink.inject(frame(VF1, OUT), 1);
    expect(b.got).toHaveLength(2);
    const s = sw.stats();
    expect(s.vfs.map((v) => [v.index, v.txFrames, v.rxFrames])).toEqual([
      [0, 2, 1],
      [1, 1, 2],
    ]);
    expect(s.pf.txFrames).toBe(1);
    expect(s.pf.rxFrames).toBe(1);
    expect(s.uplink.rxFrames).toBe(1);
    expect(s.uplink.txFrames).toBe(1);
  });

  it('unknown unicast from the uplink: to the PF when its filter takes it, else counted', () => {
    const uplink = new MemoryBackend({ queues: 1, receive: 'copy' });
    const sw = new EmbeddedSwitch(uplink);
    const pf = attach(sw.pf, PF, { promisc: true });
    const vf = attach(sw.addVf(0, 1, defaultVfInfo(VF0)), VF0);
    uplink.inject(frame('02:00:00:00:00:77', OUT));
    expect(pf.got).toHaveLength(1);
    expect(vf.got).toHaveLength(0);
    const sw2 = new EmbeddedSwitch(new MemoryBackend({ queues: 1, receive: 'copy' }));
    const pf2 = attach(sw2.pf, PF);
    attach(sw2.addVf(0, 1, defaultVfInfo(VF0)), VF0);
    (sw2.uplink as MemoryBackend).inject(frame('02:00:00:00:00:77', OUT));
    expect(pf2.got).toHaveLength(0);
    expect(sw2.stats().uplink.dropNoOwner).toBe(1);
  });

  it('floods broadcast and multicast to every port whose filter accepts, and the uplink, never back', () => {
    const { sw, pf, vfs, sent } = setup();
    const [a, b] = vfs as [(typeof vfs)[0], (typeof vfs)[0]];
    a.port.transmit(frame(BCAST, VF0), 0, null);
    expect(a.got).toHaveLength(0);
    expect(b.got).toHaveLength(1);
    expect(pf.got).toHaveLength(1);
    expect(sent).toHaveLength(1);
    // Multicast: neither filter takes it (no multicast subscribed) → counted per port, still to the uplink.
    a.port.transmit(frame('01:00:5e:00:00:01', VF0), 0, null);
    expect(b.got).toHaveLength(1);
    expect(pf.got).toHaveLength(1);
    expect(sent).toHaveLength(2);
    expect(sw.stats().vfs[1]!.dropFilter).toBe(1);
    expect(sw.stats().pf.dropFilter).toBe(1);
    // From the uplink: to every function, not back to the uplink.
    (sw.uplink as MemoryBackend).inject(frame(BCAST, OUT));
    expect(a.got).toHaveLength(1);
    expect(b.got).toHaveLength(2);
    expect(sent).toHaveLength(2);
  });

  it('spoof check drops and counts frames from another source MAC; off lets them through', () => {
    const { sw, vfs } = setup([{}, { spoofCheck: false }]);
    const [a, b] = vfs as [(typeof vfs)[0], (typeof vfs)[0]];
    expect(a.port.transmit(frame(VF1, '02:66:66:66:66:66'), 0, null)).toBe('dropped');
    expect(b.got).toHaveLength(0);
    expect(sw.stats().vfs[0]!.dropSpoof).toBe(1);
    expect(b.port.transmit(frame(VF0, '02:66:66:66:66:66'), 0, null)).toBe('sent');
    expect(a.got).toHaveLength(1);
  });

  it('VST: tags the VF transmit with VLAN and priority, strips and filters its receive, moves offload offsets', () => {
    const { sw, vfs, sent, uplink, pf } = setup([{ vlan: 100, qos: 5 }, {}]);
    const [a, b] = vfs as [(typeof vfs)[0], (typeof vfs)[0]];
    const tso: NetOffload = {
      flags: 1,
      gsoType: 1,
      hdrLen: 54,
      gsoSize: 1448,
      csumStart: 34,
      csumOffset: 16,
    };
    a.port.transmit(frame(OUT, VF0), 0, tso);
    expect(sent[0]!.frame).toEqual(tagged(OUT, VF0, 100, 5));
    expect(sent[0]!.offload).toEqual({ ...tso, hdrLen: 58, csumStart: 38 });
    // A guest-tagged frame from a VST port is dropped.
    expect(a.port.transmit(tagged(OUT, VF0, 7), 0, null)).toBe('dropped');
    expect(sw.stats().vfs[0]!.dropVlan).toBe(1);
    // VF1 has no port VLAN: a trunk whose own VLAN filter decides, so it gets VF0's frame tagged.
    a.port.transmit(frame(VF1, VF0), 0, null);
    expect(b.got.map((g) => g.frame)).toEqual([tagged(VF1, VF0, 100, 5)]);
    // The other way an untagged frame is not in VLAN 100: it does not reach VF0 and leaves by the uplink.
    b.port.transmit(frame(VF0, VF1), 0, null);
    expect(a.got).toHaveLength(0);
    expect(sent).toHaveLength(2);
    // From outside in VLAN 100: stripped; in VLAN 200 or untagged: not for the VST VF.
    uplink.inject(tagged(VF0, OUT, 100));
    uplink.inject(tagged(VF0, OUT, 200));
    uplink.inject(frame(VF0, OUT));
    expect(a.got.map((g) => g.frame)).toEqual([frame(VF0, OUT)]);
    // The PF is a trunk: a broadcast from the VST VF reaches it tagged.
    a.port.transmit(frame(BCAST, VF0), 0, null);
    expect(pf.got.at(-1)!.frame).toEqual(tagged(BCAST, VF0, 100, 5));
    expect(b.got).toHaveLength(2);
  });

  it('link state: disable drops both ways and reports carrier down; auto follows the uplink', () => {
    const { sw, vfs } = setup();
    const [a, b] = vfs as [(typeof vfs)[0], (typeof vfs)[0]];
    sw.applyPolicy(a.port, { ...defaultVfInfo(VF0), linkState: 'disable' });
    expect(a.links).toEqual([false]);
    expect(a.port.linkUp).toBe(false);
    b.port.transmit(frame(VF0, VF1), 0, null);
    expect(a.got).toHaveLength(0);
    expect(sw.stats().vfs[0]!.dropLinkDown).toBe(1);
    expect(a.port.transmit(frame(VF1, VF0), 0, null)).toBe('dropped');
    // Uplink carrier: auto ports follow, enabled/disabled ones do not.
    sw.applyPolicy(a.port, { ...defaultVfInfo(VF0), linkState: 'enable' });
    (sw.uplink as MemoryBackend).setLinkUp(false);
    expect(b.links).toEqual([false]);
    expect(a.links).toEqual([false, true]);
  });

  it('a paused receiver drops and counts (no receive buffer)', () => {
    const { sw, vfs } = setup();
    const [a, b] = vfs as [(typeof vfs)[0], (typeof vfs)[0]];
    b.port.pause(0);
    a.port.transmit(frame(VF1, VF0), 0, null);
    expect(sw.stats().vfs[1]!.dropNoBuffer).toBe(1);
    b.port.resume(0);
    a.port.transmit(frame(VF1, VF0), 0, null);
    expect(b.got).toHaveLength(1);
  });

  it('rate limit: transmitAllowed turns false past the budget, transmitReady follows once it refills', async () => {
    let now = 0;
    const bucket = new TokenBucket(() => now);
    bucket.setRateMbps(8); // 1 byte per µs
    expect(bucket.allowed()).toBe(true);
    bucket.consume(65_536 + 1000);
    expect(bucket.allowed()).toBe(false);
    expect(bucket.waitMs()).toBe(2); // 1001 bytes of debt at 1 byte/µs
    now += 1_001_000;
    expect(bucket.allowed()).toBe(true);
    const { vfs } = setup([{ maxTxRateMbps: 100 }, {}]);
    const a = vfs[0]!;
    let sent = 0;
    while (a.port.transmitAllowed(0)) {
      a.port.transmit(frame(VF1, VF0, 1500), 0, null);
      sent++;
    }
    expect(sent).toBeGreaterThan(40); // the initial burst
    expect(a.port.stats.txRateLimited).toBe(1);
    await new Promise((r) => setTimeout(r, 30));
    expect(a.ready).toEqual([0]);
  });

  it('policies are validated with the field named', () => {
    expect(() => parseVfPolicy(2, { vlan: 4095 })).toThrow(
      /setVf\(2\): field "vlan": expected 0 \(none\) or 1..4094/,
    );
    expect(() => parseVfPolicy(0, { mac: '01:00:00:00:00:01' })).toThrow(
      /field "mac": expected a unicast MAC/,
    );
    expect(() => parseVfPolicy(0, { speed: 1 })).toThrow(/unknown field\(s\) "speed"/);
    expect(() => parseVfPolicy(0, { linkState: 'up' })).toThrow(/field "linkState"/);
    expect(parseVfPolicy(0, { trust: true, maxTxRateMbps: 10 })).toEqual({ trust: true, maxTxRateMbps: 10 });
  });
});

describe('ranges, not views', () => {
  /** An uplink that keeps the switch's sink, so the test can call it as a backend would. */
  function capturingUplink() {
    const up = new MemoryBackend({ receive: 'copy' });
    let sink: BackendSink | null = null;
    const attachUp = up.attach.bind(up);
    up.attach = (s: BackendSink) => {
      sink = s;
      attachUp(s);
    };
    return { up, sink: () => sink! };
  }
  /** A port whose function takes ranges: records the array itself, the offset and the length. */
  function rangeSink(port: SwitchPort, mac: string) {
    const got: { bytes: Uint8Array; offset: number; length: number; frame: Uint8Array }[] = [];
    port.owner = { mac: parseMac(mac), accepts: () => true };
    port.attach({
      receive: () => {
        throw new Error('receive with a view');
      },
      receiveRange: (bytes, offset, length) =>
        got.push({ bytes, offset, length, frame: bytes.slice(offset, offset + length) }),
    });
    return got;
  }

  it('a port and the uplink hand a frame on as the same bytes at an offset; a bad uplink range is counted', () => {
    const { up, sink } = capturingUplink();
    const sw = new EmbeddedSwitch(up);
    attach(sw.pf, PF);
    const a = sw.addVf(0, 1, defaultVfInfo(VF0));
    rangeSink(a, VF0);
    const b = rangeSink(sw.addVf(1, 1, defaultVfInfo(VF1)), VF1);
    const buf = new Uint8Array(200).fill(0xee);
    buf.set(frame(VF1, VF0), 5);
    expect(a.transmitRange(buf, 5, 60, 0, null)).toBe('sent');
    // Guest memory of a chain not yet completed: delivered at the sender's flushTransmit.
    expect(b).toHaveLength(0);
    a.flushTransmit(0);
    expect(b).toHaveLength(1);
    buf.set(frame(VF1, OUT), 100);
    sink().receiveRange!(buf, 100, 60, 0, null);
    expect(b.map((g) => [g.bytes === buf, g.offset, g.length])).toEqual([
      [true, 5, 60],
      [true, 100, 60],
    ]);
    expect(b.map((g) => g.frame)).toEqual([frame(VF1, VF0), frame(VF1, OUT)]);
    for (const [o, l] of [
      [-1, 60],
      [150, 60],
      [100.5, 60],
    ] as const)
      sink().receiveRange!(buf, o, l, 0, null);
    expect(b).toHaveLength(2);
    expect(sw.stats().uplink.dropNoOwner).toBe(3);
  });

  it('in pass-through the PF gets the range, or a view of exactly it when its sink takes no ranges', () => {
    const { up, sink } = capturingUplink();
    const sw = new EmbeddedSwitch(up);
    const got = rangeSink(sw.pf, PF);
    const buf = new Uint8Array(100).fill(0xee);
    buf.set(frame(PF, OUT), 20);
    sink().receiveRange!(buf, 20, 60, 0, null);
    expect(got.map((g) => [g.bytes === buf, g.offset, g.length])).toEqual([[true, 20, 60]]);
    const { up: up2, sink: sink2 } = capturingUplink();
    const sw2 = new EmbeddedSwitch(up2);
    const pf = attach(sw2.pf, PF);
    sink2().receiveRange!(buf, 20, 60, 0, null);
    expect(pf.got.map((g) => g.frame)).toEqual([frame(PF, OUT)]);
  });

  it('queued unicast reaches the receiver before a later flood, a frame from the uplink or a plain transmit', () => {
    const { up, sink } = capturingUplink();
    const sw = new EmbeddedSwitch(up);
    attach(sw.pf, PF);
    const a = sw.addVf(0, 1, defaultVfInfo(VF0));
    rangeSink(a, VF0);
    const b = rangeSink(sw.addVf(1, 1, defaultVfInfo(VF1)), VF1);
    const mem = new Uint8Array(400);
    const first = frame(VF1, VF0, 46, 0x0801);
    mem.set(first, 0);
    a.transmitRange(mem, 0, 60, 0, null);
    a.transmit(frame(BCAST, VF0), 0, null);
    mem.set(frame(VF1, VF0, 46, 0x0802), 100);
    a.transmitRange(mem, 100, 60, 0, null);
    sink().receive(frame(VF1, OUT), 0, null);
    mem.set(frame(VF1, VF0, 46, 0x0803), 200);
    a.transmitRange(mem, 200, 60, 0, null);
    a.transmit(frame(VF1, VF0, 46, 0x0804), 0, null);
    expect(b.map((g) => (g.frame[12]! << 8) | g.frame[13]!)).toEqual([
      0x0801, 0x0800, 0x0802, 0x0800, 0x0803, 0x0804,
    ]);
    expect(b[1]!.frame.subarray(0, 6)).toEqual(parseMac(BCAST));
    expect(b[3]!.frame.subarray(6, 12)).toEqual(parseMac(OUT));
  });

  it('a burst longer than the queue is delivered whole and in order; disabling the receiver delivers first', () => {
    const { up } = capturingUplink();
    const sw = new EmbeddedSwitch(up);
    attach(sw.pf, PF);
    const a = sw.addVf(0, 1, defaultVfInfo(VF0));
    rangeSink(a, VF0);
    const b = rangeSink(sw.addVf(1, 1, defaultVfInfo(VF1)), VF1);
    const mem = new Uint8Array(600 * 64);
    for (let i = 0; i < 600; i++) {
      const f = frame(VF1, VF0);
      f[14] = i & 0xff;
      f[15] = i >> 8;
      mem.set(f, i * 64);
      a.transmitRange(mem, i * 64, 60, 0, null);
    }
    sw.removeVf(1);
    expect(b.map((g) => g.frame[14]! | (g.frame[15]! << 8))).toEqual(
      Array.from({ length: 600 }, (_, i) => i),
    );
    expect(sw.stats().vfs.find((v) => v.index === 0)!.txFrames).toBe(600);
  });
});
