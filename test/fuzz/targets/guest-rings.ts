/**
 * `guest-rings`: split and packed rings with random and corrupt content: chains with wild addresses and
 * huge lengths, raw descriptors (loops, chains running off the table, INDIRECT in indirect tables),
 * random avail/used indices and flags, scribbles on device-owned areas, queue resets, and kicks on any
 * queue index through any notify offset, mixed with ordinary traffic both ways.
 *
 * Invariants (besides no exception escaping): after a kick of a transmit or control queue, the device
 * has taken every available chain and returned it to the used ring (split: used idx = avail idx), or it
 * is in DEVICE_NEEDS_RESET; with an intact ring every posted chain comes back; every frame the backend
 * handed over is delivered, dropped, filtered or backlogged (exactly one of them, per frame); every frame
 * the device reports sent reached the backend; and a guest that resets the device can always use it again.
 *
 * Half the cases with 2 or more queue pairs run them on worker threads (worker-rig.ts): the same
 * invariants, checked after the workers settled (kicks and injected frames are handled asynchronously
 * there), and at the end of such a case no worker thread or descriptor is left.
 */
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
  randomRigConfig,
  Rig,
  rxAccount,
  SCRATCH,
} from '../device-rig.js';
import {
  F_AVAIL,
  F_INDIRECT,
  F_NEXT,
  F_USED,
  F_WRITE,
  type RawDesc,
  scribbleDeviceArea,
  setPackedDriverEvent,
  setSplitAvail,
  splitAvailIdx,
  splitUsedIdx,
  writeDesc,
} from '../rings.js';
import type { Rng } from '../rng.js';
import { RAM } from '../device-rig.js';
import { chooseWorkers } from '../worker-rig.js';

type Where = 'scratch' | 'ram' | 'wild';
interface Seg {
  w: boolean;
  where: Where;
  raw: number;
  len: number;
}
type Step =
  | { op: 'post'; q: number; segs: Seg[]; indirect: boolean; kick: boolean }
  | { op: 'desc'; q: number; slot: number; desc: RawDesc; publish: boolean }
  | { op: 'indirect'; q: number; slot: number; at: number; entries: RawDesc[]; len: number; publish: boolean }
  | { op: 'avail'; q: number; field: 'flags' | 'idx' | 'entry' | 'usedEvent'; value: number; slot: number }
  | { op: 'deviceArea'; q: number; offset: number; value: number }
  | { op: 'kick'; q: number; raw: boolean; at: 'queue' | 'random'; off: number; size: 2 | 4; data: number }
  | { op: 'inject'; len: number; queue: number; broadcast: boolean; seed: number }
  | { op: 'send'; len: number; pair: number; indirect: boolean; split: boolean }
  | { op: 'receive' }
  | { op: 'scribble'; off: number; len: number; seed: number }
  | { op: 'queueReset'; q: number }
  | { op: 'reopen' };

interface State {
  rig: Rig;
  ctx: RunContext;
  packed: boolean;
  kicked: Set<number>;
  resetQueues: Set<number>;
  /** The guest scribbled on a used ring since the last reopen: used idx in memory is not the device's. */
  usedScribbled: boolean;
  counters: Record<string, number>;
}

const WILD = [RAM - 8, RAM - 1, RAM, RAM + 0x1000, 0xffff_f000, 2 ** 32, 2 ** 40, 2 ** 52, 2 ** 53 - 16];

function rawDesc(rng: Rng): RawDesc {
  const addr = rng.chance(0.6)
    ? BigInt(SCRATCH + rng.int(0, 0xffff))
    : rng.chance(0.5)
      ? BigInt(rng.pick(WILD))
      : rng.edgeU64();
  const flags = rng.chance(0.7)
    ? rng.pick([
        0,
        F_NEXT,
        F_WRITE,
        F_NEXT | F_WRITE,
        F_INDIRECT,
        F_INDIRECT | F_NEXT,
        F_AVAIL,
        F_AVAIL | F_USED,
        F_USED,
      ])
    : rng.int(0, 0xffff);
  return {
    addr,
    len: rng.chance(0.5) ? rng.length(2048) : rng.edgeU32(),
    flags,
    next: rng.chance(0.7) ? rng.int(0, 16) : rng.int(0, 0xffff),
  };
}

