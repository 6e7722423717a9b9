/**
 * Our virtio-net device (createVirtioNetPci) as a stock Linux guest's NIC: QEMU 11.x attaches it over
 * vfio-user (our server, in this process), its backend is a TapBackend in a network namespace the test
 * creates, and Linux 6.1's own virtio_pci / virtio_net drivers drive it. Issue 9's "done means":
 * features (offered ∩ what Linux 6.1 supports), MAC, ping both ways, TCP both ways with checksums with
 * mergeable rx buffers on and off, multiqueue spread, RSS steering by `ethtool -X weight` (guest counters,
 * guest interrupts and our counters agree), tx on every pair after `ethtool -X`, `ethtool -X hkey`
 * reaching the device, host link down/up reaching the guest, packed rings, and nothing left behind.
 * The same guest steps pass against QEMU's virtio-net-pci in reference-net.test.ts.
 */
import type { ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseServeWorkers, virtioNetVfioUserDevice } from '../../devices/serve/vfio-user.js';
import { LINUX_6_1_FEATURES, LINUX_7_2_FEATURES } from '../../devices/testing/net-driver.js';
import type { VirtioNetPciOptions } from '../../devices/virtio-net/options.js';
import type { QueueStats } from '../../devices/virtio-net/stats.js';
import type { WorkerPool } from '../../devices/virtio-net/workers/pool.js';
import type { VirtioNetPci } from '../../devices/virtio-net-pci.js';
import { cleanupNamespaces, ip, NetNamespace } from '../../lib/host/netns.js';
import { GuestMemory } from '../../lib/memory/guest-memory.js';
import { toeplitzHash } from '../../lib/net/toeplitz.js';
import { TapBackend, type TapStats } from '../../lib/tap/tap-backend.js';
import type { VfioUserServer } from '../../lib/vfio-user/server.js';
import {
  GUEST_KERNELS,
  type GuestKernel,
  type GuestRunResult,
  guestPaths,
  guestUnavailableReason,
  inProcessServer,
  runGuest,
} from './launch.test-support.js';

const reasons = new Map(GUEST_KERNELS.map((k) => [k, guestUnavailableReason(undefined, k)]));
for (const [k, reason] of reasons)
  if (reason && process.env.CI) throw new Error(`guest test (Linux ${k}) cannot run in CI: ${reason}`);
/** The VXLAN scenario needs iproute2 in the 7.2 kit (prepare.sh adds it to a kit made before it did). */
const noIproute2 = existsSync(join(guestPaths(undefined, '7.2').guestKit, 'iproute2/usr/sbin/ip'))
  ? null
  : 'no iproute2 in the Linux 7.2 guest kit (run test/guest/prepare.sh)';
if (noIproute2 && !reasons.get('7.2') && process.env.CI)
  throw new Error(`guest test (Linux 7.2) cannot run in CI: ${noIproute2}`);
/** What each kernel's virtio_net / virtio_pci accept: negotiated = offered ∩ this. */
const KERNEL_FEATURES: Record<GuestKernel, bigint> = { '6.1': LINUX_6_1_FEATURES, '7.2': LINUX_7_2_FEATURES };
const PEER = join(import.meta.dirname, 'tcp-peer.mjs');
const HOST = '10.77.1.1';
const GUEST = '10.77.1.2';
const MAC = '52:54:00:77:01:02';
const TAP = 'vntn0';
/**
 * VXLAN tunnels between the guest and the host's namespace over the tap: VNI 42 without outer UDP
 * checksums (Linux's IPv4 default), VNI 43 with them (so the guest's frames ask for UDP_TUNNEL_CSUM).
 */
const TUNNELS = [
  { vni: 42, host: '10.99.1.1', guest: '10.99.1.2', csum: false },
  { vni: 43, host: '10.99.2.1', guest: '10.99.2.2', csum: true },
] as const;
const BUSYBOX = join(guestPaths().guestKit, 'bb/bin/busybox');
/**
 * The host's UDP bursts come from these source ports (to GUEST port 9), round robin. Scattered on
 * purpose: the Toeplitz hash is linear, so ports differing in a few low bits would split evenly over the
 * queues under any key, and could not tell one key from another.
 */
const UDP_FLOWS = 16;
const UDP_PORTS = Array.from({ length: UDP_FLOWS }, (_, i) => 40000 + (((i * 2654435761) >>> 0) % 20000));
const BYTES = 4 << 20;
/** The coalescing scenario's UDP pacing (COUNT.BURST.MS) and `ethtool -C` rx-usecs / rx-frames. */
const PACED_COUNT = '400';
const PACED = `${PACED_COUNT}.1.4`;
const HOLD_US = 30_000;
const FRAMES = 32;
const KEY = Array.from({ length: 40 }, (_, i) => ((i * 53 + 7) & 0xff).toString(16).padStart(2, '0')).join(
  '',
);

afterAll(() => cleanupNamespaces());

function lineFrom(child: ChildProcess, re: RegExp): Promise<string> {
  return new Promise((resolve, reject) => {
    let buf = '';
    child.stdout?.on('data', (d: Buffer) => {
      buf += d.toString();
      const m = buf.split('\n').find((l) => re.test(l));
      if (m) resolve(m);
    });
    child.once('exit', (code) => reject(new Error(`peer exited ${code}: ${buf}`)));
  });
}

const fdCount = () => readdirSync('/proc/self/fd').length;
const mounted = (path: string) => readFileSync('/proc/self/mountinfo', 'utf8').includes(path);
/** Processes whose command line mentions `s` (QEMU with the run folder, peers in the namespace). */
function processesMentioning(s: string): string[] {
  const out: string[] = [];
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid) || Number(pid) === process.pid) continue;
    try {
      const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
      if (cmd.includes(s)) out.push(`${pid}: ${cmd}`);
    } catch {
      // exited meanwhile
    }
  }
  return out;
}

/** What the host saw at a guest `mark:NAME` step: its counters and the guest's latest ones. */
interface Mark {
  dev: (QueueStats & { pair: number })[];
  guest: Record<string, number>;
  linkUp: boolean;
  rssKey: string;
  /** The features the driver wrote (the device forgets them at reset, when QEMU disconnects). */
  features: bigint;
  /** Queue pairs the device has in use. */
  queuePairs: number;
  /** Control-queue commands handled (VIRTIO_NET_STATS_TYPE_CVQ counts them too) and admin commands. */
  ctrlCommands: number;
  adminCommands: number;
  /** Admin commands answered with an error status. */
  adminErrors: number;
  /** Each data virtqueue's coalescing parameters [max_packets, max_usecs]. */
  coal: [number, number][];
  /** NOTIFICATION_DATA hints the enabled data virtqueues took and ignored (VirtqueueCounters). */
  hints: { accepted: number; rejected: number; stale: number };
}

interface Run {
  kernel: GuestKernel;
  r: GuestRunResult;
  res: Record<string, string>;
  net: VirtioNetPci;
  /** The tap's counters when the guest was done. */
  tapStats: TapStats;
  server: VfioUserServer;
  marks: Map<string, Mark>;
  hostPings: Promise<string>[];
  tcp: Promise<[string, string]>[];
  diag: string;
  /** The device's link state when the guest had seen the carrier go down. */
  linkWhileDown: boolean | null;
  leftovers(): Promise<void>;
}

