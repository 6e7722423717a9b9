// The SR-IOV sequence of QEMU 7.2's nvme_sriov_dump.py replayed on an nvme-like PF built with our API.
import { describe, expect, it } from 'vitest';
import { AriCapability } from './ari-capability.js';
import { type BarMapping, PciFunction } from './pci-function.js';
import { PciRouter } from './pci-router.js';
import { PcieCapability } from './pcie-capability.js';
import { PmCapability } from './pm-capability.js';
import {
  assignBars,
  diff,
  dump,
  fixtureBin,
  fixtureJson,
  hex,
  probeBytes,
} from './qemu-oracle.test-support.js';
import { SriovCapability } from './sriov.js';

type Regs = Record<string, string>;
interface NvmeRef {
  sriov_offset: number;
  sriov_raw_reset: string;
  sriov_regs_reset: Regs;
  sriov_writable_mask_bytewise: string;
  sriov_after_write_ff_bytewise: string;
  vf_bar_sizing_readback: string[];
  pf_bars: { bar: number; size: number; addr: number; sizing_readback: number }[];
  num_vfs_write_total_plus_1_readback: number;
  enable_with_num_vfs_gt_total: { regs: Regs; bus1: string[] };
  after_num_vfs_2: Regs;
  after_vf_enable: Regs;
  bus1_functions_reset: string[];
  bus1_functions_after_enable: string[];
  num_vfs_write_3_while_enabled_readback: number;
  bus1_functions_after_numvfs_write_while_enabled: string[];
  vfs: {
    routing_id: string;
    bdf: string;
    header_hex: string;
    vf_bar0_after_write_ones: string;
    vf_command_after_write_ffff: string;
  }[];
  vf_bar0_size_per_vf: number;
  after_vf_disable: Regs;
  bus1_functions_after_disable: string[];
}
const REF = fixtureJson<NvmeRef>('nvme-sriov.json');

const SRIOV_REGS: [string, number, number][] = [
  ['header', 0x00, 4],
  ['sriov_cap', 0x04, 4],
  ['sriov_ctrl', 0x08, 2],
  ['sriov_status', 0x0a, 2],
  ['initial_vfs', 0x0c, 2],
  ['total_vfs', 0x0e, 2],
  ['num_vfs', 0x10, 2],
  ['func_dep_link', 0x12, 1],
  ['rsvd13', 0x13, 1],
  ['first_vf_offset', 0x14, 2],
  ['vf_stride', 0x16, 2],
  ['rsvd18', 0x18, 2],
  ['vf_device_id', 0x1a, 2],
  ['supported_page_sizes', 0x1c, 4],
  ['system_page_size', 0x20, 4],
  ['vf_bar0', 0x24, 4],
  ['vf_bar1', 0x28, 4],
  ['vf_bar2', 0x2c, 4],
  ['vf_bar3', 0x30, 4],
  ['vf_bar4', 0x34, 4],
  ['vf_bar5', 0x38, 4],
  ['vf_migration_state_array', 0x3c, 4],
];

function regs(fn: PciFunction, base: number): Regs {
  const out: Regs = {};
  for (const [n, o, s] of SRIOV_REGS)
    out[n] = `0x${fn
      .configRead(base + o, s as 1 | 2 | 4)
      .toString(16)
      .padStart(2 * s, '0')}`;
  return out;
}

const mmio = { read: () => 0, write: () => {} };

/** nvme's common PCI skeleton in QEMU 7.2: PM@0x60, PCIe@0x80, MSI-X@0x40 (inside BAR0), ARI@0x100. */
function nvmeSkeleton(fn: PciFunction, msixVectors: number): void {
  const pm = new PmCapability(fn, { offset: 0x60 });
  fn.config.setU16(pm.offset + 4, 0x0008); // PMCSR No_Soft_Reset, as nvme sets it
  new PcieCapability(fn, { offset: 0x80 });
  const m = fn.addCapability(0x11, 12, 0x40); // nvme's MSI-X shares BAR0 with its registers: raw cap here
  fn.config.setU16(m + 2, msixVectors - 1);
  fn.config.setU32(m + 4, 0x2000);
  fn.config.setU32(m + 8, 0x3000);
  fn.config.setWritable(m + 3, 1, 0xc0);
  new AriCapability(fn, { offset: 0x100, nextFunction: 1 });
}

