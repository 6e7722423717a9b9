#!/usr/bin/env python3
"""QEMU 7.2 receive-filter oracle: virtio-net-pci on a tap (inside `unshare -n`), driver features
VERSION_1, CTRL_VQ, CTRL_RX, CTRL_VLAN, CTRL_MAC_ADDR, MAC, STATUS; a list of steps, each either a control
command (ack recorded) or a frame written to the tap from the host side (recorded: delivered or not).
Frames carry EtherType 0x88b5 and a sequence number so that stray host traffic is ignored.

usage (as root): unshare -n python3 rx_filter.py OUT.json
"""
import json, socket, struct, subprocess, sys, time
sys.path.insert(0, "/work/shared/qemu-oracle")
from qtest import *
from virtio_pci import *
import virtio_net_dump as vnd

MEM = 0x1000000
QSZ = 64
BUF = 2048
B = lambda n: 1 << n
FEATURES = B(32) | B(17) | B(18) | B(19) | B(23) | B(5) | B(16)
OWN = "52:54:00:12:34:56"


def m(s): return bytes(int(x, 16) for x in s.split(":"))
def le16(v): return struct.pack("<H", v)
def le32(v): return struct.pack("<I", v)
def uni(i): return "02:00:00:00:%02x:%02x" % (i >> 8, i & 0xff)
def multi(i): return "01:00:5e:00:%02x:%02x" % (i >> 8, i & 0xff)


def table(u, mu):
    return le32(len(u)) + b"".join(m(x) for x in u) + le32(len(mu)) + b"".join(m(x) for x in mu)


def rx(cmd, on): return ("cmd", 0, cmd, bytes([1 if on else 0]))


def frames(*dsts, vlan=None): return [("frame", d, vlan) for d in dsts]


BASIC = ["own", "other", "bcast", "mcast", "mcast6"]
MACS = {"own": OWN, "other": "52:54:00:99:99:99", "bcast": "ff:ff:ff:ff:ff:ff", "mcast": "01:00:5e:00:00:01",
        "mcast6": "33:33:00:00:00:01"}


def basic(vlan=None): return frames(*[MACS[k] for k in BASIC], vlan=vlan)


STEPS = (
    basic() + frames(OWN, vlan=100)
    + [rx(0, False)] + basic() + frames(OWN, vlan=100)
    + [rx(1, True)] + basic() + [rx(3, True)] + basic() + [rx(3, False), rx(1, False)]
    + [rx(2, True)] + basic() + [rx(4, True)] + basic() + [rx(4, False), rx(2, False)]
    + [rx(5, True)] + basic() + [rx(1, True)] + basic() + [rx(5, False), rx(1, False)]
    + [("cmd", 2, 0, le16(100))] + frames(OWN, vlan=100) + frames(OWN, vlan=101) + frames(MACS["other"], vlan=100)
    + frames(MACS["bcast"], vlan=100) + [("cmd", 2, 1, le16(100))] + frames(OWN, vlan=100)
    + [("cmd", 1, 0, table([uni(1)], [multi(1)]))] + frames(uni(1), uni(2), multi(1), multi(2), OWN)
    + [("cmd", 1, 0, table([multi(5)], [uni(5)]))] + frames(multi(5), uni(5))
    + [("cmd", 1, 0, table([uni(i) for i in range(64)], []))] + frames(uni(0), uni(63), uni(64), multi(0))
    + [("cmd", 1, 0, table([uni(i) for i in range(65)], [multi(1), multi(2)]))]
    + frames(uni(200), MACS["other"], multi(1), multi(2), multi(3))
    + [("cmd", 1, 0, table([uni(i) for i in range(60)], [multi(i) for i in range(5)]))]
    + frames(uni(59), uni(60), multi(0), multi(99))
    + [("cmd", 1, 0, table([uni(i) for i in range(60)], [multi(i) for i in range(4)]))] + frames(multi(3), multi(4))
    + [("cmd", 1, 0, table([], []))] + frames(uni(1), multi(1))
    + [("cmd", 1, 1, m("02:aa:bb:cc:dd:ee"))] + frames("02:aa:bb:cc:dd:ee", OWN)
    + [rx(0, True)] + basic(vlan=777)
)


def frame_bytes(dst, vlan, seq):
    src = m("52:54:00:ab:cd:ef")
    tag = b"" if vlan is None else struct.pack(">HH", 0x8100, vlan)
    payload = struct.pack(">I", seq) + bytes(46)
    return m(dst) + src + tag + struct.pack(">H", 0x88b5) + payload


