/**
 * Power Management capability (ID 0x01, 8 bytes) as QEMU 7.2 puts it on virtio-net-pci behind a PCIe
 * port: PMC = 0x0003 (version 3, nothing else), PMCSR power state writable, cleared on reset
 * (write masks measured on QEMU 7.2). Spec: PCI PM 1.2 §3.2.
 */
import type { PciFunction } from './pci-function.js';

export const PCI_CAP_ID_PM = 0x01;
export const PCI_PM_SIZEOF = 8;
export const PCI_PM_PMC = 0x02;
export const PCI_PM_CTRL = 0x04;
export const PCI_PM_CTRL_STATE_MASK = 0x0003;

export class PmCapability {
  readonly offset: number;

  constructor(
    private readonly fn: PciFunction,
    opts: { offset?: number; pmc?: number } = {},
  ) {
    const off = fn.addCapability(PCI_CAP_ID_PM, PCI_PM_SIZEOF, opts.offset);
    this.offset = off;
    fn.config.setU16(off + PCI_PM_PMC, opts.pmc ?? 0x0003);
    fn.config.setWritable(off + PCI_PM_CTRL, 2, PCI_PM_CTRL_STATE_MASK);
    fn.onReset(() =>
      fn.config.setU16(off + PCI_PM_CTRL, fn.config.getU16(off + PCI_PM_CTRL) & ~PCI_PM_CTRL_STATE_MASK),
    );
  }

  /** Current power state, 0 = D0 .. 3 = D3hot. */
  get powerState(): number {
    return this.fn.config.getU16(this.offset + PCI_PM_CTRL) & PCI_PM_CTRL_STATE_MASK;
  }
}
