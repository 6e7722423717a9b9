/**
 * The generic device interface (VIRTIO 1.3 §2, §3): what a device type (virtio-net) gives the transport,
 * and what the transport gives back once the driver sets DRIVER_OK. The transport knows nothing about
 * networking; the device knows nothing about PCI.
 */
import type { GuestMemory } from '../lib/memory/guest-memory.js';
import type { Virtqueue } from './queue/virtqueue.js';

/** Services the transport lends a running device. */
export interface VirtioDeviceContext {
  readonly memory: GuestMemory;
  /** Negotiated features (all words). */
  readonly features: bigint;
  /** The queue at `index` if the driver enabled it, else null. */
  queue(index: number): Virtqueue | null;
  /** Signal a used-buffer notification for queue `index` (MSI-X vector or INTx + ISR bit 0). */
  notifyQueue(index: number): void;
  /**
   * The eventfd whose signal is queue `index`'s used-buffer notification right now (an MSI-X vector the
   * VMM serves by eventfd, unmasked), or null: then only `notifyQueue` notifies. A worker thread may
   * write it directly; the device hears `interruptRoutesChanged` before the answer changes.
   */
  queueInterruptFd?(index: number): number | null;
  /**
   * The eventfd whose signal is the driver's kick of queue `index` right now (an ioeventfd the VMM hands
   * its client, vfio-user GET_REGION_IO_FDS), or null: kicks then arrive only as `queueNotify`. The device
   * hears `interruptRoutesChanged` before the answer changes.
   */
  queueKickFd?(index: number): number | null;
  /**
   * A thread of the device polls queue `index`'s kick eventfd itself (held) or no longer does (released):
   * while held, the VMM does not poll it, so the kick reaches that thread and no other. Released, the
   * VMM polls it again and serves a signal that arrived meanwhile.
   */
  holdKick?(index: number, held: boolean): void;
  /** The device config changed: bump config_generation and signal a config interrupt (ISR bit 1). */
  configChanged(): void;
  /** A guest error the device cannot recover from: set DEVICE_NEEDS_RESET and signal a config interrupt. */
  needsReset(reason: string): void;
}

/**
 * A group member's mode (VIRTIO 1.4 DEV_MODE_SET, §2.12.1.5): 'stopped' is the spec's STOPPED flag (no
 * transport requests: no ring or buffer access, no notifications); 'frozen' is this implementation's
 * stronger form (also no input accepted from the host side), see docs/admin-queue.md.
 */
export type DeviceMode = 'active' | 'stopped' | 'frozen';

/** A virtio device type as the transport sees it. */
export interface VirtioDevice {
  /** Virtio device ID (1 = network). */
  readonly deviceId: number;
  /** Features the device offers (device-type and transport-independent bits it supports). */
  deviceFeatures(): bigint;
  /** Device bits offered on the legacy interface only (QEMU `legacy_features`); none when absent. */
  legacyOnlyFeatures?(): bigint;
  /**
   * The device's dependency rules for FEATURES_OK (§2.2.1, §5.1.3.1): returns null if the set is
   * acceptable, else why not. Bits not offered are rejected by the transport before this is asked.
   */
  validateFeatures(features: bigint): string | null;
  /** Number of virtqueues for the given (possibly not yet negotiated) driver features. */
  numQueues(features: bigint): number;
  /**
   * Maximum size of queue `index` (what `queue_size` reads after reset). `features` are the driver
   * features written so far when queue roles depend on them (virtio-net MQ moves the control queue).
   */
  maxQueueSize(index: number, features?: bigint): number;
  /** Length of the device-specific config for these features; bytes past it read as 0xff in QEMU. */
  configLength(features: bigint): number;
  readConfig(offset: number, size: number): number;
  writeConfig(offset: number, size: number, value: number): void;
  /** DRIVER_OK: the negotiated features and enabled queues are final. */
  activate(context: VirtioDeviceContext): void;
  /** The driver kicked queue `index` (notification data, if negotiated, already decoded). */
  queueNotify(index: number): void;
  /** Queue `index` was reset by the driver (VIRTIO_F_RING_RESET) or re-enabled after a reset. */
  queueReset?(index: number): void;
  queueEnabled?(index: number): void;
  /**
   * What `queueInterruptFd` or `queueKickFd` answers may have changed (a queue's vector, MSI-X enable,
   * the mode, the VMM's eventfds or masks): called before an fd they named is closed.
   */
  interruptRoutesChanged?(): void;
  /** Device reset (status 0, FLR, or VF removal): return to the post-construction state. */
  reset(): void;
  /**
   * The group owner changed this member's mode. The transport already withholds notifications and
   * kicks while not 'active' and re-kicks every enabled queue on 'active'; the device stops its own
   * deferred work and input (backend frames) from touching guest memory.
   */
  setMode?(mode: DeviceMode): void;
  /** Device-specific state for snapshots. */
  snapshot?(): unknown;
  restore?(state: unknown): void;
}
