/**
 * `guest-ctrl`: control-queue commands of every class and command (valid, truncated, oversized, random)
 * in any chain layout, and administration-queue commands (every opcode, any group/member, legacy
 * register reads and writes of the VFs) on an SR-IOV PF with VFs enabled and disabled in between, with
 * frames of any destination (own, broadcast, multicast, other, VLAN-tagged) crossing the filters.
 *
 * Invariants: a control command with room for its header and ack is answered OK or ERR in one used
 * entry of length 1 (more only for a STATS, VQ_GET or RSS context CAP_GET result, within the writable part) and counted, never NEEDS_RESET; one without that room is NEEDS_RESET; accepted
 * commands take effect (VQ_PAIRS_SET within 1..max sets the pairs in use, out of range is refused;
 * MAC_ADDR_SET changes the config MAC); an admin command always comes back with a status the spec
 * allows and OK only with qualifier OK; LIST_QUERY reports the 7 opcodes; frames are accounted once each;
 * read-only registers of PF and VFs never change; and the PF and its VFs stay usable after a reset.
 *
 * Half the cases with 2 or more queue pairs run them on worker threads (worker-rig.ts), without VFs
 * (workers refuse SR-IOV): control commands are still answered on this thread, synchronously (they
 * reach the workers as synchronous requests); frames and counters are checked after the workers
 * settled; at the end no worker thread or descriptor is left.
 */
import type { VirtioNetPci } from '../../../devices/virtio-net-pci.js';
import type { DriverQueue } from '../../../virtio/testing/pci-driver.js';
import {
  checkReadOnly,
  checkTxAccount,
  DEV_MAC,
  describeRigConfig,
  guardedTarget,
  Rig,
  randomRigConfig,
  readOnlyRegisters,
  rxAccount,
  SCRATCH,
} from '../device-rig.js';
import { type FuzzTarget, guard, InvariantError, invariant, type RunContext } from '../engine.js';
import type { Rng } from '../rng.js';
import { chooseWorkers } from '../worker-rig.js';

type Layout = 'one' | 'split' | 'noAck' | 'short' | 'bigAck' | 'huge' | 'result';
type Step =
  | { op: 'ctrl'; cls: number; cmd: number; data: number[]; layout: Layout; cut: number }
  | {
      op: 'admin';
      opcode: number;
      group: number;
      member: bigint;
      data: number[];
      resultLen: number;
      cut: number;
    }
  | {
      op: 'frame';
      dst: 'own' | 'bcast' | 'mcast' | 'other' | 'vlan';
      vid: number;
      len: number;
      queue: number;
    }
  | { op: 'sriov'; n: number }
  | { op: 'vfAlive'; k: number }
  | { op: 'reopen' };

interface State {
  rig: Rig;
  ctx: RunContext;
  /** Admin queue index (null when ADMIN_VQ is not negotiated). */
  aq: number | null;
  ro: Map<VirtioNetPci, ReturnType<typeof readOnlyRegisters>>;
  counters: Record<string, number>;
}

const le = (v: number, n: number) => Array.from({ length: n }, (_, i) => Math.floor(v / 2 ** (8 * i)) & 0xff);
const mac = (rng: Rng) => Array.from({ length: 6 }, () => rng.int(0, 255));

