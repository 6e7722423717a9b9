import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { AriCapability } from './ari-capability.js';
import { ConfigSpace } from './config-space.js';
import { Msix } from './msix.js';
import { type BarMapping, PciFunction, type PciFunctionOptions } from './pci-function.js';
import { PciRouter } from './pci-router.js';
import { PcieCapability } from './pcie-capability.js';
import { PmCapability } from './pm-capability.js';
import { SriovCapability } from './sriov.js';

const OPTS: PciFunctionOptions = {
  vendorId: 0x1af4,
  deviceId: 0x1041,
  revision: 1,
  classCode: 0x020000,
  subsystemVendorId: 0x1af4,
  subsystemId: 0x1100,
  interruptPin: 1,
  express: true,
};

const handler = (tag: number) => ({
  reads: [] as [number, number][],
  writes: [] as [number, number, number | bigint][],
  read(o: number, s: number) {
    this.reads.push([o, s]);
    return s === 8 ? BigInt(tag) : tag;
  },
  write(o: number, s: number, v: number | bigint) {
    this.writes.push([o, s, v]);
  },
});

describe('ConfigSpace', () => {
  it('applies per-byte write masks and W1C like QEMU', () => {
    const cs = new ConfigSpace(256);
    cs.setU16(6, 0xf910);
    cs.setW1C(6, 2, 0xf900);
    cs.setWritable(4, 2, 0x0507);
    cs.write(4, 4, 0x0900ffff); // Command all-ones, Status: clear bits 8 and 11
    expect(cs.read(4, 2)).toBe(0x0507);
    expect(cs.read(6, 2)).toBe(0xf010);
    cs.write(6, 2, 0x0010); // writing 0 to W1C bits and 1 to RO bit 4 changes nothing
    expect(cs.read(6, 2)).toBe(0xf010);
  });

  it('out-of-range and crossing accesses never throw (all-ones / partial, as QEMU)', () => {
    const cs = new ConfigSpace(256);
    cs.setU8(0xff, 0xab);
    expect(cs.read(0x100, 4)).toBe(0xffffffff);
    expect(cs.read(0x100, 2)).toBe(0xffff);
    expect(cs.read(0x1000, 1)).toBe(0xff);
    expect(cs.read(-1, 4)).toBe(0xffffffff);
    expect(cs.read(1.5, 4)).toBe(0xffffffff);
    expect(cs.read(0xff, 4)).toBe(0xab); // only the byte inside
    expect(cs.read(0, 3 as 4)).toBe(0xffffffff);
    cs.setWritable(0xfe, 2, 0xffff);
    cs.write(0xfe, 4, 0x12345678);
    expect(cs.read(0xfe, 2)).toBe(0x5678);
    expect(() => cs.write(0x200, 4, 1)).not.toThrow();
    expect(() => cs.write(Number.NaN, 4, 1)).not.toThrow();
  });
});

