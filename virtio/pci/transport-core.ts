/**
 * The bus-independent half of a virtio transport (VIRTIO 1.3 §2.1 status, §2.2 features, §2.6/§4.1.4.3
 * virtqueue configuration): the device status state machine, feature negotiation, per-queue registers,
 * the ISR byte, and the VirtioDeviceContext handed to the device at DRIVER_OK. The modern common config
 * (`common-config.ts`) and the legacy I/O layout (`legacy.ts`) are two register maps over this state;
 * `virtio-pci.ts` routes its interrupts to MSI-X or INTx. Register values and per-queue registers live in
 * `transport-registers.ts`, the administration virtqueues in `transport-admin.ts`.
 *
 * Guest-driven methods never throw: guest errors (bad queue setup, `VirtqueueError` from a ring, a
 * device callback that throws) become DEVICE_NEEDS_RESET, as QEMU's virtio_error() does.
 */
import type { GuestMemory } from '../../lib/memory/guest-memory.js';
import type { AdminQueue, AdminQueueContext } from '../admin/admin-queue.js';
import {
  featureBit,
  hasFeature,
  LEGACY_ONLY_FEATURES,
  VIRTIO_F_ADMIN_VQ,
  VIRTIO_F_NOTIFICATION_DATA,
  VIRTIO_F_RING_PACKED,
  VIRTIO_F_VERSION_1,
} from '../features.js';
import type { DeviceMode, VirtioDevice, VirtioDeviceContext } from '../virtio-device.js';
import { type AdminQueueLayout, TransportAdminQueues } from './transport-admin.js';
import { type ContextHost, deviceContext, type QueueKickEventfds } from './transport-context.js';
import {
  address,
  createRing,
  freshQueueRegisters,
  isPow2,
  type QueueRegisters,
  queueSnapshot,
  restoreQueueRegisters,
  VIRTIO_CONFIG_S_DRIVER_OK,
  VIRTIO_CONFIG_S_FEATURES_OK,
  VIRTIO_CONFIG_S_NEEDS_RESET,
  VIRTIO_ISR_CONFIG,
  VIRTIO_ISR_QUEUE,
  VIRTIO_MSI_NO_VECTOR,
  VIRTIO_QUEUE_MAX,
} from './transport-registers.js';
import type { TransportSnapshot } from './transport-schema.js';

export type { QueueKickEventfds } from './transport-context.js';
export type { TransportSnapshot } from './transport-schema.js';

/** Where the core's interrupts go (the PCI glue: MSI-X vector, or INTx following the ISR). */
export interface TransportSignals {
  /** Deliver an interrupt for `vector` (VIRTIO_MSI_NO_VECTOR when unmapped); the ISR is already updated. */
  interrupt(vector: number): void;
  /** Number of MSI-X vectors; a vector >= this reads back VIRTIO_MSI_NO_VECTOR (QEMU). */
  readonly msixVectors: number;
  /** The eventfd that delivers `vector` now (InterruptSink.vectorFd through MSI-X), or null. */
  vectorFd?(vector: number): number | null;
}

export class TransportCore implements ContextHost {
  status = 0;
  deviceFeatureSelect = 0;
  driverFeatureSelect = 0;
  /** Features as the driver wrote them (only offered bits are kept). */
  driverFeatures = 0n;
  configVector = VIRTIO_MSI_NO_VECTOR;
  queueSelect = 0;
  configGeneration = 0;
  isr = 0;
  /** The device was activated (DRIVER_OK accepted) and not reset since. */
  activated = false;
  /** The driver talks through the legacy interface (no FEATURES_OK step; §7.2 of 1.3 "Legacy Interface"). */
  legacyDriver = false;
  /** Why the device last entered NEEDS_RESET (diagnostics for the VMM). */
  lastError: string | null = null;
  private brokenFlag = false;
  /** The group owner's DEV_MODE_SET (VIRTIO 1.4): not 'active' withholds kicks and interrupts. */
  private modeValue: DeviceMode = 'active';
  /** Interrupts withheld while not active: the config change, and queue vectors (by queue index). */
  private pendingConfig = false;
  private readonly pendingQueues = new Set<number>();
  /** num_queues for the current driver features (kicks check it; devices may compute it with bigints). */
  private numQueuesCache = 0;
  readonly queues: QueueRegisters[];
  private offeredBits: bigint;
  private modernOfferedBits: bigint;
  private readonly context: VirtioDeviceContext;
  /** Where kicks may also arrive by eventfd (VirtioPciTransport.setKickEventfds). */
  kicks: QueueKickEventfds | null = null;
  /** Administration virtqueues (VIRTIO_F_ADMIN_VQ), when the function owns a device group. */
  private admin: TransportAdminQueues | null = null;
  private readonly adminContext: AdminQueueContext;

