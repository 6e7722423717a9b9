// VIRTIO 1.4 inner header hash (VIRTIO_NET_F_HASH_TUNNEL) through the public object and the synthetic
// guest: the offer and supported_tunnel_types, HASH_TUNNEL_SET's ack and every malformed form answered
// ERR with the state unchanged, RSS and hash report over the inner headers of encapsulated frames
// (checked against a bit-serial Toeplitz over the inner tuple), the kernel-steering fallback, reset and
// snapshot/restore.
import { describe, expect, it } from 'vitest';
import { OptionsError } from '../../lib/errors.js';
import { hex, toeplitzBitSerial } from '../../lib/net/frames.test-support.js';
import { MemoryBackend } from '../../lib/net/memory-backend.js';
import { HashTunnelType } from '../../lib/net/tunnel-inner.js';
import { encapsulations, type Flow, tuple } from '../../lib/net/tunnel-frames.test-support.js';
import { LINUX_6_1_FEATURES } from '../testing/net-driver.js';
import { createVirtioNetPci } from '../virtio-net-pci.js';
import { type Bench, hexOf, makeBench, openBench } from './bench.test-support.js';
import { NetConfig, netConfigLength } from './config.js';
import { CtrlClass, VIRTIO_NET_ERR, VIRTIO_NET_OK } from './control-queue.js';
import { NetF } from './features.js';
import { encodeHashTunnel } from './hash-tunnel.js';
import { parseQemuDevice } from './qemu-device.js';

const bit = (b: number) => 1n << BigInt(b);
const KEY = hex('6d5a56da255b0ec24167253d43a38fb0d0ca2bcbae7b30b477cb2da38030f20c6a42b73bbeac01fa');
const ALL_HASH = 0x1ff;
const ALL_TUNNELS = 0x1ff;
const PAIRS = 4;
const WANT = { wanted: LINUX_6_1_FEATURES | bit(NetF.HASH_TUNNEL) };
const TABLE = Array.from({ length: 128 }, (_, i) => (i * 5 + 1) % PAIRS);

function bench(options: Record<string, unknown> = {}, backend: Record<string, unknown> = {}): Bench {
  const b = openBench(
    { mq: true, rss: true, hash: true, hash_tunnel: true, queues: PAIRS, ...options },
    { queues: PAIRS, ...backend },
    WANT,
  );
  expect(b.driver.rxMode(0, true)).toBe(VIRTIO_NET_OK);
  return b;
}

/** Injects `frame` on backend queue `q`; the one arrival: pair, hash value and report. */
function deliver(b: Bench, frame: Uint8Array, q = 0) {
  b.backend.inject(frame, q);
  const got: { pair: number; hash: number; report: number }[] = [];
  for (let p = 0; p < b.driver.maxPairs; p++)
    for (const r of b.driver.receive(p)) {
      expect(hexOf(r.frame)).toBe(hexOf(frame));
      got.push({ pair: p, hash: r.hashValue >>> 0, report: r.hashReport });
    }
  expect(got).toHaveLength(1);
  return got[0]!;
}

const FLOWS: Flow[] = Array.from({ length: 12 }, (_, i) => ({
  v6: i % 3 === 2,
  src: i % 3 === 2 ? `fd00::${i + 1}` : `10.9.${i}.1`,
  dst: i % 3 === 2 ? 'fd00::99' : '10.9.200.2',
  proto: i % 2 === 0 ? 6 : 17,
  sport: 20000 + 97 * i,
  dport: 443,
}));

const reportOf = (f: Flow) => (f.v6 ? (f.proto === 6 ? 8 : 9) : f.proto === 6 ? 2 : 3);

