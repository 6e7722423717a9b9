/**
 * `guest-config`: a guest hammering the config space and BARs of the PF and (SR-IOV enabled) VFs with
 * reads and writes of every width at any offset (unaligned, out of range), random values, VF Enable
 * toggles, VMM resets and link changes, with some traffic in between.
 *
 * Invariants: no accessor throws; reads return an integer of the access width; read-only registers
 * (IDs, class, capability list and locations, MSI-X geometry, SR-IOV fixed fields) never change; the
 * device's sent-frame count equals what its backend got; and however the registers were mangled, a
 * guest that resets the device can set it up again and exchange frames (checked now and then and at
 * the end of every case).
 *
 * Half the cases with 2 or more queue pairs run them on worker threads (worker-rig.ts), without VFs
 * (workers refuse SR-IOV): register accesses stay synchronous on this thread (queue enable, resets and
 * DRIVER_OK reach the workers as synchronous requests); frames and counters are checked after the workers
 * settled; at the end no worker thread or descriptor is left.
 */
import type { VirtioNetPci } from '../../../devices/virtio-net-pci.js';
import { EscapeError, type FuzzTarget, guard, invariant, InvariantError } from '../engine.js';
import {
  checkReadOnly,
  checkTxAccount,
  describeRigConfig,
  guardedTarget,
  randomRigConfig,
  readOnlyRegisters,
  Rig,
  rxAccount,
} from '../device-rig.js';
import type { Rng } from '../rng.js';
import { chooseWorkers } from '../worker-rig.js';

type Width = 1 | 2 | 4 | 8;
type Region = 'common' | 'isr' | 'device' | 'notify' | 'msix' | 'any' | 'end' | 'wild';

type Step =
  | { op: 'cfgRead' | 'cfgWrite'; fn: number; off: number; size: 1 | 2 | 4; value: number }
  | {
      op: 'barRead' | 'barWrite';
      fn: number;
      bar: number;
      region: Region;
      off: number;
      size: Width;
      value: number | bigint;
    }
  | { op: 'sriov'; n: number; ctrl: number }
  | { op: 'traffic'; len: number }
  | { op: 'reopen' }
  | { op: 'vfAlive'; k: number }
  | { op: 'vmmReset' }
  | { op: 'link'; up: boolean };

interface State {
  rig: Rig;
  ro: Map<VirtioNetPci, ReturnType<typeof readOnlyRegisters>>;
  /** Virtio capability windows in the modern BAR: cfg_type → [offset, length]. */
  windows: Map<number, [number, number]>;
  counters: Record<string, number>;
}

function configOffset(rng: Rng): number {
  const r = rng.float();
  if (r < 0.4) return rng.int(0, 0xff);
  if (r < 0.7) return rng.int(0x100, 0xfff);
  if (r < 0.85) return rng.int(0x0, 0x3f);
  return rng.pick([-1, -4, 0x1000, 0x1001, 0xfff, 0xffd, 0x10000, 0x7fffffff, 2 ** 32, 2 ** 53, 1.5]);
}

function writeValue(rng: Rng): number {
  if (rng.chance(0.05)) return rng.pick([-1, 2 ** 32, 2 ** 40 + 5, 0.5, -0x80000000]);
  return rng.edgeU32();
}

export function generate(rng: Rng): Step {
  const op = rng.weighted({
    cfgRead: 15,
    cfgWrite: 25,
    barRead: 15,
    barWrite: 30,
    sriov: 3,
    traffic: 6,
    reopen: 2,
    vfAlive: 1,
    vmmReset: 1,
    link: 1,
  });
  const fn = rng.chance(0.7) ? 0 : rng.int(1, 4);
  switch (op) {
    case 'cfgRead':
    case 'cfgWrite':
      return { op, fn, off: configOffset(rng), size: rng.pick([1, 2, 4] as const), value: writeValue(rng) };
    case 'barRead':
    case 'barWrite': {
      const size = rng.pick([1, 2, 4, 8] as const);
      return {
        op,
        fn,
        bar: rng.chance(0.9) ? rng.pick([1, 4]) : rng.int(0, 7),
        region: rng.weighted({ common: 8, isr: 1, device: 3, notify: 3, msix: 3, any: 2, end: 1, wild: 1 }),
        off: rng.u32(),
        size,
        value: size === 8 && rng.bool() ? rng.edgeU64() : writeValue(rng),
      };
    }
    case 'sriov':
      return {
        op,
        n: rng.pick([0, 1, 2, 3, 4, 5, 0xffff]),
        ctrl: rng.pick([0x9, 0x9, 0x1, 0x8, 0x19, 0, 0xffff]),
      };
    case 'traffic':
      return { op, len: rng.pick([14, 60, 1514, 9000]) };
    case 'vfAlive':
      return { op, k: rng.int(0, 3) };
    case 'link':
      return { op, up: rng.chance(0.6) };
    default:
      return { op };
  }
}

