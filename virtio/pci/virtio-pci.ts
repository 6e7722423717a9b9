/**
 * The virtio-pci transport (VIRTIO 1.3 §4.1; digest §2) with QEMU 7.2's layout: one PCI function whose
 * vendor capabilities point into a 16 KiB 64-bit prefetchable BAR4 (common config 0x0, ISR 0x1000,
 * device config 0x2000, notify 0x3000 with multiplier 4), MSI-X table and PBA in BAR1, optionally the
 * legacy register block in I/O BAR0. Capabilities are added in QEMU's order (PCIe and PM first on a
 * PCIe port, then COMMON, ISR, DEVICE, NOTIFY, PCI_CFG, MSI-X), each new one becoming the list head, so
 * the chain reads MSI-X@0xdc → PCI_CFG@0xc8 → NOTIFY@0xb4 → DEVICE@0xa4 → ISR@0x94 → COMMON@0x84 →
 * PM@0x7c → PCIe@0x40 behind a root port, and MSI-X@0x98 → … → COMMON@0x40 on a root bus
 * (config spaces recorded from QEMU 7.2, behind a PCIe port and on the root bus).
 *
 * The transport creates its PciFunction itself (IDs follow from the device type and the legacy/modern
 * choice, as QEMU picks them), so callers cannot get the IDs wrong; it is `transport.function`.
 *
 * A device-group owner (an SR-IOV PF) gets administration virtqueues (VIRTIO 1.3 §2.12, §2.13) with
 * `adminGroups` / `setAdminGroups`; its members (VFs, built with `legacyAccessForAdmin`) keep a legacy
 * register block without an I/O BAR for the owner's legacy-access commands (docs/admin-queue.md).
 */
import { OptionsError } from '../../lib/errors.js';
import type { GuestMemory } from '../../lib/memory/guest-memory.js';
import { type InterruptSink, Msix } from '../../pci/msix.js';
import { PciFunction } from '../../pci/pci-function.js';
import { PcieCapability } from '../../pci/pcie-capability.js';
import { PmCapability } from '../../pci/pm-capability.js';
import {
  type AdminCommandOptions,
  type DeviceGroup,
  LEGACY_NOTIFY_FLAG_MEMBER,
  type LegacyMemberAccess,
  type LegacyNotifyEntry,
} from '../admin/admin-commands.js';
import { AdminQueue } from '../admin/admin-queue.js';
import type { DevicePart } from '../admin/device-parts.js';
import { type TransportFeatureOptions, transportFeatures } from '../features.js';
import type { VirtqueueCounters } from '../queue/virtqueue.js';
import type { DeviceMode, VirtioDevice } from '../virtio-device.js';
import { CommonConfig } from './common-config.js';
import { LEGACY_CONFIG_OFF, LEGACY_CONFIG_OFF_MSIX, LegacyInterface, legacyBarSize } from './legacy.js';
import { NOTIFY_OFF_MULTIPLIER, notifyQueueIndex } from './notify.js';
import { PCI_CFG_CAP, pciCfgWindow } from './pci-cfg-access.js';
import {
  ADMIN_QUEUE_SIZE,
  LEGACY_BAR,
  LEGACY_NOTIFY_DOORBELL,
  MODERN_BAR,
  MODERN_BAR_SIZE,
  MODERN_REGIONS,
  MSIX_BAR,
  PCI_CAP_ID_VNDR,
  PCI_SUBDEVICE_ID_QEMU,
  PCI_VENDOR_ID_REDHAT_QUMRANET,
  VIRTIO_PCI_CAP,
  VIRTIO_PCI_CAP_COMMON_CFG,
  VIRTIO_PCI_CAP_DEVICE_CFG,
  VIRTIO_PCI_CAP_ISR_CFG,
  VIRTIO_PCI_CAP_NOTIFY_CFG,
  VIRTIO_PCI_CAP_PCI_CFG,
  VIRTIO_PCI_CLASS_CODES,
  VIRTIO_PCI_MODERN_DEVICE_BASE,
  VIRTIO_PCI_TRANSITIONAL_IDS,
} from './pci-layout.js';
import { ones, type PieceHandler, splitRead, splitWrite } from './region-access.js';
import { type QueueKickEventfds, TransportCore, type TransportSnapshot } from './transport-core.js';
import { checkParts, commonParts, type PartsContext, statePart } from './transport-parts.js';
import { VIRTIO_MSI_NO_VECTOR } from './transport-registers.js';
import { type TransportLimits, validateTransportSnapshot } from './transport-schema.js';