describe('VIRTIO_NET_F_HASH_TUNNEL offer and config', () => {
  it('offered with hash_tunnel and rss or hash (bit 51), never without the control queue', () => {
    const has = (o: Record<string, unknown>, backend = {}) =>
      (makeBench(o, backend).dev.net.offered & bit(NetF.HASH_TUNNEL)) !== 0n;
    expect(has({})).toBe(false);
    expect(has({ rss: true })).toBe(false);
    expect(has({ rss: true, hash_tunnel: true })).toBe(true);
    expect(has({ hash: true, hash_tunnel: true })).toBe(true);
    // Hash report needs a vnet header: without one and without RSS the prerequisite is gone.
    expect(has({ hash: true, hash_tunnel: true }, { vnetHeader: false })).toBe(false);
    expect(has({ rss: true, hash_tunnel: true }, { vnetHeader: false })).toBe(true);
    expect(
      has({
        hash: true,
        hash_tunnel: true,
        ctrl_vq: false,
        ctrl_rx: false,
        ctrl_vlan: false,
        ctrl_rx_extra: false,
      }),
    ).toBe(false);
    expect(() => makeBench({ hash_tunnel: true })).toThrow(OptionsError);
    expect(() => makeBench({ hash_tunnel: true })).toThrow(/hash_tunnel=on needs rss=on or hash=on/);
  });

  it('supported_tunnel_types = 0x1ff at offset 24; the config grows to 28 bytes', () => {
    const b = bench();
    expect(b.driver.has(NetF.HASH_TUNNEL)).toBe(true);
    expect(b.driver.readConfig(NetConfig.SUPPORTED_TUNNEL_TYPES, 4)).toBe(0x1ff);
    expect([0, 1, 2, 3].map((i) => b.driver.readConfig(24 + i, 1))).toEqual([0xff, 0x01, 0, 0]);
    expect(netConfigLength(b.dev.net.offered)).toBe(28);
    expect(netConfigLength(makeBench({ rss: true }).dev.net.offered)).toBe(24);
  });
});

describe('parseQemuDevice: hash_tunnel and rss_context in QEMU style', () => {
  it('on/off like the other boolean properties, off by default; a bad value names the property', () => {
    expect(parseQemuDevice('virtio-net-pci,mq=on,rss=on,hash_tunnel=on,rss_context=on')).toEqual({
      mq: true,
      rss: true,
      hash_tunnel: true,
      rss_context: true,
    });
    expect(parseQemuDevice('virtio-net-pci,hash_tunnel=off,rss_context=false')).toEqual({
      hash_tunnel: false,
      rss_context: false,
    });
    expect(() => parseQemuDevice('virtio-net-pci,hash_tunnel=maybe')).toThrow(/hash_tunnel/);
    const o = parseQemuDevice('virtio-net-pci,mq=on,rss=on,hash_tunnel=on,rss_context=on');
    const offered = makeBench({ ...o, queues: 2 }).dev.net.offered;
    expect([(offered >> 51n) & 1n, (offered >> 64n) & 1n]).toEqual([1n, 1n]);
    const dflt = makeBench({ mq: true, rss: true, hash: true, queues: 2 }).dev.net.offered;
    expect([(dflt >> 51n) & 1n, (dflt >> 64n) & 1n]).toEqual([0n, 0n]);
  });
});

describe('VIRTIO_NET_CTRL_HASH_TUNNEL_SET', () => {
  it('the command bytes; acked OK and the types take effect; 0 disables', () => {
    expect(Array.from(encodeHashTunnel(HashTunnelType.VXLAN | HashTunnelType.NVGRE))).toEqual([
      0x10, 0x01, 0, 0,
    ]);
    const b = bench();
    const st = b.dev.net.deviceStats;
    const before = st.ctrlErrors;
    expect(b.driver.setHashTunnel(HashTunnelType.VXLAN | HashTunnelType.GENEVE)).toBe(VIRTIO_NET_OK);
    expect(b.dev.net.rss.tunnel.types).toBe(0x50);
    expect(b.driver.control(CtrlClass.HASH_TUNNEL, 0, Uint8Array.of(0xff, 0x01, 0, 0, 0xaa))).toBe(
      VIRTIO_NET_OK,
    );
    expect(b.dev.net.rss.tunnel.types).toBe(ALL_TUNNELS);
    expect(b.driver.setHashTunnel(0)).toBe(VIRTIO_NET_OK);
    expect(b.dev.net.rss.tunnel.types).toBe(0);
    expect(st.ctrlErrors).toBe(before);
  });

  it('malformed or unsupported: ERR, state unchanged', () => {
    const b = bench();
    expect(b.driver.setHashTunnel(HashTunnelType.IPIP)).toBe(VIRTIO_NET_OK);
    const bad: [string, number, Uint8Array][] = [
      ['3 bytes', 0, Uint8Array.of(0x10, 0, 0)],
      ['no data', 0, new Uint8Array(0)],
      ['bit 9 (not in supported_tunnel_types)', 0, encodeHashTunnel(1 << 9)],
      ['bit 31', 0, encodeHashTunnel(0x80000010)],
      ['command 1 (no GET in VIRTIO 1.4)', 1, encodeHashTunnel(0x10)],
      ['command 0xff', 0xff, encodeHashTunnel(0x10)],
    ];
    const errs = b.dev.net.deviceStats.ctrlErrors;
    for (const [name, cmd, data] of bad) {
      expect(b.driver.control(CtrlClass.HASH_TUNNEL, cmd, data), name).toBe(VIRTIO_NET_ERR);
      expect(b.dev.net.rss.tunnel.types, name).toBe(HashTunnelType.IPIP);
    }
    expect(b.dev.net.deviceStats.ctrlErrors - errs).toBe(bad.length);
  });

  it('refused when HASH_TUNNEL was not negotiated (offered, but the driver did not accept it)', () => {
    const b = openBench({ mq: true, rss: true, hash_tunnel: true, queues: PAIRS }, { queues: PAIRS });
    expect(b.driver.has(NetF.HASH_TUNNEL)).toBe(false);
    expect(b.driver.setHashTunnel(HashTunnelType.VXLAN)).toBe(VIRTIO_NET_ERR);
    expect(b.dev.net.rss.tunnel.types).toBe(0);
  });
});