  constructor(
    readonly device: VirtioDevice,
    readonly memory: GuestMemory,
    /** Every bit offered: device bits plus transport bits (features.ts `transportFeatures`). */
    offered: bigint,
    readonly signals: TransportSignals,
    /** Called with every guest error turned into NEEDS_RESET (optional VMM logging). */
    private readonly onGuestError?: (reason: string) => void,
  ) {
    this.offeredBits = offered;
    this.modernOfferedBits = offered & ~(LEGACY_ONLY_FEATURES | (device.legacyOnlyFeatures?.() ?? 0n));
    const n = Math.min(VIRTIO_QUEUE_MAX, Math.max(device.numQueues(0n), device.numQueues(offered)));
    this.queues = [];
    for (let i = 0; i < n; i++) this.queues.push(this.freshQueue(i, 0n));
    this.numQueuesCache = Math.min(n, device.numQueues(0n));
    this.context = deviceContext(this);
    this.adminContext = {
      memory,
      queue: (i) => (this.activated ? (this.adminQueueRegisters(i)?.vq ?? null) : null),
      notifyQueue: (i) => this.notifyAdminQueue(i),
      needsReset: (reason) => this.needsReset(reason),
    };
  }

  /** Every bit offered: device bits plus transport bits (features.ts `transportFeatures`). */
  get offered(): bigint {
    return this.offeredBits;
  }
  /** What device_feature shows: the legacy-only bits are masked out (QEMU legacy_features). */
  get modernOffered(): bigint {
    return this.modernOfferedBits;
  }

  // ------------------------------------------------------------------ administration virtqueues

  /**
   * Gives the transport administration virtqueues (VIRTIO 1.3 §2.13, §4.1.4.3): offers VIRTIO_F_ADMIN_VQ,
   * reports `layout` in admin_queue_index/admin_queue_num, and serves the queues with `admin`. Call
   * before the driver sees the device (the offered features change). Not for the device's own queues:
   * the device never sees admin indices.
   */
  setAdminQueues(admin: AdminQueue, layout: AdminQueueLayout): void {
    this.admin = new TransportAdminQueues(admin, layout, this.queues.length, this.adminContext);
    this.offeredBits |= featureBit(VIRTIO_F_ADMIN_VQ);
    this.modernOfferedBits |= featureBit(VIRTIO_F_ADMIN_VQ);
  }

  /** admin_queue_index / admin_queue_num as the common config reports them (0/0 without admin queues). */
  get adminQueueIndex(): number {
    return this.admin ? this.admin.layout.index : 0;
  }
  get adminQueueNum(): number {
    return this.admin ? this.admin.layout.count : 0;
  }

  /** Whether `i` is an admin queue index the driver can use now (it wrote VIRTIO_F_ADMIN_VQ). */
  isAdminQueue(i: number): boolean {
    return (this.admin?.contains(i) ?? false) && hasFeature(this.driverFeatures, VIRTIO_F_ADMIN_VQ);
  }

  /** Admin queue `i`'s registers, or null when `i` is no usable admin queue. */
  adminQueueRegisters(i: number): QueueRegisters | null {
    return this.isAdminQueue(i) ? (this.admin?.registers(i) ?? null) : null;
  }

  /** Registers of queue `i` as queue_select sees it: a device queue below num_queues, or an admin queue. */
  queueRegisters(i: number): QueueRegisters | null {
    if (i < this.numQueues()) return this.queues[i] ?? null;
    return this.adminQueueRegisters(i);
  }

  /** The admin queue's used-buffer notification (same path as a device queue's). */
  private notifyAdminQueue(i: number): void {
    if (!this.activated || this.broken) return;
    const q = this.adminQueueRegisters(i);
    if (!q?.enabled) return;
    this.isr |= VIRTIO_ISR_QUEUE;
    this.signals.interrupt(q.vector);
  }

  /** Run every enabled admin queue (at DRIVER_OK: the driver may have queued commands before). */
  private processAdminQueues(): void {
    const admin = this.admin;
    if (!admin) return;
    const { index, count } = admin.layout;
    for (let i = index; i < index + count; i++) {
      if (this.broken) return;
      if (this.adminQueueRegisters(i)?.enabled) this.guard(() => admin.process(i));
    }
  }

