// VIRTIO 1.4 capability, resource-object, device-parts and mode commands (admin-cmds-*.tex) through
// AdminCommandProcessor, byte for byte: every command's happy path and each error path's status and
// qualifier, and that a failed command changes nothing.
import { describe, expect, it } from 'vitest';
import type { DeviceMode } from '../virtio-device.js';
import { AdminCommandProcessor, type DeviceGroup } from './admin-commands.js';
import { type DevicePart, decodeParts, encodeParts, partsSize, selector } from './device-parts.js';
import type { MigrationMember } from './migration-commands.js';

const OK = 0;
const ENXIO = 6;
const ENOMEM = 12;
const EBUSY = 16;
const EEXIST = 17;
const EINVAL = 22;
const ENOSPC = 28;
const Q = {
  OK: 0,
  INVALID_COMMAND: 1,
  INVALID_OPCODE: 2,
  INVALID_FIELD: 3,
  INVALID_GROUP: 4,
  INVALID_MEMBER: 5,
  NORESOURCE: 6,
};

class FakeMember implements MigrationMember {
  m: DeviceMode = 'active';
  parts: DevicePart[] = [
    { type: 0x100, flags: 1, selector: new Uint8Array(8), value: Uint8Array.of(1, 2, 3, 4, 5, 6, 7, 8) },
    { type: 0x103, flags: 0, selector: new Uint8Array(8), value: Uint8Array.of(0x0f) },
    { type: 0x104, flags: 0, selector: selector(1, 2), value: new Uint8Array(32).fill(0xab) },
    { type: 0x5ff, flags: 0, selector: new Uint8Array(8), value: new TextEncoder().encode('{"x":1}') },
  ];
  set: DevicePart[][] = [];
  refuse: string | null = null;
  mode(): DeviceMode {
    return this.m;
  }
  setMode(m: DeviceMode): void {
    this.m = m;
  }
  getParts(): DevicePart[] {
    return this.parts;
  }
  setParts(parts: readonly DevicePart[]): string | null {
    if (this.refuse) return this.refuse;
    this.set.push([...parts]);
    return null;
  }
}

function rig(vfs = 2) {
  const members = Array.from({ length: vfs }, () => new FakeMember());
  let enabled = true;
  const group: DeviceGroup = {
    groupType: 1,
    exists: () => enabled,
    memberCount: () => members.length,
    migrationMember: (id) => members[id - 1] ?? null,
  };
  const p = new AdminCommandProcessor([group]);
  const run = (
    opcode: number,
    groupType: number,
    member: number,
    data: number[] | Uint8Array = [],
    writable = 8 + 4096,
  ) => {
    const req = new Uint8Array(24 + data.length);
    const dv = new DataView(req.buffer);
    dv.setUint16(0, opcode, true);
    dv.setUint16(2, groupType, true);
    dv.setBigUint64(16, BigInt(member), true);
    req.set(data, 24);
    const out = new Uint8Array(8 + 4096);
    const o = p.execute(req, writable, out);
    const bytes = (o.bytes ?? out).slice(0, o.length);
    return { ...o, header: [...bytes.subarray(0, 8)], result: [...bytes.subarray(8)] };
  };
  const le32 = (v: number) => [v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, v >>> 24];
  const obj = (id: number, extra: number[] = []) => [0, 0, 0, 0, ...le32(id), ...extra];
  const create = (vf: number, id: number, purpose: number) =>
    run(0xa, 1, vf, obj(id, [0, 0, 0, 0, 0, 0, 0, 0, purpose, 0, 0, 0, 0, 0, 0, 0]));
  const capSet = (get: number, set: number) => run(0x9, 0, 0, [0, 0, 0, 0, 0, 0, 0, 0, get, set]);
  // What Linux does first: LIST_USE of the SR-IOV group (VIRTIO_ADMIN_CMD_BITMAP, no LIST bits).
  const listUse = (bits: bigint) => {
    const d = new Uint8Array(8);
    new DataView(d.buffer).setBigUint64(0, bits, true);
    return run(0x1, 1, 0, d);
  };
  return { p, run, members, obj, create, capSet, listUse, setEnabled: (e: boolean) => (enabled = e) };
}

const err = (status: number, q: number) => ({ status, qualifier: q, length: 8 });

