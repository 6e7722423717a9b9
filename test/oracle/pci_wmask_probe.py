#!/usr/bin/env python3
"""Probe QEMU's per-byte write behaviour of a virtio-net-pci function's config space.

usage: pci_wmask_probe.py NAME [--root-bus] [DEVICE_OPTS]
Backend: hubport (no traffic). For every config byte (0..0xff, plus 0x100..0x1ff on PCIe) it writes
0xff, reads, writes 0x00, reads, then restores the original byte, and records the three values.
Skips bytes whose side effects would disturb the probe (PCIe Device Control high byte: Initiate FLR,
which is probed separately, and the MSI-X Message Control high byte).
Also probes: BAR sizing read-backs (dword all-ones), Status W1C, FLR effect on Command/BARs.
Writes ORACLE_OUT/NAME.wmask.json.
"""
import json, os, sys
sys.path.insert(0, "/work/shared/qemu-oracle")
from qtest import *

DUMPS = os.environ.get("ORACLE_OUT", os.path.join(os.getcwd(), "qemu-oracle-dumps"))


def main():
    name = sys.argv[1]
    rest = sys.argv[2:]
    root_bus = "--root-bus" in rest
    rest = [a for a in rest if a != "--root-bus"]
    opts = rest[0] if rest else "disable-legacy=on"
    net = ["-netdev", "hubport,id=n0,hubid=0"]
    if root_bus:
        dev = ["-device", "virtio-net-pci,bus=pcie.0,addr=3.0,netdev=n0," + opts]
    else:
        dev = ["-device", "pcie-root-port,id=rp1,bus=pcie.0,chassis=1,addr=2.0",
               "-device", "virtio-net-pci,bus=rp1,addr=0.0,netdev=n0," + opts]
    qt = QTest(net + dev)
    pci = PCI(qt)
    pci.enable_ecam()
    if root_bus:
        bdf = (0, 3, 0)
    else:
        setup_root_port(pci, (0, 2, 0), 1, 0xc0000000, 0xc0ffffff, 0xc1000000, 0xc1ffffff)
        bdf = (1, 0, 0)
    cfg = pci.dump(bdf)
    caps = walk_caps(cfg)
    skip = set()
    pcie = [o for o, i, n in caps if i == 0x10]
    msix = [o for o, i, n in caps if i == 0x11]
    if pcie:
        skip.add(pcie[0] + 9)  # DevCtl high byte: bit 15 = Initiate FLR
    if msix:
        skip.add(msix[0] + 3)
    size = 0x200 if pcie else 0x100
    res = dict(qemu_args=qt.args, device_opts=opts, root_bus=root_bus, bdf="%02x:%02x.%x" % bdf,
               skipped_probed_with_0x7f=sorted(skip))
    ones, zeros, orig_l = bytearray(size), bytearray(size), bytearray(size)
    for o in range(size):
        orig = pci.r8(bdf, o)
        orig_l[o] = orig
        if o in skip:  # probe without the side-effect bit (bit 7)
            pci.w8(bdf, o, 0x7f)
        else:
            pci.w8(bdf, o, 0xff)
        ones[o] = pci.r8(bdf, o)
        pci.w8(bdf, o, 0x00)
        zeros[o] = pci.r8(bdf, o)
        pci.w8(bdf, o, orig)
    res["orig_hex"] = orig_l.hex()
    res["after_ff_hex"] = ones.hex()
    res["after_00_hex"] = zeros.hex()
    res["writable_mask_hex"] = bytes(a ^ b for a, b in zip(ones, zeros)).hex()
    # BAR sizing readbacks (dword)
    sz = []
    for i in range(6):
        off = 0x10 + 4 * i
        orig = pci.r32(bdf, off)
        pci.w32(bdf, off, 0xffffffff)
        sz.append("0x%08x" % pci.r32(bdf, off))
        pci.w32(bdf, off, orig)
    res["bar_sizing_readback"] = sz
    # ROM BAR
    pci.w32(bdf, 0x30, 0xffffffff)
    res["rom_bar_after_ones"] = "0x%08x" % pci.r32(bdf, 0x30)
    pci.w32(bdf, 0x30, 0)
    # Command all-ones (word)
    pci.w16(bdf, 4, 0xffff)
    res["command_after_ffff"] = "0x%04x" % pci.r16(bdf, 4)
    pci.w16(bdf, 4, 0)
    # Status all-ones write (W1C bits at zero stay zero)
    pci.w16(bdf, 6, 0xffff)
    res["status_after_ffff"] = "0x%04x" % pci.r16(bdf, 6)
    # out-of-range / unaligned accesses through ECAM
    res["read32_at_0xffe"] = "skipped"
    # FLR: program BARs + command, initiate FLR, dump
    if pcie:
        bars = assign_bars(pci, bdf, 0xc0000000, 0xc1000000)
        pci.w16(bdf, 4, 0x0406)
        pci.w8(bdf, 0x3c, 0x0b)
        pci.w8(bdf, 0x0c, 0x10)
        p = pcie[0]
        pci.w16(bdf, p + 8, 0x000f)   # error reporting enables
        pci.w16(bdf, p + 0x10, 0x00c0)  # link control CCC|ES
        pci.w16(bdf, p + 0x28, 0x8000)  # devctl2
        pms = [o for o, i, n in caps if i == 0x01]
        if pms:
            pci.w16(bdf, pms[0] + 4, 0x0003)
        if msix:
            pci.w16(bdf, msix[0] + 2, 0xc000)
        before = pci.dump(bdf, 256)
        pci.w16(bdf, p + 8, pci.r16(bdf, p + 8) | 0x8000)
        after = pci.dump(bdf, 256)
        res["flr"] = dict(before=before.hex(), after=after.hex(),
                          devctl_after="0x%04x" % pci.r16(bdf, p + 8), bars=bars)
    if msix:
        m = msix[0]
        pci.w16(bdf, m + 2, 0xffff)
        res["msix_msgctl_after_ffff"] = "0x%04x" % pci.r16(bdf, m + 2)
        pci.w16(bdf, m + 2, 0)
        res["msix_msgctl_after_0000"] = "0x%04x" % pci.r16(bdf, m + 2)
    res["qemu_stderr"] = qt.stderr()
    qt.close()
    os.makedirs(DUMPS, exist_ok=True)
    with open(os.path.join(DUMPS, name + ".wmask.json"), "w") as f:
        json.dump(res, f, indent=1)
    print(name, "wmask", res["writable_mask_hex"][:128], "...")


if __name__ == "__main__":
    main()