  private freshQueue(index: number, features: bigint): QueueRegisters {
    const exists = index < this.device.numQueues(features);
    return freshQueueRegisters(exists ? this.device.maxQueueSize(index, features) : 0);
  }

  // ------------------------------------------------------------------ queries

  /** num_queues for the driver features written so far (QEMU's virtio-net changes it once MQ is written). */
  numQueues(): number {
    return this.numQueuesCache;
  }

  /** The selected queue's registers, or null when queue_select names no queue (reads 0, writes ignored). */
  selected(): QueueRegisters | null {
    return this.queueRegisters(this.queueSelect);
  }

  /** The device hit a guest error and stopped using its queues until reset (QEMU vdev->broken). */
  get broken(): boolean {
    return this.brokenFlag;
  }

  /** queue_msix_vector write (modern or legacy) for queue `q`. */
  setQueueVector(q: QueueRegisters, v: number): void {
    const vector = this.mapVector(v);
    if (vector === q.vector) return;
    q.vector = vector;
    if (this.activated) this.interruptRoutesChanged();
  }

  /** The eventfd that delivers MSI-X `vector` now, or null (ContextHost). */
  vectorFd(vector: number): number | null {
    return this.signals.vectorFd?.(vector) ?? null;
  }

  /** A driven device hears that the context's `queueInterruptFd` / `queueKickFd` may answer differently. */
  interruptRoutesChanged(): void {
    if (this.activated) this.device.interruptRoutesChanged?.();
  }

  /** Map a guest-written vector: out of range reads back VIRTIO_MSI_NO_VECTOR (QEMU msix_vector_use). */
  mapVector(v: number): number {
    return v < this.signals.msixVectors ? v : VIRTIO_MSI_NO_VECTOR;
  }

  // ------------------------------------------------------------------ features

  /** driver_feature write of window `select` (modern) or the legacy 32-bit guest features. */
  writeDriverFeatures(features: bigint): void {
    // After FEATURES_OK the set is final (§3.1.1); QEMU's virtio_set_features refuses too.
    if (this.status & VIRTIO_CONFIG_S_FEATURES_OK || this.activated) return;
    // Kept as written, unoffered bits included (QEMU reads them back; §4.1.4.3 allows it): FEATURES_OK
    // then refuses the set (§2.2.1).
    this.driverFeatures = features;
    this.numQueuesCache = Math.min(this.queues.length, this.device.numQueues(features));
    // Queue count and sizes can depend on features (virtio-net MQ); QEMU re-creates the queues.
    for (let i = 0; i < this.queues.length; i++) {
      const q = this.queues[i] as QueueRegisters;
      if (q.enabled) continue;
      const exists = i < this.device.numQueues(features);
      const max = exists ? this.device.maxQueueSize(i, features) : 0;
      if (max !== q.maxSize) {
        q.maxSize = max;
        q.size = max;
      }
    }
  }

  /** Why the driver's feature set is unacceptable (FEATURES_OK refused), or null. */
  checkFeatures(): string | null {
    const f = this.driverFeatures;
    const extra = f & ~(this.legacyDriver ? this.offered : this.modernOffered);
    if (extra !== 0n) return `driver accepted features not offered: 0x${extra.toString(16)}`;
    if (!this.legacyDriver && !hasFeature(f, VIRTIO_F_VERSION_1))
      return 'modern driver did not accept VERSION_1';
    try {
      return this.device.validateFeatures(f);
    } catch (e) {
      return `device rejected features: ${String(e)}`;
    }
  }

  // ------------------------------------------------------------------ status

  /**
   * device_status write (§2.1, §3.1.1). 0 resets synchronously (reads 0 at once). FEATURES_OK sticks
   * only if the features pass `checkFeatures`; DRIVER_OK activates the device (modern: needs
   * FEATURES_OK). NEEDS_RESET belongs to the device: the driver can neither set nor clear it.
   */
  writeStatus(value: number): void {
    const v = value & 0xff;
    if (v === 0) {
      this.reset();
      return;
    }
    const old = this.status;
    let s = (v & ~VIRTIO_CONFIG_S_NEEDS_RESET) | (old & VIRTIO_CONFIG_S_NEEDS_RESET);
    if (s & VIRTIO_CONFIG_S_FEATURES_OK && !(old & VIRTIO_CONFIG_S_FEATURES_OK)) {
      const why = this.checkFeatures();
      if (why !== null) {
        s &= ~VIRTIO_CONFIG_S_FEATURES_OK;
        this.lastError = why;
      }
    }
    const startDriver = (s & VIRTIO_CONFIG_S_DRIVER_OK) !== 0 && !this.activated;
    if (startDriver && !this.legacyDriver && !(s & VIRTIO_CONFIG_S_FEATURES_OK)) {
      this.status = s & ~VIRTIO_CONFIG_S_DRIVER_OK;
      this.needsReset('DRIVER_OK without FEATURES_OK');
      return;
    }
    this.status = s;
    if (startDriver && !this.broken) this.activate();
  }

