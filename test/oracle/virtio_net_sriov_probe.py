#!/usr/bin/env python3
"""Probe QEMU 11.1's virtio-net SR-IOV PF/VFs and its plain virtio-net-pci over qtest.

usage (inside the QEMU 11.1 root, inside `unshare -n`; see fixtures/qemu-11.1/README.md):
  virtio_net_sriov_probe.py sriov [PF_VF_OPTS]   -> virtio-net-sriov-*.{bin,json,txt}
  virtio_net_sriov_probe.py plain NAME [OPTS]    -> NAME.{cfg-reset.bin,cfg-assigned.bin,json}
ORACLE_LIB: folder of the shared qtest.py/virtio_pci.py (default /work/shared/qemu-oracle).
"""
import json, os, struct, sys
sys.path.insert(0, os.environ.get("ORACLE_LIB", "/work/shared/qemu-oracle"))
from qtest import *  # noqa: E402,F401
from virtio_pci import *  # noqa: E402,F401

DUMPS = os.environ.get("ORACLE_OUT", os.path.join(os.getcwd(), "qemu-oracle-dumps"))
os.makedirs(DUMPS, exist_ok=True)

SRIOV_REGS = [  # (name, offset, size)
    ("header", 0x00, 4), ("sriov_cap", 0x04, 4), ("sriov_ctrl", 0x08, 2), ("sriov_status", 0x0a, 2),
    ("initial_vfs", 0x0c, 2), ("total_vfs", 0x0e, 2), ("num_vfs", 0x10, 2), ("func_dep_link", 0x12, 1),
    ("rsvd13", 0x13, 1), ("first_vf_offset", 0x14, 2), ("vf_stride", 0x16, 2), ("rsvd18", 0x18, 2),
    ("vf_device_id", 0x1a, 2), ("supported_page_sizes", 0x1c, 4), ("system_page_size", 0x20, 4),
    ("vf_bar0", 0x24, 4), ("vf_bar1", 0x28, 4), ("vf_bar2", 0x2c, 4), ("vf_bar3", 0x30, 4),
    ("vf_bar4", 0x34, 4), ("vf_bar5", 0x38, 4), ("vf_migration_state_array", 0x3c, 4),
]
NP_BASE, NP_LIMIT, PF_BASE, PF_LIMIT = 0xc0000000, 0xc0ffffff, 0xc1000000, 0xc1ffffff
VF_NP_BASE, VF_PF_BASE = 0xc0800000, 0xc1800000
QUEUES_MAX = 64
NAMES = {**NET_FEATURES, **{65: "GUEST_UDP_TUNNEL_GSO", 66: "GUEST_UDP_TUNNEL_GSO_CSUM",
                              67: "HOST_UDP_TUNNEL_GSO", 68: "HOST_UDP_TUNNEL_GSO_CSUM"}}


def rd(pci, bdf, off, size):
    return {1: pci.r8, 2: pci.r16, 4: pci.r32}[size](bdf, off)


def regs(pci, bdf, base):
    return {n: "0x%0*x" % (2 * s, rd(pci, bdf, base + o, s)) for n, o, s in SRIOV_REGS}


def scan(pci):
    return ["%02x:%02x.%x %08x" % (b[0], b[1], b[2], v) for b, v in pci.scan_bus(1)]


def header(cfg):
    u16 = lambda o: struct.unpack_from("<H", cfg, o)[0]
    return dict(vendor="0x%04x" % u16(0), device="0x%04x" % u16(2), command="0x%04x" % u16(4),
                status="0x%04x" % u16(6), revision=cfg[8],
                class_code="0x%06x" % (struct.unpack_from("<I", cfg, 8)[0] >> 8), header_type=cfg[0x0e],
                subsys_vendor="0x%04x" % u16(0x2c), subsys_id="0x%04x" % u16(0x2e),
                int_line=cfg[0x3c], int_pin=cfg[0x3d], cap_ptr="0x%02x" % cfg[0x34])