/** Command-specific data shaped like what each command expects (then maybe cut or extended). */
function ctrlData(rng: Rng, cls: number, cmd: number): number[] {
  switch (cls) {
    case 0: // RX: one byte on/off
      return [rng.chance(0.8) ? rng.int(0, 1) : rng.int(0, 255)];
    case 1: {
      if (cmd === 1) return mac(rng); // ADDR_SET
      // TABLE_SET: unicast entries, multicast entries (counts sometimes lying)
      const u = rng.int(0, rng.chance(0.2) ? 80 : 4);
      const m = rng.int(0, rng.chance(0.2) ? 80 : 4);
      const out = [...le(rng.chance(0.9) ? u : rng.edgeU32(), 4)];
      for (let i = 0; i < u; i++) out.push(...mac(rng));
      out.push(...le(rng.chance(0.9) ? m : rng.edgeU32(), 4));
      for (let i = 0; i < m; i++) out.push(...mac(rng));
      return out;
    }
    case 2: // VLAN ADD/DEL: le16 vid
      return le(rng.chance(0.8) ? rng.int(0, 4095) : rng.edge(16), 2);
    case 4: {
      if (cmd === 0) return le(rng.chance(0.7) ? rng.int(0, 5) : rng.edge(16), 2); // VQ_PAIRS_SET
      const key = Array.from({ length: rng.pick([0, 1, 16, 40, 41, 255]) }, () => rng.int(0, 255));
      if (cmd === 2) return [...le(rng.edge(32), 4), 0, 0, 0, 0, 0, 0, 0, 0, key.length, ...key]; // HASH_CONFIG
      // RSS_CONFIG: hash types, mask, unclassified, table, max_tx_vq, key
      const len = rng.pick([1, 2, 4, 8, 128, 3, 256]);
      const table = Array.from({ length: len }, () =>
        le(rng.chance(0.8) ? rng.int(0, 4) : rng.edge(16), 2),
      ).flat();
      const mask = rng.chance(0.8) ? len - 1 : rng.edge(16);
      return [
        ...le(rng.chance(0.5) ? 0x3f : rng.edge(32), 4),
        ...le(mask, 2),
        ...le(rng.int(0, 5), 2),
        ...table,
        ...le(rng.chance(0.8) ? rng.int(1, 4) : rng.edge(16), 2),
        key.length,
        ...key,
      ];
    }
    case 7: // HASH_TUNNEL_SET: le32 enabled_tunnel_types (supported 0x1ff, or noise)
      return le(rng.chance(0.7) ? rng.int(0, 0x1ff) : rng.edge(32), 4);
    case 9: {
      // RSS contexts: CAP_GET no data; DEL le16 id; ADD / MOD le16 id, 6 reserved, an RSS config.
      const id = le(rng.chance(0.8) ? rng.int(0, 17) : rng.edge(16), 2);
      if (cmd === 0) return rng.chance(0.8) ? [] : [0, 0];
      if (cmd === 3) return id;
      return [...id, 0, 0, 0, 0, 0, 0, ...ctrlData(rng, 4, 1)];
    }
    case 5: // GUEST_OFFLOADS_SET: le64
      return Array.from({ length: 8 }, () => (rng.chance(0.5) ? 0 : rng.int(0, 255)));
    case 6: // NOTF_COAL: TX_SET / RX_SET le32 pair; VQ_SET / VQ_GET le16 vq, le16 reserved, le32 pair
      if (cmd < 2)
        return [...le(rng.edge(32), 4), ...le(rng.chance(0.7) ? rng.int(0, 3000) : rng.edge(32), 4)];
      return [
        ...le(rng.chance(0.8) ? rng.int(0, 9) : rng.edge(16), 2),
        0,
        0,
        ...le(rng.int(0, 8), 4),
        ...le(rng.int(0, 3000), 4),
      ];
    case 8: {
      // STATS_GET: entries of le16 vq, 6 reserved bytes, le64 types (the known bits, or noise)
      const out: number[] = [];
      for (let n = rng.int(0, 4); n > 0; n--) {
        const vq = rng.chance(0.8) ? rng.int(0, 8) : rng.edge(16);
        out.push(...le(vq, 2), 0, 0, 0, 0, 0, 0);
        // Mostly types that fit the queue kind (rx even, tx odd, CVQ in the high word), else noise.
        const lo = rng.chance(0.8)
          ? rng.pick(vq & 1 ? [0x10000, 0x20000, 0x40000, 0x70000] : [1, 2, 4, 7])
          : rng.edge(32);
        const cvq = rng.chance(0.3);
        out.push(...le(cvq ? 0 : lo, 4), ...le(cvq ? 1 : rng.chance(0.9) ? 0 : rng.edge(32), 4));
      }
      return out;
    }
    default:
      return Array.from({ length: rng.length(64) }, () => rng.int(0, 255));
  }
}

/** Admin command-specific data: a legacy offset (+ data for writes), a LIST_USE bitmap, or noise. */
function adminData(rng: Rng, opcode: number): number[] {
  if (opcode === 1)
    return rng.chance(0.7)
      ? [rng.pick([0x7f, 0xff]), rng.pick([0, 0xff]), rng.pick([0, 3]), 0, 0, 0, 0, 0]
      : [rng.int(0, 255), 0, 0, 0, 0, 0, 0, 0];
  // DEV_MODE_SET: resume or invalid flags only; a stopped VF would fail the traffic invariants by design
  // (stop and freeze are tested in devices/virtio-net/vf-migration.test.ts).
  if (opcode === 0x11) return [rng.pick([0, 2, 4, 0x80])];
  if (opcode === 3 || opcode === 5)
    return [rng.chance(0.7) ? rng.pick([0, 4, 8, 12, 14, 16, 18, 19, 20, 22]) : rng.int(0, 255)];
  if (opcode === 2 || opcode === 4) {
    const n = rng.pick([1, 2, 4, 0, 3, 8]);
    return [
      rng.pick([0, 4, 8, 12, 14, 16, 18, 19, 20, 22, rng.int(0, 255)]),
      0,
      0,
      0,
      0,
      0,
      0,
      0,
      ...Array.from({ length: n }, () => rng.int(0, 255)),
    ];
  }
  return Array.from({ length: rng.length(32) }, () => rng.int(0, 255));
}

