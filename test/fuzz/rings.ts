/**
 * Raw ring writes for the guest-rings target: what a buggy or hostile driver can put in guest memory,
 * bypassing the driver kit's bookkeeping. Layouts from VIRTIO 1.3 §2.7 (split) and §2.8 (packed).
 */
import type { GuestMemory } from '../../lib/memory/guest-memory.js';
import type { VirtqueueConfig } from '../../virtio/queue/virtqueue.js';

/** Descriptor flags: split NEXT 1 / WRITE 2 / INDIRECT 4; packed adds AVAIL 1<<7 and USED 1<<15. */
export const F_NEXT = 1;
export const F_WRITE = 2;
export const F_INDIRECT = 4;
export const F_AVAIL = 0x80;
export const F_USED = 0x8000;

export interface RawDesc {
  addr: bigint;
  len: number;
  flags: number;
  /** Split: next index. Packed: buffer id. */
  next: number;
}

/** Writes a 16-byte descriptor at `at`: split {addr, len, flags, next}, packed {addr, len, id, flags}. */
export function writeDesc(mem: GuestMemory, at: number, d: RawDesc, packed: boolean): void {
  mem.writeU64(at, BigInt.asUintN(64, d.addr));
  mem.writeU32(at + 8, d.len >>> 0);
  if (packed) {
    mem.writeU16(at + 12, d.next & 0xffff);
    mem.writeU16(at + 14, d.flags & 0xffff);
  } else {
    mem.writeU16(at + 12, d.flags & 0xffff);
    mem.writeU16(at + 14, d.next & 0xffff);
  }
}

/** Split avail ring: flags at 0, idx at 2, ring[size] at 4, used_event after it. */
export function splitAvailIdx(mem: GuestMemory, q: VirtqueueConfig): number {
  return mem.readU16(q.driverAddr + 2);
}
export function setSplitAvail(
  mem: GuestMemory,
  q: VirtqueueConfig,
  field: 'flags' | 'idx' | 'entry' | 'usedEvent',
  value: number,
  slot = 0,
): void {
  const at =
    field === 'flags'
      ? q.driverAddr
      : field === 'idx'
        ? q.driverAddr + 2
        : field === 'entry'
          ? q.driverAddr + 4 + 2 * (slot % q.size)
          : q.driverAddr + 4 + 2 * q.size;
  mem.writeU16(at, value & 0xffff);
}

/** Split used ring: idx at 2. */
export function splitUsedIdx(mem: GuestMemory, q: VirtqueueConfig): number {
  return mem.readU16(q.deviceAddr + 2);
}

/** Scribbles on a device-owned area (split used ring / packed device event): the device must not care. */
export function scribbleDeviceArea(
  mem: GuestMemory,
  q: VirtqueueConfig,
  packed: boolean,
  offset: number,
  value: number,
): void {
  const len = packed ? 4 : 4 + 8 * q.size + 2;
  mem.writeU16(q.deviceAddr + (offset % (len - 1)), value & 0xffff);
}

/** Packed driver event suppression structure {off_wrap, flags} (§2.8.14). */
export function setPackedDriverEvent(
  mem: GuestMemory,
  q: VirtqueueConfig,
  offWrap: number,
  flags: number,
): void {
  mem.writeU16(q.driverAddr, offWrap & 0xffff);
  mem.writeU16(q.driverAddr + 2, flags & 0xffff);
}
