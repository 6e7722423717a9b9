#!/usr/bin/env node
/**
 * Command line: `virtio-net-ts serve --socket PATH [--tap NAME [--netns NS]] [--device KIND] [-o key=value]...`
 * serves one device over vfio-user until SIGINT/SIGTERM (or, with --once, until the client disconnects);
 * with `--vfs N` also each host-enabled SR-IOV VF, on PATH.vf0 .. PATH.vf<N-1> (devices/serve/sriov.ts).
 *
 * Device kinds come from a table of factories: `virtio-net` (the default: createVirtioNetPci on a
 * TapBackend, `-o` taking QEMU virtio-net-pci properties) and `stand-in` (a test function, see
 * devices/serve/stand-in-device.ts) are built in; others are added with `runCli(argv, { factories })`.
 * While serving, SIGUSR1 takes the device's link down and SIGUSR2 brings it up (the guest sees
 * VIRTIO_NET_S_LINK_UP change; the tap's carrier follows).
 */
import { readFileSync, realpathSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { GuestMemory } from '../../lib/memory/guest-memory.js';
import { type VfioUserDevice, VfioUserServer } from '../../lib/vfio-user/server.js';
import type { VfPolicy } from '../eswitch/policy.js';
import { parseVfFlag } from './sriov.js';
import { StandInDevice } from './stand-in-device.js';
import { virtioNetFromCommandLine } from './vfio-user.js';

/** What a device factory gets from the command line. */
export interface DeviceFactoryInput {
  /** Guest memory the server fills from DMA_MAP; the device must use this instance. */
  memory: GuestMemory;
  /** --tap NAME, when given. */
  tap?: string;
  /** --netns NAME: the existing network namespace the tap is moved into. */
  netns?: string;
  /** Every `-o key=value` (QEMU virtio-net-pci property names for the real device). */
  options: Record<string, string>;
  /** --vfs N: SR-IOV VFs the host enables, each served on `PATH.vfI` (a factory without VFs refuses it). */
  vfs?: number;
  /** --vf I,key=value,...: VF policies by VF index. */
  vfPolicies?: Record<number, VfPolicy>;
}

/**
 * A device to serve; `close` (release the backend) and `setLinkUp` are used when present; `vfFunctions`
 * (with --vfs) are served on sockets of their own, `PATH.vf0`, `PATH.vf1`, ...
 */
export type ServedDevice = VfioUserDevice & {
  close?(): void;
  setLinkUp?(up: boolean): void;
  vfFunctions?: readonly VfioUserDevice[];
};

export type DeviceFactory = (input: DeviceFactoryInput) => ServedDevice | Promise<ServedDevice>;

export interface CliDeps {
  factories?: Record<string, DeviceFactory>;
  /** Where diagnostics and the "listening" line go (default: stdout / stderr). */
  out?: (line: string) => void;
  err?: (line: string) => void;
  /** Installs SIGINT/SIGTERM handlers (default true; tests pass false and call the returned stop()). */
  handleSignals?: boolean;
}

const USAGE = `usage: virtio-net-ts serve --socket PATH [--socket-mode M] [--socket-group G] [--tap NAME [--netns NS]] [--device KIND] [-o key=value]... [--vfs N [--vf I,key=value,...]...] [--once] [--verbose]
  --socket PATH   UNIX socket to listen on (QEMU: -device '{"driver":"vfio-user-pci","socket":{"type":"unix","path":PATH}}')
  --socket-mode M socket file mode, octal (default 0600: only this user may connect; 0660 with --socket-group)
  --socket-group G group of the socket file (name or id), so that group's members may connect
  --tap NAME      host tap interface for the network backend (virtio-net: required; created if absent)
  --netns NAME    move the tap into this existing network namespace
  --device KIND   device to serve (default virtio-net; built in: virtio-net, stand-in)
  -o key=value    device option (QEMU virtio-net-pci property names, e.g. mq=on queues=4 mac=...), repeatable
                  -o workers=auto|on|off|N: queue pairs on worker threads (auto, the default: when
                  queues > 1 and no --vfs; docs/workers.md)
  --vfs N         SR-IOV: the tap becomes the uplink of an embedded switch; N VFs are enabled and each is
                  served on a socket of its own, PATH.vf0 .. PATH.vf<N-1> (PATH stays the PF's)
  --vf I,k=v,...  VF I's policy, as ip link set DEV vf I ...: mac=M vlan=V qos=Q spoofchk=on|off trust=on|off
                  state=auto|enable|disable max_tx_rate=MBPS (repeatable)
  --once          exit when the first client disconnects
  --verbose       log connection events and rejected messages to stderr
While serving: SIGUSR1 = link down, SIGUSR2 = link up (the guest's VIRTIO_NET_S_LINK_UP).`;

export const builtinFactories: Record<string, DeviceFactory> = {
  'virtio-net': virtioNetFromCommandLine,
  'stand-in': ({ memory, options }) =>
    new StandInDevice({ memory, msixVectors: options.vectors ? Number(options.vectors) : 4 }),
};

/**
 * What `--help` / `-h` (alone or after `serve`) and `--version` print, or null for any other command line:
 * those exit 0 without starting anything.
 */
export function cliInfo(argv: string[]): string | null {
  const [a, b] = argv;
  if (argv.length === 1 && a === '--version') return `${packageVersion()}\n`;
  const help = (x: string | undefined) => x === '--help' || x === '-h';
  if ((argv.length === 1 && help(a)) || (argv.length === 2 && a === 'serve' && help(b))) return `${USAGE}\n`;
  return null;
}

/** The package's version, from the nearest package.json named virtio-net-ts above this file. */
function packageVersion(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++, dir = dirname(dir)) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as {
        name?: string;
        version?: string;
      };
      if (pkg.name === 'virtio-net-ts' && pkg.version) return pkg.version;
    } catch {
      // not here; look one level up
    }
  }
  return 'unknown';
}

