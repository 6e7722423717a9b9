/**
 * Driver notifications (VIRTIO 1.3 §4.1.4.4 notification structure, §2.9 / content.tex "Driver
 * Notifications"; digest §2.4). QEMU's layout: notify area at BAR4 + 0x3000, queue_notify_off = queue
 * index, notify_off_multiplier 4, so queue i is kicked by a write at 0x3000 + 4 * i.
 */

/** QEMU's default notify_off_multiplier (page-per-vq=off). */
export const NOTIFY_OFF_MULTIPLIER = 4;

/** A decoded notification value. */
export interface NotificationData {
  /** Virtqueue index (bits 0-15; the queue_notif_config_data value with VIRTIO_F_NOTIF_CONFIG_DATA). */
  vqn: number;
  /** VIRTIO_F_NOTIFICATION_DATA only: bits 16-30, next avail index (split) or ring offset (packed). */
  nextOff: number;
  /** VIRTIO_F_NOTIFICATION_DATA only: bit 31, bit 15 of the avail index (split) or the driver wrap counter (packed). */
  nextWrap: boolean;
}

/** Decode a 32-bit notification value (spec notifications-data-le.c). */
export function decodeNotification(value: number): NotificationData {
  const v = value >>> 0;
  return { vqn: v & 0xffff, nextOff: (v >>> 16) & 0x7fff, nextWrap: v >>> 31 === 1 };
}

/** Encode a notification value as the driver writes it with VIRTIO_F_NOTIFICATION_DATA. */
export function encodeNotification(vqn: number, nextOff: number, nextWrap: boolean): number {
  return ((vqn & 0xffff) | ((nextOff & 0x7fff) << 16) | (nextWrap ? 0x80000000 : 0)) >>> 0;
}

/** The queue a write at `offset` inside the notify area addresses (QEMU virtio_pci_notify_write). */
export function notifyQueueIndex(offset: number, multiplier = NOTIFY_OFF_MULTIPLIER): number {
  return multiplier === 0 ? -1 : Math.floor(offset / multiplier);
}
