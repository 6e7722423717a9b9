/**
 * TapSteering against the kernel (root + /dev/net/tun): a 4-queue tap in a fresh namespace, the eBPF
 * RSS program attached, and traffic from inside the namespace, both from the stack (UDP, TCP SYNs,
 * fragments, ARP, neighbour discovery, over VLAN devices too) and hand-built frames sent with AF_PACKET
 * (VLAN tags in the data, IPv6 extension headers, truncated and malformed headers, random frames).
 * Every frame read from the tap must be on the queue lib/net/rss-hash.ts `rssHash` picks.
 */
import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { libc, SYS_bpf } from '../../lib/host/libc.js';
import { cleanupNamespaces, NetNamespace, uniqueName } from '../../lib/host/netns.js';
import { L3_IPV4, L3_IPV6, L4_TCP, L4_UDP, ParsedPacket, parsePacket } from '../../lib/net/packet-parser.js';
import {
  rssHash,
  VIRTIO_NET_RSS_HASH_TYPE_IP_EX,
  VIRTIO_NET_RSS_HASH_TYPE_IPv4,
  VIRTIO_NET_RSS_HASH_TYPE_IPv6,
  VIRTIO_NET_RSS_HASH_TYPE_TCP_EX,
  VIRTIO_NET_RSS_HASH_TYPE_TCPv4,
  VIRTIO_NET_RSS_HASH_TYPE_TCPv6,
  VIRTIO_NET_RSS_HASH_TYPE_UDPv4,
  VIRTIO_NET_RSS_HASH_TYPE_UDPv6,
} from '../../lib/net/rss-hash.js';
import { TapBackend } from '../../lib/tap/tap-backend.js';
import { BpfAssembler, R0, R1, R2, R3, R6 } from '../../lib/host/bpf.js';
import { TapSteering } from '../../lib/tap/steering.js';
import {
  MAX_DEST_OPTIONS,
  MAX_IPV6_EXT_HEADERS,
  type RssSteeringConfig,
} from '../../lib/tap/steering-program.js';
import { unavailable } from './fixture.test-support.js';
import { CollectingSink, GUEST_MAC, KERNEL_MAC, mac, waitUntil } from './frames.test-support.js';

const QUEUES = 4;
const ALL =
  VIRTIO_NET_RSS_HASH_TYPE_IPv4 |
  VIRTIO_NET_RSS_HASH_TYPE_TCPv4 |
  VIRTIO_NET_RSS_HASH_TYPE_UDPv4 |
  VIRTIO_NET_RSS_HASH_TYPE_IPv6 |
  VIRTIO_NET_RSS_HASH_TYPE_TCPv6 |
  VIRTIO_NET_RSS_HASH_TYPE_UDPv6;
/** The verification key of VIRTIO 1.3 §5.1.6.4.3 (Microsoft's RSS sample key). */
const SPEC_KEY = Buffer.from(
  '6d5a56da255b0ec24167253d43a38fb0d0ca2bcbae7b30b477cb2da38030f20c6a42b73bbeac01fa',
  'hex',
);
const OTHER_KEY = Uint8Array.from({ length: 40 }, (_, i) => (i * 97 + 13) & 0xff);

const V4 = { kernel: '10.77.0.1', guest: '10.77.0.2', noNeigh: '10.77.0.9' };
const V6 = { kernel: 'fd00:77::1', guest: 'fd00:77::2' };

const unavailableHere = unavailable ?? TapSteering.supported();
if (unavailable === null && unavailableHere) console.warn(`tap steering tests skipped: ${unavailableHere}`);

// ---------------------------------------------------------------------------------------------------
// Frame builders for AF_PACKET.

