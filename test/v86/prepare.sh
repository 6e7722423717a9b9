#!/bin/sh
# Prepares the v86 test kit in a cache that later runs reuse (idempotent; run as root):
#   $VNT_V86_KIT/vmlinuz     Debian's i386 kernel (linux-image-686 -> linux-image-6.1.0-*-686 on bookworm)
#   $VNT_V86_KIT/mods/*.ko   its virtio / virtio_pci / virtio_net modules (and their dependencies)
#   $VNT_V86_KIT/busybox     busybox-static, i386
#   $VNT_V86_KIT/bios.bin    Debian's SeaBIOS (/usr/share/seabios/bios.bin of the seabios package)
#   $VNT_V86_KIT/host/busybox  busybox-static of the host's architecture (the host side pings the guest)
# Default: /var/cache/virtio-net-ts/v86-kit. The packages come from the host's own Debian mirror through
# apt-get with a private i386 package list (the host's dpkg architectures and lists are left alone);
# they are unpacked, never installed. ~15 s once, ~0 s when warm.
set -e
K=${VNT_V86_KIT:-/var/cache/virtio-net-ts/v86-kit}
MODS="net/core/failover drivers/net/net_failover drivers/net/virtio_net drivers/virtio/virtio
  drivers/virtio/virtio_ring drivers/virtio/virtio_pci drivers/virtio/virtio_pci_legacy_dev
  drivers/virtio/virtio_pci_modern_dev"

complete() {
  [ -f "$K/vmlinuz" ] && [ -f "$K/bios.bin" ] && [ -f "$K/busybox" ] && [ -f "$K/mods/virtio_net.ko" ] &&
    [ -f "$K/mods/virtio_pci.ko" ] && [ -f "$K/host/busybox" ]
}
if ! complete; then
  [ "$(id -u)" = 0 ] || { echo "v86 prepare.sh: needs root (apt-get)" >&2; exit 1; }
  mkdir -p "$K"
  T=$K/tmp; rm -rf "$T"; mkdir -p "$T/lists/partial" "$T/cache/archives/partial" "$T/dl"; : > "$T/status"
  # The download runs as root into a root-owned directory (apt's _apt sandbox cannot write there).
  H=$(dpkg --print-architecture)
  A="-o Dir::State::Lists=$T/lists -o Dir::Cache=$T/cache -o Dir::State::status=$T/status
    -o APT::Architecture=i386 -o APT::Architectures::=i386 -o APT::Architectures::=$H -o APT::Sandbox::User=root"
  # A mirror mid-sync fails one index now and then ("File has unexpected size"): retry, then go on with
  # the lists that did arrive (a missing package fails below, by name).
  n=0
  # shellcheck disable=SC2086
  until apt-get $A -qq update; do
    n=$((n + 1))
    [ "$n" -lt 3 ] || { echo "v86 prepare.sh: apt-get update failed $n times; using the lists it got" >&2; break; }
    sleep 15
  done
  # shellcheck disable=SC2086
  kpkg=$(apt-cache $A depends linux-image-686 | sed -n 's/.*Depends: \(linux-image-[0-9].*-686\)$/\1/p' | head -1)
  [ -n "$kpkg" ] || { echo "v86 prepare.sh: no linux-image-686 in the host's Debian sources" >&2; exit 1; }
  # shellcheck disable=SC2086
  (cd "$T/dl" && apt-get $A -qq download "$kpkg" busybox-static seabios >/dev/null)
  # shellcheck disable=SC2086
  (mkdir -p "$T/host" && cd "$T/host" && apt-get $A -qq download "busybox-static:$H" >/dev/null &&
    dpkg -x ./*.deb . && mkdir -p "$K/host" && cp bin/busybox "$K/host/busybox")
  for d in "$T"/dl/*.deb; do dpkg -x "$d" "$T/root"; done
  V=$(ls "$T/root/lib/modules")
  mkdir -p "$K/mods"
  for m in $MODS; do cp "$T/root/lib/modules/$V/kernel/$m.ko" "$K/mods/"; done
  cp "$T/root/bin/busybox" "$K/busybox"
  cp "$T/root/usr/share/seabios/bios.bin" "$K/bios.bin"
  echo "$V" > "$K/kernel-version"
  cp "$T/root/boot/vmlinuz-$V" "$K/vmlinuz.tmp" && mv "$K/vmlinuz.tmp" "$K/vmlinuz"
  rm -rf "$T"
fi
echo "v86-kit: kernel $(cat "$K/kernel-version"), $(ls "$K/mods" | wc -l) modules, busybox, SeaBIOS in $K"
