/**
 * Boots a stock Linux guest (Debian 12's Linux 6.1 or Debian sid's Linux 7.2, busybox /init from init.sh)
 * under QEMU 11.x with our vfio-user server as a PCI function, and collects the guest's `RESULT key=value`
 * lines.
 *
 * QEMU runs from the cached Debian sid root (prepare.sh) as
 *   setpriv --pdeathsig KILL -- unshare --mount --propagation private -- sh -c 'mount …; exec chroot ROOT qemu…'
 * so its /proc, /dev and run-folder mounts live in a private mount namespace that disappears with it, and it
 * is killed if this process dies. The run folder (socket, kernel, initrd, serial log) is a fresh temp dir,
 * bind-mounted at /mnt inside the root, removed on every exit path. TCG, q35, 512 MiB memfd-backed shared RAM,
 * a PCIe root port, `-device vfio-user-pci` on the socket, the serial console on a pipe.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { accessSync, constants, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  type VfioUserDevice,
  VfioUserServer,
  type VfioUserServerOptions,
} from '../../lib/vfio-user/server.js';

const HERE = dirname(fileURLToPath(import.meta.url));

export const DEFAULT_CACHE = process.env.VNT_GUEST_CACHE ?? '/var/cache/virtio-net-ts';

/** The guest kernels prepare.sh caches: Debian 12's (guest-kit) and Debian sid's (guest-kit-7.2). */
export type GuestKernel = '6.1' | '7.2';
export const GUEST_KERNELS: readonly GuestKernel[] = ['6.1', '7.2'];

export interface GuestPaths {
  qemuRoot: string;
  guestKit: string;
}

export function guestPaths(cacheDir = DEFAULT_CACHE, kernel: GuestKernel = '6.1'): GuestPaths {
  const kit = kernel === '6.1' ? 'guest-kit' : `guest-kit-${kernel}`;
  return { qemuRoot: join(cacheDir, 'qemu-root'), guestKit: join(cacheDir, kit) };
}

/** Why the guest harness cannot run here with `kernel`, or null when it can. */
export function guestUnavailableReason(cacheDir = DEFAULT_CACHE, kernel: GuestKernel = '6.1'): string | null {
  if (process.platform !== 'linux') return `needs Linux (this is ${process.platform})`;
  if (typeof process.getuid === 'function' && process.getuid() !== 0)
    return 'needs root (chroot, mount namespace)';
  try {
    accessSync('/dev/net/tun', constants.R_OK | constants.W_OK);
  } catch {
    return 'needs /dev/net/tun';
  }
  const p = guestPaths(cacheDir, kernel);
  if (!existsSync(join(p.qemuRoot, 'usr/bin/qemu-system-x86_64')))
    return `no QEMU root in ${p.qemuRoot} (run test/guest/prepare.sh)`;
  if (!existsSync(join(p.guestKit, 'vmlinuz')))
    return `no guest kit in ${p.guestKit} (run test/guest/prepare.sh)`;
  for (const tool of ['unshare', 'setpriv', 'chroot']) {
    try {
      execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'pipe' });
    } catch {
      return `needs ${tool} (util-linux / coreutils)`;
    }
  }
  return null;
}

/** Something the launcher starts before QEMU and stops after it (our vfio-user server). */
export interface ServerHandle {
  close(): Promise<void>;
}

