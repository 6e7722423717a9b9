/**
 * Config-space routing for a VMM: bus/device/function (or routing ID) to PciFunction, including SR-IOV
 * VFs as they appear and disappear. Empty slots read all-ones (master abort), writes are dropped.
 */
import { allOnes } from './config-space.js';
import type { PciFunction } from './pci-function.js';
import type { SriovCapability } from './sriov.js';

export class PciRouter {
  private readonly byRid = new Map<number, PciFunction>();

  /** Route `fn` at its current routingId (re-add after changing routingId). Replaces any previous occupant. */
  add(fn: PciFunction): void {
    for (const [rid, f] of this.byRid) if (f === fn) this.byRid.delete(rid);
    this.byRid.set(fn.routingId & 0xffff, fn);
  }

  remove(fn: PciFunction): void {
    for (const [rid, f] of this.byRid) if (f === fn) this.byRid.delete(rid);
  }

  /** Add a PF and keep its VFs routed as VF Enable creates and removes them. */
  addWithSriov(pf: PciFunction, sriov: SriovCapability): void {
    this.add(pf);
    let current: PciFunction[] = [...sriov.vfs];
    for (const vf of current) this.add(vf);
    sriov.onVfsChange((vfs) => {
      for (const vf of current) if (!vfs.includes(vf)) this.remove(vf);
      for (const vf of vfs) this.add(vf);
      current = [...vfs];
    });
  }

  /** Function at a routing ID (bus << 8 | device << 3 | function), if any. */
  lookupRid(rid: number): PciFunction | undefined {
    return this.byRid.get(rid & 0xffff);
  }

  lookup(bus: number, dev: number, fn: number): PciFunction | undefined {
    if (!validBdf(bus, dev, fn)) return undefined;
    return this.byRid.get((bus << 8) | (dev << 3) | fn);
  }

  /** Config read; all-ones for an empty slot. Never throws. */
  configRead(bus: number, dev: number, fn: number, offset: number, size: 1 | 2 | 4): number {
    const f = this.lookup(bus, dev, fn);
    return f ? f.configRead(offset, size) : allOnes(size === 1 || size === 2 ? size : 4);
  }

  /** Config write; dropped for an empty slot. Never throws. */
  configWrite(bus: number, dev: number, fn: number, offset: number, size: 1 | 2 | 4, value: number): void {
    this.lookup(bus, dev, fn)?.configWrite(offset, size, value);
  }

  /** Every routed function, by routing ID. */
  get functions(): ReadonlyMap<number, PciFunction> {
    return this.byRid;
  }
}

function validBdf(bus: number, dev: number, fn: number): boolean {
  return (
    Number.isInteger(bus) &&
    Number.isInteger(dev) &&
    Number.isInteger(fn) &&
    bus >= 0 &&
    bus < 256 &&
    dev >= 0 &&
    dev < 32 &&
    fn >= 0 &&
    fn < 8
  );
}