const BASE = {
  vendorId: 0x1b36,
  deviceId: 0x0010,
  revision: 2,
  classCode: 0x010802,
  subsystemVendorId: 0x1af4,
  subsystemId: 0x1100,
  interruptPin: 1,
  express: true,
};

function buildPf() {
  const pf = new PciFunction({ ...BASE, routingId: 0x0100 });
  pf.defineBar(0, { size: 0x4000, type: 'mem64', handler: mmio });
  nvmeSkeleton(pf, 2);
  const created: number[] = [];
  const destroyed: number[] = [];
  const vfMappings: BarMapping[][] = [];
  const sriov = new SriovCapability(
    pf,
    {
      offset: 0x120,
      totalVfs: 4,
      vfDeviceId: 0x0010,
      firstVfOffset: 1,
      vfStride: 1,
      vfBars: [{ index: 0, size: 0x4000, type: 'mem64' }],
    },
    {
      createVf(index, routingId) {
        created.push(routingId);
        // QEMU 7.2's nvme VF keeps Interrupt Pin 1 (the PCIe spec says 0; the creator decides).
        const vf = new PciFunction({ ...BASE, vf: true, routingId });
        vf.defineBar(0, {
          size: 0x4000,
          type: 'mem64',
          handler: { read: () => 0x1000 + index, write: () => {} },
        });
        nvmeSkeleton(vf, 1);
        vfMappings[index] = [];
        vf.onBarMappingChange((m) => vfMappings[index]?.push(m));
        return vf;
      },
      destroyVf(index) {
        destroyed.push(index);
      },
    },
  );
  const router = new PciRouter();
  router.addWithSriov(pf, sriov);
  return { pf, sriov, router, created, destroyed, vfMappings };
}

function scanBus(router: PciRouter, bus: number): string[] {
  const found: string[] = [];
  for (let dev = 0; dev < 32; dev++)
    for (let fn = 0; fn < 8; fn++) {
      const v = router.configRead(bus, dev, fn, 0, 4);
      if (v === 0xffffffff && router.configRead(bus, dev, fn, 8, 4) === 0xffffffff) continue;
      const h = (n: number, w: number) => n.toString(16).padStart(w, '0');
      found.push(`${h(bus, 2)}:${h(dev, 2)}.${fn} ${h(v, 8)}`);
    }
  return found;
}

