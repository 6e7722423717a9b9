/**
 * Group administration commands (VIRTIO 1.3 §2.12 "Device groups", §2.12.1 "Group administration
 * commands", §2.12.1.1 "Legacy Interfaces"): wire layouts, status codes, the `DeviceGroup` interface an
 * owner device implements for its members, and `AdminCommandProcessor`, which executes one command from
 * its bytes. No virtqueue here (see `admin-queue.ts`) and nothing network-specific.
 *
 * Validation order (§2.12.1 device requirements): unsupported `group_type` → INVALID_GROUP; otherwise an
 * opcode that is unsupported, reserved, or not in the LIST_USE set → INVALID_OPCODE; otherwise, for
 * commands addressing a member, a group that does not exist now (SR-IOV: VF Enable clear) →
 * INVALID_GROUP and a member id outside 1..count → INVALID_MEMBER; then command fields → INVALID_FIELD.
 * Every failure is EINVAL and has no side effect.
 */
import type { PieceHandler } from '../pci/region-access.js';
import {
  MIGRATION_SRIOV_OPCODES,
  MigrationCommands,
  type MigrationMember,
  type MigrationOutcome,
  SELF_OPCODES,
} from './migration-commands.js';

/** `struct virtio_admin_cmd`, device-readable header (§2.12.1). */
export const ADMIN_CMD_HDR = {
  opcode: 0, // le16
  groupType: 2, // le16
  reserved1: 4, // u8[12]
  groupMemberId: 16, // le64
  /** command_specific_data starts here. */
  size: 24,
} as const;

/** `struct virtio_admin_cmd`, device-writable header (§2.12.1). */
export const ADMIN_CMD_RESULT = {
  status: 0, // le16
  statusQualifier: 2, // le16
  reserved2: 4, // u8[4]
  /** command_specific_result starts here. */
  size: 8,
} as const;

/** Opcodes (§2.12.1 table). 0x0007-0x7fff use the same structure; 0x8000-0xffff are reserved. */
export const AdminOpcode = {
  LIST_QUERY: 0x0000,
  LIST_USE: 0x0001,
  LEGACY_COMMON_CFG_WRITE: 0x0002,
  LEGACY_COMMON_CFG_READ: 0x0003,
  LEGACY_DEV_CFG_WRITE: 0x0004,
  LEGACY_DEV_CFG_READ: 0x0005,
  LEGACY_NOTIFY_INFO: 0x0006,
} as const;

/** Group type identifiers (§2.12; SELF is VIRTIO 1.4's, served when a group offers migration). */
export const AdminGroupType = { SELF: 0x0000, SRIOV: 0x0001 } as const;

/** `status` values (§2.12.1): Linux errno numbers. */
export const AdminStatus = { OK: 0, EAGAIN: 11, ENOMEM: 12, EINVAL: 22 } as const;

/** `status_qualifier` values (§2.12.1). */
export const AdminStatusQualifier = {
  OK: 0x00,
  INVALID_COMMAND: 0x01,
  INVALID_OPCODE: 0x02,
  INVALID_FIELD: 0x03,
  INVALID_GROUP: 0x04,
  INVALID_MEMBER: 0x05,
  NORESOURCE: 0x06,
  TRYAGAIN: 0x07,
} as const;

/**
 * `virtio_admin_cmd_legacy_{common_cfg,dev_reg}_wr_data` (§2.12.1.1): u8 offset, u8 reserved[7], u8 data[].
 * The read commands' data is only the offset byte.
 */
export const LEGACY_WR_DATA = { offset: 0, reserved: 1, data: 8 } as const;

/**
 * `struct virtio_pci_legacy_notify_info` (§2.12.1.1 "Legacy Driver Notification"), 16 bytes; the result
 * holds 4 of them.
 */
export const LEGACY_NOTIFY_INFO = {
  flags: 0, // u8: 0 end of list, 1 owner device, 2 member device
  bar: 1, // u8: 1..5 = BAR1..BAR5 (owner header / VF BARn of the owner's SR-IOV capability)
  padding: 2, // u8[6]
  offset: 8, // le64, 2-byte aligned
  size: 16,
  entries: 4,
} as const;

export const LEGACY_NOTIFY_FLAG_END = 0;
export const LEGACY_NOTIFY_FLAG_OWNER = 1;
export const LEGACY_NOTIFY_FLAG_MEMBER = 2;