/** A running `serve`: resolves `done` when the server has stopped. */
export interface CliRun {
  server: VfioUserServer;
  /** With --vfs: VF i's server (on `vfSocketPath(PATH, i)`). */
  vfServers: VfioUserServer[];
  device: ServedDevice;
  stop(): Promise<void>;
  done: Promise<void>;
}

/** Parses argv (without node and script) and starts serving; throws with the usage text on bad input. */
export async function runCli(argv: string[], deps: CliDeps = {}): Promise<CliRun> {
  const out = deps.out ?? ((l: string) => process.stdout.write(`${l}\n`));
  const err = deps.err ?? ((l: string) => process.stderr.write(`${l}\n`));
  const [command, ...rest] = argv;
  if (command !== 'serve')
    throw new Error(
      command === undefined || command === '--help' ? USAGE : `unknown command ${command}\n${USAGE}`,
    );
  const { values } = parseArgs({
    args: rest,
    options: {
      socket: { type: 'string' },
      tap: { type: 'string' },
      netns: { type: 'string' },
      device: { type: 'string', default: 'virtio-net' },
      o: { type: 'string', short: 'o', multiple: true },
      vfs: { type: 'string' },
      vf: { type: 'string', multiple: true },
      'socket-mode': { type: 'string' },
      'socket-group': { type: 'string' },
      once: { type: 'boolean', default: false },
      verbose: { type: 'boolean', default: false },
    },
    strict: true,
  });
  if (!values.socket) throw new Error(`--socket is required\n${USAGE}`);
  const options: Record<string, string> = {};
  for (const kv of values.o ?? []) {
    const i = kv.indexOf('=');
    if (i <= 0) throw new Error(`-o wants key=value, got "${kv}"`);
    options[kv.slice(0, i)] = kv.slice(i + 1);
  }
  let socketMode: number | undefined;
  if (values['socket-mode'] !== undefined) {
    if (!/^0?[0-7]{3}$/.test(values['socket-mode'])) {
      throw new Error(
        `--socket-mode wants octal permission bits such as 0660, got "${values['socket-mode']}"`,
      );
    }
    socketMode = Number.parseInt(values['socket-mode'], 8);
  }
  let vfs: number | undefined;
  if (values.vfs !== undefined) {
    vfs = Number(values.vfs);
    if (!/^\d+$/.test(values.vfs) || vfs < 1 || vfs > 255)
      throw new Error(`--vfs wants a VF count 1..255, got "${values.vfs}"`);
  }
  const vfPolicies: Record<number, VfPolicy> = {};
  for (const flag of values.vf ?? []) {
    const [i, p] = parseVfFlag(flag);
    vfPolicies[i] = { ...vfPolicies[i], ...p };
  }
  if (values.vf && vfs === undefined) throw new Error('--vf needs --vfs N');
  const factories = { ...builtinFactories, ...deps.factories };
  const kind = values.device as string;
  const factory = factories[kind];
  if (!factory) throw new Error(`unknown --device ${kind}; available: ${Object.keys(factories).join(', ')}`);
  const memory = new GuestMemory();
  const device = await factory({
    memory,
    tap: values.tap,
    netns: values.netns,
    options,
    ...(vfs ? { vfs, vfPolicies } : {}),
  });
  if (vfs && device.vfFunctions?.length !== vfs) {
    device.close?.();
    throw new Error(`--device ${kind} cannot serve --vfs ${vfs}`);
  }
  const serve = (fn: VfioUserDevice, socketPath: string, name: string) =>
    new VfioUserServer(fn, {
      socketPath,
      socketMode,
      socketGroup: values['socket-group'],
      log: values.verbose ? (l) => err(`vfio-user ${name}: ${l}`) : undefined,
    });
  const server = serve(device, values.socket, 'pf');
  const vfServers = (device.vfFunctions ?? []).map((fn, i) =>
    serve(fn, vfSocketPath(values.socket as string, i), `vf${i}`),
  );
  const all = [server, ...vfServers];
  try {
    for (const s of all) await s.listen();
  } catch (e) {
    for (const s of all) await s.close();
    device.close?.();
    throw e;
  }
  out(`listening ${values.socket}`);
  for (let i = 0; i < vfServers.length; i++) out(`listening ${vfSocketPath(values.socket, i)} (vf ${i})`);
  let resolveDone: () => void = () => {};
  const done = new Promise<void>((r) => {
    resolveDone = r;
  });
  let stopping = false;
  const stop = async () => {
    if (stopping) return done;
    stopping = true;
    for (const s of all) await s.close();
    device.close?.();
    resolveDone();
  };
  if (values.once) {
    const watch = setInterval(() => {
      if (server.stats().connections > 0 && !server.connected) {
        clearInterval(watch);
        void stop();
      }
    }, 50);
    void done.then(() => clearInterval(watch));
  }
  if (deps.handleSignals ?? true) {
    const onSignal = () => void stop();
    const link = (up: boolean) => () => {
      if (!device.setLinkUp) return err(`--device ${kind} has no link to set`);
      device.setLinkUp(up);
      out(`link ${up ? 'up' : 'down'}`);
    };
    const linkDown = link(false);
    const linkUp = link(true);
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
    process.on('SIGUSR1', linkDown);
    process.on('SIGUSR2', linkUp);
    void done.then(() => {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      process.off('SIGUSR1', linkDown);
      process.off('SIGUSR2', linkUp);
    });
  }
  return { server, vfServers, device, stop, done };
}

/** Where VF `index` is served with `--vfs`: the PF's socket path + `.vf` + index. */
export function vfSocketPath(socket: string, index: number): string {
  return `${socket}.vf${index}`;
}

function isMain(): boolean {
  try {
    return (
      process.argv[1] !== undefined && import.meta.url === pathToFileURL(realpathSync(process.argv[1])).href
    );
  } catch {
    return false;
  }
}

const info = isMain() ? cliInfo(process.argv.slice(2)) : null;
if (info !== null) {
  process.stdout.write(info);
  process.exitCode = 0;
} else if (isMain()) {
  runCli(process.argv.slice(2)).then(
    (r) => r.done.then(() => process.exit(0)),
    (e: Error) => {
      process.stderr.write(`${e.message}\n`);
      process.exit(2);
    },
  );
}
