/**
 * The PCI configuration access capability, `struct virtio_pci_cfg_cap` (VIRTIO 1.3 §4.1.4.9; digest
 * §2.7): the driver writes cap.bar, cap.offset and cap.length (1, 2 or 4), then reading or writing
 * pci_cfg_data (capability + 16) performs that access in the BAR. QEMU 7.2 (virtio_read_config /
 * virtio_write_config) does the access when config space is read or written; an access it cannot
 * make (length not 1/2/4, offset not a multiple of the length, outside the virtio structures) leaves
 * pci_cfg_data unchanged (measured on QEMU).
 */

/** Field offsets inside the capability (virtio_pci_cap + pci_cfg_data). */
export const PCI_CFG_CAP = {
  bar: 4,
  offset: 8,
  length: 12,
  data: 16,
  size: 20,
} as const;

/** The window a driver has programmed, or null when it cannot be used. */
export function pciCfgWindow(
  bar: number,
  offset: number,
  length: number,
  target: { bar: number; size: number },
): { offset: number; length: 1 | 2 | 4 } | null {
  if (length !== 1 && length !== 2 && length !== 4) return null;
  // QEMU 7.2 ignores cap.bar and always looks in the modern memory BAR; we require the driver to name it (§4.1.4.9.1).
  if (bar !== target.bar) return null;
  if (offset % length !== 0 || offset + length > target.size) return null;
  return { offset, length };
}
