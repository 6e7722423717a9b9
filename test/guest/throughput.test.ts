/**
 * TCP throughput through our device beside QEMU's own virtio-net-pci, in the same guest boot (issue 17):
 * the guest has both NICs, each on a tap of its own in one network namespace this test creates — ours
 * over vfio-user (our server in this process, a TapBackend), QEMU's behind `-netdev tap` (vhost off) —
 * and moves N MiB of TCP each way through each, alternating ours / QEMU's / QEMU's / ours per direction.
 * Asserted: every transfer arrives intact (SHA-256) through the NIC it was meant for. Recorded, not
 * asserted: Mbit/s of each, printed as `[throughput]` lines (and written to VNT_GUEST_LOGDIR when set),
 * for docs/performance.md. Timing is the host's: guest→host from the receiver's first byte to the
 * guest's close; host→guest from the sender's connect to the guest's `tcp_rx_closed` console line.
 */
import type { ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { virtioNetVfioUserDevice } from '../../devices/serve/vfio-user.js';
import { cleanupNamespaces, NetNamespace } from '../../lib/host/netns.js';
import { GuestMemory } from '../../lib/memory/guest-memory.js';
import { TapBackend } from '../../lib/tap/tap-backend.js';
import type { VfioUserServer } from '../../lib/vfio-user/server.js';
import {
  GUEST_KERNELS,
  type GuestKernel,
  guestUnavailableReason,
  inProcessServer,
  runGuest,
} from './launch.test-support.js';

const reasons = new Map(GUEST_KERNELS.map((k) => [k, guestUnavailableReason(undefined, k)]));
for (const [k, reason] of reasons)
  if (reason && process.env.CI) throw new Error(`guest test (Linux ${k}) cannot run in CI: ${reason}`);
const PEER = join(import.meta.dirname, 'tcp-peer.mjs');
/** Bytes per transfer: 8 transfers per boot. */
const BYTES = 16 << 20;
const NICS = {
  ours: { tap: 'vntt0', host: '10.77.5.1', guest: '10.77.5.2', mac: '52:54:00:77:05:02' },
  qemu: { tap: 'vntt1', host: '10.77.6.1', guest: '10.77.6.2', mac: '52:54:00:77:06:02' },
} as const;
type Nic = keyof typeof NICS;
/** Transfers in order, each direction ABBA: [nic, direction, port]. */
const PLAN: [Nic, 'tx' | 'rx', number][] = [
  ['ours', 'tx', 5001],
  ['qemu', 'tx', 5002],
  ['qemu', 'tx', 5003],
  ['ours', 'tx', 5004],
  ['ours', 'rx', 5011],
  ['qemu', 'rx', 5012],
  ['qemu', 'rx', 5013],
  ['ours', 'rx', 5014],
];

afterAll(() => cleanupNamespaces());

/** Collects a child's stdout lines; `wait(re)` resolves with the first matching one. */
function output(child: ChildProcess) {
  const lines: string[] = [];
  const waiters: [RegExp, (l: string) => void][] = [];
  let buf = '';
  child.stdout?.on('data', (d: Buffer) => {
    buf += d.toString();
    let nl = buf.indexOf('\n');
    while (nl >= 0) {
      const l = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      lines.push(l);
      for (const [re, res] of waiters) if (re.test(l)) res(l);
      nl = buf.indexOf('\n');
    }
  });
  return {
    lines,
    wait(re: RegExp, timeoutMs = 150_000): Promise<string> {
      const hit = lines.find((l) => re.test(l));
      if (hit !== undefined) return Promise.resolve(hit);
      return new Promise((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`no ${re} in ${JSON.stringify(lines)}`)), timeoutMs);
        waiters.push([
          re,
          (l) => {
            clearTimeout(t);
            resolve(l);
          },
        ]);
      });
    },
  };
}

const mbits = (bytes: number, ms: number) => Math.round((bytes * 8) / (ms * 1000));
const median = (v: number[]) => {
  const s = [...v].sort((a, b) => a - b);
  return s.length % 2
    ? (s[(s.length - 1) / 2] as number)
    : ((s[s.length / 2 - 1] as number) + (s[s.length / 2] as number)) / 2;
};

/** Received bytes of `dev` in the namespace (the kernel's count, from `ip -s -j link`). */
function tapBytes(ns: NetNamespace, dev: string): { rx: number; tx: number } {
  const j = JSON.parse(ns.ip('-s', '-j', 'link', 'show', 'dev', dev)) as {
    stats64: { rx: { bytes: number }; tx: { bytes: number } };
  }[];
  const s = (j[0] as (typeof j)[number]).stats64;
  return { rx: s.rx.bytes, tx: s.tx.bytes };
}

