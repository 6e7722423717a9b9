/**
 * `backend`: frames of any length (0 .. 70000) with any offload metadata (random NetOffload fields,
 * valid or not for the frame) on any queue pair index (invalid ones too), through MemoryBackend (plain
 * and direct receive) and straight into the device's BackendSink as a misbehaving backend would call it
 * (receive with any queue index; lendReceive + completeReceive with lengths it cannot have read), while
 * the guest posts buffers or not, changes its offloads and reads what arrives.
 *
 * Invariants: nothing the backend does makes the device throw; every frame handed to the device is
 * delivered, dropped, filtered or backlogged exactly once (a GSO frame the device segments at least
 * once); what the guest reads is well-formed (header num_buffers matches, length within MAX_FRAME);
 * every frame the device reports sent reached the backend; after a reset the guest can use the device.
 */
import * as kit from '../../../devices/testing/frames.js';
import { ReceiveTarget } from '../../../lib/net/backend.js';
import type { NetOffload } from '../../../lib/net/backend.js';
import {
  EscapeError,
  type FuzzTarget,
  guard,
  InvariantError,
  invariant,
  type RunContext,
} from '../engine.js';
import {
  checkTxAccount,
  DEV_MAC,
  describeRigConfig,
  PEER_MAC,
  randomRigConfig,
  Rig,
  rxAccount,
} from '../device-rig.js';
import type { Rng } from '../rng.js';

type Shape = 'random' | 'tcp4' | 'udp4' | 'vlanTcp4' | 'ipv6';
interface Frame {
  len: number;
  shape: Shape;
  seed: number;
  dst: 'own' | 'bcast' | 'other';
}
type Step =
  | { op: 'inject'; frame: Frame; queue: number; offload: NetOffload | null }
  | { op: 'sink'; frame: Frame; queue: number; offload: NetOffload | null }
  | {
      op: 'lend';
      frame: Frame;
      queue: number;
      headerSize: number;
      lie: number | null;
      cancel: boolean;
      header: number[];
    }
  | { op: 'post'; pair: number; count: number }
  | { op: 'receive'; pair: number }
  | { op: 'offloads'; bits: bigint }
  | { op: 'link'; up: boolean }
  | { op: 'reopen' };

interface State {
  rig: Rig;
  ctx: RunContext;
  target: ReceiveTarget;
  counters: Record<string, number>;
}

/** MAX_FRAME of the device: 64 KiB of IP plus Ethernet and two VLAN tags. */
const MAX_FRAME = 65535 + 14 + 8;
const LENGTHS = [
  0,
  1,
  13,
  14,
  15,
  60,
  64,
  1514,
  1518,
  9000,
  65535,
  MAX_FRAME - 1,
  MAX_FRAME,
  MAX_FRAME + 1,
  70000,
];

function frameSpec(rng: Rng): Frame {
  return {
    len: rng.chance(0.4) ? rng.pick(LENGTHS) : rng.chance(0.7) ? rng.int(0, 2000) : rng.int(0, 70000),
    shape: rng.weighted({ random: 3, tcp4: 4, udp4: 3, vlanTcp4: 1, ipv6: 1 } as Record<Shape, number>),
    seed: rng.u32(),
    dst: rng.weighted({ own: 8, bcast: 1, other: 1 }),
  };
}

function offload(rng: Rng): NetOffload | null {
  if (rng.chance(0.3)) return null;
  const small = (max: number) =>
    rng.chance(0.8) ? rng.int(0, max) : rng.pick([-1, 0.5, 0xffff, 0x10000, 2 ** 31, Number.NaN]);
  return {
    flags: rng.chance(0.7) ? rng.pick([0, 1, 2, 3]) : rng.edge(8),
    gsoType: rng.chance(0.7) ? rng.pick([0, 1, 3, 4, 5, 0x81, 0x84]) : rng.edge(8),
    hdrLen: small(200),
    gsoSize: rng.chance(0.5) ? rng.pick([0, 1, 7, 8, 536, 1448, 9000, 65535]) : small(2000),
    csumStart: small(100),
    csumOffset: rng.chance(0.7) ? rng.pick([6, 16, 0, 1]) : small(200),
  };
}

