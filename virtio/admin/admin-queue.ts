/**
 * Administration virtqueues (VIRTIO 1.3 §2.13): the owner device side. Each chain is one
 * `struct virtio_admin_cmd`: a device-readable part (header + command_specific_data) then a
 * device-writable part (status, status_qualifier, reserved, command_specific_result). Commands are
 * executed in queue order by `AdminCommandProcessor` (admin-commands.ts); the used length is exactly
 * the number of bytes written.
 *
 * Buffer lengths (§2.13 device requirements): a part shorter than the structure reads as zero-extended
 * and the result is cut to the buffer; a longer one is ignored past the structure. A command is never
 * failed for its lengths alone. Ring-level garbage (bad descriptors, writable before readable, memory
 * outside the guest) is a broken driver: DEVICE_NEEDS_RESET through the context, as for any virtqueue.
 *
 * The transport owns these queues (they are not the device type's queues): see docs/admin-queue.md.
 */
import { GuestMemoryError } from '../../lib/errors.js';
import type { GuestMemory } from '../../lib/memory/guest-memory.js';
import { PCI_SRIOV_CTRL_VFE, type SriovCapability } from '../../pci/sriov.js';
import {
  ADMIN_CMD_HDR,
  ADMIN_CMD_RESULT,
  type AdminCommandOptions,
  AdminCommandProcessor,
  type AdminCommandState,
  AdminGroupType,
  type DeviceGroup,
  LEGACY_MAX_ACCESS,
  LEGACY_NOTIFY_INFO,
  LEGACY_WR_DATA,
  type LegacyMemberAccess,
  type LegacyNotifyEntry,
} from './admin-commands.js';
import { MAX_PARTS_BYTES, type MigrationMember } from './migration-commands.js';
import { gatherReadable, scatterWritable } from '../queue/descriptor-chain.js';
import { DescriptorChain, type Virtqueue, VirtqueueError } from '../queue/virtqueue.js';

/** The part of `VirtioDeviceContext` an admin queue needs (the transport's own context satisfies it). */
export interface AdminQueueContext {
  readonly memory: GuestMemory;
  queue(index: number): Virtqueue | null;
  notifyQueue(index: number): void;
  needsReset(reason: string): void;
}

/** Device-readable bytes read per command: header + the largest data any supported command uses. */
const MAX_REQUEST = ADMIN_CMD_HDR.size + LEGACY_WR_DATA.data + LEGACY_MAX_ACCESS;
/** Device-writable bytes a command can produce. */
const MAX_RESULT = ADMIN_CMD_RESULT.size + Math.max(LEGACY_MAX_ACCESS, LEGACY_NOTIFY_INFO.size * 4);

/** Counters for diagnostics. */
export interface AdminQueueStats {
  commands: number;
  errors: number;
  /** Chains that broke the ring rules (each also raised DEVICE_NEEDS_RESET). */
  guestErrors: number;
}

/**
 * Owner-device side of the administration virtqueue(s). One instance serves every admin queue of the
 * device (`admin_queue_num` may be more than 1; commands on one queue run in order, §2.13).
 */
export class AdminQueue {
  readonly processor: AdminCommandProcessor;
  readonly stats: AdminQueueStats = { commands: 0, errors: 0, guestErrors: 0 };
  private readonly chain = new DescriptorChain(8);
  private readonly request = new Uint8Array(MAX_REQUEST);
  private readonly result = new Uint8Array(MAX_RESULT);

  constructor(groups: readonly DeviceGroup[], options: AdminCommandOptions = {}) {
    this.processor = new AdminCommandProcessor(groups, options);
  }

  /**
   * Handles every available command on admin queue `index` (call on a driver notification of that
   * queue, and after DRIVER_OK if chains may already be queued). Returns the number of commands
   * completed. Never throws for guest-built content: a broken ring raises `ctx.needsReset` and stops.
   */
  process(ctx: AdminQueueContext, index: number): number {
    const q = ctx.queue(index);
    if (!q) return 0;
    let done = 0;
    try {
      while (q.pop(this.chain)) {
        this.completeOne(ctx, q, this.chain);
        done++;
      }
    } catch (e) {
      if (!(e instanceof VirtqueueError || e instanceof GuestMemoryError)) throw e;
      this.stats.guestErrors++;
      ctx.needsReset(`admin queue ${index}: ${e.message}`);
    }
    if (done > 0 && q.needsNotification()) ctx.notifyQueue(index);
    return done;
  }

  /** Device reset (status 0, FLR): LIST_USE state back to {LIST_QUERY, LIST_USE}. */
  reset(): void {
    this.processor.reset();
  }

  snapshot(): AdminCommandState {
    return this.processor.snapshot();
  }

  restore(state: AdminCommandState): void {
    this.processor.restore(state);
  }

  private completeOne(ctx: AdminQueueContext, q: Virtqueue, chain: DescriptorChain): void {
    // DEV_PARTS_SET carries whole device states: larger requests get a buffer of their own (bounded).
    const n = Math.min(chain.readableLength, ADMIN_CMD_HDR.size + MAX_PARTS_BYTES);
    const req = n <= MAX_REQUEST ? this.request.subarray(0, n) : new Uint8Array(n);
    gatherReadable(ctx.memory, chain, req);
    const outcome = this.processor.execute(req, chain.writableLength, this.result);
    this.stats.commands++;
    if (outcome.status !== 0) this.stats.errors++;
    const len = Math.min(outcome.length, chain.writableLength);
    const bytes = outcome.bytes ?? this.result;
    const written = len > 0 ? scatterWritable(ctx.memory, chain, bytes.subarray(0, len)) : 0;
    q.push(chain, written);
  }
}

/** How an SR-IOV owner reaches its members for the legacy commands. */
export interface SriovGroupOptions {
  /** Legacy register access of VF number `vf` (1-based); absent: opcodes 2-5 are not offered. */
  legacyMember?(vf: number): LegacyMemberAccess | null;
  /** LEGACY_NOTIFY_INFO entries of VF `vf`; absent: opcode 6 is not offered (VF BAR0 need not be 0). */
  legacyNotifyInfo?(vf: number): readonly LegacyNotifyEntry[];
  /** VF `vf`'s side of the VIRTIO 1.4 device-parts commands; absent: opcodes 7-0x11 are not offered. */
  migrationMember?(vf: number): MigrationMember | null;
}

/**
 * The SR-IOV device group (type 0x1, §2.12) of a PF: exists while VF Enable is set, members are the VFs
 * that exist (VF number 1..NumVFs). Our `SriovCapability` keeps VF Enable set without VFs when NumVFs
 * exceeded TotalVFs (QEMU 7.2); such a group has no members.
 */
export function sriovDeviceGroup(sriov: SriovCapability, options: SriovGroupOptions = {}): DeviceGroup {
  const group: DeviceGroup = {
    groupType: AdminGroupType.SRIOV,
    exists: () => (sriov.control & PCI_SRIOV_CTRL_VFE) !== 0,
    memberCount: () => sriov.vfs.length,
  };
  if (options.legacyMember) group.legacyMember = options.legacyMember;
  if (options.legacyNotifyInfo) group.legacyNotifyInfo = options.legacyNotifyInfo;
  if (options.migrationMember) group.migrationMember = options.migrationMember;
  return group;
}