/** Each step also says whether a guest that finds the device broken resets it first (keeps rings busy). */
function generate(rng: Rng): Step & { heal: boolean } {
  const heal = rng.chance(0.4);
  return { ...generateOp(rng), heal };
}

function generateOp(rng: Rng): Step {
  const op = rng.weighted({
    post: 18,
    desc: 10,
    indirect: 6,
    avail: 9,
    deviceArea: 2,
    kick: 20,
    inject: 10,
    send: 7,
    receive: 6,
    scribble: 3,
    queueReset: 1,
    reopen: 3,
  });
  const q = rng.u32();
  switch (op) {
    case 'post': {
      const n = rng.int(1, rng.chance(0.1) ? 40 : 4);
      const segs: Seg[] = [];
      for (let i = 0; i < n; i++) {
        const where = rng.weighted({ scratch: 8, ram: 1, wild: 1 } as Record<Where, number>);
        segs.push({
          w: rng.chance(0.3),
          where,
          raw: rng.u32(),
          len: where === 'wild' && rng.bool() ? rng.edgeU32() : rng.length(2048),
        });
      }
      return { op, q, segs, indirect: rng.chance(0.3), kick: rng.chance(0.7) };
    }
    case 'desc':
      return { op, q, slot: rng.u32(), desc: rawDesc(rng), publish: rng.chance(0.6) };
    case 'indirect': {
      const n = rng.int(1, 16);
      const entries = Array.from({ length: n }, () => rawDesc(rng));
      // Loops and chains through the table: next pointing back, at itself, past the end.
      if (rng.bool()) for (const e of entries) e.flags |= F_NEXT;
      return {
        op,
        q,
        slot: rng.u32(),
        at: rng.int(0, 0x6f) * 0x100,
        entries,
        len: rng.chance(0.7) ? 16 * n : rng.pick([0, 1, 15, 17, 16 * n + 8, 0xfffffff0, 0x10000 * 16]),
        publish: rng.chance(0.7),
      };
    }
    case 'avail':
      return {
        op,
        q,
        field: rng.weighted({ flags: 1, idx: 4, entry: 3, usedEvent: 1 }),
        value: rng.chance(0.5) ? rng.int(0, 8) : rng.edge(16),
        slot: rng.u32(),
      };
    case 'deviceArea':
      return { op, q, offset: rng.u32(), value: rng.edge(16) };
    case 'kick':
      return {
        op,
        q,
        raw: rng.chance(0.15),
        at: rng.chance(0.85) ? 'queue' : 'random',
        off: rng.u32(),
        size: rng.pick([2, 4] as const),
        data: rng.edge(16),
      };
    case 'inject':
      return {
        op,
        len: rng.length(2000),
        queue: rng.chance(0.9) ? rng.int(0, 3) : rng.pick([4, 255, -1, 0.5]),
        broadcast: rng.chance(0.2),
        seed: rng.u32(),
      };
    case 'send':
      return {
        op,
        len: rng.pick([14, 60, 200, 1514]),
        pair: rng.int(0, 3),
        indirect: rng.chance(0.3),
        split: rng.bool(),
      };
    case 'scribble':
      return { op, off: rng.int(0, 0xffff), len: rng.int(1, 64), seed: rng.u32() };
    case 'queueReset':
      return { op, q };
    default:
      return { op } as Step;
  }
}

