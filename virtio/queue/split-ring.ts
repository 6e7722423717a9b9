/**
 * Device side of a split virtqueue (VIRTIO 1.3 §2.7): descriptor table, available ring, used ring.
 *
 * The guest owns the ring memory and may change it at any time (even concurrently, through shared
 * memory), so every value read from it is validated and every loop is bounded by the queue size.
 * Ordering: the avail idx is read before the ring entries and descriptors it covers; used elements are
 * written before the used idx that publishes them (§2.7.13, §2.7.14).
 */
import { GuestMemoryError } from '../../lib/errors.js';
import { memoryFence } from '../../lib/memory/fence.js';
import { type GuestMemory, readAddress } from '../../lib/memory/guest-memory.js';
import {
  type DescriptorChain,
  type Virtqueue,
  type VirtqueueConfig,
  VirtqueueCounters,
  VirtqueueError,
  type VirtqueueState,
} from './virtqueue.js';

/** `struct virtq_desc` (16 bytes, §2.7.5). */
export const SPLIT_DESC = { size: 16, addr: 0, len: 8, flags: 12, next: 14 } as const;
/** `struct virtq_avail` (§2.7.6): ring entries are le16 at `ring + 2 * i`; used_event follows the ring. */
export const SPLIT_AVAIL = { flags: 0, idx: 2, ring: 4, entrySize: 2 } as const;
/** `struct virtq_used` (§2.7.8): elements `{ le32 id; le32 len; }` at `ring + 8 * i`; avail_event follows. */
export const SPLIT_USED = { flags: 0, idx: 2, ring: 4, entrySize: 8, elemId: 0, elemLen: 4 } as const;

export const VIRTQ_DESC_F_NEXT = 1;
export const VIRTQ_DESC_F_WRITE = 2;
export const VIRTQ_DESC_F_INDIRECT = 4;
/** avail.flags: the driver asks for no used-buffer notifications (ignored with EVENT_IDX). */
export const VIRTQ_AVAIL_F_NO_INTERRUPT = 1;
/** used.flags: the device asks for no available-buffer notifications (ignored with EVENT_IDX). */
export const VIRTQ_USED_F_NO_NOTIFY = 1;

/** Byte sizes of the three parts for queue size `q` (§2.7), including the event-idx words. */
export function splitRingSizes(q: number): { desc: number; avail: number; used: number } {
  return { desc: 16 * q, avail: 6 + 2 * q, used: 6 + 8 * q };
}

/**
 * `vring_need_event` (§2.7.7.2 / §2.7.10): whether moving an index from `old` to `next` crossed `event`,
 * all free-running 16-bit counters.
 */
export function vringNeedEvent(event: number, next: number, old: number): boolean {
  return ((next - event - 1) & 0xffff) < ((next - old) & 0xffff);
}

const TWO_32 = 0x1_0000_0000;

export class SplitRing implements Virtqueue {
  readonly index: number;
  readonly size: number;
  readonly packed = false;
  private readonly mem: GuestMemory;
  private readonly descAddr: number;
  private readonly availAddr: number;
  private readonly usedAddr: number;
  private readonly eventIdx: boolean;
  private readonly inOrder: boolean;
  private readonly mask: number;
  readonly counters = new VirtqueueCounters();

  /** last_avail_idx: next avail ring entry to pop (free-running u16). */
  private lastAvail = 0;
  /** Last avail idx read from the guest; entries before it need no re-read of the idx. */
  private shadowAvail = 0;
  /** Used idx as published to the guest, and the staged one (entries written, idx not yet stored). */
  private usedIdx = 0;
  private stagedUsed = 0;
  private signalledUsed = 0;
  private signalledValid = false;
  private notificationsDisabled = false;
  /** IN_ORDER: buffers in the open batch (no entry written yet), and the last one's id and length. */
  private batchCount = 0;
  private batchId = 0;
  private batchLen = 0;
  /** Buffers folded into batches since the last publishUsed. */
  private folded = 0;
  /** NOTIFICATION_DATA: the avail idx the last kick announced (valid until used once). */
  private hintAvail = 0;
  private hintValid = false;

  constructor(memory: GuestMemory, config: VirtqueueConfig) {
    const q = config.size;
    if (!Number.isInteger(q) || q < 1 || q > 32768 || (q & (q - 1)) !== 0) {
      throw new VirtqueueError(
        'memory',
        `split queue ${config.index}: size ${q} is not a power of two in 1..32768`,
      );
    }
    this.index = config.index;
    this.size = q;
    this.mask = q - 1;
    this.mem = memory;
    this.descAddr = config.descAddr;
    this.availAddr = config.driverAddr;
    this.usedAddr = config.deviceAddr;
    this.eventIdx = config.eventIdx;
    this.inOrder = config.inOrder === true;
    const s = splitRingSizes(q);
    this.checkPart('descriptor table', this.descAddr, s.desc, 16);
    this.checkPart('available ring', this.availAddr, s.avail, 2);
    this.checkPart('used ring', this.usedAddr, s.used, 4);
  }

