/**
 * VIRTIO 1.4 group administration commands for migrating a member (admin-cmds-capabilities.tex,
 * admin-cmds-resource-objects.tex, admin-cmds-device-parts.tex): the capability commands of the self
 * group (CAP_ID_LIST_QUERY 0x7, DEVICE_CAP_GET 0x8, DRIVER_CAP_SET 0x9), the device-parts resource
 * objects of the SR-IOV group (RESOURCE_OBJ_CREATE 0xa, MODIFY 0xb, QUERY 0xc, DESTROY 0xd: the numbers
 * of the command sections, see docs/admin-queue.md), DEV_PARTS_METADATA_GET 0xe, DEV_PARTS_GET 0xf,
 * DEV_PARTS_SET 0x10 and DEV_MODE_SET 0x11. `AdminCommandProcessor` has already checked group type,
 * opcode (LIST_USE) and member; this file checks the command's own fields. Failures change nothing.
 */
import type { DeviceMode } from '../virtio-device.js';
import {
  DEV_PART_HDR,
  type DevicePart,
  decodeParts,
  encodeParts,
  partsSize,
  samePart,
  writePartHeader,
} from './device-parts.js';

export const MigrationOpcode = {
  CAP_ID_LIST_QUERY: 0x7,
  DEVICE_CAP_GET: 0x8,
  DRIVER_CAP_SET: 0x9,
  RESOURCE_OBJ_CREATE: 0xa,
  RESOURCE_OBJ_MODIFY: 0xb,
  RESOURCE_OBJ_QUERY: 0xc,
  RESOURCE_OBJ_DESTROY: 0xd,
  DEV_PARTS_METADATA_GET: 0xe,
  DEV_PARTS_GET: 0xf,
  DEV_PARTS_SET: 0x10,
  DEV_MODE_SET: 0x11,
} as const;

/** Capability ids (admin-cmds-capabilities.tex). */
export const VIRTIO_DEV_PARTS_CAP = 0x0000;
/** Resource object types (admin-cmds-resource-objects.tex). */
export const VIRTIO_RESOURCE_OBJ_DEV_PARTS = 0x0000;
export const DEV_PARTS_TYPE_GET = 0;
export const DEV_PARTS_TYPE_SET = 1;
export const METADATA_TYPE = { SIZE: 0, COUNT: 1, LIST: 2 } as const;
export const GET_TYPE = { SELECTED: 0, ALL: 1 } as const;
/** DEV_MODE_SET flags: bit 0 is VIRTIO_ADMIN_CMD_DEV_MODE_F_STOPPED; bit 1 (with bit 0) is our freeze. */
export const DEV_MODE_F_STOPPED = 1 << 0;
export const DEV_MODE_F_FROZEN = 1 << 1;

/** Opcodes of the SR-IOV group this file serves (0x7-0x9 are listed there too: Linux reads them there). */
export const MIGRATION_SRIOV_OPCODES = 0x3ff80n; // bits 7..17
/** Opcodes of the self group: LIST_QUERY, LIST_USE and the capability commands. */
export const SELF_OPCODES = 0b11_1000_0011n;

/** Statuses beyond EINVAL these commands use (Linux errno numbers). */
export const MStatus = {
  OK: 0,
  ENXIO: 6,
  ENOMEM: 12,
  EBUSY: 16,
  EEXIST: 17,
  EINVAL: 22,
  ENOSPC: 28,
} as const;
export const MQualifier = { OK: 0, INVALID_COMMAND: 1, INVALID_FIELD: 3, NORESOURCE: 6 } as const;

/** What a member gives its owner for these commands (the glue over its transport). */
export interface MigrationMember {
  mode(): DeviceMode;
  setMode(mode: DeviceMode): void;
  /** Every part in the order of the "Device parts order" table (device-type parts last). */
  getParts(): DevicePart[];
  /** Checks the parts whole, then applies them; returns why not (nothing changed then) or null. */
  setParts(parts: readonly DevicePart[]): string | null;
}