function be16(n: number): [number, number] {
  return [(n >> 8) & 0xff, n & 0xff];
}
function bytes(n: number, seed: number): number[] {
  return Array.from({ length: n }, (_, i) => (seed * 31 + i * 7) & 0xff);
}
function eth(tags: { tpid: number; tci: number }[], type: number, payload: number[]): Uint8Array {
  const out = [...mac(GUEST_MAC), ...mac(KERNEL_MAC)];
  for (const t of tags) out.push(...be16(t.tpid), ...be16(t.tci));
  out.push(...be16(type), ...payload);
  return Uint8Array.from(out);
}
function l4(proto: number, sport: number, dport: number, len: number): number[] {
  const h = [...be16(sport), ...be16(dport), ...bytes(Math.max(0, len - 4), sport)];
  if (proto === 6 && len >= 13) h[12] = 0x50;
  return h.slice(0, len);
}
interface V4Opts {
  ihl?: number;
  version?: number;
  frag?: number;
  proto: number;
  src?: number[];
  dst?: number[];
  payload: number[];
}
function ipv4(o: V4Opts): number[] {
  const ihl = o.ihl ?? 5;
  const h = new Array(Math.max(20, ihl * 4)).fill(0);
  h[0] = ((o.version ?? 4) << 4) | ihl;
  const total = h.length + o.payload.length;
  [h[2], h[3]] = be16(total);
  [h[6], h[7]] = be16(o.frag ?? 0x4000);
  h[8] = 64;
  h[9] = o.proto;
  h.splice(12, 8, ...(o.src ?? [10, 77, 0, 1]), ...(o.dst ?? [10, 77, 0, 2]));
  return [...h, ...o.payload];
}
interface Ext {
  type: number;
  /** Hdr Ext Len byte (or Fragment's offset/M field for type 44). */
  len: number;
  body?: number[];
}
function ipv6(exts: Ext[], proto: number, payload: number[], src = 1, dst = 2): number[] {
  const chain: number[] = [];
  exts.forEach((e, i) => {
    const next = i + 1 < exts.length ? (exts[i + 1] as Ext).type : proto;
    const size = e.type === 44 ? 8 : e.type === 51 ? (e.len + 2) * 4 : (e.len + 1) * 8;
    const h = [next, e.type === 44 ? 0 : e.len, ...bytes(size - 2, i + e.type)];
    if (e.type === 44) [h[2], h[3]] = be16(e.len);
    if (e.body) h.splice(2, e.body.length, ...e.body.slice(0, size - 2));
    chain.push(...h.slice(0, size));
  });
  const first = exts.length ? (exts[0] as Ext).type : proto;
  const addr = (last: number) => [0xfd, 0, 0, 0x77, ...new Array(11).fill(0), last];
  const plen = chain.length + payload.length;
  return [0x60, 0, 0, 0, ...be16(plen), first, 64, ...addr(src), ...addr(dst), ...chain, ...payload];
}

