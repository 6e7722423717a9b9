// QEMU 11.1's pcie_sriov rules (virtio-net SR-IOV PF with 2 VFs, fixtures/qemu-11.1/virtio-net-sriov.json)
// replayed on SriovCapability with `rules: 'qemu-11.1'`: the same register writes in the same order as
// test/oracle/virtio_net_sriov_probe.py, compared register by register.
import { describe, expect, it } from 'vitest';
import { PciFunction } from './pci-function.js';
import { PcieCapability } from './pcie-capability.js';
import { PmCapability } from './pm-capability.js';
import { diff, fixtureBin, fixtureJson, hex, probeBytes } from './qemu-oracle.test-support.js';
import { SriovCapability } from './sriov.js';

type Regs = Record<string, string>;
interface Ref {
  sriov_offset: number;
  sriov_regs_reset: Regs;
  sriov_wmask: { writable_mask_hex: string; after_ff_hex: string; after_00_hex: string };
  vf_bar_sizing_readback: string[];
  num_vfs_total_plus_1_readback: number;
  enable_with_num_vfs_gt_total: { regs: Regs; bus1: string[] };
  after_gt_total_disable: { regs: Regs; bus1: string[] };
  after_num_vfs_2: Regs;
  after_vf_enable: Regs;
  bus1_after_enable: string[];
  num_vfs_write_1_while_enabled_readback: number;
  after_vf_disable: Regs;
  bus1_after_disable: string[];
  pf_flr_with_vfs: { regs: Regs; bus1: string[] };
  pf_wmask_0_100: { writable_mask_hex: string };
  vfs: { wmask: { writable_mask_hex: string } }[];
}
const REF = fixtureJson<Ref>('virtio-net-sriov.json', '11.1');

