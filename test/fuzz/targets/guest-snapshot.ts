/**
 * `guest-snapshot`: snapshot() and restore() at random points mid-traffic (frames queued but not
 * kicked, rx buffers half used, a backlog waiting), as a live migration to a new device on the same
 * guest memory, and restores of corrupted states (fields deleted, retyped, out of range; config-space
 * bytes flipped) into the live device.
 *
 * Invariants: a snapshot is JSON; restoring it reproduces it exactly; after a migration the guest goes
 * on as if nothing happened (queued frames go out through the new backend, frames come in, its rings
 * stay consistent: no driver-kit error); a corrupted state either makes restore throw or is taken, and
 * in both cases no accessor throws afterwards, the snapshot stays JSON, the read-only registers keep
 * their values, and after a VMM reset the guest can set the device up again and exchange frames.
 *
 * Half the cases with 2 or more queue pairs run them on worker threads (worker-rig.ts), without VFs
 * (workers refuse SR-IOV); a migration then starts the new device's workers. Snapshot and restore
 * quiesce the workers (synchronous requests); frames and counters are checked after the workers settled;
 * at the end no worker thread or descriptor is left (the migrated-away devices' included).
 */
import {
  describeError,
  EscapeError,
  type FuzzTarget,
  guard,
  InvariantError,
  invariant,
  type RunContext,
} from '../engine.js';
import { chooseWorkers } from '../worker-rig.js';
import {
  checkReadOnly,
  checkTxAccount,
  DEV_MAC,
  describeRigConfig,
  randomRigConfig,
  readOnlyRegisters,
  rebaseTxAccount,
  Rig,
  rxAccount,
} from '../device-rig.js';
import type { Rng } from '../rng.js';

type Mutation =
  | { kind: 'null' | 'delete' | 'string' | 'bool' | 'array' | 'object' | 'swap'; path: number }
  | { kind: 'number'; path: number; value: number }
  | { kind: 'config'; offset: number; value: number };

type Step =
  | { op: 'send'; len: number; pair: number; kick: boolean }
  | { op: 'kick' }
  | { op: 'inject'; len: number; queue: number }
  | { op: 'receive'; pairs: number }
  | { op: 'roundTrip' }
  | { op: 'migrate' }
  | { op: 'corrupt'; mutations: Mutation[]; pokes: number[] }
  | { op: 'reopen' };

interface State {
  rig: Rig;
  ctx: RunContext;
  ro: ReturnType<typeof readOnlyRegisters>;
  counters: Record<string, number>;
}

function generate(rng: Rng): Step {
  const op = rng.weighted({
    send: 25,
    kick: 6,
    inject: 25,
    receive: 12,
    roundTrip: 6,
    migrate: 10,
    corrupt: 12,
    reopen: 2,
  });
  switch (op) {
    case 'send':
      return { op, len: rng.pick([14, 60, 600, 1514]), pair: rng.int(0, 3), kick: rng.chance(0.6) };
    case 'inject':
      return { op, len: rng.pick([14, 60, 600, 1514, 9000]), queue: rng.int(0, 3) };
    case 'receive':
      return { op, pairs: rng.int(1, 4) };
    case 'corrupt': {
      const mutations: Mutation[] = [];
      for (let i = rng.int(1, 3); i > 0; i--) {
        const kind = rng.weighted({
          null: 2,
          delete: 2,
          string: 1,
          bool: 1,
          array: 1,
          object: 1,
          swap: 1,
          number: 5,
          config: 3,
        });
        if (kind === 'number')
          mutations.push({
            kind,
            path: rng.u32(),
            value: rng.pick([
              -1,
              0,
              1,
              0.5,
              3,
              65536,
              2 ** 31,
              2 ** 32,
              2 ** 53,
              1e300,
              -(2 ** 53),
              rng.u32(),
            ]),
          });
        else if (kind === 'config')
          mutations.push({ kind, offset: rng.int(0, 0xfff), value: rng.int(0, 255) });
        else mutations.push({ kind, path: rng.u32() });
      }
      return { op, mutations, pokes: Array.from({ length: rng.int(0, 12) }, () => rng.u32()) };
    }
    default:
      return { op } as Step;
  }
}

function describe(s: Step): string {
  switch (s.op) {
    case 'send':
      return `guest sends ${s.len} bytes on pair ${s.pair}${s.kick ? '' : ' (not kicked)'}`;
    case 'inject':
      return `backend frame ${s.len} bytes on queue ${s.queue}`;
    case 'receive':
      return `guest receives on ${s.pairs} pair(s)`;
    case 'corrupt':
      return `restore a corrupted snapshot: ${s.mutations.map((m) => (m.kind === 'config' ? `config[0x${m.offset.toString(16)}]=0x${m.value.toString(16)}` : `${m.kind}@${m.path}${m.kind === 'number' ? `=${m.value}` : ''}`)).join(', ')}; then ${s.pokes.length} guest accesses`;
    default:
      return s.op;
  }
}