function describeStep(s: Step): string {
  const hex = (v: number | bigint) =>
    typeof v === 'bigint'
      ? `0x${v.toString(16)}n`
      : Number.isInteger(v) && v >= 0
        ? `0x${v.toString(16)}`
        : String(v);
  switch (s.op) {
    case 'cfgRead':
      return `fn${s.fn} configRead(${hex(s.off)}, ${s.size})`;
    case 'cfgWrite':
      return `fn${s.fn} configWrite(${hex(s.off)}, ${s.size}, ${hex(s.value)})`;
    case 'barRead':
      return `fn${s.fn} barRead(${s.bar}, ${s.region}+${hex(s.off)}, ${s.size})`;
    case 'barWrite':
      return `fn${s.fn} barWrite(${s.bar}, ${s.region}+${hex(s.off)}, ${s.size}, ${hex(s.value)})`;
    case 'sriov':
      return `SR-IOV NumVFs=${s.n} ctrl=${hex(s.ctrl)}`;
    case 'traffic':
      return `traffic (${s.len}-byte frames both ways)`;
    case 'vfAlive':
      return `bring VF ${s.k} up and send a frame`;
    case 'link':
      return `backend link ${s.up ? 'up' : 'down'}`;
    default:
      return s.op;
  }
}

/** The function a step addresses: 0 the PF, k the (k-1 mod count)th enabled VF (the PF when none). */
function fnOf(st: State, fn: number): { dev: VirtioNetPci; label: string } {
  const vfs = st.rig.dev.vfs;
  if (fn === 0 || vfs.length === 0) return { dev: st.rig.dev, label: 'pf' };
  const k = (fn - 1) % vfs.length;
  return { dev: vfs[k] as VirtioNetPci, label: `vf${k}` };
}

function barOffset(
  st: State,
  dev: VirtioNetPci,
  bar: number,
  region: Region,
  raw: number,
  size: number,
): number {
  const barSize = dev.bars[bar]?.size ?? 0x1000;
  const win = (type: number) => st.windows.get(type) ?? [0, 0x1000];
  const within = ([o, l]: [number, number]) => o + (raw % Math.max(l + 8, 1));
  switch (region) {
    case 'common':
      return within([win(1)[0], Math.min(win(1)[1], 0x40)]);
    case 'isr':
      return within(win(3));
    case 'device':
      return within([win(4)[0], Math.min(win(4)[1], 0x40)]);
    case 'notify':
      return within([win(2)[0], Math.min(win(2)[1], 0x100)]);
    case 'msix':
      return raw % 0x1000;
    case 'any':
      return raw % barSize;
    case 'end':
      return barSize - (raw % (2 * size + 1));
    default:
      return raw;
  }
}

/** Reads must come back as an integer of the access width. */
function checkReadValue(v: number | bigint, size: number, what: string): void {
  if (typeof v === 'bigint') {
    invariant(v >= 0n && v < 1n << BigInt(8 * size), `${what} returned ${v} (not a ${size}-byte value)`);
    return;
  }
  invariant(
    Number.isInteger(v) && v >= 0 && v < 2 ** (8 * size),
    `${what} returned ${v} (not a ${size}-byte value)`,
  );
}

/** Runs driver-kit work that may legitimately fail on a device the guest mangled (escapes still fail). */
function tolerant(st: State, fn: () => void): void {
  try {
    fn();
  } catch (e) {
    if (e instanceof EscapeError || (e instanceof InvariantError && !st.rig.corrupted)) throw e;
    if (!st.rig.corrupted && !st.rig.needsReset())
      throw new InvariantError(`the driver kit failed on an intact device: ${String(e)}`);
    st.counters.driverConfused = (st.counters.driverConfused ?? 0) + 1;
  }
}

