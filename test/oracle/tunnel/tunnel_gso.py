#!/usr/bin/env python3
"""QEMU 11.1 UDP tunnel GSO oracle (VIRTIO 1.4 feature bits 65-68): virtio-net-pci on a vnet-header tap,
driver features VERSION_1, MAC, CSUM, GUEST_CSUM, TSO4/6 both ways, USO both ways and the four tunnel
bits (feature word 2), no MRG_RXBUF (64 KiB rx buffers). A vxlan device (VNI 42, port 4789) on the
host side of the tap tunnels to the guest's address.
- rx: one UDP_SEGMENT write of 5000 bytes (1400-byte segments) into the tunnel; recorded: the rx
  header QEMU wrote (24 bytes) and the frame length.
- tx: the guest sends a VXLAN USO super-frame (3000 bytes, gso_size 1200) with the 24-byte header,
  outer UDP checksum 0 and then offloaded (UDP_TUNNEL_CSUM); recorded: the datagrams a UDP socket
  behind the host's vxlan receives.

usage: see README.md (the host configures the probe's namespace with iproute2 when it prints
"configure PID", then creates the file `go` in the output folder).
"""
import json, os, socket, struct, subprocess, sys, time
sys.path.insert(0, os.environ["ORACLE_LIB"])  # set by qemu-11.1-run.sh
from qtest import *
from virtio_pci import *
import virtio_net_dump as vnd

MEM = 0x1000000
QSZ = 16
BUF = 0x11000
B = lambda n: 1 << n
FEATURES = (B(32) | B(5) | B(0) | B(1) | B(7) | B(8) | B(11) | B(12) | B(54) | B(55) | B(56)
            | B(65) | B(66) | B(67) | B(68) | (B(15) if os.environ.get("MRG") == "1" else 0))
OWN = bytes.fromhex("525400123456")
TAP_MAC = bytes.fromhex("020000000001")


def csum(data, s=0):
    if len(data) % 2:
        data += b"\0"
    for i in range(0, len(data), 2):
        s += (data[i] << 8) | data[i + 1]
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return s


def ipv4(src, dst, proto, payload, ident):
    h = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, 0x4000, 64, proto, 0,
                    socket.inet_aton(src), socket.inet_aton(dst))
    h = h[:10] + struct.pack(">H", ~csum(h) & 0xffff) + h[12:]
    return h + payload


def udp_pseudo(src, dst, length):
    return csum(socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack(">HH", 17, length))


def vxlan_uso(payload, outer_csum):
    inner_udp = struct.pack(">HHHH", 40000, 9001, 8 + len(payload), udp_pseudo("10.99.0.2", "10.99.0.1", 8 + len(payload))) + payload
    inner = bytes.fromhex("060000000001060000000002") + b"\x08\x00" + ipv4("10.99.0.2", "10.99.0.1", 17, inner_udp, 1)
    body = bytes.fromhex("0800000000002a00") + inner
    ulen = 8 + len(body)
    check = udp_pseudo("10.77.0.2", "10.77.0.1", ulen) if outer_csum else 0
    outer_udp = struct.pack(">HHHH", 50000, 4789, ulen, check) + body
    return TAP_MAC + OWN + b"\x08\x00" + ipv4("10.77.0.2", "10.77.0.1", 17, outer_udp, 9)


def header(outer_csum):
    flags = 1 | (8 if outer_csum else 0)
    return struct.pack("<BBHHHHHIHHHH", flags, 0x25, 92, 1200, 84, 6, 0, 0, 0, 0, 34, 64)


