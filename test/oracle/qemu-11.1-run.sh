#!/bin/sh
# Runs a command inside the QEMU 11.1 root (make-qemu-root.sh) in private mount and network
# namespaces: proc, /dev and this repo's test/oracle + the shared qtest client are mounted only
# there, so nothing leaks to (or has to be unmounted from) the host or other users of the root.
# usage: QEMU_ROOT=/var/cache/virtio-net-ts/qemu-root OUT=/abs/out/dir sh test/oracle/qemu-11.1-run.sh CMD...
# Inside: /tmp/lib = /work/shared/qemu-oracle, /tmp/probe = test/oracle, /tmp/out = $OUT (cwd).
set -e
R=${QEMU_ROOT:-/var/cache/virtio-net-ts/qemu-root}
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:?set OUT to an absolute output folder}
mkdir -p "$OUT"
exec unshare -m -n --propagation private sh -ec '
  R=$1 HERE=$2 OUT=$3; shift 3
  mount -t proc proc "$R/proc"; mount --bind /dev "$R/dev"
  mount -t tmpfs tmpfs "$R/tmp"; mkdir -p "$R/tmp/lib" "$R/tmp/probe" "$R/tmp/out"
  mount --bind /work/shared/qemu-oracle "$R/tmp/lib"; mount --bind "$HERE" "$R/tmp/probe"
  mount --bind "$OUT" "$R/tmp/out"
  exec chroot "$R" env ORACLE_LIB=/tmp/lib ORACLE_OUT=/tmp/out sh -c "cd /tmp/out && $*"
' sh "$R" "$HERE" "$OUT" "$*"