  private checkPart(what: string, addr: number, len: number, align: number): void {
    if (!memoryIsValid(this.mem, addr, len) || addr % align !== 0) {
      throw new VirtqueueError(
        'memory',
        `split queue ${this.index}: ${what} at 0x${Number(addr).toString(16)} (+${len}, align ${align}) is not in guest memory`,
      );
    }
  }

  private availIdx(): number {
    const idx = this.mem.readU16(this.availAddr + SPLIT_AVAIL.idx);
    if (((idx - this.lastAvail) & 0xffff) > this.size) {
      throw new VirtqueueError(
        'avail-index',
        `split queue ${this.index}: avail idx ${idx} is more than ${this.size} ahead of ${this.lastAvail}`,
      );
    }
    this.shadowAvail = idx;
    return idx;
  }

  hasAvailable(): boolean {
    if (this.shadowAvail !== this.lastAvail) return true;
    try {
      return this.availIdx() !== this.lastAvail;
    } catch (e) {
      throw toVirtqueueError(this, e);
    }
  }

  availableCount(): number {
    try {
      return (this.availIdx() - this.lastAvail) & 0xffff;
    } catch (e) {
      throw toVirtqueueError(this, e);
    }
  }

  pop(chain: DescriptorChain): boolean {
    try {
      if (this.shadowAvail === this.lastAvail) {
        // The kick said the driver's next buffer goes here. Only in a burst (notifications disabled),
        // whose end re-reads the ring (enableNotification), may that save the read: a hint that lies
        // low then costs nothing but that re-read, and one that lies high is never trusted.
        if (this.hintValid && this.notificationsDisabled && this.hintAvail === this.lastAvail) {
          this.hintValid = false;
          this.counters.hintReadsSaved++;
          return false;
        }
        if (this.availIdx() === this.lastAvail) return false;
      }
      const mem = this.mem;
      const head = mem.readU16(this.availAddr + SPLIT_AVAIL.ring + 2 * (this.lastAvail & this.mask));
      // The entry is consumed even if the chain turns out to be invalid: the device may still return it.
      this.lastAvail = (this.lastAvail + 1) & 0xffff;
      if (this.eventIdx && !this.notificationsDisabled) {
        mem.writeU16(this.usedAddr + SPLIT_USED.ring + 8 * this.size, this.lastAvail);
      }
      chain.clear();
      chain.head = head;
      chain.descCount = 1;
      this.walk(chain, head);
      return true;
    } catch (e) {
      throw toVirtqueueError(this, e);
    }
  }

  /** Flattens the chain starting at `head` into segments. Bounded: at most `size` buffer descriptors. */
  private walk(chain: DescriptorChain, head: number): void {
    const mem = this.mem;
    const q = this.size;
    let table = this.descAddr;
    let tableLen = q;
    let idx = head;
    let indirect = false;
    let seen = 0; // descriptors read in the current table (loop bound)
    let segments = 0;
    for (;;) {
      if (idx >= tableLen) {
        throw new VirtqueueError(
          'descriptor-index',
          `split queue ${this.index}: descriptor index ${idx} >= ${indirect ? 'indirect table length' : 'queue size'} ${tableLen}`,
        );
      }
      if (++seen > tableLen) {
        throw new VirtqueueError(
          'chain-too-long',
          `split queue ${this.index}: descriptor chain loops (head ${head})`,
        );
      }
      const d = table + SPLIT_DESC.size * idx;
      const addr = readAddress(mem, d + SPLIT_DESC.addr);
      const len = mem.readU32(d + SPLIT_DESC.len);
      const flags = mem.readU16(d + SPLIT_DESC.flags);
      const next = mem.readU16(d + SPLIT_DESC.next);
      if (flags & VIRTQ_DESC_F_INDIRECT) {
        if (indirect) {
          throw new VirtqueueError(
            'nested-indirect',
            `split queue ${this.index}: indirect descriptor in an indirect table`,
          );
        }
        if (flags & VIRTQ_DESC_F_NEXT) {
          throw new VirtqueueError(
            'indirect-with-next',
            `split queue ${this.index}: descriptor has INDIRECT and NEXT`,
          );
        }
        if (len === 0 || len % SPLIT_DESC.size !== 0) {
          throw new VirtqueueError(
            'indirect-length',
            `split queue ${this.index}: indirect table length ${len}`,
          );
        }
        if (addr < 0 || !memoryIsValid(mem, addr, len)) {
          throw new VirtqueueError(
            'memory',
            `split queue ${this.index}: indirect table 0x${addr.toString(16)} +${len}`,
          );
        }
        table = addr;
        tableLen = len / SPLIT_DESC.size;
        idx = 0;
        indirect = true;
        seen = 0;
        continue;
      }
      if (++segments > q) {
        throw new VirtqueueError(
          'chain-too-long',
          `split queue ${this.index}: chain longer than queue size ${q}`,
        );
      }
      addSegment(mem, this, chain, addr, len, (flags & VIRTQ_DESC_F_WRITE) !== 0);
      if ((flags & VIRTQ_DESC_F_NEXT) === 0) return;
      idx = next;
    }
  }