/** Hand-picked frames: every branch of the program, and the edges of each header check. */
function craftedFrames(): Uint8Array[] {
  const f: Uint8Array[] = [];
  const q = { tpid: 0x8100, tci: 5 };
  const ad = { tpid: 0x88a8, tci: 7 };
  // ARP and other EtherTypes.
  f.push(
    eth([], 0x0806, [
      0,
      1,
      8,
      0,
      6,
      4,
      0,
      1,
      ...mac(KERNEL_MAC),
      10,
      77,
      0,
      1,
      0,
      0,
      0,
      0,
      0,
      0,
      10,
      77,
      0,
      2,
    ]),
  );
  f.push(eth([], 0x88cc, bytes(40, 1)), eth([q], 0x0806, bytes(28, 2)), Uint8Array.from(eth([], 0x0800, []))); // 14 bytes
  for (let port = 1000; port < 1032; port++) {
    for (const tags of [[], [q], [ad, q], [q, q], [ad, q, q], [ad]]) {
      f.push(eth(tags, 0x0800, ipv4({ proto: 17, payload: l4(17, port, 53, 12) })));
      f.push(eth(tags, 0x0800, ipv4({ proto: 6, payload: l4(6, port, 80, 20) })));
      f.push(eth(tags, 0x86dd, ipv6([], 17, l4(17, port, 53, 12))));
      f.push(eth(tags, 0x86dd, ipv6([], 6, l4(6, port, 443, 20))));
    }
    // IPv4 options, fragments, truncated and malformed headers.
    f.push(eth([], 0x0800, ipv4({ ihl: 7, proto: 6, payload: l4(6, port, 22, 20) })));
    f.push(eth([], 0x0800, ipv4({ proto: 17, frag: 0x2000, payload: l4(17, port, 53, 12) }))); // MF
    f.push(eth([], 0x0800, ipv4({ proto: 17, frag: 0x0001 + (port & 3), payload: l4(17, port, 53, 12) }))); // offset
    f.push(eth([], 0x0800, ipv4({ proto: 6, payload: l4(6, port, 80, 19) }))); // TCP header cut short
    f.push(eth([], 0x0800, ipv4({ proto: 17, payload: l4(17, port, 53, 7) }))); // UDP header cut short
    f.push(eth([], 0x0800, ipv4({ proto: 17, payload: l4(17, port, 53, 8) }))); // exactly a UDP header
    f.push(eth([], 0x0800, ipv4({ ihl: 4, proto: 17, payload: l4(17, port, 53, 12) }))); // IHL < 5
    f.push(eth([], 0x0800, ipv4({ version: 6, proto: 17, payload: l4(17, port, 53, 12) })));
    f.push(eth([], 0x0800, ipv4({ ihl: 15, proto: 17, payload: [] }).slice(0, 40))); // IHL past the end
    f.push(eth([], 0x0800, ipv4({ proto: 1, payload: bytes(16, port) }))); // ICMP
    f.push(eth([], 0x0800, ipv4({ proto: 6, payload: [] }).slice(0, 19))); // IPv4 header cut short
    // IPv6: extension headers, fragments, truncation.
    f.push(eth([], 0x86dd, ipv6([{ type: 0, len: 0 }], 6, l4(6, port, 80, 20))));
    f.push(eth([], 0x86dd, ipv6([{ type: 60, len: 1 }], 17, l4(17, port, 53, 8))));
    f.push(eth([], 0x86dd, ipv6([{ type: 43, len: 2, body: [0, 1] }], 6, l4(6, port, 80, 20))));
    f.push(eth([], 0x86dd, ipv6([{ type: 44, len: 0 }], 6, l4(6, port, 80, 20)))); // atomic fragment
    f.push(eth([], 0x86dd, ipv6([{ type: 44, len: 1 }], 17, l4(17, port, 53, 8)))); // MF
    f.push(eth([], 0x86dd, ipv6([{ type: 44, len: 0x10 }], 17, l4(17, port, 53, 8)))); // offset 2
    f.push(eth([], 0x86dd, ipv6([{ type: 44, len: 0x6 }], 17, l4(17, port, 53, 8)))); // reserved bits only
    f.push(eth([], 0x86dd, ipv6([{ type: 51, len: 1 }], 17, l4(17, port, 53, 8)))); // AH, 12 bytes
    f.push(
      eth(
        [],
        0x86dd,
        ipv6(
          [
            { type: 51, len: 4 },
            { type: 60, len: 0 },
          ],
          6,
          l4(6, port, 80, 20),
        ),
      ),
    );
    const chain = [0, 60, 43, 44, 51, 60, 0, 43].map((type, i) => ({ type, len: i & 1 }));
    f.push(eth([], 0x86dd, ipv6(chain.slice(0, MAX_IPV6_EXT_HEADERS), 6, l4(6, port, 80, 20))));
    f.push(eth([], 0x86dd, ipv6([{ type: 0, len: 0 }], 58, bytes(24, port)))); // ICMPv6 (MLD-like)
    f.push(eth([], 0x86dd, ipv6([{ type: 0, len: 3 }], 6, []).slice(0, 40 + 16))); // ext header cut short
    f.push(eth([], 0x86dd, ipv6([{ type: 60, len: 0 }], 6, []).slice(0, 40 + 5))); // < 8 bytes of it
    f.push(eth([], 0x86dd, ipv6([], 6, l4(6, port, 80, 19)))); // TCP header cut short
    f.push(eth([], 0x86dd, ipv6([], 17, []).slice(0, 39))); // IPv6 header cut short
    // _EX addresses: Home Address option (after PadN or Pad1s), type 2 Routing Header, both, decoys.
    const home = [0xc9, 16, 0x20, 1, 0xd, 0xb8, ...bytes(12, port)];
    const dstOpts = (opts: number[]) => ({ type: 60, len: 2, body: opts });
    const rt2 = (segLeft: number) => ({
      type: 43,
      len: 2,
      body: [2, segLeft, 0, 0, 0, 0, 0x20, 1, ...bytes(14, port + 1)],
    });
    f.push(eth([], 0x86dd, ipv6([dstOpts([1, 2, 0, 0, ...home])], 6, l4(6, port, 80, 20))));
    f.push(eth([], 0x86dd, ipv6([dstOpts([0, 0, 0, 0, ...home])], 17, l4(17, port, 53, 8))));
    f.push(eth([], 0x86dd, ipv6([rt2(1)], 6, l4(6, port, 80, 20))));
    f.push(eth([], 0x86dd, ipv6([rt2(0)], 17, l4(17, port, 53, 8)))); // segments left 0: not used
    f.push(
      eth(
        [],
        0x86dd,
        ipv6([{ type: 0, len: 0 }, rt2(1), dstOpts([1, 2, 0, 0, ...home])], 17, l4(17, port, 53, 8)),
      ),
    );
    f.push(
      eth([], 0x86dd, ipv6([dstOpts([1, 2, 0, 0, 0xc9, 15, ...bytes(16, port)])], 6, l4(6, port, 80, 20))),
    ); // too short
    f.push(
      eth([], 0x86dd, ipv6([dstOpts([1, 2, 0, 0, ...home]), { type: 44, len: 1 }], 17, l4(17, port, 53, 8))),
    ); // + fragment
    f.push(eth([], 0x86dd, ipv6([rt2(1)], 58, bytes(8, port)))); // ICMPv6: IP_EX
    f.push(eth([], 0x86dd, ipv6([dstOpts([1, 2, 0, 0, ...home])], 6, []).slice(0, 40 + 24 + 10))); // TCP cut short
    const badVersion = ipv6([], 17, l4(17, port, 53, 8));
    badVersion[0] = 0x40;
    f.push(eth([], 0x86dd, badVersion));
  }
  return f;
}

