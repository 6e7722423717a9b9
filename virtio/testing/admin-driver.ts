/**
 * The owner (PF) driver's side of the administration virtqueue for the synthetic guest
 * (`virtio-net-ts/testing`): what Linux's virtio_pci_modern.c does at DRIVER_OK (LIST_QUERY / LIST_USE on
 * the SR-IOV group, then CAP_ID_LIST_QUERY on the self group and, when the device-parts capability is
 * there, DEVICE_CAP_GET / DRIVER_CAP_SET), and what its virtio-vfio migration driver sends to move a VF:
 * DEV_MODE_SET, RESOURCE_OBJ_CREATE / DESTROY, DEV_PARTS_METADATA_GET, DEV_PARTS_GET, DEV_PARTS_SET
 * (VIRTIO 1.4 §2.12.1). Synchronous: the device completes a command when the queue is kicked.
 */
import type { GuestMemory } from '../../lib/memory/guest-memory.js';
import type { VirtioPciDriver } from './pci-driver.js';

/** Opcodes (VIRTIO 1.4 admin.tex; 0xb/0xc as the command sections number them). */
export const AdminCmd = {
  LIST_QUERY: 0x0,
  LIST_USE: 0x1,
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

export const ADMIN_GROUP_SELF = 0;
export const ADMIN_GROUP_SRIOV = 1;
/** DEV_MODE_SET flags: STOPPED (1.4) and virtio-net-ts's FROZEN (with STOPPED). */
export const DEV_MODE = { ACTIVE: 0, STOPPED: 1, FROZEN: 3 } as const;

/** What a command came back with. */
export interface AdminReply {
  status: number;
  qualifier: number;
  /** command_specific_result: the bytes the device wrote after the 8-byte status header. */
  result: Uint8Array;
  /** Used length the device reported. */
  used: number;
}

/**
 * Linux's VIRTIO_ADMIN_CMD_BITMAP (virtio_pci_common.h): legacy commands 2-6 and the device-parts
 * commands 7-0xa, 0xd-0x11. LIST_QUERY / LIST_USE themselves are not in it.
 */
export const LINUX_ADMIN_CMD_BITMAP = 0x3e7fcn;

export interface AdminDriverOptions {
  /** Guest range for request and result buffers (default: 256 KiB from the PCI driver's allocator). */
  region?: { addr: number; size: number };
}

export class AdminDriver {
  /** Commands the device accepted in LIST_USE (after `listInit`). */
  supported = 0n;
  /** Device-parts objects the driver may use (after `capInit`; 0: no device parts). */
  objectLimit = 0;
  private readonly region: { addr: number; size: number };
  private readonly memory: GuestMemory;

  constructor(
    readonly pci: VirtioPciDriver,
    /** The admin queue's index (set up by the caller, like any queue). */
    readonly queueIndex: number,
    options: AdminDriverOptions = {},
  ) {
    this.memory = pci.memory;
    const size = 256 << 10;
    this.region = options.region ?? { addr: pci.allocator.alloc(size, 4096), size };
  }

  /** Sends one command; `resultLength` is the device-writable room after the status header. */
  command(
    opcode: number,
    groupType: number,
    member: bigint,
    data: Uint8Array = new Uint8Array(0),
    resultLength = 0,
  ): AdminReply {
    const req = new Uint8Array(24 + data.length);
    const dv = new DataView(req.buffer);
    dv.setUint16(0, opcode, true);
    dv.setUint16(2, groupType, true);
    dv.setBigUint64(16, member, true);
    req.set(data, 24);
    const outLen = 8 + resultLength;
    if (req.length + outLen > this.region.size)
      throw new RangeError(
        `admin command needs ${req.length + outLen} bytes, the driver region has ${this.region.size}`,
      );
    const reqAddr = this.region.addr;
    const outAddr = reqAddr + Math.ceil(req.length / 16) * 16;
    this.memory.write(reqAddr, req);
    this.memory.write(outAddr, new Uint8Array(outLen));
    const q = this.pci.queues.get(this.queueIndex);
    if (!q) throw new Error(`admin queue ${this.queueIndex} is not set up`);
    q.add([{ addr: reqAddr, len: req.length }], [{ addr: outAddr, len: outLen }]);
    this.pci.kick(this.queueIndex);
    const u = q.getUsed();
    if (!u) throw new Error(`admin command 0x${opcode.toString(16)} not completed`);
    const out = this.memory.read(outAddr, Math.min(outLen, u.len));
    const status = u.len >= 2 ? out[0]! | (out[1]! << 8) : -1;
    const qualifier = u.len >= 4 ? out[2]! | (out[3]! << 8) : -1;
    return { status, qualifier, result: out.slice(8), used: u.len };
  }

  /** Linux virtio_pci_admin_cmd_list_init: LIST_QUERY, then LIST_USE of what it knows. */
  listInit(known: bigint = LINUX_ADMIN_CMD_BITMAP): bigint {
    const q = this.command(AdminCmd.LIST_QUERY, ADMIN_GROUP_SRIOV, 0n, undefined, 8);
    if (q.status !== 0) return 0n;
    const use = new DataView(q.result.buffer, q.result.byteOffset).getBigUint64(0, true) & known;
    const data = new Uint8Array(8);
    new DataView(data.buffer).setBigUint64(0, use, true);
    if (this.command(AdminCmd.LIST_USE, ADMIN_GROUP_SRIOV, 0n, data).status === 0) this.supported = use;
    return this.supported;
  }

  /** Linux virtio_pci_admin_cmd_cap_init: the device-parts capability, limits set to min(get, set). */
  capInit(): number {
    const q = this.command(AdminCmd.CAP_ID_LIST_QUERY, ADMIN_GROUP_SELF, 0n, undefined, 8);
    if (q.status !== 0 || (q.result[0]! & 1) === 0) return 0;
    const get = this.command(AdminCmd.DEVICE_CAP_GET, ADMIN_GROUP_SELF, 0n, new Uint8Array(8), 2);
    if (get.status !== 0) return 0;
    const limit = Math.min(get.result[0]!, get.result[1]!);
    const set = new Uint8Array(10);
    set[8] = limit;
    set[9] = limit;
    if (this.command(AdminCmd.DRIVER_CAP_SET, ADMIN_GROUP_SELF, 0n, set).status === 0)
      this.objectLimit = limit;
    return this.objectLimit;
  }

  /** DEV_MODE_SET of VF `vf` (1-based). */
  modeSet(vf: number, flags: number): AdminReply {
    return this.command(AdminCmd.DEV_MODE_SET, ADMIN_GROUP_SRIOV, BigInt(vf), Uint8Array.of(flags));
  }

  /** RESOURCE_OBJ_CREATE of a device-parts object `id` for get (0) or set (1). */
  objCreate(vf: number, id: number, purpose: 0 | 1): AdminReply {
    const d = new Uint8Array(24);
    new DataView(d.buffer).setUint32(4, id, true);
    d[16] = purpose;
    return this.command(AdminCmd.RESOURCE_OBJ_CREATE, ADMIN_GROUP_SRIOV, BigInt(vf), d);
  }

  objDestroy(vf: number, id: number): AdminReply {
    const d = new Uint8Array(8);
    new DataView(d.buffer).setUint32(4, id, true);
    return this.command(AdminCmd.RESOURCE_OBJ_DESTROY, ADMIN_GROUP_SRIOV, BigInt(vf), d);
  }

  /** DEV_PARTS_METADATA_GET type SIZE (0), COUNT (1) or LIST (2). */
  metadata(vf: number, id: number, type: number, resultLength = 8): AdminReply {
    const d = new Uint8Array(16);
    new DataView(d.buffer).setUint32(4, id, true);
    d[8] = type;
    return this.command(AdminCmd.DEV_PARTS_METADATA_GET, ADMIN_GROUP_SRIOV, BigInt(vf), d, resultLength);
  }

  /** DEV_PARTS_GET type ALL, into a buffer of `resultLength` (default: the size METADATA_GET reports). */
  partsGet(vf: number, id: number, resultLength?: number): AdminReply {
    let room = resultLength;
    if (room === undefined) {
      const m = this.metadata(vf, id, 0);
      if (m.status !== 0) return m;
      room = new DataView(m.result.buffer, m.result.byteOffset).getUint32(0, true);
    }
    const d = new Uint8Array(16);
    new DataView(d.buffer).setUint32(4, id, true);
    d[8] = 1;
    return this.command(AdminCmd.DEV_PARTS_GET, ADMIN_GROUP_SRIOV, BigInt(vf), d, room);
  }

  /** DEV_PARTS_SET of `parts` (a part list as DEV_PARTS_GET returned it). */
  partsSet(vf: number, id: number, parts: Uint8Array): AdminReply {
    const d = new Uint8Array(8 + parts.length);
    new DataView(d.buffer).setUint32(4, id, true);
    d.set(parts, 8);
    return this.command(AdminCmd.DEV_PARTS_SET, ADMIN_GROUP_SRIOV, BigInt(vf), d);
  }
}