  unpop(_chain: DescriptorChain): void {
    this.lastAvail = (this.lastAvail - 1) & 0xffff;
  }

  addUsed(chain: DescriptorChain, written: number): void {
    if (this.inOrder) {
      this.batchCount++;
      this.batchId = chain.head;
      this.batchLen = written >>> 0;
      // §2.7.9: buffers without an entry count as used completely (Linux reports their whole writable
      // length), so a partly written buffer ends the batch with its own entry.
      if (written !== chain.writableLength || this.batchCount === this.size) this.closeBatch();
      return;
    }
    this.writeEntry(chain.head, written >>> 0, 1);
  }

  /** Writes one used element at the staged position and moves past `buffers` buffers. */
  private writeEntry(id: number, len: number, buffers: number): void {
    try {
      const e = this.usedAddr + SPLIT_USED.ring + SPLIT_USED.entrySize * (this.stagedUsed & this.mask);
      this.mem.writeU32(e + SPLIT_USED.elemId, id);
      this.mem.writeU32(e + SPLIT_USED.elemLen, len);
      this.stagedUsed = (this.stagedUsed + buffers) & 0xffff;
    } catch (err) {
      throw toVirtqueueError(this, err);
    }
  }

  /**
   * IN_ORDER: one element for the open batch, at the ring offset of its first buffer, with the id and
   * length of its last; the used idx then skips the whole batch (§2.7.9).
   */
  private closeBatch(): void {
    const n = this.batchCount;
    this.batchCount = 0;
    this.writeEntry(this.batchId, this.batchLen, n);
    this.folded += n - 1;
    this.counters.batchEntries++;
    this.counters.foldedBuffers += n - 1;
  }

  publishUsed(): number {
    if (this.batchCount !== 0) this.closeBatch();
    const folded = this.folded;
    this.folded = 0;
    if (this.stagedUsed === this.usedIdx) return folded;
    try {
      this.mem.writeU16(this.usedAddr + SPLIT_USED.idx, this.stagedUsed);
      this.usedIdx = this.stagedUsed;
    } catch (err) {
      throw toVirtqueueError(this, err);
    }
    return folded;
  }

  push(chain: DescriptorChain, written: number): void {
    this.addUsed(chain, written);
    this.publishUsed();
  }

  needsNotification(): boolean {
    // The decision must see every used buffer, an open IN_ORDER batch included.
    if (this.batchCount !== 0 || this.stagedUsed !== this.usedIdx) this.publishUsed();
    memoryFence(); // the used idx we published is visible before we read the driver's wish
    try {
      if (this.eventIdx) {
        const usedEvent = this.mem.readU16(this.availAddr + SPLIT_AVAIL.ring + 2 * this.size);
        const old = this.signalledUsed;
        const valid = this.signalledValid;
        this.signalledUsed = this.usedIdx;
        this.signalledValid = true;
        return !valid || vringNeedEvent(usedEvent, this.usedIdx, old);
      }
      return (this.mem.readU16(this.availAddr + SPLIT_AVAIL.flags) & VIRTQ_AVAIL_F_NO_INTERRUPT) === 0;
    } catch (err) {
      throw toVirtqueueError(this, err);
    }
  }

  enableNotification(): boolean {
    this.notificationsDisabled = false;
    // try/catch, not guard(): a closure here would allocate on every kick.
    try {
      if (this.eventIdx) {
        this.mem.writeU16(this.usedAddr + SPLIT_USED.ring + 8 * this.size, this.lastAvail);
      } else {
        const f = this.usedAddr + SPLIT_USED.flags;
        this.mem.writeU16(f, this.mem.readU16(f) & ~VIRTQ_USED_F_NO_NOTIFY);
      }
      // Re-read the idx after publishing our wish (fenced): chains added meanwhile would not have kicked.
      memoryFence();
      return this.availIdx() !== this.lastAvail;
    } catch (err) {
      throw toVirtqueueError(this, err);
    }
  }

