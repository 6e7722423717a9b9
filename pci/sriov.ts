/**
 * SR-IOV extended capability (ID 0x0010, version 1, 0x40 bytes) of a physical function, with QEMU 7.2
 * hw/pci/pcie_sriov.c semantics (measured on QEMU 7.2's nvme SR-IOV). Spec: PCIe Base §9.3.3;
 * digest §1.5/§1.6.
 */
import { OptionsError } from '../lib/errors.js';
import { type BarType, barLowMask, barTypeBits, isPow2, type PciFunction } from './pci-function.js';

export const PCI_EXT_CAP_ID_SRIOV = 0x0010;
export const PCI_SRIOV_SIZEOF = 0x40;
export const PCI_SRIOV_CAP = 0x04;
export const PCI_SRIOV_CTRL = 0x08;
export const PCI_SRIOV_STATUS = 0x0a;
export const PCI_SRIOV_INITIAL_VF = 0x0c;
export const PCI_SRIOV_TOTAL_VF = 0x0e;
export const PCI_SRIOV_NUM_VF = 0x10;
export const PCI_SRIOV_FUNC_LINK = 0x12;
export const PCI_SRIOV_VF_OFFSET = 0x14;
export const PCI_SRIOV_VF_STRIDE = 0x16;
export const PCI_SRIOV_VF_DID = 0x1a;
export const PCI_SRIOV_SUP_PGSIZE = 0x1c;
export const PCI_SRIOV_SYS_PGSIZE = 0x20;
export const PCI_SRIOV_BAR = 0x24;
export const PCI_SRIOV_VFM = 0x3c;

export const PCI_SRIOV_CTRL_VFE = 0x01;
export const PCI_SRIOV_CTRL_MSE = 0x08;
export const PCI_SRIOV_CTRL_ARI = 0x10;
/** Control bits QEMU lets the guest write: VF Enable, VF MSE, ARI Capable Hierarchy. */
export const PCI_SRIOV_CTRL_WRITABLE = PCI_SRIOV_CTRL_VFE | PCI_SRIOV_CTRL_MSE | PCI_SRIOV_CTRL_ARI;
/** QEMU's SRIOV_SUP_PGSIZE_MINREQ: 4K, 8K, 64K, 256K, 1M, 4M. */
export const SRIOV_SUP_PGSIZE_MINREQ = 0x553;

export interface VfBarOptions {
  index: number;
  /** Per-VF size, a power of two. */
  size: number;
  type: Exclude<BarType, 'io'>;
  prefetchable?: boolean;
}

export interface SriovOptions {
  /** Capability offset (default: next free extended-capability slot). */
  offset?: number;
  totalVfs: number;
  /** Default: totalVfs (QEMU). */
  initialVfs?: number;
  vfDeviceId: number;
  firstVfOffset: number;
  vfStride: number;
  /**
   * First VF Offset / VF Stride as a function of NumVFs and ARI Capable Hierarchy (spec: they may
   * depend on both). Called whenever either changes; default: the fixed values above (QEMU).
   */
  routing?: (numVfs: number, ariCapableHierarchy: boolean) => { firstVfOffset: number; vfStride: number };
  supportedPageSizes?: number;
  vfBars: VfBarOptions[];
  /**
   * Control/NumVFs rules. 'qemu-7.2' (default): NumVFs always writable, VF Enable with NumVFs > TotalVFs
   * sets the bit but creates no VF, clearing VF Enable zeroes NumVFs. 'qemu-11.1' (current pcie_sriov,
   * measured on QEMU 11.1): VF Enable cannot be set while NumVFs > TotalVFs, NumVFs is read-only
   * while VF Enable is set, and clearing VF Enable keeps NumVFs.
   */
  rules?: 'qemu-7.2' | 'qemu-11.1';
}

export interface SriovHooks {
  /** Build VF `index` (0-based; VF number index+1) at `routingId`; must be a PciFunction with `vf: true`. */
  createVf(index: number, routingId: number): PciFunction;
  destroyVf(index: number, vf: PciFunction): void;
}

export class SriovCapability {
  readonly offset: number;
  private readonly opts: SriovOptions;
  private readonly created: PciFunction[] = [];
  private readonly changeListeners: ((vfs: readonly PciFunction[]) => void)[] = [];

