/** Per-test namespace + tap fixture for the tap integration tests (root only). */
import type { ChildProcess } from 'node:child_process';
import { NetNamespace, netnsUnavailableReason, uniqueName } from '../../lib/host/netns.js';
import { TapBackend, type TapOpenOptions } from '../../lib/tap/tap-backend.js';
import { CollectingSink, GUEST_IP, GUEST_MAC, KERNEL_IP, KERNEL_MAC } from './frames.test-support.js';

/** Null when the integration tests can run; otherwise why not (printed by the skip). */
export const unavailable = netnsUnavailableReason();
if (unavailable) console.warn(`tap integration tests skipped: ${unavailable}`);

export interface TapFixture {
  ns: NetNamespace;
  tap: TapBackend;
  sink: CollectingSink;
  dispose(): void;
}

/**
 * A fresh namespace holding a fresh tap whose kernel side is KERNEL_IP/KERNEL_MAC, with a permanent
 * neighbour entry for the "guest" (so the kernel sends IP to us without ARPing first), attached to a
 * CollectingSink.
 */
export function tapFixture(options: TapOpenOptions = {}, attach = true): TapFixture {
  const ns = NetNamespace.create('vt');
  let tap: TapBackend | undefined;
  try {
    tap = TapBackend.open({ name: uniqueName('vt'), ...options });
    ns.adopt(tap.name);
    // No IPv6 chatter (router solicitations, MLD) on the tap: the tests count frames.
    ns.exec('sysctl', ['-q', '-w', `net.ipv6.conf.${tap.name}.disable_ipv6=1`]);
    ns.configure(tap.name, `${KERNEL_IP}/24`, KERNEL_MAC);
    ns.ip('neigh', 'replace', GUEST_IP, 'lladdr', GUEST_MAC, 'dev', tap.name, 'nud', 'permanent');
  } catch (err) {
    tap?.close();
    ns.delete();
    throw err;
  }
  const sink = new CollectingSink();
  if (attach) tap.attach(sink);
  const t = tap;
  return {
    ns,
    tap: t,
    sink,
    dispose() {
      t.close();
      ns.delete();
    },
  };
}

/** Output lines of a child, and a promise for the first line matching `re`. */
export function lines(child: ChildProcess): {
  all: string[];
  waitFor(re: RegExp, timeoutMs?: number): Promise<string>;
} {
  const all: string[] = [];
  let buf = '';
  const waiters: { re: RegExp; resolve(s: string): void }[] = [];
  child.stdout?.on('data', (d: Buffer) => {
    buf += d.toString();
    let i = buf.indexOf('\n');
    while (i >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      all.push(line);
      for (const w of [...waiters])
        if (w.re.test(line)) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve(line);
        }
      i = buf.indexOf('\n');
    }
  });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  return {
    all,
    waitFor(re, timeoutMs = 15_000) {
      const hit = all.find((l) => re.test(l));
      if (hit) return Promise.resolve(hit);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`child output never matched ${re}; stderr: ${stderr}`)),
          timeoutMs,
        );
        waiters.push({
          re,
          resolve: (s) => {
            clearTimeout(timer);
            resolve(s);
          },
        });
      });
    },
  };
}

/** A UDP receiver in the namespace: prints `ready`, then `<hex payload> <src> <sport>` per datagram. */
export const PY_UDP_RECV = `
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
s.settimeout(20)
print('ready', flush=True)
for _ in range(int(sys.argv[3])):
    d, a = s.recvfrom(65535)
    print(d.hex(), a[0], a[1], flush=True)
`;

/** Sends `count` UDP datagrams of `size` bytes from the namespace to (dst, ports round-robin). */
export const PY_UDP_SEND = `
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
dst, ports, size, count = sys.argv[1], [int(p) for p in sys.argv[2].split(',')], int(sys.argv[3]), int(sys.argv[4])
payload = bytes((i * 7) & 0xff for i in range(size))
for i in range(count):
    try:
        s.sendto(payload, (dst, ports[i % len(ports)]))
    except OSError:
        pass
print('sent', flush=True)
`;