/** Random frames from a structural generator (fixed seed): headers valid, broken, cut anywhere. */
function randomFrames(count: number, seed: number): Uint8Array[] {
  const tag = fc.record({ tpid: fc.constantFrom(0x8100, 0x88a8), tci: fc.integer({ min: 0, max: 0xffff }) });
  const port = fc.integer({ min: 0, max: 0xffff });
  const l4arb = fc.record({
    proto: fc.oneof(fc.constantFrom(6, 17), fc.integer({ min: 0, max: 255 })),
    sport: port,
    dport: port,
    len: fc.integer({ min: 0, max: 28 }),
  });
  const addr = fc.array(fc.integer({ min: 0, max: 255 }), { minLength: 4, maxLength: 4 });
  const v4 = fc.record({
    ihl: fc.oneof(fc.constant(5), fc.integer({ min: 0, max: 15 })),
    version: fc.oneof(fc.constant(4), fc.integer({ min: 0, max: 15 })),
    frag: fc.oneof(fc.constantFrom(0, 0x4000), fc.integer({ min: 0, max: 0xffff })),
    src: addr,
    dst: addr,
    l4: l4arb,
  });
  // Destination Options bodies: up to 6 options (the program looks at MAX_DEST_OPTIONS), zero-padded.
  const option = fc.oneof(
    fc.constant([0]),
    fc.integer({ min: 0, max: 4 }).map((n) => [1, n, ...new Array(n).fill(0)]),
    fc
      .integer({ min: 0, max: 20 })
      .chain((n) =>
        fc
          .array(fc.integer({ min: 0, max: 255 }), { minLength: n, maxLength: n })
          .map((b) => [0xc9, n, ...b]),
      ),
    fc
      .record({ t: fc.integer({ min: 2, max: 255 }), n: fc.integer({ min: 0, max: 6 }) })
      .map(({ t, n }) => [t, n, ...bytes(n, t)]),
  );
  const rtBody = fc
    .record({ type: fc.constantFrom(0, 2, 2, 4), left: fc.constantFrom(0, 1, 1, 2) })
    .map(({ type, left }) => [type, left, 0, 0, 0, 0, 0x20, 1, ...bytes(30, type + left)]);
  const ext = fc.oneof(
    fc.record({ type: fc.constantFrom(0, 43, 44, 51, 60), len: fc.integer({ min: 0, max: 3 }) }),
    fc.record({
      type: fc.constant(60),
      len: fc.integer({ min: 0, max: 3 }),
      body: fc
        .array(option, { maxLength: MAX_DEST_OPTIONS - 2 })
        .map((o) => [...o.flat(), ...new Array(32).fill(0)]),
    }),
    fc.record({ type: fc.constant(43), len: fc.integer({ min: 1, max: 3 }), body: rtBody }),
  );
  const v6 = fc.record({
    exts: fc.array(ext, { maxLength: MAX_IPV6_EXT_HEADERS }),
    l4: l4arb,
    src: fc.integer({ min: 0, max: 255 }),
    dst: fc.integer({ min: 0, max: 255 }),
  });
  const frame = fc.record({
    tags: fc.array(tag, { maxLength: 3 }),
    l3: fc.oneof(
      v4.map((o) => ({
        type: 0x0800,
        payload: ipv4({ ...o, proto: o.l4.proto, payload: l4(o.l4.proto, o.l4.sport, o.l4.dport, o.l4.len) }),
      })),
      v6.map((o) => ({
        type: 0x86dd,
        payload: ipv6(o.exts, o.l4.proto, l4(o.l4.proto, o.l4.sport, o.l4.dport, o.l4.len), o.src, o.dst),
      })),
      fc.record({
        type: fc.integer({ min: 0, max: 0xffff }),
        payload: fc.array(fc.integer({ min: 0, max: 255 }), { maxLength: 64 }),
      }),
    ),
    cut: fc.option(fc.integer({ min: 14, max: 200 }), { nil: undefined }),
  });
  return fc.sample(frame, { numRuns: count, seed }).map((r) => {
    const f = eth(r.tags, r.l3.type, r.l3.payload);
    return r.cut !== undefined && r.cut < f.length ? f.slice(0, r.cut) : f;
  });
}

// ---------------------------------------------------------------------------------------------------
// Traffic from inside the namespace.

/**
 * argv: v4dst v6dst noNeigh count vlanTargets(comma list "ip"), stdin: "ifname hex" lines sent with
 * AF_PACKET. Stack traffic: per round a UDP datagram (fresh socket, fresh source port), a TCP SYN
 * (non-blocking connect), every 8th round a 3000-byte UDP datagram (fragments), to v4 and v6; UDP to
 * the VLAN targets; UDP to an address without a neighbour (ARP requests).
 */