function generate(rng: Rng): Step {
  const op = rng.weighted({ ctrl: 40, admin: 25, frame: 20, sriov: 4, vfAlive: 2, reopen: 3 });
  switch (op) {
    case 'ctrl': {
      const cls = rng.chance(0.75)
        ? rng.int(0, 5)
        : rng.chance(0.6)
          ? rng.pick([6, 7, 8, 9])
          : rng.int(6, 255);
      // STATS has 2 commands, NOTF_COAL and RSS_CTX 4, HASH_TUNNEL 1: mostly those.
      const top = cls === 8 ? 1 : cls === 6 || cls === 9 ? 3 : cls === 7 ? 0 : 5;
      const cmd = rng.chance(0.85) ? rng.int(0, top) : rng.int(top + 1, 255);
      const layout = rng.weighted({
        one: 10,
        split: 5,
        noAck: 1,
        short: 1,
        bigAck: 2,
        huge: 1,
        result: 3,
      } as Record<Layout, number>);
      return {
        op,
        cls,
        cmd,
        data: ctrlData(rng, cls, cmd),
        layout,
        cut: rng.chance(0.15) ? rng.int(-8, 8) : 0,
      };
    }
    case 'admin': {
      const opcode = rng.chance(0.85) ? rng.int(0, 0x11) : rng.pick([0x12, 0x7fff, 0x8000, 0xffff]);
      return {
        op,
        opcode,
        group: rng.chance(0.9) ? 1 : rng.edge(16),
        member: rng.chance(0.8) ? BigInt(rng.int(0, 5)) : rng.edgeU64(),
        data: adminData(rng, opcode),
        resultLen: rng.pick([0, 1, 8, 8 + 4, 8 + 6, 8 + 64, 8 + 4096, 3]),
        cut: rng.chance(0.1) ? rng.int(0, 24) : -1,
      };
    }
    case 'frame':
      return {
        op,
        dst: rng.weighted({ own: 4, bcast: 2, mcast: 2, other: 2, vlan: 2 }),
        vid: rng.int(0, 4095),
        len: rng.pick([14, 60, 200, 1514]),
        queue: rng.int(0, 3),
      };
    case 'sriov':
      return { op, n: rng.int(0, 4) };
    case 'vfAlive':
      return { op, k: rng.int(0, 3) };
    default:
      return { op: 'reopen' };
  }
}

function describe(s: Step): string {
  switch (s.op) {
    case 'ctrl':
      return `ctrl class ${s.cls} cmd ${s.cmd} data[${s.data.length}${s.cut ? `${s.cut > 0 ? '+' : ''}${s.cut}` : ''}] ${s.layout}: ${Buffer.from(s.data.slice(0, 24)).toString('hex')}`;
    case 'admin':
      return `admin opcode 0x${s.opcode.toString(16)} group ${s.group} member ${s.member} data[${s.data.length}] result ${s.resultLen}${s.cut >= 0 ? ` header cut at ${s.cut}` : ''}: ${Buffer.from(s.data.slice(0, 16)).toString('hex')}`;
    case 'frame':
      return `frame ${s.len} bytes to ${s.dst}${s.dst === 'vlan' ? ` vid ${s.vid}` : ''} on queue ${s.queue}`;
    case 'sriov':
      return `VF Enable with NumVFs=${s.n}`;
    case 'vfAlive':
      return `bring VF ${s.k} up and send a frame`;
    default:
      return s.op;
  }
}

/**
 * Posts a chain (bytes laid out in the scratch area, or existing guest ranges) and kicks; returns the
 * used entry (null: none, or `posted` false when the ring had no room) and the writable segments.
 */