export interface GuestRunOptions {
  /** Starts the vfio-user server listening on `socketPath` (a host path); called before QEMU starts. */
  startServer(socketPath: string): Promise<ServerHandle>;
  /** `vnt.*` parameters for init.sh, e.g. { match: '1af4:1041', steps: 'pci,virtio,up,ping:3' }. */
  params: Record<string, string | number>;
  cacheDir?: string;
  /** The guest kernel (its kit from prepare.sh). Default '6.1'. */
  kernel?: GuestKernel;
  smp?: number;
  memoryMiB?: number;
  /** Kills QEMU after this long. Default 120 s. */
  timeoutMs?: number;
  /** Every serial-console line (without CR/LF). */
  onLine?(line: string): void;
  /** Every RESULT pair as it arrives (for steps the host must answer, e.g. tcp_rx_listening). */
  onResult?(key: string, value: string): void;
  /** Keep serial.log and cmd.txt here (the run folder itself is always removed). */
  logDir?: string;
  /** Extra QEMU arguments (e.g. a reference `-netdev tap,… -device virtio-net-pci,…`). */
  qemuArgs?: string[];
  /** Run QEMU inside this network namespace (`ip netns exec`), so its tap devices live there. */
  netns?: string;
  /** Called with the QEMU process once spawned (it execs in place: killing it kills QEMU). */
  onSpawn?(qemu: ChildProcess): void;
}

export interface GuestRunResult {
  /** RESULT pairs; a key seen twice keeps its last value (all are in `pairs`). */
  results: Record<string, string>;
  pairs: [string, string][];
  lines: string[];
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  timedOut: boolean;
  durationMs: number;
  /** The run folder (socket, kernel, initrd); already removed when runGuest resolves. */
  runDir: string;
}

function parseResult(line: string): [string, string][] {
  const m = /^RESULT (.*)$/.exec(line);
  if (!m) return [];
  return (m[1] as string)
    .trim()
    .split(/\s+/)
    .flatMap((tok) => {
      const i = tok.indexOf('=');
      return i > 0 ? [[tok.slice(0, i), tok.slice(i + 1)] as [string, string]] : [];
    });
}

