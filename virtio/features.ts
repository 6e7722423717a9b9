/**
 * Device-independent feature bits (VIRTIO 1.3 §6 "Reserved Feature Bits"; digest §2.11) and helpers for
 * the 32-bit feature windows the transports expose. Features are `bigint` bitmaps so that words beyond
 * bit 63 work the same way as the first two.
 */

export const VIRTIO_F_NOTIFY_ON_EMPTY = 24; // legacy only
export const VIRTIO_F_ANY_LAYOUT = 27; // legacy only (implied by VERSION_1)
export const VIRTIO_F_INDIRECT_DESC = 28;
export const VIRTIO_F_EVENT_IDX = 29;
/** Bit 30: never negotiated; QEMU offers it on the legacy interface only to catch broken drivers. */
export const VIRTIO_F_BAD_FEATURE = 30;
export const VIRTIO_F_VERSION_1 = 32;
export const VIRTIO_F_ACCESS_PLATFORM = 33;
export const VIRTIO_F_RING_PACKED = 34;
export const VIRTIO_F_IN_ORDER = 35;
export const VIRTIO_F_ORDER_PLATFORM = 36;
export const VIRTIO_F_SR_IOV = 37;
export const VIRTIO_F_NOTIFICATION_DATA = 38;
export const VIRTIO_F_NOTIF_CONFIG_DATA = 39;
export const VIRTIO_F_RING_RESET = 40;
export const VIRTIO_F_ADMIN_VQ = 41;

/** The feature bit `n` as a one-bit mask. */
export function featureBit(n: number): bigint {
  return 1n << BigInt(n);
}

/** Whether bit `n` is set in `features`. */
export function hasFeature(features: bigint, n: number): boolean {
  return ((features >> BigInt(n)) & 1n) === 1n;
}

/** 32-bit window `select` of `features` (bits 32*select .. 32*select+31), as the common config shows it. */
export function featureWord(features: bigint, select: number): number {
  if (!Number.isInteger(select) || select < 0) return 0;
  return Number((features >> BigInt(32 * select)) & 0xffffffffn);
}

/** `features` with window `select` replaced by `value`. */
export function withFeatureWord(features: bigint, select: number, value: number): bigint {
  const shift = BigInt(32 * select);
  return (features & ~(0xffffffffn << shift)) | (BigInt(value >>> 0) << shift);
}

/** Bits only the legacy interface offers; the modern window masks them out (QEMU legacy_features). */
export const LEGACY_ONLY_FEATURES =
  featureBit(VIRTIO_F_NOTIFY_ON_EMPTY) | featureBit(VIRTIO_F_ANY_LAYOUT) | featureBit(VIRTIO_F_BAD_FEATURE);

/**
 * Transport and ring feature options, named after QEMU's virtio-pci device properties
 * (`event_idx`, `indirect_desc`, `packed`, `queue_reset`, `notification_data`, `in_order`,
 * `iommu_platform`). Defaults are QEMU 7.2's.
 */
export interface TransportFeatureOptions {
  /** VIRTIO_F_EVENT_IDX (QEMU default on). */
  eventIdx?: boolean;
  /** VIRTIO_F_INDIRECT_DESC (default on). */
  indirectDesc?: boolean;
  /** VIRTIO_F_RING_PACKED (default off). */
  packed?: boolean;
  /** VIRTIO_F_RING_RESET: per-queue reset through queue_reset (QEMU 7.2 default on). */
  queueReset?: boolean;
  /** VIRTIO_F_NOTIFICATION_DATA: 32-bit notifications carrying the next avail position (default off). */
  notificationData?: boolean;
  /** VIRTIO_F_IN_ORDER (default off). */
  inOrder?: boolean;
  /** VIRTIO_F_ACCESS_PLATFORM (QEMU iommu_platform, default off). */
  accessPlatform?: boolean;
  /** VIRTIO_F_ANY_LAYOUT on the legacy interface (QEMU any_layout, default on). */
  anyLayout?: boolean;
  /** VIRTIO_F_NOTIFY_ON_EMPTY on the legacy interface (QEMU notify_on_empty, default on). */
  notifyOnEmpty?: boolean;
}

/**
 * Transport/ring bits the transport offers on top of the device type's bits. VERSION_1 is added when the
 * modern interface exists; the legacy-only bits when the legacy interface exists (shown there only).
 */
export function transportFeatures(o: TransportFeatureOptions, modern: boolean, legacy: boolean): bigint {
  let f = 0n;
  if (o.indirectDesc ?? true) f |= featureBit(VIRTIO_F_INDIRECT_DESC);
  if (o.eventIdx ?? true) f |= featureBit(VIRTIO_F_EVENT_IDX);
  if (modern) {
    f |= featureBit(VIRTIO_F_VERSION_1);
    if (o.accessPlatform) f |= featureBit(VIRTIO_F_ACCESS_PLATFORM);
    if (o.packed) f |= featureBit(VIRTIO_F_RING_PACKED);
    if (o.inOrder) f |= featureBit(VIRTIO_F_IN_ORDER);
    if (o.notificationData) f |= featureBit(VIRTIO_F_NOTIFICATION_DATA);
    if (o.queueReset ?? true) f |= featureBit(VIRTIO_F_RING_RESET);
  }
  if (legacy) {
    f |= featureBit(VIRTIO_F_BAD_FEATURE);
    if (o.anyLayout ?? true) f |= featureBit(VIRTIO_F_ANY_LAYOUT);
    if (o.notifyOnEmpty ?? true) f |= featureBit(VIRTIO_F_NOTIFY_ON_EMPTY);
  }
  return f;
}