  private activate(): void {
    this.activated = true;
    // Legacy drivers enable queues (PFN) before DRIVER_OK with whatever features they wrote.
    this.guard(() => this.device.activate(this.context));
    this.processAdminQueues();
  }

  /** Device reset (status 0, FLR, or a legacy PFN write of 0): every register back to its reset value. */
  reset(): void {
    this.status = 0;
    this.activated = false;
    this.brokenFlag = false;
    this.driverFeatures = 0n;
    this.deviceFeatureSelect = 0;
    this.driverFeatureSelect = 0;
    this.queueSelect = 0;
    this.configVector = VIRTIO_MSI_NO_VECTOR;
    this.isr = 0;
    this.legacyDriver = false;
    this.pendingConfig = false;
    this.pendingQueues.clear();
    for (let i = 0; i < this.queues.length; i++) this.queues[i] = this.freshQueue(i, 0n);
    this.numQueuesCache = Math.min(this.queues.length, this.device.numQueues(0n));
    // §2.13 / docs/admin-queue.md: a device reset (status 0, FLR) also resets the admin command state.
    this.admin?.reset();
    try {
      this.device.reset();
    } catch (e) {
      this.lastError = `device reset failed: ${String(e)}`;
      this.onGuestError?.(this.lastError);
    }
    this.signals.interrupt(VIRTIO_MSI_NO_VECTOR); // lets the glue drop INTx (ISR is 0)
  }

  /** DEVICE_NEEDS_RESET (§2.1.2): stop using the queues; tell an active driver with a config interrupt. */
  needsReset(reason: string): void {
    this.lastError = reason;
    this.onGuestError?.(reason);
    if (this.brokenFlag) return;
    this.brokenFlag = true;
    // Legacy has no NEEDS_RESET bit: QEMU's virtio_error sets it only for VERSION_1 drivers.
    if (!this.legacyDriver) this.status |= VIRTIO_CONFIG_S_NEEDS_RESET;
    // QEMU virtio_error → virtio_notify_config: a new generation and a config interrupt (measured on 7.2).
    if (this.status & VIRTIO_CONFIG_S_DRIVER_OK) this.configChanged();
  }

  /** Run a device callback; whatever it throws is the guest's doing (ring errors) and becomes NEEDS_RESET. */
  guard(fn: () => void): void {
    try {
      fn();
    } catch (e) {
      this.needsReset(e instanceof Error ? `${e.name}: ${e.message}` : String(e));
    }
  }

  // ------------------------------------------------------------------ interrupts

  /** The device's used-buffer notification for queue `i` (§2.7.10 decision already taken by the device). */
  notifyQueue(i: number): void {
    if (!this.activated || this.broken) return;
    const q = this.queues[i];
    if (!q?.enabled) return;
    if (this.modeValue !== 'active') {
      this.pendingQueues.add(i);
      return;
    }
    this.isr |= VIRTIO_ISR_QUEUE;
    this.signals.interrupt(q.vector);
  }

  /** The device config changed: new generation, and a config interrupt once the driver is up. */
  configChanged(): void {
    this.configGeneration = (this.configGeneration + 1) & 0xff;
    if (this.status & VIRTIO_CONFIG_S_DRIVER_OK) this.raiseConfigInterrupt();
  }

  private raiseConfigInterrupt(): void {
    if (this.modeValue !== 'active') {
      this.pendingConfig = true;
      return;
    }
    // QEMU virtio_notify_config sets ISR bits 0 and 1 (0x3); drivers look at bit 1 for config.
    this.isr |= VIRTIO_ISR_QUEUE | VIRTIO_ISR_CONFIG;
    this.signals.interrupt(this.configVector);
  }

  /** ISR read: returns and clears (§4.1.4.5); the glue de-asserts INTx. */
  readIsr(): number {
    const v = this.isr;
    this.isr = 0;
    return v;
  }

  // ------------------------------------------------------------------ queues