/**
 * Fields of the legacy common configuration (§4.1.4.8 "Legacy Interfaces: A Note on PCI Device Layout"):
 * [offset, size]. The last two exist only while MSI-X is enabled (the device config then starts at 24).
 */
export const LEGACY_COMMON_FIELDS: readonly (readonly [number, number])[] = [
  [0, 4], // device features bits 0:31
  [4, 4], // driver features bits 0:31
  [8, 4], // queue address
  [12, 2], // queue_size
  [14, 2], // queue_select
  [16, 2], // queue notify
  [18, 1], // device status
  [19, 1], // ISR status
  [20, 2], // config_msix_vector (MSI-X enabled only)
  [22, 2], // queue_msix_vector (MSI-X enabled only)
];

/** Largest device-specific config a legacy command may address (its offset is a u8, plus field size). */
export const LEGACY_MAX_ACCESS = 4096;

/**
 * A member's legacy register block, as a legacy driver would see it in I/O BAR0 (§4.1.4.8), for the
 * LEGACY_*_CFG_* commands. The transport's `LegacyInterface` (virtio/pci/legacy.ts) is a `PieceHandler` over
 * exactly this layout; a VF has no I/O BAR, so the owner's transport keeps one per member for these
 * commands. Callbacks must not throw for any offset/size the processor passes (it only passes ranges it
 * validated: inside the common part or the device config).
 */
export interface LegacyMemberAccess {
  /** Pieces of 1, 2 or 4 naturally aligned bytes at BAR0-relative offsets, little-endian. */
  readonly registers: PieceHandler;
  /** Where the device-specific config starts: 20, or 24 while the member's MSI-X is enabled. */
  deviceConfigOffset(): number;
  /** Bytes of device-specific config (what `VirtioDevice.configLength` says for the member now). */
  deviceConfigLength(): number;
  /**
   * Whether `[offset, offset + length)` of the device config lies within one field. Absent: any range
   * inside the device config is accepted (the device type knows its fields; the processor does not).
   */
  isDeviceConfigField?(offset: number, length: number): boolean;
}

/** One LEGACY_NOTIFY_INFO entry (§2.12.1.1 "Legacy Driver Notification"). */
export interface LegacyNotifyEntry {
  /** 1 = an address in the owner's BARn, 2 = in the member's VF BARn. */
  flags: typeof LEGACY_NOTIFY_FLAG_OWNER | typeof LEGACY_NOTIFY_FLAG_MEMBER;
  /** 1..5. The group owner must hardwire VF BAR0 to zero when it offers this command. */
  bar: number;
  /** Offset inside that BAR, 2-byte aligned. */
  offset: bigint;
}

/**
 * The members an owner device controls (§2.12). For the SR-IOV group type (0x1): the owner is the PF,
 * members are its VFs, member id = VF number 1..NumVFs, and the group exists only while VF Enable is set.
 */
export interface DeviceGroup {
  /** Group type identifier (0x1 = SR-IOV). */
  readonly groupType: number;
  /** Whether the group exists now (SR-IOV: SR-IOV capability present and VF Enable set). */
  exists(): boolean;
  /** Members now; valid member ids are 1..memberCount() (SR-IOV: the VFs that exist, i.e. NumVFs). */
  memberCount(): number;
  /**
   * Legacy register access of member `id` (1-based, already range-checked), or null if that member
   * cannot be reached (answered INVALID_MEMBER). Absent: the group does not support opcodes 2-5.
   */
  legacyMember?(id: number): LegacyMemberAccess | null;
  /**
   * LEGACY_NOTIFY_INFO entries for member `id` in preference order (at most 3 are reported: the last of
   * the 4 result entries must be the end marker). Absent: opcode 6 is not supported. Needs `legacyMember`.
   */
  legacyNotifyInfo?(id: number): readonly LegacyNotifyEntry[];
  /**
   * Member `id`'s side of the VIRTIO 1.4 device-parts commands (0xa-0x11), or null when it cannot be
   * reached (INVALID_MEMBER). Present: the owner also serves the self group's capability commands.
   */
  migrationMember?(id: number): MigrationMember | null;
}

