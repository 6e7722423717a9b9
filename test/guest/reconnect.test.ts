/**
 * QEMU killed (SIGKILL) in the middle of a TCP transfer, then a new QEMU started against the same
 * vfio-user server (in this process) and the same device. The vfio-user protocol says that on a
 * disconnect the server unmaps the client's memory, closes its interrupt eventfds and keeps the device
 * for the next client: the second guest must boot, ping and move 4 MiB each way with the SHA-256 intact,
 * and the server must be back at its baseline after each client: the same open fds (/proc/self/fd), no
 * guest-memory mapping left (/proc/self/maps), heap after GC within 8 MiB and VmRSS within 64 MiB of the
 * baseline (the guest's RAM is 512 MiB: a mapping left behind with what the device touched shows up).
 */
import type { ChildProcess } from 'node:child_process';
import { linkSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { afterAll, describe, expect, it } from 'vitest';
import { virtioNetVfioUserDevice } from '../../devices/serve/vfio-user.js';
import { cleanupNamespaces, NetNamespace } from '../../lib/host/netns.js';
import { GuestMemory } from '../../lib/memory/guest-memory.js';
import { TapBackend } from '../../lib/tap/tap-backend.js';
import { VfioUserServer } from '../../lib/vfio-user/server.js';
import { arpRequest, ipv4, mac } from '../tap/frames.test-support.js';
import { guestUnavailableReason, runGuest } from './launch.test-support.js';

const reason = guestUnavailableReason();
if (reason && process.env.CI) throw new Error(`guest test cannot run in CI: ${reason}`);
const PEER = join(import.meta.dirname, 'tcp-peer.mjs');
const HOST = '10.77.3.1';
const GUEST = '10.77.3.2';
const MAC = '52:54:00:77:03:02';
const BYTES = 4 << 20;
/** What the first guest is sent: far more than it gets before QEMU dies. */
const BIG = 48 << 20;
const HEAP_TOLERANCE = 8 << 20;
const RSS_TOLERANCE = 64 << 20;

afterAll(() => cleanupNamespaces());

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const fdCount = () => readdirSync('/proc/self/fd').length;
/** What each open fd is (for the failure message). */
function fdTargets(): string[] {
  return readdirSync('/proc/self/fd').map((fd) => {
    try {
      return `${fd}:${readlinkSync(`/proc/self/fd/${fd}`)}`;
    } catch {
      return `${fd}:?`;
    }
  });
}
/** Mappings of a memfd (guest RAM the server mapped from DMA_MAP). */
const memfdMappings = () =>
  readFileSync('/proc/self/maps', 'utf8')
    .split('\n')
    .filter((l) => l.includes('/memfd:')).length;
const vmRss = () => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'))?.[1]) * 1024;
let gcFn: (() => void) | undefined;
function heapAfterGc(): number {
  if (!gcFn) {
    setFlagsFromString('--expose-gc');
    gcFn = runInNewContext('gc') as () => void;
  }
  gcFn();
  gcFn();
  const m = process.memoryUsage();
  return m.heapUsed + m.external + m.arrayBuffers;
}

interface Sample {
  fds: number;
  targets: string[];
  maps: number;
  heap: number;
  rss: number;
}
/** The server's resources once fds stopped changing (pipes of exited children close a moment later). */
async function settled(): Promise<Sample> {
  let last = fdCount();
  for (let stable = 0, i = 0; stable < 5 && i < 200; i++) {
    await sleep(20);
    const n = fdCount();
    stable = n === last ? stable + 1 : 0;
    last = n;
  }
  return { fds: last, targets: fdTargets(), maps: memfdMappings(), heap: heapAfterGc(), rss: vmRss() };
}

function lineFrom(child: ChildProcess, re: RegExp): Promise<string> {
  return new Promise((resolve, reject) => {
    let buf = '';
    child.stdout?.on('data', (d: Buffer) => {
      buf += d.toString();
      const m = buf.split('\n').find((l) => re.test(l));
      if (m) resolve(m);
    });
    child.once('exit', (code, sig) => reject(new Error(`peer exited ${code ?? sig}: ${buf}`)));
  });
}
const exited = (c: ChildProcess) =>
  c.exitCode !== null || c.signalCode !== null
    ? Promise.resolve()
    : new Promise<void>((r) => c.once('exit', () => r()));

describe.skipIf(reason !== null)(
  `QEMU killed mid-transfer and started again on the same server${reason ? ` (skipped: ${reason})` : ''}`,
  () => {
    it('the second guest boots and transfers 4 MiB each way intact; the server returns to its baseline', {
      timeout: 420_000,
    }, async () => {
      const ns = NetNamespace.create('vnrc');
      const tap = TapBackend.open({ name: 'vnrc0', queues: 2, netns: ns.name });
      ns.exec('sysctl', ['-q', '-w', 'net.ipv6.conf.vnrc0.disable_ipv6=1']);
      ns.configure('vnrc0', `${HOST}/24`);
      const device = virtioNetVfioUserDevice({
        memory: new GuestMemory(),
        backend: tap,
        mac: MAC,
        mq: true,
        queues: 2,
      });
      const net = device.net;
      const logs: string[] = [];
      const sockDir = mkdtempSync(join(tmpdir(), 'vnrc-'));
      const socketPath = join(sockDir, 'vfu.sock');
      const server = new VfioUserServer(device, {
        socketPath,
        log: (l) => logs.push(l),
      });
      const peers: ChildProcess[] = [];
      try {
        await server.listen();
        // The tap creates its io_uring on its first burst and keeps it: a burst of two before the
        // baseline, so the baseline counts the tap's own fds and the rest are the clients'.
        const arp = arpRequest(mac(MAC), ipv4(GUEST), ipv4(HOST));
        tap.transmitRange(arp, 0, arp.length, 0, null);
        tap.transmitRange(arp, 0, arp.length, 0, null);
        expect(tap.flushTransmit(0)).toBe(0);
        const base = await settled();
        // The guests' run folders differ: each links its vfu.sock to the one listening socket.
        const start = async (path: string) => {
          linkSync(socketPath, path);
          return { close: async () => {} };
        };

        // 1: the host sends 48 MiB to the guest; QEMU is killed once 1 MiB has arrived.
        let qemu: ChildProcess | null = null;
        let killedAt: number | null = null;
        let watch: NodeJS.Timeout | undefined;
        const r1 = await runGuest({
          params: {
            match: '1af4:1041',
            ip: `${GUEST}/24`,
            peer: HOST,
            port: 5001,
            bytes: BIG,
            steps: 'pci,virtio,up,tcprx',
          },
          startServer: start,
          onSpawn: (c) => {
            qemu = c;
          },
          onResult: (k, v) => {
            if (k !== 'tcp_rx_listening') return;
            const send = ns.spawn('node', [PEER, 'send', GUEST, v, String(BIG)]);
            peers.push(send);
            lineFrom(send, /^(bytes=|error=)/).catch(() => {});
            watch = setInterval(() => {
              if (net.stats().rxBytes > 1 << 20 && qemu && killedAt === null) {
                killedAt = net.stats().rxBytes;
                qemu.kill('SIGKILL');
              }
            }, 5);
          },
          timeoutMs: 170_000,
        });
        clearInterval(watch);
        const diag1 = `\n${r1.lines.slice(-40).join('\n')}\nserver log: ${logs.slice(-20).join('\n')}`;
        expect(r1.signal, diag1).toBe('SIGKILL');
        expect(r1.timedOut, diag1).toBe(false);
        expect(killedAt, diag1).not.toBeNull();
        expect(r1.results.tcp_rx_bytes, 'the transfer never finished').toBeUndefined();
        await server.waitForDisconnect();
        for (const p of peers.splice(0)) {
          p.kill('SIGKILL');
          await exited(p);
        }
        expect(server.connected).toBe(false);
        expect(server.dmaRegions()).toEqual([]);
        const after1 = await settled();
        const fdDiff = (a: Sample) =>
          `new: ${a.targets.filter((t) => !base.targets.includes(t))}; gone: ${base.targets.filter((t) => !a.targets.includes(t))}`;
        expect(after1.fds, `fds after the killed client: ${fdDiff(after1)}`).toBe(base.fds);
        expect(after1.maps, 'memfd mappings after the killed client').toBe(base.maps);
        expect(after1.heap - base.heap).toBeLessThan(HEAP_TOLERANCE);
        expect(after1.rss - base.rss).toBeLessThan(RSS_TOLERANCE);
        expect(net.stats().status, 'the device was reset for the next client').toBe(0);

        // 2: a new QEMU on the same server and device: ping, then 4 MiB each way.
        const recv = ns.spawn('node', [PEER, 'recv', HOST, '5001']);
        peers.push(recv);
        const received = lineFrom(recv, /^(bytes=|error=)/);
        received.catch(() => {});
        await lineFrom(recv, /^ready$/);
        let sent: Promise<string> = Promise.resolve('no send');
        const r2 = await runGuest({
          params: {
            match: '1af4:1041',
            ip: `${GUEST}/24`,
            peer: HOST,
            port: 5001,
            bytes: BYTES,
            steps: 'pci,virtio,up,ping:3,tcptx,tcprx:5002',
          },
          startServer: start,
          onResult: (k, v) => {
            if (k !== 'tcp_rx_listening') return;
            const send = ns.spawn('node', [PEER, 'send', GUEST, v, String(BYTES)]);
            peers.push(send);
            sent = lineFrom(send, /^(bytes=|error=)/);
            sent.catch(() => {});
          },
          timeoutMs: 200_000,
        });
        const res = r2.results;
        const diag2 = `\n${r2.lines.slice(-60).join('\n')}\nserver log: ${logs.slice(-20).join('\n')}\n${JSON.stringify(net.stats())}`;
        expect(res.done, diag2).toBe('1');
        expect(res.ping_received, diag2).toBe('3');
        const txSha = res.tcp_tx_sha256;
        expect(res.tcp_tx_bytes).toBe(String(BYTES));
        expect(await received).toBe(`bytes=${BYTES} sha256=${txSha}`);
        const got = await sent;
        expect(res.tcp_rx_bytes, diag2).toBe(String(BYTES));
        expect(got).toBe(`bytes=${BYTES} sha256=${res.tcp_rx_sha256}`);
        expect(server.stats().connections).toBe(2);

        await server.waitForDisconnect();
        for (const p of peers.splice(0)) {
          p.kill('SIGKILL');
          await exited(p);
        }
        const after2 = await settled();
        expect(after2.fds, `fds after the second client: ${fdDiff(after2)}`).toBe(base.fds);
        expect(after2.maps).toBe(base.maps);
        expect(after2.heap - base.heap).toBeLessThan(HEAP_TOLERANCE);
        expect(after2.rss - base.rss).toBeLessThan(RSS_TOLERANCE);
        console.log(
          `reconnect: baseline fds ${base.fds} heap ${(base.heap / 2 ** 20).toFixed(1)} MiB rss ${(base.rss / 2 ** 20).toFixed(1)} MiB; ` +
            `after kill fds ${after1.fds} heap ${(after1.heap / 2 ** 20).toFixed(1)} rss ${(after1.rss / 2 ** 20).toFixed(1)}; ` +
            `after 2nd fds ${after2.fds} heap ${(after2.heap / 2 ** 20).toFixed(1)} rss ${(after2.rss / 2 ** 20).toFixed(1)}; killed at rx ${killedAt} bytes`,
        );
      } finally {
        for (const p of peers) p.kill('SIGKILL');
        await server.close();
        rmSync(sockDir, { recursive: true, force: true });
        device.close();
        ns.delete();
      }
    });
  },
);