async function measure(kernel: GuestKernel) {
  const ns = NetNamespace.create('vntt');
  const env = { ...process.env, VNT_PEER_TIMEOUT_MS: '170000' };
  const tap = TapBackend.open({ name: NICS.ours.tap, queues: 1, netns: ns.name });
  ns.ip('tuntap', 'add', 'dev', NICS.qemu.tap, 'mode', 'tap');
  for (const n of Object.values(NICS)) {
    ns.exec('sysctl', ['-q', '-w', `net.ipv6.conf.${n.tap}.disable_ipv6=1`]);
    ns.configure(n.tap, `${n.host}/24`);
  }
  const device = virtioNetVfioUserDevice({ memory: new GuestMemory(), backend: tap, mac: NICS.ours.mac });
  const peerErrors: string[] = [];
  let server: VfioUserServer | null = null;
  // Guest→host: a receiver per transfer, listening before the guest boots.
  const receivers = new Map<number, ReturnType<typeof output>>();
  // Host→guest: the sender (spawned when the guest listens) and the time its guest closed.
  const senders = new Map<number, ReturnType<typeof output>>();
  const connectedAt = new Map<number, Promise<number>>();
  const closedAt = new Map<number, number>();
  /** The taps' and our device's byte counts when the transfers began. */
  const start: { taps?: Record<Nic, { rx: number; tx: number }>; ours?: { rx: number; tx: number } } = {};
  const hex = (mac: string) => mac.replace(/:/g, '');
  const steps = [
    'pci,virtio',
    ...Object.values(NICS).map((n) => `nic:${hex(n.mac)}:${n.guest}/24:${n.host},ping:2`),
    'mark:start',
    ...PLAN.map(([nic, dir, port]) =>
      dir === 'tx' ? `peer:${NICS[nic].host},tcptx:${port}` : `tcprx:${port}`,
    ),
    'mark:end',
  ].join(',');
  try {
    for (const [nic, dir, port] of PLAN) {
      if (dir !== 'tx') continue;
      const recv = output(ns.spawn('node', [PEER, 'recv', NICS[nic].host, String(port)], { env }));
      receivers.set(port, recv);
      await recv.wait(/^ready$/);
    }
    const r = await runGuest({
      kernel,
      netns: ns.name,
      params: { match: '1af4:1041', bytes: BYTES, steps },
      qemuArgs: [
        '-netdev',
        `tap,id=n0,ifname=${NICS.qemu.tap},script=no,downscript=no,vhost=off`,
        '-device',
        `virtio-net-pci,netdev=n0,disable-legacy=on,mac=${NICS.qemu.mac},bus=pcie.0,addr=3.0`,
      ],
      startServer: inProcessServer(device, (s) => (server = s)),
      onResult: (k, v) => {
        if (k === 'mark' && v === 'start') {
          start.taps = { ours: tapBytes(ns, NICS.ours.tap), qemu: tapBytes(ns, NICS.qemu.tap) };
          const s = device.net.stats();
          start.ours = { rx: s.rxBytes, tx: s.txBytes };
        } else if (k === 'tcp_rx_listening') {
          const port = Number(v);
          const nic = PLAN.find(([, , p]) => p === port)?.[0] as Nic;
          const send = output(ns.spawn('node', [PEER, 'send', NICS[nic].guest, v, String(BYTES)], { env }));
          senders.set(port, send);
          const at = send.wait(/^connected$/).then(() => performance.now());
          at.catch((e) => peerErrors.push(String(e)));
          connectedAt.set(port, at);
        } else if (k === 'tcp_rx_closed') closedAt.set(Number(v), performance.now());
      },
      timeoutMs: 170_000,
      logDir: process.env.VNT_GUEST_LOGDIR,
    });
    const after = { ours: tapBytes(ns, NICS.ours.tap), qemu: tapBytes(ns, NICS.qemu.tap) };
    const ourStats = device.net.stats();
    const serverStats = (server as VfioUserServer | null)?.stats();
    return { r, receivers, senders, connectedAt, closedAt, start, after, ourStats, serverStats, peerErrors };
  } finally {
    device.close();
    ns.delete();
  }
}

