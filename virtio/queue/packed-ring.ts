/**
 * Device side of a packed virtqueue (VIRTIO 1.3 §2.8): one descriptor ring shared both ways, AVAIL/USED
 * flag bits against 1-bit wrap counters, and two event suppression structures.
 *
 * Ordering: a descriptor's flags are read (and found available) before its other fields; used
 * descriptors are written id/len first and flags last, and a batch publishes its first descriptor's
 * flags after all the others (§2.8.21.2), so the driver sees the whole batch at once.
 */
import type { GuestMemory } from '../../lib/memory/guest-memory.js';
import { readAddress } from '../../lib/memory/guest-memory.js';
import { memoryFence } from '../../lib/memory/fence.js';
import { addSegment, memoryIsValid, toVirtqueueError } from './split-ring.js';
import {
  type DescriptorChain,
  type Virtqueue,
  type VirtqueueConfig,
  VirtqueueError,
  type VirtqueueState,
} from './virtqueue.js';

/** `struct pvirtq_desc` (16 bytes, §2.8.13). */
export const PACKED_DESC = { size: 16, addr: 0, len: 8, id: 12, flags: 14 } as const;
/** `struct pvirtq_event_suppress` (4 bytes, §2.8.14): off_wrap (offset bits 0-14, wrap bit 15), flags. */
export const PACKED_EVENT = { offWrap: 0, flags: 2, size: 4 } as const;

export const VIRTQ_DESC_F_AVAIL = 1 << 7;
export const VIRTQ_DESC_F_USED = 1 << 15;
export const RING_EVENT_FLAGS_ENABLE = 0;
export const RING_EVENT_FLAGS_DISABLE = 1;
/** Notify at a given ring position (off_wrap); only with VIRTIO_F_EVENT_IDX. */
export const RING_EVENT_FLAGS_DESC = 2;

const F_NEXT = 1;
const F_WRITE = 2;
const F_INDIRECT = 4;

/** Whether a descriptor's flags mark it available for the given driver wrap counter (§2.8.1). */
export function packedIsAvailable(flags: number, wrap: boolean): boolean {
  const avail = (flags & VIRTQ_DESC_F_AVAIL) !== 0;
  const used = (flags & VIRTQ_DESC_F_USED) !== 0;
  return avail === wrap && used !== wrap;
}

/**
 * Whether moving a ring position from `old` to `next` passed the event position `event`, where each
 * position is `slot + (wrapCounter ? 0 : size)`, i.e. a counter modulo `2 * size` (§2.8.10's off_wrap
 * made lap-aware; like `vring_need_event` for split rings).
 */
export function packedNeedEvent(event: number, next: number, old: number, size: number): boolean {
  const m = 2 * size;
  return (((next - event - 1) % m) + m) % m < (((next - old) % m) + m) % m;
}

/** The lap-aware position of a slot/wrap pair (see `packedNeedEvent`). */
export function packedPosition(slot: number, wrap: boolean, size: number): number {
  return slot + (wrap ? 0 : size);
}

export class PackedRing implements Virtqueue {
  readonly index: number;
  readonly size: number;
  readonly packed = true;
  private readonly mem: GuestMemory;
  private readonly ringAddr: number;
  private readonly driverEvent: number;
  private readonly deviceEvent: number;
  private readonly eventIdx: boolean;

  private nextAvail = 0;
  private availWrap = true;
  private nextUsed = 0;
  private usedWrap = true;
  /** Staged (written but unpublished) used position, and the held-back flags of the batch's first entry. */
  private stagedUsed = 0;
  private stagedWrap = true;
  private firstSlot = -1;
  private firstFlags = 0;
  private signalledUsed = 0;
  private signalledValid = false;
  /** Ring slots staged / published since the last `needsNotification` (capped at 2 * size). */
  private stagedSlots = 0;
  private slotsSinceSignal = 0;
  private notificationsDisabled = false;
  /** Buffer ids popped and not yet used: a second pop of one is a guest error. */
  private readonly inFlight: Uint8Array;

  constructor(memory: GuestMemory, config: VirtqueueConfig) {
    const q = config.size;
    if (!Number.isInteger(q) || q < 1 || q > 32768) {
      throw new VirtqueueError('memory', `packed queue ${config.index}: size ${q} is not in 1..32768`);
    }
    this.index = config.index;
    this.size = q;
    this.mem = memory;
    this.ringAddr = config.descAddr;
    this.driverEvent = config.driverAddr;
    this.deviceEvent = config.deviceAddr;
    this.eventIdx = config.eventIdx;
    this.inFlight = new Uint8Array(q);
    this.checkPart('descriptor ring', this.ringAddr, 16 * q, 16);
    this.checkPart('driver event suppression', this.driverEvent, 4, 4);
    this.checkPart('device event suppression', this.deviceEvent, 4, 4);
  }

  private checkPart(what: string, addr: number, len: number, align: number): void {
    if (!memoryIsValid(this.mem, addr, len) || addr % align !== 0) {
      throw new VirtqueueError(
        'memory',
        `packed queue ${this.index}: ${what} at 0x${Number(addr).toString(16)} (+${len}, align ${align}) is not in guest memory`,
      );
    }
  }

