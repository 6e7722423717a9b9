import { describe, expect, it } from 'vitest';
import { type InterruptSink, Msix } from './msix.js';
import { PciFunction } from './pci-function.js';
import { PcieCapability } from './pcie-capability.js';

function setup(vectors = 4, sink?: InterruptSink) {
  const fn = new PciFunction({
    vendorId: 0x1af4,
    deviceId: 0x1041,
    revision: 1,
    classCode: 0x020000,
    subsystemVendorId: 0x1af4,
    subsystemId: 0x1100,
    interruptPin: 1,
    express: true,
  });
  new PcieCapability(fn);
  const msis: [bigint, number][] = [];
  const s: InterruptSink = sink ?? { msi: (a, d) => msis.push([a, d]) };
  const msix = new Msix(fn, { vectors, bar: 1, ...Msix.exclusiveBarLayout(vectors) }, s);
  fn.configWrite(0x14, 4, 0xfe000000);
  fn.configWrite(4, 2, 0x0006);
  const ctl = msix.offset + 2;
  const program = (v: number, addr: bigint, data: number) => {
    fn.barWrite(1, v * 16, 4, Number(addr & 0xffffffffn));
    fn.barWrite(1, v * 16 + 4, 4, Number(addr >> 32n));
    fn.barWrite(1, v * 16 + 8, 4, data);
  };
  const unmask = (v: number) => fn.barWrite(1, v * 16 + 12, 4, 0);
  const mask = (v: number) => fn.barWrite(1, v * 16 + 12, 4, 1);
  const pba = () => fn.barRead(1, 0x800, 8) as bigint;
  return { fn, msix, msis, ctl, program, unmask, mask, pba };
}

