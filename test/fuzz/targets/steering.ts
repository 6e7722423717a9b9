/**
 * `steering` (root + /dev/net/tun + bpf): TapSteering, the eBPF RSS program of a multiqueue tap, under
 * configuration updates (random keys, indirection tables, hash types, default queues; invalid ones too)
 * during traffic, and detach/attach through any queue fd. The 4-queue tap lives in a network namespace
 * the target creates; frames are sent from inside it with AF_PACKET, so no traffic leaves it.
 *
 * Invariants: an invalid configuration is refused with an OptionsError and changes nothing; a valid one
 * is taken; every frame sent arrives exactly once, on one of the tap's queues, also while updates race
 * with the traffic; once updates have settled every frame is on the queue lib/net/rss-hash.ts `rssHash`
 * picks for the configuration in force (table[hash & (len - 1)] or the default queue, modulo 4).
 */
import { type ChildProcess, execFileSync } from 'node:child_process';
import { OptionsError } from '../../../lib/errors.js';
import { NetNamespace, netnsUnavailableReason, uniqueName } from '../../../lib/host/netns.js';
import { rssHash } from '../../../lib/net/rss-hash.js';
import { TapBackend } from '../../../lib/tap/tap-backend.js';
import { type RssSteeringConfig, TapSteering } from '../../../lib/tap/steering.js';
import { CollectingSink, waitUntil } from '../../tap/frames.test-support.js';
import { describeError, type FuzzTarget, guard, InvariantError, invariant } from '../engine.js';
import type { Rng } from '../rng.js';

const QUEUES = 4;
const KERNEL_MAC = [0x02, 0, 0, 0, 0, 0x01];
const GUEST_MAC = [0x02, 0, 0, 0, 0, 0x02];

/** Reads "hex" lines and sends each with AF_PACKET; a "." line is answered "sent" once all went out. */
const PY_SENDER = `
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((sys.argv[1], 0))
print('ready', flush=True)
for line in sys.stdin:
    line = line.strip()
    if line == '.':
        print('sent', flush=True)
    elif line:
        try: s.send(bytes.fromhex(line))
        except OSError as e: print('error', e, flush=True)
`;

interface Config {
  key: number[];
  hashTypes: number;
  table: number[];
  defaultQueue: number;
}
type Step =
  | { op: 'update'; config: Config }
  | { op: 'burst'; frames: number[][]; updates: Config[] }
  | { op: 'check'; frames: number[][] }
  | { op: 'reattach'; fd: number };

interface State {
  ns: NetNamespace;
  tap: TapBackend;
  steering: TapSteering;
  sink: CollectingSink;
  sender: ChildProcess;
  lines: string[];
  config: RssSteeringConfig;
  counters: Record<string, number>;
}

function validConfig(rng: Rng): Config {
  const len = 2 ** rng.int(0, 7);
  return {
    key: Array.from({ length: rng.pick([40, 40, 16, 1, 39]) }, () => rng.int(0, 255)),
    hashTypes: rng.chance(0.3) ? 0x1ff : rng.int(0, 0x1ff),
    table: Array.from({ length: len }, () => (rng.chance(0.9) ? rng.int(0, 3) : rng.int(0, 255))),
    defaultQueue: rng.chance(0.9) ? rng.int(0, 3) : rng.int(0, 255),
  };
}

function anyConfig(rng: Rng): Config {
  const c = validConfig(rng);
  if (rng.chance(0.6)) return c;
  switch (rng.int(0, 5)) {
    case 0:
      c.key = Array.from({ length: rng.pick([0, 41, 64]) }, () => 7);
      break;
    case 1:
      c.hashTypes = rng.pick([0x200, -1, 0.5, Number.NaN, 0xffffffff]);
      break;
    case 2:
      c.table = Array.from({ length: rng.pick([0, 3, 129, 256]) }, () => 0);
      break;
    case 3:
      c.table[rng.below(c.table.length)] = rng.pick([256, -1, 1.5, Number.NaN]);
      break;
    default:
      c.defaultQueue = rng.pick([256, -1, 0.5, Number.NaN]);
  }
  return c;
}

/** Whether the documented contract (steering.ts RssSteeringConfig) calls `c` valid. */
function contractValid(c: Config): boolean {
  const n = c.table.length;
  const q = (x: number) => Number.isInteger(x) && x >= 0 && x < 256;
  return (
    c.key.length >= 1 &&
    c.key.length <= 40 &&
    Number.isInteger(c.hashTypes) &&
    c.hashTypes >= 0 &&
    c.hashTypes <= 0x1ff &&
    n >= 1 &&
    n <= 128 &&
    (n & (n - 1)) === 0 &&
    c.table.every(q) &&
    q(c.defaultQueue)
  );
}