/** What one executed command produced. */
export interface AdminCommandOutcome {
  status: number;
  qualifier: number;
  /** Bytes of the device-writable part the command defines (header + result); used length = min(this, buffer). */
  length: number;
  /** The device-writable bytes when they did not fit `out` (device parts); else they are in `out`. */
  bytes?: Uint8Array;
}

/** Supported-opcode bitmap word 0 for a group (LIST_QUERY's result; we define no opcode above 63). */
export function supportedOpcodes(group: DeviceGroup): bigint {
  let bits = (1n << BigInt(AdminOpcode.LIST_QUERY)) | (1n << BigInt(AdminOpcode.LIST_USE));
  if (group.legacyMember) {
    // §2.12.1.1 "Device Requirements: Legacy Interface": all of 2-5 or none; 6 only together with 2-5.
    bits |= 0b1111n << BigInt(AdminOpcode.LEGACY_COMMON_CFG_WRITE);
    if (group.legacyNotifyInfo) bits |= 1n << BigInt(AdminOpcode.LEGACY_NOTIFY_INFO);
  }
  if (group.migrationMember) bits |= MIGRATION_SRIOV_OPCODES;
  return bits;
}

/** Bitmap words LIST_USE reads from the driver (4 KiB); later words are ignored as truncated (§2.13). */
const LIST_USE_MAX_WORDS = 512;

/** Per-group LIST_USE state snapshot (bitmap word 0 as a decimal string, keyed by group type). */
export type AdminCommandState = Record<string, string>;

export interface AdminCommandOptions {
  /**
   * Fail LIST_QUERY / LIST_USE with INVALID_GROUP while the group does not exist (the literal reading of
   * §2.12.1's SR-IOV rule "fail all commands"). Default false: Linux sends LIST_QUERY and LIST_USE right
   * after DRIVER_OK, normally before any VF is enabled, and never retries, so the literal reading would
   * leave the legacy commands unusable for its vfio-virtio driver.
   */
  listCommandsNeedGroup?: boolean;
}

/**
 * Executes group administration commands for an owner device: parses the device-readable bytes, checks
 * them in the spec's order, performs the command on the group, and writes the device-writable part into
 * an output buffer. Keeps the per-group LIST_USE set (reset by `reset()`).
 */
export class AdminCommandProcessor {
  private readonly groups = new Map<number, DeviceGroup>();
  private readonly inUse = new Map<number, bigint>();
  private readonly strictList: boolean;
  /** VIRTIO 1.4 capabilities, resource objects and member modes, when a group offers migration. */
  private readonly migration: MigrationCommands | null = null;
  private readonly migrationGroup: DeviceGroup | null = null;

  constructor(groups: readonly DeviceGroup[], options: AdminCommandOptions = {}) {
    for (const g of groups) {
      if (!Number.isInteger(g.groupType) || g.groupType < 0 || g.groupType > 0xffff)
        throw new RangeError(`DeviceGroup type ${g.groupType} is not a u16`);
      if (this.groups.has(g.groupType)) throw new RangeError(`two device groups of type ${g.groupType}`);
      if (g.legacyNotifyInfo && !g.legacyMember)
        throw new RangeError(
          'legacyNotifyInfo needs legacyMember (VIRTIO 1.3 §2.12.1.1 device requirements)',
        );
      this.groups.set(g.groupType, g);
    }
    this.strictList = options.listCommandsNeedGroup ?? false;
    const mg = groups.find((g) => g.migrationMember) ?? null;
    if (mg) {
      if (this.groups.has(AdminGroupType.SELF)) throw new RangeError("the self group is the processor's own");
      this.migrationGroup = mg;
      this.migration = new MigrationCommands((id) =>
        id >= 1 && id <= mg.memberCount() ? (mg.migrationMember?.(id) ?? null) : null,
      );
    }
    this.reset();
  }

  /** Device reset: only LIST_QUERY and LIST_USE are in use for every group again (§2.12.1). */
  reset(): void {
    for (const t of this.groups.keys()) this.inUse.set(t, 0b11n);
    if (this.migration) {
      this.inUse.set(AdminGroupType.SELF, 0b11n);
      this.migration.reset();
    }
  }

  /** The LIST_USE set of group type `groupType` (word 0), or null for an unsupported type. */
  commandsInUse(groupType: number): bigint | null {
    return this.inUse.get(groupType) ?? null;
  }

