#!/bin/sh
# Prepares what the guest test needs, in a cache that later runs reuse (idempotent; run as root):
#   $VNT_GUEST_CACHE/qemu-root   Debian sid root with QEMU 11.x (-device vfio-user-pci), ~1.8 GB, ~2 min once
#   $VNT_GUEST_CACHE/guest-kit   Debian 12 cloud kernel + modules, busybox-static, ethtool + its libraries
#   $VNT_GUEST_CACHE/guest-kit-7.2  Debian sid's Linux 7.2 cloud kernel + modules (.ko.xz), same busybox and
#                                ethtool (copied from guest-kit), sid's iproute2 and the libraries its `ip`
#                                needs (for vxlan links), ~100 MB download once
# Default cache: /var/cache/virtio-net-ts. Everything comes from the host's own Debian mirror; the host's
# installed packages are left alone (only debootstrap is installed if missing). A warm cache takes ~1 s.
set -e
C=${VNT_GUEST_CACHE:-/var/cache/virtio-net-ts}
R=$C/qemu-root; K=$C/guest-kit
mkdir -p "$C"
[ "$(id -u)" = 0 ] || { echo "prepare.sh: needs root" >&2; exit 1; }

mirror() {
  m=$(sed -n 's/^URIs: *\([^ ]*\).*/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v security | head -1)
  [ -n "$m" ] || m=$(awk '$1=="deb" && $3 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null)
  echo "$m"
}
UPDATED=
apt_update() { [ -n "$UPDATED" ] || { apt-get update -qq; UPDATED=1; }; }

# --- QEMU root (Debian sid: QEMU 11.x). A half-built root is resumed by debootstrap / apt.
if [ ! -x "$R/usr/bin/qemu-system-x86_64" ]; then
  if [ ! -f "$R/etc/debian_version" ] || [ ! -x "$R/usr/bin/apt-get" ]; then
    command -v debootstrap >/dev/null || { apt_update; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
    debootstrap --variant=minbase sid "$R" "$(mirror)" >/dev/null
  fi
  # Private mount namespace: the mounts vanish with the command, whatever happens.
  unshare --mount --propagation private sh -c "
    mount -t proc proc '$R/proc' && mount --bind /dev '$R/dev' &&
    chroot '$R' sh -c 'apt-get -o Acquire::Check-Valid-Until=false update -qq &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-system-x86 >/dev/null && apt-get clean'"
fi
echo "qemu-root: $(chroot "$R" qemu-system-x86_64 --version | head -1)"

# --- Guest kit: stock Debian 12 cloud kernel, busybox-static, ethtool (downloaded, not installed).
if [ ! -f "$K/vmlinuz" ] || [ ! -x "$K/bb/bin/busybox" ]; then
  apt_update
  mkdir -p "$K"
  (cd "$K" && rm -f ./*.deb &&
    pkg=$(apt-cache depends linux-image-cloud-amd64 | sed -n 's/.*Depends: \(linux-image-[0-9].*-cloud-amd64\)$/\1/p' | head -1) &&
    apt-get download "$pkg" busybox-static >/dev/null 2>&1 &&
    rm -rf kpkg bb && dpkg -x linux-image-*.deb kpkg && dpkg -x busybox-static*.deb bb &&
    cp kpkg/boot/vmlinuz-* vmlinuz && rm -f ./*.deb)
fi
if [ -z "$(find "$K/ethtool" -path '*bin/ethtool' -type f 2>/dev/null)" ]; then
  apt_update
  rm -rf "$K/ethtool.tmp"; mkdir -p "$K/ethtool.tmp"
  (cd "$K/ethtool.tmp" && apt-get download ethtool libmnl0 libc6 >/dev/null 2>&1 &&
    for d in ./*.deb; do dpkg -x "$d" root; done && rm -f ./*.deb)
  rm -rf "$K/ethtool"; mv "$K/ethtool.tmp/root" "$K/ethtool"; rm -rf "$K/ethtool.tmp"
fi
echo "guest-kit: kernel $(ls "$K/kpkg/lib/modules"), $(find "$K/ethtool" -path '*bin/ethtool' -type f | head -1)"

# --- Linux 7.2 guest kit: Debian sid's cloud kernel (linux-binary-7.2.*-cloud-amd64) and its modules
# package, downloaded by the sid root's apt (private mount namespace, as above). busybox and ethtool are
# the 6.1 kit's: the guest's userland does not depend on the kernel.
K7=$C/guest-kit-7.2
if [ ! -f "$K7/vmlinuz" ] || [ -z "$(ls "$K7"/kpkg/usr/lib/modules 2>/dev/null)" ]; then
  rm -rf "$K7/dl"; mkdir -p "$K7/dl"
  # Runs inside the root (the download folder is bound at /mnt); a stale package list is refreshed once.
  cat > "$K7/dl/get.sh" <<'EOS'
pick() { apt-cache pkgnames "$1" | grep -- '-cloud-amd64$' | sort -V | tail -1; }
get() { b=$(pick linux-binary-7.2.) && m=$(pick linux-modules-7.2.) && [ -n "$b" ] &&
  cd /mnt && apt-get download "$b" $m >/dev/null 2>&1; }
get || { apt-get -o Acquire::Check-Valid-Until=false update -qq && get; }
EOS
  unshare --mount --propagation private sh -c "
    mount -t proc proc '$R/proc' && mount --bind /dev '$R/dev' && mount --bind '$K7/dl' '$R/mnt' &&
    chroot '$R' sh /mnt/get.sh"
  (cd "$K7" && rm -rf kpkg && for d in dl/*.deb; do dpkg -x "$d" kpkg; done &&
    cp kpkg/usr/lib/modules/*/vmlinuz vmlinuz && rm -rf dl)
fi
# iproute2 for the 7.2 guest (busybox's `ip` cannot create vxlan links): sid's package and the libraries
# its `ip` loads (readelf NEEDED of iproute2 7.x, and theirs), downloaded by the sid root's apt as above.
if [ ! -x "$K7/iproute2/usr/sbin/ip" ]; then
  rm -rf "$K7/ipdl"; mkdir -p "$K7/ipdl"
  cat > "$K7/ipdl/get.sh" <<'EOS'
get() { cd /mnt && apt-get download iproute2 libbpf1 libelf1t64 zlib1g libzstd1 libmnl0 libcap2 \
  libselinux1 libpcre2-8-0 libc6 >/dev/null 2>&1; }
get || { apt-get -o Acquire::Check-Valid-Until=false update -qq && get; }
EOS
  unshare --mount --propagation private sh -c "
    mount -t proc proc '$R/proc' && mount --bind /dev '$R/dev' && mount --bind '$K7/ipdl' '$R/mnt' &&
    chroot '$R' sh /mnt/get.sh"
  (cd "$K7/ipdl" && for d in ./*.deb; do dpkg -x "$d" root; done) &&
    rm -rf "$K7/iproute2" && mv "$K7/ipdl/root" "$K7/iproute2"
  rm -rf "$K7/ipdl"
fi
[ -d "$K7/bb" ] || cp -a "$K/bb" "$K7/bb"
[ -d "$K7/ethtool" ] || { [ -d "$K/ethtool" ] && cp -a "$K/ethtool" "$K7/ethtool"; }
echo "guest-kit-7.2: kernel $(ls "$K7/kpkg/usr/lib/modules"), iproute2 $(ls "$K7"/iproute2/usr/share/doc/iproute2/changelog.Debian.gz >/dev/null 2>&1 && zcat "$K7"/iproute2/usr/share/doc/iproute2/changelog.Debian.gz | sed -n '1s/.*(\(.*\)).*/\1/p')"