  hasAvailable(): boolean {
    try {
      const flags = this.mem.readU16(this.ringAddr + PACKED_DESC.size * this.nextAvail + PACKED_DESC.flags);
      return packedIsAvailable(flags, this.availWrap);
    } catch (e) {
      throw toVirtqueueError(this, e);
    }
  }

  /**
   * Takes the next chain. On a `VirtqueueError` nothing is consumed (the chain's extent is unknown), so
   * the device must reset the queue (NEEDS_RESET).
   */
  pop(chain: DescriptorChain): boolean {
    try {
      const mem = this.mem;
      const q = this.size;
      const ring = this.ringAddr;
      let slot = this.nextAvail;
      let wrap = this.availWrap;
      if (!packedIsAvailable(mem.readU16(ring + PACKED_DESC.size * slot + PACKED_DESC.flags), wrap))
        return false;
      chain.clear();
      let count = 0;
      let segments = 0;
      let id = 0;
      for (;;) {
        if (++count > q) {
          throw new VirtqueueError(
            'chain-too-long',
            `packed queue ${this.index}: chain longer than queue size ${q}`,
          );
        }
        const d = ring + PACKED_DESC.size * slot;
        const addr = readAddress(mem, d + PACKED_DESC.addr);
        const len = mem.readU32(d + PACKED_DESC.len);
        id = mem.readU16(d + PACKED_DESC.id);
        const flags = mem.readU16(d + PACKED_DESC.flags);
        if (++slot === q) {
          slot = 0;
          wrap = !wrap;
        }
        if (flags & F_INDIRECT) {
          if (flags & F_NEXT) {
            throw new VirtqueueError(
              'indirect-with-next',
              `packed queue ${this.index}: descriptor has INDIRECT and NEXT`,
            );
          }
          segments = this.walkIndirect(chain, addr, len, segments);
          break;
        }
        if (++segments > q) {
          throw new VirtqueueError(
            'chain-too-long',
            `packed queue ${this.index}: chain longer than queue size ${q}`,
          );
        }
        addSegment(mem, this, chain, addr, len, (flags & F_WRITE) !== 0);
        if ((flags & F_NEXT) === 0) break;
      }
      if (id >= q || this.inFlight[id] !== 0) {
        throw new VirtqueueError(
          'buffer-id',
          `packed queue ${this.index}: buffer id ${id} ${id >= q ? `>= queue size ${q}` : 'is already in flight'}`,
        );
      }
      this.inFlight[id] = 1;
      chain.head = id;
      chain.descCount = count;
      this.nextAvail = slot;
      this.availWrap = wrap;
      if (this.eventIdx && !this.notificationsDisabled) this.writeDeviceEvent();
      return true;
    } catch (e) {
      throw toVirtqueueError(this, e);
    }
  }

  /** An indirect table: `len / 16` descriptors used in order; only WRITE is meaningful inside (§2.8.11). */
  private walkIndirect(chain: DescriptorChain, table: number, len: number, segments: number): number {
    const mem = this.mem;
    if (len === 0 || len % PACKED_DESC.size !== 0) {
      throw new VirtqueueError('indirect-length', `packed queue ${this.index}: indirect table length ${len}`);
    }
    if (!memoryIsValid(mem, table, len)) {
      throw new VirtqueueError(
        'memory',
        `packed queue ${this.index}: indirect table 0x${table.toString(16)} +${len}`,
      );
    }
    const n = len / PACKED_DESC.size;
    if (segments + n > this.size) {
      throw new VirtqueueError(
        'chain-too-long',
        `packed queue ${this.index}: chain longer than queue size ${this.size}`,
      );
    }
    for (let i = 0; i < n; i++) {
      const d = table + PACKED_DESC.size * i;
      const flags = mem.readU16(d + PACKED_DESC.flags);
      if (flags & F_INDIRECT) {
        throw new VirtqueueError(
          'nested-indirect',
          `packed queue ${this.index}: indirect descriptor in an indirect table`,
        );
      }
      addSegment(
        mem,
        this,
        chain,
        readAddress(mem, d + PACKED_DESC.addr),
        mem.readU32(d + PACKED_DESC.len),
        (flags & F_WRITE) !== 0,
      );
    }
    return segments + n;
  }

  unpop(chain: DescriptorChain): void {
    let slot = this.nextAvail - chain.descCount;
    if (slot < 0) {
      slot += this.size;
      this.availWrap = !this.availWrap;
    }
    this.nextAvail = slot;
    if (chain.head < this.size) this.inFlight[chain.head] = 0;
  }

