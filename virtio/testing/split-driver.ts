/**
 * The driver side of a split virtqueue (VIRTIO 1.3 §2.7) over synthetic guest memory, for tests of
 * devices and of the device-side ring. It lays out the rings, posts chains (direct or indirect), reads
 * used entries and honours event suppression both ways, as a Linux driver would.
 */
import type { GuestMemory } from '../../lib/memory/guest-memory.js';
import {
  SPLIT_AVAIL,
  SPLIT_DESC,
  SPLIT_USED,
  splitRingSizes,
  VIRTQ_AVAIL_F_NO_INTERRUPT,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
  VIRTQ_USED_F_NO_NOTIFY,
  vringNeedEvent,
} from '../queue/split-ring.js';
import type { VirtqueueConfig } from '../queue/virtqueue.js';
import type { BumpAllocator } from './bump-allocator.js';
import type { AddOptions, DriverBuffer, DriverSegment, UsedBuffer } from './driver-buffer.js';

export type { DriverBuffer, DriverSegment, UsedBuffer } from './driver-buffer.js';

export interface SplitDriverOptions {
  /** Queue size, a power of two. */
  size: number;
  descAddr: number;
  availAddr: number;
  usedAddr: number;
  /** VIRTIO_F_EVENT_IDX negotiated: use used_event / avail_event instead of the flags. */
  eventIdx?: boolean;
  /** Queue index reported in `config`. */
  index?: number;
  /**
   * VIRTIO_F_IN_ORDER negotiated: descriptors are used in ring order (§2.7.5) and used entries are read
   * as Linux 7.2 does (virtqueue_get_buf_ctx_split_in_order): one entry may complete a batch.
   */
  inOrder?: boolean;
  /** Where `add` places `Uint8Array` buffers and indirect tables. */
  allocator?: BumpAllocator;
}

interface InFlight {
  descs: number[];
  segments: DriverSegment[];
  /** Sum of the device-writable lengths (what a buffer completed inside a batch reports). */
  writableLength: number;
}

/** Driver side of one split virtqueue. */
export class SplitDriverQueue {
  readonly size: number;
  readonly eventIdx: boolean;
  readonly inOrder: boolean;
  /** What the transport hands to `createVirtqueue` for this queue. */
  readonly config: VirtqueueConfig;
  private readonly mem: GuestMemory;
  private readonly alloc: BumpAllocator | undefined;
  private readonly free: number[] = [];
  private readonly inFlight = new Map<number, InFlight>();
  private readonly indirectTables = new Map<number, { addr: number; entries: number }>();
  private availIdx = 0;
  private kickedAvail = 0;
  private lastUsed = 0;
  /** IN_ORDER: next descriptor to use, free count, heads in flight oldest first, the open batch's entry. */
  private freeHead = 0;
  private inOrderFree = 0;
  private readonly order: number[] = [];
  private batchLastId = -1;
  private batchLastLen = 0;

  /**
   * Lays out the three parts in `allocator`'s range with their spec alignment (16 / 2 / 4) and uses the
   * same allocator for buffers.
   */
  static allocate(
    memory: GuestMemory,
    allocator: BumpAllocator,
    size: number,
    options: { eventIdx?: boolean; index?: number; inOrder?: boolean } = {},
  ): SplitDriverQueue {
    const s = splitRingSizes(size);
    const descAddr = allocator.alloc(s.desc, 16);
    const availAddr = allocator.alloc(s.avail, 2);
    const usedAddr = allocator.alloc(s.used, 4);
    return new SplitDriverQueue(memory, { size, descAddr, availAddr, usedAddr, allocator, ...options });
  }

  /** Zeroes the rings at the given addresses (as a driver does before enabling the queue). */
  constructor(memory: GuestMemory, options: SplitDriverOptions) {
    const q = options.size;
    if (!Number.isInteger(q) || q < 1 || q > 32768 || (q & (q - 1)) !== 0) {
      throw new RangeError(`SplitDriverQueue: size ${q} is not a power of two in 1..32768`);
    }
    this.size = q;
    this.eventIdx = options.eventIdx ?? false;
    this.inOrder = options.inOrder ?? false;
    this.inOrderFree = q;
    this.mem = memory;
    this.alloc = options.allocator;
    this.config = {
      index: options.index ?? 0,
      size: q,
      descAddr: options.descAddr,
      driverAddr: options.availAddr,
      deviceAddr: options.usedAddr,
      eventIdx: this.eventIdx,
      ...(this.inOrder ? { inOrder: true } : {}),
    };
    const s = splitRingSizes(q);
    memory.write(options.descAddr, new Uint8Array(s.desc));
    memory.write(options.availAddr, new Uint8Array(s.avail));
    memory.write(options.usedAddr, new Uint8Array(s.used));
    for (let i = q - 1; i >= 0; i--) this.free.push(i);
  }