function generate(rng: Rng): Step {
  const op = rng.weighted({
    inject: 40,
    sink: 10,
    lend: 10,
    post: 12,
    receive: 14,
    offloads: 3,
    link: 2,
    reopen: 2,
  });
  switch (op) {
    case 'inject':
    case 'sink':
      return {
        op,
        frame: frameSpec(rng),
        queue: rng.chance(0.85) ? rng.int(0, 3) : rng.pick([4, 255, -1, 0.5, Number.NaN, 2 ** 31]),
        offload: offload(rng),
      };
    case 'lend':
      return {
        op,
        frame: frameSpec(rng),
        queue: rng.int(0, 3),
        headerSize: rng.pick([0, 10, 12, 20, 12, 7]),
        lie: rng.chance(0.6) ? null : rng.pick([-1, 0, 13, 0.5, Number.NaN, 2 ** 32, 1e9, 70000]),
        cancel: rng.chance(0.1),
        header: Array.from({ length: 10 }, () => (rng.chance(0.7) ? 0 : rng.int(0, 255))),
      };
    case 'post':
      return { op, pair: rng.int(0, 3), count: rng.pick([1, 2, 8, 64, 1000]) };
    case 'receive':
      return { op, pair: rng.int(0, 3) };
    case 'offloads':
      return { op, bits: BigInt(rng.u32()) & 0x1fcn };
    case 'link':
      return { op, up: rng.chance(0.7) };
    default:
      return { op: 'reopen' };
  }
}

function build(f: Frame): Uint8Array {
  const dst = f.dst === 'own' ? DEV_MAC : f.dst === 'bcast' ? 'ff:ff:ff:ff:ff:ff' : '02:11:22:33:44:55';
  const payload = (n: number) =>
    Uint8Array.from({ length: Math.max(0, n) }, (_, i) => (f.seed >>> (i & 7)) + i);
  let out: Uint8Array;
  switch (f.shape) {
    case 'tcp4':
      out = kit.ethernet(
        dst,
        PEER_MAC,
        0x0800,
        kit.tcp4('10.0.0.1', '10.0.0.2', 1000 + (f.seed & 0xfff), 80, f.seed, 0x18, payload(f.len - 54)),
      );
      break;
    case 'udp4':
      out = kit.ethernet(
        dst,
        PEER_MAC,
        0x0800,
        kit.udp4('10.0.0.1', '10.0.0.2', 53, 2000 + (f.seed & 0xfff), payload(f.len - 42)),
      );
      break;
    case 'vlanTcp4': {
      const inner = kit.tcp4('10.0.0.1', '10.0.0.2', 1000, 80, f.seed, 0x10, payload(f.len - 58));
      out = kit.ethernet(dst, PEER_MAC, 0x8100, Uint8Array.from([0, 5, 0x08, 0x00, ...inner]));
      break;
    }
    case 'ipv6': {
      const body = payload(f.len - 54);
      const ip = new Uint8Array(40 + 20 + body.length);
      ip.set([0x60, 0, 0, 0, ((20 + body.length) >> 8) & 0xff, (20 + body.length) & 0xff, 6, 64]);
      ip[8 + 15] = 1;
      ip[24 + 15] = 2;
      ip.set([4, 0, 0, 80], 40);
      ip[52] = 0x50;
      ip.set(body, 60);
      out = kit.ethernet(dst, PEER_MAC, 0x86dd, ip);
      break;
    }
    default:
      out = payload(f.len);
      if (out.length >= 6) out.set(kit.macBytes(dst));
  }
  // Exactly the length asked for: cut or padded.
  if (out.length === f.len) return out;
  const exact = new Uint8Array(f.len);
  exact.set(out.subarray(0, f.len));
  return exact;
}

function describe(s: Step): string {
  const fr = (f: Frame) => `${f.len}-byte ${f.shape} to ${f.dst}`;
  const off = (o: NetOffload | null) => (o ? JSON.stringify(o) : 'no offload');
  switch (s.op) {
    case 'inject':
      return `MemoryBackend.inject ${fr(s.frame)} on queue ${s.queue}, ${off(s.offload)}`;
    case 'sink':
      return `sink.receive ${fr(s.frame)} on queue ${s.queue}, ${off(s.offload)}`;
    case 'lend':
      return `lendReceive(queue ${s.queue}, header ${s.headerSize}) then ${s.cancel ? 'cancel' : `complete ${fr(s.frame)}${s.lie !== null ? ` claiming ${s.lie} bytes` : ''}`}`;
    case 'post':
      return `guest posts ${s.count} rx buffers on pair ${s.pair}`;
    case 'receive':
      return `guest receives on pair ${s.pair}`;
    case 'offloads':
      return `guest sets offloads 0x${s.bits.toString(16)}`;
    case 'link':
      return `backend link ${s.up ? 'up' : 'down'}`;
    default:
      return s.op;
  }
}

/** The device's sink, as a backend holds it. */
const sinkOf = (rig: Rig) => rig.dev.net;

/** Counts one frame handed to the sink directly and checks it was accounted for. */
function accounted(st: State, offload: NetOffload | null, call: () => void): void {
  const rig = st.rig;
  const a0 = rxAccount(rig.dev, rig.backend);
  call();
  const a1 = rxAccount(rig.dev, rig.backend);
  const outcomes = a1.accounted - a0.accounted + (a1.backlogged - a0.backlogged);
  const segmented = offload !== null && (offload.gsoType & 0x7f) !== 0;
  if (segmented ? outcomes >= 1 : outcomes === 1) return;
  throw new InvariantError(`a frame handed to the sink was accounted for ${outcomes} times`);
}