  constructor(
    private readonly pf: PciFunction,
    opts: SriovOptions,
    private readonly hooks: SriovHooks,
  ) {
    if (pf.config.size !== 4096) throw new OptionsError('SR-IOV needs a PCI Express function');
    if (pf.isVf) throw new OptionsError('a VF cannot be an SR-IOV PF');
    const total = opts.totalVfs;
    if (!Number.isInteger(total) || total < 0 || total > 0xffff)
      throw new OptionsError(`totalVfs out of range: ${total}`);
    const last = pf.routingId + opts.firstVfOffset + Math.max(total - 1, 0) * opts.vfStride;
    if (total > 0 && last > 0xffff) throw new OptionsError('VF routing IDs overflow 16 bits');
    for (const b of opts.vfBars) {
      const is64 = b.type === 'mem64';
      if (!Number.isInteger(b.index) || b.index < 0 || b.index > (is64 ? 4 : 5))
        throw new OptionsError(`VF BAR index ${b.index} out of range`);
      if (!isPow2(b.size) || b.size < 16)
        throw new OptionsError(`VF BAR ${b.index} size must be a power of two >= 16`);
    }
    this.opts = { ...opts, vfBars: opts.vfBars.map((b) => ({ ...b })) };
    const off = pf.addExtendedCapability(PCI_EXT_CAP_ID_SRIOV, 1, PCI_SRIOV_SIZEOF, opts.offset);
    this.offset = off;
    const cs = pf.config;
    cs.setU16(off + PCI_SRIOV_INITIAL_VF, opts.initialVfs ?? total);
    cs.setU16(off + PCI_SRIOV_TOTAL_VF, total);
    cs.setU16(off + PCI_SRIOV_VF_DID, opts.vfDeviceId);
    cs.setU32(off + PCI_SRIOV_SUP_PGSIZE, opts.supportedPageSizes ?? SRIOV_SUP_PGSIZE_MINREQ);
    cs.setWritable(off + PCI_SRIOV_CTRL, 2, PCI_SRIOV_CTRL_WRITABLE);
    cs.setWritable(off + PCI_SRIOV_NUM_VF, 2, 0xffff);
    cs.setWritable(off + PCI_SRIOV_SYS_PGSIZE, 4, opts.supportedPageSizes ?? SRIOV_SUP_PGSIZE_MINREQ);
    for (const b of this.opts.vfBars) {
      const r = off + PCI_SRIOV_BAR + 4 * b.index;
      cs.setWritable(r, 4, barLowMask(b));
      if (b.type === 'mem64')
        cs.setWritable(r + 4, 4, Number(BigInt.asUintN(32, ~(BigInt(b.size) - 1n) >> 32n)));
    }
    this.resetRegisters();
    pf.onConfigWrite(off, PCI_SRIOV_SIZEOF, (o, size) => this.configWritten(o, size));
    pf.onReset(() => this.reset());
  }

  private reg16(r: number): number {
    return this.pf.config.getU16(this.offset + r);
  }

  /** SR-IOV Control register. */
  get control(): number {
    return this.reg16(PCI_SRIOV_CTRL);
  }
  /** NumVFs register as the guest last wrote it. */
  get numVfs(): number {
    return this.reg16(PCI_SRIOV_NUM_VF);
  }
  get totalVfs(): number {
    return this.reg16(PCI_SRIOV_TOTAL_VF);
  }
  get firstVfOffset(): number {
    return this.reg16(PCI_SRIOV_VF_OFFSET);
  }
  get vfStride(): number {
    return this.reg16(PCI_SRIOV_VF_STRIDE);
  }
  get vfMemoryEnable(): boolean {
    return (this.control & PCI_SRIOV_CTRL_MSE) !== 0;
  }
  /** Enabled VFs, in VF order (VF number = index + 1). */
  get vfs(): readonly PciFunction[] {
    return this.created;
  }

  /** Routing ID of VF `index` (0-based): PF RID + First VF Offset + index * VF Stride (digest §1.5). */
  vfRoutingId(index: number): number {
    return (this.pf.routingId + this.firstVfOffset + index * this.vfStride) & 0xffff;
  }

  /** Programmed VF BARk base (VF 0's address), or null if BAR k is not a VF BAR or is unassigned. */
  vfBarBase(k: number): bigint | null {
    const b = this.opts.vfBars.find((x) => x.index === k);
    if (!b) return null;
    const cs = this.pf.config;
    const r = this.offset + PCI_SRIOV_BAR + 4 * k;
    let a = BigInt((cs.getU32(r) & 0xfffffff0) >>> 0);
    if (b.type === 'mem64') a |= BigInt(cs.getU32(r + 4)) << 32n;
    a &= ~(BigInt(b.size) - 1n);
    return a === 0n ? null : a;
  }

  /** Subscribe to VFs appearing/disappearing. */
  onVfsChange(listener: (vfs: readonly PciFunction[]) => void): void {
    this.changeListeners.push(listener);
  }

  /**
   * QEMU 7.2 pcie_sriov_config_write: a write covering the Control register creates NumVFs VFs when
   * VF Enable goes on (none if NumVFs > TotalVFs, though the bit stays set), and destroys them and zeroes
   * NumVFs when it goes off. NumVFs stays writable while enabled but does not change the VF set.
   * With `rules: 'qemu-11.1'` the write masks keep the registers consistent instead (`updateMasks`).
   */
  private configWritten(o: number, size: number): void {
    const ctrl = this.offset + PCI_SRIOV_CTRL;
    if (o <= ctrl && o + size > ctrl) {
      const vfe = (this.control & PCI_SRIOV_CTRL_VFE) !== 0;
      if (this.enabled) {
        if (!vfe) this.disableVfs();
      } else if (vfe) {
        this.enableVfs();
      }
    }
    this.updateMasks();
    this.updateRouting();
    this.updateVfDecode();
  }

