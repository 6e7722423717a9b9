/**
 * Alternative Routing-ID Interpretation extended capability (ID 0x000E, version 1, 8 bytes), as QEMU's
 * pcie_ari_init: ARI Capability = Next Function Number << 8, everything read-only.
 * Spec: PCIe Base §7.8.7; digest §1.3.
 */
import type { PciFunction } from './pci-function.js';

export const PCI_EXT_CAP_ID_ARI = 0x000e;
export const PCI_ARI_SIZEOF = 8;
export const PCI_ARI_CAP = 0x04;
export const PCI_ARI_CTRL = 0x06;

export class AriCapability {
  readonly offset: number;

  constructor(fn: PciFunction, opts: { offset?: number; nextFunction: number }) {
    this.offset = fn.addExtendedCapability(PCI_EXT_CAP_ID_ARI, 1, PCI_ARI_SIZEOF, opts.offset);
    fn.config.setU16(this.offset + PCI_ARI_CAP, (opts.nextFunction & 0xff) << 8);
  }
}
