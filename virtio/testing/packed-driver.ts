/**
 * The driver side of a packed virtqueue (VIRTIO 1.3 §2.8) over synthetic guest memory: lays out the
 * descriptor ring and the two event suppression structures, posts chains (direct or indirect) with the
 * first descriptor's flags written last, reads used descriptors and honours event suppression.
 */
import type { GuestMemory } from '../../lib/memory/guest-memory.js';
import {
  PACKED_DESC,
  PACKED_EVENT,
  packedNeedEvent,
  packedPosition,
  RING_EVENT_FLAGS_DESC,
  RING_EVENT_FLAGS_DISABLE,
  RING_EVENT_FLAGS_ENABLE,
  VIRTQ_DESC_F_AVAIL,
  VIRTQ_DESC_F_USED,
} from '../queue/packed-ring.js';
import { VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from '../queue/split-ring.js';
import type { VirtqueueConfig } from '../queue/virtqueue.js';
import type { BumpAllocator } from './bump-allocator.js';
import type { AddOptions, DriverBuffer, DriverSegment, UsedBuffer } from './driver-buffer.js';

export interface PackedDriverOptions {
  /** Queue size, 1..32768 (need not be a power of two). */
  size: number;
  /** Descriptor ring, driver event suppression (driver writes), device event suppression (device writes). */
  descAddr: number;
  driverAddr: number;
  deviceAddr: number;
  /** VIRTIO_F_EVENT_IDX negotiated: RING_EVENT_FLAGS_DESC may be used. */
  eventIdx?: boolean;
  index?: number;
  /**
   * VIRTIO_F_IN_ORDER negotiated: buffer ids are the chain's first slot (as Linux 7.2 assigns them) and
   * used descriptors are read as virtqueue_get_buf_ctx_packed_in_order does: one may complete a batch.
   */
  inOrder?: boolean;
  /** Where `add` places `Uint8Array` buffers and indirect tables. */
  allocator?: BumpAllocator;
}

interface InFlight {
  descCount: number;
  segments: DriverSegment[];
  /** Sum of the device-writable lengths (what a buffer completed inside a batch reports). */
  writableLength: number;
}

/** Driver side of one packed virtqueue. */
export class PackedDriverQueue {
  readonly size: number;
  readonly eventIdx: boolean;
  readonly inOrder: boolean;
  /** What the transport hands to `createVirtqueue(..., true)` for this queue. */
  readonly config: VirtqueueConfig;
  private readonly mem: GuestMemory;
  private readonly alloc: BumpAllocator | undefined;
  private readonly freeIds: number[] = [];
  private readonly inFlight = new Map<number, InFlight>();
  private readonly indirectTables = new Map<number, { addr: number; entries: number }>();
  private freeSlots: number;
  private nextAvail = 0;
  private availWrap = true;
  private kickedPos = 0;
  private lastUsed = 0;
  private usedWrap = true;
  /** IN_ORDER: the open batch's used descriptor (id -1: none read). */
  private batchLastId = -1;
  private batchLastLen = 0;

  /** Lays out the ring (align 16) and both event structures (align 4) with `allocator`, used for buffers too. */
  static allocate(
    memory: GuestMemory,
    allocator: BumpAllocator,
    size: number,
    options: { eventIdx?: boolean; index?: number; inOrder?: boolean } = {},
  ): PackedDriverQueue {
    const descAddr = allocator.alloc(16 * size, 16);
    const driverAddr = allocator.alloc(PACKED_EVENT.size, 4);
    const deviceAddr = allocator.alloc(PACKED_EVENT.size, 4);
    return new PackedDriverQueue(memory, { size, descAddr, driverAddr, deviceAddr, allocator, ...options });
  }

  /** Zeroes the ring and both event structures (flags ENABLE) at the given addresses. */
  constructor(memory: GuestMemory, options: PackedDriverOptions) {
    const q = options.size;
    if (!Number.isInteger(q) || q < 1 || q > 32768) {
      throw new RangeError(`PackedDriverQueue: size ${q} is not in 1..32768`);
    }
    this.size = q;
    this.eventIdx = options.eventIdx ?? false;
    this.inOrder = options.inOrder ?? false;
    this.mem = memory;
    this.alloc = options.allocator;
    this.freeSlots = q;
    this.config = {
      index: options.index ?? 0,
      size: q,
      descAddr: options.descAddr,
      driverAddr: options.driverAddr,
      deviceAddr: options.deviceAddr,
      eventIdx: this.eventIdx,
      ...(this.inOrder ? { inOrder: true } : {}),
    };
    memory.write(options.descAddr, new Uint8Array(16 * q));
    memory.write(options.driverAddr, new Uint8Array(PACKED_EVENT.size));
    memory.write(options.deviceAddr, new Uint8Array(PACKED_EVENT.size));
    for (let i = q - 1; i >= 0; i--) this.freeIds.push(i);
  }

  /** Free ring slots. */
  get numFree(): number {
    return this.freeSlots;
  }

  /** Where the next chain goes: the next_off / next_wrap of a notification (§2.9). */
  get availPosition(): { offset: number; wrap: boolean } {
    return { offset: this.nextAvail, wrap: this.availWrap };
  }

  /**
   * Posts one chain (readable segments, then writable ones) and returns its buffer id, which `getUsed`
   * reports. A `Uint8Array` is copied into freshly allocated guest memory; `{addr, len}` is used as is.
   * Every descriptor carries the id; the first one's flags are written last, making the chain available.
   */
  add(readable: DriverBuffer[], writable: DriverBuffer[], options: AddOptions = {}): number {
    const segments: DriverSegment[] = [
      ...readable.map((b) => this.place(b, false)),
      ...writable.map((b) => this.place(b, true)),
    ];
    if (segments.length === 0)
      throw new RangeError('PackedDriverQueue.add: a chain needs at least one segment');
    const indirect = options.indirect ?? false;
    const needed = indirect ? 1 : segments.length;
    if (needed > this.freeSlots || (!this.inOrder && this.freeIds.length === 0)) {
      throw new RangeError(`PackedDriverQueue.add: ${needed} slots needed, ${this.freeSlots} free`);
    }
    // IN_ORDER: the id is the first slot (Linux 7.2), unique while in flight since slots are.
    const id = this.inOrder ? this.nextAvail : this.freeIds.pop()!;
    const first = this.nextAvail;
    let firstFlags = 0;
    const put = (addr: number, len: number, flags: number): void => {
      const slot = this.nextAvail;
      const d = this.config.descAddr + PACKED_DESC.size * slot;
      const wrapFlags = this.availWrap ? VIRTQ_DESC_F_AVAIL : VIRTQ_DESC_F_USED;
      this.mem.writeU64(d + PACKED_DESC.addr, addr);
      this.mem.writeU32(d + PACKED_DESC.len, len);
      this.mem.writeU16(d + PACKED_DESC.id, id);
      if (slot === first) firstFlags = flags | wrapFlags;
      else this.mem.writeU16(d + PACKED_DESC.flags, flags | wrapFlags);
      if (++this.nextAvail === this.size) {
        this.nextAvail = 0;
        this.availWrap = !this.availWrap;
      }
    };
    if (indirect) {
      const table = this.indirectTable(id, segments.length);
      segments.forEach((s, i) => {
        const d = table + PACKED_DESC.size * i;
        this.mem.writeU64(d + PACKED_DESC.addr, s.addr);
        this.mem.writeU32(d + PACKED_DESC.len, s.len);
        this.mem.writeU16(d + PACKED_DESC.id, 0);
        this.mem.writeU16(d + PACKED_DESC.flags, s.write ? VIRTQ_DESC_F_WRITE : 0);
      });
      put(table, PACKED_DESC.size * segments.length, VIRTQ_DESC_F_INDIRECT);
    } else {
      segments.forEach((s, i) => {
        const last = i === segments.length - 1;
        put(s.addr, s.len, (s.write ? VIRTQ_DESC_F_WRITE : 0) | (last ? 0 : VIRTQ_DESC_F_NEXT));
      });
    }
    // Everything else is in place: now make the chain available (§2.8.21.1).
    this.mem.writeU16(this.config.descAddr + PACKED_DESC.size * first + PACKED_DESC.flags, firstFlags);
    this.freeSlots -= needed;
    const writableLength = segments.reduce((n, s) => n + (s.write ? s.len : 0), 0);
    this.inFlight.set(id, { descCount: needed, segments, writableLength });
    return id;
  }

  /** Takes the next used descriptor, or null when the device has not used the next slot yet. */
  getUsed(): UsedBuffer | null {
    if (this.inOrder) return this.getUsedInOrder();
    const d = this.config.descAddr + PACKED_DESC.size * this.lastUsed;
    const flags = this.mem.readU16(d + PACKED_DESC.flags);
    const avail = (flags & VIRTQ_DESC_F_AVAIL) !== 0;
    const used = (flags & VIRTQ_DESC_F_USED) !== 0;
    if (avail !== this.usedWrap || used !== this.usedWrap) return null;
    const id = this.mem.readU16(d + PACKED_DESC.id);
    const len = this.mem.readU32(d + PACKED_DESC.len);
    const chain = this.inFlight.get(id);
    if (chain === undefined)
      throw new Error(`PackedDriverQueue: device returned buffer id ${id}, which is not in flight`);
    this.inFlight.delete(id);
    this.freeIds.push(id);
    this.freeSlots += chain.descCount;
    this.lastUsed += chain.descCount;
    if (this.lastUsed >= this.size) {
      this.lastUsed -= this.size;
      this.usedWrap = !this.usedWrap;
    }
    return { id, len, segments: chain.segments };
  }

  /**
   * IN_ORDER, as Linux 7.2 reads it: the used descriptor at the used position names the last buffer of
   * a batch; buffers are taken in ring order, those before it with their whole writable length, the
   * named one with the descriptor's len; the position skips each buffer's slots.
   */
  private getUsedInOrder(): UsedBuffer | null {
    if (this.batchLastId < 0) {
      const d = this.config.descAddr + PACKED_DESC.size * this.lastUsed;
      const flags = this.mem.readU16(d + PACKED_DESC.flags);
      const avail = (flags & VIRTQ_DESC_F_AVAIL) !== 0;
      const used = (flags & VIRTQ_DESC_F_USED) !== 0;
      if (avail !== this.usedWrap || used !== this.usedWrap) return null;
      this.batchLastId = this.mem.readU16(d + PACKED_DESC.id);
      this.batchLastLen = this.mem.readU32(d + PACKED_DESC.len);
    }
    const id = this.lastUsed;
    const chain = this.inFlight.get(id);
    if (chain === undefined)
      throw new Error(
        `PackedDriverQueue: used descriptor names id ${this.batchLastId}, beyond the buffers in flight`,
      );
    let len = chain.writableLength;
    if (id === this.batchLastId) {
      len = this.batchLastLen;
      this.batchLastId = -1;
    }
    this.inFlight.delete(id);
    this.freeSlots += chain.descCount;
    this.lastUsed += chain.descCount;
    if (this.lastUsed >= this.size) {
      this.lastUsed -= this.size;
      this.usedWrap = !this.usedWrap;
    }
    return { id, len, segments: chain.segments };
  }

  /**
   * Whether the driver must notify the device about chains added since the last call (§2.8.10): per the
   * device event suppression structure (ENABLE, DISABLE, or DESC with off_wrap under EVENT_IDX).
   */
  needsKick(): boolean {
    const old = this.kickedPos;
    const next = packedPosition(this.nextAvail, this.availWrap, this.size);
    this.kickedPos = next;
    const flags = this.mem.readU16(this.config.deviceAddr + PACKED_EVENT.flags) & 3;
    if (flags === RING_EVENT_FLAGS_DISABLE) return false;
    if (flags !== RING_EVENT_FLAGS_DESC || !this.eventIdx) return true;
    const offWrap = this.mem.readU16(this.config.deviceAddr + PACKED_EVENT.offWrap);
    const event = packedPosition(offWrap & 0x7fff, (offWrap & 0x8000) !== 0, this.size);
    return packedNeedEvent(event, next, old, this.size);
  }

  /** Asks for used-buffer notifications: DESC at the next used slot with EVENT_IDX, else ENABLE. */
  enableInterrupts(): void {
    if (this.eventIdx) this.setUsedEvent(this.lastUsed, this.usedWrap);
    else this.mem.writeU16(this.config.driverAddr + PACKED_EVENT.flags, RING_EVENT_FLAGS_ENABLE);
  }

  /** Asks for no used-buffer notifications (flags DISABLE). */
  disableInterrupts(): void {
    this.mem.writeU16(this.config.driverAddr + PACKED_EVENT.flags, RING_EVENT_FLAGS_DISABLE);
  }

  /** EVENT_IDX: interrupt once the device writes the used descriptor at `offset` in lap `wrap`. */
  setUsedEvent(offset: number, wrap: boolean): void {
    this.mem.writeU16(this.config.driverAddr + PACKED_EVENT.offWrap, (offset & 0x7fff) | (wrap ? 0x8000 : 0));
    this.mem.writeU16(this.config.driverAddr + PACKED_EVENT.flags, RING_EVENT_FLAGS_DESC);
  }

  private place(b: DriverBuffer, write: boolean): DriverSegment {
    if (!(b instanceof Uint8Array)) return { addr: b.addr, len: b.len, write };
    if (this.alloc === undefined)
      throw new RangeError('PackedDriverQueue: Uint8Array buffers need an allocator');
    const addr = this.alloc.alloc(b.length, 8);
    if (!write) this.mem.write(addr, b);
    return { addr, len: b.length, write };
  }

  private indirectTable(id: number, entries: number): number {
    const t = this.indirectTables.get(id);
    if (t !== undefined && t.entries >= entries) return t.addr;
    if (this.alloc === undefined)
      throw new RangeError('PackedDriverQueue: indirect chains need an allocator');
    const addr = this.alloc.alloc(16 * entries, 16);
    this.indirectTables.set(id, { addr, entries });
    return addr;
  }
}