  snapshot(): AdminCommandState {
    const s: AdminCommandState = {};
    for (const [t, v] of this.inUse) s[String(t)] = v.toString();
    if (this.migration) s.migration = JSON.stringify(this.migration.snapshot());
    return s;
  }

  /** Restores `snapshot()` output; unknown group types are ignored. */
  restore(state: AdminCommandState): void {
    this.reset();
    for (const [t, v] of Object.entries(state)) {
      if (t === 'migration' && this.migration) {
        try {
          this.migration.restore(JSON.parse(v));
        } catch {
          this.migration.restore(undefined);
        }
        continue;
      }
      const type = Number(t);
      const supported = this.supportedFor(type);
      if (supported === null || !/^\d+$/.test(v)) continue;
      this.inUse.set(type, BigInt(v) & supported);
    }
  }

  /**
   * One command. `request` is the device-readable part (possibly truncated by the caller to what it
   * read; missing bytes count as zero). `writableLength` is the size of the driver's device-writable
   * part. The full device-writable structure is written into `out` from offset 0 (it must hold
   * `ADMIN_CMD_RESULT.size + max(64, LEGACY_MAX_ACCESS)` bytes); the caller copies
   * `min(outcome.length, writableLength)` of it to the driver. Never throws for any input bytes.
   */
  execute(request: Uint8Array, writableLength: number, out: Uint8Array): AdminCommandOutcome {
    const opcode = u16(request, ADMIN_CMD_HDR.opcode);
    const groupType = u16(request, ADMIN_CMD_HDR.groupType);
    const memberId = u64(request, ADMIN_CMD_HDR.groupMemberId);
    const data = request.length > ADMIN_CMD_HDR.size ? request.subarray(ADMIN_CMD_HDR.size) : EMPTY;
    out.fill(0, 0, ADMIN_CMD_RESULT.size);

    const supported = this.supportedFor(groupType);
    if (supported === null) return fail(out, AdminStatusQualifier.INVALID_GROUP);
    let inUse = this.inUse.get(groupType) ?? 0n;
    // Linux enables the self group's commands with the SR-IOV group's LIST_USE and never sends one for the
    // self group (virtio_pci_modern.c): either list enables them (docs/admin-queue.md).
    if (groupType === AdminGroupType.SELF && this.migrationGroup)
      inUse |= this.inUse.get(this.migrationGroup.groupType) ?? 0n;
    if (opcode >= 64 || ((supported & inUse) >> BigInt(opcode)) % 2n === 0n)
      return fail(out, AdminStatusQualifier.INVALID_OPCODE);
    const self = groupType === AdminGroupType.SELF;
    if (self && opcode >= 7) return this.migrationResult(out, this.migration!.executeSelf(opcode, data));
    // The capability commands are for the self group only (admin-cmds-capabilities.tex device requirements).
    if (opcode >= 7 && opcode <= 9) return fail(out, AdminStatusQualifier.INVALID_GROUP);
    const group = this.groups.get(groupType);

    if (opcode === AdminOpcode.LIST_QUERY || opcode === AdminOpcode.LIST_USE) {
      if (this.strictList && group && !group.exists()) return fail(out, AdminStatusQualifier.INVALID_GROUP);
      if (opcode === AdminOpcode.LIST_QUERY) {
        // struct virtio_admin_cmd_list: DIV_ROUND_UP(max_cmd + 1, 64) words = 1 word here.
        setU64(out, ADMIN_CMD_RESULT.size, supported);
        return ok(out, ADMIN_CMD_RESULT.size + 8);
      }
      const words = Math.min(Math.ceil(data.length / 8), LIST_USE_MAX_WORDS);
      let use = 0n;
      for (let w = 0; w < words; w++) {
        const v = u64(data, 8 * w);
        if (w === 0) use = v;
        else if (v !== 0n) return fail(out, AdminStatusQualifier.INVALID_FIELD);
      }
      if ((use & ~supported) !== 0n) return fail(out, AdminStatusQualifier.INVALID_FIELD);
      this.inUse.set(groupType, use);
      return ok(out, ADMIN_CMD_RESULT.size);
    }

    // Commands addressing a member.
    if (!group?.exists()) return fail(out, AdminStatusQualifier.INVALID_GROUP);
    const n = group.memberCount();
    const count = Number.isSafeInteger(n) && n > 0 ? n : 0;
    if (memberId < 1n || memberId > BigInt(count)) return fail(out, AdminStatusQualifier.INVALID_MEMBER);
    const id = Number(memberId);
    if (opcode >= 0xa) {
      const mm = group.migrationMember?.(id) ?? null;
      if (!mm || !this.migration) return fail(out, AdminStatusQualifier.INVALID_MEMBER);
      return this.migrationResult(out, this.migration.executeMember(opcode, id, mm, data, writableLength));
    }
    const member = group.legacyMember?.(id) ?? null;
    if (!member) return fail(out, AdminStatusQualifier.INVALID_MEMBER);

    switch (opcode) {
      case AdminOpcode.LEGACY_COMMON_CFG_WRITE:
      case AdminOpcode.LEGACY_DEV_CFG_WRITE: {
        const offset = data.length > 0 ? data[LEGACY_WR_DATA.offset]! : 0;
        const bytes = data.length > LEGACY_WR_DATA.data ? data.subarray(LEGACY_WR_DATA.data) : EMPTY;
        const common = opcode === AdminOpcode.LEGACY_COMMON_CFG_WRITE;
        const base = this.checkLegacyRange(member, common, offset, bytes.length);
        if (base < 0) return fail(out, AdminStatusQualifier.INVALID_FIELD);
        writeRange(member.registers, base, bytes);
        return ok(out, ADMIN_CMD_RESULT.size);
      }
      case AdminOpcode.LEGACY_COMMON_CFG_READ:
      case AdminOpcode.LEGACY_DEV_CFG_READ: {
        const offset = data.length > 0 ? data[LEGACY_WR_DATA.offset]! : 0;
        // The read length is the length of the driver's result buffer (§2.12.1.1 legacy read commands).
        const length = Math.max(0, writableLength - ADMIN_CMD_RESULT.size);
        const common = opcode === AdminOpcode.LEGACY_COMMON_CFG_READ;
        const base = this.checkLegacyRange(member, common, offset, length);
        if (base < 0) return fail(out, AdminStatusQualifier.INVALID_FIELD);
        readRange(
          member.registers,
          base,
          out.subarray(ADMIN_CMD_RESULT.size, ADMIN_CMD_RESULT.size + length),
        );
        return ok(out, ADMIN_CMD_RESULT.size + length);
      }
      case AdminOpcode.LEGACY_NOTIFY_INFO: {
        const entries = group.legacyNotifyInfo?.(id) ?? [];
        const base = ADMIN_CMD_RESULT.size;
        out.fill(0, base, base + LEGACY_NOTIFY_INFO.size * LEGACY_NOTIFY_INFO.entries);
        const n = Math.min(entries.length, LEGACY_NOTIFY_INFO.entries - 1);
        for (let i = 0; i < n; i++) {
          const e = entries[i]!;
          const p = base + LEGACY_NOTIFY_INFO.size * i;
          out[p + LEGACY_NOTIFY_INFO.flags] = e.flags;
          out[p + LEGACY_NOTIFY_INFO.bar] = e.bar;
          setU64(out, p + LEGACY_NOTIFY_INFO.offset, BigInt.asUintN(64, e.offset));
        }
        return ok(out, base + LEGACY_NOTIFY_INFO.size * LEGACY_NOTIFY_INFO.entries);
      }
      default:
        return fail(out, AdminStatusQualifier.INVALID_OPCODE);
    }
  }