def decode(cfg):
    d = dict(header=header(cfg),
             caps=[dict(offset=o, id=i, name=CAP_NAMES.get(i, "?"), next=n) for o, i, n in walk_caps(cfg)],
             ext_caps=[dict(offset=o, id=i, name=EXTCAP_NAMES.get(i, "?"), version=v, next=n)
                       for o, i, v, n in walk_ext_caps(cfg)],
             virtio_caps=decode_virtio_caps(cfg))
    for c in d["caps"]:
        o = c["offset"]
        if c["id"] == 0x11:
            mc = struct.unpack_from("<H", cfg, o + 2)[0]
            t, p = struct.unpack_from("<II", cfg, o + 4)
            d["msix"] = dict(offset=o, msg_ctl="0x%04x" % mc, table_size=(mc & 0x7ff) + 1,
                             table_bir=t & 7, table_offset=t & ~7, pba_bir=p & 7, pba_offset=p & ~7)
        if c["id"] == 0x10:
            d["pcie_cap"] = dict(offset=o, raw=cfg[o:o + 0x3c].hex())
        if c["id"] == 0x01:
            d["pm_cap"] = dict(offset=o, raw=cfg[o:o + 8].hex())
    for c in d["ext_caps"]:
        o = c["offset"]
        if c["id"] == 0x0e:
            d["ari"] = dict(offset=o, raw=cfg[o:o + 8].hex(),
                            next_function=cfg[o + 5], ari_cap="0x%04x" % struct.unpack_from("<H", cfg, o + 4)[0],
                            ari_ctl="0x%04x" % struct.unpack_from("<H", cfg, o + 6)[0])
        if c["id"] == 0x10:
            d["sriov_raw"] = cfg[o:o + 0x40].hex()
    return d


def features(vp, words=4):
    out = []
    for sel in range(words):
        vp.wc32(vp.DFSEL, sel)
        out.append(vp.c32(vp.DF))
    return out


def all_bits(words):
    f = 0
    for i, w in enumerate(words):
        f |= w << (32 * i)
    return f


def device_cfg(qt, vp, n=64):
    """Bytes of the device config window; QEMU answers reads past config_len with all-ones."""
    raw = bytes(qt.readb(vp.device + i) for i in range(n))
    # every dword read that ends past config_len is all-ones: the first such 1-byte read bounds it
    length = n
    while length > 0 and raw[length - 1] == 0xff:
        length -= 1
    return dict(raw=raw.hex(), length_by_trailing_ff=length,
                dword_reads=["0x%08x" % qt.readl(vp.device + i) for i in range(0, n, 4)])


def virtio_view(qt, pci, bdf, dec, bars):
    vp = VirtioPCI(qt, pci, bdf, dec["virtio_caps"], bars)
    snap = vp.common_snapshot()  # before the feature reads move device_feature_select
    words = features(vp)
    f = all_bits(words)
    v = dict(common_at_reset=snap, feature_words=["0x%08x" % w for w in words],
             device_features="0x%032x" % f,
             device_features_names=[NAMES.get(i, "bit%d" % i) for i in range(128) if f >> i & 1],
             sr_iov_bit37=bool(f >> 37 & 1), admin_vq_bit41=bool(f >> 41 & 1))
    nq = v["common_at_reset"]["num_queues"]
    v["queues"] = [vp.queue_info(q) for q in range(min(nq, QUEUES_MAX))]
    v["queue_select_out_of_range"] = vp.queue_info(nq)
    # 1.2+ fields after queue_reset: admin_queue_index/num (offsets 60/62)
    v["common_60_64"] = dict(admin_queue_index="0x%04x" % vp.c16(60), admin_queue_num="0x%04x" % vp.c16(62))
    v["device_cfg"] = device_cfg(qt, vp)
    v["net_config"] = net_config(qt, vp.device, 24)
    v["isr_read"] = qt.readb(vp.isr)
    return v


def netdevs(n, queues=1):
    a = []
    for i in range(n):
        a += ["-netdev", "tap,id=n%d,ifname=tap%d,script=no,downscript=no,vnet_hdr=on,queues=%d" % (i, i, queues)]
    return a


def bar_size(pci, bdf, off, is_vf_reg=False):
    orig = pci.r32(bdf, off)
    pci.w32(bdf, off, 0xffffffff)
    lo = pci.r32(bdf, off)
    pci.w32(bdf, off, orig)
    return lo


def wmask_probe(pci, bdf, start, end, caps):
    """Per byte: write 0xff (0x7f for FLR / MSI-X enable bytes), read, write 0, read, restore."""
    skip = set()
    for o, i, n in caps:
        if i == 0x10:
            skip.add(o + 9)
        if i == 0x11:
            skip.add(o + 3)
    ones, zeros, orig_b = bytearray(), bytearray(), bytearray()
    for o in range(start, end):
        orig = pci.r8(bdf, o)
        pci.w8(bdf, o, 0x7f if o in skip else 0xff)
        ones.append(pci.r8(bdf, o))
        pci.w8(bdf, o, 0)
        zeros.append(pci.r8(bdf, o))
        pci.w8(bdf, o, orig)
        orig_b.append(orig)
    return dict(start=start, end=end, skipped_probed_with_0x7f=sorted(skip), orig_hex=orig_b.hex(),
                after_ff_hex=ones.hex(), after_00_hex=zeros.hex(),
                writable_mask_hex=bytes(a ^ b for a, b in zip(ones, zeros)).hex())