/** Boots the guest once and resolves when it powered off (or was killed at the timeout). */
export async function runGuest(opts: GuestRunOptions): Promise<GuestRunResult> {
  const cacheDir = opts.cacheDir ?? DEFAULT_CACHE;
  const kernel = opts.kernel ?? '6.1';
  const reason = guestUnavailableReason(cacheDir, kernel);
  if (reason) throw new Error(`guest harness unavailable: ${reason}`);
  const { qemuRoot, guestKit } = guestPaths(cacheDir, kernel);
  const run = mkdtempSync(join(tmpdir(), 'vnt-guest-'));
  let server: ServerHandle | null = null;
  let qemu: ChildProcess | null = null;
  const t0 = Date.now();
  const lines: string[] = [];
  const pairs: [string, string][] = [];
  try {
    execFileSync('sh', [join(HERE, 'mkinitrd.sh'), guestKit, run], { stdio: ['ignore', 'pipe', 'pipe'] });
    server = await opts.startServer(join(run, 'vfu.sock'));
    const mem = opts.memoryMiB ?? 512;
    const append = [
      'console=ttyS0',
      // VNT_GUEST_VERBOSE=1 keeps the kernel's boot messages (a probe that hangs shows where).
      ...(process.env.VNT_GUEST_VERBOSE ? [] : ['quiet']),
      'panic=-1',
      ...Object.entries(opts.params).map(([k, v]) => `vnt.${k}=${v}`),
    ].join(' ');
    const dev = {
      driver: 'vfio-user-pci',
      id: 'vfu0',
      bus: 'rp0',
      addr: '0.0',
      socket: { type: 'unix', path: '/mnt/vfu.sock' },
    };
    const qemuArgv = [
      'qemu-system-x86_64',
      '-accel',
      'tcg',
      '-cpu',
      'max',
      '-smp',
      String(opts.smp ?? 2),
      '-object',
      `memory-backend-memfd,id=mem,size=${mem}M,share=on`,
      '-machine',
      'q35,memory-backend=mem',
      '-m',
      `${mem}M`,
      '-nographic',
      '-no-reboot',
      '-nodefaults',
      '-serial',
      'stdio',
      '-kernel',
      '/mnt/vmlinuz',
      '-initrd',
      '/mnt/initrd.gz',
      '-append',
      append,
      '-device',
      'pcie-root-port,id=rp0,bus=pcie.0,chassis=1,addr=2.0',
      '-device',
      JSON.stringify(dev),
      ...(opts.qemuArgs ?? []),
    ];
    // $1 = root, $2 = run folder, then QEMU's argv.
    const script =
      'R=$1; RUN=$2; shift 2; mount -t proc proc "$R/proc" && mount --bind /dev "$R/dev" && mount --bind "$RUN" "$R/mnt" && exec chroot "$R" "$@"';
    const argv = [
      '--pdeathsig',
      'KILL',
      '--',
      'unshare',
      '--mount',
      '--propagation',
      'private',
      '--',
      'sh',
      '-c',
      script,
      'sh',
      qemuRoot,
      run,
      ...qemuArgv,
    ];
    if (opts.logDir)
      writeFileSync(
        join(opts.logDir, 'cmd.txt'),
        `setpriv ${argv.map((a) => (/[\s{"$;]/.test(a) ? `'${a}'` : a)).join(' ')}\n`,
      );
    // `ip netns exec` execs in place, so QEMU stays this process's child and --pdeathsig still applies.
    const [cmd, args] = opts.netns
      ? ['ip', ['netns', 'exec', opts.netns, 'setpriv', ...argv]]
      : ['setpriv', argv];
    const child = spawn(cmd, args as string[], { stdio: ['ignore', 'pipe', 'pipe'] });
    qemu = child;
    opts.onSpawn?.(child);
    const timeoutMs = opts.timeoutMs ?? 120_000;
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    let buf = '';
    const onData = (d: Buffer) => {
      buf += d.toString('utf8');
      let nl = buf.indexOf('\n');
      while (nl >= 0) {
        const line = buf.slice(0, nl).replace(/\r/g, '');
        buf = buf.slice(nl + 1);
        lines.push(line);
        opts.onLine?.(line);
        for (const [k, v] of parseResult(line)) {
          pairs.push([k, v]);
          try {
            opts.onResult?.(k, v);
          } catch (e) {
            lines.push(`[launch] onResult threw: ${(e as Error).message}`);
          }
        }
        nl = buf.indexOf('\n');
      }
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', (d: Buffer) => {
      for (const l of d.toString('utf8').split('\n')) if (l.trim()) lines.push(`[qemu stderr] ${l}`);
    });
    const [exitCode, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) => {
      child.on('exit', (code, sig) => resolve([code, sig]));
      child.on('error', (e) => {
        lines.push(`[launch] spawn failed: ${e.message}`);
        resolve([null, null]);
      });
    });
    clearTimeout(timer);
    qemu = null;
    if (buf) lines.push(buf.replace(/\r/g, ''));
    return {
      results: Object.fromEntries(pairs),
      pairs,
      lines,
      exitCode,
      signal,
      timedOut,
      durationMs: Date.now() - t0,
      runDir: run,
    };
  } finally {
    if (qemu && qemu.exitCode === null && qemu.signalCode === null) {
      const q = qemu;
      const gone = new Promise<void>((r) => q.once('exit', () => r()));
      q.kill('SIGKILL');
      await gone;
    }
    if (server) await server.close();
    if (opts.logDir) writeFileSync(join(opts.logDir, 'serial.log'), `${lines.join('\n')}\n`);
    rmSync(run, { recursive: true, force: true });
  }
}

/**
 * A `startServer` that serves `device` from this process; `onServer` receives the server (for its stats).
 * The real test plugs in the same way: `startServer: inProcessServer(adapter, (s) => (server = s))`.
 */
export function inProcessServer(
  device: VfioUserDevice,
  onServer?: (server: VfioUserServer) => void,
  options: Omit<VfioUserServerOptions, 'socketPath'> = {},
): GuestRunOptions['startServer'] {
  return async (socketPath) => {
    const server = new VfioUserServer(device, { ...options, socketPath });
    await server.listen();
    onServer?.(server);
    return server;
  };
}