const SRIOV_REGS: [string, number, 1 | 2 | 4][] = [
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

const HEADER = {
  vendorId: 0x1af4,
  deviceId: 0x1041,
  revision: 1,
  classCode: 0x020000,
  subsystemVendorId: 0x1af4,
  subsystemId: 0x1100,
  interruptPin: 1,
  express: true,
};

function build() {
  const pf = new PciFunction({ ...HEADER, routingId: 0x0100 });
  const pcie = new PcieCapability(pf);
  const sriov = new SriovCapability(
    pf,
    {
      offset: 0x100,
      totalVfs: 2,
      vfDeviceId: 0x1041,
      firstVfOffset: 1,
      vfStride: 1,
      rules: 'qemu-11.1',
      vfBars: [
        { index: 1, size: 0x1000, type: 'mem32' },
        { index: 4, size: 0x4000, type: 'mem64', prefetchable: true },
      ],
    },
    {
      createVf: (_i, rid) => new PciFunction({ ...HEADER, vf: true, routingId: rid }),
      destroyVf: () => {},
    },
  );
  const S = sriov.offset;
  const regs = (): Regs => {
    const r: Regs = {};
    for (const [n, o, s] of SRIOV_REGS)
      r[n] = `0x${pf
        .configRead(S + o, s)
        .toString(16)
        .padStart(2 * s, '0')}`;
    return r;
  };
  // bus scan as the probe prints it: the PF, then VFs (Vendor/Device read all-ones)
  const bus1 = () => [
    `01:00.0 ${pf.configRead(0, 4).toString(16).padStart(8, '0')}`,
    ...sriov.vfs.map(
      (vf) => `01:00.${vf.routingId & 7} ${vf.configRead(0, 4).toString(16).padStart(8, '0')}`,
    ),
  ];
  return { pf, pcie, sriov, S, regs, bus1 };
}

/** QEMU's SR-IOV Next pointer is 0x140 (a reserved, empty ARI slot); ours ends the list: compare the rest. */
function sameRegs(ours: Regs, ref: Regs): void {
  const strip = (r: Regs) => ({ ...r, header: `0x${(Number(r.header) & 0xfffff).toString(16)}` });
  expect(strip(ours)).toEqual(strip(ref));
}

describe('SriovCapability with QEMU 11.1 rules against fixtures/qemu-11.1', () => {
  it('replays the probe sequence register for register', () => {
    const { pf, pcie, sriov, S, regs, bus1 } = build();
    expect(S).toBe(REF.sriov_offset);
    sameRegs(regs(), REF.sriov_regs_reset);
    expect(Number(REF.sriov_regs_reset.header) >>> 20).toBe(0x140); // the QEMU quirk noted above

    // per-byte write probe (write 0xff, read, write 0, read, restore)
    const ones = new Uint8Array(0x40);
    const zeros = new Uint8Array(0x40);
    for (let i = 0; i < 0x40; i++) {
      const orig = pf.configRead(S + i, 1);
      pf.configWrite(S + i, 1, 0xff);
      ones[i] = pf.configRead(S + i, 1);
      pf.configWrite(S + i, 1, 0);
      zeros[i] = pf.configRead(S + i, 1);
      pf.configWrite(S + i, 1, orig);
    }
    // header bytes 2-3 hold the Next pointer (see sameRegs)
    const noNext = (b: Uint8Array) => Uint8Array.from(b, (v, i) => (i === 3 ? 0 : i === 2 ? v & 0x0f : v));
    expect(noNext(ones)).toEqual(noNext(hex(REF.sriov_wmask.after_ff_hex)));
    expect(noNext(zeros)).toEqual(noNext(hex(REF.sriov_wmask.after_00_hex)));
    expect(hex(REF.sriov_wmask.writable_mask_hex).subarray(0, 4)).toEqual(new Uint8Array(4));
    expect(sriov.vfs.length).toBe(0);

    const sizing = [0, 1, 2, 3, 4, 5].map((k) => {
      const o = S + 0x24 + 4 * k;
      const orig = pf.configRead(o, 4);
      pf.configWrite(o, 4, 0xffffffff);
      const v = pf.configRead(o, 4);
      pf.configWrite(o, 4, orig);
      return `0x${v.toString(16).padStart(8, '0')}`;
    });
    expect(sizing).toEqual(REF.vf_bar_sizing_readback);

    // NumVFs > TotalVFs: VF Enable is refused
    pf.configWrite(S + 0x10, 2, 3);
    expect(pf.configRead(S + 0x10, 2)).toBe(REF.num_vfs_total_plus_1_readback);
    pf.configWrite(S + 0x08, 2, 0x0001);
    sameRegs(regs(), REF.enable_with_num_vfs_gt_total.regs);
    expect(bus1()).toEqual(REF.enable_with_num_vfs_gt_total.bus1);
    pf.configWrite(S + 0x08, 2, 0);
    pf.configWrite(S + 0x10, 2, 0);
    sameRegs(regs(), REF.after_gt_total_disable.regs);

    // VF BARs, NumVFs = 2, VF Enable + VF MSE
    pf.configWrite(S + 0x28, 4, 0xc0800000);
    pf.configWrite(S + 0x34, 4, 0xc1800000);
    pf.configWrite(S + 0x38, 4, 0);
    pf.configWrite(S + 0x10, 2, 2);
    sameRegs(regs(), REF.after_num_vfs_2);
    pf.configWrite(S + 0x08, 2, 0x0009);
    sameRegs(regs(), REF.after_vf_enable);
    expect(bus1()).toEqual(REF.bus1_after_enable);
    pf.configWrite(S + 0x10, 2, 1);
    expect(pf.configRead(S + 0x10, 2)).toBe(REF.num_vfs_write_1_while_enabled_readback);
    expect(sriov.vfs.length).toBe(2);
    pf.configWrite(S + 0x10, 2, 2);
    // the probe's decode checks toggle VF MSE
    pf.configWrite(S + 0x08, 2, 0x0001);
    pf.configWrite(S + 0x08, 2, 0x0009);
    expect(sriov.vfs.length).toBe(2);

    // disable keeps NumVFs and the VF BARs
    pf.configWrite(S + 0x08, 2, 0);
    sameRegs(regs(), REF.after_vf_disable);
    expect(bus1()).toEqual(REF.bus1_after_disable);

    // PF FLR with VFs enabled
    pf.configWrite(S + 0x10, 2, 2);
    pf.configWrite(S + 0x08, 2, 0x0009);
    expect(sriov.vfs.length).toBe(2);
    pf.configWrite(pcie.offset + 8, 2, 0x8000);
    sameRegs(regs(), REF.pf_flr_with_vfs.regs);
    expect(bus1()).toEqual(REF.pf_flr_with_vfs.bus1);
  });

  it('VF Enable with NumVFs = 0 takes effect (no VF) and freezes NumVFs', () => {
    const { pf, sriov, S } = build();
    pf.configWrite(S + 0x08, 2, 0x0001);
    expect(pf.configRead(S + 0x08, 2)).toBe(1);
    pf.configWrite(S + 0x10, 2, 2);
    expect(pf.configRead(S + 0x10, 2)).toBe(0);
    expect(sriov.vfs.length).toBe(0);
    pf.configWrite(S + 0x08, 2, 0);
    pf.configWrite(S + 0x10, 2, 2);
    pf.configWrite(S + 0x08, 2, 0x0001);
    expect(sriov.vfs.length).toBe(2);
  });

  it('snapshot/restore re-derives the masks and the VF set', () => {
    const a = build();
    a.pf.configWrite(a.S + 0x10, 2, 2);
    a.pf.configWrite(a.S + 0x08, 2, 0x0001);
    const snap = a.pf.snapshot();
    const b = build();
    b.pf.restore(snap);
    b.sriov.syncAfterRestore();
    expect(b.sriov.vfs.length).toBe(2);
    b.pf.configWrite(b.S + 0x10, 2, 1); // read-only while enabled
    expect(b.pf.configRead(b.S + 0x10, 2)).toBe(2);
    b.pf.configWrite(b.S + 0x08, 2, 0);
    expect([b.sriov.vfs.length, b.pf.configRead(b.S + 0x10, 2)]).toEqual([0, 2]);
  });
});

describe('PCIe and PM capabilities of QEMU 11.1 virtio-net PF and VF', () => {
  // PCIe v2 at 0x40 (0x3c bytes) and PM at 0x7c (8 bytes), as QEMU lays them out: compare their bytes
  // and per-byte write masks (byte 0x49 holds Initiate FLR: the probe wrote 0x7f there).
  const CAPS: [number, number] = [0x40, 0x84];
  function caps(fn: PciFunction, vfRsvdP: boolean) {
    new PcieCapability(fn, { extendedTag: true, vfRsvdP });
    new PmCapability(fn);
    const bytes = Uint8Array.from({ length: CAPS[1] - CAPS[0] }, (_, i) => fn.configRead(CAPS[0] + i, 1));
    const { ones, zeros } = probeBytes(fn, CAPS[1], [0x49]);
    const mask = Uint8Array.from(ones, (v, i) => v ^ zeros[i]!).subarray(CAPS[0]);
    return { bytes, mask };
  }
  const ref = (bin: Uint8Array, maskHex: string) => ({
    bytes: bin.subarray(CAPS[0], CAPS[1]),
    mask: hex(maskHex).subarray(CAPS[0], CAPS[1]),
  });

  it('PF: DevCap 0x10008020 (Extended Tag), same masks as 7.2', () => {
    const ours = caps(new PciFunction({ ...HEADER, routingId: 0x0100 }), true);
    const theirs = ref(
      fixtureBin('virtio-net-sriov-pf.cfg-reset.bin', '11.1'),
      REF.pf_wmask_0_100.writable_mask_hex,
    );
    expect(diff(ours.bytes, theirs.bytes)).toEqual([]);
    expect(diff(ours.mask, theirs.mask)).toEqual([]);
    expect(new DataView(theirs.bytes.buffer, theirs.bytes.byteOffset).getUint32(4, true)).toBe(0x10008020);
  });

  it('VF: error-reporting enables and Link Control writable (vfRsvdP: false)', () => {
    const vf = () => new PciFunction({ ...HEADER, vf: true, routingId: 0x0101 });
    const theirs = ref(
      fixtureBin('virtio-net-sriov-vf0.cfg.bin', '11.1'),
      REF.vfs[0]!.wmask.writable_mask_hex,
    );
    const ours = caps(vf(), false);
    expect(diff(ours.bytes, theirs.bytes)).toEqual([]);
    expect(diff(ours.mask, theirs.mask)).toEqual([]);
    // the PCIe-spec VF (default) differs exactly in DevCtl error enables and Link Control
    const spec = caps(vf(), true);
    expect(diff(spec.mask, theirs.mask)).toEqual([
      ['0x8', '0', 'f'],
      ['0x10', '0', 'c0'],
    ]);
  });
});