function describe(s: Step): string {
  const d = (x: RawDesc) =>
    `{addr 0x${x.addr.toString(16)} len 0x${x.len.toString(16)} flags 0x${x.flags.toString(16)} next ${x.next}}`;
  switch (s.op) {
    case 'post':
      return `post q#${s.q % 64} [${s.segs.map((g) => `${g.w ? 'W' : 'R'}:${g.where}+0x${g.raw.toString(16)}/${g.len}`).join(' ')}]${s.indirect ? ' indirect' : ''}${s.kick ? ' +kick' : ''}`;
    case 'desc':
      return `desc q#${s.q % 64} slot ${s.slot} = ${d(s.desc)}${s.publish ? ' published' : ''}`;
    case 'indirect':
      return `indirect q#${s.q % 64} slot ${s.slot}: table@scratch+0x${s.at.toString(16)} len ${s.len} [${s.entries.map(d).join(' ')}]${s.publish ? ' published' : ''}`;
    case 'avail':
      return `avail q#${s.q % 64} ${s.field}${s.field === 'entry' ? `[${s.slot}]` : ''} = 0x${s.value.toString(16)}`;
    case 'deviceArea':
      return `scribble device area q#${s.q % 64} +${s.offset} = 0x${s.value.toString(16)}`;
    case 'kick':
      return `kick ${s.raw ? `raw index ${s.q & 0xffff}` : `q#${s.q % 64}`} at ${s.at === 'queue' ? 'its notify address' : `notify+0x${s.off.toString(16)}`}, ${s.size} bytes, data 0x${s.data.toString(16)}`;
    case 'inject':
      return `backend frame ${s.len} bytes on queue ${s.queue}${s.broadcast ? ' broadcast' : ''}`;
    case 'send':
      return `guest sends ${s.len} bytes on pair ${s.pair}${s.indirect ? ' indirect' : ''}${s.split ? ' split' : ''}`;
    case 'scribble':
      return `scribble ${s.len} bytes at scratch+0x${s.off.toString(16)}`;
    case 'queueReset':
      return `queue_reset q#${s.q % 64}`;
    default:
      return s.op;
  }
}

/** The enabled queue a step's `q` addresses (by position among the driver's queues). */
function queueOf(st: State, q: number) {
  const ids = [...st.rig.driver.pci.queues.keys()].sort((a, b) => a - b);
  if (ids.length === 0) return null;
  const index = ids[q % ids.length] as number;
  return { index, dq: st.rig.driver.pci.queues.get(index)! };
}

function isTxOrCtrl(st: State, index: number): boolean {
  const d = st.rig.driver;
  return (index < 2 * d.maxPairs && (index & 1) === 1) || (d.has(17) && index === d.ctrlIndex);
}

function segAddr(s: Seg): number {
  if (s.where === 'scratch') return SCRATCH + (s.raw % Math.max(1, 0x10000 - Math.min(s.len, 0x10000)));
  if (s.where === 'ram') return s.raw % RAM;
  return WILD[s.raw % WILD.length] as number;
}

/** Driver-kit work that may fail on a ring the guest corrupted (escapes and invariants still fail). */
function tolerant(st: State, fn: () => void): void {
  try {
    fn();
  } catch (e) {
    if (e instanceof EscapeError || e instanceof InvariantError) throw e;
    if (!st.rig.corrupted && !st.rig.needsReset())
      throw new InvariantError(`the driver kit failed on an intact ring: ${String(e)}`);
    st.counters.driverConfused = (st.counters.driverConfused ?? 0) + 1;
  }
}

function kick(st: State, index: number, value: number, size: 2 | 4, at: number | null): void {
  const pci = st.rig.driver.pci;
  const cap = pci.caps.find((c) => c.cfgType === 2);
  if (!cap) return;
  const off = at ?? guard('notify offset', () => pci.notifyOffset(index & 0xffff));
  guard(`kick ${index}`, () => st.rig.dev.barWrite(cap.bar, off, size, value >>> 0));
  if (at === null) st.kicked.add(index & 0xffff);
}

