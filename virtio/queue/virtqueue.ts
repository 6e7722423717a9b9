/**
 * The device-side virtqueue contract shared by the split (VIRTIO 1.3 §2.7) and packed (§2.8) formats.
 * Implementations: `split-ring.ts`, `packed-ring.ts`. The transport creates a queue when the driver
 * enables it; devices only pop chains, add used entries and ask whether to notify.
 */
import { VirtioNetError } from '../../lib/errors.js';

/** What went wrong in a guest-built ring; every kind is the guest's fault, never the VMM's. */
export type VirtqueueErrorKind =
  | 'avail-index' // avail idx moved more than the queue size ahead (§2.7.13.3)
  | 'descriptor-index' // a head or next index >= queue size
  | 'chain-too-long' // more descriptors than the queue size, or a loop
  | 'nested-indirect' // an indirect descriptor inside an indirect table (§2.7.5.3.1)
  | 'indirect-length' // indirect table length zero or not a multiple of 16
  | 'indirect-with-next' // VIRTQ_DESC_F_INDIRECT together with NEXT (split)
  | 'readable-after-writable' // a device-readable descriptor after a writable one (§2.7.4.2)
  | 'length-overflow' // total chain length over 2^32 - 1
  | 'memory' // a ring, table or buffer outside guest memory
  | 'buffer-id'; // packed: a buffer id out of range or already in flight

/** A guest error found while walking a ring; the device turns it into NEEDS_RESET or a counted drop. */
export class VirtqueueError extends VirtioNetError {
  override name = 'VirtqueueError';
  constructor(
    readonly kind: VirtqueueErrorKind,
    message: string,
  ) {
    super(message);
  }
}

/**
 * One descriptor chain, flattened into segments: device-readable ones first (indices
 * `[0, readableCount)`), then device-writable ones (`[readableCount, readableCount + writableCount)`).
 * Reused across pops so the hot path allocates nothing: capacity grows only when a longer chain arrives.
 */
export class DescriptorChain {
  /** Split: index of the head descriptor. Packed: the buffer id. This is what the used ring reports. */
  head = 0;
  /** Ring slots the chain took (packed: to advance the ring; split: 1 per head). */
  descCount = 0;
  readableCount = 0;
  writableCount = 0;
  /** Sum of readable / writable segment lengths (each < 2^32, checked). */
  readableLength = 0;
  writableLength = 0;
  /** Segment guest addresses (exact up to 2^53) and lengths. */
  addr: Float64Array;
  len: Uint32Array;

  constructor(capacity = 16) {
    this.addr = new Float64Array(capacity);
    this.len = new Uint32Array(capacity);
  }

  get segmentCount(): number {
    return this.readableCount + this.writableCount;
  }

  /** Forget the segments (keeps capacity). */
  clear(): void {
    this.head = 0;
    this.descCount = 0;
    this.readableCount = 0;
    this.writableCount = 0;
    this.readableLength = 0;
    this.writableLength = 0;
  }
}

/** Everything the transport knows about a queue when the driver enables it. */
export interface VirtqueueConfig {
  index: number;
  /** Power of two for split rings; any value 1..32768 for packed rings. */
  size: number;
  /** Split: descriptor table / avail ring / used ring. Packed: ring / driver event / device event. */
  descAddr: number;
  driverAddr: number;
  deviceAddr: number;
  /** VIRTIO_F_EVENT_IDX negotiated. */
  eventIdx: boolean;
  /** VIRTIO_F_IN_ORDER negotiated. */
  inOrder?: boolean;
}

/** Ring indices a snapshot needs (§2.7 / §2.8 device-side state). */
export interface VirtqueueState {
  /** Split: last_avail_idx. Packed: next slot to read. */
  nextAvail: number;
  /** Split: used idx. Packed: next slot to write. */
  nextUsed: number;
  /** Packed only: the device's avail and used wrap counters. */
  availWrap?: boolean;
  usedWrap?: boolean;
  /** Whether the device had notifications disabled. */
  notificationsDisabled: boolean;
  /** Split with EVENT_IDX: used idx at the last notification decision. */
  signalledUsed?: number;
}

