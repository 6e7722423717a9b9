/**
 * The administration virtqueues of a device-group owner's transport (VIRTIO 1.3 §2.13, §4.1.4.3): where
 * they sit, their registers, and the `AdminQueue` that runs their commands. `TransportCore` decides when
 * the driver may use them (VIRTIO_F_ADMIN_VQ written), raises their interrupts and guards their errors.
 */
import type { AdminCommandState } from '../admin/admin-commands.js';
import type { AdminQueue, AdminQueueContext } from '../admin/admin-queue.js';
import {
  freshQueueRegisters,
  type QueueRegisters,
  type QueueSnapshot,
  queueSnapshot,
  restoreQueueRegisters,
  VIRTIO_QUEUE_MAX,
} from './transport-registers.js';

/** Where the administration virtqueues sit and how large they may be (`TransportCore.setAdminQueues`). */
export interface AdminQueueLayout {
  /** First admin queue index: at or above every num_queues the device can report (§4.1.4.3.1). */
  index: number;
  /** Number of admin queues (admin_queue_num). */
  count: number;
  /** Maximum queue_size of each. */
  maxSize: number;
}

/** LIST_USE state and queue registers of the admin queues in a transport snapshot. */
export interface AdminQueuesSnapshot {
  commands: AdminCommandState;
  queues: QueueSnapshot[];
}

export class TransportAdminQueues {
  readonly layout: AdminQueueLayout;
  /** Registers of admin queue `layout.index + k` at `k`. */
  private readonly regs: QueueRegisters[] = [];

  /** Throws RangeError when `layout` overlaps the device's `deviceQueues` queues or does not fit. */
  constructor(
    readonly queue: AdminQueue,
    layout: AdminQueueLayout,
    deviceQueues: number,
    private readonly context: AdminQueueContext,
  ) {
    const { index, count, maxSize } = layout;
    if (!Number.isInteger(index) || index < deviceQueues)
      throw new RangeError(`admin queue index ${index} is below the device's queue count ${deviceQueues}`);
    if (!Number.isInteger(count) || count < 1 || index + count > VIRTIO_QUEUE_MAX)
      throw new RangeError(`admin queues ${index}+${count} do not fit below ${VIRTIO_QUEUE_MAX}`);
    if (!Number.isInteger(maxSize) || maxSize < 1 || maxSize > 0x8000)
      throw new RangeError(`admin queue size ${maxSize} must be 1..32768`);
    this.layout = { index, count, maxSize };
    for (let k = 0; k < count; k++) this.regs.push(freshQueueRegisters(maxSize));
  }

  /** Whether `i` is an admin queue index (whatever the driver negotiated). */
  contains(i: number): boolean {
    const l = this.layout;
    return i >= l.index && i < l.index + l.count;
  }

  /** Admin queue `i`'s registers, or null when `i` is no admin queue index. */
  registers(i: number): QueueRegisters | null {
    return this.contains(i) ? (this.regs[i - this.layout.index] ?? null) : null;
  }

  /** queue_reset of admin queue `i`: only the ring; the LIST_USE state survives (docs/admin-queue.md). */
  resetQueue(i: number): void {
    if (this.contains(i)) this.regs[i - this.layout.index] = freshQueueRegisters(this.layout.maxSize);
  }

  /** Device reset (status 0, FLR): every admin queue and the admin command state (§2.13, docs/admin-queue.md). */
  reset(): void {
    for (let k = 0; k < this.regs.length; k++) this.regs[k] = freshQueueRegisters(this.layout.maxSize);
    this.queue.reset();
  }

  /** Run admin queue `i`'s commands, synchronously and in queue order (§2.13); ring errors throw. */
  process(i: number): void {
    void this.queue.process(this.context, i);
  }

  snapshot(): AdminQueuesSnapshot {
    return { commands: this.queue.snapshot(), queues: this.regs.map(queueSnapshot) };
  }

  /** Restore a `snapshot()`; rings are re-created in the format `features` choose. Throws on malformed input. */
  restore(a: AdminQueuesSnapshot, features: bigint): void {
    if (!Array.isArray(a.queues)) throw new TypeError('transport snapshot: malformed admin queues');
    for (let k = 0; k < this.regs.length && k < a.queues.length; k++) {
      const src = a.queues[k];
      if (src)
        restoreQueueRegisters(
          this.context.memory,
          this.regs[k] as QueueRegisters,
          this.layout.index + k,
          src,
          features,
        );
    }
    this.queue.restore(a.commands);
  }
}