/**
 * Boots the guest with our device (`options`) on a TAP in a fresh namespace, answering the guest's
 * host-side requests: TCP receivers on 5001/5002 and senders when it listens, pings, UDP bursts, link
 * down/up, and device snapshots at marks. With `tunnels`, the host's ends of VXLAN tunnels (TUNNELS, to the
 * guest's address over the tap): the guest's `vxlan` steps make the other ends, and the TCP transfers after
 * each go through it (the receivers listen on every address, the sender goes to the tunnel's guest end).
 */
async function boot(
  kernel: GuestKernel,
  options: Partial<VirtioNetPciOptions>,
  steps: string,
  tunnels = false,
  tapOptions: { rssSteering?: boolean } = {},
): Promise<Run> {
  const fds0 = await settledFdCount();
  const ns = NetNamespace.create('vntn');
  const queues = options.queues ?? 1;
  const tap = TapBackend.open({ name: TAP, queues, netns: ns.name, ...tapOptions });
  ns.exec('sysctl', ['-q', '-w', `net.ipv6.conf.${TAP}.disable_ipv6=1`]); // no IPv6 chatter in the counts
  ns.configure(TAP, `${HOST}/24`);
  for (const t of tunnels ? TUNNELS : []) {
    const dev = `vx${t.vni}`;
    // biome-ignore format: one ip command
    ns.ip('link', 'add', dev, 'type', 'vxlan', 'id', String(t.vni), 'remote', GUEST, 'local', HOST, 'dstport', '4789', 'dev', TAP, t.csum ? 'udpcsum' : 'noudpcsum');
    ns.exec('sysctl', ['-q', '-w', `net.ipv6.conf.${dev}.disable_ipv6=1`]);
    ns.configure(dev, `${t.host}/24`);
  }
  const tcpHost = tunnels ? '0.0.0.0' : HOST;
  let tcpGuest = GUEST;
  const memory = new GuestMemory();
  // createVirtioNetPci plus the adapter to the server's device interface (docs/vfio-user.md).
  const device = virtioNetVfioUserDevice({ ...options, memory, backend: tap, mac: MAC });
  const net = device.net;
  let server: VfioUserServer | null = null;
  const marks = new Map<string, Mark>();
  const latest: Record<string, number> = {};
  const hostPings: Promise<string>[] = [];
  const tcp: Promise<[string, string]>[] = [];
  const peerErrors: string[] = [];
  const txIndex = new Set<number>();
  let linkWhileDown: boolean | null = null;
  const onPeerError = (e: unknown) => peerErrors.push(String(e));
  let r: GuestRunResult;
  let finalStats = '';
  let tapStats: TapStats | undefined;
  const stallDump: string[] = [];
  let stopStallTimer = () => {};
  try {
    const receivers = new Map<number, Promise<string>>();
    for (const port of [5001, 5002]) {
      const recv = ns.spawn('node', [PEER, 'recv', tcpHost, String(port)]);
      const got = lineFrom(recv, /^(bytes=|error=)/);
      got.catch(onPeerError);
      receivers.set(port, got);
      await lineFrom(recv, /^ready$/);
    }
    // A stalled guest step (say a transfer that stops) is killed only at the timeout: record our side
    // when the console has been silent for 20 s, for the failure message.
    let lastLine = Date.now();
    const stallTimer = setInterval(() => {
      if (Date.now() - lastLine > 20_000 && stallDump.length < 2) {
        stallDump.push(JSON.stringify({ device: net.stats(), tap: tap.stats(), rings: ringIndices(net) }));
        lastLine = Date.now();
      }
    }, 2000);
    stopStallTimer = () => clearInterval(stallTimer);
    r = await runGuest({
      kernel,
      onLine: () => {
        lastLine = Date.now();
      },
      params: {
        match: '1af4:1041',
        ip: `${GUEST}/24`,
        peer: HOST,
        port: 5001,
        bytes: BYTES,
        steps,
      },
      startServer: inProcessServer(device, (s) => (server = s)),
      onResult: (k, v) => {
        if (k.startsWith('stat_') || k.startsWith('irq_')) latest[k] = Number(v);
        else if (k === 'vxlan_local') tcpGuest = v;
        else if (k === 'tcp_tx_rc') {
          // Pair the guest's send with the receiver it went to (5001 first, then 5002).
          const port = 5001 + tcp.filter((_, i) => txIndex.has(i)).length;
          txIndex.add(tcp.length);
          const got = receivers.get(port) ?? Promise.resolve('no receiver');
          tcp.push(got.then((g) => [`tx:${port}`, g]));
        } else if (k === 'tcp_rx_listening') {
          const send = ns.spawn('node', [PEER, 'send', tcpGuest, v, String(BYTES)]);
          const p = lineFrom(send, /^(bytes=|error=)/);
          p.catch(onPeerError);
          tcp.push(p.then((g) => [`rx:${v}`, g]));
        } else if (k === 'host_ping_go') {
          // The guest kit's static busybox: hosts (and CI machines) need not have iputils.
          const ping = ns.spawn(BUSYBOX, ['ping', '-c', v, '-i', '0.2', '-W', '2', GUEST]);
          const p = lineFrom(ping, / received/);
          p.catch(onPeerError);
          hostPings.push(p);
        } else if (k === 'udp_go') {
          // v: COUNT or COUNT.BURST.MS (pacing).
          const [count, ...pace] = v.split('.');
          const udp = ns.spawn('node', [
            PEER,
            'udp',
            GUEST,
            '9',
            count as string,
            String(UDP_FLOWS),
            UDP_PORTS.join(','),
            ...pace,
          ]);
          lineFrom(udp, /^sent=/).catch(onPeerError);
        } else if (k === 'carrier_wait') {
          if (v === 'up') linkWhileDown = net.net.linkUp;
          ns.ip('link', 'set', 'dev', TAP, v); // 'down', then 'up': the host pulls and restores the cable
        } else if (k === 'mark') {
          const snap = net.stats() as {
            linkUp: boolean;
            queuePairs: number;
            ctrlCommands: number;
            queues: (QueueStats & { pair: number })[];
          };
          marks.set(v, {
            dev: snap.queues.map((q) => ({ ...q })),
            guest: { ...latest },
            linkUp: snap.linkUp,
            rssKey: Buffer.from(net.net.snapshot().rss.key).toString('hex'),
            features: net.transport.driverFeatures,
            queuePairs: snap.queuePairs,
            ctrlCommands: snap.ctrlCommands,
            adminCommands: net.transport.admin?.stats.commands ?? 0,
            adminErrors: net.transport.admin?.stats.errors ?? 0,
            coal: net.net.coalescers.map((c) => [c.maxPackets, c.maxUsecs]),
            hints: net.net.coalescers.reduce(
              (h, _, i) => {
                const c = net.transport.queueCounters(i);
                return {
                  accepted: h.accepted + (c?.hintsAccepted ?? 0),
                  rejected: h.rejected + (c?.hintsRejected ?? 0),
                  stale: h.stale + (c?.hintsStale ?? 0),
                };
              },
              { accepted: 0, rejected: 0, stale: 0 },
            ),
          });
        }
      },
      timeoutMs: 170_000,
      logDir: process.env.VNT_GUEST_LOGDIR, // keeps serial.log and cmd.txt for a failing run
    });
  } finally {
    stopStallTimer();
    tapStats = tap.stats();
    finalStats = JSON.stringify({
      device: net.stats(),
      tap: tap.stats(),
      server: (server as VfioUserServer | null)?.stats(),
    });
    device.close();
    ns.delete();
  }
  if (process.env.VNT_GUEST_LOGDIR)
    writeFileSync(
      join(process.env.VNT_GUEST_LOGDIR, `marks-${kernel}-q${queues}.json`),
      JSON.stringify(
        Object.fromEntries(marks),
        (_, v) => (typeof v === 'bigint' ? `0x${v.toString(16)}` : v),
        1,
      ),
    );
  const runDir = r.runDir;
  const nsName = ns.name;
  const diag = `\n${r.lines
    .filter((l) => !l.startsWith('RESULT stat_') && !l.startsWith('RESULT irq_'))
    .slice(-80)
    .join(
      '\n',
    )}${peerErrors.length ? `\npeer errors: ${peerErrors.join('; ')}` : ''}\nstats at the end: ${finalStats}${stallDump.map((d) => `\nstalled: ${d}`).join('')}`;
  return {
    kernel,
    r,
    res: r.results,
    net,
    tapStats: tapStats as TapStats,
    server: server as unknown as VfioUserServer,
    marks,
    hostPings,
    tcp,
    diag,
    linkWhileDown,
    async leftovers() {
      // Killed peers' pipes close when Node sees them exit: give that a moment before counting.
      for (let i = 0; i < 100 && (fdCount() !== fds0 || processesMentioning(nsName).length > 0); i++)
        await new Promise((res) => setTimeout(res, 20));
      expect(processesMentioning(runDir)).toEqual([]);
      expect(processesMentioning(nsName)).toEqual([]);
      expect(ip('netns', 'list')).not.toContain(nsName);
      expect(existsSync(runDir)).toBe(false);
      expect(mounted(runDir)).toBe(false);
      expect(mounted('qemu-root')).toBe(false);
      expect((server as unknown as VfioUserServer).dmaRegions()).toEqual([]);
      expect(fdCount()).toBe(fds0);
    },
  };
}

