// The administration virtqueue driven by a driver-side split queue in synthetic guest memory, with a fake
// SR-IOV group. Requests are built with the spec's literal offsets (VIRTIO 1.3 §2.12.1), not with the
// module's tables, so a wrong table fails here.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { GuestMemory } from '../../lib/memory/guest-memory.js';
import { PciFunction } from '../../pci/pci-function.js';
import { SriovCapability } from '../../pci/sriov.js';
import {
  AdminCommandProcessor,
  type DeviceGroup,
  type LegacyMemberAccess,
  type LegacyNotifyEntry,
} from './admin-commands.js';
import { AdminQueue, type AdminQueueContext, sriovDeviceGroup } from './admin-queue.js';
import { createVirtqueue } from '../queue/create-virtqueue.js';
import { LegacyInterface } from '../pci/legacy.js';
import { SPLIT_AVAIL } from '../queue/split-ring.js';
import { BumpAllocator } from '../testing/bump-allocator.js';
import { SplitDriverQueue } from '../testing/split-driver.js';
import { TransportCore } from '../pci/transport-core.js';
import type { VirtioDevice } from '../virtio-device.js';

const MEM = 0x10000;
const MEM_SIZE = 0x40000;
const AQ = 3; // admin queue index used by the tests

// Status / qualifier numbers written out as the spec's table gives them.
const OK = 0;
const EINVAL = 22;
const Q_INVALID_OPCODE = 2;
const Q_INVALID_FIELD = 3;
const Q_INVALID_GROUP = 4;
const Q_INVALID_MEMBER = 5;

/** A member's legacy register block backed by bytes; logs every piece access. */
class FakeMember implements LegacyMemberAccess {
  readonly regs = new Uint8Array(64);
  readonly log: string[] = [];
  msix = false;
  cfgLength = 12;
  fieldCheck: ((o: number, l: number) => boolean) | undefined;
  readonly registers = {
    readPiece: (o: number, s: 1 | 2 | 4): number => {
      this.log.push(`r${o}/${s}`);
      let v = 0;
      for (let i = 0; i < s; i++) v |= this.regs[o + i]! << (8 * i);
      return v >>> 0;
    },
    writePiece: (o: number, s: 1 | 2 | 4, v: number): void => {
      this.log.push(`w${o}/${s}=${v.toString(16)}`);
      for (let i = 0; i < s; i++) this.regs[o + i] = (v >>> (8 * i)) & 0xff;
    },
  };
  constructor(seed: number) {
    for (let i = 0; i < this.regs.length; i++) this.regs[i] = (seed + i * 7) & 0xff;
  }
  deviceConfigOffset(): number {
    return this.msix ? 24 : 20;
  }
  deviceConfigLength(): number {
    return this.cfgLength;
  }
  get isDeviceConfigField(): ((o: number, l: number) => boolean) | undefined {
    return this.fieldCheck;
  }
}

interface GroupState {
  enabled: boolean;
  count: number;
  members: FakeMember[];
  notify: LegacyNotifyEntry[];
}

function fakeGroup(s: GroupState, opts: { legacy?: boolean; notify?: boolean } = {}): DeviceGroup {
  const g: DeviceGroup = { groupType: 1, exists: () => s.enabled, memberCount: () => s.count };
  if (opts.legacy ?? true) g.legacyMember = (id) => s.members[id - 1] ?? null;
  if ((opts.notify ?? true) && (opts.legacy ?? true)) g.legacyNotifyInfo = () => s.notify;
  return g;
}

function cmd(
  opcode: number,
  groupType: number,
  member: bigint,
  data: Uint8Array = new Uint8Array(0),
): Uint8Array {
  const b = new Uint8Array(24 + data.length);
  const dv = new DataView(b.buffer);
  dv.setUint16(0, opcode, true);
  dv.setUint16(2, groupType, true);
  dv.setBigUint64(16, member, true);
  b.set(data, 24);
  return b;
}

function le64(...words: bigint[]): Uint8Array {
  const b = new Uint8Array(8 * words.length);
  const dv = new DataView(b.buffer);
  for (let i = 0; i < words.length; i++) dv.setBigUint64(8 * i, words[i]!, true);
  return b;
}

/** virtio_admin_cmd_legacy_*_wr_data: offset, reserved[7], data. */
function wrData(offset: number, bytes: number[]): Uint8Array {
  return new Uint8Array([offset, 0, 0, 0, 0, 0, 0, 0, ...bytes]);
}

interface Reply {
  status: number;
  qualifier: number;
  used: number;
  out: Uint8Array;
}