const PY_TRAFFIC = `
import socket, sys, time
v4, v6, noneigh, n, vlans = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), [a for a in sys.argv[5].split(',') if a]
raws = {}
for line in sys.stdin:
    parts = line.split()
    if len(parts) != 2: continue
    s = raws.get(parts[0])
    if s is None:
        s = raws[parts[0]] = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        s.bind((parts[0], 0))
    s.send(bytes.fromhex(parts[1]))
syns = []
for i in range(n):
    for fam, dst in ((socket.AF_INET, v4), (socket.AF_INET6, v6)):
        u = socket.socket(fam, socket.SOCK_DGRAM)
        if fam == socket.AF_INET: u.setsockopt(socket.IPPROTO_IP, 10, 0)  # IP_MTU_DISCOVER = DONT: fragment
        u.sendto(b'u' * (3000 if i % 8 == 0 else 40), (dst, 7000 + i % 5))
        u.close()
        t = socket.socket(fam, socket.SOCK_STREAM)
        t.setblocking(False)
        try: t.connect((dst, 8000 + i % 3))
        except BlockingIOError: pass
        syns.append(t)
    for dst in vlans:
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.sendto(b'v' * 40, (dst, 9000 + i % 4))
        u.close()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.sendto(b'a', (noneigh, 9))
time.sleep(0.3)
for t in syns: t.close()
print('done', flush=True)
`;

interface Rig {
  ns: NetNamespace;
  tap: TapBackend;
  sink: CollectingSink;
  steering: TapSteering | null;
  vlanTargets: string[];
  vlanDevs: string[];
  cleanup: (() => void)[];
}

const rigs: Rig[] = [];
afterEach(() => {
  for (const r of rigs.splice(0)) {
    for (const f of r.cleanup) f();
    r.tap.close();
    r.steering?.close();
    r.ns.delete();
  }
});
afterAll(() => cleanupNamespaces());

/**
 * A SCHED_CLS program on the tap's tcx egress hook that pushes `tags` with bpf_skb_vlan_push, outermost
 * last: the last one stays in skb->vlan_tci (as a VLAN device's tag would), earlier ones go into the
 * data. It runs before tun picks the queue (__dev_queue_xmit: egress hook, then netdev_core_pick_tx).
 * Returns a function that removes it.
 */
function pushVlanTagsOnEgress(ifindex: number, tags: { tpid: number; tci: number }[]): () => void {
  const c = libc();
  const a = new BpfAssembler().movReg(R6, R1);
  for (const t of tags) {
    a.movReg(R1, R6).movImm(R2, ((t.tpid & 0xff) << 8) | (t.tpid >> 8)); // __be16
    a.movImm(R3, t.tci).call(18); // bpf_skb_vlan_push
  }
  const insns = a.movImm(R0, 0).exit().assemble(); // TCX_PASS
  const license = Buffer.from('GPL\0');
  const attr = new Uint8Array(128);
  const v = new DataView(attr.buffer);
  v.setUint32(0, 3, true); // BPF_PROG_TYPE_SCHED_CLS
  v.setUint32(4, insns.length / 8, true);
  v.setBigUint64(8, BigInt(c.addressOf(insns)), true);
  v.setBigUint64(16, BigInt(c.addressOf(license)), true);
  const prog = c.syscall3(SYS_bpf, 5, attr, attr.length); // BPF_PROG_LOAD
  // insns and license are read by the kernel through bare addresses: keep them alive until here.
  if (insns.length === 0 || license.length === 0) throw new Error('unreachable');
  if (prog < 0) throw new Error(`loading the VLAN push program: errno ${c.errno()}`);
  attr.fill(0);
  v.setUint32(0, prog, true);
  v.setUint32(4, ifindex, true);
  v.setUint32(8, 47, true); // BPF_TCX_EGRESS
  const link = c.syscall3(SYS_bpf, 28, attr, attr.length); // BPF_LINK_CREATE
  const e = c.errno();
  c.close(prog);
  if (link < 0) throw new Error(`attaching the VLAN push program (tcx egress): errno ${e}`);
  return () => c.close(link);
}

interface RigOptions {
  /** VLAN tags pushed on egress by a tcx program (the last one in skb->vlan_tci). */
  hwTags?: { tpid: number; tci: number }[];
}