  /** Free descriptors in the table. */
  get numFree(): number {
    return this.inOrder ? this.inOrderFree : this.free.length;
  }

  /** The avail idx the driver has published. */
  get availIndex(): number {
    return this.availIdx;
  }

  /**
   * Posts one chain: `readable` (device-readable) segments, then `writable` ones. A `Uint8Array` is copied
   * into freshly allocated guest memory (for `writable`, only its length matters); `{addr, len}` is used
   * as is. Publishes the avail idx at once and returns the head index, which `getUsed` reports as `id`.
   */
  add(readable: DriverBuffer[], writable: DriverBuffer[], options: AddOptions = {}): number {
    const segments: DriverSegment[] = [
      ...readable.map((b) => this.place(b, false)),
      ...writable.map((b) => this.place(b, true)),
    ];
    if (segments.length === 0)
      throw new RangeError('SplitDriverQueue.add: a chain needs at least one segment');
    const mem = this.mem;
    const indirect = options.indirect ?? false;
    const needed = indirect ? 1 : segments.length;
    if (needed > this.numFree) {
      throw new RangeError(`SplitDriverQueue.add: ${needed} descriptors needed, ${this.numFree} free`);
    }
    const descs: number[] = [];
    if (this.inOrder) {
      // §2.7.5: in ring order, wrapping at the end of the table (so `next` is x + 1, or 0 after the last).
      for (let i = 0; i < needed; i++) descs.push((this.freeHead + i) & (this.size - 1));
      this.freeHead = (this.freeHead + needed) & (this.size - 1);
      this.inOrderFree -= needed;
    } else {
      for (let i = 0; i < needed; i++) descs.push(this.free.pop()!);
    }
    const head = descs[0]!;
    if (indirect) {
      const table = this.indirectTable(head, segments.length);
      segments.forEach((s, i) => {
        const last = i === segments.length - 1;
        this.writeDesc(
          table,
          i,
          s.addr,
          s.len,
          (s.write ? VIRTQ_DESC_F_WRITE : 0) | (last ? 0 : VIRTQ_DESC_F_NEXT),
          last ? 0 : i + 1,
        );
      });
      this.writeDesc(this.config.descAddr, head, table, 16 * segments.length, VIRTQ_DESC_F_INDIRECT, 0);
    } else {
      segments.forEach((s, i) => {
        const last = i === segments.length - 1;
        const flags = (s.write ? VIRTQ_DESC_F_WRITE : 0) | (last ? 0 : VIRTQ_DESC_F_NEXT);
        this.writeDesc(this.config.descAddr, descs[i]!, s.addr, s.len, flags, last ? 0 : descs[i + 1]!);
      });
    }
    const writableLength = segments.reduce((n, s) => n + (s.write ? s.len : 0), 0);
    this.inFlight.set(head, { descs, segments, writableLength });
    if (this.inOrder) this.order.push(head);
    // Ring entry first, then the idx that publishes it (§2.7.13).
    mem.writeU16(this.config.driverAddr + SPLIT_AVAIL.ring + 2 * (this.availIdx & (this.size - 1)), head);
    this.availIdx = (this.availIdx + 1) & 0xffff;
    mem.writeU16(this.config.driverAddr + SPLIT_AVAIL.idx, this.availIdx);
    return head;
  }

  /** Takes the next used entry, frees its descriptors, or returns null when the device has not used any. */
  getUsed(): UsedBuffer | null {
    if (this.inOrder) return this.getUsedInOrder();
    const mem = this.mem;
    const usedIdx = mem.readU16(this.config.deviceAddr + SPLIT_USED.idx);
    if (usedIdx === this.lastUsed) return null;
    const e =
      this.config.deviceAddr + SPLIT_USED.ring + SPLIT_USED.entrySize * (this.lastUsed & (this.size - 1));
    const id = mem.readU32(e + SPLIT_USED.elemId);
    const len = mem.readU32(e + SPLIT_USED.elemLen);
    const chain = this.inFlight.get(id);
    if (chain === undefined)
      throw new Error(`SplitDriverQueue: device returned id ${id}, which is not in flight`);
    this.inFlight.delete(id);
    for (let i = chain.descs.length - 1; i >= 0; i--) this.free.push(chain.descs[i]!);
    this.lastUsed = (this.lastUsed + 1) & 0xffff;
    return { id, len, segments: chain.segments };
  }