export * from './pci-layout.js';

export interface VirtioPciOptions {
  device: VirtioDevice;
  memory: GuestMemory;
  /** MSI-X messages (or per-vector signals) and the INTx level. */
  interrupts: InterruptSink;
  /** MSI-X vectors (QEMU `vectors`); 0 = no MSI-X capability. Default: one per queue plus config. */
  msixVectors?: number;
  /** 'pcie' (default): QEMU's layout behind a PCIe root port; 'pci': conventional, on a root bus. */
  bus?: 'pcie' | 'pci';
  /** Legacy I/O BAR0 (QEMU `disable-legacy=off`). Default false (QEMU's choice on PCIe ports). */
  legacy?: boolean;
  /** Modern interface (QEMU `disable-modern=off`). Default true. */
  modern?: boolean;
  features?: TransportFeatureOptions;
  /** 24-bit class code; default by device type (network 0x020000), else 0xff0000. */
  classCode?: number;
  /** Expansion ROM BAR size (QEMU gives virtio-net a 256 KiB ROM); default none. */
  romSize?: number;
  routingId?: number;
  /**
   * Build the function as an SR-IOV VF (PciFunction `vf: true`: Vendor/Device read 0xffff, BARs placed
   * by the PF's SR-IOV capability, no INTx). For SriovHooks.createVf: return `transport.function`.
   */
  vf?: boolean;
  /** Every guest error that put the device into DEVICE_NEEDS_RESET (for VMM logs). */
  onGuestError?: (reason: string) => void;
  /**
   * Device groups this function owns (an SR-IOV PF: `[sriovDeviceGroup(sriov, ...)]`): offers
   * VIRTIO_F_ADMIN_VQ and serves administration virtqueues (§2.13). Same as `setAdminGroups`.
   */
  adminGroups?: readonly DeviceGroup[];
  /**
   * Keep a legacy register block (§4.1.4.8 layout) without an I/O BAR, reachable only through the group
   * owner's legacy-access commands (`legacyMemberAccess()`), plus the legacy notification doorbell in
   * BAR4 at LEGACY_NOTIFY_DOORBELL (`legacyNotifyInfo()`). For SR-IOV VFs, which have no I/O BAR.
   * The legacy-only feature bits (24, 27, 30) then show in that block's host features, as on BAR0.
   */
  legacyAccessForAdmin?: boolean;
  /**
   * Whether a legacy device-config access `[offset, offset + length)` lies within one field of the
   * device type's config (LEGACY_DEV_CFG_* INVALID_FIELD check). Absent: any range inside the config.
   */
  isLegacyConfigField?: (offset: number, length: number) => boolean;
}

/** Administration virtqueue geometry for `setAdminGroups`. */
export interface AdminQueueOptions extends AdminCommandOptions {
  /** Maximum queue_size of each admin queue (default ADMIN_QUEUE_SIZE = 64). */
  size?: number;
  /** admin_queue_num (default 1). */
  count?: number;
}

/** What `snapshot()` returns: JSON data. */
export interface VirtioPciSnapshot {
  transport: TransportSnapshot;
}

/** A PciFunction that lets the transport fill pci_cfg_data right before the guest reads it. */
class VirtioPciFunction extends PciFunction {
  beforeRead: ((offset: number, size: number) => void) | null = null;
  override configRead(offset: number, size: 1 | 2 | 4): number {
    this.beforeRead?.(offset, size);
    return super.configRead(offset, size);
  }
}