async function execute(st: State, s: Step): Promise<void> {
  const rig = st.rig;
  switch (s.op) {
    case 'cfgRead': {
      const f = fnOf(st, s.fn);
      const v = guard(`${f.label}.configRead`, () => f.dev.configRead(s.off, s.size));
      if (Number.isInteger(s.off) && s.off >= 0 && s.off <= 0x1000 - s.size)
        checkReadValue(v, s.size, `${f.label}.configRead(0x${s.off.toString(16)}, ${s.size})`);
      return;
    }
    case 'cfgWrite': {
      const f = fnOf(st, s.fn);
      rig.corrupted = true;
      guard(`${f.label}.configWrite`, () => f.dev.configWrite(s.off, s.size, s.value));
      return;
    }
    case 'barRead':
    case 'barWrite': {
      const f = fnOf(st, s.fn);
      const off = barOffset(st, f.dev, s.bar, s.region, s.off, s.size);
      const what = `${f.label}.${s.op}(${s.bar}, 0x${off.toString(16)}, ${s.size})`;
      if (s.op === 'barRead') {
        const v = guard(what, () => f.dev.barRead(s.bar, off, s.size));
        checkReadValue(v, s.size, what);
      } else {
        rig.corrupted = true;
        guard(what, () => f.dev.barWrite(s.bar, off, s.size, s.value));
      }
      return;
    }
    case 'sriov':
      if (!rig.config.device.sriov) return;
      rig.corrupted = true;
      rig.enableVfs(s.n, s.ctrl);
      st.counters.vfsEnabled = Math.max(st.counters.vfsEnabled ?? 0, rig.dev.vfs.length);
      return;
    case 'traffic': {
      if (!rig.open) return;
      const before = rig.sent;
      const f = new Uint8Array(s.len);
      f.set([0x52, 0x54, 0x00, 0xab, 0xcd, 0xef, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x88, 0xb5]);
      let sent = false;
      tolerant(st, () => {
        rig.driver.send(f);
        sent = true;
      });
      if (!sent) return;
      // Worker mode: the pair's worker transmits when it gets to the kick.
      await rig.settle(() => rig.sent > before);
      tolerant(st, () => {
        if (!rig.corrupted && rig.dev.net.linkUp && s.len <= 1514)
          invariant(rig.sent > before, 'a frame sent on an intact device did not reach the backend');
        guard('backend.inject', () => rig.backend.inject(f.subarray(0, Math.min(s.len, 1514)), 0));
      });
      await rig.settle();
      tolerant(st, () => {
        for (let p = 0; p < rig.driver.maxPairs; p++) rig.driver.receive(p);
      });
      return;
    }
    case 'reopen':
      rig.reopen();
      await rig.checkAlive('reopen');
      return;
    case 'vfAlive':
      rig.checkVfAlive(s.k);
      return;
    case 'vmmReset':
      rig.corrupted = true;
      guard('pf.reset()', () => rig.dev.reset());
      return;
    case 'link':
      guard('backend.setLinkUp', () => rig.backend.setLinkUp(s.up));
      return;
  }
}

async function check(st: State): Promise<void> {
  const rig = st.rig;
  await rig.settle(); // worker mode: counters as of a quiet moment
  checkReadOnly(rig.target, st.ro.get(rig.dev)!, 'pf');
  for (const [k, vf] of rig.dev.vfs.entries()) {
    const t = guardedTarget(vf, `vf${k}`);
    let regs = st.ro.get(vf);
    if (!regs) {
      regs = readOnlyRegisters(t, true);
      st.ro.set(vf, regs);
    }
    checkReadOnly(t, regs, `vf${k}`);
    guard(`vf${k}.stats()`, () => vf.stats());
  }
  checkTxAccount(rxAccount(rig.dev, rig.backend), 'pf');
  if (rig.needsReset()) st.counters.needsReset = (st.counters.needsReset ?? 0) + 1;
}

export const guestConfig: FuzzTarget<State, Step> = {
  name: 'guest-config',
  summary: 'config space and BARs of the PF and its VFs: every width and offset, random values',
  stepsPerCase: 400,
  setup(rng) {
    const config = randomRigConfig(rng, { sriov: rng.chance(0.7) });
    chooseWorkers(rng, config, { overSriov: true });
    const rig = new Rig(config);
    const ro = new Map<VirtioNetPci, ReturnType<typeof readOnlyRegisters>>();
    ro.set(rig.dev, readOnlyRegisters(rig.target, true));
    rig.reopen();
    const windows = new Map<number, [number, number]>();
    for (const c of rig.driver.pci.caps)
      if (!windows.has(c.cfgType)) windows.set(c.cfgType, [c.offset, c.length]);
    if (rig.config.device.sriov && rng.bool()) rig.enableVfs(rng.int(1, rig.config.device.sriov.totalVfs));
    return { rig, ro, windows, counters: {} };
  },
  generate,
  execute,
  check,
  async finish(st) {
    // However the registers were left, a guest can reset the device and use it again.
    st.rig.reopen();
    await st.rig.checkAlive('end of case');
    if (st.rig.config.device.sriov) {
      st.rig.enableVfs(0, 0);
      st.rig.enableVfs(1);
      st.rig.checkVfAlive(0);
    }
    await st.rig.checkWorkersGone();
  },
  async dispose(st) {
    await st.rig.close();
  },
  describe: describeStep,
  describeSetup: (st) => describeRigConfig(st.rig.config),
  counters: (st) => ({ ...st.counters, reopens: st.rig.reopens, casesOnWorkers: st.rig.onWorkers ? 1 : 0 }),
};