/** The device's VIRTIO_DEV_PARTS_CAP: objects for get and for set (u8 each). */
export const DEV_PARTS_LIMITS = { get: 8, set: 8 } as const;
/** Bytes of device-readable data DEV_PARTS_SET may carry (what the queue gathers at most). */
export const MAX_PARTS_BYTES = 64 << 20;

export interface MigrationOutcome {
  status: number;
  qualifier: number;
  /** Result bytes after the 8-byte status header (empty for commands without a result). */
  result: Uint8Array;
}

interface DevPartsObject {
  member: number;
  purpose: number;
}

const EMPTY = new Uint8Array(0);

function u16(b: Uint8Array, o: number): number {
  return (b[o] ?? 0) | ((b[o + 1] ?? 0) << 8);
}
function u32(b: Uint8Array, o: number): number {
  return (u16(b, o) | (u16(b, o + 2) << 16)) >>> 0;
}
function le32(v: number, extra = 4): Uint8Array {
  const r = new Uint8Array(4 + extra);
  new DataView(r.buffer).setUint32(0, v, true);
  return r;
}
const ok = (result: Uint8Array = EMPTY): MigrationOutcome => ({
  status: MStatus.OK,
  qualifier: MQualifier.OK,
  result,
});
const err = (status: number, qualifier: number): MigrationOutcome => ({ status, qualifier, result: EMPTY });
const invalidField = () => err(MStatus.EINVAL, MQualifier.INVALID_FIELD);

/** Driver capabilities, resource objects and member modes of one owner (reset with the owner). */
export class MigrationCommands {
  private driverGet = 0;
  private driverSet = 0;
  private readonly objects = new Map<number, DevPartsObject>();
  /** Members this owner took out of 'active' (resumed when the owner resets). */
  private readonly stopped = new Set<number>();

  constructor(private readonly member: (id: number) => MigrationMember | null) {}

  /** Owner reset: driver capabilities and objects go (§2.12.1.3/4); stopped members run again. */
  reset(): void {
    this.driverGet = 0;
    this.driverSet = 0;
    this.objects.clear();
    for (const id of this.stopped) this.member(id)?.setMode('active');
    this.stopped.clear();
  }

  /** Self group: CAP_ID_LIST_QUERY, DEVICE_CAP_GET, DRIVER_CAP_SET. */
  executeSelf(opcode: number, data: Uint8Array): MigrationOutcome {
    if (opcode === MigrationOpcode.CAP_ID_LIST_QUERY) {
      const r = new Uint8Array(8);
      r[0] = 1 << VIRTIO_DEV_PARTS_CAP; // supported_caps[0]
      return ok(r);
    }
    // cap_get_data / cap_set_data: le16 id, u8 reserved[6], cap_specific_data[] at 8.
    if (u16(data, 0) !== VIRTIO_DEV_PARTS_CAP) return err(MStatus.ENXIO, MQualifier.INVALID_FIELD);
    if (opcode === MigrationOpcode.DEVICE_CAP_GET)
      return ok(Uint8Array.of(DEV_PARTS_LIMITS.get, DEV_PARTS_LIMITS.set));
    const get = data[8] ?? 0;
    const set = data[9] ?? 0;
    if (get > DEV_PARTS_LIMITS.get || set > DEV_PARTS_LIMITS.set) return invalidField();
    if (this.objects.size > 0 && (get !== this.driverGet || set !== this.driverSet))
      return err(MStatus.EBUSY, MQualifier.INVALID_COMMAND);
    this.driverGet = get;
    this.driverSet = set;
    return ok();
  }

