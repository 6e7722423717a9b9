/**
 * Where a byte read of a memory BAR may be served as the low half of a 16-bit read. v86 0.5.462 turns a
 * guest's 16-bit MMIO read into two 8-bit reads (src/rust/cpu/memory.rs read16), and virtio's 16-bit
 * registers answer a 16-bit access at their offset (VIRTIO 1.3 §4.1.3.1: the driver uses the field's
 * width). The ranges come from the function's own virtio capabilities (§4.1.4): the common
 * configuration, where everything at an even offset is a 16-bit field or the low half of a wider one
 * except `device_status` (a byte of its own, at 0x14), and the device configuration, which reads as a
 * byte array at any width. The ISR byte (read-to-clear) and the MSI-X table are never widened.
 */
import type { VirtioNetPci } from '../virtio-net-pci.js';

export interface WideRange {
  bar: number;
  start: number;
  end: number;
  /** An even offset inside the range that is a byte register (read as a byte), or -1. */
  byteRegister: number;
}

const PCI_CAP_ID_VNDR = 0x09;
const VIRTIO_PCI_CAP_COMMON_CFG = 1;
const VIRTIO_PCI_CAP_DEVICE_CFG = 4;
/** device_status in virtio_pci_common_cfg (§4.1.4.3). */
const COMMON_DEVICE_STATUS = 0x14;

/** The virtio capabilities of the function's config space, as widening ranges. */
export function wideReadRanges(device: VirtioNetPci): WideRange[] {
  const out: WideRange[] = [];
  let ptr = device.configRead(0x34, 1) & 0xfc;
  // The list is at most 48 capabilities long in 256 bytes; the bound also stops a looping list.
  for (let n = 0; ptr >= 0x40 && n < 48; n++) {
    if (device.configRead(ptr, 1) === PCI_CAP_ID_VNDR) {
      const type = device.configRead(ptr + 3, 1);
      const bar = device.configRead(ptr + 4, 1);
      const start = device.configRead(ptr + 8, 4);
      const end = start + device.configRead(ptr + 12, 4);
      if (type === VIRTIO_PCI_CAP_COMMON_CFG) {
        out.push({ bar, start, end, byteRegister: start + COMMON_DEVICE_STATUS });
      } else if (type === VIRTIO_PCI_CAP_DEVICE_CFG) {
        out.push({ bar, start, end, byteRegister: -1 });
      }
    }
    ptr = device.configRead(ptr + 1, 1) & 0xfc;
  }
  return out;
}