export class VirtioPciTransport {
  /** The PCI function carrying the transport (config space, BARs, INTx, FLR). */
  readonly function: PciFunction;
  /** MSI-X (BAR1), or null with `msixVectors: 0`. */
  readonly msix: Msix | null;
  readonly device: VirtioDevice;
  readonly modern: boolean;
  readonly legacy: boolean;
  /** Capability offsets (0 when absent). */
  readonly caps = { common: 0, isr: 0, device: 0, notify: 0, pciCfg: 0 };
  private readonly core: TransportCore;
  private readonly commonCfg: CommonConfig;
  private readonly modernRegion: PieceHandler;
  private readonly legacyRegion: LegacyInterface | null;
  /** The administration virtqueues, once `setAdminGroups` ran. */
  private adminQueue: AdminQueue | null = null;
  private readonly legacyMember: LegacyMemberAccess | null = null;
  private readonly notifyInfo: readonly LegacyNotifyEntry[] = [];
  private readonly doorbell: boolean;

  constructor(options: VirtioPciOptions) {
    const device = options.device;
    const modern = options.modern ?? true;
    const legacy = options.legacy ?? false;
    if (!modern && !legacy)
      throw new OptionsError(
        'modern and legacy cannot both be off (disable-modern=on needs disable-legacy=off)',
      );
    const bus = options.bus ?? 'pcie';
    if (bus !== 'pcie' && bus !== 'pci')
      throw new OptionsError(`bus must be 'pcie' or 'pci', got ${String(bus)}`);
    const id = device.deviceId;
    const transitionalId = VIRTIO_PCI_TRANSITIONAL_IDS[id];
    if (legacy && transitionalId === undefined)
      throw new OptionsError(`virtio device type ${id} has no transitional PCI ID; legacy must be false`);
    this.device = device;
    this.modern = modern;
    this.legacy = legacy;
    const adminLegacy = options.legacyAccessForAdmin ?? false;
    if (adminLegacy && (legacy || !modern || transitionalId === undefined))
      throw new OptionsError(
        'legacyAccessForAdmin needs a modern-only function of a device type with a legacy interface',
      );
    this.doorbell = adminLegacy;
    // The legacy-only bits live in the legacy block alone (modernOffered masks them).
    const withLegacy = legacy || adminLegacy;
    const offered =
      device.deviceFeatures() |
      transportFeatures(options.features ?? {}, modern, withLegacy) |
      (withLegacy ? (device.legacyOnlyFeatures?.() ?? 0n) : 0n);

    const fn = new VirtioPciFunction({
      vendorId: PCI_VENDOR_ID_REDHAT_QUMRANET,
      deviceId: legacy ? (transitionalId as number) : VIRTIO_PCI_MODERN_DEVICE_BASE + id,
      // Transitional devices MUST have revision 0 and subsystem ID = device type (§4.1.2.1).
      revision: legacy ? 0 : 1,
      classCode: options.classCode ?? VIRTIO_PCI_CLASS_CODES[id] ?? 0xff0000,
      subsystemVendorId: PCI_VENDOR_ID_REDHAT_QUMRANET,
      subsystemId: legacy ? id : PCI_SUBDEVICE_ID_QEMU,
      interruptPin: 1,
      express: bus === 'pcie',
      romSize: options.romSize ?? 0,
      routingId: options.routingId ?? 0,
      vf: options.vf ?? false,
      sink: options.interrupts,
    });
    this.function = fn;
    if (bus === 'pcie') {
      new PcieCapability(fn);
      new PmCapability(fn);
    }

    const nq = Math.max(device.numQueues(0n), device.numQueues(offered));
    const vectors = options.msixVectors ?? Math.min(2048, nq + 1);
    if (!Number.isInteger(vectors) || vectors < 0 || vectors > 2048)
      throw new OptionsError(`msixVectors must be 0..2048, got ${vectors}`);

    let msix: Msix | null = null;
    this.core = new TransportCore(
      device,
      options.memory,
      offered,
      {
        msixVectors: vectors,
        interrupt: (v) => this.signal(v),
        vectorFd: (v) => this.msix?.vectorFd(v) ?? null,
      },
      options.onGuestError,
    );
    this.commonCfg = new CommonConfig(this.core);
    this.modernRegion = {
      readPiece: (o, s) => this.modernRead(o, s),
      writePiece: (o, s, v) => this.modernWrite(o, s, v),
    };

    const legacyBlock = (): LegacyInterface =>
      new LegacyInterface(this.core, {
        msixEnabled: () => this.msix?.enabled ?? false,
        isrRead: () => this.readIsr(),
        kick: (q) => this.core.kick(q),
        readConfig: (o, s) => this.readDeviceConfig(o, s),
        writeConfig: (o, s, v) => this.writeDeviceConfig(o, s, v),
      });
    if (adminLegacy) {
      const block = legacyBlock();
      const member: LegacyMemberAccess = {
        registers: block,
        deviceConfigOffset: () => (this.msix?.enabled ? LEGACY_CONFIG_OFF_MSIX : LEGACY_CONFIG_OFF),
        deviceConfigLength: () => this.configLength(),
      };
      const field = options.isLegacyConfigField;
      if (field) member.isDeviceConfigField = (o, l) => field(o, l);
      this.legacyMember = member;
      this.notifyInfo = Object.freeze([
        Object.freeze({
          flags: LEGACY_NOTIFY_FLAG_MEMBER,
          bar: MODERN_BAR,
          offset: BigInt(LEGACY_NOTIFY_DOORBELL),
        } as LegacyNotifyEntry),
      ]);
    }
    if (legacy) {
      this.legacyRegion = legacyBlock();
      const region = this.legacyRegion;
      fn.defineBar(LEGACY_BAR, {
        size: legacyBarSize(this.configLength(), vectors > 0),
        type: 'io',
        handler: { read: (o, s) => splitRead(region, o, s), write: (o, s, v) => splitWrite(region, o, s, v) },
      });
    } else {
      this.legacyRegion = null;
    }

    if (modern) {
      const cap = (type: number, length: number, offset: number, size: number): number => {
        const o = fn.addCapability(PCI_CAP_ID_VNDR, length);
        const cs = fn.config;
        cs.setU8(o + VIRTIO_PCI_CAP.len, length);
        cs.setU8(o + VIRTIO_PCI_CAP.cfgType, type);
        cs.setU8(o + VIRTIO_PCI_CAP.bar, type === VIRTIO_PCI_CAP_PCI_CFG ? 0 : MODERN_BAR);
        cs.setU32(o + VIRTIO_PCI_CAP.offset, offset);
        cs.setU32(o + VIRTIO_PCI_CAP.length, size);
        return o;
      };
      const R = MODERN_REGIONS;
      this.caps.common = cap(VIRTIO_PCI_CAP_COMMON_CFG, 16, R.common, R.size);
      this.caps.isr = cap(VIRTIO_PCI_CAP_ISR_CFG, 16, R.isr, R.size);
      this.caps.device = cap(VIRTIO_PCI_CAP_DEVICE_CFG, 16, R.device, R.size);
      this.caps.notify = cap(VIRTIO_PCI_CAP_NOTIFY_CFG, 20, R.notify, R.size);
      fn.config.setU32(this.caps.notify + VIRTIO_PCI_CAP.notifyMultiplier, NOTIFY_OFF_MULTIPLIER);
      const pc = cap(VIRTIO_PCI_CAP_PCI_CFG, PCI_CFG_CAP.size, 0, 0);
      this.caps.pciCfg = pc;
      // QEMU: cap.bar (byte), cap.offset, cap.length and pci_cfg_data are guest-writable.
      fn.config.setWritable(pc + PCI_CFG_CAP.bar, 1, 0xff);
      fn.config.setWritable(pc + PCI_CFG_CAP.offset, 4, 0xffffffff);
      fn.config.setWritable(pc + PCI_CFG_CAP.length, 4, 0xffffffff);
      fn.config.setWritable(pc + PCI_CFG_CAP.data, 4, 0xffffffff);
      fn.beforeRead = (o, s) => {
        if (o < pc + PCI_CFG_CAP.data + 4 && o + s > pc + PCI_CFG_CAP.data) this.pciCfgAccess(false);
      };
      fn.onConfigWrite(pc + PCI_CFG_CAP.data, 4, () => this.pciCfgAccess(true));
      const region = this.modernRegion;
      fn.defineBar(MODERN_BAR, {
        size: MODERN_BAR_SIZE,
        type: 'mem64',
        prefetchable: true,
        handler: { read: (o, s) => splitRead(region, o, s), write: (o, s, v) => splitWrite(region, o, s, v) },
      });
    }

    if (vectors > 0) {
      msix = new Msix(
        fn,
        { vectors, bar: MSIX_BAR, ...Msix.exclusiveBarLayout(vectors) },
        options.interrupts,
      );
    }
    this.msix = msix;
    if (msix) msix.onRoutes = () => this.core.interruptRoutesChanged();
    // FLR (and any PCI reset) resets the virtio device too (QEMU virtio_pci_reset).
    fn.onReset(() => this.core.reset());
    if (options.adminGroups) this.setAdminGroups(options.adminGroups);
  }