function setup(groups: DeviceGroup[], options: { listCommandsNeedGroup?: boolean } = {}) {
  const bytes = new Uint8Array(MEM_SIZE);
  const mem = new GuestMemory([{ address: MEM, bytes }]);
  const alloc = new BumpAllocator(MEM, MEM + MEM_SIZE);
  const drv = SplitDriverQueue.allocate(mem, alloc, 16, { index: AQ });
  const vq = createVirtqueue(mem, drv.config, false);
  const resets: string[] = [];
  const notified: number[] = [];
  const ctx: AdminQueueContext = {
    memory: mem,
    queue: (i) => (i === AQ ? vq : null),
    notifyQueue: (i) => notified.push(i),
    needsReset: (r) => resets.push(r),
  };
  const aq = new AdminQueue(groups, options);
  /** A writable buffer pre-filled with 0xaa so untouched bytes show. */
  const writable = (len: number) => {
    const addr = alloc.alloc(Math.max(len, 1), 8);
    mem.write(addr, new Uint8Array(len).fill(0xaa));
    return { addr, len };
  };
  const post = (req: Uint8Array | { addr: number; len: number }[], wlen: number | number[]) => {
    const parts = (Array.isArray(wlen) ? wlen : [wlen]).filter((l) => l > 0).map(writable);
    drv.add(Array.isArray(req) ? req : [req], parts);
    return parts;
  };
  const collect = (parts: { addr: number; len: number }[]): Reply => {
    const u = drv.getUsed();
    if (!u) throw new Error('no used entry');
    const out = new Uint8Array(parts.reduce((a, p) => a + p.len, 0));
    let o = 0;
    for (const p of parts) {
      out.set(mem.read(p.addr, p.len), o);
      o += p.len;
    }
    const dv = new DataView(out.buffer);
    return {
      status: out.length >= 2 ? dv.getUint16(0, true) : -1,
      qualifier: out.length >= 4 ? dv.getUint16(2, true) : -1,
      used: u.len,
      out,
    };
  };
  /** One command through the ring: posts it, processes the queue, returns what the device wrote. */
  const send = (req: Uint8Array | { addr: number; len: number }[], wlen: number | number[] = 8): Reply => {
    const parts = post(req, wlen);
    expect(aq.process(ctx, AQ)).toBe(1);
    return collect(parts);
  };
  return { mem, alloc, drv, vq, ctx, aq, resets, notified, send, post, collect, writable };
}

function standard(opts: { legacy?: boolean; notify?: boolean } = {}) {
  const s: GroupState = {
    enabled: true,
    count: 2,
    members: [new FakeMember(0x10), new FakeMember(0x80)],
    notify: [
      { flags: 2, bar: 2, offset: 0x1000n },
      { flags: 1, bar: 4, offset: 0x3002n },
    ],
  };
  return { s, ...setup([fakeGroup(s, opts)]) };
}

/** LIST_QUERY + LIST_USE with everything offered. */
function enableAll(t: ReturnType<typeof standard>): void {
  const q = t.send(cmd(0, 1, 0n), 16);
  const bitmap = new DataView(q.out.buffer).getBigUint64(8, true);
  expect(t.send(cmd(1, 1, 0n, le64(bitmap))).status).toBe(OK);
}

