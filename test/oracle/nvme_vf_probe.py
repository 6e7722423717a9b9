#!/usr/bin/env python3
"""Probe QEMU 7.2's pcie_sriov VF config space write behaviour and PF FLR effect (nvme PF, 2 VFs).

usage: nvme_vf_probe.py   -> ORACLE_OUT/nvme-vf-probe.json
Per VF0 config byte (0..0x1ff): read, write 0xff (0x7f for PCIe DevCtl high byte and MSI-X control
high byte), read, write 0, read, restore. Then: MSI-X enable on the VF, PF FLR with VFs enabled and
the SR-IOV registers / bus scan afterwards.
"""
import json, os, sys
sys.path.insert(0, "/work/shared/qemu-oracle")
from qtest import *

DUMPS = os.environ.get("ORACLE_OUT", os.path.join(os.getcwd(), "qemu-oracle-dumps"))
NVME_OPTS = ("serial=deadbeef,subsys=subsys0,sriov_max_vfs=4,sriov_vq_flexible=8,"
             "sriov_vi_flexible=4,max_ioqpairs=10,msix_qsize=6")


def main():
    args = ["-device", "nvme-subsys,id=subsys0,nqn=oracle",
            "-device", "pcie-root-port,id=rp1,bus=pcie.0,chassis=1,addr=2.0",
            "-device", "nvme,bus=rp1,addr=0.0," + NVME_OPTS]
    qt = QTest(args)
    pci = PCI(qt)
    pci.enable_ecam()
    setup_root_port(pci, (0, 2, 0), 1, 0xc0000000, 0xc0ffffff, 0xc1000000, 0xc1ffffff)
    pf = (1, 0, 0)
    S = 0x120
    assign_bars(pci, pf, 0xc0000000, 0xc1000000)
    pci.w16(pf, 4, 0x0006)
    pci.w32(pf, S + 0x24, 0xc0800000)
    pci.w32(pf, S + 0x28, 0)
    pci.w16(pf, S + 0x10, 2)
    pci.w16(pf, S + 0x08, 0x0009)
    vf = (1, 0, 1)
    cfg = pci.dump(vf, 0x200)
    caps = walk_caps(cfg)
    skip = set()
    for o, i, n in caps:
        if i == 0x10:
            skip.add(o + 9)
        if i == 0x11:
            skip.add(o + 3)
    ones, zeros = bytearray(0x200), bytearray(0x200)
    for o in range(0x200):
        orig = pci.r8(vf, o)
        pci.w8(vf, o, 0x7f if o in skip else 0xff)
        ones[o] = pci.r8(vf, o)
        pci.w8(vf, o, 0)
        zeros[o] = pci.r8(vf, o)
        pci.w8(vf, o, orig)
    res = dict(qemu_args=qt.args, vf="01:00.1", skipped_probed_with_0x7f=sorted(skip),
               orig_hex=cfg.hex(), after_ff_hex=ones.hex(), after_00_hex=zeros.hex(),
               writable_mask_hex=bytes(a ^ b for a, b in zip(ones, zeros)).hex())
    m = [o for o, i, n in caps if i == 0x11][0]
    pci.w16(vf, m + 2, 0xffff)
    res["vf_msix_msgctl_after_ffff"] = "0x%04x" % pci.r16(vf, m + 2)
    pci.w16(vf, m + 2, 0)
    # PF FLR with VFs enabled
    p = [o for o, i, n in walk_caps(pci.dump(pf, 256)) if i == 0x10][0]
    pci.w16(pf, p + 8, 0x8000)
    res["pf_flr"] = dict(
        sriov_after=pci.dump(pf)[S:S + 0x40].hex(),
        bus1=["%02x:%02x.%x %08x" % (b[0], b[1], b[2], v) for b, v in pci.scan_bus(1)])
    res["qemu_stderr"] = qt.stderr()
    qt.close()
    os.makedirs(DUMPS, exist_ok=True)
    with open(os.path.join(DUMPS, "nvme-vf-probe.json"), "w") as f:
        json.dump(res, f, indent=1)
    print(json.dumps({k: v for k, v in res.items() if not k.endswith("_hex") and k != "qemu_args"}, indent=1))


if __name__ == "__main__":
    main()