  /** Every feature bit offered (device bits + transport bits; VIRTIO_F_ADMIN_VQ once admin groups are set). */
  get offeredFeatures(): bigint {
    return this.core.offered;
  }

  // ------------------------------------------------------------------ administration virtqueues

  /**
   * Makes this function the owner of `groups` (VIRTIO 1.3 §2.12): offers VIRTIO_F_ADMIN_VQ (bit 41) and
   * serves `options.count` administration virtqueues (§2.13) at admin_queue_index = the largest
   * num_queues the device can report (virtio-net: 2·max_pairs + 1), so MQ never moves them. Call once,
   * before the driver sees the function. Throws OptionsError on a VF, without groups, or when called twice.
   */
  setAdminGroups(groups: readonly DeviceGroup[], options: AdminQueueOptions = {}): void {
    if (this.function.isVf) throw new OptionsError('adminGroups: a VF owns no device group (§2.12.1)');
    if (!this.modern)
      throw new OptionsError('adminGroups: administration virtqueues need the modern interface');
    if (this.adminQueue) throw new OptionsError('adminGroups: already set');
    if (groups.length === 0) throw new OptionsError('adminGroups: no group given');
    const size = options.size ?? ADMIN_QUEUE_SIZE;
    const count = options.count ?? 1;
    let aq: AdminQueue;
    try {
      aq = new AdminQueue(groups, options);
      this.core.setAdminQueues(aq, { index: this.core.queues.length, count, maxSize: size });
    } catch (e) {
      throw new OptionsError(`adminGroups: ${e instanceof Error ? e.message : String(e)}`);
    }
    this.adminQueue = aq;
  }