def main():
    subprocess.run(["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"], check=False)
    subprocess.run(["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"], check=False)
    qt, pci, bdf = vnd.start("tap", "disable-legacy=on")
    cfg = pci.dump(bdf)
    bars = assign_bars(pci, bdf, 0xc0000000, 0xc1000000)
    pci.w16(bdf, 4, 0x0006)
    vp = VirtioPCI(qt, pci, bdf, decode_virtio_caps(cfg), bars)
    vp.set_status(0)
    vp.set_status(1 | 2)
    vp.set_driver_features(FEATURES)
    vp.set_status(1 | 2 | 8)
    assert vp.status() & 8
    qt.memset(MEM, 0x80000, 0)
    base = {0: MEM, 2: MEM + 0x10000}
    for q in (0, 2):
        vp.wc16(vp.QSEL, q)
        vp.wc16(vp.QSIZE, QSZ)
        vp.wc16(vp.QMSIX, 0xffff)
        vp.wc64(vp.QDESC, base[q])
        vp.wc64(vp.QDRIVER, base[q] + 0x1000)
        vp.wc64(vp.QDEVICE, base[q] + 0x2000)
        vp.wc16(vp.QENABLE, 1)
    vp.set_status(1 | 2 | 4 | 8)
    subprocess.run(["ip", "link", "set", "tap0", "up"], check=True)
    rxq, bufs = base[0], MEM + 0x20000
    aidx = {0: 0, 2: 0}
    seen = {0: 0, 2: 0}

    def publish(q, head):
        b = base[q]
        qt.writew(b + 0x1000 + 4 + 2 * (aidx[q] % QSZ), head)
        aidx[q] += 1
        qt.writew(b + 0x1000 + 2, aidx[q] & 0xffff)

    for i in range(QSZ):
        qt.write(rxq + 16 * i, struct.pack("<QIHH", bufs + i * BUF, BUF, 2, 0))
        publish(0, i)
    vp.kick(0)

    def used(q):
        b = base[q]
        out = []
        while qt.readw(b + 0x2000 + 2) != seen[q] & 0xffff:
            e = seen[q] % QSZ
            out.append(struct.unpack("<II", qt.read(b + 0x2000 + 4 + 8 * e, 8)))
            seen[q] += 1
        return out

    cbuf = MEM + 0x40000
    cq = base[2]

    def command(cls, cmd, data):
        qt.write(cbuf, bytes([cls, cmd]))
        qt.write(cbuf + 0x100, data)
        qt.writeb(cbuf + 0x2000, 0xee)
        qt.write(cq + 0, struct.pack("<QIHH", cbuf, 2, 1, 1))
        qt.write(cq + 16, struct.pack("<QIHH", cbuf + 0x100, len(data), 1, 2))
        qt.write(cq + 32, struct.pack("<QIHH", cbuf + 0x2000, 1, 2, 0))
        publish(2, 0)
        vp.kick(2)
        for _ in range(1000):
            if used(2):
                break
            time.sleep(0.001)
        return qt.readb(cbuf + 0x2000)

    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind(("tap0", 0))
    results = []
    for seq, st in enumerate(STEPS):
        if st[0] == "cmd":
            ack = command(st[1], st[2], st[3])
            results.append(dict(kind="cmd", cls=st[1], cmd=st[2], data=st[3].hex(), ack=ack))
            print("cmd", st[1], st[2], ack, flush=True)
            continue
        _, dst, vlan = st
        s.send(frame_bytes(dst, vlan, seq))
        got = False
        deadline = time.time() + 0.3
        while time.time() < deadline and not got:
            for ident, length in used(0):
                data = qt.read(bufs + ident * BUF + 12, length - 12)
                off = 16 if data[12:14] == b"\x81\x00" else 12
                if data[off:off + 2] == b"\x88\xb5" and struct.unpack(">I", data[off + 2:off + 6])[0] == seq:
                    got = True
                publish(0, ident)
                vp.kick(0)
            time.sleep(0.002)
        results.append(dict(kind="frame", dst=dst, vlan=vlan, delivered=got))
        print("frame", dst, vlan, got, flush=True)
    json.dump(dict(qemu="7.2 (Debian qemu-system-x86 1:7.2+dfsg-7+deb12u18)", features="0x%016x" % FEATURES,
                   steps=results), open(sys.argv[1], "w"), indent=1)
    qt.close()


if __name__ == "__main__":
    main()