function rig(config: RssSteeringConfig, options: RigOptions = {}): Rig {
  const ns = NetNamespace.create('vs');
  const r: Rig = {
    ns,
    tap: undefined as unknown as TapBackend,
    sink: new CollectingSink(),
    steering: null,
    vlanTargets: [],
    vlanDevs: [],
    cleanup: [],
  };
  try {
    r.tap = TapBackend.open({ name: uniqueName('vs'), queues: QUEUES });
    rigs.push(r);
    const dev = r.tap.name;
    // Attached before the link comes up: every frame the kernel sends (DAD, MLD too) goes through it.
    r.steering = TapSteering.load(config);
    r.steering.attach(r.tap.fds[0] as number);
    if (options.hwTags) {
      // Attached in our namespace (ifindex lookup), before the tap moves into the test namespace.
      const ifindex = Number(readFileSync(`/sys/class/net/${dev}/ifindex`, 'utf8'));
      r.cleanup.push(pushVlanTagsOnEgress(ifindex, options.hwTags));
    }
    ns.adopt(dev);
    // Room for a whole run per queue even when the test process is slow to read (a busy machine).
    ns.ip('link', 'set', 'dev', dev, 'txqueuelen', '20000');
    ns.configure(dev, `${V4.kernel}/24`, KERNEL_MAC);
    ns.ip('-6', 'addr', 'add', `${V6.kernel}/64`, 'dev', dev, 'nodad');
    ns.ip('neigh', 'replace', V4.guest, 'lladdr', GUEST_MAC, 'dev', dev, 'nud', 'permanent');
    ns.ip('-6', 'neigh', 'replace', V6.guest, 'lladdr', GUEST_MAC, 'dev', dev, 'nud', 'permanent');
    // VLAN devices (kernels with 8021q): the stack hands tun their tag in skb->vlan_tci.
    const vlan = (name: string, link: string, proto: string, id: number, net: number): boolean => {
      try {
        ns.ip('link', 'add', 'link', link, 'name', name, 'type', 'vlan', 'proto', proto, 'id', String(id));
      } catch (err) {
        if (/Unknown device type/.test(String(err))) return false;
        throw err;
      }
      ns.configure(name, `10.${net}.0.1/24`);
      ns.ip('neigh', 'replace', `10.${net}.0.2`, 'lladdr', GUEST_MAC, 'dev', name, 'nud', 'permanent');
      r.vlanTargets.push(`10.${net}.0.2`);
      r.vlanDevs.push(name);
      return true;
    };
    if (vlan('vq5', dev, '802.1Q', 5, 78)) {
      vlan('vq56', 'vq5', '802.1Q', 6, 79);
      vlan('vad7', dev, '802.1ad', 7, 80);
      vlan('vad78', 'vad7', '802.1Q', 8, 81);
      vlan('vq569', 'vq56', '802.1Q', 9, 82); // three tags: unclassified
    }
    r.tap.attach(r.sink);
  } catch (err) {
    for (const f of r.cleanup) f();
    r.tap?.close();
    r.steering?.close();
    ns.delete();
    throw err;
  }
  return r;
}

/** Runs the traffic script; resolves when it exited and no frame arrived for 300 ms. */
async function traffic(r: Rig, rounds: number, raw: { dev: string; frame: Uint8Array }[]): Promise<void> {
  const child = r.ns.spawn('python3', [
    '-c',
    PY_TRAFFIC,
    V4.guest,
    V6.guest,
    V4.noNeigh,
    String(rounds),
    r.vlanTargets.join(','),
  ]);
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const exited = new Promise<number>((resolve) => child.on('exit', (code) => resolve(code ?? -1)));
  child.stdin?.end(raw.map((x) => `${x.dev} ${Buffer.from(x.frame).toString('hex')}\n`).join(''));
  const code = await exited;
  expect(code, stderr).toBe(0);
  await settle(r);
}

/** Resolves once no frame arrived for 300 ms (frames already steered are all read by then). */
async function settle(r: Rig): Promise<void> {
  let last = -1;
  let stableSince = Date.now();
  await waitUntil(
    () => {
      const n = r.sink.frames.length;
      if (n !== last) {
        last = n;
        stableSince = Date.now();
      }
      return Date.now() - stableSince > 300;
    },
    30_000,
    'traffic to settle',
  );
}

function expectedQueue(frame: Uint8Array, config: RssSteeringConfig): number {
  const h = rssHash(frame, config.hashTypes, config.key);
  const q = h ? (config.table[h.hash & (config.table.length - 1)] as number) : config.defaultQueue;
  return q % QUEUES; // tun: return value % attached queues
}

const scratch = new ParsedPacket();
function kind(frame: Uint8Array): string {
  const p = parsePacket(frame, scratch);
  const tags = p.vlanCount ? `vlan${p.vlanCount} ` : '';
  if (p.l3Kind === L3_IPV4 || p.l3Kind === L3_IPV6) {
    const l3 = p.l3Kind === L3_IPV4 ? 'ipv4' : 'ipv6';
    const ext = p.hasExtHeaders ? '+ext' : '';
    const l4 = p.isFragment ? 'frag' : p.l4Kind === L4_TCP ? 'tcp' : p.l4Kind === L4_UDP ? 'udp' : 'other';
    return `${tags}${l3}${ext} ${l4}`;
  }
  return `${tags}${p.truncated ? 'truncated' : p.etherType === 0x0806 ? 'arp' : 'non-ip'}`;
}