  /** LIST_QUERY's word for group type `t` (the self group's when migration is served), or null. */
  private supportedFor(t: number): bigint | null {
    if (t === AdminGroupType.SELF && this.migration) return SELF_OPCODES;
    const g = this.groups.get(t);
    return g ? supportedOpcodes(g) : null;
  }

  /** Status header + result of a VIRTIO 1.4 command, in `out` when it fits. */
  private migrationResult(out: Uint8Array, r: MigrationOutcome): AdminCommandOutcome {
    const length = ADMIN_CMD_RESULT.size + r.result.length;
    const bytes = length <= out.length ? out : new Uint8Array(length);
    bytes.fill(0, 0, ADMIN_CMD_RESULT.size);
    setU16(bytes, ADMIN_CMD_RESULT.status, r.status);
    setU16(bytes, ADMIN_CMD_RESULT.statusQualifier, r.qualifier);
    bytes.set(r.result, ADMIN_CMD_RESULT.size);
    const outcome: AdminCommandOutcome = { status: r.status, qualifier: r.qualifier, length };
    if (bytes !== out) outcome.bytes = bytes;
    return outcome;
  }

  /**
   * BAR0-relative start of a legacy access, or -1 when it is empty, outside the part, or spans more
   * than one field (§2.12.1.1 "Device Requirements: Legacy Interface": the device MUST fail such commands).
   */
  private checkLegacyRange(
    member: LegacyMemberAccess,
    common: boolean,
    offset: number,
    length: number,
  ): number {
    if (length <= 0 || length > LEGACY_MAX_ACCESS) return -1;
    const cfgOff = member.deviceConfigOffset();
    if (common) {
      if (offset + length > cfgOff) return -1;
      for (const [o, s] of LEGACY_COMMON_FIELDS) {
        if (offset >= o && offset + length <= o + s) return offset;
      }
      return -1;
    }
    if (offset + length > member.deviceConfigLength()) return -1;
    if (member.isDeviceConfigField && !member.isDeviceConfigField(offset, length)) return -1;
    return cfgOff + offset;
  }
}