/** Every (container, key) of a JSON value, in a fixed order. */
function paths(v: unknown, out: [Record<string | number, unknown>, string | number][] = []) {
  if (v && typeof v === 'object') {
    const o = v as Record<string | number, unknown>;
    for (const k of Array.isArray(v) ? v.keys() : Object.keys(o)) {
      out.push([o, k]);
      paths(o[k], out);
    }
  }
  return out;
}

function mutate(snap: Record<string, unknown>, m: Mutation): void {
  if (m.kind === 'config') {
    const pci = snap.pci as { config?: unknown };
    if (typeof pci?.config !== 'string') return;
    const bytes = Buffer.from(pci.config, 'base64');
    if (m.offset < bytes.length) bytes[m.offset] = m.value;
    pci.config = bytes.toString('base64');
    return;
  }
  const all = paths(snap);
  if (all.length === 0) return;
  const [o, k] = all[m.path % all.length]!;
  const was = o[k];
  switch (m.kind) {
    case 'null':
      o[k] = null;
      break;
    case 'delete':
      if (Array.isArray(o)) o.splice(k as number, 1);
      else delete o[k];
      break;
    case 'string':
      o[k] = typeof was === 'string' ? was.slice(0, was.length >> 1) : 'zz';
      break;
    case 'bool':
      o[k] = !was;
      break;
    case 'array':
      o[k] = [];
      break;
    case 'object':
      o[k] = {};
      break;
    case 'swap':
      o[k] = typeof was === 'number' ? String(was) : typeof was === 'string' ? Number(was.length) : 7;
      break;
    case 'number':
      o[k] = m.value;
      break;
  }
}

/** Driver-kit work that may fail after a corrupt restore (escapes still fail). */
function tolerant(st: State, fn: () => void): void {
  try {
    fn();
  } catch (e) {
    if (e instanceof EscapeError || e instanceof InvariantError) throw e;
    if (!st.rig.corrupted && !st.rig.needsReset())
      throw new InvariantError(`the driver kit failed: ${describeError(e)}`);
    st.counters.driverConfused = (st.counters.driverConfused ?? 0) + 1;
  }
}

function frameTo(len: number, dst: string, src: string): Uint8Array {
  const f = new Uint8Array(len);
  f.set(dst.split(':').map((h) => Number.parseInt(h, 16)));
  f.set(
    src.split(':').map((h) => Number.parseInt(h, 16)),
    6,
  );
  f.set([0x88, 0xb5], 12);
  for (let i = 14; i < len; i++) f[i] = i & 0xff;
  return f;
}

async function corrupt(st: State, s: Extract<Step, { op: 'corrupt' }>): Promise<void> {
  const rig = st.rig;
  const snap = JSON.parse(JSON.stringify(guard('snapshot()', () => rig.dev.snapshot()))) as Record<
    string,
    unknown
  >;
  for (const m of s.mutations) mutate(snap, m);
  rig.corrupted = true;
  let threw: unknown = null;
  try {
    rig.dev.restore(snap);
  } catch (e) {
    threw = e;
  }
  // A state that was taken brings its counters; one that was refused left the device untouched.
  // Worker mode: rebased once the workers settled (what they sent before the snapshot, or right after
  // they started again, reaches the backend's count when the host drains their rings).
  await rig.settle();
  if (!threw) rebaseTxAccount(rig.dev, rig.backend);
  const outcome = threw ? `restoreThrew${(threw as Error).name ?? 'Error'}` : 'restoreTook';
  st.counters[outcome] = (st.counters[outcome] ?? 0) + 1;
  // The guest keeps poking whatever state the device is in now.
  const t = rig.target;
  const bar = rig.driver.pci.caps.find((c) => c.cfgType === 1);
  for (const p of s.pokes) {
    const kind = p % 5;
    if (kind === 0) t.configRead((p >>> 4) % 0x1000, 4);
    else if (kind === 1 && bar) t.barRead(bar.bar, bar.offset + ((p >>> 4) % 0x40), 2);
    else if (kind === 2 && bar)
      t.barWrite(bar.bar, bar.offset + 0x16, 2, (p >>> 4) % 12); // queue_select
    else if (kind === 3) tolerant(st, () => rig.driver.pci.kick((p >>> 4) % 12));
    else
      tolerant(st, () =>
        rig.driver.send(frameTo(60, '52:54:00:ab:cd:ef', DEV_MAC), { pair: (p >>> 4) % rig.driver.maxPairs }),
      );
  }
  guard('stats()', () => rig.dev.stats());
  const again = guard('snapshot()', () => rig.dev.snapshot());
  try {
    JSON.stringify(again);
  } catch (e) {
    throw new InvariantError(
      `after restoring a corrupted state, snapshot() is no longer JSON: ${describeError(e)}`,
    );
  }
  // Read-only registers: a state that changes them must be refused (QEMU: "Bad config data").
  checkReadOnly(rig.target, st.ro, 'pf after restore');
  // The VMM gives up on the state and resets; the guest sets the device up again.
  guard('reset()', () => rig.dev.reset());
  rig.reopen();
  await rig.checkAlive('after a corrupted restore and a reset');
}