  /** The administration virtqueue processor (counters, LIST_USE state), or null without admin groups. */
  get admin(): AdminQueue | null {
    return this.adminQueue;
  }

  /**
   * This function's legacy register block for its group owner's LEGACY_*_CFG_* commands (§2.12.1.1),
   * or null unless built with `legacyAccessForAdmin`. The same object every call.
   */
  legacyMemberAccess(): LegacyMemberAccess | null {
    return this.legacyMember;
  }

  /**
   * Where each virtqueue is notified (§4.1.4.4): BAR4 offset of queue i's slot in the notify area. Every
   * queue has its own address (multiplier 4), so a write of any width and value there is that queue's kick.
   */
  queueNotifyOffsets(): number[] {
    return Array.from(
      { length: this.core.queues.length },
      (_, i) => MODERN_REGIONS.notify + i * NOTIFY_OFF_MULTIPLIER,
    );
  }

  /** Queue `index`'s IN_ORDER / NOTIFICATION_DATA counters (§2.7.9, §2.8, §2.9); null unless enabled. */
  queueCounters(index: number): VirtqueueCounters | null {
    return this.core.queues[index]?.vq?.counters ?? null;
  }

  /** LEGACY_NOTIFY_INFO entries of this function (its BAR4 doorbell), empty unless `legacyAccessForAdmin`. */
  legacyNotifyInfo(): readonly LegacyNotifyEntry[] {
    return this.notifyInfo;
  }