  availHint(nextOff: number, nextWrap: boolean): boolean {
    const idx = (nextOff & 0x7fff) | (nextWrap ? 0x8000 : 0);
    if (((idx - this.lastAvail) & 0xffff) > this.size) {
      // Behind what we took, by at most a ring: a kick that arrived after the device had read further
      // (posted notifications, vfio-user REGION_WRITEs queued behind others). Old news, not an error.
      if (((this.lastAvail - idx) & 0xffff) <= this.size) this.counters.hintsStale++;
      // More than a ring's worth past what we took cannot be true (§2.7.13.3); ignore it.
      else this.counters.hintsRejected++;
      return false;
    }
    this.hintAvail = idx;
    this.hintValid = true;
    this.counters.hintsAccepted++;
    return true;
  }

  disableNotification(): void {
    this.notificationsDisabled = true;
    // With EVENT_IDX the flag is ignored; not advancing avail_event is what suppresses kicks.
    if (this.eventIdx) return;
    try {
      const f = this.usedAddr + SPLIT_USED.flags;
      this.mem.writeU16(f, this.mem.readU16(f) | VIRTQ_USED_F_NO_NOTIFY);
    } catch (err) {
      throw toVirtqueueError(this, err);
    }
  }

  state(): VirtqueueState {
    return {
      nextAvail: this.lastAvail,
      nextUsed: this.usedIdx,
      notificationsDisabled: this.notificationsDisabled,
      signalledUsed: this.signalledUsed,
    };
  }

  restore(state: VirtqueueState): void {
    this.lastAvail = state.nextAvail & 0xffff;
    this.shadowAvail = this.lastAvail;
    this.usedIdx = state.nextUsed & 0xffff;
    this.stagedUsed = this.usedIdx;
    this.batchCount = 0;
    this.folded = 0;
    this.hintValid = false;
    this.notificationsDisabled = state.notificationsDisabled;
    if (state.signalledUsed !== undefined) {
      this.signalledUsed = state.signalledUsed & 0xffff;
      this.signalledValid = true;
    } else {
      this.signalledValid = false;
    }
  }
}

// ---- helpers shared with packed-ring.ts ------------------------------------------------------------------

/** `memory.isValid` that also rejects the -1 from `readAddress`. */
export function memoryIsValid(mem: GuestMemory, addr: number, len: number): boolean {
  return addr >= 0 && mem.isValid(addr, len);
}

/**
 * Appends one buffer segment, enforcing readable-before-writable, the 2^32 - 1 total and guest memory
 * bounds. Grows the chain's arrays only when a longer chain than ever before arrives.
 */
export function addSegment(
  mem: GuestMemory,
  q: { index: number; packed: boolean },
  chain: DescriptorChain,
  addr: number,
  len: number,
  write: boolean,
): void {
  const fmt = q.packed ? 'packed' : 'split';
  if (addr < 0 || !(len === 0 || mem.isValid(addr, len))) {
    throw new VirtqueueError(
      'memory',
      `${fmt} queue ${q.index}: buffer 0x${addr < 0 ? '>=2^53' : addr.toString(16)} +${len} is not in guest memory`,
    );
  }
  const n = chain.readableCount + chain.writableCount;
  if (n === chain.addr.length) grow(chain);
  if (write) {
    const total = chain.writableLength + len;
    if (total >= TWO_32) {
      throw new VirtqueueError(
        'length-overflow',
        `${fmt} queue ${q.index}: writable length exceeds 2^32 - 1`,
      );
    }
    chain.writableLength = total;
    chain.writableCount++;
  } else {
    if (chain.writableCount !== 0) {
      throw new VirtqueueError(
        'readable-after-writable',
        `${fmt} queue ${q.index}: device-readable descriptor after a device-writable one`,
      );
    }
    const total = chain.readableLength + len;
    if (total >= TWO_32) {
      throw new VirtqueueError(
        'length-overflow',
        `${fmt} queue ${q.index}: readable length exceeds 2^32 - 1`,
      );
    }
    chain.readableLength = total;
    chain.readableCount++;
  }
  chain.addr[n] = addr;
  chain.len[n] = len;
}

function grow(chain: DescriptorChain): void {
  const cap = Math.max(16, chain.addr.length * 2);
  const addr = new Float64Array(cap);
  const len = new Uint32Array(cap);
  addr.set(chain.addr);
  len.set(chain.len);
  chain.addr = addr;
  chain.len = len;
}

/** Guest-memory failures while touching the ring become `VirtqueueError('memory')`. */
export function toVirtqueueError(q: { index: number; packed: boolean }, e: unknown): unknown {
  if (e instanceof VirtqueueError) return e;
  if (e instanceof GuestMemoryError) {
    return new VirtqueueError('memory', `${q.packed ? 'packed' : 'split'} queue ${q.index}: ${e.message}`);
  }
  return e;
}