/** A random frame: Ethernet, 0-2 VLAN tags, IPv4/IPv6 (extension headers sometimes), TCP/UDP/other, cut anywhere. */
function frame(rng: Rng): number[] {
  const be16 = (n: number) => [(n >> 8) & 0xff, n & 0xff];
  const out = [...GUEST_MAC, ...KERNEL_MAC];
  for (let i = rng.pick([0, 0, 0, 1, 2]); i > 0; i--)
    out.push(...be16(rng.pick([0x8100, 0x88a8])), ...be16(rng.int(0, 0xfff)));
  const proto = rng.pick([6, 17, 6, 17, 1, rng.int(0, 255)]);
  const l4 = [
    ...be16(rng.int(0, 0xffff)),
    ...be16(rng.int(0, 0xffff)),
    ...Array.from({ length: 16 }, () => rng.int(0, 255)),
  ];
  if (proto === 6) l4[12] = 0x50;
  const kind = rng.weighted({ v4: 5, v6: 4, other: 1 });
  if (kind === 'v4') {
    const total = 20 + l4.length;
    out.push(
      ...be16(0x0800),
      0x45,
      0,
      ...be16(total),
      0,
      1,
      ...(rng.chance(0.1) ? [0x20, 0] : [0x40, 0]),
      64,
      proto,
      0,
      0,
    );
    out.push(10, 77, rng.int(0, 255), rng.int(0, 255), 10, 77, rng.int(0, 255), rng.int(0, 255), ...l4);
  } else if (kind === 'v6') {
    const ext = rng.chance(0.2) ? [proto, 0, 0, 0, 0, 0, 0, 0] : [];
    out.push(...be16(0x86dd), 0x60, 0, 0, 0, ...be16(ext.length + l4.length), ext.length ? 60 : proto, 64);
    for (let i = 0; i < 32; i++) out.push(i === 15 || i === 31 ? rng.int(0, 255) : i < 16 ? 0xfd : 0);
    out.push(...ext, ...l4);
  } else out.push(...be16(rng.int(0, 0xffff)), ...Array.from({ length: 30 }, () => rng.int(0, 255)));
  // Frames the kernel accepts from AF_PACKET: at least an Ethernet header.
  const cut = rng.chance(0.15) ? rng.int(14, out.length) : out.length;
  return out.slice(0, Math.max(14, cut));
}

function generate(rng: Rng): Step {
  const op = rng.weighted({ update: 30, burst: 25, check: 40, reattach: 5 });
  switch (op) {
    case 'update':
      return { op, config: anyConfig(rng) };
    case 'burst':
      return {
        op,
        frames: Array.from({ length: rng.int(1, 32) }, () => frame(rng)),
        updates: Array.from({ length: rng.int(1, 4) }, () => validConfig(rng)),
      };
    case 'check':
      return { op, frames: Array.from({ length: rng.int(1, 32) }, () => frame(rng)) };
    default:
      return { op: 'reattach', fd: rng.int(0, QUEUES - 1) };
  }
}

function describe(s: Step): string {
  const c = (x: Config) =>
    `{key ${x.key.length} B, types 0x${Number(x.hashTypes).toString(16)}, table[${x.table.length}] ${x.table.slice(0, 8).join(',')}${x.table.length > 8 ? '…' : ''}, default ${x.defaultQueue}}`;
  switch (s.op) {
    case 'update':
      return `update ${c(s.config)}${contractValid(s.config) ? '' : ' (invalid)'}`;
    case 'burst':
      return `${s.frames.length} frames with ${s.updates.length} updates racing: ${s.updates.map(c).join(' ')}`;
    case 'check':
      return `${s.frames.length} frames under a settled configuration`;
    default:
      return `detach, attach through queue fd ${s.fd}`;
  }
}

/** Null when python3 (the frame sender inside the namespace) runs here. */
function python(): string | null {
  try {
    execFileSync('python3', ['-c', 'pass'], { stdio: 'ignore' });
    return null;
  } catch {
    return 'no python3';
  }
}

const toConfig = (c: Config): RssSteeringConfig => ({ ...c, key: Uint8Array.from(c.key) });

function expectedQueue(frame: Uint8Array, c: RssSteeringConfig): number {
  const h = rssHash(frame, c.hashTypes, c.key);
  const q = h ? (c.table[h.hash & (c.table.length - 1)] as number) : c.defaultQueue;
  return q % QUEUES;
}

/** Sends frames from inside the namespace and returns, per frame sent, the queues it arrived on. */
async function send(st: State, frames: number[][], during?: () => void): Promise<Map<string, number[]>> {
  st.sink.frames.length = 0;
  const want = new Map<string, number[]>();
  for (const f of frames) want.set(Buffer.from(f).toString('hex'), []);
  const before = st.lines.length;
  st.sender.stdin!.write(`${frames.map((f) => Buffer.from(f).toString('hex')).join('\n')}\n.\n`);
  during?.();
  await waitUntil(() => st.lines.slice(before).includes('sent'), 2000, 'the sender');
  const errors = st.lines.slice(before).filter((l) => l.startsWith('error'));
  invariant(errors.length === 0, `the sender failed: ${errors[0]}`);
  const seen = () => {
    let n = 0;
    for (const r of st.sink.frames) {
      const q = want.get(Buffer.from(r.frame).toString('hex'));
      if (q && q.length === 0) n++;
    }
    return n >= want.size;
  };
  try {
    await waitUntil(seen, 1500, 'frames');
  } catch {
    // counted below
  }
  for (const r of st.sink.frames) want.get(Buffer.from(r.frame).toString('hex'))?.push(r.queuePair);
  st.sink.frames.length = 0;
  return want;
}