describe('PciFunction header and BARs', () => {
  it('header defaults: IDs, class, subsystem, pin, Command/Status masks', () => {
    const fn = new PciFunction(OPTS);
    expect(fn.configRead(0, 4)).toBe(0x10411af4);
    expect(fn.configRead(8, 4)).toBe(0x02000001);
    expect(fn.configRead(0x2c, 4)).toBe(0x11001af4);
    expect(fn.configRead(0x3d, 1)).toBe(1);
    expect(fn.configRead(6, 2)).toBe(0); // no capabilities yet: no CAP_LIST bit
    fn.addCapability(0x09, 16);
    expect(fn.configRead(6, 2)).toBe(0x0010);
    fn.configWrite(0, 4, 0);
    expect(fn.configRead(0, 4)).toBe(0x10411af4);
  });

  it('BAR sizing protocol: 32-bit, 64-bit prefetchable pair, I/O', () => {
    const fn = new PciFunction(OPTS);
    fn.defineBar(0, { size: 0x100, type: 'io', handler: handler(0) });
    fn.defineBar(1, { size: 0x1000, type: 'mem32', handler: handler(1) });
    fn.defineBar(2, { size: 0x2_0000_0000, type: 'mem64', prefetchable: true, handler: handler(2) });
    const size = (off: number) => {
      fn.configWrite(off, 4, 0xffffffff);
      return fn.configRead(off, 4);
    };
    expect(size(0x10)).toBe(0xffffff01);
    expect(size(0x14)).toBe(0xfffff000);
    expect(size(0x18)).toBe(0x0000000c);
    expect(size(0x1c)).toBe(0xfffffffe);
    expect(size(0x20)).toBe(0);
    expect(size(0x24)).toBe(0);
    expect(() => fn.defineBar(3, { size: 16, type: 'mem32', handler: handler(3) })).toThrow();
    expect(() => fn.defineBar(4, { size: 24, type: 'mem32', handler: handler(3) })).toThrow();
    expect(() => fn.defineBar(5, { size: 16, type: 'mem64', handler: handler(3) })).toThrow();
  });

  it('mapping events follow Command enables and addresses; sizing values are never mapped', () => {
    const fn = new PciFunction(OPTS);
    const ev: BarMapping[] = [];
    fn.onBarMappingChange((m) => ev.push(m));
    fn.defineBar(0, { size: 0x100, type: 'io', handler: handler(0) });
    fn.defineBar(2, { size: 0x4000, type: 'mem64', prefetchable: true, handler: handler(2) });
    fn.configWrite(4, 2, 0x0003);
    expect(ev).toEqual([]); // address 0: unmapped
    fn.configWrite(0x10, 4, 0xc000);
    fn.configWrite(0x18, 4, 0x8000_0000);
    fn.configWrite(0x1c, 4, 0x1);
    expect(ev).toEqual([
      { bar: 0, address: 0xc000n, size: 0x100, type: 'io', enabled: true },
      { bar: 2, address: 0x8000_0000n, size: 0x4000, type: 'mem64', enabled: true },
      { bar: 2, address: 0x1_8000_0000n, size: 0x4000, type: 'mem64', enabled: true },
    ]);
    fn.configWrite(0x18, 4, 0xffffffff); // sizing: high dword 1, low all-ones -> still a valid 64-bit address
    fn.configWrite(0x1c, 4, 0xffffffff); // now the BAR would wrap: unmapped
    expect(ev.at(-1)).toMatchObject({ bar: 2, enabled: false });
    expect(fn.barAddress(2)).toBeNull();
    fn.configWrite(4, 2, 0x0002); // I/O decode off
    expect(ev.at(-1)).toEqual({ bar: 0, address: 0xc000n, size: 0x100, type: 'io', enabled: false });
  });

  it('BAR access: bounds-checked, decode-gated, all-ones for absent BARs', () => {
    const fn = new PciFunction(OPTS);
    const h = handler(0x55);
    fn.defineBar(1, { size: 0x1000, type: 'mem32', handler: h });
    expect(fn.barRead(1, 0, 4)).toBe(0xffffffff); // memory decode off
    fn.configWrite(4, 2, 0x0002);
    expect(fn.barRead(1, 0xffc, 4)).toBe(0x55);
    expect(fn.barRead(1, 0xffd, 4)).toBe(0xffffffff);
    expect(fn.barRead(1, 0x1000, 1)).toBe(0xff);
    expect(fn.barRead(1, -4, 4)).toBe(0xffffffff);
    expect(fn.barRead(1, 0, 8)).toBe(0x55n);
    expect(fn.barRead(1, 0, 3 as 4)).toBe(0xffffffff);
    expect(fn.barRead(0, 0, 8)).toBe(0xffffffffffffffffn);
    expect(fn.barRead(7, 0, 2)).toBe(0xffff);
    fn.barWrite(1, 0xffe, 4, 1);
    fn.barWrite(3, 0, 4, 1);
    fn.barWrite(1, 8, 2, 0xbeef);
    expect(h.writes).toEqual([[8, 2, 0xbeef]]);
  });

  it('INTx: Status bit 3 mirrors the level, Interrupt Disable gates the pin', () => {
    const pins: boolean[] = [];
    const fn = new PciFunction({ ...OPTS, sink: { intx: (a) => pins.push(a) } });
    fn.setIntx(true);
    expect(fn.configRead(6, 2) & 8).toBe(8);
    expect(pins).toEqual([true]);
    fn.configWrite(4, 2, 0x0400);
    expect(pins).toEqual([true, false]);
    expect(fn.configRead(6, 2) & 8).toBe(8);
    fn.setIntx(false);
    fn.setIntx(true);
    expect(pins).toEqual([true, false]);
    fn.configWrite(4, 2, 0);
    expect(pins).toEqual([true, false, true]);
    fn.setIntx(false);
    expect(fn.configRead(6, 2) & 8).toBe(0);
    expect(pins).toEqual([true, false, true, false]);
    const none = new PciFunction({ ...OPTS, interruptPin: 0, sink: { intx: (a) => pins.push(a) } });
    none.setIntx(true);
    expect(pins).toHaveLength(4);
  });

  it('capability placement: first fit from 0x40, explicit offsets, overlap and no-room errors', () => {
    const fn = new PciFunction({ ...OPTS, express: false });
    expect(fn.addCapability(0x09, 14)).toBe(0x40); // rounded to 16
    expect(fn.addCapability(0x11, 12, 0x80)).toBe(0x80);
    expect(fn.addCapability(0x09, 20)).toBe(0x50);
    expect(fn.addCapability(0x09, 16)).toBe(0x64);
    expect(fn.addCapability(0x01, 8)).toBe(0x74);
    expect(fn.addCapability(0x09, 16)).toBe(0x8c);
    expect(() => fn.addCapability(0x09, 8, 0x84)).toThrow();
    expect(() => fn.addCapability(0x09, 8, 0x3c)).toThrow();
    expect(() => fn.addCapability(0x09, 0x80)).toThrow();
    expect(() => fn.addExtendedCapability(0x0e, 1, 8)).toThrow();
  });

  it('extended capabilities append in order from 0x100 and link through the header', () => {
    const fn = new PciFunction(OPTS);
    expect(fn.configRead(0x100, 4)).toBe(0);
    const ari = new AriCapability(fn, { nextFunction: 0 });
    expect(ari.offset).toBe(0x100);
    expect(fn.addExtendedCapability(0x0001, 2, 0x48)).toBe(0x108);
    expect(fn.addExtendedCapability(0x0003, 1, 0x0c, 0x200)).toBe(0x200);
    expect(fn.configRead(0x100, 4)).toBe(0x1081000e);
    expect(fn.configRead(0x108, 4)).toBe(0x20020001);
    expect(fn.configRead(0x200, 4)).toBe(0x00010003);
    expect(fn.findExtendedCapability(0x0003)).toBe(0x200);
    expect(fn.findExtendedCapability(0x0010)).toBe(0);
  });

  it('config hooks: read hooks refresh bytes before a read, write hooks see the written value', () => {
    const fn = new PciFunction(OPTS);
    const cap = fn.addCapability(0x09, 20);
    fn.config.setWritable(cap + 16, 4, 0xffffffff);
    let n = 0;
    const writes: [number, number, number][] = [];
    fn.onConfigRead(cap + 16, 4, () => fn.config.setU32(cap + 16, 0x1000 + ++n));
    fn.onConfigWrite(cap + 16, 4, (o, s, v) => writes.push([o - cap, s, v]));
    expect(fn.configRead(cap + 16, 4)).toBe(0x1001);
    expect(fn.configRead(cap + 18, 2)).toBe(0);
    expect(fn.configRead(cap + 12, 4)).toBe(0); // outside the window: no hook
    expect(n).toBe(2);
    fn.configWrite(cap + 17, 1, 0xab);
    fn.configWrite(cap + 12, 4, 1);
    expect(writes).toEqual([[17, 1, 0xab]]);
  });

  it('a VF header follows the PCIe VF rules', () => {
    const vf = new PciFunction({ ...OPTS, vf: true, interruptPin: 0 });
    vf.defineBar(0, { size: 0x4000, type: 'mem64', handler: handler(1) });
    expect(vf.configRead(0, 4)).toBe(0xffffffff);
    expect(vf.configRead(8, 4)).toBe(0x02000001);
    vf.configWrite(0x10, 4, 0xffffffff);
    expect(vf.configRead(0x10, 4)).toBe(0);
    vf.configWrite(4, 2, 0xffff);
    expect(vf.configRead(4, 2)).toBe(0x0004);
    expect(vf.barRead(0, 0, 4)).toBe(0xffffffff); // no VF MSE yet
  });
});