function lend(st: State, s: Extract<Step, { op: 'lend' }>): void {
  const rig = st.rig;
  const sink = sinkOf(rig);
  const t = st.target;
  const lent = guard('sink.lendReceive', () => sink.lendReceive(s.queue, s.headerSize, t));
  if (!lent) return;
  st.counters.lends = (st.counters.lends ?? 0) + 1;
  if (s.cancel) {
    guard('sink.cancelReceive', () => sink.cancelReceive());
    return;
  }
  // Write [header][frame] over the lent segments, the rest into an overflow buffer of our own.
  const frame = build(s.frame);
  const stream = new Uint8Array(s.headerSize + frame.length);
  stream.set(s.header.slice(0, s.headerSize));
  stream.set(frame, s.headerSize);
  let pos = 0;
  for (let i = 0; i < t.count && pos < stream.length; i++) {
    const n = Math.min(t.lengths[i]!, stream.length - pos);
    t.bytes[i]!.set(stream.subarray(pos, pos + n), t.offsets[i]!);
    pos += n;
  }
  const overflow = stream.slice(pos);
  const length = s.lie ?? stream.length;
  const header = s.headerSize >= 10 ? { gsoType: s.header[1]! } : null;
  accounted(st, header as NetOffload | null, () =>
    guard('sink.completeReceive', () => sink.completeReceive(length, overflow)),
  );
}

/** What the guest read must be well-formed. */
function receive(st: State, pair: number): void {
  const d = st.rig.driver;
  if (!st.rig.open || pair >= d.maxPairs) return;
  let frames: ReturnType<typeof d.receive>;
  try {
    frames = d.receive(pair);
  } catch (e) {
    if (e instanceof EscapeError || st.rig.needsReset()) throw e;
    throw new InvariantError(`the guest could not read what the device delivered: ${String(e)}`);
  }
  for (const f of frames) {
    invariant(
      f.frame.length <= MAX_FRAME,
      `the guest received a ${f.frame.length}-byte frame (MAX_FRAME ${MAX_FRAME})`,
    );
    invariant(f.frame.length >= 14, `the guest received a ${f.frame.length}-byte frame`);
  }
  st.counters.received = (st.counters.received ?? 0) + frames.length;
}

async function execute(st: State, s: Step): Promise<void> {
  const rig = st.rig;
  switch (s.op) {
    case 'inject': {
      const n = await rig.checkedInject(st.ctx, build(s.frame), s.queue, s.offload);
      st.counters.injected = (st.counters.injected ?? 0) + n;
      return;
    }
    case 'sink': {
      const f = build(s.frame);
      accounted(st, s.offload, () => guard('sink.receive', () => sinkOf(rig).receive(f, s.queue, s.offload)));
      return;
    }
    case 'lend':
      lend(st, s);
      return;
    case 'post':
      if (rig.open && s.pair < rig.driver.maxPairs) rig.driver.postRx(s.pair, rig.postable(s.count));
      return;
    case 'receive':
      receive(st, s.pair);
      return;
    case 'offloads':
      if (rig.open && rig.driver.has(2)) rig.driver.setGuestOffloads(s.bits & rig.driver.features);
      return;
    case 'link':
      guard('backend.setLinkUp', () => rig.backend.setLinkUp(s.up));
      return;
    case 'reopen':
      guard('backend.setLinkUp', () => rig.backend.setLinkUp(true));
      rig.reopen();
      await rig.checkAlive('reopen');
  }
}

export const backend: FuzzTarget<State, Step> = {
  name: 'backend',
  summary:
    'frames of any length and offload metadata on any queue, through MemoryBackend and a rogue sink caller',
  stepsPerCase: 400,
  setup(rng: Rng, ctx: RunContext) {
    const rig = new Rig(randomRigConfig(rng));
    rig.reopen();
    return { rig, ctx, target: new ReceiveTarget(), counters: {} };
  },
  generate,
  execute,
  check(st) {
    checkTxAccount(rxAccount(st.rig.dev, st.rig.backend), 'pf');
    if (st.rig.needsReset()) st.counters.needsReset = (st.counters.needsReset ?? 0) + 1;
  },
  async finish(st) {
    guard('backend.setLinkUp', () => st.rig.backend.setLinkUp(true));
    st.rig.reopen();
    await st.rig.checkAlive('end of case');
  },
  async dispose(st) {
    await st.rig.close();
  },
  describe,
  describeSetup: (st) => describeRigConfig(st.rig.config),
  counters: (st) => ({ ...st.counters, reopens: st.rig.reopens }),
};
