/**
 * No file descriptor outlives a TapBackend (security review "hostile peers", finding 5): with every
 * feature on (4 queues, io_uring tx batching, the host link watch, the eBPF steering program, the shared
 * rx poller) in a fresh namespace, traffic both ways, then `close()` and the namespace deleted, the
 * process holds exactly the fds it held before the first tap was opened.
 */
import { readdirSync, readlinkSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { cleanupNamespaces, NetNamespace, uniqueName } from '../../lib/host/netns.js';
import { TapBackend } from '../../lib/tap/tap-backend.js';
import { TapSteering } from '../../lib/tap/steering.js';
import { PY_UDP_SEND, unavailable } from './fixture.test-support.js';
import {
  CollectingSink,
  GUEST_IP,
  GUEST_MAC,
  KERNEL_IP,
  KERNEL_MAC,
  udpFrame,
  waitUntil,
} from './frames.test-support.js';

/** Open fds of this process, by number, with what they point at. */
function openFds(): Map<string, string> {
  const out = new Map<string, string>();
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      out.set(fd, readlinkSync(`/proc/self/fd/${fd}`));
    } catch {
      // the fd readdir itself used, closed by now
    }
  }
  return out;
}

/** fds in `now` that were not in `before` (or now point elsewhere), as "n -> target". */
function added(before: Map<string, string>, now: Map<string, string>): string[] {
  return [...now].filter(([fd, to]) => before.get(fd) !== to).map(([fd, to]) => `${fd} -> ${to}`);
}

const why = unavailable ?? TapSteering.supported();

afterAll(() => cleanupNamespaces());

describe.skipIf(why !== null)(`TapBackend file descriptors${why ? ` (skipped: ${why})` : ''}`, () => {
  it('close() and deleting the namespace leave exactly the fds of before the first tap', async () => {
    // Child processes (ip, python3) and libuv may leave fds behind for a moment: wait for the count to settle.
    const settle = async (target: Map<string, string>) => {
      try {
        await waitUntil(() => added(target, openFds()).length === 0, 2000, 'fds back to the baseline');
      } catch {
        // asserted below, with the list
      }
    };
    const before = openFds();
    const ns = NetNamespace.create('vf');
    const tap = TapBackend.open({ name: uniqueName('vf'), queues: 4, netns: ns.name });
    ns.configure(tap.name, `${KERNEL_IP}/24`, KERNEL_MAC);
    ns.exec('sysctl', ['-q', '-w', `net.ipv6.conf.${tap.name}.disable_ipv6=1`]);
    ns.ip('neigh', 'replace', GUEST_IP, 'lladdr', GUEST_MAC, 'dev', tap.name, 'nud', 'permanent');
    const sink = new CollectingSink();
    tap.attach(sink);
    expect(
      tap.setRssSteering({
        key: new Uint8Array(40).fill(7),
        hashTypes: 0x3f,
        table: [0, 1, 2, 3],
        defaultQueue: 0,
      }),
    ).toBe(true);
    expect(tap.rssSteeringActive).toBe(true);

    // tx: one burst through io_uring.
    const memory = new Uint8Array(1 << 16);
    for (let i = 0; i < 8; i++) {
      const f = udpFrame(GUEST_IP, KERNEL_IP, 4000 + i, 9, new Uint8Array(32).fill(i));
      memory.set(f, i * 2048);
      expect(tap.transmitRange(memory, i * 2048, f.length, i % 4, null)).toBe('sent');
    }
    expect(tap.flushTransmit(0)).toBe(0);
    expect(tap.stats().txBatches).toBe(1);

    // rx: datagrams from the namespace, steered over the queues by the program.
    ns.exec('python3', ['-c', PY_UDP_SEND, GUEST_IP, '5000,5001,5002,5003', '64', '16']);
    await waitUntil(() => sink.frames.length >= 16, 5000, '16 frames');

    // The link watch is running: the host taking the tap down reaches the sink.
    ns.ip('link', 'set', 'dev', tap.name, 'down');
    await waitUntil(() => sink.links.includes(false), 5000, 'link down');

    tap.close();
    ns.delete();
    await settle(before);
    expect(added(before, openFds())).toEqual([]);
    expect(openFds().size).toBe(before.size);
  });
});