  // ------------------------------------------------------------------ state the VMM reads
  // The VMM's config and BAR accesses go to `function` (PciFunction.configRead/configWrite/barRead/
  // barWrite): the transport's registers are BAR handlers and config-write hooks on it.

  /** device_status as the driver sees it. */
  get status(): number {
    return this.core.status;
  }
  /** The driver's features (final once FEATURES_OK stuck). */
  get driverFeatures(): bigint {
    return this.core.driverFeatures;
  }
  /** Why the device last entered DEVICE_NEEDS_RESET or refused FEATURES_OK. */
  get lastError(): string | null {
    return this.core.lastError;
  }

  /**
   * The interrupt sink's `vectorFd` answers changed (VMM eventfds or masks): a device with queue workers
   * re-reads them before this returns.
   */
  interruptRoutesChanged(): void {
    this.core.interruptRoutesChanged();
  }

  /**
   * Where the driver's kicks may also arrive by eventfd (the vfio-user server's ioeventfds, by queue
   * index), for a device that serves them on its own threads; null: none. Its answers changing is an
   * `interruptRoutesChanged`.
   */
  setKickEventfds(kicks: QueueKickEventfds | null): void {
    this.core.kicks = kicks;
    this.core.interruptRoutesChanged();
  }

  /** The VMM's device reset (system reset): a function-level reset of the PCI function and the device. */
  reset(): void {
    this.function.reset();
  }

  /** Transport state (status, features, queue registers, ring indices, device state) as JSON data. */
  snapshot(): VirtioPciSnapshot {
    return { transport: this.core.snapshot() };
  }

  /** Restore a `snapshot()` taken from a transport with the same options. PCI config space is the function's. */
  restore(state: VirtioPciSnapshot): void {
    if (!state || typeof state !== 'object' || !state.transport)
      throw new TypeError('virtio-pci snapshot: malformed');
    this.core.restore(state.transport);
  }

  // ------------------------------------------------------------------ group member (VIRTIO 1.4)

  /** This function's mode as its group owner set it (DEV_MODE_SET). */
  get mode(): DeviceMode {
    return this.core.mode;
  }

  /** DEV_MODE_SET from the group owner: see `TransportCore.setMode`. */
  setMode(mode: DeviceMode): void {
    this.core.setMode(mode);
  }

  /** What a restore of this transport checks against: memory, queue count and sizes, offered features. */
  limits(): TransportLimits {
    const core = this.core;
    const device = this.device;
    return {
      memory: core.memory,
      offered: core.offered,
      queueCount: core.queues.length,
      maxQueueSize: (i, f) => (i < device.numQueues(f) ? device.maxQueueSize(i, f) : 0),
    };
  }

  private partsContext(): PartsContext {
    return { offered: this.core.modernOffered, numQueues: (f) => this.device.numQueues(f) };
  }

  /** DEV_PARTS_GET: the common parts and the device-type state part `type` (docs/admin-queue.md). */
  deviceParts(type: number, format: string): DevicePart[] {
    const t = this.core.snapshot();
    return [...commonParts(t, this.partsContext()), statePart(type, format, t)];
  }

  /**
   * DEV_PARTS_SET: checks `parts` whole (the state part validated against this transport and by
   * `validateDevice`, every common part consistent with it), then restores; the mode stays as it is.
   * Returns why the parts were refused (nothing changed then), or null.
   */
  setDeviceParts(
    parts: readonly DevicePart[],
    type: number,
    format: string,
    validateDevice: (device: unknown) => void,
  ): string | null {
    const r = checkParts(
      parts,
      type,
      format,
      (t) => commonParts(t, this.partsContext()),
      (s) => validateTransportSnapshot(s, validateDevice, 'parts', this.limits()),
    );
    if (typeof r === 'string') return r;
    this.core.restore({ ...r.transport, mode: this.core.mode });
    return null;
  }