for (const kernel of GUEST_KERNELS) {
  const reason = reasons.get(kernel) ?? null;
  describe.skipIf(reason !== null)(
    `TCP throughput, our device beside QEMU's virtio-net-pci, Linux ${kernel}${reason ? ` (skipped: ${reason})` : ''}`,
    () => {
      it(`${BYTES >> 20} MiB each way through each NIC, alternating: all intact, Mbit/s recorded`, {
        timeout: 180_000,
      }, async () => {
        const m = await measure(kernel);
        const { r } = m;
        const res = r.results;
        const diag = `\n${r.lines.slice(-50).join('\n')}\npeer errors: ${m.peerErrors.join('; ')}`;
        expect(res.done, diag).toBe('1');
        const nics = r.pairs.filter(([k]) => k === 'nic_mac').map(([, v]) => v);
        expect(nics, diag).toEqual([NICS.ours.mac, NICS.qemu.mac]);
        expect(
          r.pairs.filter(([k]) => k === 'ping_received').map(([, v]) => v),
          diag,
        ).toEqual(['2', '2']);
        const txSha = r.pairs.filter(([k]) => k === 'tcp_tx_sha256').map(([, v]) => v);
        const rxSha = r.pairs.filter(([k]) => k === 'tcp_rx_sha256').map(([, v]) => v);
        const samples: { nic: Nic; dir: 'guest→host' | 'host→guest'; ms: number; mbits: number }[] = [];
        let ti = 0;
        let ri = 0;
        for (const [nic, dir, port] of PLAN) {
          if (dir === 'tx') {
            const recv = m.receivers.get(port)!;
            // Intact: the receiver's SHA-256 is the guest's.
            expect(await recv.wait(/^(bytes=|error=)/), diag).toBe(`bytes=${BYTES} sha256=${txSha[ti++]}`);
            const ms = Number((await recv.wait(/^ms=/)).slice(3));
            samples.push({ nic, dir: 'guest→host', ms, mbits: mbits(BYTES, ms) });
          } else {
            const send = m.senders.get(port);
            expect(send, `${port}${diag}`).toBeDefined();
            expect(await send!.wait(/^(bytes=|error=)/), diag).toBe(`bytes=${BYTES} sha256=${rxSha[ri++]}`);
            const ms = (m.closedAt.get(port) ?? Number.NaN) - (await m.connectedAt.get(port)!);
            expect(ms, diag).toBeGreaterThan(0);
            samples.push({ nic, dir: 'host→guest', ms: Math.round(ms), mbits: mbits(BYTES, ms) });
          }
        }
        // Each NIC carried its own transfers (both directions, 2 × BYTES each, plus ACKs and headers).
        const b = m.start.taps;
        const o = m.start.ours;
        if (b === undefined || o === undefined) throw new Error(`the guest never reached mark start${diag}`);
        for (const nic of ['ours', 'qemu'] as const) {
          expect(m.after[nic].rx - b[nic].rx, nic).toBeGreaterThan(2 * BYTES);
          expect(m.after[nic].tx - b[nic].tx, nic).toBeGreaterThan(2 * BYTES);
        }
        expect(m.ourStats.txBytes - o.tx).toBeGreaterThan(2 * BYTES);
        expect(m.ourStats.rxBytes - o.rx).toBeGreaterThan(2 * BYTES);
        // QEMU's client asked for no ioeventfds (GET_REGION_IO_FDS): every kick of these figures was a
        // REGION_WRITE message, so "with" and "without" the eventfd data path are the same run.
        expect(m.serverStats?.requests.DEVICE_GET_REGION_IO_FDS).toBeUndefined();
        expect(m.serverStats?.kicksByEventfd).toBe(0);
        expect(m.serverStats?.requests.REGION_WRITE).toBeGreaterThan(0);
        const summary: Record<string, unknown> = {};
        for (const dir of ['guest→host', 'host→guest'] as const) {
          const med = (nic: Nic) =>
            median(samples.filter((s) => s.nic === nic && s.dir === dir).map((s) => s.mbits));
          summary[dir] = {
            oursMbits: samples.filter((s) => s.nic === 'ours' && s.dir === dir).map((s) => s.mbits),
            qemuMbits: samples.filter((s) => s.nic === 'qemu' && s.dir === dir).map((s) => s.mbits),
            ratioOfMedians: Number((med('ours') / med('qemu')).toFixed(2)),
          };
        }
        const record = { kernel, mib: BYTES >> 20, samples, summary };
        process.stdout.write(`[throughput] Linux ${kernel}: ${JSON.stringify(record)}\n`);
        if (process.env.VNT_GUEST_LOGDIR)
          writeFileSync(
            join(process.env.VNT_GUEST_LOGDIR, `throughput-${kernel}.json`),
            `${JSON.stringify(record, null, 1)}\n`,
          );
      });
    },
  );
}