async function execute(st: State, s: Step): Promise<void> {
  const rig = st.rig;
  const d = rig.driver;
  switch (s.op) {
    case 'send': {
      const before = rig.sent;
      let sent = false;
      tolerant(st, () => {
        d.send(frameTo(s.len, '52:54:00:ab:cd:ef', DEV_MAC), { pair: s.pair % d.maxPairs, kick: s.kick });
        sent = true;
      });
      if (!sent || !s.kick) return;
      // Worker mode: the pair's worker transmits when it gets to the kick.
      await rig.settle(() => rig.sent > before);
      if (!rig.corrupted && !rig.needsReset() && rig.dev.net.linkUp)
        invariant(rig.sent > before, 'a frame sent and kicked did not reach the backend');
      return;
    }
    case 'kick':
      tolerant(st, () => {
        for (let p = 0; p < d.maxPairs; p++) d.kickTx(p);
      });
      return;
    case 'inject':
      await rig.checkedInject(st.ctx, frameTo(s.len, DEV_MAC, '52:54:00:ab:cd:ef'), s.queue);
      return;
    case 'receive':
      tolerant(st, () => {
        for (let p = 0; p < Math.min(s.pairs, d.maxPairs); p++) d.receive(p);
      });
      return;
    case 'roundTrip': {
      // With frames held by a paused backend, restore (which resets and re-activates) lets them in.
      if (!rig.quiet()) return;
      await kickForCompare(st);
      const a = JSON.stringify(guard('snapshot()', () => rig.dev.snapshot()));
      guard('restore()', () => rig.dev.restore(JSON.parse(a)));
      const b = JSON.stringify(guard('snapshot()', () => rig.dev.snapshot()));
      invariant(a === b, () => `restore(snapshot()) changed the state: ${firstDifference(a, b)}`);
      return;
    }
    case 'migrate': {
      await kickForCompare(st);
      const sent = rig.sent;
      const { before, after } = rig.migrate();
      invariant(
        before === after,
        () => `the migrated device's snapshot differs: ${firstDifference(before, after)}`,
      );
      st.counters.migrations = (st.counters.migrations ?? 0) + 1;
      // Frames queued before the migration (not kicked yet) go out through the new backend.
      let kicked = false;
      tolerant(st, () => {
        for (let p = 0; p < d.maxPairs; p++) d.kickTx(p);
        kicked = true;
      });
      if (!kicked) return;
      await rig.settle(() => rig.sent >= sent);
      if (!rig.corrupted && !rig.needsReset()) invariant(rig.sent >= sent, 'frames were lost in migration');
      return;
    }
    case 'corrupt':
      await corrupt(st, s);
      return;
    case 'reopen':
      rig.reopen();
      await rig.checkAlive('reopen');
      return;
  }
}

/**
 * Worker mode, before a snapshot that is compared with the one after a restore: a worker that starts
 * (after the restore; on a migration's new device) looks at its rings once and transmits what the guest
 * posted without a kick (docs/workers.md, `start`), as a device may at any time; one thread waits for the
 * next kick. The snapshot after the restore would then show those chains used, so the guest kicks its
 * transmit queues first and the workers settle: the comparison stays exact, but on workers a migration
 * never has tx chains pending without a kick (one thread keeps testing that).
 */
async function kickForCompare(st: State): Promise<void> {
  const rig = st.rig;
  if (!rig.onWorkers || !rig.open) return;
  const d = rig.driver;
  tolerant(st, () => {
    for (let p = 0; p < d.maxPairs; p++) if (d.pci.queues.has(d.txIndex(p))) d.pci.kick(d.txIndex(p));
  });
  await rig.settle();
}

function firstDifference(a: string, b: string): string {
  let i = 0;
  while (i < a.length && a[i] === b[i]) i++;
  return `at character ${i}: …${a.slice(Math.max(0, i - 60), i + 40)}… vs …${b.slice(Math.max(0, i - 60), i + 40)}…`;
}

export const guestSnapshot: FuzzTarget<State, Step> = {
  name: 'guest-snapshot',
  summary: 'snapshot/restore at random points mid-traffic (migration), and restores of corrupted states',
  stepsPerCase: 200,
  setup(rng: Rng, ctx: RunContext) {
    const config = randomRigConfig(rng, { sriov: rng.chance(0.3) });
    chooseWorkers(rng, config, { overSriov: true, maxThreads: 2 });
    const rig = new Rig(config);
    const ro = readOnlyRegisters(rig.target, true);
    rig.reopen();
    if (rig.config.device.sriov && rng.bool()) rig.enableVfs(1);
    return { rig, ctx, ro, counters: {} };
  },
  generate,
  execute,
  async check(st) {
    await st.rig.settle(); // worker mode: counters as of a quiet moment
    checkReadOnly(st.rig.target, st.ro, 'pf');
    checkTxAccount(rxAccount(st.rig.dev, st.rig.backend), 'pf');
    if (st.rig.needsReset()) st.counters.needsReset = (st.counters.needsReset ?? 0) + 1;
  },
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
  counters: (st) => ({ ...st.counters, reopens: st.rig.reopens, casesOnWorkers: st.rig.onWorkers ? 1 : 0 }),
};
