import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { cleanupNamespaces, NetNamespace, netnsUnavailableReason, uniqueName } from '../../lib/host/netns.js';
import { VfioUserClient } from '../../lib/vfio-user/client.js';
import { Command, encodeVersionBody, view } from '../../lib/vfio-user/protocol.js';
import type { WorkerPool } from '../virtio-net/workers/pool.js';
import { cliInfo, runCli } from './cli.js';
import { StandInDevice } from './stand-in-device.js';
import { parseServeWorkers, type VirtioNetVfioUserDevice } from './vfio-user.js';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'vfu-cli-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const version = () =>
  encodeVersionBody(0, 0, {
    maxMsgFds: 8,
    maxDataXferSize: 4096,
    pgsizes: 4096,
    maxDmaMaps: 16,
    writeMultiple: false,
  });
function readConfig(c: VfioUserClient, offset: number) {
  const b = new Uint8Array(16);
  const v = view(b);
  v.setBigUint64(0, BigInt(offset), true);
  v.setUint32(8, 7, true);
  v.setUint32(12, 4, true);
  return c.request(Command.REGION_READ, b).then((r) => view(r.body).getUint32(16, true));
}

describe('virtio-net-ts serve', () => {
  it('serves the chosen device with its -o options, and --once stops after the client leaves', async () => {
    const sock = join(dir, 's.sock');
    const out: string[] = [];
    let got: Record<string, string> = {};
    const run = await runCli(
      [
        'serve',
        '--socket',
        sock,
        '--device',
        'probe',
        '-o',
        'vectors=2',
        '-o',
        'mac=52:54:00:12:34:56',
        '--once',
      ],
      {
        out: (l) => out.push(l),
        handleSignals: false,
        factories: {
          probe: ({ memory, options }) => {
            got = options;
            return new StandInDevice({ memory, msixVectors: Number(options.vectors) });
          },
        },
      },
    );
    expect(out).toEqual([`listening ${sock}`]);
    expect(got).toEqual({ vectors: '2', mac: '52:54:00:12:34:56' });
    const c = VfioUserClient.connect(sock);
    await c.request(Command.VERSION, version());
    expect(await readConfig(c, 0)).toBe(0x7e571b36);
    c.close();
    await run.done;
    expect(existsSync(sock)).toBe(false);
  });

  it('creates the socket 0600, or with --socket-mode / --socket-group', async () => {
    const old = process.umask(0);
    try {
      for (const [flags, mode] of [
        [[], 0o600],
        [['--socket-mode', '0640'], 0o640],
        [['--socket-group', String(process.getgid?.() ?? 0)], 0o660],
      ] as [string[], number][]) {
        const sock = join(dir, 'm.sock');
        const run = await runCli(['serve', '--socket', sock, '--device', 'stand-in', ...flags], {
          out: () => {},
          handleSignals: false,
        });
        expect(statSync(sock).mode & 0o7777).toBe(mode);
        await run.stop();
      }
    } finally {
      process.umask(old);
    }
    await expect(
      runCli(['serve', '--socket', join(dir, 'x'), '--device', 'stand-in', '--socket-mode', 'rw']),
    ).rejects.toThrow(/--socket-mode/);
  });

  it('--help, -h, serve --help and --version print and exit 0 without serving', async () => {
    for (const argv of [['--help'], ['-h'], ['serve', '--help'], ['serve', '-h'], ['--version']]) {
      const out = cliInfo(argv);
      expect(out, argv.join(' ')).toMatch(
        argv[0] === '--version' ? /^\d+\.\d+\.\d+\n$/ : /^usage: virtio-net-ts serve /,
      );
    }
    expect(cliInfo(['serve', '--socket', 'x'])).toBeNull();
    expect(cliInfo([])).toBeNull(); // no command: the usage as an error, exit 2
    const child = spawn(process.execPath, [
      '--import',
      'tsx',
      join(import.meta.dirname, 'cli.ts'),
      'serve',
      '--help',
    ]);
    let stdout = '';
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
    });
    const code = await new Promise<number | null>((r) => child.on('exit', r));
    expect(code).toBe(0);
    expect(stdout).toMatch(/^usage: virtio-net-ts serve /);
  });

  it('refuses bad command lines with the reason', async () => {
    await expect(runCli([])).rejects.toThrow(/usage/);
    await expect(runCli(['serve'])).rejects.toThrow(/--socket is required/);
    await expect(runCli(['serve', '--socket', join(dir, 'x'), '--device', 'nope'])).rejects.toThrow(
      /unknown --device nope; available: virtio-net, stand-in/,
    );
    // The default device is virtio-net, which needs a tap; its -o are QEMU properties.
    await expect(runCli(['serve', '--socket', join(dir, 'x')])).rejects.toThrow(/needs --tap NAME/);
    await expect(
      runCli(['serve', '--socket', join(dir, 'x'), '--tap', 'vntx0', '-o', 'nonsense=on']),
    ).rejects.toThrow(/unknown property "nonsense"; accepted: /);
    // Options are checked before anything is created on the host: no tap appears.
    await expect(
      runCli(['serve', '--socket', join(dir, 'x'), '--tap', 'vntq0', '-o', 'queues=0']),
    ).rejects.toThrow(/option "queues": expected 1..256/);
    expect(existsSync('/sys/class/net/vntq0')).toBe(false);
    await expect(
      runCli(['serve', '--socket', join(dir, 'x'), '--tap', 'vntx0', '-o', 'mq=maybe']),
    ).rejects.toThrow(/"mq" expects on or off/);
    await expect(
      runCli(['serve', '--socket', join(dir, 'x'), '--device', 'stand-in', '-o', 'novalue']),
    ).rejects.toThrow(/key=value/);
    await expect(runCli(['serve', '--socket', join(dir, 'x'), '--bogus'])).rejects.toThrow();
    // SR-IOV flags: counts, policies and devices without VFs are refused before a tap is created.
    const x = join(dir, 'x');
    await expect(runCli(['serve', '--socket', x, '--tap', 'vntv0', '--vfs', '0'])).rejects.toThrow(
      /--vfs wants a VF count 1..255/,
    );
    await expect(runCli(['serve', '--socket', x, '--tap', 'vntv0', '--vf', '0,trust=on'])).rejects.toThrow(
      /--vf needs --vfs N/,
    );
    await expect(
      runCli(['serve', '--socket', x, '--tap', 'vntv0', '--vfs', '2', '--vf', '2,trust=on']),
    ).rejects.toThrow(/--vf 2: no such VF/);
    await expect(
      runCli(['serve', '--socket', x, '--tap', 'vntv0', '--vfs', '1', '--vf', '0,mac=ff:00:00:00:00:01']),
    ).rejects.toThrow(/field "mac": expected a unicast MAC/);
    await expect(
      runCli(['serve', '--socket', x, '--tap', 'vntv0', '--vfs', '1', '--vf', '0,state=sometimes']),
    ).rejects.toThrow(/field "linkState"/);
    expect(existsSync('/sys/class/net/vntv0')).toBe(false);
    await expect(runCli(['serve', '--socket', x, '--device', 'stand-in', '--vfs', '1'])).rejects.toThrow(
      /--device stand-in cannot serve --vfs 1/,
    );
    expect(existsSync(x)).toBe(false);
  });

  it('-o workers=auto|on|off|N: bad values and workers with --vfs are refused, naming the option, before a tap exists', async () => {
    const x = join(dir, 'x');
    for (const v of ['maybe', '0', '-1', '257', '1.5', '']) {
      await expect(
        runCli([
          'serve',
          '--socket',
          x,
          '--tap',
          'vntw0',
          '-o',
          'mq=on',
          '-o',
          'queues=2',
          '-o',
          `workers=${v}`,
        ]),
      ).rejects.toThrow(`-o workers=${v}: expected auto, on, off or a thread count 1..256`);
    }
    for (const v of ['on', '2']) {
      await expect(
        runCli(['serve', '--socket', x, '--tap', 'vntw0', '--vfs', '1', '-o', `workers=${v}`]),
      ).rejects.toThrow(`-o workers=${v}: queue pairs on workers cannot serve --vfs (SR-IOV)`);
    }
    expect(existsSync('/sys/class/net/vntw0')).toBe(false);
    expect(existsSync(x)).toBe(false);
  });

  it('-o workers: auto means workers with more than one queue pair and no VFs', () => {
    expect(parseServeWorkers(undefined, 1, 0)).toBe(false);
    expect(parseServeWorkers(undefined, 2, 0)).toBe(true);
    expect(parseServeWorkers('auto', 4, 0)).toBe(true);
    expect(parseServeWorkers('auto', 4, 2)).toBe(false);
    // No eBPF steering: the guest's RSS would stay in software, which workers cannot do across threads.
    expect(parseServeWorkers('auto', 4, 0, false)).toBe(false);
    expect(parseServeWorkers('on', 4, 0, false)).toBe(true);
    expect(parseServeWorkers('off', 4, 0)).toBe(false);
    expect(parseServeWorkers('off', 4, 2)).toBe(false);
    expect(parseServeWorkers('on', 1, 0)).toBe(true);
    expect(parseServeWorkers('3', 8, 0)).toBe(3);
    expect(parseServeWorkers('256', 8, 0)).toBe(256);
  });

  it('runs as a program (stand-in device) and exits on SIGTERM', async () => {
    const sock = join(dir, 'p.sock');
    const child = spawn(
      process.execPath,
      [
        '--import',
        'tsx',
        join(import.meta.dirname, 'cli.ts'),
        'serve',
        '--socket',
        sock,
        '--device',
        'stand-in',
      ],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    const line = await new Promise<string>((resolve, reject) => {
      child.stdout.once('data', (d: Buffer) => resolve(d.toString().trim()));
      child.once('exit', (code) => reject(new Error(`exited ${code}`)));
    });
    expect(line).toBe(`listening ${sock}`);
    const c = VfioUserClient.connect(sock);
    await c.request(Command.VERSION, version());
    expect(await readConfig(c, 0x108)).toBe(0x53544e56);
    c.close();
    const code = await new Promise<number | null>((resolve) => {
      child.once('exit', (cd) => resolve(cd));
      child.kill('SIGTERM');
    });
    expect(code).toBe(0);
    expect(existsSync(sock)).toBe(false);
  }, 30_000);
});

