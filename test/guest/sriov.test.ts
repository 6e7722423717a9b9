/**
 * SR-IOV for containers in a VM, with a stock Linux guest (issue 15): QEMU 11.x attaches our PF and two
 * host-enabled VFs as three vfio-user-pci functions (one socket each, devices/serve/sriov.ts, served from
 * this process and sharing one embedded switch); the PF's backend, the switch's uplink, is a tap in a
 * network namespace the test creates. Inside the guest two network namespaces each own one VF netdev and
 * the guest has no bridge: ping and a 4 MiB TCP transfer (SHA-256 on both ends) between them cross our
 * switch (its per-port counters show it); namespace A reaches the host's tap through the uplink; A, not
 * trusted, is refused another MAC and its forged-source frames (a macvlan on its VF) are dropped and
 * counted; B sees its carrier go down while the host sets its VF's link state to disable.
 */
import { existsSync, readdirSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { type VirtioNetSriovFunctions, virtioNetSriovVfioUser } from '../../devices/serve/sriov.js';
import type { SwitchStats } from '../../devices/eswitch/switch.js';
import { vfMac } from '../../devices/virtio-net-pci.js';
import { cleanupNamespaces, ip, NetNamespace } from '../../lib/host/netns.js';
import { GuestMemory } from '../../lib/memory/guest-memory.js';
import { TapBackend } from '../../lib/tap/tap-backend.js';
import { VfioUserServer } from '../../lib/vfio-user/server.js';
import { type GuestRunResult, guestUnavailableReason, runGuest } from './launch.test-support.js';

const reason = guestUnavailableReason();
if (reason && process.env.CI) throw new Error(`guest test cannot run in CI: ${reason}`);
const HOST = '10.88.0.254';
const PF_MAC = '52:54:00:88:00:01';
const VF_MACS = [vfMac(PF_MAC, 0), vfMac(PF_MAC, 1)];
const TAP = 'vnts0';
const BYTES = 4 << 20;

afterAll(() => cleanupNamespaces());

interface Run {
  r: GuestRunResult;
  res: Record<string, string>;
  marks: Map<string, SwitchStats>;
  carrier: { down: boolean | null; up: boolean | null };
  servers: VfioUserServer[];
  diag: string;
  nsName: string;
}

async function boot(steps: string): Promise<Run> {
  const ns = NetNamespace.create('vnts');
  const tap = TapBackend.open({ name: TAP, queues: 1, netns: ns.name });
  ns.exec('sysctl', ['-q', '-w', `net.ipv6.conf.${TAP}.disable_ipv6=1`]);
  ns.configure(TAP, `${HOST}/24`);
  let fns: VirtioNetSriovFunctions | null = null;
  const servers: VfioUserServer[] = [];
  const marks = new Map<string, SwitchStats>();
  const carrier: Run['carrier'] = { down: null, up: null };
  let r: GuestRunResult;
  let finalStats = '';
  try {
    // VF policies as after `echo 2 > sriov_numvfs` on a hardware NIC: spoof check on, trust off.
    const f = virtioNetSriovVfioUser({
      options: { memory: new GuestMemory(), backend: tap, mac: PF_MAC },
      vfs: 2,
    });
    fns = f;
    r = await runGuest({
      params: {
        match: '1af4:1041',
        peer: HOST,
        bytes: BYTES,
        vf0mac: VF_MACS[0] as string,
        vf1mac: VF_MACS[1] as string,
        steps,
      },
      startServer: async (socketPath) => {
        // The PF on the launcher's socket, VF i on socketPath.vfI (as `serve --vfs`).
        const fnsList = [f.pf, ...f.vfs];
        for (const [i, fn] of fnsList.entries()) {
          const s = new VfioUserServer(fn, { socketPath: i === 0 ? socketPath : `${socketPath}.vf${i - 1}` });
          await s.listen();
          servers.push(s);
        }
        return { close: async () => Promise.all(servers.map((s) => s.close())).then(() => {}) };
      },
      qemuArgs: [0, 1].flatMap((i) => [
        '-device',
        `pcie-root-port,id=rp${i + 1},bus=pcie.0,chassis=${i + 2},addr=${i + 3}.0`,
        '-device',
        JSON.stringify({
          driver: 'vfio-user-pci',
          id: `vfu${i + 1}`,
          bus: `rp${i + 1}`,
          addr: '0.0',
          socket: { type: 'unix', path: `/mnt/vfu.sock.vf${i}` },
        }),
      ]),
      onResult: (k, v) => {
        if (k === 'mark') marks.set(v, f.net.stats().switch as SwitchStats);
        else if (k === 'vfcarrier_wait') {
          // The host's `ip link set PF vf 1 state disable`, then `state auto`.
          f.net.setVf(1, { linkState: v === 'down' ? 'disable' : 'auto' });
          if (v === 'down') carrier.down = f.net.vfs[1]?.net.linkUp ?? null;
          else carrier.up = f.net.vfs[1]?.net.linkUp ?? null;
        }
      },
      timeoutMs: 170_000,
      logDir: process.env.VNT_GUEST_LOGDIR,
    });
  } finally {
    finalStats = JSON.stringify({
      switch: fns?.net.stats().switch,
      tap: tap.stats(),
      servers: servers.map((s) => s.stats()),
    });
    if (fns) fns.close();
    else tap.close();
    ns.delete();
  }
  const diag = `\n${r.lines.slice(-80).join('\n')}\nstats at the end: ${finalStats}`;
  return { r, res: r.results, marks, carrier, servers, diag, nsName: ns.name };
}

describe.skipIf(reason !== null)(
  `SR-IOV: containers in a stock Linux guest talk through VFs${reason ? ` (skipped: ${reason})` : ''}`,
  () => {
    it('two namespaces own a VF each: ping and 4 MiB TCP cross our switch, A reaches the tap, spoofing is refused and counted, link disable is seen', async () => {
      const fds0 = readdirSync('/proc/self/fd').length;
      const run = await boot(
        'virtio,vfns,mark:start,vfping:3,vftcp,mark:tcp,vfuplink:3,mark:uplink,vfspoof:4,mark:spoof,vfcarrier',
      );
      const { res, marks, diag } = run;
      expect(run.r.timedOut, diag).toBe(false);
      expect(res.done, diag).toBe('1');
      expect(res.step_failed, diag).toBeUndefined();
      // Each VF netdev left the root namespace for its own.
      expect(res.vf_ifa, diag).toMatch(/^eth\d$/);
      expect(res.vf_ifb, diag).toMatch(/^eth\d$/);
      expect(res.vfns_root_has_ifa, diag).toBe('0');
      expect(res.vf_b_carrier, diag).toBe('1');

      // A <-> B: ping and TCP, intact, through the switch's VF ports and not the uplink.
      expect([res.vfping_rc, res.vfping_received], diag).toEqual(['0', '3']);
      expect(res.vftcp_rx_bytes, diag).toBe(String(BYTES));
      expect(res.vftcp_rx_sha256, diag).toBe(res.vftcp_tx_sha256);
      const start = marks.get('start') as SwitchStats;
      const tcp = marks.get('tcp') as SwitchStats;
      expect(start && tcp, diag).toBeTruthy();
      const d = (a: SwitchStats, b: SwitchStats, port: 0 | 1, k: 'txBytes' | 'rxBytes' | 'txFrames') =>
        (b.vfs[port]?.[k] ?? 0) - (a.vfs[port]?.[k] ?? 0);
      expect(d(start, tcp, 0, 'txBytes'), diag).toBeGreaterThan(BYTES);
      expect(d(start, tcp, 1, 'rxBytes'), diag).toBeGreaterThan(BYTES);
      expect(d(start, tcp, 1, 'txFrames'), diag).toBeGreaterThan(3); // B's echo replies and ACKs
      expect(tcp.uplink.txBytes - start.uplink.txBytes, diag).toBeLessThan(BYTES / 100);

      // A -> the host's tap through the uplink, and back.
      expect([res.vfuplink_rc, res.vfuplink_received], diag).toEqual(['0', '3']);
      const uplink = marks.get('uplink') as SwitchStats;
      expect(uplink.uplink.txFrames - tcp.uplink.txFrames, diag).toBeGreaterThanOrEqual(3);
      expect(uplink.uplink.rxFrames - tcp.uplink.rxFrames, diag).toBeGreaterThanOrEqual(3);

      // A is not trusted: its MAC change is refused, and its forged-source frames are dropped, counted.
      expect(res.vfmac_set_rc, diag).not.toBe('0');
      expect(res.vfmac_after, diag).toBe(VF_MACS[0]);
      expect(res.vfspoof_received, diag).toBe('0');
      const spoofStart = marks.get('spoof_start') as SwitchStats;
      const spoof = marks.get('spoof') as SwitchStats;
      expect(
        (spoof.vfs[0]?.dropSpoof ?? 0) - (spoofStart.vfs[0]?.dropSpoof ?? 0),
        diag,
      ).toBeGreaterThanOrEqual(3);

      // B's VF set to link disable: the guest sees its carrier go; auto brings it back.
      expect(run.carrier, diag).toEqual({ down: false, up: true });
      expect(res.vfcarrier_seen_down, diag).toBe('1');
      expect(res.vfcarrier_flags, diag).not.toContain('LOWER_UP');
      expect(res.vfcarrier_seen_up, diag).toBe('1');

      // Nothing left behind: no mapping in any server, the namespace gone, no stray descriptor.
      for (const s of run.servers) expect(s.dmaRegions()).toEqual([]);
      expect(ip('netns', 'list')).not.toContain(run.nsName);
      expect(existsSync(run.r.runDir)).toBe(false);
      for (let i = 0; i < 100 && readdirSync('/proc/self/fd').length !== fds0; i++)
        await new Promise((res) => setTimeout(res, 20));
      expect(readdirSync('/proc/self/fd').length).toBe(fds0);
    }, 200_000);
  },
);