describe('AdminQueue: LIST_QUERY / LIST_USE', () => {
  it('LIST_QUERY answers the supported bitmap, byte for byte, used length 16', () => {
    const t = standard();
    const r = t.send(cmd(0, 1, 0n), 16);
    expect(r.used).toBe(16);
    expect([...r.out]).toEqual([0, 0, 0, 0, 0, 0, 0, 0, 0x7f, 0, 0, 0, 0, 0, 0, 0]);
  });

  it('offers 0-1 only without legacy access, 0-5 without notify info', () => {
    expect([
      ...standard({ legacy: false })
        .send(cmd(0, 1, 0n), 16)
        .out.subarray(8),
    ]).toEqual([3, 0, 0, 0, 0, 0, 0, 0]);
    expect(standard({ notify: false }).send(cmd(0, 1, 0n), 16).out[8]).toBe(0x3f);
  });

  it('writes only its structure into a longer buffer and reports 16', () => {
    const r = standard().send(cmd(0, 1, 0n), 40);
    expect(r.used).toBe(16);
    expect([...r.out.subarray(16)]).toEqual(new Array(24).fill(0xaa));
  });

  it('cuts the result to a short buffer (status only) and reports what it wrote', () => {
    const t = standard();
    const r = t.send(cmd(0, 1, 0n), 4);
    expect(r.used).toBe(4);
    expect([...r.out]).toEqual([0, 0, 0, 0]);
    const r2 = t.send(cmd(0, 1, 0n), 12);
    expect(r2.used).toBe(12);
    expect([...r2.out]).toEqual([0, 0, 0, 0, 0, 0, 0, 0, 0x7f, 0, 0, 0]);
  });

  it('completes a chain without a writable part with used length 0', () => {
    const t = standard();
    const r = t.send(cmd(0, 1, 0n), 0);
    expect(r.used).toBe(0);
    expect(t.resets).toEqual([]);
  });

  it('treats a short device-readable part as zero-extended (opcode 0 group 0 -> INVALID_GROUP)', () => {
    const t = standard();
    // 2 bytes: opcode LIST_QUERY, group_type missing = 0 -> unsupported group
    const r = t.send(new Uint8Array([0, 0]), 8);
    expect([r.status, r.qualifier, r.used]).toEqual([EINVAL, Q_INVALID_GROUP, 8]);
    // 4 bytes: opcode 0, group 1, member id missing: LIST_QUERY does not use it
    expect(t.send(new Uint8Array([0, 0, 1, 0]), 16).out[8]).toBe(0x7f);
  });

  it('LIST_USE accepts a subset, then only that subset runs', () => {
    const t = standard();
    const r = t.send(cmd(1, 1, 0n, le64(0b1011n)));
    expect([r.status, r.qualifier, r.used]).toEqual([OK, 0, 8]);
    expect([...r.out]).toEqual([0, 0, 0, 0, 0, 0, 0, 0]);
    expect(t.aq.processor.commandsInUse(1)).toBe(0b1011n);
    // opcode 3 (LEGACY_COMMON_CFG_READ) is in the set; opcode 2 is not
    expect(t.send(cmd(3, 1, 1n, new Uint8Array([0])), 12).status).toBe(OK);
    const w = t.send(cmd(2, 1, 1n, wrData(4, [1, 2, 3, 4])));
    expect([w.status, w.qualifier]).toEqual([EINVAL, Q_INVALID_OPCODE]);
    expect(t.s.members[0]!.log).toEqual(['r0/4']);
  });

  it('LIST_USE with an unsupported bit fails INVALID_FIELD and keeps the old set', () => {
    const t = standard({ notify: false });
    for (const bad of [le64(0x7fn), le64(1n << 63n), le64(3n, 1n)]) {
      const r = t.send(cmd(1, 1, 0n, bad));
      expect([r.status, r.qualifier, r.used]).toEqual([EINVAL, Q_INVALID_FIELD, 8]);
      expect(t.aq.processor.commandsInUse(1)).toBe(3n);
    }
    // trailing all-zero words are allowed (§2.12.1)
    expect(t.send(cmd(1, 1, 0n, le64(0x3fn, 0n, 0n))).status).toBe(OK);
    expect(t.aq.processor.commandsInUse(1)).toBe(0x3fn);
  });

  it('LIST_USE without bits 0/1 blocks LIST_QUERY and LIST_USE until reset', () => {
    const t = standard();
    expect(t.send(cmd(1, 1, 0n, le64(0b100n))).status).toBe(OK);
    expect(t.send(cmd(0, 1, 0n), 16).qualifier).toBe(Q_INVALID_OPCODE);
    expect(t.send(cmd(1, 1, 0n, le64(3n))).qualifier).toBe(Q_INVALID_OPCODE);
    t.aq.reset();
    expect(t.send(cmd(0, 1, 0n), 16).status).toBe(OK);
  });

  it('a LIST_USE without data is an empty list (missing fields are zero)', () => {
    const t = standard();
    expect(t.send(cmd(1, 1, 0n)).status).toBe(OK);
    expect(t.aq.processor.commandsInUse(1)).toBe(0n);
  });

  it('LIST_QUERY / LIST_USE work while VF Enable is clear (Linux probes before enabling VFs)', () => {
    const t = standard();
    t.s.enabled = false;
    enableAll(t);
    expect(t.aq.processor.commandsInUse(1)).toBe(0x7fn);
  });

  it('with listCommandsNeedGroup they fail INVALID_GROUP while the group does not exist', () => {
    const s: GroupState = { enabled: false, count: 0, members: [], notify: [] };
    const t = setup([fakeGroup(s)], { listCommandsNeedGroup: true });
    const r = t.send(cmd(0, 1, 0n), 16);
    expect([r.status, r.qualifier, r.used]).toEqual([EINVAL, Q_INVALID_GROUP, 8]);
    s.enabled = true;
    expect(t.send(cmd(0, 1, 0n), 16).status).toBe(OK);
  });
});