describe('RSS and hash report over inner headers', () => {
  it('RSS_CONFIG + HASH_TUNNEL_SET: every encapsulation steered and reported by its inner flow', () => {
    const b = bench();
    expect(b.driver.setRss({ hashTypes: ALL_HASH, table: TABLE, key: KEY, unclassified: 3 })).toBe(
      VIRTIO_NET_OK,
    );
    expect(b.driver.setHashTunnel(ALL_TUNNELS)).toBe(VIRTIO_NET_OK);
    let n = 0;
    for (const f of FLOWS)
      for (const outerV6 of [false, true])
        for (const e of encapsulations(f, outerV6)) {
          const h = toeplitzBitSerial(KEY, tuple(f, true));
          expect(deliver(b, e.frame), `${e.name} ${f.src}`).toEqual({
            pair: TABLE[h & 127],
            hash: h,
            report: reportOf(f),
          });
          n++;
        }
    expect(n).toBe(FLOWS.length * 2 * 8);
  });

  it('only the enabled types: VXLAN inner, GENEVE outer (UDP ports of the outer header)', () => {
    const b = bench();
    expect(b.driver.setRss({ hashTypes: ALL_HASH, table: TABLE, key: KEY })).toBe(VIRTIO_NET_OK);
    expect(b.driver.setHashTunnel(HashTunnelType.VXLAN)).toBe(VIRTIO_NET_OK);
    const f = FLOWS[0]!;
    const [vx, , gen] = encapsulations(f);
    const hi = toeplitzBitSerial(KEY, tuple(f, true));
    expect(deliver(b, vx!.frame)).toEqual({ pair: TABLE[hi & 127], hash: hi, report: 2 });
    const ho = toeplitzBitSerial(KEY, tuple(gen!.outer, true));
    expect(deliver(b, gen!.frame)).toEqual({ pair: TABLE[ho & 127], hash: ho, report: 3 });
    // Disabled again: VXLAN hashed on its outer header too.
    expect(b.driver.setHashTunnel(0)).toBe(VIRTIO_NET_OK);
    const hv = toeplitzBitSerial(KEY, tuple(vx!.outer, true));
    expect(deliver(b, vx!.frame)).toEqual({ pair: TABLE[hv & 127], hash: hv, report: 3 });
  });

  it('survives RSS_CONFIG being disabled and re-enabled (a separate setting)', () => {
    const b = bench();
    expect(b.driver.setHashTunnel(HashTunnelType.GRE_2784)).toBe(VIRTIO_NET_OK);
    expect(b.driver.setRss({ hashTypes: 0, table: [0], key: new Uint8Array(0) })).toBe(VIRTIO_NET_OK);
    expect(b.driver.setRss({ hashTypes: ALL_HASH, table: TABLE, key: KEY })).toBe(VIRTIO_NET_OK);
    const f = FLOWS[1]!;
    const gre = encapsulations(f).find((e) => e.name.startsWith('GRE (RFC 2784'))!;
    const h = toeplitzBitSerial(KEY, tuple(f, true));
    expect(deliver(b, gre.frame)).toEqual({ pair: TABLE[h & 127], hash: h, report: 3 });
  });

  it('hash report without RSS (HASH_CONFIG): the reported hash is the inner one', () => {
    const b = openBench({ hash: true, hash_tunnel: true }, {}, WANT);
    expect(b.driver.rxMode(0, true)).toBe(VIRTIO_NET_OK);
    expect(b.driver.has(NetF.RSS)).toBe(false);
    expect(b.driver.setHashConfig(ALL_HASH, KEY)).toBe(VIRTIO_NET_OK);
    expect(b.driver.setHashTunnel(ALL_TUNNELS)).toBe(VIRTIO_NET_OK);
    for (const f of FLOWS.slice(0, 6))
      for (const e of encapsulations(f, true)) {
        const h = toeplitzBitSerial(KEY, tuple(f, true));
        expect(deliver(b, e.frame), e.name).toEqual({ pair: 0, hash: h, report: reportOf(f) });
      }
  });

  it('the kernel steering program is detached while an inner hash is on (software RSS), reattached after', () => {
    const b = bench({ hash: false }, { rssSteering: true });
    expect(b.driver.setRss({ hashTypes: ALL_HASH, table: TABLE, key: KEY })).toBe(VIRTIO_NET_OK);
    expect(b.backend.rssSteeringCalls.at(-1)).not.toBeNull();
    expect(b.driver.setHashTunnel(HashTunnelType.VXLAN)).toBe(VIRTIO_NET_OK);
    expect(b.backend.rssSteeringCalls.at(-1)).toBeNull();
    // The frame arrives on backend queue 0; the device steers it by the inner flow.
    const f = FLOWS[3]!;
    const h = toeplitzBitSerial(KEY, tuple(f, true));
    expect(deliver(b, encapsulations(f)[0]!.frame, 0).pair).toBe(TABLE[h & 127]);
    // An RSS_CONFIG while the inner hash is on is not handed over either.
    const calls = b.backend.rssSteeringCalls.length;
    expect(b.driver.setRss({ hashTypes: ALL_HASH, table: TABLE, key: KEY })).toBe(VIRTIO_NET_OK);
    expect(b.backend.rssSteeringCalls.slice(calls).every((c) => c === null)).toBe(true);
    expect(b.driver.setHashTunnel(0)).toBe(VIRTIO_NET_OK);
    expect(b.backend.rssSteeringCalls.at(-1)).toMatchObject({ hashTypes: ALL_HASH, table: TABLE });
  });
});