/**
 * Each enabled split ring's indices as the guest memory holds them (avail idx, used_event, used idx,
 * avail_event) next to the device's own (next avail, next used, last signalled used): tells a device
 * waiting for buffers from a guest waiting for an interrupt.
 */
function ringIndices(net: VirtioNetPci): unknown[] {
  const qs = net.transport.snapshot().transport.queues;
  return qs.flatMap((q, i): unknown[] => {
    if (!q.enabled) return [];
    const drv = q.driver[0] + q.driver[1] * 2 ** 32;
    const dev = q.device[0] + q.device[1] * 2 ** 32;
    try {
      const m = net.memory;
      return [
        {
          q: i,
          availIdx: m.readU16(drv + 2),
          usedEvent: m.readU16(drv + 4 + 2 * q.size),
          usedIdx: m.readU16(dev + 2),
          availEvent: m.readU16(dev + 4 + 8 * q.size),
          ring: q.ring,
        },
      ];
    } catch (e) {
      return [{ q: i, error: String(e) }];
    }
  });
}

/** Bits set in sysfs' `features` (bit 0 first) as a bigint. */
function sysfsFeatures(s: string): bigint {
  let f = 0n;
  for (let i = 0; i < s.length; i++) if (s[i] === '1') f |= 1n << BigInt(i);
  return f;
}
const hex = (f: bigint) => `0x${f.toString(16)}`;
const negotiatedFeatures = (run: Run) => sysfsFeatures(run.res.virtio_features ?? '');

/** Features, MAC, link, ping both ways, TCP both ways: what every configuration must do. */
async function expectBasics(run: Run, pings: number, hostPings: number): Promise<void> {
  const { res, diag, net } = run;
  expect(res.done, diag).toBe('1');
  expect([res.pci_vendor, res.pci_device, res.pci_class]).toEqual(['0x1af4', '0x1041', '0x020000']);
  expect(res.virtio_driver, diag).toBe('virtio-pci');
  expect(res.mac).toBe(MAC);
  // Negotiated = what we offer ∩ what the guest's virtio_net / virtio_pci know, nothing less, nothing more
  // (VIRTIO_F_SR_IOV only where the guest sees the SR-IOV capability: vfio-user hides it).
  const negotiated = sysfsFeatures(res.virtio_features ?? '');
  const sriovBit = res.pci_sriov === '1' ? 0n : 1n << 37n;
  expect(hex(negotiated)).toBe(hex(net.transport.offeredFeatures & KERNEL_FEATURES[run.kernel] & ~sriovBit));
  expect(hex(run.marks.get('up')?.features ?? -1n)).toBe(hex(negotiated));
  expect([res.carrier, res.operstate]).toEqual(['1', 'up']);
  expect(run.r.pairs.filter(([k]) => k === 'ping_received').map(([, v]) => v)).toEqual(
    Array(pings).fill('3'),
  );
  expect(run.r.pairs.filter(([k]) => k === 'host_ping_in').map(([, v]) => v)).toEqual(
    Array(hostPings).fill('3'),
  );
  expect(await Promise.all(run.hostPings)).toEqual(
    Array(hostPings).fill(expect.stringMatching(/^3 packets transmitted, 3 packets received/)),
  );
  // Every TCP transfer arrived intact: the far side's SHA-256 is the sender's.
  const txSha = run.r.pairs.filter(([k]) => k === 'tcp_tx_sha256').map(([, v]) => v);
  const rxSha = run.r.pairs.filter(([k]) => k === 'tcp_rx_sha256').map(([, v]) => v);
  const done = await Promise.all(run.tcp);
  const tx = done.filter(([w]) => w.startsWith('tx:')).map(([, g]) => g);
  const rx = done.filter(([w]) => w.startsWith('rx:')).map(([, g]) => g);
  expect(tx, diag).toEqual(txSha.map((s) => `bytes=${BYTES} sha256=${s}`));
  expect(rx, diag).toEqual(rxSha.map((s) => `bytes=${BYTES} sha256=${s}`));
  expect(tx.length + rx.length).toBeGreaterThanOrEqual(2);
  const st = run.server.stats();
  // Interrupts went out by the vectors' eventfds: the server's, or (pairs on workers) the workers' own.
  const pool = net.net.dataPlane as WorkerPool | null;
  pool?.refreshStats();
  expect(st.irqsSignalled + (pool?.handoffs.interruptsDirect ?? 0)).toBeGreaterThan(0);
  expect(st.errors).toEqual({});
  const ds = net.stats() as { guestErrors: number; txDropped: number; lastError: unknown };
  expect([ds.guestErrors, ds.txDropped, ds.lastError]).toEqual([0, 0, null]);
}

/** The fd count once it stops moving (an earlier test's fds may still be closing), to compare against. */
async function settledFdCount(): Promise<number> {
  let last = fdCount();
  for (let stable = 0, i = 0; stable < 5 && i < 200; i++) {
    await new Promise((res) => setTimeout(res, 20));
    const n = fdCount();
    stable = n === last ? stable + 1 : 0;
    last = n;
  }
  return last;
}