async function execute(st: State, s: Step & { heal?: boolean }): Promise<void> {
  const rig = st.rig;
  const mem = rig.memory;
  if (s.heal && s.op !== 'reopen' && rig.needsReset()) {
    rig.reopen();
    st.resetQueues.clear();
    st.kicked.clear();
    st.usedScribbled = false;
    st.counters.healed = (st.counters.healed ?? 0) + 1;
  }
  const count = (k: string) => {
    st.counters[k] = (st.counters[k] ?? 0) + 1;
  };
  switch (s.op) {
    case 'post': {
      const q = queueOf(st, s.q);
      if (!q) return;
      const needed = s.indirect ? 1 : s.segs.length;
      if (needed > q.dq.numFree) return;
      // Writable before readable is a broken chain too: keep the generated order.
      const readable = s.segs.filter((g) => !g.w).map((g) => ({ addr: segAddr(g), len: g.len }));
      const writable = s.segs.filter((g) => g.w).map((g) => ({ addr: segAddr(g), len: g.len }));
      if (!isTxOrCtrl(st, q.index) || s.segs.some((g) => g.where !== 'scratch')) rig.corrupted = true;
      // A writable segment anywhere in RAM lets the device write over a used ring on the guest's behalf.
      if (s.segs.some((g) => g.where !== 'scratch')) st.usedScribbled = true;
      tolerant(st, () => q.dq.add(readable, writable, { indirect: s.indirect }));
      if (s.kick) kick(st, q.index, q.index, 2, null);
      count('chainsPosted');
      return;
    }
    case 'desc': {
      const q = queueOf(st, s.q);
      if (!q) return;
      rig.corrupted = true;
      st.usedScribbled = true; // its address may be a ring
      const slot = s.slot % q.dq.size;
      writeDesc(mem, q.dq.config.descAddr + 16 * slot, s.desc, st.packed);
      if (s.publish && !st.packed) {
        const idx = splitAvailIdx(mem, q.dq.config);
        setSplitAvail(mem, q.dq.config, 'entry', slot, idx);
        setSplitAvail(mem, q.dq.config, 'idx', idx + 1);
      }
      return;
    }
    case 'indirect': {
      const q = queueOf(st, s.q);
      if (!q) return;
      rig.corrupted = true;
      st.usedScribbled = true;
      const table = SCRATCH + s.at;
      for (const [i, e] of s.entries.entries()) writeDesc(mem, table + 16 * i, e, st.packed);
      const slot = s.slot % q.dq.size;
      const flags = F_INDIRECT | (st.packed ? (s.slot & 1 ? F_AVAIL : F_USED) : 0);
      writeDesc(
        mem,
        q.dq.config.descAddr + 16 * slot,
        { addr: BigInt(table), len: s.len, flags, next: 0 },
        st.packed,
      );
      if (s.publish && !st.packed) {
        const idx = splitAvailIdx(mem, q.dq.config);
        setSplitAvail(mem, q.dq.config, 'entry', slot, idx);
        setSplitAvail(mem, q.dq.config, 'idx', idx + 1);
      }
      return;
    }
    case 'avail': {
      const q = queueOf(st, s.q);
      if (!q) return;
      rig.corrupted = true;
      if (st.packed) setPackedDriverEvent(mem, q.dq.config, s.value, s.slot);
      else if (s.field === 'idx' && s.value <= 8) {
        // Small steps ahead (chains made of whatever the table holds) more often than wild values.
        setSplitAvail(mem, q.dq.config, 'idx', splitAvailIdx(mem, q.dq.config) + s.value);
      } else setSplitAvail(mem, q.dq.config, s.field, s.value, s.slot);
      return;
    }
    case 'deviceArea': {
      const q = queueOf(st, s.q);
      if (!q) return;
      rig.corrupted = true;
      st.usedScribbled = true;
      scribbleDeviceArea(mem, q.dq.config, st.packed, s.offset, s.value);
      return;
    }
    case 'kick': {
      if (s.raw) {
        kick(st, s.q & 0xffff, (s.q & 0xffff) | (s.data << 16), s.size, null);
        return;
      }
      const q = queueOf(st, s.q);
      if (!q) return;
      const cap = rig.driver.pci.caps.find((c) => c.cfgType === 2);
      const at = s.at === 'random' && cap ? cap.offset + (s.off % Math.max(cap.length, 1)) : null;
      kick(st, q.index, s.size === 4 ? (q.index | (s.data << 16)) >>> 0 : q.index, s.size, at);
      return;
    }
    case 'inject': {
      const f = new Uint8Array(s.len);
      for (let i = 0; i < f.length; i++) f[i] = (s.seed >>> (i & 15)) + i;
      if (f.length >= 6)
        f.set(
          s.broadcast
            ? [255, 255, 255, 255, 255, 255]
            : DEV_MAC.split(':').map((h) => Number.parseInt(h, 16)),
        );
      const n = await rig.checkedInject(st.ctx, f, s.queue);
      st.counters.framesTaken = (st.counters.framesTaken ?? 0) + n;
      return;
    }
    case 'send': {
      if (!rig.open) return;
      const before = rig.sent;
      let pair = -1;
      tolerant(st, () => {
        const f = new Uint8Array(s.len);
        f.set([0x52, 0x54, 0x00, 0xab, 0xcd, 0xef, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x88, 0xb5]);
        pair = s.pair % rig.driver.maxPairs;
        rig.driver.send(f, { pair, indirect: s.indirect && rig.driver.has(28), split: s.split });
      });
      if (pair < 0) return; // the driver kit gave up on a corrupted ring
      // Worker mode: the pair's worker transmits when it gets to the kick.
      await rig.settle(() => rig.sent > before);
      if (!rig.corrupted && !rig.needsReset() && !st.resetQueues.has(2 * pair + 1))
        invariant(rig.sent > before, 'a frame sent through an intact ring did not reach the backend');
      return;
    }
    case 'receive':
      if (!rig.open) return;
      tolerant(st, () => {
        for (let p = 0; p < rig.driver.maxPairs; p++) rig.driver.receive(p);
      });
      return;
    case 'scribble':
      for (let i = 0; i < s.len && s.off + i < 0x10000; i++)
        mem.writeU8(SCRATCH + s.off + i, (s.seed >>> (i & 31)) & 0xff);
      return;
    case 'queueReset': {
      const q = queueOf(st, s.q);
      if (!q || !rig.driver.has(40)) return;
      rig.corrupted = true;
      st.resetQueues.add(q.index);
      tolerant(st, () => rig.driver.pci.resetQueue(q.index));
      return;
    }
    case 'reopen':
      rig.reopen();
      st.resetQueues.clear();
      st.kicked.clear();
      st.usedScribbled = false;
      await rig.checkAlive('reopen');
      count('reopens');
      return;
  }
}