def sriov(opts):
    args = netdevs(3) + [
        "-device", "pcie-root-port,id=rp0,bus=pcie.0,chassis=1,addr=2.0",
        "-device", "virtio-net-pci,bus=rp0,addr=0.1,netdev=n1,sriov-pf=pf0" + ("," + opts if opts else ""),
        "-device", "virtio-net-pci,bus=rp0,addr=0.2,netdev=n2,sriov-pf=pf0" + ("," + opts if opts else ""),
        "-device", "virtio-net-pci,id=pf0,bus=rp0,addr=0.0,netdev=n0" + ("," + opts if opts else "")]
    qt = QTest(args)
    pci = PCI(qt)
    pci.enable_ecam()
    setup_root_port(pci, (0, 2, 0), 1, NP_BASE, NP_LIMIT, PF_BASE, PF_LIMIT)
    pf = (1, 0, 0)
    out = dict(qemu_args=qt.args, device_opts=opts, pf="01:00.0", log=[])
    out["bus1_at_reset"] = scan(pci)
    cfg0 = pci.dump(pf)
    open(os.path.join(DUMPS, "virtio-net-sriov-pf.cfg-reset.bin"), "wb").write(cfg0)
    out["pf"] = decode(cfg0)
    sr = [c["offset"] for c in out["pf"]["ext_caps"] if c["id"] == 0x10]
    assert sr, "no SR-IOV cap: %s" % out["pf"]["ext_caps"]
    S = sr[0]
    out["sriov_offset"] = S
    out["sriov_regs_reset"] = regs(pci, pf, S)
    out["sriov_wmask"] = wmask_probe(pci, pf, S, S + 0x40, [])
    out["vf_bar_sizing_readback"] = ["0x%08x" % bar_size(pci, pf, S + 0x24 + 4 * i) for i in range(6)]
    out["pf_wmask_0_100"] = wmask_probe(pci, pf, 0, 0x100, walk_caps(cfg0))
    out["pf_wmask_140_200"] = wmask_probe(pci, pf, 0x140, 0x200, [])

    bars = assign_bars(pci, pf, NP_BASE, 0xc1000000)
    out["pf_bars"] = bars
    pci.w16(pf, 4, 0x0006)
    cfg1 = pci.dump(pf)
    open(os.path.join(DUMPS, "virtio-net-sriov-pf.cfg-assigned.bin"), "wb").write(cfg1)
    out["pf_virtio"] = virtio_view(qt, pci, pf, out["pf"], bars)

    # NumVFs > TotalVFs, then VF Enable
    total = pci.r16(pf, S + 0x0e)
    pci.w16(pf, S + 0x10, total + 1)
    out["num_vfs_total_plus_1_readback"] = pci.r16(pf, S + 0x10)
    pci.w16(pf, S + 0x08, 0x0001)
    out["enable_with_num_vfs_gt_total"] = dict(regs=regs(pci, pf, S), bus1=scan(pci))
    pci.w16(pf, S + 0x08, 0)
    pci.w16(pf, S + 0x10, 0)
    out["after_gt_total_disable"] = dict(regs=regs(pci, pf, S), bus1=scan(pci))

    # VF BARs: decode sizes, program addresses
    vfb = [int(x, 16) for x in out["vf_bar_sizing_readback"]]
    vf_bars, i, np_b, pf_b = [], 0, VF_NP_BASE, VF_PF_BASE
    while i < 6:
        lo = vfb[i]
        if lo == 0:
            i += 1
            continue
        is64 = (lo >> 1) & 3 == 2
        pref = bool(lo & 8)
        if is64:
            off = S + 0x24 + 4 * (i + 1)
            hi = bar_size(pci, pf, off)
            mask = (hi << 32) | (lo & 0xfffffff0)
            size = ((~mask) & 0xffffffffffffffff) + 1
        else:
            size = ((~(lo & 0xfffffff0)) & 0xffffffff) + 1
        if pref:
            addr, pf_b = pf_b, pf_b + 0x100000
        else:
            addr, np_b = np_b, np_b + 0x100000
        pci.w32(pf, S + 0x24 + 4 * i, addr & 0xffffffff)
        if is64:
            pci.w32(pf, S + 0x24 + 4 * (i + 1), addr >> 32)
        vf_bars.append(dict(bar=i, is64=is64, prefetch=pref, size_per_vf=size, base=addr, flags=lo & 0xf))
        i += 2 if is64 else 1
    out["vf_bars"] = vf_bars
    pci.w16(pf, S + 0x10, 2)
    out["after_num_vfs_2"] = regs(pci, pf, S)
    pci.w16(pf, S + 0x08, 0x0009)  # VF Enable | VF MSE
    out["after_vf_enable"] = regs(pci, pf, S)
    out["bus1_after_enable"] = scan(pci)
    cfg2 = pci.dump(pf)
    open(os.path.join(DUMPS, "virtio-net-sriov-pf.cfg-vf-enabled.bin"), "wb").write(cfg2)
    pci.w16(pf, S + 0x10, 1)
    out["num_vfs_write_1_while_enabled_readback"] = pci.r16(pf, S + 0x10)
    out["bus1_after_num_vfs_write_while_enabled"] = scan(pci)
    pci.w16(pf, S + 0x10, 2)

    first, stride = pci.r16(pf, S + 0x14), pci.r16(pf, S + 0x16)
    vfs = []
    for n in range(2):
        rid = (1 << 8) + first + stride * n
        bdf = (rid >> 8, (rid >> 3) & 0x1f, rid & 7)
        vcfg = pci.dump(bdf)
        open(os.path.join(DUMPS, "virtio-net-sriov-vf%d.cfg.bin" % n), "wb").write(vcfg)
        v = dict(routing_id="0x%04x" % rid, bdf="%02x:%02x.%x" % bdf, vendor_device="0x%08x" %
                 struct.unpack_from("<I", vcfg, 0)[0], header_hex=vcfg[:64].hex(), **decode(vcfg))
        v["bar_regs"] = ["0x%08x" % struct.unpack_from("<I", vcfg, 0x10 + 4 * k)[0] for k in range(6)]
        v["bar_regs_after_write_ones"] = []
        for k in range(6):
            v["bar_regs_after_write_ones"].append("0x%08x" % bar_size(pci, bdf, 0x10 + 4 * k))
        if n == 0:
            v["wmask"] = wmask_probe(pci, bdf, 0, 0x200, walk_caps(vcfg))
        # the VF's BARs as the PF's VF BARs place them
        vbars = [dict(bar=b["bar"], addr=b["base"] + n * b["size_per_vf"], size=b["size_per_vf"]) for b in vf_bars]
        v["placed_bars"] = vbars
        pci.w16(bdf, 4, 0x0006)
        v["command_after_write_0006"] = "0x%04x" % pci.r16(bdf, 4)
        try:
            v["virtio"] = virtio_view(qt, pci, bdf, v, vbars)
        except Exception as e:  # noqa: BLE001
            v["virtio_error"] = repr(e)
        vfs.append(v)
    out["vfs"] = vfs

    # VF MMIO decode gating: VF0 common cfg device_feature_select/num_queues dword (offset 0x10)
    if vfs and "virtio" in vfs[0]:
        vd = vfs[0]
        cc = [c for c in vd["virtio_caps"] if c["cfg_type"] == 1][0]
        base = [b for b in vd["placed_bars"] if b["bar"] == cc["bar"]][0]["addr"] + cc["bar_offset"]
        g = dict(enabled=qt.readl(base + 0x10))
        pci.w16(pf, 4, 0x0002)
        g["pf_mem_cleared"] = qt.readl(base + 0x10)
        pci.w16(pf, 4, 0x0006)
        vbdf = tuple(int(x, 16) for x in vd["bdf"].replace(".", ":").split(":"))
        pci.w16(vbdf, 4, 0)
        g["vf_command_0"] = qt.readl(base + 0x10)
        pci.w16(vbdf, 4, 0x0006)
        pci.w16(pf, S + 0x08, 0x0001)
        g["vf_mse_cleared"] = qt.readl(base + 0x10)
        pci.w16(pf, S + 0x08, 0x0009)
        g["vf_mse_set_again"] = qt.readl(base + 0x10)
        out["vf0_mmio_common_0x10"] = {k: "0x%08x" % x for k, x in g.items()}

    # disable
    pci.w16(pf, S + 0x08, 0x0000)
    out["after_vf_disable"] = regs(pci, pf, S)
    out["bus1_after_disable"] = scan(pci)
    out["vf0_cfg_after_disable"] = dict(dword0="0x%08x" % pci.r32((1, 0, 1), 0),
                                        dword8="0x%08x" % pci.r32((1, 0, 1), 8))
    out["pf_features_after_disable"] = features(VirtioPCI(qt, pci, pf, out["pf"]["virtio_caps"], bars))
    # PF FLR with VFs enabled
    pci.w16(pf, S + 0x10, 2)
    pci.w16(pf, S + 0x08, 0x0009)
    p = [c["offset"] for c in out["pf"]["caps"] if c["id"] == 0x10]
    if p:
        pci.w16(pf, p[0] + 8, 0x8000)
        out["pf_flr_with_vfs"] = dict(regs=regs(pci, pf, S), bus1=scan(pci),
                                      pf_command="0x%04x" % pci.r16(pf, 4))
    out["qemu_stderr"] = qt.stderr()
    qt.close()
    with open(os.path.join(DUMPS, "virtio-net-sriov.json"), "w") as f:
        json.dump(out, f, indent=1)
    with open(os.path.join(DUMPS, "virtio-net-sriov.txt"), "w") as f:
        f.write("QEMU args: %s\n\n" % " ".join(out["qemu_args"]))
        f.write("PF 01:00.0 config space at reset:\n" + hexdump(cfg0[:0x100]) + "\n...\n" +
                hexdump(cfg0[0x100:0x180], 0x100) + "\n")
        f.write("\nPF 0x100-0x17f with 2 VFs enabled:\n" + hexdump(cfg2[0x100:0x180], 0x100) + "\n")
        for n in range(len(vfs)):
            vcfg = open(os.path.join(DUMPS, "virtio-net-sriov-vf%d.cfg.bin" % n), "rb").read()
            f.write("\nVF%d %s config space:\n" % (n, vfs[n]["bdf"]) + hexdump(vcfg[:0x100]) + "\n...\n" +
                    hexdump(vcfg[0x100:0x120], 0x100) + "\n")
    return out


