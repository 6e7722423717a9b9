#!/usr/bin/env python3
"""QEMU 7.2 software RSS oracle: brings a virtio-net-pci up over qtest (VERSION_1, CTRL_VQ, MQ, RSS,
HASH_REPORT; 4 queue pairs), sends RSS_CONFIG, injects frames on the tap from the host side, and prints
for each frame the rx queue and the virtio_net_hdr_v1_hash hash_value/hash_report QEMU wrote.

usage (inside `unshare -n`): rss_oracle.py CASES.json OUT.json
CASES.json: [{"name":..., "frame": hex, "hash_types": int}, ...]
"""
import json, os, socket, struct, subprocess, sys, time
sys.path.insert(0, "/work/shared/qemu-oracle")
from qtest import *
from virtio_pci import *
import virtio_net_dump as vnd

KEY = bytes.fromhex("6d5a56da255b0ec24167253d43a38fb0d0ca2bcbae7b30b477cb2da38030f20c6a42b73bbeac01fa")
PAIRS = 4
QSZ = 16
BUF = 2048
MEM = 0x1000000


def qbase(q):
    return MEM + q * 0x40000


class Queue:
    def __init__(self, qt, vp, q):
        self.qt, self.vp, self.q = qt, vp, q
        self.desc, self.avail, self.used = qbase(q), qbase(q) + 0x1000, qbase(q) + 0x2000
        self.bufs = qbase(q) + 0x4000
        qt.memset(qbase(q), 0x40000, 0)
        vp.wc16(vp.QSEL, q)
        vp.wc16(vp.QSIZE, QSZ)
        vp.wc16(vp.QMSIX, 0xffff)
        vp.wc64(vp.QDESC, self.desc)
        vp.wc64(vp.QDRIVER, self.avail)
        vp.wc64(vp.QDEVICE, self.used)
        vp.wc16(vp.QENABLE, 1)
        self.avail_idx = 0
        self.used_seen = 0

    def set_desc(self, i, addr, length, flags, nxt=0):
        self.qt.write(self.desc + 16 * i, struct.pack("<QIHH", addr, length, flags, nxt))

    def publish(self, head):
        self.qt.writew(self.avail + 4 + 2 * (self.avail_idx % QSZ), head)
        self.avail_idx += 1
        self.qt.writew(self.avail + 2, self.avail_idx & 0xffff)

    def used_idx(self):
        return self.qt.readw(self.used + 2)

    def pop(self):
        e = self.used_seen % QSZ
        ident, length = struct.unpack("<II", self.qt.read(self.used + 4 + 8 * e, 8))
        self.used_seen += 1
        return ident, length


def main():
    cases = json.load(open(sys.argv[1]))
    subprocess.run(["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"], check=False)
    subprocess.run(["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"], check=False)
    qt, pci, bdf = vnd.start("tap", "disable-legacy=on,mq=on,vectors=10,rss=on,hash=on")
    cfg = pci.dump(bdf)
    bars = assign_bars(pci, bdf, 0xc0000000, 0xc1000000)
    pci.w16(bdf, 4, 0x0006)
    vp = VirtioPCI(qt, pci, bdf, decode_virtio_caps(cfg), bars)
    vp.set_status(0)
    vp.set_status(1 | 2)
    df = vp.device_features()
    want = (1 << 32) | (1 << 17) | (1 << 22) | (1 << 60) | (1 << 57)
    assert df & want == want, hex(df)
    vp.set_driver_features(want)
    vp.set_status(1 | 2 | 8)
    assert vp.status() & 8
    nq = vp.c16(vp.NUMQ)
    assert nq == 2 * PAIRS + 1, nq
    queues = [Queue(qt, vp, q) for q in range(nq)]
    vp.set_status(1 | 2 | 4 | 8)
    subprocess.run(["ip", "link", "set", "tap0", "up"], check=True)
    # rx buffers
    for k in range(PAIRS):
        rq = queues[2 * k]
        for i in range(QSZ):
            rq.set_desc(i, rq.bufs + i * BUF, BUF, 2)
            rq.publish(i)
        vp.kick(2 * k)
    cq = queues[2 * PAIRS]
    ctrl_buf = cq.bufs

    def rss_config(hash_types):
        table = [i % PAIRS for i in range(128)]
        data = struct.pack("<IHH", hash_types, 127, 0) + struct.pack("<128H", *table) + \
            struct.pack("<HB", PAIRS, len(KEY)) + KEY
        qt.write(ctrl_buf, bytes([4, 1]))
        qt.write(ctrl_buf + 0x100, data)
        qt.writeb(ctrl_buf + 0x800, 0xee)
        cq.set_desc(0, ctrl_buf, 2, 1, 1)
        cq.set_desc(1, ctrl_buf + 0x100, len(data), 1, 2)
        cq.set_desc(2, ctrl_buf + 0x800, 1, 2)
        before = cq.used_idx()
        cq.publish(0)
        vp.kick(2 * PAIRS)
        for _ in range(1000):
            if cq.used_idx() != before:
                break
            time.sleep(0.001)
        cq.pop()
        return qt.readb(ctrl_buf + 0x800)

    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind(("tap0", 0))
    results = []
    current_types = None
    for c in cases:
        if c["hash_types"] != current_types:
            ack = rss_config(c["hash_types"])
            assert ack == 0, ack
            current_types = c["hash_types"]
        frame = bytes.fromhex(c["frame"])
        seen = [queues[2 * k].used_idx() for k in range(PAIRS)]
        s.send(frame)
        got = None
        for _ in range(2000):
            for k in range(PAIRS):
                rq = queues[2 * k]
                if rq.used_idx() != seen[k]:
                    ident, length = rq.pop()
                    hdr = qt.read(rq.bufs + ident * BUF, 20)
                    data = qt.read(rq.bufs + ident * BUF + 20, length - 20)
                    hv, hr = struct.unpack_from("<IH", hdr, 12)
                    got = dict(queue=k, hash=hv, report=hr, length=length - 20, same=data == frame)
                    # recycle
                    rq.publish(ident)
                    vp.kick(2 * k)
                    break
            if got:
                break
            time.sleep(0.001)
        results.append(dict(c, qemu=got))
        print(c["name"], json.dumps(got), flush=True)
    json.dump(results, open(sys.argv[2], "w"), indent=1)
    qt.close()


if __name__ == "__main__":
    main()
