/**
 * `npm run demo`: a headless run of the virtio-net PCI device. A synthetic guest (the `testing` kit's
 * VirtioNetDriver, which does what Linux's virtio_net does) brings the device up through its PCI config
 * space and BARs, then exchanges ARP and ICMP echo with a peer, and the demo prints what was negotiated
 * and the device's per-queue counters.
 *
 *   npm run demo                      in-memory peer (MemoryBackend + PeerResponder), no privileges
 *   npm run demo -- --queues 4        multiqueue: one ping flow per queue pair
 *   npm run demo -- --queues 4 --rss  RSS configured by the guest: UDP flows from the peer spread by hash
 *   npm run demo -- --tap --queues 4 --rss  the same with the kernel sending: the tap steers by the guest's RSS
 *   npm run demo -- --tap             as root: a tap in a fresh network namespace, the kernel as the peer
 *   npm run demo -- --vfs             SR-IOV: two VFs ping each other through the embedded switch
 *   npm run demo -- --v86             v86 boots Debian's i386 Linux with the device as its NIC (examples/v86-demo.ts)
 */

import {
  arp,
  ethernet,
  formatIp,
  formatMacAt,
  icmpEcho,
  ipv4,
  PeerResponder,
  udp4,
} from '../devices/testing/frames.js';
import { VirtioNetDriver } from '../devices/testing/net-driver.js';
import { NetF } from '../devices/virtio-net/features.js';
import { createVirtioNetPci, type VirtioNetPci } from '../devices/virtio-net-pci.js';
import { GuestMemory } from '../lib/memory/guest-memory.js';
import { MemoryBackend } from '../lib/net/memory-backend.js';
import type { NetBackend } from '../lib/net/backend.js';
import { NetNamespace, netnsUnavailableReason } from '../lib/host/netns.js';
import {
  VIRTIO_NET_RSS_HASH_TYPE_IPv4,
  VIRTIO_NET_RSS_HASH_TYPE_TCPv4,
  VIRTIO_NET_RSS_HASH_TYPE_UDPv4,
} from '../lib/net/rss-hash.js';
import { TapBackend } from '../lib/tap/tap-backend.js';
import { InterruptCollector } from '../virtio/testing/pci-driver.js';
import { sriovDemo } from './sriov-demo.js';

interface Args {
  queues: number;
  rss: boolean;
  tap: boolean;
  vfs: boolean;
  v86: boolean;
}

function parseArgs(argv: string[]): Args {
  const a: Args = { queues: 1, rss: false, tap: false, vfs: false, v86: false };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--queues') a.queues = Number(argv[++i]);
    else if (arg.startsWith('--queues=')) a.queues = Number(arg.slice(9));
    else if (arg === '--rss') a.rss = true;
    else if (arg === '--tap') a.tap = true;
    else if (arg === '--vfs') a.vfs = true;
    else if (arg === '--v86') a.v86 = true;
    else if (arg === '--help' || arg === '-h') {
      console.log('usage: npm run demo -- [--queues N] [--rss] [--tap] | --vfs | --v86');
      process.exit(0);
    } else fail(`unknown argument ${arg} (try --help)`);
  }
  if (!Number.isInteger(a.queues) || a.queues < 1 || a.queues > 16) fail('--queues takes 1..16');
  if (a.rss && a.queues < 2) a.queues = 4;
  return a;
}