def decode(h):
    f = struct.unpack("<BBHHHHHIHHHH", h)
    keys = ["flags", "gso_type", "hdr_len", "gso_size", "csum_start", "csum_offset", "num_buffers",
            "hash_value", "hash_report", "padding", "outer_th_offset", "inner_nh_offset"]
    return dict(zip(keys, f))


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
    offered = 0
    for sel in range(4):
        vp.wc32(vp.DFSEL, sel)
        offered |= vp.c32(vp.DF) << (32 * sel)
    for sel in range(4):
        vp.wc32(vp.GFSEL, sel)
        vp.wc32(vp.GF, (FEATURES >> (32 * sel)) & 0xffffffff)
    vp.set_status(1 | 2 | 8)
    assert vp.status() & 8, "FEATURES_OK refused"
    base = {0: MEM, 1: MEM + 0x10000}
    qt.memset(MEM, 0x20000, 0)
    for q in (0, 1):
        vp.wc16(vp.QSEL, q)
        vp.wc16(vp.QSIZE, QSZ)
        vp.wc16(vp.QMSIX, 0xffff)
        vp.wc64(vp.QDESC, base[q])
        vp.wc64(vp.QDRIVER, base[q] + 0x1000)
        vp.wc64(vp.QDEVICE, base[q] + 0x2000)
        vp.wc16(vp.QENABLE, 1)
    vp.set_status(1 | 2 | 4 | 8)
    # The QEMU root has no iproute2: the host configures this namespace (see README.md), then says go.
    print("configure", os.getpid(), flush=True)
    while not os.path.exists("go"):
        time.sleep(0.05)
    aidx = {0: 0, 1: 0}
    seen = {0: 0, 1: 0}
    bufs = MEM + 0x100000

    def publish(q, head):
        b = base[q]
        qt.writew(b + 0x1000 + 4 + 2 * (aidx[q] % QSZ), head)
        aidx[q] += 1
        qt.writew(b + 0x1000 + 2, aidx[q] & 0xffff)

    def used(q):
        b = base[q]
        out = []
        while qt.readw(b + 0x2000 + 2) != seen[q] & 0xffff:
            e = seen[q] % QSZ
            out.append(struct.unpack("<II", qt.read(b + 0x2000 + 4 + 8 * e, 8)))
            seen[q] += 1
        return out

    mrg = bool(FEATURES & B(15))
    rxlen = 4096 if mrg else BUF
    for i in range(8):
        qt.write(base[0] + 16 * i, struct.pack("<QIHH", bufs + i * BUF, rxlen, 2, 0))
        publish(0, i)
    vp.kick(0)

    # rx: a UDP GSO write into the tunnel.
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_UDP, 103, 1400)
    payload = bytes((i * 7 + (i >> 8)) & 0xff for i in range(5000))
    s.sendto(payload, ("10.99.0.2", 9000))
    rx = []
    deadline = time.time() + 3
    while time.time() < deadline:
        for ident, length in used(0):
            data = qt.read(bufs + ident * BUF, length)
            frame = data[24:]
            if len(frame) > 42 and frame[12:14] == b"\x08\x00" and frame[23] == 17 and frame[36:38] == b"\x12\xb5":
                rx.append(dict(used_len=length, header=data[:24].hex(), decoded=decode(data[:24]),
                               frame_len=len(frame), inner_payload_ok=mrg or frame[92:] == payload))
            publish(0, ident)
            vp.kick(0)
        if rx:
            break
        time.sleep(0.01)
    print("rx", rx, flush=True)

    # tx: VXLAN USO super-frames from the guest.
    r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    r.bind(("10.99.0.1", 9001))
    r.setblocking(False)
    tx = []
    txbuf = MEM + 0x80000
    data = bytes((i * 11 + 3) & 0xff for i in range(3000))
    for n, outer_csum in enumerate((False, True)):
        buf = header(outer_csum) + vxlan_uso(data, outer_csum)
        qt.write(txbuf, buf)
        qt.write(base[1] + 16 * n, struct.pack("<QIHH", txbuf, len(buf), 0, 0))
        publish(1, n)
        vp.kick(1)
        got = []
        deadline = time.time() + 2
        while time.time() < deadline:
            try:
                d = r.recv(65535)
                got.append(d)
            except BlockingIOError:
                used(1)
                time.sleep(0.01)
        tx.append(dict(outer_csum=outer_csum, datagrams=[len(d) for d in got],
                       payload_ok=b"".join(got) == data))
        print("tx", tx[-1], flush=True)
    json.dump(dict(qemu="11.1", mrg_rxbuf=mrg, offered="0x%032x" % offered, features="0x%032x" % FEATURES, rx=rx, tx=tx),
              open(sys.argv[1], "w"), indent=1)
    qt.close()


if __name__ == "__main__":
    main()