  /** queue_select write: QEMU ignores values >= VIRTIO_QUEUE_MAX. */
  selectQueue(v: number): void {
    if (v < VIRTIO_QUEUE_MAX) this.queueSelect = v;
  }

  /**
   * queue_size write. Stored as written (QEMU) when 1..maxSize; zero or larger than the maximum is
   * ignored. A split ring's power-of-two rule is checked at queue_enable.
   */
  writeQueueSize(v: number): void {
    const q = this.selected();
    if (!q || q.enabled || q.maxSize === 0 || v === 0 || v > q.maxSize) return;
    q.size = v;
  }

  /** queue_enable write (§4.1.4.3.2): only 1 is valid; anything else is a driver error (QEMU virtio_error). */
  writeQueueEnable(v: number): void {
    const q = this.selected();
    if (!q) return;
    if (v !== 1) {
      this.needsReset(`queue ${this.queueSelect}: queue_enable written with ${v}`);
      return;
    }
    if (q.enabled) return;
    if (!(this.status & VIRTIO_CONFIG_S_FEATURES_OK)) {
      // §3.1.1: queues are set up after FEATURES_OK; until then the ring format is unknown.
      this.needsReset(`queue ${this.queueSelect}: enabled before FEATURES_OK`);
      return;
    }
    this.enableQueue(this.queueSelect);
  }

  /** Validate the selected queue's registers and create its ring. Errors become NEEDS_RESET. */
  enableQueue(i: number): boolean {
    const isAdmin = this.isAdminQueue(i);
    const q = isAdmin ? this.adminQueueRegisters(i) : this.queues[i];
    if (!q) return false;
    const f = this.driverFeatures;
    const packed = hasFeature(f, VIRTIO_F_RING_PACKED);
    const desc = address(q.descLo, q.descHi);
    const driver = address(q.driverLo, q.driverHi);
    const device = address(q.deviceLo, q.deviceHi);
    let why: string | null = null;
    if (q.size === 0) why = 'size 0';
    else if (!packed && !isPow2(q.size)) why = `size ${q.size} is not a power of two (split ring)`;
    else if (desc === 0 || driver === 0 || device === 0) why = 'ring address not set';
    if (why === null) {
      try {
        q.vq = createRing(this.memory, q, i, f);
      } catch (e) {
        why = e instanceof Error ? e.message : String(e);
      }
    }
    if (why !== null) {
      this.needsReset(`queue ${i}: cannot enable: ${why}`);
      return false;
    }
    q.enabled = true;
    if (isAdmin) return true;
    if (this.activated && this.device.queueEnabled) this.guard(() => this.device.queueEnabled?.(i));
    return true;
  }

  /** queue_reset write of 1 (§4.1.4.3.2, VIRTIO_F_RING_RESET): synchronous, so it reads 0 right after. */
  resetQueue(i: number): void {
    if (this.isAdminQueue(i)) {
      this.admin?.resetQueue(i);
      return;
    }
    const q = this.queues[i];
    if (!q) return;
    const wasEnabled = q.enabled;
    this.queues[i] = this.freshQueue(i, this.driverFeatures);
    if (wasEnabled && this.activated && this.device.queueReset) this.guard(() => this.device.queueReset?.(i));
  }

  /** The driver features `notificationData` was computed for (a bigint test per kick would allocate). */
  private notifyFeatures = -1n;
  private notifyData = false;

  /**
   * A driver notification for queue `i` (§4.1.5.2). Unknown, disabled or pre-DRIVER_OK queues are ignored.
   * `withData`: a 32-bit write of `data` (int32: no heap number per kick); with NOTIFICATION_DATA its
   * next_off / next_wrap (§2.9) go to the ring as a hint when its vqn names this queue, else are ignored
   * (never an error; the kick always counts). Narrower writes and the legacy register are plain kicks.
   */
  kick(i: number, withData = false, data = 0): void {
    // Stopped: notifications are accepted (§2.12.1.5) and served when the device resumes (every queue is re-kicked).
    if (!this.activated || this.broken || this.modeValue !== 'active') return;
    const q = this.queues[i];
    if (!q?.enabled || !q.vq || i >= this.numQueues()) {
      if (this.admin !== null && this.adminQueueRegisters(i)?.enabled) this.kickAdmin(i);
      return;
    }
    if (withData) {
      if (this.notifyFeatures !== this.driverFeatures) {
        this.notifyFeatures = this.driverFeatures;
        this.notifyData = hasFeature(this.driverFeatures, VIRTIO_F_NOTIFICATION_DATA);
      }
      if (this.notifyData) {
        if ((data & 0xffff) === i) q.vq.availHint((data >>> 16) & 0x7fff, (data & 0x80000000) !== 0);
        else q.vq.counters.hintsRejected++;
      }
    }
    try {
      this.device.queueNotify(i); // hot path: no closure
    } catch (e) {
      this.needsReset(e instanceof Error ? `${e.name}: ${e.message}` : String(e));
    }
  }