function fail(message: string): never {
  console.error(`demo: ${message}`);
  process.exit(2);
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Peer and guest addresses: a private /24 that only exists inside this process or our namespace. */
const MEM = { peerIp: '10.0.0.1', peerMac: '02:00:00:00:00:01', guestIp: '10.0.0.2' };
const TAP = { peerIp: '10.99.0.1', peerMac: '02:00:00:00:99:01', guestIp: '10.99.0.2' };

/** The guest's side: the synthetic driver plus just enough of an IP stack to answer ARP for itself. */
class Guest {
  readonly mac: string;
  /** ICMP echo replies seen, by (id << 16 | seq). */
  readonly replies = new Set<number>();
  peerMac: string | null = null;
  /** Frames received per pair (everything, including ARP). */
  readonly rxPerPair: number[];

  constructor(
    readonly drv: VirtioNetDriver,
    readonly ip: string,
  ) {
    this.mac = drv.mac();
    this.rxPerPair = new Array<number>(drv.maxPairs).fill(0);
  }

  /** Takes what the device delivered on every pair and reacts to it. Returns how many frames. */
  poll(): number {
    let n = 0;
    for (let p = 0; p < this.drv.maxPairs; p++) {
      for (const { frame } of this.drv.receive(p)) {
        n++;
        this.rxPerPair[p]!++;
        this.handle(frame);
      }
    }
    return n;
  }

  private handle(f: Uint8Array): void {
    const type = (f[12]! << 8) | f[13]!;
    if (type === 0x0806 && f.length >= 42) {
      const op = f[21];
      if (op === 2 && formatIp(f, 38) === this.ip) this.peerMac = formatMacAt(f, 22);
      if (op === 1 && formatIp(f, 38) === this.ip) {
        // The kernel re-checks its neighbour entry now and then: answer like a host would.
        this.drv.send(arp(2, this.mac, this.ip, formatMacAt(f, 22), formatIp(f, 28)));
      }
    } else if (type === 0x0800 && f[23] === 1 && f.length >= 42) {
      const icmp = 14 + (f[14]! & 0xf) * 4;
      if (f[icmp] === 0)
        this.replies.add((((f[icmp + 4]! << 8) | f[icmp + 5]!) << 16) | ((f[icmp + 6]! << 8) | f[icmp + 7]!));
    }
  }

  /** Polls until `done()` or `timeoutMs` (tap replies come asynchronously through the event loop). */
  async until(done: () => boolean, timeoutMs: number): Promise<boolean> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      this.poll();
      if (done()) return true;
      if (Date.now() >= end) return false;
      await sleep(2);
    }
  }

  ping(peerIp: string, id: number, seq: number, pair: number): void {
    const data = new TextEncoder().encode(`virtio-net-ts demo ${seq}`.padEnd(56, '.'));
    const ip = ipv4(this.ip, peerIp, 1, icmpEcho(8, id, seq, data), seq);
    this.drv.send(ethernet(this.peerMac!, this.mac, 0x0800, ip), { pair });
  }
}

function featureNames(features: bigint): string {
  const names: string[] = [];
  for (const [name, bit] of Object.entries(NetF)) if ((features >> BigInt(bit)) & 1n) names.push(name);
  const transport: [number, string][] = [
    [28, 'INDIRECT_DESC'],
    [29, 'EVENT_IDX'],
    [32, 'VERSION_1'],
    [34, 'RING_PACKED'],
    [40, 'RING_RESET'],
  ];
  for (const [bit, name] of transport) if ((features >> BigInt(bit)) & 1n) names.push(name);
  return names.join(' ');
}

function wrap(text: string, width: number, indent: string): string {
  const out: string[] = [];
  let line = '';
  for (const w of text.split(' ')) {
    if (line.length + w.length + 1 > width) {
      out.push(line);
      line = '';
    }
    line = line ? `${line} ${w}` : w;
  }
  if (line) out.push(line);
  return out.join(`\n${indent}`);
}

function printNegotiated(dev: VirtioNetPci, drv: VirtioNetDriver): void {
  console.log(`device     virtio-net-pci, MAC ${drv.mac()}, link ${drv.linkUp() ? 'up' : 'down'}`);
  console.log(`features   0x${drv.features.toString(16)}`);
  console.log(`           ${wrap(featureNames(drv.features), 88, '           ')}`);
  console.log(
    `header     ${drv.hdrSize} bytes; queue pairs ${drv.pairs} in use of ${drv.maxPairs}; MSI-X vectors ${dev.msixVectors}`,
  );
}

