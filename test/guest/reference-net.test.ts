/**
 * The guest's network steps (init.sh) and the host-side peers, checked against QEMU's own virtio-net-pci
 * behind a multiqueue tap in a network namespace this test creates. This is the reference run for the
 * later test of our device: the same steps and assertions, with our server as the NIC, must pass too.
 * (The stand-in function is attached over vfio-user as well, so the run also exercises both side by side.)
 */
import type { ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { GuestMemory } from '../../lib/memory/guest-memory.js';
import { cleanupNamespaces, NetNamespace } from '../../lib/host/netns.js';
import { StandInDevice } from '../../devices/serve/stand-in-device.js';
import { guestUnavailableReason, inProcessServer, runGuest } from './launch.test-support.js';

const reason = guestUnavailableReason();
if (reason && process.env.CI) throw new Error(`guest test cannot run in CI: ${reason}`);
const PEER = join(import.meta.dirname, 'tcp-peer.mjs');
const HOST = '10.77.0.1';
const GUEST = '10.77.0.2';
const BYTES = 4 << 20;
const KEY = Array.from({ length: 40 }, (_, i) => ((i * 37 + 11) & 0xff).toString(16).padStart(2, '0')).join(
  '',
);

afterAll(() => cleanupNamespaces());

/** Resolves with the first stdout line matching `re` (or rejects when the process exits first). */
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

describe.skipIf(reason !== null)(
  `guest network steps against QEMU's virtio-net-pci${reason ? ` (skipped: ${reason})` : ''}`,
  () => {
    it('ping, TCP both ways with checksums, ethtool -L/-X, per-queue interrupts', {
      timeout: 180_000,
    }, async () => {
      const ns = NetNamespace.create('vntg');
      try {
        ns.ip('tuntap', 'add', 'dev', 'vnt0', 'mode', 'tap', 'multi_queue');
        ns.configure('vnt0', `${HOST}/24`);
        const recv = ns.spawn('node', [PEER, 'recv', HOST, '5001']);
        const received = lineFrom(recv, /^(bytes=|error=)/);
        await lineFrom(recv, /^ready$/);
        let sent: Promise<string> | null = null;
        const r = await runGuest({
          netns: ns.name,
          params: {
            match: '1af4:1041',
            ip: `${GUEST}/24`,
            peer: HOST,
            port: 5001,
            bytes: BYTES,
            steps: `pci,virtio,up,ping:3,tcptx,tcprx,ethtool,channels:4,rssweight:0.1.0.0,rsskey:${KEY},ethtool,irqs,stats,ping:5,irqs,stats`,
          },
          qemuArgs: [
            '-netdev',
            'tap,id=n0,ifname=vnt0,script=no,downscript=no,vhost=off,queues=4',
            '-device',
            'virtio-net-pci,netdev=n0,disable-legacy=on,mq=on,vectors=10,rss=on,mac=52:54:00:77:00:02,bus=pcie.0,addr=3.0',
          ],
          startServer: inProcessServer(new StandInDevice({ memory: new GuestMemory() })),
          onResult: (k) => {
            if (k === 'tcp_rx_listening') {
              const send = ns.spawn('node', [PEER, 'send', GUEST, '5001', String(BYTES)]);
              sent = lineFrom(send, /^(bytes=|error=)/);
            }
          },
          timeoutMs: 170_000,
        });
        const res = r.results;
        const diag = `\n${r.lines
          .filter((l) => !l.startsWith('RESULT stat_'))
          .slice(-70)
          .join('\n')}`;
        expect(res.done, diag).toBe('1');
        expect(res.virtio_driver, diag).toBe('virtio-pci');
        expect(res.mac).toBe('52:54:00:77:00:02');
        expect(res.virtio_features?.slice(0, 64)).toMatch(/^[01]{64}$/);
        expect([res.carrier, res.operstate]).toEqual(['1', 'up']);
        expect(res.ping_received, diag).toBe('5');
        expect(await received).toBe(`bytes=${BYTES} sha256=${res.tcp_tx_sha256}`);
        expect(res.tcp_tx_bytes).toBe(String(BYTES));
        expect(sent, diag).not.toBeNull();
        expect(await sent).toBe(`bytes=${BYTES} sha256=${res.tcp_rx_sha256}`);
        expect(res.ethtool_driver).toBe('virtio_net');
        expect(res.ethtool_L_rc).toBe('0');
        expect(res.channels).toBe('4');
        expect(res.ethtool_X_weight_rc, diag).toBe('0');
        expect(res.ethtool_X_hkey_rc, diag).toBe('0');
        expect(res.rss_hkey).toBe(KEY);
        // After the weights change every IPv4 packet is steered to rx queue 1: across five pings its packet
        // and interrupt counts rise while queues 2 and 3 stay still (non-IP frames may still go to queue 0).
        const delta = (key: string) => {
          const v = r.pairs.filter(([k]) => k === key).map(([, x]) => Number(x));
          expect(v, `${key} before and after`).toHaveLength(2);
          return (v[1] as number) - (v[0] as number);
        };
        expect(delta('stat_rx_queue_1_packets'), diag).toBeGreaterThanOrEqual(5);
        expect(delta('irq_virtio0-input.1')).toBeGreaterThan(0);
        expect([delta('stat_rx_queue_2_packets'), delta('stat_rx_queue_3_packets')]).toEqual([0, 0]);
      } finally {
        ns.delete();
      }
    });
  },
);