def plain(name, opts):
    args = netdevs(1, 4) + ["-device", "pcie-root-port,id=rp0,bus=pcie.0,chassis=1,addr=2.0",
                            "-device", "virtio-net-pci,bus=rp0,addr=0.0,netdev=n0," + opts]
    qt = QTest(args)
    pci = PCI(qt)
    pci.enable_ecam()
    setup_root_port(pci, (0, 2, 0), 1, NP_BASE, NP_LIMIT, PF_BASE, PF_LIMIT)
    bdf = (1, 0, 0)
    cfg0 = pci.dump(bdf)
    open(os.path.join(DUMPS, name + ".cfg-reset.bin"), "wb").write(cfg0)
    out = dict(qemu_args=qt.args, device_opts=opts, **decode(cfg0))
    bars = assign_bars(pci, bdf, NP_BASE, PF_BASE)
    out["bars"] = bars
    pci.w16(bdf, 4, 0x0006)
    open(os.path.join(DUMPS, name + ".cfg-assigned.bin"), "wb").write(pci.dump(bdf))
    out["virtio"] = virtio_view(qt, pci, bdf, out, bars)
    out["qemu_stderr"] = qt.stderr()
    qt.close()
    with open(os.path.join(DUMPS, name + ".json"), "w") as f:
        json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    if sys.argv[1] == "sriov":
        r = sriov(sys.argv[2] if len(sys.argv) > 2 else "")
        print(json.dumps({k: r[k] for k in ("sriov_regs_reset", "vf_bar_sizing_readback", "bus1_after_enable",
                                             "after_vf_disable")}, indent=1))
        print("PF features", r["pf_virtio"]["feature_words"], "SR_IOV", r["pf_virtio"]["sr_iov_bit37"])
        for v in r["vfs"]:
            print("VF", v["bdf"], v.get("virtio", {}).get("feature_words"), v.get("virtio_error"))
        if r["qemu_stderr"].strip():
            print("stderr:", r["qemu_stderr"].strip())
    else:
        r = plain(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "disable-legacy=on")
        print(sys.argv[2], r["virtio"]["feature_words"], " ".join(r["virtio"]["device_features_names"]))
        print(" num_queues", r["virtio"]["common_at_reset"]["num_queues"], "cfg len",
              r["virtio"]["device_cfg"]["length_by_trailing_ff"])
        if r["qemu_stderr"].strip():
            print("stderr:", r["qemu_stderr"].strip())