  private kickAdmin(i: number): void {
    const admin = this.admin as TransportAdminQueues;
    this.guard(() => admin.process(i));
  }

  // ------------------------------------------------------------------ device mode (VIRTIO 1.4)

  get mode(): DeviceMode {
    return this.modeValue;
  }

  /**
   * DEV_MODE_SET from the group owner. Leaving 'active' withholds kicks and interrupts (and tells the
   * device); back to 'active', every enabled queue is kicked (the driver may have notified meanwhile or
   * restored parts may hold work) and the withheld interrupts are raised. Same mode again: no effect.
   */
  setMode(mode: DeviceMode): void {
    if (mode === this.modeValue) return;
    this.modeValue = mode;
    this.device.setMode?.(mode);
    this.interruptRoutesChanged();
    if (mode !== 'active') return;
    if (this.activated && !this.broken) {
      for (let i = 0; i < this.numQueues(); i++) if (this.queues[i]?.enabled) this.kick(i);
    }
    const queues = [...this.pendingQueues];
    this.pendingQueues.clear();
    for (const i of queues) this.notifyQueue(i);
    if (this.pendingConfig) {
      this.pendingConfig = false;
      if (this.status & VIRTIO_CONFIG_S_DRIVER_OK) this.raiseConfigInterrupt();
    }
  }

  // ------------------------------------------------------------------ snapshot

  /** The transport's state as plain JSON data (plus the device's own `snapshot()` if it has one). */
  snapshot(): TransportSnapshot {
    return {
      status: this.status,
      deviceFeatureSelect: this.deviceFeatureSelect,
      driverFeatureSelect: this.driverFeatureSelect,
      driverFeatures: this.driverFeatures.toString(16),
      configVector: this.configVector,
      queueSelect: this.queueSelect,
      configGeneration: this.configGeneration,
      isr: this.isr,
      activated: this.activated,
      broken: this.brokenFlag,
      legacyDriver: this.legacyDriver,
      queues: this.queues.map(queueSnapshot),
      ...(this.admin ? { admin: this.admin.snapshot() } : {}),
      ...(this.modeValue !== 'active' ? { mode: this.modeValue } : {}),
      ...(this.device.snapshot ? { device: this.device.snapshot() } : {}),
    };
  }

  /**
   * Restore a `snapshot()` into a transport built with the same options and device type. Rings are
   * re-created on the saved addresses and given their indices back; an active device is re-activated
   * with a fresh context and then handed its own saved state. Throws `TypeError` on malformed input
   * (that comes from the VMM, not the guest).
   */
  restore(s: TransportSnapshot): void {
    if (!s || typeof s !== 'object' || !Array.isArray(s.queues))
      throw new TypeError('transport snapshot: malformed');
    this.reset();
    this.deviceFeatureSelect = s.deviceFeatureSelect >>> 0;
    this.driverFeatureSelect = s.driverFeatureSelect >>> 0;
    this.legacyDriver = !!s.legacyDriver;
    this.writeDriverFeatures(BigInt(`0x${s.driverFeatures}`) & this.offered);
    this.configVector = s.configVector & 0xffff;
    this.queueSelect = s.queueSelect & 0xffff;
    this.configGeneration = s.configGeneration & 0xff;
    this.isr = s.isr & 0xff;
    this.status = s.status & 0xff;
    this.brokenFlag = !!s.broken;
    // Before the device is re-activated, so that a stopped device stays off its rings.
    this.setMode(s.mode ?? 'active');
    for (let i = 0; i < this.queues.length && i < s.queues.length; i++) {
      const src = s.queues[i];
      if (src)
        restoreQueueRegisters(this.memory, this.queues[i] as QueueRegisters, i, src, this.driverFeatures);
    }
    if (this.admin && s.admin) this.admin.restore(s.admin, this.driverFeatures);
    if (s.activated) {
      this.activated = true;
      this.device.activate(this.context);
    }
    if (s.device !== undefined) this.device.restore?.(s.device);
  }
}