  addUsed(chain: DescriptorChain, written: number): void {
    try {
      const d = this.ringAddr + PACKED_DESC.size * this.stagedUsed;
      this.mem.writeU16(d + PACKED_DESC.id, chain.head);
      this.mem.writeU32(d + PACKED_DESC.len, written >>> 0);
      // QEMU sets WRITE when the buffer had a device-writable part: len is then meaningful (§2.8.9).
      const flags =
        (this.stagedWrap ? VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED : 0) |
        (chain.writableCount > 0 ? F_WRITE : 0);
      if (this.firstSlot < 0) {
        this.firstSlot = this.stagedUsed;
        this.firstFlags = flags;
      } else {
        this.mem.writeU16(d + PACKED_DESC.flags, flags);
      }
      const slots = Math.max(1, chain.descCount);
      this.stagedSlots += slots;
      let next = this.stagedUsed + slots;
      if (next >= this.size) {
        next -= this.size;
        this.stagedWrap = !this.stagedWrap;
      }
      this.stagedUsed = next;
      if (chain.head < this.size) this.inFlight[chain.head] = 0;
    } catch (e) {
      throw toVirtqueueError(this, e);
    }
  }

  publishUsed(): void {
    if (this.firstSlot < 0) return;
    try {
      this.mem.writeU16(
        this.ringAddr + PACKED_DESC.size * this.firstSlot + PACKED_DESC.flags,
        this.firstFlags,
      );
    } catch (e) {
      throw toVirtqueueError(this, e);
    }
    this.firstSlot = -1;
    this.nextUsed = this.stagedUsed;
    this.usedWrap = this.stagedWrap;
    this.slotsSinceSignal = Math.min(this.slotsSinceSignal + this.stagedSlots, 2 * this.size);
    this.stagedSlots = 0;
  }

  push(chain: DescriptorChain, written: number): void {
    this.addUsed(chain, written);
    this.publishUsed();
  }

  needsNotification(): boolean {
    memoryFence(); // the used descriptors we published are visible before we read the driver's wish
    try {
      const flags = this.mem.readU16(this.driverEvent + PACKED_EVENT.flags) & 3;
      const old = this.signalledUsed;
      const valid = this.signalledValid;
      const next = packedPosition(this.nextUsed, this.usedWrap, this.size);
      const passed = this.slotsSinceSignal;
      this.signalledUsed = next;
      this.signalledValid = true;
      this.slotsSinceSignal = 0;
      if (flags === RING_EVENT_FLAGS_DISABLE) return false;
      if (flags !== RING_EVENT_FLAGS_DESC || !this.eventIdx) return true; // ENABLE, or reserved: be safe
      const offWrap = this.mem.readU16(this.driverEvent + PACKED_EVENT.offWrap);
      const off = offWrap & 0x7fff;
      if (off >= this.size) return true; // nonsense offset: notify rather than lose an interrupt
      const event = packedPosition(off, (offWrap & 0x8000) !== 0, this.size);
      // Positions repeat every 2 * size slots: having published that many, every event was passed.
      return !valid || passed >= 2 * this.size || packedNeedEvent(event, next, old, this.size);
    } catch (e) {
      throw toVirtqueueError(this, e);
    }
  }

  private writeDeviceEvent(): void {
    this.mem.writeU16(
      this.deviceEvent + PACKED_EVENT.offWrap,
      this.nextAvail | (this.availWrap ? 0x8000 : 0),
    );
  }

  enableNotification(): boolean {
    this.notificationsDisabled = false;
    try {
      if (this.eventIdx) {
        this.writeDeviceEvent();
        this.mem.writeU16(this.deviceEvent + PACKED_EVENT.flags, RING_EVENT_FLAGS_DESC);
      } else {
        this.mem.writeU16(this.deviceEvent + PACKED_EVENT.flags, RING_EVENT_FLAGS_ENABLE);
      }
    } catch (e) {
      throw toVirtqueueError(this, e);
    }
    // Look again after publishing our wish (fenced): chains added meanwhile would not have kicked.
    memoryFence();
    return this.hasAvailable();
  }

  disableNotification(): void {
    this.notificationsDisabled = true;
    try {
      this.mem.writeU16(this.deviceEvent + PACKED_EVENT.flags, RING_EVENT_FLAGS_DISABLE);
    } catch (e) {
      throw toVirtqueueError(this, e);
    }
  }

  state(): VirtqueueState {
    return {
      nextAvail: this.nextAvail,
      nextUsed: this.nextUsed,
      availWrap: this.availWrap,
      usedWrap: this.usedWrap,
      notificationsDisabled: this.notificationsDisabled,
      signalledUsed: this.signalledUsed,
    };
  }

  restore(state: VirtqueueState): void {
    const q = this.size;
    this.nextAvail = state.nextAvail % q;
    this.availWrap = state.availWrap ?? true;
    this.nextUsed = state.nextUsed % q;
    this.usedWrap = state.usedWrap ?? true;
    this.stagedUsed = this.nextUsed;
    this.stagedWrap = this.usedWrap;
    this.firstSlot = -1;
    this.stagedSlots = 0;
    this.slotsSinceSignal = 0;
    this.notificationsDisabled = state.notificationsDisabled;
    this.inFlight.fill(0);
    if (state.signalledUsed !== undefined) {
      this.signalledUsed = state.signalledUsed % (2 * q);
      this.signalledValid = true;
    } else {
      this.signalledValid = false;
    }
  }
}