/** A rich function: PCIe, PM, MSI-X, ARI, SR-IOV with VFs. */
function rich() {
  const pf = new PciFunction({ ...OPTS, routingId: 0x0100 });
  new PcieCapability(pf);
  new PmCapability(pf);
  new Msix(pf, { vectors: 8, bar: 1, ...Msix.exclusiveBarLayout(8) }, { msi: () => {} });
  pf.defineBar(4, { size: 0x4000, type: 'mem64', prefetchable: true, handler: handler(4) });
  new AriCapability(pf, { nextFunction: 0 });
  const vfs: PciFunction[] = [];
  const sriov = new SriovCapability(
    pf,
    {
      totalVfs: 4,
      vfDeviceId: 0x1041,
      firstVfOffset: 1,
      vfStride: 1,
      vfBars: [{ index: 4, size: 0x4000, type: 'mem64', prefetchable: true }],
    },
    {
      createVf: (_i, rid) => {
        const vf = new PciFunction({ ...OPTS, vf: true, routingId: rid });
        new PcieCapability(vf);
        vf.defineBar(4, { size: 0x4000, type: 'mem64', prefetchable: true, handler: handler(5) });
        vfs.push(vf);
        return vf;
      },
      destroyVf: () => {},
    },
  );
  return { pf, sriov, vfs };
}

