/**
 * What a virtio-pci function looks like from the bus (VIRTIO 1.3 §4.1.2, §4.1.4): its IDs and class, the
 * vendor capability layout, and QEMU's BAR layout that virtio-pci.ts builds. Constants only.
 */
export const PCI_VENDOR_ID_REDHAT_QUMRANET = 0x1af4;
/** QEMU's PCI_SUBDEVICE_ID_QEMU, the subsystem ID of modern-only virtio functions. */
export const PCI_SUBDEVICE_ID_QEMU = 0x1100;
/** Modern device ID = 0x1040 + virtio device ID (§4.1.2.1). */
export const VIRTIO_PCI_MODERN_DEVICE_BASE = 0x1040;
/** Transitional device IDs by virtio device ID (§4.1.2.1 table; QEMU trans_devid). */
export const VIRTIO_PCI_TRANSITIONAL_IDS: Readonly<Record<number, number>> = {
  1: 0x1000, // network
  2: 0x1001, // block
  5: 0x1002, // memory balloon (traditional)
  3: 0x1003, // console
  8: 0x1004, // SCSI host
  4: 0x1005, // entropy source
  9: 0x1009, // 9P transport
};
/** PCI class codes QEMU gives virtio functions (default PCI_CLASS_OTHERS). */
export const VIRTIO_PCI_CLASS_CODES: Readonly<Record<number, number>> = {
  1: 0x020000,
  2: 0x010000,
  3: 0x078000,
};

export const PCI_CAP_ID_VNDR = 0x09;
/** `cfg_type` values (§4.1.4). */
export const VIRTIO_PCI_CAP_COMMON_CFG = 1;
export const VIRTIO_PCI_CAP_NOTIFY_CFG = 2;
export const VIRTIO_PCI_CAP_ISR_CFG = 3;
export const VIRTIO_PCI_CAP_DEVICE_CFG = 4;
export const VIRTIO_PCI_CAP_PCI_CFG = 5;
/** `struct virtio_pci_cap` fields (16 bytes; the notify cap adds notify_off_multiplier at 16). */
export const VIRTIO_PCI_CAP = {
  vndr: 0,
  next: 1,
  len: 2,
  cfgType: 3,
  bar: 4,
  id: 5,
  offset: 8,
  length: 12,
  notifyMultiplier: 16,
} as const;

/** QEMU's modern memory BAR: index, size and the four 4 KiB regions in it. */
export const MODERN_BAR = 4;
export const MODERN_BAR_SIZE = 0x4000;
export const MODERN_REGIONS = {
  common: 0x0000,
  isr: 0x1000,
  device: 0x2000,
  notify: 0x3000,
  size: 0x1000,
} as const;
export const MSIX_BAR = 1;
export const LEGACY_BAR = 0;

/** Maximum queue_size of an administration virtqueue (default of `AdminQueueOptions.size`). */
export const ADMIN_QUEUE_SIZE = 64;
/**
 * The legacy notification doorbell of a function built with `legacyAccessForAdmin` (§2.12.1.1 "Legacy
 * Driver Notification"): a le16 write of a queue index here notifies that queue, as a write to legacy
 * BAR0 offset 16 would. BAR4 offset 0x1800 lies in the ISR region, whose writes mean nothing otherwise
 * (QEMU ignores them); the modern notify area cannot serve, since there the address picks the queue.
 * LEGACY_NOTIFY_INFO reports it as {flags 2 (member), bar 4, offset 0x1800}.
 */
export const LEGACY_NOTIFY_DOORBELL = MODERN_REGIONS.isr + 0x800;