async function execute(st: State, s: Step): Promise<void> {
  switch (s.op) {
    case 'update': {
      const valid = contractValid(s.config);
      try {
        st.steering.update(toConfig(s.config));
      } catch (e) {
        invariant(!valid, `a valid configuration was refused: ${describeError(e)}`);
        invariant(
          e instanceof OptionsError,
          `an invalid configuration threw ${describeError(e)}, not an OptionsError`,
        );
        st.counters.refused = (st.counters.refused ?? 0) + 1;
        return;
      }
      invariant(valid, 'an invalid configuration was taken');
      st.config = toConfig(s.config);
      st.counters.updates = (st.counters.updates ?? 0) + 1;
      return;
    }
    case 'burst': {
      const got = await send(st, s.frames, () => {
        for (const u of s.updates) st.steering.update(toConfig(u));
      });
      st.config = toConfig(s.updates[s.updates.length - 1]!);
      for (const [hex, queues] of got) {
        invariant(queues.length >= 1, `a frame sent during updates never arrived: ${hex.slice(0, 80)}`);
        for (const q of queues) invariant(q >= 0 && q < QUEUES, `a frame arrived on queue ${q}`);
      }
      st.counters.framesRacing = (st.counters.framesRacing ?? 0) + got.size;
      return;
    }
    case 'check': {
      const got = await send(st, s.frames);
      for (const [hex, queues] of got) {
        invariant(queues.length >= 1, `a frame never arrived: ${hex.slice(0, 80)}`);
        const want = expectedQueue(Buffer.from(hex, 'hex'), st.config);
        for (const q of queues)
          invariant(q === want, `a frame arrived on queue ${q}, rssHash says ${want}: ${hex.slice(0, 96)}`);
      }
      st.counters.framesChecked = (st.counters.framesChecked ?? 0) + got.size;
      return;
    }
    case 'reattach':
      guard('TapSteering.detach', () => st.steering.detach(st.tap.fds[0] as number));
      guard('TapSteering.attach', () => st.steering.attach(st.tap.fds[s.fd] as number));
  }
}

export const steering: FuzzTarget<State, Step> = {
  name: 'steering',
  summary: 'TapSteering updates (keys, tables, hash types) during traffic on a 4-queue tap in a namespace',
  stepsPerCase: 300,
  minimize: false,
  unavailable: () => {
    const r = netnsUnavailableReason() ?? TapSteering.supported() ?? python();
    return r === null ? null : `needs root, /dev/net/tun, bpf(2) and python3: ${r}`;
  },
  async setup(rng: Rng) {
    const config = toConfig(validConfig(rng));
    const ns = NetNamespace.create('vf');
    let tap: TapBackend | undefined;
    let prog: TapSteering | undefined;
    try {
      tap = TapBackend.open({ name: uniqueName('vf'), queues: QUEUES });
      prog = TapSteering.load(config);
      prog.attach(tap.fds[0] as number);
      ns.adopt(tap.name);
      ns.ip('link', 'set', 'dev', tap.name, 'txqueuelen', '20000');
      ns.exec('sysctl', ['-q', '-w', `net.ipv6.conf.${tap.name}.disable_ipv6=1`]);
      ns.ip('link', 'set', 'dev', tap.name, 'up');
      const sink = new CollectingSink();
      tap.attach(sink);
      const sender = ns.spawn('python3', ['-u', '-c', PY_SENDER, tap.name]);
      const lines: string[] = [];
      let buf = '';
      sender.stdout?.on('data', (d: Buffer) => {
        buf += d.toString();
        const parts = buf.split('\n');
        buf = parts.pop() ?? '';
        lines.push(...parts);
      });
      // Generous: python's start in a fresh namespace took over 10 s on a loaded 2-core machine.
      await waitUntil(() => lines.includes('ready'), 60_000, 'the sender in the namespace');
      return { ns, tap, steering: prog, sink, sender, lines, config, counters: {} };
    } catch (e) {
      tap?.close();
      prog?.close();
      ns.delete();
      throw new InvariantError(`steering setup failed: ${describeError(e)}`);
    }
  },
  generate,
  execute,
  dispose(st) {
    st.sender.stdin?.end();
    st.tap.close();
    st.steering.close();
    st.ns.delete();
  },
  describe,
  counters: (st) => st.counters,
};