  /** VF Enable took effect (11.1 rules: also with NumVFs = 0, which creates no VF). */
  private get enabled(): boolean {
    return this.opts.rules === 'qemu-11.1' ? this.enabledFlag : this.created.length > 0;
  }
  private enabledFlag = false;

  /**
   * QEMU 11.1 (pcie_sriov consume_config): NumVFs read-only while VF Enable is set; while it is clear,
   * VF Enable is writable only if NumVFs <= TotalVFs. No-op under the 7.2 rules.
   */
  private updateMasks(): void {
    if (this.opts.rules !== 'qemu-11.1') return;
    const cs = this.pf.config;
    const vfe = (this.control & PCI_SRIOV_CTRL_VFE) !== 0;
    cs.setWritable(this.offset + PCI_SRIOV_NUM_VF, 2, vfe ? 0 : 0xffff);
    const ok = vfe || this.numVfs <= this.totalVfs;
    cs.setWritable(this.offset + PCI_SRIOV_CTRL, 2, PCI_SRIOV_CTRL_WRITABLE & ~(ok ? 0 : PCI_SRIOV_CTRL_VFE));
  }

  private updateRouting(): void {
    const r = this.opts.routing;
    const { firstVfOffset, vfStride } = r
      ? r(this.numVfs, (this.control & PCI_SRIOV_CTRL_ARI) !== 0)
      : { firstVfOffset: this.opts.firstVfOffset, vfStride: this.opts.vfStride };
    this.pf.config.setU16(this.offset + PCI_SRIOV_VF_OFFSET, firstVfOffset);
    this.pf.config.setU16(this.offset + PCI_SRIOV_VF_STRIDE, vfStride);
  }

  private enableVfs(): void {
    const n = this.numVfs;
    if (this.opts.rules === 'qemu-11.1') this.enabledFlag = true;
    if (n === 0 || n > this.totalVfs) return;
    for (let i = 0; i < n; i++) {
      const vf = this.hooks.createVf(i, this.vfRoutingId(i));
      vf.routingId = this.vfRoutingId(i);
      this.created.push(vf);
    }
    this.updateVfDecode();
    for (const l of this.changeListeners) l(this.created);
  }

  private disableVfs(): void {
    const gone = this.created.splice(0, this.created.length);
    this.enabledFlag = false;
    if (this.opts.rules !== 'qemu-11.1') this.pf.config.setU16(this.offset + PCI_SRIOV_NUM_VF, 0);
    gone.forEach((vf, i) => {
      vf.setVfDecode(false, []);
      this.hooks.destroyVf(i, vf);
    });
    if (gone.length) for (const l of this.changeListeners) l(this.created);
  }

  /** VF i's BAR k = VF BARk base + i * size, decoded while VF MSE is set. */
  private updateVfDecode(): void {
    const mse = this.vfMemoryEnable;
    const bases = [0, 1, 2, 3, 4, 5].map((k) => this.vfBarBase(k));
    this.created.forEach((vf, i) => {
      const addrs = bases.map((base, k) => {
        if (base === null) return null;
        const size = this.opts.vfBars.find((b) => b.index === k)?.size ?? 0;
        return base + BigInt(i) * BigInt(size);
      });
      vf.setVfDecode(mse, addrs);
    });
  }

  /**
   * After PciFunction.restore() of the PF: create the VFs its restored registers say exist (VF Enable
   * set, 0 < NumVFs <= TotalVFs), or remove them; then restore each VF's own state.
   */
  syncAfterRestore(): void {
    const vfe = (this.control & PCI_SRIOV_CTRL_VFE) !== 0;
    const want = vfe && this.numVfs > 0 && this.numVfs <= this.totalVfs;
    this.enabledFlag = this.opts.rules === 'qemu-11.1' && vfe;
    if (this.created.length > 0) {
      const gone = this.created.splice(0, this.created.length);
      gone.forEach((vf, i) => {
        vf.setVfDecode(false, []);
        this.hooks.destroyVf(i, vf);
      });
    }
    if (want) this.enableVfs();
    else for (const l of this.changeListeners) l(this.created);
    this.updateMasks();
    this.updateVfDecode();
  }

  /** PF reset (FLR or bus reset): VFs gone, Control/NumVFs 0, System Page Size 4 KiB, VF BARs unassigned. */
  reset(): void {
    this.disableVfs();
    this.resetRegisters();
  }

  private resetRegisters(): void {
    const cs = this.pf.config;
    const off = this.offset;
    cs.setU16(off + PCI_SRIOV_CTRL, 0);
    cs.setU16(off + PCI_SRIOV_NUM_VF, 0);
    cs.setU32(off + PCI_SRIOV_SYS_PGSIZE, 1);
    for (let k = 0; k < 6; k++) cs.setU32(off + PCI_SRIOV_BAR + 4 * k, 0);
    for (const b of this.opts.vfBars) cs.setU32(off + PCI_SRIOV_BAR + 4 * b.index, barTypeBits(b));
    this.updateMasks();
    this.updateRouting();
  }
}