const noTap = netnsUnavailableReason();

describe.skipIf(noTap !== null)(
  `virtio-net-ts serve --tap (the real device)${noTap ? ` (skipped: ${noTap})` : ''}`,
  () => {
    afterEach(() => cleanupNamespaces());

    it('serves createVirtioNetPci on a TapBackend with the -o properties, and releases the tap on stop', async () => {
      const ns = NetNamespace.create('vntc');
      const tap = uniqueName('vtc');
      const sock = join(dir, 'n.sock');
      const run = await runCli(
        [
          'serve',
          '--socket',
          sock,
          '--tap',
          tap,
          '--netns',
          ns.name,
          '-o',
          'mq=on',
          '-o',
          'queues=2',
          '-o',
          'mac=52:54:00:aa:bb:cc',
          '-o',
          'mrg_rxbuf=off',
          '-o',
          'netdev=ignored',
        ],
        { out: () => {}, handleSignals: false },
      );
      const dev = run.device as VirtioNetVfioUserDevice;
      // The tap is a 2-queue tap in the namespace, held by the device.
      expect(ns.ip('-d', 'link', 'show', 'dev', tap)).toMatch(/tun type tap .*multi_queue/);
      // queues=2 without VFs: the pairs run on worker threads by default (-o workers=auto).
      expect((dev.net.net.dataPlane as WorkerPool | null)?.workerCount).toBe(2);
      expect(dev.msixVectors).toBe(6); // QEMU's default: 2 * queues + 2
      const offered = dev.net.transport.offeredFeatures;
      expect([(offered >> 22n) & 1n, (offered >> 15n) & 1n, (offered >> 5n) & 1n]).toEqual([1n, 0n, 1n]); // MQ, no MRG_RXBUF, MAC
      const c = VfioUserClient.connect(sock);
      await c.request(Command.VERSION, version());
      expect(await readConfig(c, 0)).toBe(0x10411af4); // virtio-net, modern
      // The -o mac reached the device (the guest reads it from the device config).
      expect(dev.net.net.snapshot().mac).toEqual([0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc]);
      c.close();
      await run.stop();
      expect(existsSync(sock)).toBe(false);
      // A non-persistent tap disappears with its last fd.
      expect(ns.ip('link', 'show')).not.toContain(tap);
      ns.delete();
    });

    it('--vfs 2: the PF on PATH and each VF on PATH.vfI, sharing one switch whose uplink is the tap; --vf sets policy', async () => {
      const ns = NetNamespace.create('vntc');
      const tap = uniqueName('vtc');
      const sock = join(dir, 's.sock');
      const lines: string[] = [];
      const run = await runCli(
        ['serve', '--socket', sock, '--tap', tap, '--netns', ns.name, '--vfs', '2'].concat([
          '--vf',
          '1,mac=02:00:00:00:01:01,trust=on,state=disable',
          '--vf',
          '0,spoofchk=off',
        ]),
        { out: (l) => lines.push(l), handleSignals: false },
      );
      expect(lines).toEqual([
        `listening ${sock}`,
        `listening ${sock}.vf0 (vf 0)`,
        `listening ${sock}.vf1 (vf 1)`,
      ]);
      expect(run.vfServers).toHaveLength(2);
      const dev = run.device as VirtioNetVfioUserDevice;
      expect(dev.net.vfs).toHaveLength(2);
      expect(dev.net.vfInfo(1)).toMatchObject({
        mac: '02:00:00:00:01:01',
        trust: true,
        linkState: 'disable',
      });
      expect(dev.net.vfInfo(0)).toMatchObject({ spoofCheck: false, trust: false });
      expect(ns.ip('-d', 'link', 'show', 'dev', tap)).toMatch(/tun type tap/);
      for (const [path, id] of [
        [sock, 0x10411af4],
        [`${sock}.vf1`, 0x10411af4],
      ] as const) {
        const c = VfioUserClient.connect(path);
        await c.request(Command.VERSION, version());
        expect(await readConfig(c, 0)).toBe(id);
        c.close();
      }
      await run.stop();
      expect([sock, `${sock}.vf0`, `${sock}.vf1`].some((p) => existsSync(p))).toBe(false);
      expect(ns.ip('link', 'show')).not.toContain(tap);
      ns.delete();
    });

    it('as a program: SIGUSR1 / SIGUSR2 take the link down and up (the tap carrier follows), SIGTERM exits 0', async () => {
      const ns = NetNamespace.create('vntc');
      const tap = uniqueName('vtc');
      const sock = join(dir, 'q.sock');
      const child = spawn(
        process.execPath,
        [
          '--import',
          'tsx',
          join(import.meta.dirname, 'cli.ts'),
          'serve',
          '--socket',
          sock,
          '--tap',
          tap,
          '--netns',
          ns.name,
        ],
        { stdio: ['ignore', 'pipe', 'pipe'] },
      );
      const lines: string[] = [];
      const next = (re: RegExp) =>
        new Promise<string>((resolve, reject) => {
          const check = () => {
            const l = lines.find((x) => re.test(x));
            if (l) resolve(l);
          };
          child.stdout.on('data', (d: Buffer) => {
            lines.push(...d.toString().trim().split('\n'));
            check();
          });
          child.once('exit', (code) => reject(new Error(`exited ${code}: ${lines.join('|')}`)));
          check();
        });
      expect(await next(/^listening /)).toBe(`listening ${sock}`);
      ns.ip('link', 'set', 'dev', tap, 'up');
      expect(ns.ip('link', 'show', 'dev', tap)).not.toMatch(/NO-CARRIER/);
      child.kill('SIGUSR1');
      expect(await next(/^link down$/)).toBe('link down');
      expect(ns.ip('link', 'show', 'dev', tap)).toMatch(/NO-CARRIER/);
      child.kill('SIGUSR2');
      expect(await next(/^link up$/)).toBe('link up');
      expect(ns.ip('link', 'show', 'dev', tap)).not.toMatch(/NO-CARRIER/);
      const code = await new Promise<number | null>((resolve) => {
        child.once('exit', (cd) => resolve(cd));
        child.kill('SIGTERM');
      });
      expect(code).toBe(0);
      expect(existsSync(sock)).toBe(false);
      expect(ns.ip('link', 'show')).not.toContain(tap);
      ns.delete();
    }, 30_000);
  },
);