for (const kernel of GUEST_KERNELS) {
  const reason = reasons.get(kernel) ?? null;
  describe.skipIf(reason !== null)(
    `our virtio-net under Linux ${kernel}'s drivers${reason ? ` (skipped: ${reason})` : ''}`,
    () => {
      it('4 queue pairs, RSS + hash report, mergeable rx buffers: features, traffic, ethtool -L/-X, link', {
        timeout: 180_000,
      }, async () => {
        const steps = [
          'pci,virtio,up,mark:up,ping:3,hostping:3,tcptx,tcprx',
          'ethtool,channels:4',
          // Flows spread over the queues (default indirection table): 200 datagrams from 16 source ports.
          'irqs,stats,mark:s0,udp:200,irqs,stats,mark:s1',
          // Everything to queue 1, then everything to queue 2.
          'rssweight:0.1.0.0,irqs,stats,mark:w1a,udp:100,irqs,stats,mark:w1b',
          'rssweight:0.0.1.0,irqs,stats,mark:w2a,udp:100,irqs,stats,mark:w2b',
          `rsskey:${KEY},ethtool,mark:key`,
          // Back to all four queues; TCP both ways again (tx on every pair after -L/-X).
          'rssweight:1.1.1.1,ethtool,irqs,stats,mark:h0,udp:160,irqs,stats,mark:h1',
          'irqs,stats,mark:t0,tcpsyn:8,irqs,stats,mark:t1,tcptx:5002,tcprx:5003,ping:3',
          // The host takes the tap down and up; traffic resumes.
          'carrier,mark:after_carrier,ping:3,hostping:3,irqs,stats,mark:end',
        ].join(',');
        const run = await boot(kernel, { queues: 4, mq: true, rss: true, hash: true, vectors: 10 }, steps);
        const { res, diag, marks } = run;
        await expectBasics(run, 3, 2);
        const f = negotiatedFeatures(run);
        for (const bit of [15n, 16n, 17n, 22n, 57n, 60n])
          expect((f >> bit) & 1n, `feature bit ${bit}`).toBe(1n); // MRG_RXBUF STATUS CTRL_VQ MQ HASH_REPORT RSS
        expect(res.ethtool_driver).toBe('virtio_net');
        expect([res.channels_max, res.ethtool_L_rc, res.channels]).toEqual(['4', '0', '4']);
        // Linux's RSS configurations reached the kernel's eBPF steering program (the spreading checked
        // below is then the kernel's), and the program never failed to load or update.
        expect(run.tapStats.rssSteeringUpdates, diag).toBeGreaterThan(0);
        expect(run.tapStats.ioctlErrors, diag).toBe(0);

        const mark = (n: string) => {
          const m = marks.get(n);
          expect(m, `mark ${n}${diag}`).toBeDefined();
          return m as Mark;
        };
        // Linux 6.1's `ethtool -S` counts packets per queue; 7.2 moved those counters to netlink queue
        // stats, which busybox cannot read. There the guest's side is its interface total (sysfs) and its
        // per-queue interrupts.
        const perQueue = kernel === '6.1';
        /**
         * Increases between two marks: guest rx packets per queue (6.1; zeros on 7.2) and in total, ours,
         * guest input interrupts per queue.
         */
        const deltas = (a: string, b: string) => {
          const [x, y] = [mark(a), mark(b)];
          const q = [0, 1, 2, 3];
          const g = (m: Mark, k: string) => m.guest[k] ?? 0;
          const d = (k: string) => g(y, k) - g(x, k);
          const dev = q.map((i) => (y.dev[i]?.rxPackets ?? 0) - (x.dev[i]?.rxPackets ?? 0));
          return {
            guest: q.map((i) => d(`stat_rx_queue_${i}_packets`)),
            guestTotal: d('stat_if_rx_packets'),
            dev,
            devTotal: dev.reduce((s, n) => s + n, 0),
            irq: q.map((i) => d(`irq_virtio0-input.${i}`)),
          };
        };
        const udpIn = run.r.pairs.filter(([k]) => k === 'udp_in').map(([, v]) => Number(v));
        expect(udpIn, diag).toEqual([200, 100, 100, 160]);

        // Spread: the 16 flows land on several queues; the guest and we count the same frames per queue.
        const spread = deltas('s0', 's1');
        const sMsg = JSON.stringify(spread);
        expect(spread.dev.filter((n) => n >= 5).length, sMsg).toBeGreaterThanOrEqual(2);
        expect(spread.guestTotal, sMsg).toBeGreaterThanOrEqual(200);
        expect(Math.abs(spread.guestTotal - spread.devTotal), sMsg).toBeLessThanOrEqual(2);
        for (let i = 0; i < 4; i++) {
          if (perQueue) {
            const gap = Math.abs((spread.guest[i] as number) - (spread.dev[i] as number));
            expect(gap, sMsg).toBeLessThanOrEqual(2);
          } else if ((spread.dev[i] as number) >= 5) {
            // The guest took interrupts on every queue we delivered to.
            expect(spread.irq[i], `queue ${i} ${sMsg}`).toBeGreaterThan(0);
          }
        }

        // ethtool -X weight: all IPv4 to queue 1, then to queue 2 (non-IP frames may still go to queue 0).
        for (const [a, b, target] of [
          ['w1a', 'w1b', 1],
          ['w2a', 'w2b', 2],
        ] as const) {
          const d = deltas(a, b);
          const msg = `${a}→${b} ${JSON.stringify(d)}`;
          expect(d.dev[target], msg).toBeGreaterThanOrEqual(100);
          if (perQueue) expect(d.dev[target], msg).toBe(d.guest[target]);
          expect(Math.abs(d.guestTotal - d.devTotal), msg).toBeLessThanOrEqual(2);
          expect(d.irq[target], msg).toBeGreaterThan(0);
          for (const other of [1, 2, 3].filter((i) => i !== target)) {
            expect([d.guest[other], d.dev[other], d.irq[other]], `${msg} queue ${other}`).toEqual([0, 0, 0]);
          }
        }
        expect(run.r.pairs.filter(([k]) => k === 'ethtool_X_weight_rc').map(([, v]) => v)).toEqual([
          '0',
          '0',
          '0',
        ]);

        // ethtool -X hkey: the guest reads it back, and it is the key the device hashes with.
        expect(res.ethtool_X_hkey_rc).toBe('0');
        expect(res.rss_hkey).toBe(KEY);
        expect(mark('key').rssKey).toBe(KEY);

        // The device hashes with the guest's key: with the table the guest read back, each of the 16 flows
        // lands where the Toeplitz hash (UDPv4: addresses and ports) under KEY sends it, 10 datagrams each.
        const indir = (run.r.pairs.filter(([k]) => k === 'rss_indir').at(-1)?.[1] ?? '')
          .split(',')
          .map(Number);
        expect(indir.length, diag).toBe(128);
        expect(new Set(indir)).toEqual(new Set([0, 1, 2, 3]));
        const predict = (keyHex: string) => {
          const counts = [0, 0, 0, 0];
          for (let i = 0; i < UDP_FLOWS; i++) {
            const sport = UDP_PORTS[i] as number;
            const input = Uint8Array.from([10, 77, 1, 1, 10, 77, 1, 2, sport >> 8, sport & 0xff, 0, 9]);
            const q = indir[toeplitzHash(Buffer.from(keyHex, 'hex'), input) % indir.length] as number;
            counts[q] = (counts[q] as number) + 160 / UDP_FLOWS;
          }
          return counts;
        };
        const h = deltas('h0', 'h1');
        const hMsg = JSON.stringify({ h, predicted: predict(KEY) });
        // Queue 0 may also take non-IP frames (ARP: unclassified).
        expect([(h.dev[0] as number) >= predict(KEY)[0]!, ...h.dev.slice(1)], hMsg).toEqual([
          true,
          ...predict(KEY).slice(1),
        ]);
        if (perQueue) expect(h.guest.slice(1), hMsg).toEqual(predict(KEY).slice(1));
        expect(Math.abs(h.guestTotal - h.devTotal), hMsg).toBeLessThanOrEqual(2);
        const firstKey = run.r.pairs.find(([k]) => k === 'rss_hkey')?.[1] ?? '';
        if (firstKey !== KEY && predict(firstKey).join() !== predict(KEY).join())
          expect(h.dev.slice(1), hMsg).not.toEqual(predict(firstKey).slice(1));

        // After -L/-X the guest transmits on all four pairs (XPS: CPU 0 → 0 and 2, CPU 1 → 1 and 3), also
        // where its RSS_CONFIG still says 2 tx queues (Linux 6.1): every frame goes out, counted per pair
        // exactly as the guest counts it.
        const [t0, t1] = [mark('t0'), mark('t1')];
        const txDelta = [0, 1, 2, 3].map((i) => (t1.dev[i]?.txPackets ?? 0) - (t0.dev[i]?.txPackets ?? 0));
        const gtx = (m: Mark, i: number) => m.guest[`stat_tx_queue_${i}_packets`] ?? 0;
        const guestTxDelta = [0, 1, 2, 3].map((i) => gtx(t1, i) - gtx(t0, i));
        const guestTxTotal = (t1.guest.stat_if_tx_packets ?? 0) - (t0.guest.stat_if_tx_packets ?? 0);
        const txMsg = JSON.stringify({ txDelta, guestTxDelta, guestTxTotal, queuePairs: t0.queuePairs });
        expect((txDelta[2] as number) + (txDelta[3] as number), txMsg).toBeGreaterThan(0);
        expect(txDelta.filter((n) => n > 0).length, txMsg).toBeGreaterThanOrEqual(3);
        // (A kick still in the socket when the guest's mark line arrives would be counted later by us.)
        const sum = (v: number[]) => v.reduce((a, b) => a + b, 0);
        expect(Math.abs(guestTxTotal - sum(txDelta)), txMsg).toBeLessThanOrEqual(2);
        if (perQueue)
          for (let i = 0; i < 4; i++)
            expect(Math.abs((guestTxDelta[i] as number) - (txDelta[i] as number)), txMsg).toBeLessThanOrEqual(
              2,
            );
        expect(t1.dev.map((q) => q.txDropped)).toEqual([0, 0, 0, 0]);
        // Tx went out on several pairs, none dropped, and the guest's tx counts (per queue on 6.1) are ours.
        const end = mark('end');
        const txq = end.dev.map((q) => q.txPackets);
        expect(txq.filter((n) => n > 0).length, JSON.stringify(txq)).toBeGreaterThanOrEqual(2);
        expect(end.dev.map((q) => q.txDropped)).toEqual([0, 0, 0, 0]);
        const endMsg = JSON.stringify([txq, end.guest]);
        expect(Math.abs(sum(txq) - (end.guest.stat_if_tx_packets ?? -1)), endMsg).toBeLessThanOrEqual(2);
        if (perQueue)
          for (let i = 0; i < 4; i++) {
            const gap = Math.abs((txq[i] as number) - (end.guest[`stat_tx_queue_${i}_packets`] ?? -1));
            expect(gap, endMsg).toBeLessThanOrEqual(2);
          }

        // Host link down/up reached the guest (carrier in sysfs), through the device's link state.
        expect([res.carrier_seen_down, res.carrier_seen_up], diag).toEqual(['1', '1']);
        expect(run.linkWhileDown).toBe(false);
        expect(mark('after_carrier').linkUp).toBe(true);
        await run.leftovers();
      });

      it("2 queue pairs on worker threads (serve's default with queues=2): TCP both ways intact, ethtool -L 2→1→2, ethtool -X weight, no thread or fd left", {
        timeout: 180_000,
      }, async () => {
        const tasks = () => readdirSync('/proc/self/task').length;
        const tasks0 = tasks();
        const steps = [
          'pci,virtio,up,mark:up,ping:3,hostping:3,tcptx,tcprx',
          'ethtool,channels:1,mark:c1,ping:3,tcprx:5003',
          // Back to 2 pairs; then every IPv4 flow to queue 1 (worker 1) and TCP both ways on both again.
          'channels:2,rssweight:0.1,irqs,stats,mark:w0,udp:100,irqs,stats,mark:w1',
          'rssweight:1.1,tcptx:5002,tcprx:5004,ping:3,irqs,stats,mark:end',
        ].join(',');
        // What `serve -o mq=on -o queues=2 -o rss=on` builds: -o workers=auto puts each pair on a worker.
        const workers = parseServeWorkers(undefined, 2, 0);
        expect(workers).toBe(true);
        const run = await boot(kernel, { queues: 2, mq: true, rss: true, workers }, steps);
        const { diag, marks } = run;
        await expectBasics(run, 3, 1);
        const pool = run.net.net.dataPlane as WorkerPool;
        expect(pool.workerCount).toBe(2);
        // Both workers moved frames both ways on their own tap queue; DMA_MAPs reached them as requests.
        for (const w of pool.workerCounters()) {
          expect(w.tapRx, JSON.stringify(w) + diag).toBeGreaterThan(0);
          expect(w.tapTx, JSON.stringify(w) + diag).toBeGreaterThan(0);
        }
        // Queue interrupts left the workers by QEMU's irqfds, written there (no main-thread handoff).
        pool.refreshStats();
        expect(pool.handoffs.interruptsDirect, JSON.stringify(pool.handoffs)).toBeGreaterThan(0);
        const frames = pool.workerCounters().reduce((a, w) => a + w.tapRx + w.tapTx, 0);
        console.log(
          `workers under Linux ${kernel}: ${frames} frames, handoffs ${JSON.stringify(pool.handoffs)}`,
        );
        const results = (k: string) => run.r.pairs.filter(([x]) => x === k).map(([, v]) => v);
        expect(results('ethtool_L_rc'), diag).toEqual(['0', '0']);
        expect(results('channels'), diag).toEqual(['2', '1', '2']);
        expect(marks.get('c1')?.queuePairs, diag).toBe(1);
        expect(marks.get('w0')?.queuePairs, diag).toBe(2);
        expect(results('ethtool_X_weight_rc'), diag).toEqual(['0', '0']);
        // ethtool -X weight 0 1: the 100 datagrams all reached queue 1 (worker 1), none queue 0's worker.
        const [w0, w1] = [marks.get('w0'), marks.get('w1')];
        expect(w0 && w1, diag).toBeTruthy();
        const rx = (m: Mark, q: number) => m.dev[q]?.rxPackets ?? 0;
        const d = [0, 1].map((q) => rx(w1 as Mark, q) - rx(w0 as Mark, q));
        expect(results('udp_in').map(Number), diag).toEqual([100]);
        expect(d[1], JSON.stringify(d)).toBeGreaterThanOrEqual(100);
        expect(d[0], JSON.stringify(d)).toBeLessThanOrEqual(2); // ARP may still go to queue 0
        const irq = (m: Mark, q: number) => m.guest[`irq_virtio0-input.${q}`] ?? 0;
        expect(irq(w1 as Mark, 1) - irq(w0 as Mark, 1)).toBeGreaterThan(0);
        expect((marks.get('end') as Mark).dev.map((q) => q.txDropped)).toEqual([0, 0]);
        // After shutdown: the workers have exited, no thread and no fd of ours is left.
        await pool.exited();
        for (let i = 0; i < 100 && tasks() !== tasks0; i++) await new Promise((res) => setTimeout(res, 20));
        expect(tasks()).toBe(tasks0);
        await run.leftovers();
      });

      it('2 queue pairs on workers with RSS in software (no eBPF): frames cross between the workers, TCP both ways intact', {
        timeout: 180_000,
      }, async () => {
        // The tap picks the queue by its own flow hash; the guest's RSS (ethtool -X weight 0 1: every
        // IPv4 flow to queue 1) is applied by the device, so the frames read by worker 0 cross to worker 1.
        const steps =
          'pci,virtio,up,mark:up,ping:3,hostping:3,rssweight:0.1,mark:w0,udp:100,stats,mark:w1,tcptx,tcprx,irqs,stats';
        const run = await boot(kernel, { queues: 2, mq: true, rss: true, workers: true }, steps, false, {
          rssSteering: false,
        });
        const { diag, marks } = run;
        await expectBasics(run, 1, 1);
        const pool = run.net.net.dataPlane as WorkerPool;
        expect(pool.workerCount).toBe(2);
        expect(run.tapStats?.rssSteeringUpdates, diag).toBe(0);
        pool.refreshStats();
        console.log(
          `software RSS on workers under Linux ${kernel}: handoffs ${JSON.stringify(pool.handoffs)}`,
        );
        expect(pool.handoffs.crossPairForwards, JSON.stringify(pool.handoffs)).toBeGreaterThan(0);
        expect(pool.handoffs.crossPairDrops).toBe(0);
        // Nothing is left crossing once the guest is done: each forwarded frame was taken out once.
        expect(run.net.stats().queues.map((q) => q.rxCrossingDepth)).toEqual([0, 0]);
        // The 100 datagrams (16 flows the tap spreads over both queues) all reached queue 1.
        const results = (k: string) => run.r.pairs.filter(([x]) => x === k).map(([, v]) => v);
        expect(results('udp_in').map(Number), diag).toEqual([100]);
        const [w0, w1] = [marks.get('w0'), marks.get('w1')];
        expect(w0 && w1, diag).toBeTruthy();
        const rx = (m: Mark, q: number) => m.dev[q]?.rxPackets ?? 0;
        const d = [0, 1].map((q) => rx(w1 as Mark, q) - rx(w0 as Mark, q));
        expect(d[1], JSON.stringify(d)).toBeGreaterThanOrEqual(100);
        expect(d[0], JSON.stringify(d)).toBeLessThanOrEqual(2); // ARP may still go to queue 0
        await pool.exited();
        await run.leftovers();
      });

      it('1 queue pair, no mergeable rx buffers (big packets): features, ping both ways, TCP both ways intact', {
        timeout: 180_000,
      }, async () => {
        const run = await boot(
          kernel,
          { mrg_rxbuf: false },
          'pci,virtio,up,mark:up,ping:3,hostping:3,tcptx,tcprx,stats',
        );
        await expectBasics(run, 1, 1);
        const f = negotiatedFeatures(run);
        expect((f >> 15n) & 1n).toBe(0n); // MRG_RXBUF off
        expect((f >> 7n) & 1n).toBe(1n); // GUEST_TSO4: big packets
        await run.leftovers();
      });

      it('1 queue pair, mergeable rx buffers (Linux defaults): frames read straight into guest buffers, written from guest memory in io_uring batches', {
        timeout: 180_000,
      }, async () => {
        const run = await boot(kernel, {}, 'pci,virtio,up,mark:up,ping:3,hostping:3,tcptx,tcprx,stats');
        await expectBasics(run, 1, 1);
        expect((negotiatedFeatures(run) >> 15n) & 1n).toBe(1n); // MRG_RXBUF
        // Zero copy with a real guest: rx by readv into the lent buffer (GSO super-frames overflow into
        // further mergeable buffers), tx by writev of linear frames; TCP above checked every byte.
        const t = run.tapStats;
        // Small frames (ACKs, pings) are copied by default (zeroCopyRxMinBytes); the bytes of the 4 MiB
        // transfer went straight into the guest's buffers.
        expect(t.rxDirect, run.diag).toBeGreaterThan(0);
        expect(t.rxDirectBytes, run.diag).toBeGreaterThan(0.9 * t.rxBytes);
        expect(t.txDirect, run.diag).toBeGreaterThan(0);
        // Linux's tx bursts went out as io_uring batches (two or more frames per kick), TCP still intact.
        expect(t.txBatches, run.diag).toBeGreaterThan(0);
        await run.leftovers();
      });

      it('packed virtqueues (VIRTIO_F_RING_PACKED), 2 queue pairs: features, ping both ways, TCP both ways intact', {
        timeout: 180_000,
      }, async () => {
        const run = await boot(
          kernel,
          { packed: true, queues: 2, mq: true },
          'pci,virtio,up,mark:up,ping:3,hostping:3,tcptx,tcprx,stats',
        );
        await expectBasics(run, 1, 1);
        expect((negotiatedFeatures(run) >> 34n) & 1n).toBe(1n); // RING_PACKED
        await run.leftovers();
      });

      // Defined for 7.2 only (6.1 does not know IN_ORDER; CI runs report no skips).
      if (kernel === '7.2')
        it('packed virtqueues with IN_ORDER and NOTIFICATION_DATA: TCP both ways intact, used entries batched, kicks carry hints', {
          timeout: 180_000,
        }, async () => {
          const run = await boot(
            kernel,
            { packed: true, in_order: true, notification_data: true },
            'pci,virtio,up,mark:up,ping:3,hostping:3,tcptx,tcprx,stats,mark:end',
          );
          await expectBasics(run, 1, 1);
          const f = negotiatedFeatures(run);
          for (const b of [34n, 35n, 38n]) expect((f >> b) & 1n, `feature bit ${b}`).toBe(1n);
          const end = run.marks.get('end');
          expect(end, run.diag).toBeDefined();
          const q = (end as Mark).dev[0] as QueueStats;
          console.log(
            `in-order (7.2, packed): folded tx ${q.txUsedFolded} rx ${q.rxUsedFolded}, tx packets ${q.txPackets}, rx packets ${q.rxPackets}, hints ${JSON.stringify((end as Mark).hints)}`,
          );
          expect(q.txUsedFolded + q.rxUsedFolded, run.diag).toBeGreaterThan(0);
          expect((end as Mark).hints.accepted, run.diag).toBeGreaterThan(0);
          expect((end as Mark).hints.rejected, run.diag).toBe(0);
          await run.leftovers();
        });

      // Defined for 7.2 only (not skipped under 6.1: CI runs report no skips).
      if (kernel === '7.2')
        it('every feature Linux 7.2 drives, offered at once (ADMIN_VQ, IN_ORDER, NOTIFICATION_DATA, DEVICE_STATS, NOTF_COAL, VQ_NOTF_COAL, GUEST_HDRLEN, MQ/RSS/hash, UDP tunnel GSO): probe, traffic, ethtool -S device counters, ethtool -C interrupt rates', {
          timeout: 240_000,
        }, async () => {
          // One datagram every 4 ms: without coalescing each one finds the guest idle and interrupts it.
          const udp = `udp:${PACED}`;
          const steps = [
            'pci,virtio,up,mark:up,ping:3,hostping:3,tcptx,tcprx',
            'ethtool,channels:4,stats,mark:ds',
            'rssweight:1.0.0.0',
            `irqs,stats,mark:c0,${udp},irqs,stats,mark:c1`,
            `coal:rx-usecs.${HOLD_US}.rx-frames.${FRAMES},irqs,stats,mark:c2,${udp},irqs,stats,mark:c3`,
            `coal:rx-usecs.0.rx-frames.0,pqcoal:0x1:rx-usecs.${HOLD_US}.rx-frames.${FRAMES}`,
            `irqs,stats,mark:c4,${udp},irqs,stats,mark:c5`,
            // net_dim: queue 0 back to 0/0 (dim needs 64 interrupts to decide), adaptive-rx on, then traffic;
            // the driver's dim work sends VQ_SET with its profile.
            'pqcoal:0x1:rx-usecs.0.rx-frames.0,coal:adaptive-rx.on,udp:1000.8.2,mark:dim',
            'ping:3,stats,mark:end',
          ].join(',');
          const run = await boot(
            kernel,
            {
              queues: 4,
              mq: true,
              rss: true,
              hash: true,
              vectors: 10,
              in_order: true,
              notification_data: true,
              device_stats: true,
              notf_coal: true,
              vq_notf_coal: true,
              guest_hdrlen: true,
              // VIRTIO 1.4 UDP tunnel GSO (QEMU 11.1's defaults, named here so the offer is explicit).
              guest_tunnel: true,
              guest_tunnel_csum: true,
              host_tunnel: true,
              host_tunnel_csum: true,
              // An SR-IOV PF owns a device group: VIRTIO_F_ADMIN_VQ (QEMU's vfio-user-pci hides the capability).
              sriov: { totalVfs: 2 },
            },
            steps,
          );
          const { res, diag, marks } = run;
          // Probe completed (7.2 fails it if STATS_QUERY fails, and hangs on an unanswered admin command).
          await expectBasics(run, 2, 1);
          const f = negotiatedFeatures(run);
          // IN_ORDER NOTIFICATION_DATA ADMIN_VQ DEVICE_STATS VQ_NOTF_COAL NOTF_COAL GUEST_HDRLEN MQ RSS HASH_REPORT,
          // GUEST/HOST_UDP_TUNNEL_GSO and their _CSUM
          for (const bit of [35n, 38n, 41n, 50n, 52n, 53n, 59n, 22n, 60n, 57n, 65n, 66n, 67n, 68n])
            expect((f >> bit) & 1n, `feature bit ${bit}`).toBe(1n);
          const mark = (n: string) => {
            const m = marks.get(n);
            expect(m, `mark ${n}${diag}`).toBeDefined();
            return m as Mark;
          };
          // IN_ORDER: the 4 MiB transfers' used entries were batched (buffers completed without an entry of
          // their own; Linux 7.2 read them with its batch_last logic, SHA-256 intact), and the
          // NOTIFICATION_DATA kicks (REGION_WRITEs carrying next_idx) gave hints, none impossible.
          const up = mark('ds'); // after the transfers
          const folded = up.dev.reduce((n, q) => n + q.txUsedFolded + q.rxUsedFolded, 0);
          expect(
            folded,
            `${JSON.stringify(up.dev.map((q) => [q.txUsedFolded, q.rxUsedFolded]))}${diag}`,
          ).toBeGreaterThan(0);
          expect([up.hints.accepted > 0, up.hints.rejected], JSON.stringify(up.hints)).toEqual([true, 0]);
          console.log(
            `in-order (7.2, split): folded tx ${up.dev.map((q) => q.txUsedFolded)} rx ${up.dev.map((q) => q.rxUsedFolded)}, tx packets ${up.dev.map((q) => q.txPackets)}, rx packets ${up.dev.map((q) => q.rxPackets)}, hints ${JSON.stringify(up.hints)}`,
          );
          // The admin queue answered the activation sequence (LIST_QUERY, LIST_USE, CAP_ID_LIST_QUERY, …).
          expect(mark('up').adminCommands, diag).toBeGreaterThanOrEqual(3);
          expect(mark('end').adminErrors, diag).toBe(0);
          expect([res.channels_max, res.channels]).toEqual(['4', '4']);

          // ethtool -S: the driver's STATS_GET of every queue shows our counters (the guest is idle between
          // its `ethtool -S` and our snapshot; a stray frame at most).
          const ds = mark('ds');
          const g = (k: string) => ds.guest[`stat_${k}`];
          const dsMsg = JSON.stringify({ guest: ds.guest, dev: ds.dev });
          for (let i = 0; i < 4; i++) {
            const q = ds.dev[i] as QueueStats;
            const pairs: [string, number][] = [
              [`rx${i}_hw_packets`, q.rxPackets],
              [`rx${i}_hw_notifications`, q.rxKicks],
              [`rx${i}_hw_interrupts`, q.rxInterrupts],
              // The guest's own count of its notifications (kicks) and ours.
              [`rx${i}_kicks`, q.rxKicks],
              [`tx${i}_kicks`, q.txKicks],
              [`tx${i}_hw_packets`, q.txPackets],
              [`tx${i}_hw_notifications`, q.txKicks],
              [`tx${i}_hw_interrupts`, q.txInterrupts],
            ];
            for (const [name, ours] of pairs) {
              expect(g(name), `${name} missing: ${dsMsg}`).toBeTypeOf('number');
              expect(Math.abs((g(name) as number) - ours), `${name} ${dsMsg}`).toBeLessThanOrEqual(2);
            }
            const bytes: [string, number][] = [
              [`rx${i}_hw_bytes`, q.rxBytes],
              [`tx${i}_hw_bytes`, q.txBytes],
            ];
            for (const [name, ours] of bytes)
              expect(Math.abs((g(name) ?? -1e9) - ours), `${name} ${dsMsg}`).toBeLessThanOrEqual(2 * 1514);
          }
          // The 4 MiB transfers went through the queues the guest read back.
          const sumOf = (k: (i: number) => string) => [0, 1, 2, 3].reduce((s, i) => s + (g(k(i)) ?? 0), 0);
          expect(sumOf((i) => `rx${i}_hw_bytes`)).toBeGreaterThan(4 << 20);
          expect(sumOf((i) => `tx${i}_hw_bytes`)).toBeGreaterThan(4 << 20);
          expect(
            Math.abs(sumOf((i) => `rx${i}_hw_packets`) - (g('if_rx_packets') ?? -1)),
            dsMsg,
          ).toBeLessThanOrEqual(2);
          // GUEST_HDRLEN: Linux 7.2's TSO frames carry the exact header length, which we check: none dropped.
          const gso = ds.dev.reduce((n, q) => n + q.txGsoPackets, 0);
          expect([gso > 0, ds.dev.map((q) => q.txDropMalformed)], dsMsg).toEqual([true, [0, 0, 0, 0]]);
          // The control queue's own counters: every command so far, this STATS_GET included, all OK.
          expect([g('cq_hw_command_num'), g('cq_hw_ok_num')], dsMsg).toEqual([
            ds.ctrlCommands,
            ds.ctrlCommands,
          ]);

          // ethtool -C: interrupts per 1000 received frames, as the guest counts them (/proc/interrupts)
          // and as we count them, before and after global and per-queue coalescing.
          const rate = (a: string, b: string) => {
            const [x, y] = [mark(a), mark(b)];
            const q = [0, 1, 2, 3];
            const frames = q.reduce((s, i) => s + (y.dev[i]!.rxPackets - x.dev[i]!.rxPackets), 0);
            const devIrq = q.reduce((s, i) => s + (y.dev[i]!.rxInterrupts - x.dev[i]!.rxInterrupts), 0);
            const gi = (m: Mark, i: number) => m.guest[`irq_virtio0-input.${i}`] ?? 0;
            const guestIrq = q.reduce((s, i) => s + gi(y, i) - gi(x, i), 0);
            return {
              frames,
              guestIrq,
              devIrq,
              guestPer1000: Math.round((guestIrq * 1000) / frames),
              devPer1000: Math.round((devIrq * 1000) / frames),
            };
          };
          const rates = { none: rate('c0', 'c1'), global: rate('c2', 'c3'), perQueue: rate('c4', 'c5') };
          const rMsg = JSON.stringify(rates);
          process.stdout.write(`[7.2 coalescing] interrupts per 1000 frames: ${rMsg}\n`);
          expect(
            run.r.pairs.filter(([k]) => k === 'udp_in').map(([, v]) => v),
            diag,
          ).toEqual([PACED_COUNT, PACED_COUNT, PACED_COUNT, '1000']);
          for (const r of Object.values(rates)) {
            expect(r.frames, rMsg).toBeGreaterThanOrEqual(Number(PACED_COUNT));
            // Every interrupt we raised reached the guest, and it saw no others on these vectors.
            expect(Math.abs(r.guestIrq - r.devIrq), rMsg).toBeLessThanOrEqual(2);
          }
          expect(rates.none.guestPer1000, rMsg).toBeGreaterThanOrEqual(500);
          for (const r of [rates.global, rates.perQueue]) {
            expect(r.guestPer1000 * 4, rMsg).toBeLessThan(rates.none.guestPer1000);
            // rx-frames: at least one interrupt per FRAMES frames (the timer only ever ends a hold early).
            expect(r.devIrq, rMsg).toBeGreaterThanOrEqual(Math.floor(r.frames / FRAMES));
          }
          expect([res.ethtool_C_rc, res.coal_rx_usecs, res.coal_rx_frames]).toEqual(['0', '0', '0']);
          expect(run.r.pairs.filter(([k]) => k.startsWith('coal_rx_')).map(([, v]) => v)).toEqual([
            String(HOLD_US),
            String(FRAMES),
            '0',
            '0',
            '0',
            '0',
          ]);
          expect(run.r.pairs.filter(([k]) => k === 'ethtool_pqC_rc').map(([, v]) => v)).toEqual(['0', '0']);
          // Global: NOTF_COAL_RX_SET reached every receive queue; per queue: VQ_SET reached rx queue 0 only.
          const rxq = (m: Mark) => [0, 2, 4, 6].map((v) => m.coal[v]);
          expect(rxq(mark('c2')), diag).toEqual(Array(4).fill([FRAMES, HOLD_US]));
          expect(rxq(mark('c4')), diag).toEqual([
            [FRAMES, HOLD_US],
            [0, 0],
            [0, 0],
            [0, 0],
          ]);
          const pq = run.r.pairs.filter(([k]) => k === 'pqcoal_rx_usecs').map(([, v]) => v.split('.')[0]);
          expect(pq).toEqual([String(HOLD_US), '0']);
          // net_dim moved receive queue 0 to one of its rx profiles (lib/dim: 256 packets, 1/8/64/128/256 µs).
          const dim = mark('dim').coal[0] as [number, number];
          expect([dim[0], [1, 8, 64, 128, 256].includes(dim[1])], JSON.stringify(dim)).toEqual([256, true]);
          await run.leftovers();
        });

      if (kernel === '7.2')
        it.skipIf(noIproute2 !== null)(
          `VXLAN tunnels between guest and host with UDP tunnel GSO negotiated (outer UDP checksum off and on): 4 MiB TCP both ways intact, tunnel GSO frames crossed the device both ways${noIproute2 ? ` (skipped: ${noIproute2})` : ''}`,
          {
            timeout: 180_000,
          },
          async () => {
            const vx = (t: (typeof TUNNELS)[number]) =>
              `vxlan:${t.vni}:${t.guest}/24:${t.host}${t.csum ? ':csum' : ''}`;
            const [t0, t1] = TUNNELS;
            const steps = [
              'pci,virtio,up,mark:up,ping:3',
              `${vx(t0)},ping:3,mark:a0,tcptx,tcprx,mark:a1`,
              `${vx(t1)},ping:3,mark:b0,tcptx:5002,tcprx:5003,mark:b1`,
            ].join(',');
            const tunnelOn = {
              guest_tunnel: true,
              guest_tunnel_csum: true,
              host_tunnel: true,
              host_tunnel_csum: true,
            };
            const run = await boot(kernel, tunnelOn, steps, true);
            const { res, diag, marks } = run;
            // The first ping goes to the host's tap address, the others through each tunnel; TCP both ways
            // through each tunnel arrived with the sender's SHA-256 (checked here).
            await expectBasics(run, 3, 0);
            const f = negotiatedFeatures(run);
            // GUEST_UDP_TUNNEL_GSO(_CSUM) HOST_UDP_TUNNEL_GSO(_CSUM), as the guest's sysfs shows them.
            expect(
              [65n, 66n, 67n, 68n].map((b) => (f >> b) & 1n),
              diag,
            ).toEqual([1n, 1n, 1n, 1n]);
            const all = (k: string) => run.r.pairs.filter(([x]) => x === k).map(([, v]) => v);
            expect(all('vxlan'), diag).toEqual(['up', 'up']);
            expect(all('vxlan_peer')).toEqual([t0.host, t1.host]);
            expect(all('vxlan_mtu')).toEqual(['1450', '1450']);
            expect([res.vxlan_noudpcsum, res.vxlan_udpcsum]).toEqual(['1', '1']);
            // The guest's stack sees tunnel segmentation as offloads of eth0, so its vxlan hands it super-frames.
            expect(
              [res.offload_eth0_tx_udp_tnl_segmentation, res.offload_eth0_tx_udp_tnl_csum_segmentation],
              diag,
            ).toEqual(['on', 'on']);
            const mark = (n: string) => {
              const m = marks.get(n);
              expect(m, `mark ${n}${diag}`).toBeDefined();
              return m as Mark;
            };
            const sum = (m: Mark, k: keyof QueueStats) => m.dev.reduce((n, q) => n + (q[k] as number), 0);
            const counts = (a: string, b: string) => {
              const d = (k: keyof QueueStats) => sum(mark(b), k) - sum(mark(a), k);
              return {
                txTunnelGso: d('txTunnelGsoPackets'),
                txGsoNoseg: d('txGsoPacketsNoseg'),
                txGsoSegments: d('txGsoSegments'),
                rxTunnelGso: d('rxTunnelGsoPackets'),
                rxGso: d('rxGsoPackets'),
                txDropped: d('txDropped'),
                rxDropped: d('rxDropped'),
              };
            };
            const phases = { noUdpCsum: counts('a0', 'a1'), udpCsum: counts('b0', 'b1') };
            const msg = JSON.stringify(phases);
            process.stdout.write(`[7.2 vxlan] device counters over each tunnel's transfers: ${msg}\n`);
            for (const c of Object.values(phases)) {
              // Guest to host: the guest's vxlan super-frames came with a tunnel GSO header and went to the tap
              // whole (the host's tap takes tunnel GSO); host to guest: the host's reached the guest whole.
              expect(c.txTunnelGso, msg).toBeGreaterThan(0);
              expect(c.txGsoNoseg, msg).toBeGreaterThanOrEqual(c.txTunnelGso);
              expect(c.txGsoSegments, msg).toBe(0);
              expect(c.rxTunnelGso, msg).toBeGreaterThan(0);
              expect([c.txDropped, c.rxDropped], msg).toEqual([0, 0]);
            }
            await run.leftovers();
          },
        );
    },
  );
}