/** What a ring did with IN_ORDER and NOTIFICATION_DATA (plain numbers: read them, do not write). */
export class VirtqueueCounters {
  /** IN_ORDER: used entries written for batches, and buffers completed without an entry of their own. */
  batchEntries = 0;
  foldedBuffers = 0;
  /** NOTIFICATION_DATA: hints taken, hints that could not be right (ignored), avail reads they saved. */
  hintsAccepted = 0;
  hintsRejected = 0;
  /** Split: hints behind what the device had already taken (a late kick; ignored, not an error). */
  hintsStale = 0;
  hintReadsSaved = 0;
}

/** Device side of one virtqueue. Methods throw only `VirtqueueError`, and only for guest-built garbage. */
export interface Virtqueue {
  readonly index: number;
  readonly size: number;
  readonly packed: boolean;

  /** Whether the driver has made a chain available that `pop` would return. */
  hasAvailable(): boolean;
  /**
   * How many chains the driver has made available and the device has not taken: exact on a split ring
   * (avail idx − the device's next index), on a packed ring the queue size when one is available, else 0
   * (counting would walk the ring). A backend sizes its reads by it.
   */
  availableCount(): number;
  /** Takes the next available chain into `chain`; false when none is available. */
  pop(chain: DescriptorChain): boolean;
  /** Gives back the most recently popped chain (LIFO), e.g. when mergeable rx buffers run short. */
  unpop(chain: DescriptorChain): void;
  /**
   * Stages a used entry for `chain` with `written` bytes written into its writable part. With
   * VIRTIO_F_IN_ORDER (§2.7.9 / §2.8.x "In-order use of descriptors") a buffer the device used
   * completely (`written === chain.writableLength`, always so on tx) joins a batch that gets one entry,
   * with the id of its last buffer; a partly written one ends the batch with its own entry. Chains must
   * be added in the order they were popped (the feature's promise).
   */
  addUsed(chain: DescriptorChain, written: number): void;
  /**
   * Makes every staged used entry visible to the driver at once (one used-idx / flags store), closing
   * an IN_ORDER batch first. Returns how many buffers it published without an entry of their own
   * (folded into a batch; 0 without IN_ORDER).
   */
  publishUsed(): number;
  /** `addUsed` + `publishUsed`. */
  push(chain: DescriptorChain, written: number): void;
  /**
   * Whether the driver wants an interrupt now, per VIRTQ_AVAIL_F_NO_INTERRUPT / used_event (split) or the
   * driver event suppression structure (packed). Publishes whatever is staged first (an open IN_ORDER
   * batch included), so the decision sees every used buffer.
   */
  needsNotification(): boolean;
  /** Ask the driver for kicks again; returns true when chains arrived meanwhile (re-check before sleeping). */
  enableNotification(): boolean;
  /** Ask the driver not to kick (VIRTQ_USED_F_NO_NOTIFY, or device event flags DISABLE / avail_event). */
  disableNotification(): void;
  /**
   * VIRTIO_F_NOTIFICATION_DATA (§2.9, §4.1.5.2): the driver's claim, carried by its kick, of where its
   * next available buffer goes (split: next_idx as 15 bits + wrap bit; packed: next_off + next_wrap).
   * Only a hint: the ring stays the truth (see docs/compatibility.md). Returns false when it is
   * impossible for this ring (ignored, counted in `hints.rejected`).
   */
  availHint(nextOff: number, nextWrap: boolean): boolean;
  /** Counters of the IN_ORDER batching and NOTIFICATION_DATA hints since the queue was enabled. */
  readonly counters: VirtqueueCounters;
  /**
   * Device-side state for snapshots; `restore` takes it back on a queue with the same config. What is
   * staged but unpublished is not state: devices publish (closing any IN_ORDER batch) before they return.
   */
  state(): VirtqueueState;
  restore(state: VirtqueueState): void;
}