function postRaw(
  st: State,
  index: number,
  readable: (Uint8Array | { addr: number; len: number })[],
  writable: number[],
) {
  const rig = st.rig;
  const q = rig.driver.pci.queues.get(index) as DriverQueue;
  const segs: { addr: number; len: number }[] = [];
  let at = SCRATCH;
  for (const r of readable) {
    if (!(r instanceof Uint8Array)) {
      segs.push(r);
      continue;
    }
    rig.memory.write(at, r);
    segs.push({ addr: at, len: r.length });
    at += r.length;
  }
  const ws = writable.map((len) => {
    const w = { addr: at, len };
    rig.memory.write(at, new Uint8Array(len).fill(0xee));
    at += len;
    return w;
  });
  if (segs.length + ws.length > q.numFree) return { used: null, ws, posted: false };
  q.add(segs, ws);
  rig.driver.pci.kick(index);
  return { used: q.getUsed(), ws, posted: true };
}

function ctrl(st: State, s: Extract<Step, { op: 'ctrl' }>): void {
  const rig = st.rig;
  const d = rig.driver;
  if (!d.has(17)) return; // no control queue negotiated
  let data = Uint8Array.from(s.data);
  if (s.cut < 0) data = data.subarray(0, Math.max(0, data.length + s.cut));
  else if (s.cut > 0) data = Uint8Array.from([...data, ...new Array(s.cut).fill(0xa5)]);
  const cmd = Uint8Array.of(s.cls, s.cmd);
  const full = Uint8Array.from([...cmd, ...data]);
  let readable: (Uint8Array | { addr: number; len: number })[] = [full];
  let writable = [1];
  if (s.layout === 'split') {
    readable = [];
    for (let o = 0; o < full.length; ) {
      const n = Math.max(1, (o * 7 + 3) % 9);
      readable.push(full.subarray(o, o + n));
      o += n;
    }
    writable = [1, 3];
  } else if (s.layout === 'noAck') writable = [];
  else if (s.layout === 'short') readable = [full.subarray(0, 1)];
  else if (s.layout === 'bigAck') writable = [16];
  else if (s.layout === 'result')
    writable = [1, 512]; // the ack, then room for a STATS / VQ_GET result
  else if (s.layout === 'huge') readable = [full, { addr: 0x200000, len: 70_000 }]; // larger than any command
  const wellFormed =
    readable.reduce((n, r) => n + (r instanceof Uint8Array ? r.length : r.len), 0) >= 2 &&
    writable.length > 0;
  const before = guard('stats()', () => rig.dev.stats());
  const { used, ws, posted } = postRaw(st, d.ctrlIndex, readable, writable);
  if (!posted) return;
  const after = guard('stats()', () => rig.dev.stats());
  if (!wellFormed) {
    invariant(
      used === null && (after.status & 0x40) !== 0,
      'a control chain without room for header and ack was not DEVICE_NEEDS_RESET',
    );
    st.counters.ctrlMalformed = (st.counters.ctrlMalformed ?? 0) + 1;
    return;
  }
  invariant(used !== null, 'a well-formed control command got no used entry');
  invariant((after.status & 0x40) === 0, `a well-formed control command set NEEDS_RESET: ${after.lastError}`);
  const ack = rig.memory.readU8(ws[0]!.addr);
  // STATS and NOTF_COAL VQ_GET answer OK with a result after the ack, within the writable part.
  const room = writable.reduce((n, w) => n + w, 0);
  const withResult =
    ack === 0 && (s.cls === 8 || (s.cls === 6 && s.cmd === 3) || (s.cls === 9 && s.cmd === 0));
  invariant(
    used.len === 1 || (withResult && used.len <= room),
    `a control command's used length is ${used.len} (writable ${room})`,
  );
  invariant(ack === 0 || ack === 1, `control ack ${ack} is neither OK nor ERR`);
  invariant(after.ctrlCommands === before.ctrlCommands + 1, 'a control command was not counted');
  st.counters[ack === 0 ? 'ctrlOk' : 'ctrlErr'] = (st.counters[ack === 0 ? 'ctrlOk' : 'ctrlErr'] ?? 0) + 1;
  if (ack === 0 && (s.cls === 6 || s.cls === 7 || s.cls === 8 || s.cls === 9)) {
    const k = s.cls === 6 ? 'coalOk' : s.cls === 7 ? 'hashTunnelOk' : s.cls === 8 ? 'statsOk' : 'rssCtxOk';
    st.counters[k] = (st.counters[k] ?? 0) + 1;
  }
  // RSS context CAP_GET: le16 max_rss_contexts (16) after the ack.
  if (s.cls === 9 && s.cmd === 0 && ack === 0) {
    invariant(used.len === 3, `RSS_CTX CAP_GET used length ${used.len}`);
    const w = ws.length > 1 ? rig.memory.read(ws[1]!.addr, 2) : rig.memory.read(ws[0]!.addr + 1, 2);
    invariant(w[0] === 16 && w[1] === 0, `RSS_CTX CAP_GET answered ${w[0]},${w[1]}`);
  }
  // What accepted commands must have done (exact-size data only).
  if (s.cls === 4 && s.cmd === 0 && data.length === 2) {
    const pairs = data[0]! | (data[1]! << 8);
    const mq = d.has(22);
    if (ack === 0)
      invariant(
        after.queuePairs === pairs,
        `VQ_PAIRS_SET ${pairs} acked OK but ${after.queuePairs} pairs in use`,
      );
    if (!mq || pairs < 1 || pairs > d.maxPairs)
      invariant(ack === 1, `VQ_PAIRS_SET ${pairs} (max ${d.maxPairs}, MQ ${mq}) acked OK`);
    if (ack === 0) d.pairs = pairs;
  }
  if (s.cls === 1 && s.cmd === 1 && data.length === 6 && ack === 0) {
    const want = [...data].map((b) => b.toString(16).padStart(2, '0')).join(':');
    invariant(d.mac() === want, `MAC_ADDR_SET ${want} acked OK but the config MAC reads ${d.mac()}`);
  }
}