describe('VIRTIO 1.4 migration admin commands', () => {
  it('LIST_QUERY: SR-IOV group lists 0-1 and 7-0x11; the self group 0, 1, 7, 8, 9', () => {
    const r = rig();
    expect(r.run(0x0, 1, 0, [], 16).result).toEqual([0x83, 0xff, 0x03, 0, 0, 0, 0, 0]);
    expect(r.run(0x0, 0, 0, [], 16).result).toEqual([0x83, 0x03, 0, 0, 0, 0, 0, 0]);
    expect(r.run(0x0, 2, 0)).toMatchObject(err(EINVAL, Q.INVALID_GROUP));
  });

  it("capability commands: not in use before LIST_USE; enabled by either group's LIST_USE; self group only", () => {
    const r = rig();
    expect(r.run(0x7, 0, 0)).toMatchObject(err(EINVAL, Q.INVALID_OPCODE));
    expect(r.listUse(0x3e7fcn & 0x3ff80n)).toMatchObject({ status: OK });
    const q = r.run(0x7, 0, 0, [], 8);
    expect(q).toMatchObject({ status: OK, qualifier: 0, length: 16 });
    expect(q.header).toEqual([0, 0, 0, 0, 0, 0, 0, 0]);
    expect(q.result).toEqual([1, 0, 0, 0, 0, 0, 0, 0]);
    // For the SR-IOV group they are listed (Linux reads its command set there) but refused.
    expect(r.run(0x7, 1, 0)).toMatchObject(err(EINVAL, Q.INVALID_GROUP));
    expect(r.run(0x8, 1, 0)).toMatchObject(err(EINVAL, Q.INVALID_GROUP));
    // The self group's own LIST_USE works as well (after a reset).
    r.p.reset();
    expect(r.run(0x1, 0, 0, [0x83, 0x03, 0, 0, 0, 0, 0, 0])).toMatchObject({ status: OK, length: 8 });
    expect(r.run(0x8, 0, 0, [0, 0, 0, 0, 0, 0, 0, 0]).result).toEqual([8, 8]);
    expect(r.run(0x1, 0, 0, [0x80 | 0x3, 0x04, 0, 0, 0, 0, 0, 0])).toMatchObject(
      err(EINVAL, Q.INVALID_FIELD),
    );
  });

  it('DEVICE_CAP_GET / DRIVER_CAP_SET: limits, unknown id ENXIO, too large EINVAL, EBUSY while objects exist', () => {
    const r = rig();
    r.listUse(0x3ff80n);
    expect(r.run(0x8, 0, 0, [0, 0, 0, 0, 0, 0, 0, 0], 2)).toMatchObject({
      status: OK,
      length: 10,
      result: [8, 8],
    });
    expect(r.run(0x8, 0, 0, [1, 0, 0, 0, 0, 0, 0, 0])).toMatchObject(err(ENXIO, Q.INVALID_FIELD));
    expect(r.run(0x9, 0, 0, [1, 0, 0, 0, 0, 0, 0, 0, 1, 1])).toMatchObject(err(ENXIO, Q.INVALID_FIELD));
    expect(r.capSet(9, 1)).toMatchObject(err(EINVAL, Q.INVALID_FIELD));
    expect(r.capSet(2, 2)).toMatchObject({ status: OK, length: 8 });
    expect(r.create(1, 0, 0)).toMatchObject({ status: OK });
    expect(r.capSet(1, 1)).toMatchObject(err(EBUSY, Q.INVALID_COMMAND));
    expect(r.capSet(2, 2)).toMatchObject({ status: OK }); // the same limits: no change
    expect(r.run(0xd, 1, 1, r.obj(0))).toMatchObject({ status: OK });
    expect(r.capSet(1, 1)).toMatchObject({ status: OK });
  });

  it('RESOURCE_OBJ_CREATE / MODIFY / QUERY / DESTROY: ids below the driver limit, EEXIST, ENOSPC, ENXIO, member-owned', () => {
    const r = rig();
    r.listUse(0x3ff80n);
    expect(r.create(1, 0, 0)).toMatchObject(err(EINVAL, Q.INVALID_FIELD)); // no DRIVER_CAP_SET yet: limit 0
    r.capSet(2, 1);
    expect(r.create(1, 2, 0)).toMatchObject(err(EINVAL, Q.INVALID_FIELD)); // id >= max(get, set)
    expect(r.create(1, 0, 2)).toMatchObject(err(EINVAL, Q.INVALID_FIELD)); // purpose
    expect(r.run(0xa, 1, 1, [1, 0, 0, 0, 0, 0, 0, 0])).toMatchObject(err(EINVAL, Q.INVALID_FIELD)); // type
    expect(r.create(1, 0, 1)).toMatchObject({ status: OK, length: 8 });
    expect(r.create(2, 0, 1)).toMatchObject(err(EEXIST, Q.INVALID_FIELD));
    expect(r.create(2, 1, 1)).toMatchObject(err(ENOSPC, Q.NORESOURCE)); // set limit 1
    expect(r.create(2, 1, 0)).toMatchObject({ status: OK });
    const query = (vf: number, id: number) => r.run(0xc, 1, vf, r.obj(id, [0, 0, 0, 0, 0, 0, 0, 0]), 8);
    expect(query(1, 0)).toMatchObject({ status: OK, length: 16, result: [1, 0, 0, 0, 0, 0, 0, 0] });
    expect(query(2, 0)).toMatchObject(err(ENXIO, Q.INVALID_FIELD)); // VF 1's object
    // MODIFY to get: the get limit (2) has room; then back.
    const modify = (vf: number, id: number, purpose: number) =>
      r.run(0xb, 1, vf, r.obj(id, [0, 0, 0, 0, 0, 0, 0, 0, purpose, 0, 0, 0, 0, 0, 0, 0]));
    expect(modify(1, 0, 0)).toMatchObject({ status: OK });
    expect(query(1, 0).result).toEqual([0, 0, 0, 0, 0, 0, 0, 0]);
    expect(modify(1, 7, 0)).toMatchObject(err(ENXIO, Q.INVALID_FIELD));
    expect(modify(1, 0, 5)).toMatchObject(err(EINVAL, Q.INVALID_FIELD));
    expect(r.run(0xd, 1, 2, r.obj(0))).toMatchObject(err(ENXIO, Q.INVALID_FIELD));
    expect(r.run(0xd, 1, 1, r.obj(0))).toMatchObject({ status: OK });
    expect(r.run(0xd, 1, 1, r.obj(0))).toMatchObject(err(ENXIO, Q.INVALID_FIELD));
    // Member checks come first.
    expect(r.create(3, 1, 0)).toMatchObject(err(EINVAL, Q.INVALID_MEMBER));
    r.setEnabled(false);
    expect(r.create(1, 1, 0)).toMatchObject(err(EINVAL, Q.INVALID_GROUP));
  });

  it('DEV_PARTS_METADATA_GET and DEV_PARTS_GET: sizes, list, ALL, SELECTED in table order, ENOMEM, wrong object', () => {
    const r = rig();
    r.listUse(0x3ff80n);
    r.capSet(2, 2);
    r.create(1, 0, 0);
    r.create(1, 1, 1);
    const m = r.members[0]!;
    const total = partsSize(m.parts);
    const md = (type: number, writable = 8 + 4096, id = 0) =>
      r.run(0xe, 1, 1, r.obj(id, [type, 0, 0, 0, 0, 0, 0, 0]), writable);
    expect(md(0)).toMatchObject({
      status: OK,
      length: 16,
      result: [total & 0xff, total >> 8, 0, 0, 0, 0, 0, 0],
    });
    expect(md(1).result).toEqual([4, 0, 0, 0, 0, 0, 0, 0]);
    const list = md(2);
    expect(list.length).toBe(16 + 4 * 16);
    expect(list.result.slice(0, 8)).toEqual([4, 0, 0, 0, 0, 0, 0, 0]);
    // Header of part 2: VQ_CFG (0x104), flags 0, selector index 1, length 32.
    expect(list.result.slice(8 + 32, 8 + 48)).toEqual([
      0x04, 0x01, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0, 0,
    ]);
    expect(md(2, 8 + 8 + 16)).toMatchObject(err(ENOMEM, Q.INVALID_COMMAND));
    expect(md(3)).toMatchObject(err(EINVAL, Q.INVALID_FIELD));
    expect(md(0, 16, 1)).toMatchObject(err(EINVAL, Q.INVALID_FIELD)); // a set object
    expect(md(0, 16, 5)).toMatchObject(err(ENXIO, Q.INVALID_FIELD));
    const get = (type: number, list: number[] = [], writable = 8 + 4096) =>
      r.run(0xf, 1, 1, r.obj(0, [type, 0, 0, 0, 0, 0, 0, 0, ...list]), writable);
    const all = get(1);
    expect(all).toMatchObject({ status: OK, length: 8 + total });
    const expected = new Uint8Array(total);
    encodeParts(m.parts, expected);
    expect(all.result).toEqual([...expected]);
    expect(get(1, [], 8 + total - 1)).toMatchObject(err(ENOMEM, Q.INVALID_COMMAND));
    expect(get(2)).toMatchObject(err(EINVAL, Q.INVALID_FIELD));
    // SELECTED: asked in reverse order plus one the device lacks; answered in table order, lacking one skipped.
    const hdr = (type: number, sel: number[]) => [type & 0xff, type >> 8, 0, 0, ...sel, 0, 0, 0, 0];
    const sel = get(0, [
      ...hdr(0x5ff, [0, 0, 0, 0, 0, 0, 0, 0]),
      ...hdr(0x104, [7, 0, 0, 0, 0, 0, 0, 0]),
      ...hdr(0x100, [0, 0, 0, 0, 0, 0, 0, 0]),
    ]);
    const parts = decodeParts(Uint8Array.from(sel.result));
    expect(Array.isArray(parts) && parts.map((p) => p.type)).toEqual([0x100, 0x5ff]);
  });

  it('DEV_PARTS_SET: needs a set object and a stopped member; malformed lists and refused parts are INVALID_FIELD', () => {
    const r = rig();
    r.listUse(0x3ff80n);
    r.capSet(2, 2);
    r.create(1, 0, 0);
    r.create(1, 1, 1);
    const m = r.members[0]!;
    const bytes = new Uint8Array(partsSize(m.parts));
    encodeParts(m.parts, bytes);
    const set = (id: number, b: Uint8Array) => r.run(0x10, 1, 1, [...r.obj(id), ...b]);
    expect(set(1, bytes)).toMatchObject(err(EBUSY, Q.INVALID_COMMAND)); // still active
    expect(r.run(0x11, 1, 1, [1])).toMatchObject({ status: OK, length: 8 });
    expect(m.m).toBe('stopped');
    expect(set(0, bytes)).toMatchObject(err(EINVAL, Q.INVALID_FIELD)); // a get object
    expect(set(4, bytes)).toMatchObject(err(ENXIO, Q.INVALID_FIELD));
    expect(set(1, bytes.subarray(0, 10))).toMatchObject(err(EINVAL, Q.INVALID_FIELD)); // header cut short
    expect(set(1, bytes.subarray(0, bytes.length - 1))).toMatchObject(err(EINVAL, Q.INVALID_FIELD)); // value cut
    m.refuse = 'no';
    expect(set(1, bytes)).toMatchObject(err(EINVAL, Q.INVALID_FIELD));
    expect(m.set).toHaveLength(0);
    m.refuse = null;
    expect(set(1, bytes)).toMatchObject({ status: OK, length: 8 });
    expect(m.set[0]!.map((p) => [p.type, p.value.length])).toEqual(
      m.parts.map((p) => [p.type, p.value.length]),
    );
  });

  it('DEV_MODE_SET: 0 active, 1 stopped, 3 frozen, idempotent; other flags INVALID_FIELD; an owner reset resumes', () => {
    const r = rig();
    r.listUse(0x3ff80n);
    const m = r.members[1]!;
    for (const [flags, mode] of [
      [1, 'stopped'],
      [1, 'stopped'],
      [3, 'frozen'],
      [0, 'active'],
      [0, 'active'],
      [3, 'frozen'],
    ] as const) {
      expect(r.run(0x11, 1, 2, [flags])).toMatchObject({ status: OK, qualifier: 0, length: 8 });
      expect(m.m).toBe(mode);
    }
    for (const flags of [2, 4, 0x81]) {
      expect(r.run(0x11, 1, 2, [flags])).toMatchObject(err(EINVAL, Q.INVALID_FIELD));
      expect(m.m).toBe('frozen');
    }
    expect(r.run(0x11, 1, 0, [0])).toMatchObject(err(EINVAL, Q.INVALID_MEMBER));
    expect(r.run(0x11, 0, 0, [0])).toMatchObject(err(EINVAL, Q.INVALID_OPCODE)); // not a self-group command
    r.p.reset();
    expect(m.m).toBe('active');
    // Not in use after the reset until LIST_USE again.
    expect(r.run(0x11, 1, 2, [1])).toMatchObject(err(EINVAL, Q.INVALID_OPCODE));
  });

  it('the owner snapshot keeps capabilities and objects; a restored owner answers as before', () => {
    const r = rig();
    r.listUse(0x3ff80n);
    r.capSet(2, 2);
    r.create(2, 1, 0);
    const s = JSON.parse(JSON.stringify(r.p.snapshot()));
    const r2 = rig();
    r2.p.restore(s);
    expect(r2.run(0xc, 1, 2, r2.obj(1, [0, 0, 0, 0, 0, 0, 0, 0]), 8)).toMatchObject({
      status: OK,
      result: [0, 0, 0, 0, 0, 0, 0, 0],
    });
    expect(r2.create(2, 1, 0)).toMatchObject(err(EEXIST, Q.INVALID_FIELD));
  });
});