const access = fc.record({
  offset: fc.oneof(
    fc.integer({ min: 0, max: 4095 }),
    fc.integer({ min: 0, max: 0x3f }),
    fc.integer(),
    fc.double(),
  ),
  size: fc.constantFrom(1, 2, 4, 4, 3, 0, 8),
  value: fc.oneof(
    fc.integer({ min: 0, max: 0xffffffff }),
    fc.constant(0xffffffff),
    fc.integer(),
    fc.double(),
  ),
});

describe('properties', () => {
  it('random config writes never throw and never change a read-only bit (W1C bits only clear)', () => {
    fc.assert(
      fc.property(fc.array(access, { maxLength: 60 }), (writes) => {
        const { pf, vfs } = rich();
        pf.config.setU16(6, pf.config.getU16(6) | 0xf900); // some W1C bits set
        for (const w of writes) {
          const targets = [pf, ...vfs];
          for (const t of targets) {
            const before = t.config.bytes.slice();
            expect(() => t.configWrite(w.offset, w.size as 1 | 2 | 4, w.value)).not.toThrow();
            const after = t.config.bytes;
            for (let i = 0; i < before.length; i++) {
              const ro = ~((t.config.wmask[i] as number) | (t.config.w1cmask[i] as number)) & 0xff;
              const w1c = t.config.w1cmask[i] as number;
              if (((before[i] as number) & ro) !== ((after[i] as number) & ro)) {
                throw new Error(`RO bit changed at 0x${i.toString(16)}: ${before[i]} -> ${after[i]}`);
              }
              if (~(before[i] as number) & (after[i] as number) & w1c)
                throw new Error(`W1C bit set at 0x${i.toString(16)}`);
            }
            expect(() => t.configRead(w.offset, w.size as 1 | 2 | 4)).not.toThrow();
          }
        }
      }),
      { numRuns: 300 },
    );
  });

  it('random writes into the SR-IOV capability keep VFs consistent with the registers', () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.record({
            reg: fc.constantFrom(0x08, 0x10, 0x34, 0x38, 0x20),
            size: fc.constantFrom(1, 2, 4),
            value: fc.integer({ min: 0, max: 0xffffffff }),
          }),
          { maxLength: 30 },
        ),
        (writes) => {
          const { pf, sriov } = rich();
          const router = new PciRouter();
          router.addWithSriov(pf, sriov);
          for (const w of writes) {
            pf.configWrite(sriov.offset + w.reg, w.size as 1 | 2 | 4, w.value);
            const vfe = (sriov.control & 1) !== 0;
            if (!vfe) expect(sriov.vfs).toHaveLength(0);
            expect(sriov.vfs.length).toBeLessThanOrEqual(4);
            expect(router.functions.size).toBe(1 + sriov.vfs.length);
            sriov.vfs.forEach((vf, i) => {
              expect(vf.routingId).toBe(0x101 + i);
              expect(router.lookup(1, 0, 1 + i)).toBe(vf);
              const base = sriov.vfBarBase(4);
              expect(vf.barAddress(4)).toBe(
                base !== null && sriov.vfMemoryEnable ? base + BigInt(i * 0x4000) : null,
              );
            });
          }
        },
      ),
      { numRuns: 300 },
    );
  });
});

describe('PciRouter', () => {
  it('routes by bus/device/function, all-ones for empty slots, VFs come and go', () => {
    const { pf, sriov } = rich();
    const router = new PciRouter();
    router.addWithSriov(pf, sriov);
    expect(router.configRead(1, 0, 0, 0, 4)).toBe(0x10411af4);
    expect(router.configRead(1, 0, 1, 0, 4)).toBe(0xffffffff);
    expect(router.configRead(1, 0, 1, 0, 2)).toBe(0xffff);
    expect(router.configRead(300, 0, 0, 0, 4)).toBe(0xffffffff);
    expect(() => router.configWrite(1, 3, 0, 4, 2, 6)).not.toThrow();
    const S = sriov.offset;
    router.configWrite(1, 0, 0, S + 0x10, 2, 2);
    router.configWrite(1, 0, 0, S + 0x08, 2, 1);
    expect(router.configRead(1, 0, 1, 0, 4)).toBe(0xffffffff); // VF: Vendor/Device read all-ones...
    expect(router.configRead(1, 0, 1, 8, 4)).toBe(0x02000001); // ...but it is there
    expect(router.lookupRid(0x102)).toBe(sriov.vfs[1]);
    router.configWrite(1, 0, 0, S + 0x08, 2, 0);
    expect(router.lookupRid(0x101)).toBeUndefined();
    expect(router.configRead(1, 0, 1, 8, 4)).toBe(0xffffffff);
  });
});