  // ------------------------------------------------------------------ regions

  private configLength(): number {
    // QEMU sizes the device config once, from the offered features (virtio_net_set_config_size).
    return this.device.configLength(this.offeredFeatures);
  }

  private modernRead(o: number, s: 1 | 2 | 4): number {
    const R = MODERN_REGIONS;
    if (o < R.isr) return this.commonCfg.readPiece(o - R.common, s);
    // The doorbell is write-only; reading it must not clear the ISR.
    if (this.doorbell && o >= LEGACY_NOTIFY_DOORBELL && o < LEGACY_NOTIFY_DOORBELL + 2) return 0;
    if (o < R.device) return this.readIsr();
    if (o < R.notify) return this.readDeviceConfig(o - R.device, s);
    return 0; // notify area reads 0 (QEMU)
  }

  private modernWrite(o: number, s: 1 | 2 | 4, v: number): void {
    const R = MODERN_REGIONS;
    if (o < R.isr) this.commonCfg.writePiece(o - R.common, s, v);
    else if (o < R.device) {
      // ISR is read-only; a le16 (or wider) write at the doorbell is a legacy queue notification.
      if (this.doorbell && o === LEGACY_NOTIFY_DOORBELL && s >= 2) this.core.kick(v & 0xffff);
      return;
    } else if (o < R.notify) this.writeDeviceConfig(o - R.device, s, v);
    // A 32-bit write may carry notification data (§4.1.5.2); narrower ones are a plain kick.
    else this.core.kick(notifyQueueIndex(o - R.notify), s === 4, v | 0);
  }

  /** ISR read (§4.1.4.5): returns and clears the byte and de-asserts INTx. */
  private readIsr(): number {
    const v = this.core.readIsr();
    this.function.setIntx(false);
    return v;
  }

  /** Device config: bytes past the device's length read all-ones, writes there are dropped (QEMU). */
  private readDeviceConfig(o: number, s: 1 | 2 | 4): number {
    if (o + s > this.configLength()) return ones(s);
    try {
      return this.device.readConfig(o, s);
    } catch {
      return ones(s);
    }
  }

  private writeDeviceConfig(o: number, s: 1 | 2 | 4, v: number): void {
    if (o + s > this.configLength()) return;
    this.core.guard(() => this.device.writeConfig(o, s, v));
  }

  /** Deliver an interrupt: MSI-X vector when MSI-X is on, else INTx following the ISR (QEMU virtio_pci_notify). */
  private signal(vector: number): void {
    const m = this.msix;
    if (m?.enabled) {
      if (vector !== VIRTIO_MSI_NO_VECTOR) m.notify(vector);
      return;
    }
    this.function.setIntx(this.core.isr !== 0);
  }

  /** pci_cfg_data read (before the config read returns it) or write (after the config bytes changed). */
  private pciCfgAccess(write: boolean): void {
    const cs = this.function.config;
    const pc = this.caps.pciCfg;
    const w = pciCfgWindow(
      cs.getU8(pc + PCI_CFG_CAP.bar),
      cs.getU32(pc + PCI_CFG_CAP.offset),
      cs.getU32(pc + PCI_CFG_CAP.length),
      {
        bar: MODERN_BAR,
        size: MODERN_BAR_SIZE,
      },
    );
    if (!w) return;
    const d = pc + PCI_CFG_CAP.data;
    if (write) {
      const v = w.length === 1 ? cs.getU8(d) : w.length === 2 ? cs.getU16(d) : cs.getU32(d);
      this.modernWrite(w.offset, w.length, v);
    } else {
      const v = this.modernRead(w.offset, w.length);
      if (w.length === 1) cs.setU8(d, v);
      else if (w.length === 2) cs.setU16(d, v);
      else cs.setU32(d, v);
    }
  }
}