describe('MSI-X', () => {
  it('QEMU exclusive BAR layout: table 0, PBA 0x800 in 4 KiB up to 128 vectors; beyond, PBA after the table', () => {
    expect(Msix.exclusiveBarLayout(10)).toEqual({ tableOffset: 0, pbaOffset: 0x800, barSize: 0x1000 });
    expect(Msix.exclusiveBarLayout(128)).toEqual({ tableOffset: 0, pbaOffset: 0x800, barSize: 0x1000 });
    expect(Msix.exclusiveBarLayout(129)).toEqual({ tableOffset: 0, pbaOffset: 129 * 16, barSize: 0x1000 });
    expect(Msix.exclusiveBarLayout(2048)).toEqual({ tableOffset: 0, pbaOffset: 0x8000, barSize: 0x10000 });
  });

  it('table reset state: every vector masked, address/data 0, PBA 0; entries read back as written', () => {
    const { fn, program } = setup(4);
    for (let v = 0; v < 4; v++) {
      expect(fn.barRead(1, v * 16, 4)).toBe(0);
      expect(fn.barRead(1, v * 16 + 12, 4)).toBe(1);
    }
    expect(fn.barRead(1, 0x800, 8)).toBe(0n);
    program(2, 0xfee01000n, 0x4041);
    expect(fn.barRead(1, 32, 8)).toBe(0xfee01000n);
    expect(fn.barRead(1, 40, 4)).toBe(0x4041);
    fn.barWrite(1, 0x800, 4, 0xffffffff); // PBA is read-only
    expect(fn.barRead(1, 0x800, 4)).toBe(0);
  });

  it('enable gating: nothing is sent or made pending while MSI-X is disabled', () => {
    const { msix, msis, program, unmask, pba } = setup();
    program(0, 0xfee00000n, 0x31);
    unmask(0);
    msix.notify(0);
    expect(msis).toEqual([]);
    expect(pba()).toBe(0n);
  });

  it('per-vector mask: pending while masked, delivered on unmask, PBA cleared', () => {
    const { fn, msix, msis, ctl, program, unmask, mask, pba } = setup();
    fn.configWrite(ctl, 2, 0x8000);
    expect(msix.enabled).toBe(true);
    program(1, 0x1_fee0_0000n, 0x22);
    msix.notify(1);
    expect(msis).toEqual([]);
    expect(pba()).toBe(0b10n);
    expect(msix.isPending(1)).toBe(true);
    unmask(1);
    expect(msis).toEqual([[0x1_fee0_0000n, 0x22]]);
    expect(pba()).toBe(0n);
    msix.notify(1);
    expect(msis).toHaveLength(2);
    mask(1);
    msix.notify(1);
    msix.notify(1);
    expect(msis).toHaveLength(2);
    expect(pba()).toBe(0b10n);
    // out-of-range vectors are ignored
    msix.notify(4);
    msix.notify(-1);
    expect(pba()).toBe(0b10n);
  });

  it('function mask: all vectors pend, each unmasked pending one delivered when it clears', () => {
    const { fn, msix, msis, ctl, program, unmask, pba } = setup();
    for (let v = 0; v < 4; v++) program(v, 0xfee00000n, v);
    unmask(0);
    unmask(2);
    fn.configWrite(ctl, 2, 0xc000);
    expect(msix.functionMask).toBe(true);
    expect(msix.isMasked(0)).toBe(true);
    msix.notify(0);
    msix.notify(2);
    msix.notify(3); // vector 3 stays masked itself
    expect(msis).toEqual([]);
    expect(pba()).toBe(0b1101n);
    fn.configWrite(ctl + 1, 1, 0x80); // clear Function Mask only (byte write)
    expect(msis).toEqual([
      [0xfee00000n, 0],
      [0xfee00000n, 2],
    ]);
    expect(pba()).toBe(0b1000n);
    unmask(3);
    expect(msis.at(-1)).toEqual([0xfee00000n, 3]);
  });

  it('enabling MSI-X deasserts INTx; decode follows Command.MEM; reset masks everything again', () => {
    const intx: boolean[] = [];
    const msis: number[] = [];
    const { fn, msix, ctl, unmask, pba } = setup(4, {
      msi: (_a, d) => msis.push(d),
      intx: (a) => intx.push(a),
    });
    fn.setIntx(true);
    expect(intx).toEqual([true]);
    fn.configWrite(ctl, 2, 0x8000);
    expect(intx).toEqual([true, false]);
    unmask(0);
    fn.configWrite(4, 2, 0x0004);
    expect(fn.barRead(1, 12, 4)).toBe(0xffffffff);
    fn.barWrite(1, 12, 4, 1); // dropped: memory decode off
    fn.configWrite(4, 2, 0x0006);
    expect(fn.barRead(1, 12, 4)).toBe(0);
    fn.configWrite(ctl, 2, 0xc000);
    msix.notify(0);
    expect(pba()).toBe(1n);
    fn.reset();
    fn.configWrite(4, 2, 0x0006);
    expect(msix.enabled).toBe(false);
    expect(msix.functionMask).toBe(false);
    expect(fn.barRead(1, 12, 4)).toBe(1);
    expect(pba()).toBe(0n);
    expect(msis).toEqual([]);
  });

  it('snapshot/restore keeps the table, PBA and Message Control', () => {
    const a = setup(4);
    a.program(1, 0xfee00000n, 9);
    a.fn.configWrite(a.ctl, 2, 0x8000);
    a.msix.notify(1);
    const state = JSON.parse(JSON.stringify({ fn: a.fn.snapshot(), msix: a.msix.snapshot() }));
    const b = setup(4);
    b.fn.restore(state.fn);
    b.msix.restore(state.msix);
    expect(b.msix.enabled).toBe(true);
    expect(b.pba()).toBe(0b10n);
    b.unmask(1);
    expect(b.msis).toEqual([[0xfee00000n, 9]]);
    expect(() => b.msix.restore({ table: '', pba: '' })).toThrow();
  });

  it('a vector-only sink (VMM emulates the table) gets vector(n) directly', () => {
    const got: number[] = [];
    const { msix } = setup(4, { vector: (n) => got.push(n) });
    msix.notify(3);
    msix.notify(0);
    msix.notify(9);
    expect(got).toEqual([3, 0]);
  });

  it('the MSI-X BAR is exclusive and sized as QEMU', () => {
    const { fn, msix } = setup(10);
    expect(fn.getBar(1)?.size).toBe(0x1000);
    expect(msix.barSize).toBe(0x1000);
    expect(() =>
      fn.defineBar(1, { size: 0x1000, type: 'mem32', handler: { read: () => 0, write: () => {} } }),
    ).toThrow();
    expect(fn.configRead(msix.offset + 4, 4)).toBe(0x00000001);
    expect(fn.configRead(msix.offset + 8, 4)).toBe(0x00000801);
    expect(fn.configRead(msix.offset + 2, 2)).toBe(9);
  });

  it('on a VF the table lives in the VF BAR placed by the PF and decodes with VF MSE', () => {
    const vf = new PciFunction({
      vendorId: 0x1af4,
      deviceId: 0x1041,
      revision: 1,
      classCode: 0x020000,
      subsystemVendorId: 0x1af4,
      subsystemId: 0x1100,
      interruptPin: 0,
      express: true,
      vf: true,
    });
    const msis: number[] = [];
    const msix = new Msix(
      vf,
      { vectors: 2, bar: 1, ...Msix.exclusiveBarLayout(2) },
      { msi: (_a, d) => msis.push(d) },
    );
    expect(vf.configRead(0x14, 4)).toBe(0); // VF BAR registers are RO 0
    expect(vf.barRead(1, 12, 4)).toBe(0xffffffff);
    vf.setVfDecode(true, [null, 0xd0000000n]);
    expect(vf.barAddress(1)).toBe(0xd0000000n);
    vf.barWrite(1, 8, 4, 7);
    vf.barWrite(1, 12, 4, 0);
    vf.configWrite(msix.offset + 2, 2, 0x8000);
    msix.notify(0);
    expect(msis).toEqual([7]);
  });
});