const EMPTY = new Uint8Array(0);

function fail(out: Uint8Array, qualifier: number): AdminCommandOutcome {
  setU16(out, ADMIN_CMD_RESULT.status, AdminStatus.EINVAL);
  setU16(out, ADMIN_CMD_RESULT.statusQualifier, qualifier);
  return { status: AdminStatus.EINVAL, qualifier, length: ADMIN_CMD_RESULT.size };
}

function ok(out: Uint8Array, length: number): AdminCommandOutcome {
  setU16(out, ADMIN_CMD_RESULT.status, AdminStatus.OK);
  setU16(out, ADMIN_CMD_RESULT.statusQualifier, AdminStatusQualifier.OK);
  return { status: AdminStatus.OK, qualifier: AdminStatusQualifier.OK, length };
}

/** Little-endian field reads where bytes past the end count as zero (§2.13 truncation rule). */
function u16(b: Uint8Array, o: number): number {
  return (b[o] ?? 0) | ((b[o + 1] ?? 0) << 8);
}

function u64(b: Uint8Array, o: number): bigint {
  let v = 0n;
  for (let i = 7; i >= 0; i--) v = (v << 8n) | BigInt(b[o + i] ?? 0);
  return v;
}

function setU16(b: Uint8Array, o: number, v: number): void {
  b[o] = v & 0xff;
  b[o + 1] = (v >>> 8) & 0xff;
}

function setU64(b: Uint8Array, o: number, v: bigint): void {
  for (let i = 0; i < 8; i++) b[o + i] = Number((v >> BigInt(8 * i)) & 0xffn);
}

/** Naturally aligned piece of at most 4 bytes at `offset` with `remaining` left (as a CPU splits it). */
function pieceSize(offset: number, remaining: number): 1 | 2 | 4 {
  let n = remaining >= 4 ? 4 : remaining >= 2 ? 2 : 1;
  while (offset % n !== 0) n >>= 1;
  return n as 1 | 2 | 4;
}

/** Reads `dst.length` bytes at `offset` as legacy I/O pieces, little-endian (§2.12.1.1: LE always). */
function readRange(h: PieceHandler, offset: number, dst: Uint8Array): void {
  let done = 0;
  while (done < dst.length) {
    const n = pieceSize(offset + done, dst.length - done);
    const v = h.readPiece(offset + done, n) >>> 0;
    for (let i = 0; i < n; i++) dst[done + i] = (v >>> (8 * i)) & 0xff;
    done += n;
  }
}

/** Writes `src` at `offset` as legacy I/O pieces, little-endian. */
function writeRange(h: PieceHandler, offset: number, src: Uint8Array): void {
  let done = 0;
  while (done < src.length) {
    const n = pieceSize(offset + done, src.length - done);
    let v = 0;
    for (let i = 0; i < n; i++) v |= src[done + i]! << (8 * i);
    h.writePiece(offset + done, n, v >>> 0);
    done += n;
  }
}