describe('AdminQueue: validation order and error answers', () => {
  it('unsupported group types fail INVALID_GROUP whatever the opcode', () => {
    const t = standard();
    for (const [op, g] of [
      [0, 0],
      [1, 2],
      [0xffff, 0xffff],
      [3, 0x8001],
    ] as const) {
      const r = t.send(cmd(op, g, 1n), 16);
      expect([r.status, r.qualifier, r.used]).toEqual([EINVAL, Q_INVALID_GROUP, 8]);
      expect([...r.out.subarray(4, 8)]).toEqual([0, 0, 0, 0]); // reserved2 zeroed
      expect([...r.out.subarray(8)]).toEqual(new Array(8).fill(0xaa)); // no result written
    }
  });

  it('unknown and reserved opcodes fail INVALID_OPCODE, before the member id is looked at', () => {
    const t = standard();
    enableAll(t);
    for (const op of [7, 0x11, 63, 64, 0x7fff, 0x8000, 0xffff]) {
      const r = t.send(cmd(op, 1, 99n));
      expect([r.status, r.qualifier]).toEqual([EINVAL, Q_INVALID_OPCODE]);
    }
  });

  it('supported opcodes not enabled by LIST_USE fail INVALID_OPCODE (after reset: only 0 and 1)', () => {
    const t = standard();
    for (const op of [2, 3, 4, 5, 6]) {
      expect(t.send(cmd(op, 1, 1n, wrData(0, [0])), 12).qualifier).toBe(Q_INVALID_OPCODE);
    }
    expect(t.s.members[0]!.log).toEqual([]);
  });

  it('member commands fail INVALID_GROUP while VF Enable is clear, even with a bad member id', () => {
    const t = standard();
    enableAll(t);
    t.s.enabled = false;
    for (const id of [1n, 0n, 5n]) {
      const r = t.send(cmd(3, 1, id, new Uint8Array([0])), 12);
      expect([r.status, r.qualifier, r.used]).toEqual([EINVAL, Q_INVALID_GROUP, 8]);
    }
  });

  it('member ids outside 1..NumVFs fail INVALID_MEMBER', () => {
    const t = standard();
    enableAll(t);
    for (const id of [0n, 3n, 0x1_0000_0001n, 0xffff_ffff_ffff_ffffn]) {
      for (const op of [2, 3, 4, 5, 6]) {
        const r = t.send(cmd(op, 1, id, wrData(0, [0])), 12);
        expect([r.status, r.qualifier, r.used]).toEqual([EINVAL, Q_INVALID_MEMBER, 8]);
      }
    }
    t.s.count = 1; // NumVFs shrank: member 2 is gone
    expect(t.send(cmd(3, 1, 2n, new Uint8Array([0])), 12).qualifier).toBe(Q_INVALID_MEMBER);
    t.s.count = 3; // a member the owner cannot reach (legacyMember gives null)
    expect(t.send(cmd(3, 1, 3n, new Uint8Array([0])), 12).qualifier).toBe(Q_INVALID_MEMBER);
    expect(t.s.members.map((m) => m.log.length)).toEqual([0, 0]);
  });

  it('no side effects on failure; the EINVAL reply is 8 bytes exactly', () => {
    const t = standard();
    enableAll(t);
    const before = [...t.s.members[0]!.regs];
    const r = t.send(cmd(2, 1, 1n, wrData(12, [1, 2, 3, 4])), 16); // spans queue_size + queue_select
    expect([r.status, r.qualifier, r.used]).toEqual([EINVAL, Q_INVALID_FIELD, 8]);
    expect([...r.out]).toEqual([22, 0, 3, 0, 0, 0, 0, 0, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa]);
    expect([...t.s.members[0]!.regs]).toEqual(before);
    expect(t.s.members[0]!.log).toEqual([]);
    expect(t.aq.stats).toEqual({ commands: 3, errors: 1, guestErrors: 0 });
  });
});

