#!/bin/sh
# Builds OUT/initrd.gz and OUT/vmlinuz for the test guest from the guest kit: busybox, the virtio modules
# (and vxlan's), ethtool and iproute2's `ip` as /usr/sbin/ip (when the kit has them) and init.sh as /init.
# Takes about a second.
# usage: mkinitrd.sh GUEST_KIT OUT
set -e
G=$1; O=$2; H=$(dirname "$(readlink -f "$0")")
[ -x "$G/bb/bin/busybox" ] && [ -f "$G/vmlinuz" ] || { echo "no guest kit in $G (run test/guest/prepare.sh)" >&2; exit 1; }
T=$O/initrd; rm -rf "$T"; mkdir -p "$T/bin" "$T/proc" "$T/sys" "$T/dev" "$T/tmp" "$T/mods" "$T/usr/sbin" "$T/lib64"
cp "$G/bb/bin/busybox" "$T/bin/"
for a in $("$G/bb/bin/busybox" --list); do [ "$a" = busybox ] || ln -sf busybox "$T/bin/$a"; done
# Debian 12 ships /lib/modules/*/*.ko; sid (Linux 7.2) ships /usr/lib/modules/*/*.ko.xz, decompressed here
# with busybox's xz so init.sh's insmod reads plain .ko on either kit.
K=$(ls -d "$G"/kpkg/lib/modules/*/kernel "$G"/kpkg/usr/lib/modules/*/kernel 2>/dev/null | head -1)
for m in net/core/failover drivers/net/net_failover drivers/net/virtio_net drivers/virtio/virtio drivers/virtio/virtio_ring \
  drivers/virtio/virtio_pci drivers/virtio/virtio_pci_legacy_dev drivers/virtio/virtio_pci_modern_dev drivers/net/macvlan \
  net/ipv4/udp_tunnel net/ipv6/ip6_udp_tunnel drivers/net/vxlan/vxlan; do
  n=${m##*/}
  if [ -f "$K/$m.ko" ]; then cp "$K/$m.ko" "$T/mods/"
  elif [ -f "$K/$m.ko.xz" ]; then "$G/bb/bin/busybox" xz -dc "$K/$m.ko.xz" > "$T/mods/$n.ko"; fi
done
E=$(find "$G/ethtool" -path '*bin/ethtool' -type f 2>/dev/null | head -1)
if [ -n "$E" ]; then
  cp "$E" "$T/usr/sbin/"
  mkdir -p "$T/lib/x86_64-linux-gnu"
  for l in libc.so.6 libmnl.so.0 libm.so.6; do
    f=$(find "$G/ethtool" -name "$l*" | head -1); [ -n "$f" ] && cp -L "$f" "$T/lib/x86_64-linux-gnu/$l"
  done
  cp -L "$(find "$G/ethtool" -name 'ld-linux-x86-64.so.2' | head -1)" "$T/lib64/"
fi
# iproute2 (7.2 kit) with its libraries; its glibc is newer than ethtool's and serves both.
I=$G/iproute2
if [ -x "$I/usr/sbin/ip" ]; then
  cp "$I/usr/sbin/ip" "$T/usr/sbin/ip"
  mkdir -p "$T/lib/x86_64-linux-gnu"
  for l in libc.so.6 libm.so.6 libmnl.so.0 libselinux.so.1 libpcre2-8.so.0 libbpf.so.1 libelf.so.1 libz.so.1 \
    libzstd.so.1 libcap.so.2; do
    cp -L "$I/usr/lib/x86_64-linux-gnu/$l" "$T/lib/x86_64-linux-gnu/$l"
  done
  cp -L "$I/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" "$T/lib64/"
fi
cp "$H/init.sh" "$T/init"; chmod +x "$T/init"
cp "$G/vmlinuz" "$O/vmlinuz"
(cd "$T" && find . | "$G/bb/bin/busybox" cpio -o -H newc 2>/dev/null | gzip -1 > "$O/initrd.gz")
rm -rf "$T"
