/**
 * PCI Express capability (ID 0x10, version 2, 0x3C bytes) for an endpoint, as QEMU 7.2's
 * pcie_endpoint_cap_init lays it out on virtio-net-pci (measured on QEMU 7.2).
 * Spec: PCIe Base §7.5.3; digest §1.2.
 */
import type { PciFunction } from './pci-function.js';

export const PCI_CAP_ID_EXP = 0x10;
export const PCI_EXP_SIZEOF_V2 = 0x3c;
// Register offsets inside the capability (pci_regs.h PCI_EXP_*).
export const PCI_EXP_FLAGS = 0x02;
export const PCI_EXP_DEVCAP = 0x04;
export const PCI_EXP_DEVCTL = 0x08;
export const PCI_EXP_DEVSTA = 0x0a;
export const PCI_EXP_LNKCAP = 0x0c;
export const PCI_EXP_LNKCTL = 0x10;
export const PCI_EXP_LNKSTA = 0x12;
export const PCI_EXP_DEVCAP2 = 0x24;
export const PCI_EXP_DEVCTL2 = 0x28;

/** Extended Tag Field Supported: set by QEMU 11.1 (measured), not by 7.2. */
export const PCI_EXP_DEVCAP_EXT_TAG = 1 << 5;
export const PCI_EXP_DEVCAP_RBER = 1 << 15;
export const PCI_EXP_DEVCAP_FLR = 1 << 28;
/** Correctable/Non-fatal/Fatal/Unsupported-request reporting enables. */
export const PCI_EXP_DEVCTL_ERR_ENABLES = 0x000f;
export const PCI_EXP_DEVCTL_BCR_FLR = 0x8000;
/** Link Control bits QEMU lets the guest write: Common Clock Config, Extended Synch. */
export const PCI_EXP_LNKCTL_WRITABLE = 0x00c0;
/** Device Capabilities 2: Extended Fmt Field + End-End TLP Prefix supported. */
export const PCI_EXP_DEVCAP2_EFF_EETLPP = 0x00300000;
export const PCI_EXP_DEVCTL2_EETLPPB = 0x8000;

export type PcieDeviceType = 'endpoint' | 'legacy-endpoint' | 'rc-integrated-endpoint';
const TYPE_CODE: Record<PcieDeviceType, number> = {
  endpoint: 0x0,
  'legacy-endpoint': 0x1,
  'rc-integrated-endpoint': 0x9,
};

export interface PcieCapabilityOptions {
  /** Capability offset; QEMU's virtio-pci uses 0x40 (first fit). */
  offset?: number;
  type?: PcieDeviceType;
  /** Function Level Reset capable (QEMU x-pcie-flr-init, default on). */
  flr?: boolean;
  /** DevCap Extended Tag Field Supported (QEMU 11.1: on; 7.2: off, the default). */
  extendedTag?: boolean;
  /**
   * On a VF, DevCtl error-reporting enables and Link Control are RsvdP (default true: PCIe SR-IOV, QEMU
   * 7.2's nvme VF). false: writable as on the PF (QEMU 11.1's virtio-net VF, measured).
   */
  vfRsvdP?: boolean;
}

/**
 * Adds the PCIe capability: DevCap 0x10008000 (RBER + FLR), LnkCap 0x411 (2.5 GT/s x1), LnkSta 0x11,
 * DevCap2 EFF|EETLPP. Writable: DevCtl error-reporting enables and Initiate FLR, LnkCtl CCC|ES,
 * DevCtl2 EETLPPB. Writing Initiate FLR resets the function (PciFunction.reset) and reads back 0.
 */
export class PcieCapability {
  readonly offset: number;

  constructor(fn: PciFunction, opts: PcieCapabilityOptions = {}) {
    const off = fn.addCapability(PCI_CAP_ID_EXP, PCI_EXP_SIZEOF_V2, opts.offset);
    this.offset = off;
    const cs = fn.config;
    const flr = opts.flr ?? true;
    cs.setU16(off + PCI_EXP_FLAGS, 2 | (TYPE_CODE[opts.type ?? 'endpoint'] << 4));
    cs.setU32(
      off + PCI_EXP_DEVCAP,
      PCI_EXP_DEVCAP_RBER | (flr ? PCI_EXP_DEVCAP_FLR : 0) | (opts.extendedTag ? PCI_EXP_DEVCAP_EXT_TAG : 0),
    );
    cs.setU32(off + PCI_EXP_LNKCAP, 0x411);
    cs.setU16(off + PCI_EXP_LNKSTA, 0x11);
    cs.setU32(off + PCI_EXP_DEVCAP2, PCI_EXP_DEVCAP2_EFF_EETLPP);
    // On a VF the error-reporting enables and Link Control are RsvdP (PCIe SR-IOV; QEMU 7.2's nvme VF
    // measured the same on QEMU 7.2's nvme VF).
    const vf = fn.isVf && (opts.vfRsvdP ?? true);
    cs.setWritable(
      off + PCI_EXP_DEVCTL,
      2,
      (vf ? 0 : PCI_EXP_DEVCTL_ERR_ENABLES) | (flr ? PCI_EXP_DEVCTL_BCR_FLR : 0),
    );
    cs.setWritable(off + PCI_EXP_LNKCTL, 2, vf ? 0 : PCI_EXP_LNKCTL_WRITABLE);
    cs.setWritable(off + PCI_EXP_DEVCTL2, 2, PCI_EXP_DEVCTL2_EETLPPB);
    if (flr) {
      fn.onConfigWrite(off + PCI_EXP_DEVCTL, 2, () => {
        const v = cs.getU16(off + PCI_EXP_DEVCTL);
        if (!(v & PCI_EXP_DEVCTL_BCR_FLR)) return;
        cs.setU16(off + PCI_EXP_DEVCTL, v & ~PCI_EXP_DEVCTL_BCR_FLR);
        fn.reset();
      });
    }
    // QEMU virtio_pci reset: pcie_cap_deverr_reset + pcie_cap_lnkctl_reset (measured via FLR on 7.2).
    fn.onReset(() => {
      cs.setU16(
        off + PCI_EXP_DEVCTL,
        cs.getU16(off + PCI_EXP_DEVCTL) & ~(PCI_EXP_DEVCTL_ERR_ENABLES | PCI_EXP_DEVCTL_BCR_FLR),
      );
      cs.setU16(off + PCI_EXP_LNKCTL, cs.getU16(off + PCI_EXP_LNKCTL) & ~(PCI_EXP_LNKCTL_WRITABLE | 0x3));
    });
  }
}