describe('AdminQueue: legacy register commands', () => {
  it('LEGACY_COMMON_CFG_WRITE does one little-endian piece per field access', () => {
    const t = standard();
    enableAll(t);
    const m = t.s.members[1]!;
    const cases: [number, number[], string[]][] = [
      [4, [0x78, 0x56, 0x34, 0x12], ['w4/4=12345678']], // driver features
      [14, [0x02, 0x00], ['w14/2=2']], // queue_select
      [16, [0x01, 0x00], ['w16/2=1']], // queue notify
      [18, [0x07], ['w18/1=7']], // status
      [1, [0xaa, 0xbb], ['w1/1=aa', 'w2/1=bb']], // inside device features: cut as a CPU would
      [8, [1, 2, 3], ['w8/2=201', 'w10/1=3']],
    ];
    for (const [off, data, log] of cases) {
      m.log.length = 0;
      const r = t.send(cmd(2, 1, 2n, wrData(off, data)));
      expect([r.status, r.used]).toEqual([OK, 8]);
      expect(m.log).toEqual(log);
    }
    expect(t.s.members[0]!.log).toEqual([]);
  });

  it('LEGACY_COMMON_CFG_READ returns as many bytes as the result buffer holds', () => {
    const t = standard();
    enableAll(t);
    const m = t.s.members[0]!;
    m.regs.set([0x11, 0x22, 0x33, 0x44], 0);
    const r = t.send(cmd(3, 1, 1n, new Uint8Array([0])), 12); // Linux: 1-byte data, 8 + size result
    expect([r.status, r.used]).toEqual([OK, 12]);
    expect([...r.out]).toEqual([0, 0, 0, 0, 0, 0, 0, 0, 0x11, 0x22, 0x33, 0x44]);
    expect(m.log).toEqual(['r0/4']);
    m.regs.set([0x5a], 19);
    const isr = t.send(cmd(3, 1, 1n, new Uint8Array([19, 0, 0, 0, 0, 0, 0, 0])), 9);
    expect([isr.used, isr.out[8]]).toEqual([9, 0x5a]);
    // a readable part of exactly 24 bytes: offset missing = 0
    m.log.length = 0;
    expect(t.send(cmd(3, 1, 1n), 10).out.subarray(8)).toEqual(new Uint8Array([0x11, 0x22]));
    expect(m.log).toEqual(['r0/2']);
  });

  it('rejects empty, cross-field and out-of-range common accesses (INVALID_FIELD, no access)', () => {
    const t = standard();
    enableAll(t);
    const m = t.s.members[0]!;
    const bad: [number, number, number][] = [
      // [opcode, offset, length]
      [3, 0, 0], // result buffer of 8: zero-length read
      [3, 2, 4], // device features [0,4) + driver features
      [3, 18, 2], // status + ISR
      [3, 20, 2], // config vector without MSI-X: that is device config
      [3, 255, 1],
      [2, 0, 0], // write without data
      [2, 19, 2],
      [2, 22, 2],
    ];
    for (const [op, off, len] of bad) {
      const r =
        op === 3
          ? t.send(cmd(3, 1, 1n, new Uint8Array([off])), 8 + len)
          : t.send(cmd(2, 1, 1n, wrData(off, new Array(len).fill(1))));
      expect([r.status, r.qualifier, r.used], `op ${op} off ${off} len ${len}`).toEqual([
        EINVAL,
        Q_INVALID_FIELD,
        8,
      ]);
    }
    expect(m.log).toEqual([]);
    // with MSI-X enabled the two vector fields exist
    m.msix = true;
    expect(t.send(cmd(2, 1, 1n, wrData(20, [3, 0]))).status).toBe(OK);
    expect(t.send(cmd(3, 1, 1n, new Uint8Array([22])), 10).status).toBe(OK);
    expect(m.log).toEqual(['w20/2=3', 'r22/2']);
  });

  it('LEGACY_DEV_CFG_* address the device config after the common part (20, or 24 with MSI-X)', () => {
    const t = standard();
    enableAll(t);
    const m = t.s.members[0]!;
    m.regs.set([0x52, 0x54, 0x00, 0x12, 0x34, 0x56], 20);
    const r = t.send(cmd(5, 1, 1n, new Uint8Array([0])), 14); // the 6-byte MAC
    expect([r.status, r.used]).toEqual([OK, 14]);
    expect([...r.out.subarray(8)]).toEqual([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
    expect(m.log).toEqual(['r20/4', 'r24/2']);
    m.log.length = 0;
    m.msix = true;
    expect(t.send(cmd(4, 1, 1n, wrData(2, [0xee, 0xff]))).status).toBe(OK);
    expect(m.log).toEqual(['w26/2=ffee']);
    expect([...m.regs.subarray(26, 28)]).toEqual([0xee, 0xff]);
  });

  it('rejects device config accesses past its length or across a field', () => {
    const t = standard();
    enableAll(t);
    const m = t.s.members[0]!;
    m.cfgLength = 8;
    expect(t.send(cmd(5, 1, 1n, new Uint8Array([6])), 11).qualifier).toBe(Q_INVALID_FIELD); // 6..9
    expect(t.send(cmd(4, 1, 1n, wrData(8, [1]))).qualifier).toBe(Q_INVALID_FIELD);
    expect(t.send(cmd(5, 1, 1n, new Uint8Array([4])), 8 + 4097).qualifier).toBe(Q_INVALID_FIELD);
    m.fieldCheck = (o, l) => (o === 0 && l <= 6) || (o === 6 && l <= 2);
    expect(t.send(cmd(5, 1, 1n, new Uint8Array([4])), 12).qualifier).toBe(Q_INVALID_FIELD); // MAC + status
    expect(t.send(cmd(5, 1, 1n, new Uint8Array([6])), 10).status).toBe(OK);
    expect(m.log).toEqual(['r26/2']);
  });

  it('LEGACY_NOTIFY_INFO returns 4 entries of 16 bytes, the last one the end marker', () => {
    const t = standard();
    enableAll(t);
    t.s.notify = [
      { flags: 2, bar: 2, offset: 0x1000n },
      { flags: 1, bar: 4, offset: 0x3002n },
      { flags: 2, bar: 5, offset: 0x1_0000_0004n },
      { flags: 1, bar: 1, offset: 0x10n }, // a 4th valid entry cannot be reported
    ];
    const r = t.send(cmd(6, 1, 2n), 8 + 64);
    expect([r.status, r.used]).toEqual([OK, 72]);
    const e = (i: number) => [...r.out.subarray(8 + 16 * i, 8 + 16 * (i + 1))];
    expect(e(0)).toEqual([2, 2, 0, 0, 0, 0, 0, 0, 0x00, 0x10, 0, 0, 0, 0, 0, 0]);
    expect(e(1)).toEqual([1, 4, 0, 0, 0, 0, 0, 0, 0x02, 0x30, 0, 0, 0, 0, 0, 0]);
    expect(e(2)).toEqual([2, 5, 0, 0, 0, 0, 0, 0, 0x04, 0, 0, 0, 1, 0, 0, 0]);
    expect(e(3)).toEqual(new Array(16).fill(0));
    t.s.notify = [];
    expect([...t.send(cmd(6, 1, 1n), 8 + 64).out.subarray(8)]).toEqual(new Array(64).fill(0));
    const short = t.send(cmd(6, 1, 1n), 8 + 20);
    expect(short.used).toBe(28);
  });

  it('LEGACY_NOTIFY_INFO is not offered without notify info (LIST_USE with it fails)', () => {
    const t = standard({ notify: false });
    const r = t.send(cmd(1, 1, 0n, le64(0x7fn)));
    expect(r.qualifier).toBe(Q_INVALID_FIELD);
    expect(t.send(cmd(1, 1, 0n, le64(0x3fn))).status).toBe(OK);
    expect(t.send(cmd(6, 1, 1n), 72).qualifier).toBe(Q_INVALID_OPCODE);
  });
});

describe('AdminQueue: ring handling', () => {
  it('processes several commands in order, notifies once, and reports exact used lengths', () => {
    const t = standard();
    const a = t.post(cmd(0, 1, 0n), 16);
    const b = t.post(cmd(1, 1, 0n, le64(0x7fn)), 8);
    const c = t.post(cmd(3, 1, 1n, new Uint8Array([0])), 10);
    expect(t.aq.process(t.ctx, AQ)).toBe(3);
    expect(t.notified).toEqual([AQ]);
    const ra = t.collect(a);
    const rb = t.collect(b);
    const rc = t.collect(c);
    expect([ra.used, rb.used, rc.used]).toEqual([16, 8, 10]);
    expect(rc.status).toBe(OK); // LIST_USE before it took effect first
  });

  it('does not notify when the driver suppressed interrupts', () => {
    const t = standard();
    t.drv.disableInterrupts();
    t.post(cmd(0, 1, 0n), 16);
    expect(t.aq.process(t.ctx, AQ)).toBe(1);
    expect(t.notified).toEqual([]);
  });

  it('reads a header split across descriptors and scatters the result across several', () => {
    const t = standard();
    enableAll(t);
    t.s.members[0]!.regs.set([1, 2, 3, 4, 5, 6], 20);
    const req = cmd(5, 1, 1n, new Uint8Array([0]));
    const pieces = [req.subarray(0, 3), req.subarray(3, 17), req.subarray(17)].map((p) => {
      const addr = t.alloc.alloc(p.length, 1);
      t.mem.write(addr, p);
      return { addr, len: p.length };
    });
    const r = t.send(pieces, [3, 6, 5]);
    expect([r.status, r.used]).toEqual([OK, 14]);
    expect([...r.out.subarray(8)]).toEqual([1, 2, 3, 4, 5, 6]);
  });

  it('works through an indirect table', () => {
    const t = standard();
    const parts = [t.writable(16)];
    t.drv.add([cmd(0, 1, 0n)], parts, { indirect: true });
    expect(t.aq.process(t.ctx, AQ)).toBe(1);
    expect(t.collect(parts).out[8]).toBe(0x7f);
  });

  it('a buffer outside guest memory raises NEEDS_RESET instead of throwing', () => {
    const t = standard();
    t.drv.add([{ addr: 0x9000_0000, len: 32 }], [{ addr: MEM + 0x100, len: 8 }]);
    expect(() => t.aq.process(t.ctx, AQ)).not.toThrow();
    expect(t.resets.length).toBe(1);
    expect(t.aq.stats.guestErrors).toBe(1);
  });

  it('a garbage head index raises NEEDS_RESET', () => {
    const t = standard();
    t.post(cmd(0, 1, 0n), 16);
    t.mem.writeU16(t.drv.config.driverAddr + SPLIT_AVAIL.ring, 0x7777);
    expect(t.aq.process(t.ctx, AQ)).toBe(0);
    expect(t.resets[0]).toMatch(/admin queue 3/);
  });

  it('a queue the transport has not enabled is ignored', () => {
    const t = standard();
    expect(t.aq.process(t.ctx, AQ + 1)).toBe(0);
  });

  it('snapshot/restore keeps the LIST_USE set; reset forgets it', () => {
    const t = standard();
    t.send(cmd(1, 1, 0n, le64(0x1bn)));
    const snap = t.aq.snapshot();
    expect(snap).toEqual({ '1': '27' });
    const t2 = standard();
    t2.aq.restore(JSON.parse(JSON.stringify(snap)));
    expect(t2.aq.processor.commandsInUse(1)).toBe(0x1bn);
    t2.aq.restore({ '1': '255', '9': '3', x: 'junk' }); // masked to what is supported
    expect(t2.aq.processor.commandsInUse(1)).toBe(0x7fn);
    t2.aq.reset();
    expect(t2.aq.processor.commandsInUse(1)).toBe(3n);
  });

  it('rejects bad group sets at construction', () => {
    const g = fakeGroup({ enabled: true, count: 0, members: [], notify: [] });
    expect(() => new AdminCommandProcessor([g, g])).toThrow(RangeError);
    expect(() => new AdminCommandProcessor([{ ...g, groupType: 0x10000 }])).toThrow(RangeError);
    const noLegacy: DeviceGroup = {
      groupType: 1,
      exists: () => true,
      memberCount: () => 0,
      legacyNotifyInfo: () => [],
    };
    expect(() => new AdminCommandProcessor([noLegacy])).toThrow(RangeError);
  });
});

describe('AdminQueue: garbage commands (fast-check)', () => {
  it('never throws; answers EINVAL or OK with a valid qualifier; used length within the buffer', () => {
    const opcode = fc.oneof(fc.integer({ min: 0, max: 7 }), fc.integer({ min: 0, max: 0xffff }));
    const group = fc.oneof(fc.constant(1), fc.integer({ min: 0, max: 0xffff }));
    const member = fc.oneof(fc.bigInt({ min: 0n, max: 4n }), fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }));
    const command = fc.record({
      opcode,
      group,
      member,
      data: fc.uint8Array({ maxLength: 80 }),
      truncate: fc.option(fc.integer({ min: 0, max: 30 })),
      writable: fc.oneof(fc.integer({ min: 0, max: 24 }), fc.integer({ min: 0, max: 5000 })),
    });
    fc.assert(
      fc.property(fc.array(command, { minLength: 1, maxLength: 12 }), fc.boolean(), (cmds, enabled) => {
        const t = standard();
        t.s.enabled = enabled;
        for (const c of cmds) {
          let req = cmd(c.opcode, c.group, c.member, c.data);
          if (c.truncate !== null) req = req.subarray(0, Math.max(1, c.truncate));
          const parts = t.post(req, c.writable);
          expect(t.aq.process(t.ctx, AQ)).toBe(1);
          const r = t.collect(parts);
          expect(r.used).toBeLessThanOrEqual(c.writable);
          if (c.writable >= 4) {
            expect([OK, EINVAL]).toContain(r.status);
            if (r.status === OK) expect(r.qualifier).toBe(0);
            else
              expect([Q_INVALID_OPCODE, Q_INVALID_FIELD, Q_INVALID_GROUP, Q_INVALID_MEMBER]).toContain(
                r.qualifier,
              );
          }
          const inUse = t.aq.processor.commandsInUse(1)!;
          expect(inUse & ~0x7fn).toBe(0n);
        }
        expect(t.resets).toEqual([]);
        // every register access stayed inside the legacy block of an existing member
        for (const m of t.s.members) {
          for (const l of m.log) {
            const [, o, s] = /^[rw](\d+)\/(\d)/.exec(l)!;
            expect(Number(o) + Number(s)).toBeLessThanOrEqual(24 + m.cfgLength);
          }
        }
      }),
      { numRuns: 300 },
    );
  });
});

