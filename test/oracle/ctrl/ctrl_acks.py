#!/usr/bin/env python3
"""QEMU 7.2 control-queue oracle: brings virtio-net-pci (mq=on,rss=on,hash=on, 4-queue tap) up over qtest
with a given driver feature set, sends each command of a list on the control queue (class/cmd,
data and ack in separate descriptors, as Linux does) and records QEMU's ack byte and used length.

usage (inside `unshare -n`, as root): ctrl_acks.py OUT.json
"""
import json, struct, subprocess, sys, time
sys.path.insert(0, "/work/shared/qemu-oracle")
from qtest import *
from virtio_pci import *
import virtio_net_dump as vnd

MEM = 0x1000000
QSZ = 64
KEY = bytes.fromhex("6d5a56da255b0ec24167253d43a38fb0d0ca2bcbae7b30b477cb2da38030f20c6a42b73bbeac01fa")
B = lambda n: 1 << n
FULL = B(32) | B(17) | B(18) | B(19) | B(23) | B(5) | B(16) | B(21) | B(2) | B(1) | B(7) | B(22) | B(60) | B(57)
BARE = B(32) | B(17) | B(5)


def le16(v): return struct.pack("<H", v)
def le32(v): return struct.pack("<I", v)
def le64(v): return struct.pack("<Q", v)
def mac(i, multi=False): return bytes([0x01 if multi else 0x02, 0, 0, 0, i >> 8, i & 0xff])


def table(uni, multi, uni_count=None, multi_count=None):
    return le32(len(uni) if uni_count is None else uni_count) + b"".join(uni) + \
        le32(len(multi) if multi_count is None else multi_count) + b"".join(multi)


def rss(types=0x3f, mask=7, uncl=0, entries=None, max_tx=4, keylen=40, key=KEY):
    entries = entries if entries is not None else [i % 4 for i in range(mask + 1)]
    return le32(types) + le16(mask) + le16(uncl) + b"".join(le16(e) for e in entries) + le16(max_tx) + \
        bytes([keylen]) + key


def hashcfg(types=0x3f, keylen=40, key=KEY):
    return le32(types) + bytes(8) + bytes([keylen]) + key


CASES = [
    ("rx promisc on", 0, 0, b"\x01"), ("rx promisc no byte", 0, 0, b""), ("rx allmulti off", 0, 1, b"\x00"),
    ("rx alluni", 0, 2, b"\x01"), ("rx nomulti", 0, 3, b"\x01"), ("rx nouni", 0, 4, b"\x01"),
    ("rx nobcast", 0, 5, b"\x01"), ("rx cmd 6", 0, 6, b"\x01"), ("rx extra bytes", 0, 0, b"\x00\x09"),
    ("rx alluni off", 0, 2, b"\x00"), ("rx nomulti off", 0, 3, b"\x00"), ("rx nouni off", 0, 4, b"\x00"),
    ("rx nobcast off", 0, 5, b"\x00"),
    ("mac addr_set", 1, 1, mac(0x42)), ("mac addr_set 5", 1, 1, mac(1)[:5]), ("mac addr_set 7", 1, 1, mac(1) + b"\x00"),
    ("mac cmd 2", 1, 2, mac(1)),
    ("table empty payload", 1, 0, b""), ("table 3 bytes", 1, 0, b"\x00\x00\x00"),
    ("table 1+1", 1, 0, table([mac(1)], [mac(1, True)])), ("table 0+0", 1, 0, table([], [])),
    ("table uni count only", 1, 0, le32(0)), ("table uni beyond data", 1, 0, le32(2) + mac(1) + le32(0)),
    ("table trailing byte", 1, 0, table([], []) + b"\x00"), ("table multi beyond", 1, 0, le32(0) + le32(1)),
    ("table 65 uni", 1, 0, table([mac(i) for i in range(65)], [])),
    ("table 60+5", 1, 0, table([mac(i) for i in range(60)], [mac(i, True) for i in range(5)])),
    ("table 65 uni + 3 multi", 1, 0, table([mac(i) for i in range(65)], [mac(i, True) for i in range(3)])),
    ("table count wraps in 32 bits", 1, 0, le32(0x2AAAAAAB) + b"\x00\x00" + le32(0)),
    ("table count ffffffff", 1, 0, le32(0xFFFFFFFF) + le32(0)),
    ("table reset", 1, 0, table([], [])), ("mac addr_set back", 1, 1, bytes.fromhex("525400123456")),
    ("vlan add 5", 2, 0, le16(5)), ("vlan add 4096", 2, 0, le16(4096)), ("vlan del 5", 2, 1, le16(5)),
    ("vlan cmd 2", 2, 2, le16(5)), ("vlan short", 2, 0, b"\x05"), ("vlan add 4095", 2, 0, le16(4095)),
    ("vlan del never added", 2, 1, le16(9)), ("vlan extra byte", 2, 0, le16(5) + b"\x00"),
    ("announce ack none pending", 3, 0, b""), ("announce cmd 1", 3, 1, b""),
    ("mq pairs 1", 4, 0, le16(1)), ("mq pairs 0", 4, 0, le16(0)), ("mq pairs 5", 4, 0, le16(5)),
    ("mq pairs 4", 4, 0, le16(4)), ("mq pairs short", 4, 0, b"\x01"), ("mq pairs 0x8001", 4, 0, le16(0x8001)),
    ("mq cmd 3", 4, 3, le16(1)),
    ("rss valid", 4, 1, rss()), ("rss disable", 4, 1, rss(types=0, keylen=0, key=b"")),
    ("rss types 0x200", 4, 1, rss(types=0x200)), ("rss table 3", 4, 1, rss(mask=2, entries=[0, 1, 2])),
    ("rss table 256", 4, 1, rss(mask=255)), ("rss unclassified 4", 4, 1, rss(uncl=4)),
    ("rss entry 4", 4, 1, rss(entries=[0, 1, 2, 4, 0, 1, 2, 3])),
    ("rss entry bit 15", 4, 1, rss(entries=[0x8000, 1, 2, 3, 0, 1, 2, 3])),
    ("rss max_tx 0", 4, 1, rss(max_tx=0)), ("rss max_tx 5", 4, 1, rss(max_tx=5)),
    ("rss key 41", 4, 1, rss(keylen=41, key=bytes(41))), ("rss types no key", 4, 1, rss(keylen=0, key=b"")),
    ("rss key cut", 4, 1, rss()[:11 + 16 + 20]), ("rss table cut", 4, 1, rss()[:12]),
    ("rss empty", 4, 1, b""), ("rss 7 bytes", 4, 1, bytes(7)),
    ("hash valid", 4, 2, hashcfg()), ("hash disable", 4, 2, hashcfg(types=0, keylen=0, key=b"")),
    ("hash types 0x200", 4, 2, hashcfg(types=0x200)), ("hash key 41", 4, 2, hashcfg(keylen=41, key=bytes(41))),
    ("hash types no key", 4, 2, hashcfg(keylen=0, key=b"")), ("hash key cut", 4, 2, hashcfg()[:30]),
    ("hash 12 bytes", 4, 2, bytes(12)), ("hash empty", 4, 2, b""),
    ("mq pairs 4 again", 4, 0, le16(4)),
    ("offloads csum", 5, 0, le64(B(1))), ("offloads uso4", 5, 0, le64(B(54))), ("offloads host_tso4", 5, 0, le64(B(11))),
    ("offloads short", 5, 0, bytes(7)), ("offloads cmd 1", 5, 1, le64(B(1))),
    ("offloads rsc_ext|csum", 5, 0, le64(B(61) | B(1))), ("offloads 9 bytes", 5, 0, le64(B(1)) + b"\x00"),
    ("offloads zero", 5, 0, le64(0)), ("offloads csum|tso4", 5, 0, le64(B(1) | B(7))),
    ("class 6", 6, 0, b""), ("class 7", 7, 0, b"\x00"), ("class 255", 255, 0, b""),
]