  /** SR-IOV group member commands 0xa-0x11 for member `id` (already range-checked). */
  executeMember(
    opcode: number,
    id: number,
    m: MigrationMember,
    data: Uint8Array,
    writable: number,
  ): MigrationOutcome {
    switch (opcode) {
      case MigrationOpcode.RESOURCE_OBJ_CREATE:
      case MigrationOpcode.RESOURCE_OBJ_MODIFY:
        return this.createOrModify(opcode === MigrationOpcode.RESOURCE_OBJ_CREATE, id, data);
      case MigrationOpcode.RESOURCE_OBJ_QUERY: {
        const o = this.lookup(id, data);
        if (!o) return err(MStatus.ENXIO, MQualifier.INVALID_FIELD);
        const r = new Uint8Array(8);
        r[0] = o.purpose;
        return ok(r);
      }
      case MigrationOpcode.RESOURCE_OBJ_DESTROY: {
        if (!this.lookup(id, data)) return err(MStatus.ENXIO, MQualifier.INVALID_FIELD);
        this.objects.delete(u32(data, 4));
        return ok();
      }
      case MigrationOpcode.DEV_PARTS_METADATA_GET:
        return this.metadata(id, m, data, writable);
      case MigrationOpcode.DEV_PARTS_GET:
        return this.getParts(id, m, data, writable);
      case MigrationOpcode.DEV_PARTS_SET: {
        const o = this.lookup(id, data);
        if (!o) return err(MStatus.ENXIO, MQualifier.INVALID_FIELD);
        if (o.purpose !== DEV_PARTS_TYPE_SET) return invalidField();
        // §2.12.1.5: the driver stops the device first; the device SHOULD refuse otherwise.
        if (m.mode() === 'active') return err(MStatus.EBUSY, MQualifier.INVALID_COMMAND);
        const parts = decodeParts(data.subarray(8));
        if (typeof parts === 'string' || m.setParts(parts) !== null) return invalidField();
        return ok();
      }
      case MigrationOpcode.DEV_MODE_SET: {
        const flags = data[0] ?? 0;
        const mode: DeviceMode | null =
          flags === 0
            ? 'active'
            : flags === DEV_MODE_F_STOPPED
              ? 'stopped'
              : flags === (DEV_MODE_F_STOPPED | DEV_MODE_F_FROZEN)
                ? 'frozen'
                : null;
        if (mode === null) return invalidField();
        m.setMode(mode);
        if (mode === 'active') this.stopped.delete(id);
        else this.stopped.add(id);
        return ok();
      }
      default:
        return err(MStatus.EINVAL, 0x02); // INVALID_OPCODE (not reached: the processor filters)
    }
  }

  /** Driver capabilities, objects and the members this owner stopped (in the owner's snapshot). */
  snapshot(): { get: number; set: number; objects: [number, number, number][]; stopped: number[] } {
    return {
      get: this.driverGet,
      set: this.driverSet,
      objects: [...this.objects].map(([k, o]) => [k, o.member, o.purpose]),
      stopped: [...this.stopped],
    };
  }

  restore(s: unknown): void {
    this.driverGet = 0;
    this.driverSet = 0;
    this.objects.clear();
    this.stopped.clear();
    const v = s as ReturnType<MigrationCommands['snapshot']> | undefined;
    if (!v || typeof v !== 'object') return;
    const byte = (x: unknown, max: number) =>
      Number.isInteger(x) && (x as number) >= 0 && (x as number) <= max ? (x as number) : 0;
    this.driverGet = byte(v.get, DEV_PARTS_LIMITS.get);
    this.driverSet = byte(v.set, DEV_PARTS_LIMITS.set);
    for (const o of Array.isArray(v.objects) ? v.objects.slice(0, 16) : []) {
      if (!Array.isArray(o)) continue;
      this.objects.set(byte(o[0], 255), { member: byte(o[1], 0xffff), purpose: byte(o[2], 1) });
    }
    for (const id of Array.isArray(v.stopped) ? v.stopped.slice(0, 256) : [])
      this.stopped.add(byte(id, 0xffff));
  }

  /** The object `virtio_admin_cmd_resource_obj_cmd_hdr` at the start of `data` names, if this member's. */
  private lookup(member: number, data: Uint8Array): DevPartsObject | null {
    if (u16(data, 0) !== VIRTIO_RESOURCE_OBJ_DEV_PARTS) return null;
    const o = this.objects.get(u32(data, 4));
    return o && o.member === member ? o : null;
  }