  /**
   * IN_ORDER, as Linux 7.2 reads it: the entry at the used position names the last buffer of a batch;
   * buffers are taken oldest first, those before the named one with their whole writable length
   * (§2.7.9 "skipped buffers ... used completely"), the named one with the entry's len.
   */
  private getUsedInOrder(): UsedBuffer | null {
    const mem = this.mem;
    if (this.batchLastId < 0) {
      if (mem.readU16(this.config.deviceAddr + SPLIT_USED.idx) === this.lastUsed) return null;
      const e =
        this.config.deviceAddr + SPLIT_USED.ring + SPLIT_USED.entrySize * (this.lastUsed & (this.size - 1));
      this.batchLastId = mem.readU32(e + SPLIT_USED.elemId);
      this.batchLastLen = mem.readU32(e + SPLIT_USED.elemLen);
    }
    const head = this.order.shift();
    const chain = head === undefined ? undefined : this.inFlight.get(head);
    if (head === undefined || chain === undefined)
      throw new Error(
        `SplitDriverQueue: used entry names id ${this.batchLastId}, beyond the buffers in flight`,
      );
    let len = chain.writableLength;
    if (head === this.batchLastId) {
      len = this.batchLastLen;
      this.batchLastId = -1;
    }
    this.inFlight.delete(head);
    this.inOrderFree += chain.descs.length;
    this.lastUsed = (this.lastUsed + 1) & 0xffff;
    return { id: head, len, segments: chain.segments };
  }

  /** Used entries the device published that `getUsed` has not taken yet. */
  pendingUsed(): number {
    return (this.mem.readU16(this.config.deviceAddr + SPLIT_USED.idx) - this.lastUsed) & 0xffff;
  }

  /**
   * Whether the driver must notify the device about chains added since the last call (§2.7.10):
   * avail_event crossed with EVENT_IDX, otherwise VIRTQ_USED_F_NO_NOTIFY clear.
   */
  needsKick(): boolean {
    const old = this.kickedAvail;
    this.kickedAvail = this.availIdx;
    if (this.eventIdx) {
      const availEvent = this.mem.readU16(this.config.deviceAddr + SPLIT_USED.ring + 8 * this.size);
      return vringNeedEvent(availEvent, this.availIdx, old);
    }
    return (this.mem.readU16(this.config.deviceAddr + SPLIT_USED.flags) & VIRTQ_USED_F_NO_NOTIFY) === 0;
  }

  /** Asks for used-buffer notifications (clears NO_INTERRUPT; with EVENT_IDX sets used_event to the next entry). */
  enableInterrupts(): void {
    const f = this.config.driverAddr + SPLIT_AVAIL.flags;
    this.mem.writeU16(f, this.mem.readU16(f) & ~VIRTQ_AVAIL_F_NO_INTERRUPT);
    if (this.eventIdx) this.setUsedEvent(this.lastUsed);
  }

  /** Asks for no used-buffer notifications (sets NO_INTERRUPT; with EVENT_IDX leaves used_event behind). */
  disableInterrupts(): void {
    const f = this.config.driverAddr + SPLIT_AVAIL.flags;
    this.mem.writeU16(f, this.mem.readU16(f) | VIRTQ_AVAIL_F_NO_INTERRUPT);
  }

  /** EVENT_IDX: interrupt when the used idx moves past `idx` (writes avail->used_event). */
  setUsedEvent(idx: number): void {
    this.mem.writeU16(this.config.driverAddr + SPLIT_AVAIL.ring + 2 * this.size, idx & 0xffff);
  }

  private writeDesc(table: number, i: number, addr: number, len: number, flags: number, next: number): void {
    const d = table + SPLIT_DESC.size * i;
    this.mem.writeU64(d + SPLIT_DESC.addr, addr);
    this.mem.writeU32(d + SPLIT_DESC.len, len);
    this.mem.writeU16(d + SPLIT_DESC.flags, flags);
    this.mem.writeU16(d + SPLIT_DESC.next, next);
  }

  private place(b: DriverBuffer, write: boolean): DriverSegment {
    if (!(b instanceof Uint8Array)) return { addr: b.addr, len: b.len, write };
    if (this.alloc === undefined)
      throw new RangeError('SplitDriverQueue: Uint8Array buffers need an allocator');
    const addr = this.alloc.alloc(b.length, 8);
    if (!write) this.mem.write(addr, b);
    return { addr, len: b.length, write };
  }

  private indirectTable(head: number, entries: number): number {
    const t = this.indirectTables.get(head);
    if (t !== undefined && t.entries >= entries) return t.addr;
    if (this.alloc === undefined) throw new RangeError('SplitDriverQueue: indirect chains need an allocator');
    const addr = this.alloc.alloc(16 * entries, 16);
    this.indirectTables.set(head, { addr, entries });
    return addr;
  }
}