describe('AdminQueue with the real transport pieces', () => {
  /** A two-queue device with 8 bytes of config, for the legacy block of a member. */
  function miniDevice(): VirtioDevice & { cfg: Uint8Array } {
    const cfg = new Uint8Array([0x52, 0x54, 0, 0x12, 0x34, 0x56, 1, 0]);
    return {
      cfg,
      deviceId: 1,
      deviceFeatures: () => (1n << 5n) | (1n << 16n) | (1n << 32n),
      validateFeatures: () => null,
      numQueues: () => 2,
      maxQueueSize: () => 256,
      configLength: () => 8,
      readConfig: (o, s) => {
        let v = 0;
        for (let i = 0; i < s; i++) v |= (cfg[o + i] ?? 0xff) << (8 * i);
        return v >>> 0;
      },
      writeConfig: () => {},
      activate: () => {},
      queueNotify: () => {},
      reset: () => {},
    };
  }

  it("serves legacy commands through virtio/pci/legacy.ts's LegacyInterface", () => {
    const dev = miniDevice();
    const mem = new GuestMemory([{ address: 0, bytes: new Uint8Array(0x1000) }]);
    const core = new TransportCore(dev, mem, dev.deviceFeatures(), { msixVectors: 3, interrupt: () => {} });
    const kicks: number[] = [];
    const legacy = new LegacyInterface(core, {
      msixEnabled: () => false,
      isrRead: () => 0,
      kick: (q) => kicks.push(q),
      readConfig: (o, s) => dev.readConfig(o, s),
      writeConfig: (o, s, v) => dev.writeConfig(o, s, v),
    });
    const member: LegacyMemberAccess = {
      registers: legacy,
      deviceConfigOffset: () => 20,
      deviceConfigLength: () => dev.configLength(0n),
    };
    const s: GroupState = { enabled: true, count: 1, members: [], notify: [] };
    const group: DeviceGroup = {
      ...fakeGroup(s, { notify: false }),
      legacyMember: (id) => (id === 1 ? member : null),
    };
    const t = setup([group]);
    expect(t.send(cmd(1, 1, 0n, le64(0x3fn))).status).toBe(OK);
    // host features bits 0-31 (MAC, STATUS; VERSION_1 is invisible to a legacy driver)
    expect([...t.send(cmd(3, 1, 1n, new Uint8Array([0])), 12).out.subarray(8)]).toEqual([0x20, 0, 1, 0]);
    // guest features, queue select + queue_num, status, notify
    expect(t.send(cmd(2, 1, 1n, wrData(4, [0x20, 0, 0, 0]))).status).toBe(OK);
    expect(core.driverFeatures).toBe(1n << 5n);
    expect(t.send(cmd(2, 1, 1n, wrData(14, [1, 0]))).status).toBe(OK);
    expect([...t.send(cmd(3, 1, 1n, new Uint8Array([12])), 10).out.subarray(8)]).toEqual([0, 1]); // 256
    expect(t.send(cmd(2, 1, 1n, wrData(18, [3]))).status).toBe(OK);
    expect(core.status).toBe(3);
    expect(t.send(cmd(2, 1, 1n, wrData(16, [1, 0]))).status).toBe(OK);
    expect(kicks).toEqual([1]);
    // device config: the MAC
    expect([...t.send(cmd(5, 1, 1n, new Uint8Array([0])), 14).out.subarray(8)]).toEqual([
      0x52, 0x54, 0, 0x12, 0x34, 0x56,
    ]);
  });

  it('sriovDeviceGroup follows VF Enable and the VFs that exist', () => {
    const base = {
      vendorId: 0x1af4,
      deviceId: 0x1041,
      revision: 1,
      classCode: 0x020000,
      subsystemVendorId: 0x1af4,
      subsystemId: 0x1100,
      interruptPin: 1,
      express: true,
    };
    const pf = new PciFunction({ ...base, routingId: 0x0100 });
    const sriov = new SriovCapability(
      pf,
      { offset: 0x100, totalVfs: 2, vfDeviceId: 0x1041, firstVfOffset: 1, vfStride: 1, vfBars: [] },
      {
        createVf: (_i, rid) => new PciFunction({ ...base, vf: true, routingId: rid }),
        destroyVf: () => {},
      },
    );
    const members = [new FakeMember(1), new FakeMember(2)];
    const group = sriovDeviceGroup(sriov, { legacyMember: (vf) => members[vf - 1] ?? null });
    const t = setup([group]);
    expect(t.send(cmd(0, 1, 0n), 16).out[8]).toBe(0x3f);
    expect(t.send(cmd(1, 1, 0n, le64(0x3fn))).status).toBe(OK);
    expect(t.send(cmd(3, 1, 1n, new Uint8Array([0])), 9).qualifier).toBe(Q_INVALID_GROUP);
    pf.configWrite(0x110, 2, 2); // NumVFs
    pf.configWrite(0x108, 2, 0x0009); // VF Enable + VF MSE
    expect(t.send(cmd(3, 1, 2n, new Uint8Array([0])), 9).status).toBe(OK);
    expect(t.send(cmd(3, 1, 3n, new Uint8Array([0])), 9).qualifier).toBe(Q_INVALID_MEMBER);
    pf.configWrite(0x108, 2, 0);
    expect(t.send(cmd(3, 1, 1n, new Uint8Array([0])), 9).qualifier).toBe(Q_INVALID_GROUP);
    // NumVFs > TotalVFs: VF Enable set (QEMU 7.2 model) but no members
    pf.configWrite(0x110, 2, 3);
    pf.configWrite(0x108, 2, 0x0001);
    expect(t.send(cmd(3, 1, 1n, new Uint8Array([0])), 9).qualifier).toBe(Q_INVALID_MEMBER);
    expect(members[0]!.log).toEqual([]);
    expect(members[1]!.log).toEqual(['r0/1']);
  });
});
