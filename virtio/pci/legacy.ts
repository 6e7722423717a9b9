/**
 * The legacy (transitional) virtio-pci interface in I/O BAR0 (VIRTIO 1.3 §4.1.4.8 "Legacy Interfaces: A
 * Note on PCI Device Layout"; QEMU `disable-legacy=off`). Only feature bits 0-31 are visible; queues are
 * placed by a page frame number with the legacy ring layout (§2.7.2 legacy: used ring aligned to 4096).
 *
 * Endianness: legacy fields are guest-endian. This model serves little-endian guests (x86, arm64 LE),
 * which is also what QEMU's DEVICE_LITTLE_ENDIAN region + virtio_is_big_endian() give on x86; a
 * big-endian guest would need byte-swapped 16/32-bit fields (not supported).
 *
 * Register answers measured on QEMU 7.2 (transitional device on the root bus): pieces that do
 * not start a register read all-ones; queue_num is read-only; writing PFN 0 resets the device.
 */
import { featureWord, VIRTIO_F_BAD_FEATURE } from '../features.js';
import { ones, type PieceHandler } from './region-access.js';
import type { TransportCore } from './transport-core.js';
import { VIRTIO_MSI_NO_VECTOR } from './transport-registers.js';

/** Register offsets in BAR0 (Linux uapi virtio_pci.h VIRTIO_PCI_*). */
export const LEGACY = {
  hostFeatures: 0, // le32 RO
  guestFeatures: 4, // le32 RW
  queuePfn: 8, // le32 RW
  queueNum: 12, // le16 RO
  queueSel: 14, // le16 RW
  queueNotify: 16, // le16 RW
  status: 18, // u8 RW
  isr: 19, // u8 RO, read clears
  /** Only while MSI-X is enabled; the device config then starts at 24 instead of 20. */
  configVector: 20, // le16 RW
  queueVector: 22, // le16 RW
} as const;

/** Device config offset without / with MSI-X enabled (VIRTIO_PCI_CONFIG_OFF). */
export const LEGACY_CONFIG_OFF = 20;
export const LEGACY_CONFIG_OFF_MSIX = 24;
/** Legacy queue address shift and ring alignment (VIRTIO_PCI_QUEUE_ADDR_SHIFT, VIRTIO_PCI_VRING_ALIGN). */
export const LEGACY_PFN_SHIFT = 12;
export const LEGACY_VRING_ALIGN = 4096;

/** Size of BAR0: QEMU rounds 24 (MSI-X present) + device config length up to a power of two. */
export function legacyBarSize(configLength: number, msixPresent: boolean): number {
  const n = (msixPresent ? LEGACY_CONFIG_OFF_MSIX : LEGACY_CONFIG_OFF) + configLength;
  let p = 4;
  while (p < n) p *= 2;
  return p;
}

/** Legacy ring layout for size `q` at `base` (spec "Legacy Interfaces: Virtqueue Layout"). */
export function legacyRingLayout(base: number, q: number): { desc: number; avail: number; used: number } {
  const avail = base + 16 * q;
  const availEnd = avail + 2 * (3 + q); // flags, idx, ring[q], used_event
  const used = Math.ceil(availEnd / LEGACY_VRING_ALIGN) * LEGACY_VRING_ALIGN;
  return { desc: base, avail, used };
}

export interface LegacyHooks {
  /** Whether MSI-X is enabled right now (moves the device config to 24). */
  msixEnabled(): boolean;
  /** ISR read side effect (de-assert INTx). */
  isrRead(): number;
  /** The queue a notify names. */
  kick(queue: number): void;
  readConfig(offset: number, size: 1 | 2 | 4): number;
  writeConfig(offset: number, size: 1 | 2 | 4, value: number): void;
}

/** The legacy register block over the shared transport state. */
export class LegacyInterface implements PieceHandler {
  constructor(
    private readonly core: TransportCore,
    private readonly hooks: LegacyHooks,
  ) {}

