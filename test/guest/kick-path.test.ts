/**
 * How a stock Linux guest's kicks and interrupts travel between QEMU 11.x's vfio-user client and our
 * server (issue 17, "vfio-user without socket round trips"): which commands QEMU sends (does it ask for
 * ioeventfds with DEVICE_GET_REGION_IO_FDS?), how many kicks arrive as REGION_WRITE messages and how
 * many by eventfd, interrupts per frame, and the time of a 4 MiB TCP transfer each way.
 * The figures are printed (`kick-path:` lines) for docs/performance.md.
 */
import type { ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { virtioNetVfioUserDevice } from '../../devices/serve/vfio-user.js';
import { cleanupNamespaces, NetNamespace } from '../../lib/host/netns.js';
import { GuestMemory } from '../../lib/memory/guest-memory.js';
import { TapBackend } from '../../lib/tap/tap-backend.js';
import type { VfioUserServer } from '../../lib/vfio-user/server.js';
import { MODERN_BAR, MODERN_REGIONS } from '../../virtio/pci/virtio-pci.js';
import { guestUnavailableReason, inProcessServer, runGuest } from './launch.test-support.js';

const reason = guestUnavailableReason();
if (reason && process.env.CI) throw new Error(`guest test cannot run in CI: ${reason}`);
const PEER = join(import.meta.dirname, 'tcp-peer.mjs');
const HOST = '10.77.3.1';
const GUEST = '10.77.3.2';
const TAP = 'vntk0';
const BYTES = 4 << 20;

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

interface Sample {
  notifyWrites: number;
  kicksByEventfd: number;
  regionWritesBar4: number;
  /** REGION_READs of any region (a guest register read costs a round trip). */
  regionReads: number;
  irqs: number;
  frames: number;
  at: number;
}

describe.skipIf(reason !== null)(
  `kick and interrupt path under QEMU 11.x${reason ? ` (skipped: ${reason})` : ''}`,
  () => {
    it('QEMU asks for no ioeventfds: every kick is a REGION_WRITE, every interrupt an eventfd; TCP timed', {
      timeout: 180_000,
    }, async () => {
      const ns = NetNamespace.create('vntk');
      const tap = TapBackend.open({ name: TAP, queues: 1, netns: ns.name });
      ns.exec('sysctl', ['-q', '-w', `net.ipv6.conf.${TAP}.disable_ipv6=1`]);
      ns.configure(TAP, `${HOST}/24`);
      const memory = new GuestMemory();
      const device = virtioNetVfioUserDevice({ memory, backend: tap, mac: '52:54:00:77:03:02' });
      // Count the queue notifications the device receives, whichever way they came.
      let notifyWrites = 0;
      const inner = device.barWrite;
      device.barWrite = (bar, offset, size, value) => {
        if (bar === MODERN_BAR && offset >= MODERN_REGIONS.notify) notifyWrites++;
        inner(bar, offset, size, value);
      };
      let server: VfioUserServer | null = null;
      const samples = new Map<string, Sample>();
      const sample = (): Sample => {
        const st = (server as VfioUserServer | null)?.stats();
        const ds = device.net.stats();
        return {
          notifyWrites,
          kicksByEventfd: st?.kicksByEventfd ?? 0,
          regionWritesBar4: st?.regionWrites[MODERN_BAR] ?? 0,
          regionReads: Object.values(st?.regionReads ?? {}).reduce((a, b) => a + b, 0),
          irqs: st?.irqsSignalled ?? 0,
          frames: ds.rxPackets + ds.txPackets,
          at: performance.now(),
        };
      };
      const peerErrors: string[] = [];
      const timings: Record<string, number> = {};
      let requests: Record<string, number> = {};
      let r: Awaited<ReturnType<typeof runGuest>>;
      try {
        const recv = ns.spawn('node', [PEER, 'recv', HOST, '5001']);
        let txStart = 0;
        const received = lineFrom(recv, /^(bytes=|error=)/).then((l) => {
          timings.guestToHostMs = performance.now() - txStart;
          return l;
        });
        received.catch((e) => peerErrors.push(String(e)));
        await lineFrom(recv, /^ready$/);
        let rxStart = 0;
        let sent: Promise<string> = Promise.resolve('not sent');
        r = await runGuest({
          params: {
            match: '1af4:1041',
            ip: `${GUEST}/24`,
            peer: HOST,
            port: 5001,
            bytes: BYTES,
            steps: 'pci,virtio,up,ping:3,mark:t0,tcptx,mark:t1,tcprx:5003,mark:t2',
          },
          startServer: inProcessServer(device, (s) => (server = s)),
          onResult: (k, v) => {
            if (k === 'mark') samples.set(v, sample());
            else if (k === 'tcp_tx_bytes') txStart = performance.now();
            else if (k === 'tcp_rx_listening') {
              rxStart = performance.now();
              const send = ns.spawn('node', [PEER, 'send', GUEST, v, String(BYTES)]);
              sent = lineFrom(send, /^(bytes=|error=)/);
              sent.catch((e) => peerErrors.push(String(e)));
            } else if (k === 'tcp_rx_bytes') timings.hostToGuestMs = performance.now() - rxStart;
          },
          timeoutMs: 170_000,
        });
        const diag = `\n${r.lines.slice(-40).join('\n')}\npeer errors: ${peerErrors.join('; ')}`;
        expect(r.results.done, diag).toBe('1');
        const got = await received;
        expect(got, diag).toBe(`bytes=${BYTES} sha256=${r.results.tcp_tx_sha256}`);
        expect(await sent, diag).toBe(`bytes=${BYTES} sha256=${r.results.tcp_rx_sha256}`);
        requests = (server as unknown as VfioUserServer).stats().requests;
      } finally {
        device.close();
        ns.delete();
      }
      const mark = (m: string): Sample => {
        const got = samples.get(m);
        if (got === undefined) throw new Error(`the guest never reached mark ${m}`);
        return got;
      };
      const [t0, t1, t2] = [mark('t0'), mark('t1'), mark('t2')];
      const per1000 = (a: Sample, b: Sample, k: keyof Sample) =>
        Math.round((1000 * (b[k] - a[k])) / Math.max(1, b.frames - a.frames));
      const figures = {
        qemuCommands: requests,
        guestToHost: {
          ms: Math.round(timings.guestToHostMs ?? -1),
          frames: t1.frames - t0.frames,
          kicksPer1000Frames: per1000(t0, t1, 'notifyWrites'),
          kicksByEventfd: t1.kicksByEventfd - t0.kicksByEventfd,
          irqsPer1000Frames: per1000(t0, t1, 'irqs'),
          regionReads: t1.regionReads - t0.regionReads,
        },
        hostToGuest: {
          ms: Math.round(timings.hostToGuestMs ?? -1),
          frames: t2.frames - t1.frames,
          kicksPer1000Frames: per1000(t1, t2, 'notifyWrites'),
          kicksByEventfd: t2.kicksByEventfd - t1.kicksByEventfd,
          irqsPer1000Frames: per1000(t1, t2, 'irqs'),
          regionReads: t2.regionReads - t1.regionReads,
        },
      };
      console.log(`kick-path: ${JSON.stringify(figures)}`);
      // QEMU 11.x's client never asks for ioeventfds, so every kick is a REGION_WRITE on BAR4 ...
      expect(requests.DEVICE_GET_REGION_IO_FDS).toBeUndefined();
      expect(t2.kicksByEventfd).toBe(0);
      expect(t2.notifyWrites).toBeGreaterThan(0);
      expect(t2.regionWritesBar4).toBeGreaterThanOrEqual(t2.notifyWrites);
      // ... and every interrupt an eventfd signal (SET_IRQS), no socket message.
      expect(t2.irqs - t0.irqs).toBeGreaterThan(0);
    });
  },
);