function printCounters(dev: VirtioNetPci, guest: Guest): void {
  const s = dev.stats() as {
    queues: Record<string, number>[];
    ctrlCommands: number;
    ctrlErrors: number;
    rxDroppedNotReady: number;
  };
  const cols = [
    'pair',
    'rxPackets',
    'rxBytes',
    'rxDropped',
    'rxFiltered',
    'rxInterrupts',
    'txPackets',
    'txBytes',
    'txDropped',
    'txKicks',
  ];
  const rows = s.queues.map((q) => cols.map((c) => String(q[c] ?? 0)));
  const widths = cols.map((c, i) => Math.max(c.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padStart(widths[i]!)).join('  ');
  console.log(`\n${line(cols)}`);
  console.log(widths.map((w) => '-'.repeat(w)).join('  '));
  for (const r of rows) console.log(line(r));
  console.log(
    `control commands ${s.ctrlCommands} (errors ${s.ctrlErrors}); rx dropped before a queue was chosen ${s.rxDroppedNotReady}; guest saw per pair: ${guest.rxPerPair.join(' / ')}`,
  );
}

/** Brings the device up with `backend` and returns the pieces. */
function bringUp(backend: NetBackend, args: Args) {
  const memory = new GuestMemory([{ address: 0, bytes: new Uint8Array(64 << 20) }]);
  const irq = new InterruptCollector();
  const mq = args.queues > 1;
  const dev = createVirtioNetPci({
    memory,
    backend,
    interrupts: irq,
    queues: args.queues,
    mq,
    rss: args.rss,
  });
  const drv = new VirtioNetDriver(dev, memory, { interrupts: irq, rxBuffers: 64 });
  drv.open();
  return { dev, drv, irq };
}

/** ARP for the peer, then `count` pings per queue pair (one ICMP id per pair: one flow each). */
async function pingPeer(guest: Guest, peerIp: string, count: number, timeoutMs: number): Promise<boolean> {
  guest.drv.send(arp(1, guest.mac, guest.ip, '00:00:00:00:00:00', peerIp));
  if (!(await guest.until(() => guest.peerMac !== null, timeoutMs))) {
    console.log(`ARP: no answer from ${peerIp}`);
    return false;
  }
  console.log(`ARP: ${peerIp} is at ${guest.peerMac}`);
  let ok = true;
  for (let pair = 0; pair < guest.drv.pairs; pair++) {
    const id = 0x4400 + pair;
    for (let seq = 1; seq <= count; seq++) {
      guest.ping(peerIp, id, seq, pair);
      const key = (id << 16) | seq;
      const got = await guest.until(() => guest.replies.has(key), timeoutMs);
      console.log(
        `ping ${peerIp} id=0x${id.toString(16)} seq=${seq} via tx pair ${pair}: ${got ? 'reply received' : 'no reply'}`,
      );
      ok &&= got;
    }
  }
  return ok;
}

/** RSS_CONFIG from the guest: IPv4 + TCPv4 + UDPv4 over a 128-entry table spreading all pairs. */
function programRss(drv: VirtioNetDriver): void {
  const table = Array.from({ length: 128 }, (_, i) => i % drv.pairs);
  const key = Uint8Array.from({ length: 40 }, (_, i) => (i * 37 + 11) & 0xff);
  const types =
    VIRTIO_NET_RSS_HASH_TYPE_IPv4 | VIRTIO_NET_RSS_HASH_TYPE_TCPv4 | VIRTIO_NET_RSS_HASH_TYPE_UDPv4;
  const ack = drv.setRss({ hashTypes: types, table, key });
  console.log(
    `\nRSS_CONFIG (IPv4 + TCPv4 + UDPv4, 128-entry table over ${drv.pairs} pairs): ${ack === 0 ? 'OK' : 'ERR'}`,
  );
}

/** RSS: the guest programs a key and an indirection table; the peer sends UDP flows with many ports. */
function rssDemo(guest: Guest, backend: MemoryBackend, peer: { peerIp: string; peerMac: string }): void {
  programRss(guest.drv);
  const before = [...guest.rxPerPair];
  const flows = 64;
  for (let i = 0; i < flows; i++) {
    const dgram = udp4(peer.peerIp, guest.ip, 40000 + i * 7, 5000, new TextEncoder().encode(`flow ${i}`));
    backend.inject(ethernet(guest.mac, peer.peerMac, 0x0800, dgram), 0);
  }
  guest.poll();
  const spread = guest.rxPerPair.map((n, p) => `pair ${p}: ${n - before[p]!}`);
  console.log(`${flows} UDP flows injected on backend queue 0, steered by hash -> ${spread.join(', ')}`);
}

async function memoryDemo(args: Args): Promise<number> {
  const backend = new MemoryBackend({ queues: args.queues });
  const peer = new PeerResponder(MEM.peerMac, MEM.peerIp);
  // The peer answers on the backend queue the request came from, as a multiqueue tap would.
  backend.onFrame((frame, q) => {
    const reply = peer.handle(frame);
    if (reply) backend.inject(reply, q);
  });
  const { dev, drv } = bringUp(backend, args);
  printNegotiated(dev, drv);
  console.log(`peer       in-memory host ${MEM.peerIp} (${MEM.peerMac}); guest ${MEM.guestIp}\n`);
  const guest = new Guest(drv, MEM.guestIp);
  const ok = await pingPeer(guest, MEM.peerIp, 3, 500);
  if (args.rss) rssDemo(guest, backend, MEM);
  printCounters(dev, guest);
  dev.close();
  return ok ? 0 : 1;
}

async function tapDemo(args: Args): Promise<number> {
  const why = netnsUnavailableReason();
  if (why) {
    console.error(
      `demo --tap ${why}.\nIt creates a network namespace and a tap (CAP_NET_ADMIN, /dev/net/tun, iproute2); run it as root,\nor run the demo without --tap for the in-memory peer.`,
    );
    return 1;
  }
  let ns: NetNamespace | null = null;
  let dev: VirtioNetPci | null = null;
  const cleanup = () => {
    dev?.close();
    dev = null;
    ns?.delete();
    ns = null;
  };
  const onSignal = (sig: NodeJS.Signals) => {
    console.error(`\n${sig}: removing the namespace`);
    cleanup();
    process.exit(130);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    ns = NetNamespace.create('vdemo');
    const tap = TapBackend.open({ queues: args.queues });
    try {
      ns.adopt(tap.name);
    } catch (err) {
      tap.close();
      throw err;
    }
    ns.exec('sysctl', ['-q', '-w', `net.ipv6.conf.${tap.name}.disable_ipv6=1`]);
    ns.configure(tap.name, `${TAP.peerIp}/24`, TAP.peerMac);
    console.log(
      `netns      ${ns.name}: ${tap.name} ${TAP.peerIp}/24 (${TAP.peerMac}), ${args.queues} queue(s)`,
    );
    const up = bringUp(tap, args);
    dev = up.dev;
    printNegotiated(up.dev, up.drv);
    console.log(`peer       the kernel behind ${tap.name}; guest ${TAP.guestIp}\n`);
    const guest = new Guest(up.drv, TAP.guestIp);
    const ok = await pingPeer(guest, TAP.peerIp, 3, 2000);
    const neigh = ns.ip('neigh', 'show', 'dev', tap.name).trim();
    console.log(`kernel neighbour table: ${neigh || '(empty)'}`);
    if (args.rss) {
      // The kernel sends 64 UDP flows (one source port each); the tap's eBPF program steers them by the
      // guest's RSS configuration, and each lands on the pair its hash names.
      programRss(up.drv);
      const before = [...guest.rxPerPair];
      const send = `const d=require('dgram');let n=0;for(let i=0;i<64;i++){const s=d.createSocket('udp4');s.send('flow '+i,5000,'${TAP.guestIp}',()=>{s.close();if(++n===64)process.exit(0)})}`;
      ns.exec(process.execPath, ['-e', send], { timeoutMs: 10_000 });
      await guest.until(() => guest.rxPerPair.reduce((a, n, p) => a + n - before[p]!, 0) >= 64, 2000);
      const spread = guest.rxPerPair.map((n, p) => `pair ${p}: ${n - before[p]!}`);
      console.log(`64 UDP flows from the kernel, steered by hash in the tap -> ${spread.join(', ')}`);
    }
    printCounters(up.dev, guest);
    const ts = tap.stats();
    console.log(
      `tap: rx ${ts.rxFrames} frames (${ts.rxDirect} read straight into guest buffers), tx ${ts.txFrames} frames (${ts.txDirect} written from guest memory), tx dropped ${ts.txDropped}, ioctl errors ${ts.ioctlErrors}`,
    );
    return ok ? 0 : 1;
  } finally {
    cleanup();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

const args = parseArgs(process.argv.slice(2));
try {
  // v86 is an optional peer dependency: its demo is loaded only when asked for.
  process.exitCode = args.v86
    ? await (await import('./v86-demo.js')).v86Demo()
    : args.vfs
      ? sriovDemo()
      : args.tap
        ? await tapDemo(args)
        : await memoryDemo(args);
} catch (err) {
  console.error(`demo failed: ${err instanceof Error ? err.message : String(err)}`);
  process.exitCode = 1;
}
// The tap poller keeps a koffi async call in flight; nothing is left to wait for.
process.exit();