describe('HASH_TUNNEL state across reset and snapshot/restore', () => {
  it('reset disables every type', () => {
    const b = bench();
    expect(b.driver.setHashTunnel(ALL_TUNNELS)).toBe(VIRTIO_NET_OK);
    b.dev.reset();
    expect(b.dev.net.rss.tunnel.types).toBe(0);
  });

  it('restored into a fresh device; a state without the field means 0; an unsupported bit is refused', () => {
    const b = bench();
    expect(b.driver.setHashTunnel(HashTunnelType.GENEVE | HashTunnelType.IPIP)).toBe(VIRTIO_NET_OK);
    const snap = JSON.parse(JSON.stringify(b.dev.snapshot()));
    expect(snap.transport.transport.device.hashTunnel).toBe(0xc0);
    const fresh = () =>
      createVirtioNetPci({
        memory: b.memory,
        backend: new MemoryBackend({ queues: PAIRS }),
        interrupts: b.irq,
        mq: true,
        rss: true,
        hash: true,
        hash_tunnel: true,
        queues: PAIRS,
      });
    const d2 = fresh();
    d2.restore(snap);
    expect(d2.net.rss.tunnel.types).toBe(0xc0);
    const net = (s: { transport: { transport: { device: Record<string, unknown> } } }) =>
      s.transport.transport.device;
    const old = JSON.parse(JSON.stringify(snap));
    delete net(old).hashTunnel;
    const d3 = fresh();
    d3.net.rss.tunnel.types = 0x10;
    d3.restore(old);
    expect(d3.net.rss.tunnel.types).toBe(0);
    const bad = JSON.parse(JSON.stringify(snap));
    net(bad).hashTunnel = 1 << 9;
    expect(() => fresh().restore(bad)).toThrow(/hashTunnel/);
  });
});