def session(features):
    qt, pci, bdf = vnd.start("tap", "disable-legacy=on,mq=on,vectors=10,rss=on,hash=on")
    cfg = pci.dump(bdf)
    bars = assign_bars(pci, bdf, 0xc0000000, 0xc1000000)
    pci.w16(bdf, 4, 0x0006)
    vp = VirtioPCI(qt, pci, bdf, decode_virtio_caps(cfg), bars)
    vp.set_status(0)
    vp.set_status(1 | 2)
    df = vp.device_features()
    assert df & features == features, (hex(df), hex(features))
    vp.set_driver_features(features)
    vp.set_status(1 | 2 | 8)
    assert vp.status() & 8
    nq = vp.c16(vp.NUMQ)
    cq_index = nq - 1
    desc, avail, used, buf = MEM, MEM + 0x1000, MEM + 0x2000, MEM + 0x4000
    qt.memset(MEM, 0x20000, 0)
    vp.wc16(vp.QSEL, cq_index)
    vp.wc16(vp.QSIZE, QSZ)
    vp.wc16(vp.QMSIX, 0xffff)
    vp.wc64(vp.QDESC, desc)
    vp.wc64(vp.QDRIVER, avail)
    vp.wc64(vp.QDEVICE, used)
    vp.wc16(vp.QENABLE, 1)
    vp.set_status(1 | 2 | 4 | 8)
    out = []
    idx = 0
    for name, cls, cmd, data in CASES:
        qt.write(buf, bytes([cls, cmd]))
        if data:
            qt.write(buf + 0x100, data)
        qt.writeb(buf + 0x2000, 0xEE)
        descs = [(buf, 2, 1)] + ([(buf + 0x100, len(data), 1)] if data else []) + [(buf + 0x2000, 1, 2)]
        for i, (a, n, f) in enumerate(descs):
            last = i == len(descs) - 1
            qt.write(desc + 16 * i, struct.pack("<QIHH", a, n, f | (0 if last else 1), 0 if last else i + 1))
        qt.writew(avail + 4 + 2 * (idx % QSZ), 0)
        idx += 1
        qt.writew(avail + 2, idx & 0xFFFF)
        vp.kick(cq_index)
        for _ in range(1000):
            if qt.readw(used + 2) == idx & 0xFFFF:
                break
            time.sleep(0.001)
        e = (idx - 1) % QSZ
        ident, length = struct.unpack("<II", qt.read(used + 4 + 8 * e, 8))
        ack = qt.readb(buf + 0x2000)
        status = vp.status()
        out.append(dict(name=name, cls=cls, cmd=cmd, data=data.hex(), ack=ack, used_len=length, status=status))
        print(name, ack, length, hex(status), flush=True)
    qt.close()
    return dict(features="0x%016x" % features, ctrl_queue=cq_index, results=out)


def main():
    res = dict(qemu="7.2 (Debian qemu-system-x86 1:7.2+dfsg-7+deb12u18)",
               device="virtio-net-pci,disable-legacy=on,mq=on,vectors=10,rss=on,hash=on on a 4-queue tap",
               sessions=dict(full=session(FULL), bare=session(BARE)))
    json.dump(res, open(sys.argv[1], "w"), indent=1)


if __name__ == "__main__":
    main()