  private limit(purpose: number): number {
    return purpose === DEV_PARTS_TYPE_GET ? this.driverGet : this.driverSet;
  }

  private createOrModify(create: boolean, member: number, data: Uint8Array): MigrationOutcome {
    // hdr (type le16, reserved[2], id le32), le64 flags, virtio_resource_obj_dev_parts { u8 type; reserved[7] }.
    if (u16(data, 0) !== VIRTIO_RESOURCE_OBJ_DEV_PARTS)
      return create ? invalidField() : err(MStatus.ENXIO, MQualifier.INVALID_FIELD);
    const id = u32(data, 4);
    const purpose = data[16] ?? 0;
    if (purpose !== DEV_PARTS_TYPE_GET && purpose !== DEV_PARTS_TYPE_SET) return invalidField();
    const existing = this.objects.get(id);
    if (create) {
      // Valid ids are 0..limit-1 of the driver capability (0 until DRIVER_CAP_SET, §2.12.1.3).
      if (id >= Math.max(this.driverGet, this.driverSet)) return invalidField();
      if (existing) return err(MStatus.EEXIST, MQualifier.INVALID_FIELD);
    } else if (!existing || existing.member !== member) {
      return err(MStatus.ENXIO, MQualifier.INVALID_FIELD);
    } else if (existing.purpose === purpose) {
      return ok();
    }
    let count = 0;
    for (const o of this.objects.values()) if (o.purpose === purpose) count++;
    if (count >= this.limit(purpose)) return err(MStatus.ENOSPC, MQualifier.NORESOURCE);
    this.objects.set(id, { member, purpose });
    return ok();
  }

  private metadata(member: number, m: MigrationMember, data: Uint8Array, writable: number): MigrationOutcome {
    const o = this.lookup(member, data);
    if (!o) return err(MStatus.ENXIO, MQualifier.INVALID_FIELD);
    if (o.purpose !== DEV_PARTS_TYPE_GET) return invalidField();
    const type = data[8] ?? 0;
    if (type > METADATA_TYPE.LIST) return invalidField();
    const parts = m.getParts();
    let result: Uint8Array;
    if (type === METADATA_TYPE.SIZE) result = le32(partsSize(parts));
    else if (type === METADATA_TYPE.COUNT) result = le32(parts.length);
    else {
      result = new Uint8Array(8 + DEV_PART_HDR.size * parts.length);
      result.set(le32(parts.length));
      for (const [i, p] of parts.entries()) writePartHeader(result, 8 + DEV_PART_HDR.size * i, p);
    }
    // §2.12.1.5: ENOMEM when the result does not fit the driver's buffer.
    if (8 + result.length > writable) return err(MStatus.ENOMEM, MQualifier.INVALID_COMMAND);
    return ok(result);
  }

  private getParts(member: number, m: MigrationMember, data: Uint8Array, writable: number): MigrationOutcome {
    const o = this.lookup(member, data);
    if (!o) return err(MStatus.ENXIO, MQualifier.INVALID_FIELD);
    if (o.purpose !== DEV_PARTS_TYPE_GET) return invalidField();
    const type = data[8] ?? 0;
    if (type > GET_TYPE.ALL) return invalidField();
    let parts = m.getParts();
    if (type === GET_TYPE.SELECTED) {
      // hdr_list at 16; parts the device lacks are skipped; the answer keeps the table's order.
      const want: { type: number; selector: Uint8Array }[] = [];
      for (let at = 16; at + DEV_PART_HDR.size <= data.length; at += DEV_PART_HDR.size)
        want.push({ type: u16(data, at), selector: data.subarray(at + 4, at + 12) });
      parts = parts.filter((p) => want.some((w) => samePart(w, p)));
    }
    const result = new Uint8Array(partsSize(parts));
    if (8 + result.length > writable) return err(MStatus.ENOMEM, MQualifier.INVALID_COMMAND);
    encodeParts(parts, result);
    return ok(result);
  }
}