/** Checks every collected frame; returns counts per kind (for the report) and per queue. */
function check(r: Rig, config: RssSteeringConfig) {
  const kinds: Record<string, number> = {};
  const queues = new Array(QUEUES).fill(0);
  const wrong: string[] = [];
  let wrongCount = 0;
  /** Frames whose _EX addresses differ from the plain ones (Home Address option, type 2 RH). */
  let exFrames = 0;
  for (const f of r.sink.frames) {
    const want = expectedQueue(f.frame, config);
    const k = kind(f.frame);
    kinds[k] = (kinds[k] ?? 0) + 1;
    queues[f.queuePair]++;
    const p = parsePacket(f.frame, scratch);
    if (
      p.l3Kind === L3_IPV6 &&
      (p.exSrcAddrOffset !== p.srcAddrOffset || p.exDstAddrOffset !== p.dstAddrOffset)
    )
      exFrames++;
    if (f.queuePair !== want && wrongCount++ < 10)
      wrong.push(
        `${k}: queue ${f.queuePair}, expected ${want}: ${Buffer.from(f.frame.subarray(0, 96)).toString('hex')}`,
      );
  }
  expect(wrong, `${wrongCount} of ${r.sink.frames.length} frames on the wrong queue`).toEqual([]);
  return { kinds, queues, total: r.sink.frames.length, exFrames };
}

const rawFrames = (r: Rig) => [
  ...craftedFrames().map((frame) => ({ dev: r.tap.name, frame })),
  ...randomFrames(600, 7).map((frame) => ({ dev: r.tap.name, frame })),
  // Frames with tags in the data sent on a VLAN device: its tag in skb->vlan_tci + data tags.
  ...(r.vlanDevs.includes('vq5')
    ? [
        [],
        [{ tpid: 0x8100, tci: 3 }],
        [
          { tpid: 0x8100, tci: 3 },
          { tpid: 0x8100, tci: 4 },
        ],
      ].flatMap((tags) =>
        [1, 2, 3, 4].map((p) => ({
          dev: 'vq5',
          frame: eth(tags, 0x0800, ipv4({ proto: 17, payload: l4(17, 4000 + p, 53, 8) })),
        })),
      )
    : []),
];

function table(n: number, seed: number, max = QUEUES): number[] {
  return Array.from({ length: n }, (_, i) => (i * 7 + seed + ((i * seed) >> 3)) % max);
}

function report(name: string, s: ReturnType<typeof check>): void {
  const kinds = Object.entries(s.kinds)
    .sort((a, b) => b[1] - a[1])
    .map(([k, n]) => `${k}=${n}`)
    .join(', ');
  console.log(
    `[tap-steering] ${name}: ${s.total} frames checked (${s.exFrames} with _EX addresses), per queue ${s.queues.join('/')}; ${kinds}`,
  );
}