describe('SR-IOV capability vs QEMU 7.2 pcie_sriov (nvme PF)', () => {
  it('PF config space at reset matches byte for byte, registers at their offsets', () => {
    const { pf, sriov, router } = buildPf();
    expect(sriov.offset).toBe(REF.sriov_offset);
    expect(diff(dump(pf), fixtureBin('nvme-pf.cfg-reset.bin'))).toEqual([]);
    expect(regs(pf, sriov.offset)).toEqual(REF.sriov_regs_reset);
    expect(scanBus(router, 1)).toEqual(REF.bus1_functions_reset);
    expect(pf.findExtendedCapability(0x10)).toBe(0x120);
    expect(pf.findExtendedCapability(0x0e)).toBe(0x100);
  });

  it('the whole oracle sequence: masks, forbidden writes, VF Enable, VFs, disable', () => {
    const { pf, sriov, router, created, destroyed, vfMappings } = buildPf();
    const S = sriov.offset;
    // byte-wise write probe of the capability
    const wmask = new Uint8Array(0x40);
    const ones = new Uint8Array(0x40);
    for (let i = 0; i < 0x40; i++) {
      const orig = pf.configRead(S + i, 1);
      pf.configWrite(S + i, 1, 0xff);
      ones[i] = pf.configRead(S + i, 1);
      pf.configWrite(S + i, 1, 0);
      wmask[i] = (ones[i] as number) ^ pf.configRead(S + i, 1);
      pf.configWrite(S + i, 1, orig);
      expect(pf.configRead(S + i, 1)).toBe(orig);
    }
    expect(diff(wmask, hex(REF.sriov_writable_mask_bytewise))).toEqual([]);
    expect(diff(ones, hex(REF.sriov_after_write_ff_bytewise))).toEqual([]);
    expect(created).toEqual([]); // VF Enable with NumVFs = 0 creates nothing
    // VF BAR sizing
    const sizing: string[] = [];
    for (let i = 0; i < 6; i++) {
      const o = S + 0x24 + 4 * i;
      const orig = pf.configRead(o, 4);
      pf.configWrite(o, 4, 0xffffffff);
      sizing.push(`0x${pf.configRead(o, 4).toString(16).padStart(8, '0')}`);
      pf.configWrite(o, 4, orig);
    }
    expect(sizing).toEqual(REF.vf_bar_sizing_readback);
    const bars = assignBars(pf, 0xc0000000, 0xc1000000);
    expect(bars.map((b) => [b.bar, b.size, b.addr, b.sizing_readback])).toEqual(
      REF.pf_bars.map((b) => [b.bar, b.size, b.addr, b.sizing_readback]),
    );

    // NumVFs > TotalVFs: stored unclamped; VF Enable then sets but creates no VFs
    pf.configWrite(S + 0x10, 2, pf.configRead(S + 0x0e, 2) + 1);
    expect(pf.configRead(S + 0x10, 2)).toBe(REF.num_vfs_write_total_plus_1_readback);
    pf.configWrite(S + 0x08, 2, 0x0001);
    expect(regs(pf, S)).toEqual(REF.enable_with_num_vfs_gt_total.regs);
    expect(scanBus(router, 1)).toEqual(REF.enable_with_num_vfs_gt_total.bus1);
    expect(sriov.vfs).toHaveLength(0);
    pf.configWrite(S + 0x08, 2, 0);
    pf.configWrite(S + 0x10, 2, 0);

    // program VF BAR0, NumVFs = 2, VF Enable + VF MSE
    pf.configWrite(S + 0x24, 4, 0xc0800000);
    pf.configWrite(S + 0x28, 4, 0);
    pf.configWrite(S + 0x10, 2, 2);
    expect(regs(pf, S)).toEqual(REF.after_num_vfs_2);
    pf.configWrite(S + 0x08, 2, 0x0009);
    expect(regs(pf, S)).toEqual(REF.after_vf_enable);
    expect(scanBus(router, 1)).toEqual(REF.bus1_functions_after_enable);
    expect(created).toEqual(REF.vfs.map((v) => Number.parseInt(v.routing_id, 16)));
    expect(sriov.vfs.map((v) => v.routingId)).toEqual([0x0101, 0x0102]);

    // NumVFs written while enabled: QEMU 7.2 stores it but the VF set does not change
    pf.configWrite(S + 0x10, 2, 3);
    expect(pf.configRead(S + 0x10, 2)).toBe(REF.num_vfs_write_3_while_enabled_readback);
    expect(scanBus(router, 1)).toEqual(REF.bus1_functions_after_numvfs_write_while_enabled);
    pf.configWrite(S + 0x10, 2, 2);

    // VF config space: QEMU's header bytes; BARs RO 0; VF addresses from the PF's VF BAR0
    REF.vfs.forEach((ref, i) => {
      const vf = router.lookupRid(Number.parseInt(ref.routing_id, 16));
      expect(vf).toBe(sriov.vfs[i]);
      if (!vf) return;
      expect(diff(dump(vf, 64), hex(ref.header_hex))).toEqual([]);
      expect(diff(dump(vf), fixtureBin(`nvme-vf${i}.cfg.bin`))).toEqual([]);
      vf.configWrite(0x10, 4, 0xffffffff);
      expect(`0x${vf.configRead(0x10, 4).toString(16).padStart(8, '0')}`).toBe(ref.vf_bar0_after_write_ones);
      // PCIe VF rule (deviates from QEMU 7.2, which answers 0x0507): only Bus Master is writable
      vf.configWrite(4, 2, 0xffff);
      expect(vf.configRead(4, 2)).toBe(0x0004);
      vf.configWrite(4, 2, 0);
      expect(vf.barAddress(0)).toBe(0xc0800000n + BigInt(i * REF.vf_bar0_size_per_vf));
      expect(vf.barRead(0, 0, 4)).toBe(0x1000 + i);
      expect(vfMappings[i]?.at(-1)).toEqual({
        bar: 0,
        address: 0xc0800000n + BigInt(i * 0x4000),
        size: 0x4000,
        type: 'mem64',
        enabled: true,
      });
    });
    // VF MSE gates VF decode (spec; QEMU 7.2 uses the VF Command register instead)
    pf.configWrite(S + 0x08, 2, 0x0001);
    expect(sriov.vfs[0]?.barAddress(0)).toBeNull();
    expect(sriov.vfs[0]?.barRead(0, 0, 4)).toBe(0xffffffff);
    expect(vfMappings[0]?.at(-1)?.enabled).toBe(false);
    pf.configWrite(S + 0x08, 2, 0x0009);
    expect(sriov.vfs[1]?.barAddress(0)).toBe(0xc0804000n);
    // reprogramming VF BAR0 moves every VF
    pf.configWrite(S + 0x24, 4, 0xc0900000);
    expect(sriov.vfs.map((v) => v.barAddress(0))).toEqual([0xc0900000n, 0xc0904000n]);
    pf.configWrite(S + 0x24, 4, 0xc0800000);

    // PF view with VFs enabled (after the script's Command and VF-command writes)
    pf.configWrite(4, 2, 0x0006);
    expect(diff(dump(pf), fixtureBin('nvme-pf.cfg-vf-enabled.bin'))).toEqual([]);

    // clear VF Enable: VFs gone, NumVFs back to 0
    const vfs = [...sriov.vfs];
    pf.configWrite(S + 0x08, 2, 0x0000);
    expect(regs(pf, S)).toEqual(REF.after_vf_disable);
    expect(scanBus(router, 1)).toEqual(REF.bus1_functions_after_disable);
    expect(destroyed).toEqual([0, 1]);
    expect(sriov.vfs).toHaveLength(0);
    expect(vfs[0]?.barAddress(0)).toBeNull();
  });

  it('VF per-byte write behaviour matches QEMU 7.2 except Command (PCIe VF rule: Bus Master only)', () => {
    const ref = fixtureJson<Record<string, string> & { skipped_probed_with_0x7f: number[] }>(
      'nvme-vf-probe.json',
    );
    const { pf, sriov } = buildPf();
    const S = sriov.offset;
    assignBars(pf, 0xc0000000, 0xc1000000);
    pf.configWrite(4, 2, 0x0006);
    pf.configWrite(S + 0x24, 4, 0xc0800000);
    pf.configWrite(S + 0x10, 2, 2);
    pf.configWrite(S + 0x08, 2, 0x0009);
    const vf = sriov.vfs[0];
    if (!vf) throw new Error('no VF');
    expect(diff(dump(vf, 0x200), hex(ref.orig_hex as string))).toEqual([]);
    const { ones, zeros } = probeBytes(vf, 0x200, ref.skipped_probed_with_0x7f);
    const command = (o: number) => o === 4 || o === 5;
    expect(diff(ones, hex(ref.after_ff_hex as string), command)).toEqual([]);
    expect(diff(zeros, hex(ref.after_00_hex as string), command)).toEqual([]);
    expect([ones[4], ones[5]]).toEqual([0x04, 0x00]);
  });

  it('First VF Offset / VF Stride follow NumVFs and ARI Capable Hierarchy when a routing rule is given', () => {
    const pf = new PciFunction({ ...BASE, routingId: 0x0200 });
    const sriov = new SriovCapability(
      pf,
      {
        totalVfs: 8,
        vfDeviceId: 0x1041,
        firstVfOffset: 1,
        vfStride: 1,
        routing: (n, ari) =>
          ari ? { firstVfOffset: 1, vfStride: 1 } : { firstVfOffset: n > 7 ? 8 : 1, vfStride: 1 },
        vfBars: [{ index: 4, size: 0x4000, type: 'mem64', prefetchable: true }],
      },
      {
        createVf: (_i, rid) => new PciFunction({ ...BASE, vf: true, express: true, routingId: rid }),
        destroyVf: () => {},
      },
    );
    expect(sriov.offset).toBe(0x100);
    const S = sriov.offset;
    pf.configWrite(S + 0x10, 2, 8);
    expect(pf.configRead(S + 0x14, 2)).toBe(8);
    pf.configWrite(S + 0x08, 2, 0x10);
    expect(pf.configRead(S + 0x14, 2)).toBe(1);
    pf.configWrite(S + 0x08, 2, 0x11);
    expect(sriov.vfs.map((v) => v.routingId)).toEqual([
      0x201, 0x202, 0x203, 0x204, 0x205, 0x206, 0x207, 0x208,
    ]);
    // VF BAR4 is 64-bit prefetchable: sizing answers
    pf.configWrite(S + 0x34, 4, 0xffffffff);
    expect(pf.configRead(S + 0x34, 4)).toBe(0xffffc00c);
    // unassigned VF BAR: VFs decode nothing
    expect(sriov.vfs[0]?.barAddress(4)).toBeNull();
  });

  it('snapshot/restore of the PF brings the VFs back at the same addresses', () => {
    const a = buildPf();
    const S = a.sriov.offset;
    a.pf.configWrite(S + 0x24, 4, 0xc0800000);
    a.pf.configWrite(S + 0x10, 2, 3);
    a.pf.configWrite(S + 0x08, 2, 0x0009);
    const state = JSON.parse(JSON.stringify(a.pf.snapshot()));
    const b = buildPf();
    b.pf.restore(state);
    b.sriov.syncAfterRestore();
    expect(b.sriov.vfs.map((v) => [v.routingId, v.barAddress(0)])).toEqual([
      [0x101, 0xc0800000n],
      [0x102, 0xc0804000n],
      [0x103, 0xc0808000n],
    ]);
    expect(b.router.lookupRid(0x103)).toBe(b.sriov.vfs[2]);
    expect(dump(b.pf)).toEqual(dump(a.pf));
    expect(() => b.pf.restore({ config: 'AAAA', intx: false, routingId: 0 })).toThrow();
  });

  it('PF FLR removes the VFs and restores the capability registers', () => {
    const { pf, sriov, destroyed } = buildPf();
    const S = sriov.offset;
    pf.configWrite(S + 0x24, 4, 0xc0800000);
    pf.configWrite(S + 0x20, 4, 0x2);
    pf.configWrite(S + 0x10, 2, 3);
    pf.configWrite(S + 0x08, 2, 0x0009);
    expect(sriov.vfs).toHaveLength(3);
    pf.configWrite(0x88, 2, 0x8000); // Initiate FLR (PCIe cap at 0x80)
    expect(sriov.vfs).toHaveLength(0);
    expect(destroyed).toEqual([0, 1, 2]);
    expect(regs(pf, S)).toEqual(REF.sriov_regs_reset);
  });
});