  private get configOffset(): number {
    return this.hooks.msixEnabled() ? LEGACY_CONFIG_OFF_MSIX : LEGACY_CONFIG_OFF;
  }

  readPiece(offset: number, size: 1 | 2 | 4): number {
    const cfg = this.configOffset;
    if (offset >= cfg) return this.hooks.readConfig(offset - cfg, size);
    const c = this.core;
    const q = c.queueSelect < c.numQueues() ? c.queues[c.queueSelect] : undefined;
    switch (offset) {
      case LEGACY.hostFeatures:
        return featureWord(c.offered, 0);
      case LEGACY.guestFeatures:
        return featureWord(c.driverFeatures, 0);
      case LEGACY.queuePfn:
        return q ? Math.floor((q.descHi * 0x1_0000_0000 + q.descLo) / 2 ** LEGACY_PFN_SHIFT) >>> 0 : 0;
      case LEGACY.queueNum:
        return q ? q.maxSize : 0;
      case LEGACY.queueSel:
        return c.queueSelect;
      case LEGACY.status:
        return c.status;
      case LEGACY.isr:
        return this.hooks.isrRead();
      case LEGACY.configVector:
        return c.configVector;
      case LEGACY.queueVector:
        return q ? q.vector : VIRTIO_MSI_NO_VECTOR;
      default:
        return ones(size); // QEMU virtio_ioport_read: unknown offsets read all-ones
    }
  }

  writePiece(offset: number, size: 1 | 2 | 4, value: number): void {
    const cfg = this.configOffset;
    if (offset >= cfg) {
      this.hooks.writeConfig(offset - cfg, size, value);
      return;
    }
    const c = this.core;
    c.legacyDriver = true;
    switch (offset) {
      case LEGACY.guestFeatures: {
        // Bit 30 marks a broken driver; QEMU then substitutes device-specific "bad features". We accept
        // only offered low bits and never bit 30.
        let f = BigInt(value >>> 0) & c.offered & 0xffffffffn;
        f &= ~(1n << BigInt(VIRTIO_F_BAD_FEATURE));
        c.writeDriverFeatures(f);
        return;
      }
      case LEGACY.queuePfn:
        this.writePfn(value >>> 0);
        return;
      case LEGACY.queueSel:
        c.selectQueue(value & 0xffff);
        return;
      case LEGACY.queueNotify:
        this.hooks.kick(value & 0xffff);
        return;
      case LEGACY.status:
        c.writeStatus(value & 0xff);
        return;
      case LEGACY.configVector:
        c.configVector = c.mapVector(value & 0xffff);
        return;
      case LEGACY.queueVector: {
        const q = c.queueSelect < c.numQueues() ? c.queues[c.queueSelect] : undefined;
        if (q) c.setQueueVector(q, value & 0xffff);
        return;
      }
      default:
        return;
    }
  }

  /** Queue address write: 0 resets the device (QEMU virtio_ioport_write); else place and enable the ring. */
  private writePfn(pfn: number): void {
    const c = this.core;
    if (pfn === 0) {
      c.reset();
      return;
    }
    const i = c.queueSelect;
    const q = i < c.numQueues() ? c.queues[i] : undefined;
    if (!q || q.enabled || q.maxSize === 0) return;
    const base = pfn * 2 ** LEGACY_PFN_SHIFT;
    const l = legacyRingLayout(base, q.maxSize);
    q.size = q.maxSize;
    q.descLo = l.desc >>> 0;
    q.descHi = Math.floor(l.desc / 0x1_0000_0000);
    q.driverLo = l.avail >>> 0;
    q.driverHi = Math.floor(l.avail / 0x1_0000_0000);
    q.deviceLo = l.used >>> 0;
    q.deviceHi = Math.floor(l.used / 0x1_0000_0000);
    c.enableQueue(i);
  }
}