function admin(st: State, s: Extract<Step, { op: 'admin' }>): void {
  if (st.aq === null) return;
  const req = new Uint8Array(24 + s.data.length);
  const v = new DataView(req.buffer);
  v.setUint16(0, s.opcode, true);
  v.setUint16(2, s.group, true);
  v.setBigUint64(16, BigInt.asUintN(64, s.member), true);
  req.set(s.data, 24);
  const readable = s.cut >= 0 ? req.subarray(0, s.cut) : req;
  const writable = s.resultLen > 0 ? [s.resultLen] : [];
  if (readable.length === 0 || writable.length === 0) return; // a chain needs both parts; see guest-rings
  const { used, ws, posted } = postRaw(st, st.aq, [readable], writable);
  if (!posted) return;
  invariant(used !== null, `admin opcode 0x${s.opcode.toString(16)}: no used entry`);
  invariant(!st.rig.needsReset(), 'a well-formed admin chain set NEEDS_RESET');
  invariant(used.len <= s.resultLen, `admin used length ${used.len} > the ${s.resultLen}-byte result buffer`);
  if (s.resultLen < 4 || used.len < 4) return;
  const out = st.rig.memory.read(ws[0]!.addr, Math.min(used.len, s.resultLen));
  const status = out[0]! | (out[1]! << 8);
  const qualifier = out[2]! | (out[3]! << 8);
  // VIRTIO 1.4's status table (ENXIO, EBUSY, ENOSPC) and RESOURCE_OBJ_CREATE's EEXIST.
  invariant([0, 6, 11, 12, 16, 17, 22, 28].includes(status), `admin status ${status} is not one 1.4 defines`);
  invariant(qualifier <= 7, `admin status qualifier ${qualifier} is not one §2.12.1 defines`);
  invariant((status === 0) === (qualifier === 0), `admin status ${status} with qualifier ${qualifier}`);
  // A header cut short reads zero-extended (§2.13): opcode and group are what the device saw.
  const seen = new Uint8Array(4);
  seen.set(readable.subarray(0, 4));
  const opcode = seen[0]! | (seen[1]! << 8);
  const group = seen[2]! | (seen[3]! << 8);
  if (opcode === 0 && group === 1 && status === 0 && used.len >= 9)
    // Opcodes 0-6 (legacy access) and 7-0x11 (VIRTIO 1.4 migration commands).
    invariant(
      out[8] === 0xff && (used.len < 10 || out[9] === 0xff) && (used.len < 11 || out[10] === 0x03),
      `LIST_QUERY reports opcodes 0x${Array.from(out.subarray(8, 11), (b) => b.toString(16)).join(',')}, not ff,ff,03`,
    );
  st.counters[status === 0 ? 'adminOk' : 'adminErr'] =
    (st.counters[status === 0 ? 'adminOk' : 'adminErr'] ?? 0) + 1;
}