/** Every kicked transmit or control queue has its available chains used (what `check` asserts). */
function kickedDone(st: State): boolean {
  const rig = st.rig;
  if (st.packed || st.usedScribbled || rig.needsReset() || (rig.status & 4) === 0) return true;
  for (const index of st.kicked) {
    const dq = rig.driver.pci.queues.get(index);
    if (!dq || st.resetQueues.has(index) || !isTxOrCtrl(st, index)) continue;
    if (splitAvailIdx(rig.memory, dq.config) !== splitUsedIdx(rig.memory, dq.config)) return false;
  }
  return true;
}

async function check(st: State): Promise<void> {
  const rig = st.rig;
  // Worker mode: the kicks of this step are handled on the workers; settle until they are.
  await rig.settle(() => kickedDone(st));
  const broken = rig.needsReset();
  if (broken) st.counters.needsReset = (st.counters.needsReset ?? 0) + 1;
  const driverOk = (rig.status & 4) !== 0;
  for (const index of st.kicked) {
    const dq = rig.driver.pci.queues.get(index);
    if (!dq || broken || !driverOk || st.resetQueues.has(index) || !isTxOrCtrl(st, index)) continue;
    if (!st.packed && !st.usedScribbled) {
      const avail = splitAvailIdx(rig.memory, dq.config);
      const used = splitUsedIdx(rig.memory, dq.config);
      invariant(
        avail === used,
        `queue ${index}: kicked, not in NEEDS_RESET, yet used idx ${used} != avail idx ${avail} (chains not returned)`,
      );
    }
    if (!rig.corrupted && index < 2 * rig.driver.maxPairs) {
      rig.driver.reclaimTx(index >> 1);
      invariant(
        dq.numFree === dq.size,
        `queue ${index}: ${dq.size - dq.numFree} descriptors of an intact ring never came back`,
      );
    }
  }
  st.kicked.clear();
  checkTxAccount(rxAccount(rig.dev, rig.backend), 'pf');
}

export const guestRings: FuzzTarget<State, Step & { heal: boolean }> = {
  name: 'guest-rings',
  summary: 'split and packed rings with random and corrupt descriptors, indices and kicks',
  stepsPerCase: 300,
  setup(rng: Rng, ctx: RunContext) {
    const config = randomRigConfig(rng);
    chooseWorkers(rng, config);
    const rig = new Rig(config);
    rig.reopen();
    return {
      rig,
      ctx,
      packed: rig.driver.has(34),
      kicked: new Set(),
      resetQueues: new Set(),
      usedScribbled: false,
      counters: {},
    };
  },
  generate,
  execute,
  check,
  async finish(st) {
    st.rig.reopen();
    await st.rig.checkAlive('end of case');
    await st.rig.checkWorkersGone();
  },
  async dispose(st) {
    await st.rig.close();
  },
  describe,
  describeSetup: (st) => describeRigConfig(st.rig.config),
  counters: (st) => ({
    ...st.counters,
    guestErrors: st.rig.dev.stats().guestErrors,
    casesOnWorkers: st.rig.onWorkers ? 1 : 0,
  }),
};
