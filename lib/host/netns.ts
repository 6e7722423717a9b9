/**
 * Network-namespace helpers for tests and the demo (root only). They shell out to iproute2's `ip`.
 *
 * A tap is created from this process in the root namespace (TUNSETIFF through TapBackend) and then moved
 * into a fresh namespace with `ip link set … netns`: the fds keep working, and all traffic the kernel
 * side generates stays inside that namespace. Only addresses inside namespaces created here are used.
 */
import { type ChildProcess, execFileSync, type SpawnOptions, spawn } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { BackendError } from '../errors.js';

/** Why tap/netns tests cannot run here, or null when they can (root and /dev/net/tun present). */
export function netnsUnavailableReason(): string | null {
  if (process.platform !== 'linux') return `needs Linux (this is ${process.platform})`;
  if (typeof process.getuid === 'function' && process.getuid() !== 0) return 'needs root (CAP_NET_ADMIN)';
  try {
    accessSync('/dev/net/tun', constants.R_OK | constants.W_OK);
  } catch {
    return 'needs /dev/net/tun (modprobe tun, or pass the device into the container)';
  }
  try {
    execFileSync('ip', ['-V'], { stdio: 'pipe' });
  } catch {
    return "needs iproute2's `ip`";
  }
  return null;
}

/** Runs `ip args…`; throws BackendError with ip's stderr on failure. */
export function ip(...args: string[]): string {
  try {
    return execFileSync('ip', args, { stdio: ['ignore', 'pipe', 'pipe'] }).toString();
  } catch (err) {
    const stderr = (err as { stderr?: Buffer }).stderr?.toString().trim() ?? String(err);
    throw new BackendError(`ip ${args.join(' ')}: ${stderr}`);
  }
}

let counter = 0;

/** A unique short name with `prefix` (fits IFNAMSIZ when prefix ≤ 6 chars). */
export function uniqueName(prefix: string): string {
  counter = (counter + 1) % 1000;
  return `${prefix}${(process.pid % 10000).toString(36)}${counter.toString(36)}${Math.floor(Math.random() * 1296).toString(36)}`;
}

/** A network namespace this process created. `delete()` removes it (and every device left inside). */
export class NetNamespace {
  private deleted = false;
  private readonly children = new Set<ChildProcess>();

  private constructor(readonly name: string) {}

  /** `ip netns add` with a unique name; loopback brought up. */
  static create(prefix = 'vnts'): NetNamespace {
    const name = uniqueName(prefix);
    ip('netns', 'add', name);
    const ns = new NetNamespace(name);
    registry.add(ns);
    try {
      ns.ip('link', 'set', 'lo', 'up');
    } catch (err) {
      ns.delete();
      throw err;
    }
    return ns;
  }

  /** `ip -n NAME args…`. */
  ip(...args: string[]): string {
    return ip('-n', this.name, ...args);
  }

  /** Moves interface `dev` (in the root namespace) here; an open tap fd keeps working. */
  adopt(dev: string): void {
    ip('link', 'set', 'dev', dev, 'netns', this.name);
  }

  /** Brings `dev` up with `cidr` (e.g. '10.77.0.1/24'), optionally setting its MAC. */
  configure(dev: string, cidr: string, mac?: string): void {
    if (mac) this.ip('link', 'set', 'dev', dev, 'address', mac);
    this.ip('addr', 'add', cidr, 'dev', dev);
    this.ip('link', 'set', 'dev', dev, 'up');
  }

  /** Runs a command inside the namespace and returns its stdout (throws on non-zero exit). */
  exec(cmd: string, args: string[], options: { input?: string; timeoutMs?: number } = {}): string {
    try {
      return execFileSync('ip', ['netns', 'exec', this.name, cmd, ...args], {
        input: options.input,
        timeout: options.timeoutMs ?? 20_000,
        stdio: ['pipe', 'pipe', 'pipe'],
      }).toString();
    } catch (err) {
      const stderr = (err as { stderr?: Buffer }).stderr?.toString().trim() ?? String(err);
      throw new BackendError(`ip netns exec ${this.name} ${cmd}: ${stderr}`);
    }
  }

  /** Starts a command inside the namespace; it is killed by `delete()` if still running. */
  spawn(cmd: string, args: string[], options: SpawnOptions = {}): ChildProcess {
    const child = spawn('ip', ['netns', 'exec', this.name, cmd, ...args], { stdio: 'pipe', ...options });
    this.children.add(child);
    child.on('exit', () => this.children.delete(child));
    return child;
  }

  /** Kills children, deletes the namespace. Idempotent; never throws. */
  delete(): void {
    if (this.deleted) return;
    this.deleted = true;
    registry.delete(this);
    for (const child of this.children) child.kill('SIGKILL');
    // Delete links first: `ip netns del` tears devices down asynchronously, a fresh one reusing a name must not race it.
    try {
      const links = this.ip('-o', 'link', 'show');
      for (const m of links.matchAll(/^\d+:\s+([^:@\s]+)/gm))
        if (m[1] !== 'lo') tryIp('-n', this.name, 'link', 'del', m[1] as string);
    } catch {
      // namespace already gone
    }
    tryIp('netns', 'del', this.name);
  }
}

function tryIp(...args: string[]): void {
  try {
    ip(...args);
  } catch {
    // cleanup is best effort
  }
}

const registry = new Set<NetNamespace>();

/** Deletes every namespace this process created and has not deleted (for afterAll / exit handlers). */
export function cleanupNamespaces(): void {
  for (const ns of [...registry]) ns.delete();
}

process.once('exit', cleanupNamespaces);
