/**
 * Our virtio-net device (createVirtioNetPci) as a stock Linux guest's NIC: QEMU 11.x attaches it over
 * vfio-user (our server, in this process), its backend is a 4-queue TapBackend in a network namespace the
 * test creates, and Linux 6.1's own virtio_pci / virtio_net drivers drive it.
 * The same guest steps pass against QEMU's virtio-net-pci in reference-net.test.ts.
 */
import { type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type {
  VfioUserDevice,
  VfioUserInterruptSink,
  VfioUserServer,
} from '../../devices/vfio-user-server.js';
import { createVirtioNetPci } from '../../devices/virtio-net-pci.js';
import { GuestMemory } from '../../lib/guest-memory.js';
import { cleanupNamespaces, NetNamespace } from '../../lib/netns.js';
import { TapBackend } from '../../lib/tap-backend.js';
import { guestUnavailableReason, inProcessServer, runGuest } from './launch.js';

const reason = guestUnavailableReason();
if (reason && process.env.CI) throw new Error(`guest test cannot run in CI: ${reason}`);
const PEER = join(import.meta.dirname, 'tcp-peer.mjs');
const HOST = '10.77.1.1';
const GUEST = '10.77.1.2';
const MAC = '52:54:00:77:01:02';
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

describe.skipIf(reason !== null)(
  `our virtio-net under Linux's drivers${reason ? ` (skipped: ${reason})` : ''}`,
  () => {
    it('binds, negotiates, pings, moves 4 MiB each way intact, and takes ethtool -L 4', {
      timeout: 180_000,
    }, async () => {
      const ns = NetNamespace.create('vntn');
      const tap = TapBackend.open({ name: 'vntn0', queues: 4, netns: ns.name });
      ns.configure('vntn0', `${HOST}/24`);
      const memory = new GuestMemory();
      let sink: VfioUserInterruptSink | null = null;
      const net = createVirtioNetPci({
        memory,
        backend: tap,
        mac: MAC,
        queues: 4,
        mq: true,
        rss: true,
        vectors: 10,
        interrupts: { vector: (n) => sink?.vector(n), intx: (a) => sink?.intx?.(a) },
      });
      // The adapter from the device's API to the server's device interface (docs/vfio-user.md).
      const device: VfioUserDevice = {
        configRead: (o, s) => net.configRead(o, s),
        configWrite: (o, s, v) => net.configWrite(o, s, v),
        barRead: (b, o, s) => net.barRead(b, o, s),
        barWrite: (b, o, s, v) => net.barWrite(b, o, s, v),
        bars: net.bars,
        msixVectors: net.msixVectors,
        memory: net.memory,
        setInterruptSink: (s) => {
          sink = s;
        },
        reset: () => net.reset(),
      };
      let server: VfioUserServer | null = null;
      try {
        const recv = ns.spawn('node', [PEER, 'recv', HOST, '5001']);
        const received = lineFrom(recv, /^(bytes=|error=)/);
        await lineFrom(recv, /^ready$/);
        let sent: Promise<string> | null = null;
        const r = await runGuest({
          params: {
            match: '1af4:1041',
            ip: `${GUEST}/24`,
            peer: HOST,
            port: 5001,
            bytes: BYTES,
            steps: 'pci,virtio,up,ping:3,tcptx,tcprx,ethtool,channels:4,ping:3,irqs,stats',
          },
          startServer: inProcessServer(device, (s) => (server = s)),
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
        expect([res.pci_vendor, res.pci_device, res.pci_class]).toEqual(['0x1af4', '0x1041', '0x020000']);
        expect(res.virtio_driver, diag).toBe('virtio-pci');
        expect(res.mac).toBe(MAC);
        // Negotiated (sysfs lists bit 0 first): MAC 5, STATUS 16, CTRL_VQ 17, MQ 22, VERSION_1 32, RSS 60.
        const f = res.virtio_features ?? '';
        expect([5, 16, 17, 22, 32, 60].map((b) => f[b])).toEqual(['1', '1', '1', '1', '1', '1']);
        expect([res.carrier, res.operstate]).toEqual(['1', 'up']);
        expect(r.pairs.filter(([k]) => k === 'ping_received').map(([, v]) => v)).toEqual(['3', '3']);
        expect(await received).toBe(`bytes=${BYTES} sha256=${res.tcp_tx_sha256}`);
        expect(sent, diag).not.toBeNull();
        expect(await sent).toBe(`bytes=${BYTES} sha256=${res.tcp_rx_sha256}`);
        expect(res.ethtool_driver).toBe('virtio_net');
        expect([res.ethtool_L_rc, res.channels]).toEqual(['0', '4']);
        // Interrupts arrived per queue through the vfio-user eventfds.
        expect(
          Number(res['irq_virtio0-input.0'] ?? 0) + Number(res['irq_virtio0-input.1'] ?? 0),
        ).toBeGreaterThan(0);
        const st = (server as unknown as VfioUserServer).stats();
        expect(st.irqsSignalled).toBeGreaterThan(0);
        expect(st.errors).toEqual({});
      } finally {
        net.close();
        ns.delete();
      }
    });
  },
);