async function frame(st: State, s: Extract<Step, { op: 'frame' }>): Promise<void> {
  const f = new Uint8Array(s.len);
  const dst =
    s.dst === 'own'
      ? DEV_MAC
      : s.dst === 'bcast'
        ? 'ff:ff:ff:ff:ff:ff'
        : s.dst === 'mcast'
          ? '01:00:5e:00:00:fb'
          : '02:11:22:33:44:55';
  f.set(dst.split(':').map((h) => Number.parseInt(h, 16)));
  f.set([0x52, 0x54, 0x00, 0xab, 0xcd, 0xef, 0x88, 0xb5], 6);
  if (s.dst === 'vlan' && s.len >= 18) f.set([0x81, 0x00, s.vid >> 8, s.vid & 0xff, 0x88, 0xb5], 12);
  await st.rig.checkedInject(st.ctx, f, s.queue);
  if (st.rig.open && !st.rig.needsReset())
    for (let p = 0; p < st.rig.driver.maxPairs; p++) st.rig.driver.receive(p);
}

async function execute(st: State, s: Step): Promise<void> {
  const rig = st.rig;
  // A guest whose device needs a reset resets it (QEMU's guests do): keeps the commands coming.
  if ((s.op === 'ctrl' || s.op === 'admin') && rig.needsReset()) {
    reopen(st);
    st.counters.resetRecoveries = (st.counters.resetRecoveries ?? 0) + 1;
  }
  switch (s.op) {
    case 'ctrl':
      ctrl(st, s);
      return;
    case 'admin':
      admin(st, s);
      return;
    case 'frame':
      await frame(st, s);
      return;
    case 'sriov':
      if (!rig.config.device.sriov) return;
      rig.enableVfs(0, 0);
      if (s.n > 0) rig.enableVfs(s.n);
      st.counters.vfsEnabled = Math.max(st.counters.vfsEnabled ?? 0, rig.dev.vfs.length);
      return;
    case 'vfAlive':
      rig.checkVfAlive(s.k);
      return;
    case 'reopen':
      reopen(st);
      await rig.checkAlive('reopen');
  }
}

/** Reopens the PF driver and sets the admin queue up again (after DRIVER_OK, which the device allows). */
function reopen(st: State): void {
  st.rig.reopen();
  st.aq = null;
  const pci = st.rig.driver.pci;
  if (((pci.features >> 41n) & 1n) === 1n) {
    const aq = pci.readCommon(0x3c, 2);
    try {
      pci.setupQueue(aq, { vector: 0 });
      st.aq = aq;
    } catch (e) {
      throw new InvariantError(`the admin queue ${aq} could not be set up: ${String(e)}`);
    }
  }
}

async function check(st: State): Promise<void> {
  const rig = st.rig;
  await rig.settle(); // worker mode: counters and frames as of a quiet moment
  checkReadOnly(rig.target, st.ro.get(rig.dev)!, 'pf');
  for (const [k, vf] of rig.dev.vfs.entries()) {
    const t = guardedTarget(vf, `vf${k}`);
    let regs = st.ro.get(vf);
    if (!regs) {
      regs = readOnlyRegisters(t, true);
      st.ro.set(vf, regs);
    }
    checkReadOnly(t, regs, `vf${k}`);
  }
  checkTxAccount(rxAccount(rig.dev, rig.backend), 'pf');
  if (rig.needsReset()) st.counters.needsReset = (st.counters.needsReset ?? 0) + 1;
}

export const guestCtrl: FuzzTarget<State, Step> = {
  name: 'guest-ctrl',
  summary: 'control-queue commands of every class, and admin-queue commands on an SR-IOV PF with VFs',
  stepsPerCase: 300,
  setup(rng: Rng, ctx: RunContext) {
    const config = randomRigConfig(rng, { sriov: rng.chance(0.8) });
    config.wanted |= (1n << 41n) | (1n << 37n); // ADMIN_VQ, SR_IOV: the PF's group administration
    chooseWorkers(rng, config, { overSriov: true });
    const rig = new Rig(config);
    const st: State = { rig, ctx, aq: null, ro: new Map(), counters: {} };
    st.ro.set(rig.dev, readOnlyRegisters(rig.target, true));
    reopen(st);
    if (config.device.sriov && rng.chance(0.7)) rig.enableVfs(rng.int(1, config.device.sriov.totalVfs));
    return st;
  },
  generate,
  execute,
  check,
  async finish(st) {
    reopen(st);
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
  describe,
  describeSetup: (st) => describeRigConfig(st.rig.config),
  counters: (st) => ({ ...st.counters, reopens: st.rig.reopens, casesOnWorkers: st.rig.onWorkers ? 1 : 0 }),
};