describe.skipIf(unavailableHere !== null)(
  `TapSteering on a 4-queue tap${unavailableHere ? ` (skipped: ${unavailableHere})` : ''}`,
  () => {
    const configs: [string, RssSteeringConfig][] = [
      [
        'all hash types, spec key, 128 entries',
        { key: SPEC_KEY, hashTypes: ALL, table: table(128, 1), defaultQueue: 2 },
      ],
      [
        'IPv4 + IPv6 only (no ports)',
        {
          key: SPEC_KEY,
          hashTypes: VIRTIO_NET_RSS_HASH_TYPE_IPv4 | VIRTIO_NET_RSS_HASH_TYPE_IPv6,
          table: table(64, 3),
          defaultQueue: 1,
        },
      ],
      [
        'TCP only',
        {
          key: SPEC_KEY,
          hashTypes: VIRTIO_NET_RSS_HASH_TYPE_TCPv4 | VIRTIO_NET_RSS_HASH_TYPE_TCPv6,
          table: table(16, 5),
          defaultQueue: 3,
        },
      ],
      [
        'UDP + IPv6, other key, queue numbers past the tap queues (modulo)',
        {
          key: OTHER_KEY,
          hashTypes:
            VIRTIO_NET_RSS_HASH_TYPE_UDPv4 | VIRTIO_NET_RSS_HASH_TYPE_UDPv6 | VIRTIO_NET_RSS_HASH_TYPE_IPv6,
          table: table(8, 2, 256),
          defaultQueue: 6,
        },
      ],
      [
        'all nine hash types (_EX: Home Address / Routing Header type 2)',
        { key: SPEC_KEY, hashTypes: 0x1ff, table: table(128, 13), defaultQueue: 1 },
      ],
      [
        'IP_EX only',
        { key: OTHER_KEY, hashTypes: VIRTIO_NET_RSS_HASH_TYPE_IP_EX, table: table(32, 6), defaultQueue: 0 },
      ],
      [
        'TCP_EX + UDPv6 + IPv4',
        {
          key: SPEC_KEY,
          hashTypes:
            VIRTIO_NET_RSS_HASH_TYPE_TCP_EX | VIRTIO_NET_RSS_HASH_TYPE_UDPv6 | VIRTIO_NET_RSS_HASH_TYPE_IPv4,
          table: table(64, 8),
          defaultQueue: 3,
        },
      ],
      [
        'all hash types, 16-byte key, 2 entries',
        { key: OTHER_KEY.slice(0, 16), hashTypes: ALL, table: [1, 3], defaultQueue: 0 },
      ],
    ];

    for (const [name, config] of configs)
      it(`steers every frame to rssHash's queue: ${name}`, { timeout: 90_000 }, async () => {
        const r = rig(config);
        await traffic(r, 64, rawFrames(r));
        const s = check(r, config);
        report(name, s);
        // Coverage: the kinds the program distinguishes all showed up.
        for (const k of [
          'ipv4 udp',
          'ipv4 tcp',
          'ipv4 frag',
          'ipv6 udp',
          'ipv6 tcp',
          'ipv6+ext frag',
          'ipv6+ext tcp',
          'arp',
          'vlan1 ipv4 udp',
          'vlan2 ipv4 udp',
          'vlan2 non-ip',
        ])
          expect(s.kinds[k] ?? 0, k).toBeGreaterThan(0);
        expect(s.total).toBeGreaterThan(1500);
        expect(s.exFrames).toBeGreaterThan(100);
        // Steering spreads over every queue the table (and default queue) names, no more.
        const named = new Set([...config.table, config.defaultQueue].map((q) => q % QUEUES));
        expect(s.queues.flatMap((n, q) => (n > 0 ? [q] : []))).toEqual([...named].sort());
      });

    for (const [name, hwTags] of [
      ['one 802.1Q tag in skb->vlan_tci', [{ tpid: 0x8100, tci: 5 }]],
      [
        '802.1Q in the data + 802.1ad in skb->vlan_tci',
        [
          { tpid: 0x8100, tci: 6 },
          { tpid: 0x88a8, tci: 7 },
        ],
      ],
    ] as const)
      it(`counts a tag the stack keeps out of the data: ${name}`, { timeout: 90_000 }, async () => {
        const config: RssSteeringConfig = {
          key: SPEC_KEY,
          hashTypes: ALL,
          table: table(128, 11),
          defaultQueue: 2,
        };
        const r = rig(config, { hwTags: [...hwTags] });
        await traffic(r, 32, rawFrames(r));
        const s = check(r, config);
        report(`hw tags: ${name}`, s);
        // Every frame carries the pushed tags (tun wrote the accelerated one into the frame).
        const n = hwTags.length;
        for (const k of [`vlan${n} ipv4 udp`, `vlan${n} ipv6 tcp`, `vlan${n} arp`, 'vlan2 non-ip'])
          expect(s.kinds[k] ?? 0, k).toBeGreaterThan(0);
        expect(Object.keys(s.kinds).filter((k) => !k.startsWith('vlan'))).toEqual([]);
        expect(s.queues.filter((q) => q > 0).length).toBe(QUEUES);
      });

    it('update() switches the table and hash types at run time without reloading', {
      timeout: 90_000,
    }, async () => {
      const first: RssSteeringConfig = {
        key: SPEC_KEY,
        hashTypes: ALL,
        table: table(128, 9),
        defaultQueue: 0,
      };
      const r = rig(first);
      const steering = r.steering as TapSteering;
      await traffic(r, 32, rawFrames(r).slice(0, 800));
      report('update: before', check(r, first));
      const configs: RssSteeringConfig[] = [
        { key: SPEC_KEY, hashTypes: ALL, table: [3], defaultQueue: 3 },
        {
          key: OTHER_KEY,
          hashTypes: VIRTIO_NET_RSS_HASH_TYPE_UDPv4 | VIRTIO_NET_RSS_HASH_TYPE_TCPv6,
          table: table(32, 4),
          defaultQueue: 2,
        },
        { key: SPEC_KEY, hashTypes: 0, table: [0, 1, 2, 3], defaultQueue: 1 },
      ];
      for (const [i, config] of configs.entries()) {
        steering.update(config);
        // Frames steered before the update (a timer's ARP retry, say) are read and dropped first.
        await settle(r);
        r.sink.frames.length = 0;
        await traffic(r, 32, rawFrames(r).slice(0, 800));
        const s = check(r, config);
        report(`update ${i + 1}`, s);
        expect(s.total).toBeGreaterThan(500);
        if (config.table.length === 1 || config.hashTypes === 0)
          expect(s.queues.filter((n) => n > 0)).toHaveLength(1); // all on one queue
      }
      // Invalid updates are refused and leave the program running on the last good config.
      expect(() => steering.update({ ...configs[0]!, table: [0, 1, 2] })).toThrow(/power of 2/);
    });

    it('detach() returns the tap to its own steering; attach/detach errors are BackendErrors', () => {
      const config: RssSteeringConfig = { key: SPEC_KEY, hashTypes: ALL, table: [3], defaultQueue: 3 };
      const r = rig(config);
      const steering = r.steering as TapSteering;
      steering.detach(r.tap.fds[1] as number);
      steering.attach(r.tap.fds[2] as number); // any queue fd of the tap
      steering.detach(r.tap.fds[0] as number);
      expect(() => steering.attach(0)).toThrow(/TUNSETSTEERINGEBPF on fd 0 failed/);
      steering.close();
      steering.close();
      expect(() => steering.attach(r.tap.fds[0] as number)).toThrow(/closed/);
    });
  },
);
