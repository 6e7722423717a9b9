#!/bin/sh
# /init of the test guest (busybox). Runs the steps named on the kernel command line and prints one
# machine-readable line per fact: `RESULT key=value` (values never contain spaces). Ends with
# `RESULT done=1` and powers off. Parameters (kernel command line):
#   vnt.match=VVVV:DDDD   the PCI function under test (vendor:device, hex without 0x)
#   vnt.steps=a,b:arg,... steps, in order (see `step_*` below)
#   vnt.ip=ADDR/LEN vnt.peer=ADDR vnt.port=N vnt.bytes=N    network parameters
#   vnt.MODULE=PARAM=VALUE[:PARAM=VALUE]   parameters for the module's insmod (e.g. vnt.virtio_pci=force_legacy=1)
export PATH=/bin:/sbin:/usr/sbin:/usr/bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev; mount -t tmpfs tmp /tmp
dmesg -n 1
R() { echo "RESULT $*"; }
up() { cut -d' ' -f1 /proc/uptime; }
arg() { sed -n "s/.*\bvnt\.$1=\([^ ]*\).*/\1/p" /proc/cmdline; }
MATCH=$(arg match); STEPS=$(arg steps); IP=$(arg ip); PEER=$(arg peer); PORT=$(arg port); BYTES=$(arg bytes)
[ -n "$PORT" ] || PORT=5001; [ -n "$BYTES" ] || BYTES=4194304
IF=eth0
R "init=1 uptime=$(up) cpus=$(grep -c ^processor /proc/cpuinfo)"

D=
find_dev() {
  for d in /sys/bus/pci/devices/*; do
    v=$(cat $d/vendor); p=$(cat $d/device)
    [ "${v#0x}:${p#0x}" = "$MATCH" ] && { D=$d; return 0; }
  done
  return 1
}
# Reads a little-endian dword of config space at byte offset $1 (decimal or 0x).
cfg_rd() { dd if=$D/config bs=4 skip=$(($1 / 4)) count=1 2>/dev/null | od -An -tu4 | tr -d ' '; }
cfg_wr() {
  v=$2
  printf "$(printf '\\%03o\\%03o\\%03o\\%03o' $((v & 255)) $(((v >> 8) & 255)) $(((v >> 16) & 255)) $(((v >> 24) & 255)))" |
    dd of=$D/config bs=4 seek=$(($1 / 4)) count=1 conv=notrunc 2>/dev/null
}
hex() { printf '0x%08x' "$1"; }

# pci: the PCI scan sees the function; its ids, class and BAR resources.
step_pci() {
  n=0
  for d in /sys/bus/pci/devices/*; do n=$((n + 1)); done
  R "pci_functions=$n"
  if ! find_dev; then R "pci_found=0"; return 1; fi
  R "pci_found=1 pci_slot=$(basename $D) pci_vendor=$(cat $D/vendor) pci_device=$(cat $D/device) pci_class=$(cat $D/class)"
  R "pci_config_size=$(wc -c < $D/config) pci_irq=$(cat $D/irq)"
  # Whether the guest sees an SR-IOV capability (Linux accepts VIRTIO_F_SR_IOV only then).
  R "pci_sriov=$([ -e $D/sriov_totalvfs ] && echo 1 || echo 0)"
  i=0
  while read -r s e f; do
    [ "$s" != 0x0000000000000000 ] && R "pci_bar${i}_start=$s pci_bar${i}_size=$(printf 0x%x $((e - s + 1))) pci_bar${i}_flags=$f"
    i=$((i + 1)); [ $i -ge 6 ] && break
  done < $D/resource
}

# standin: the stand-in function's test registers in extended config space (see devices/serve/stand-in-device.ts):
# magic, a scratch round trip, and a guest-memory probe the server must find in its DMA_MAP mappings.
step_standin() {
  R "standin_magic=$(hex $(cfg_rd 0x108))"
  cfg_wr 0x114 0x5a5aa5a5; R "standin_scratch=$(hex $(cfg_rd 0x114))"
  U=$(cat /proc/sys/kernel/random/uuid)
  echo "VNT-DMA-PROBE:$U" > /tmp/probe; sync
  R "standin_probe=$U"
  cfg_wr 0x10c 1; R "standin_probe_hits=$(cfg_rd 0x110)"
  B0=$(sed -n 1p $D/resource | cut -d' ' -f1)
  echo 1 > $D/enable 2>/dev/null
  R "standin_bar0_magic=$(devmem $B0 32)"
}

# virtio: load the stock virtio stack and report what virtio_net made of the function.
step_virtio() {
  for m in failover net_failover virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_net; do
    # vnt.MODULE=p1=v1:p2=v2 passes module parameters (insmod reads none from the command line).
    [ -f /mods/$m.ko ] && { insmod /mods/$m.ko $(arg $m | tr ':' ' ') 2>/dev/null || R "insmod_failed=$m"; }
  done
  for i in $(seq 50); do [ -e /sys/class/net/$IF ] && break; sleep 0.1; done
  R "virtio_driver=$(basename "$(readlink $D/driver)" 2>/dev/null)"
  [ -e /sys/class/net/$IF ] || { R "netdev=none"; return 1; }
  R "netdev=$IF mac=$(cat /sys/class/net/$IF/address) mtu=$(cat /sys/class/net/$IF/mtu)"
  V=$(ls -d $D/virtio* 2>/dev/null | head -1)
  [ -n "$V" ] && R "virtio_features=$(cat $V/features) virtio_status=$(cat $V/status 2>/dev/null)"
}

# up: address and link up; carrier and operstate.
step_up() {
  ip link set $IF up
  [ -n "$IP" ] && ip addr add $IP dev $IF
  for i in $(seq 30); do [ "$(cat /sys/class/net/$IF/operstate 2>/dev/null)" = up ] && break; sleep 0.1; done
  R "carrier=$(cat /sys/class/net/$IF/carrier 2>/dev/null) operstate=$(cat /sys/class/net/$IF/operstate)"
}

# ping:N  N pings to the peer.
step_ping() {
  out=$(ping -c ${1:-3} -W 2 $PEER 2>&1); rc=$?
  R "ping_rc=$rc ping_received=$(echo "$out" | sed -n 's/.* \([0-9]*\) packets received.*/\1/p')"
}

# tcptx[:P]: sends BYTES random bytes to PEER:P (default PORT); the host compares the checksum.
step_tcptx() {
  dd if=/dev/urandom of=/tmp/tx bs=65536 count=$((BYTES / 65536)) 2>/dev/null
  R "tcp_tx_bytes=$(wc -c < /tmp/tx) tcp_tx_sha256=$(sha256sum /tmp/tx | cut -d' ' -f1)"
  nc -w 10 $PEER ${1:-$PORT} < /tmp/tx; R "tcp_tx_rc=$?"
  rm -f /tmp/tx
}

# tcprx[:P]: listens on P (default PORT), announces it, announces the host's close (the end of a timed
# transfer), and checksums what the host sent.
step_tcprx() {
  nc -l -p ${1:-$PORT} > /tmp/rx &
  p=$!; sleep 0.2
  R "tcp_rx_listening=${1:-$PORT}"
  wait $p
  R "tcp_rx_closed=${1:-$PORT}"
  R "tcp_rx_bytes=$(wc -c < /tmp/rx) tcp_rx_sha256=$(sha256sum /tmp/rx | cut -d' ' -f1)"
  rm -f /tmp/rx
}

# nic:MAC:ADDR/LEN:PEER  the netdev with MAC (hex, no colons) becomes $IF: up, with ADDR; PEER its host.
step_nic() {
  m=$(echo $1 | cut -d: -f1 | sed 's/../&:/g; s/:$//'); IP=$(echo $1 | cut -d: -f2); PEER=$(echo $1 | cut -d: -f3)
  for i in $(seq 50); do IF=$(ifbymac $m) && break; sleep 0.1; done
  [ -n "$IF" ] || { R "nic=none"; return 1; }
  step_up
  R "nic=$IF nic_mac=$m"
}
# peer:ADDR  later steps talk to ADDR.
step_peer() { PEER=$1; }
# ethtool: driver facts, channels, RSS key and table.
step_ethtool() {
  command -v ethtool >/dev/null || { R "ethtool=missing"; return 1; }
  R "ethtool_driver=$(ethtool -i $IF | sed -n 's/^driver: //p')"
  R "channels_max=$(ethtool -l $IF | sed -n '/maximums/,/Current/s/^Combined:[[:space:]]*//p' | head -1) channels=$(ethtool -l $IF | sed -n '/Current/,$s/^Combined:[[:space:]]*//p' | head -1)"
  x=$(ethtool -x $IF 2>&1); R "rss_x_rc=$?"
  R "rss_hkey=$(echo "$x" | sed -n '/RSS hash key/{n;p}' | tr -d ' :')"
  R "rss_indir=$(echo "$x" | sed -n '/RSS hash key/q; s/^ *[0-9]*: *//p' | tr -s ' \n' ',' | sed 's/,$//')"
}
# channels:N  ethtool -L combined N
step_channels() { ethtool -L $IF combined $1; R "ethtool_L_rc=$? channels=$(ethtool -l $IF | sed -n '/Current/,$s/^Combined:[[:space:]]*//p' | head -1)"; }
# rssweight:W0.W1.W2...  ethtool -X weight
step_rssweight() { ethtool -X $IF weight $(echo $1 | tr '.' ' '); R "ethtool_X_weight_rc=$?"; }
# rsskey:HEX  ethtool -X hkey (hex without separators)
step_rsskey() { ethtool -X $IF hkey $(echo $1 | sed 's/../&:/g; s/:$//'); R "ethtool_X_hkey_rc=$?"; }
# irqs: per-vector interrupt counts of the device (summed over CPUs).
step_irqs() {
  grep -E 'virtio[0-9]+-' /proc/interrupts | while read -r n rest; do
    name=$(echo "$rest" | awk '{print $NF}'); sum=0
    for c in $(echo "$rest" | awk '{for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+$/) print $i; else exit}'); do sum=$((sum + c)); done
    R "irq_${name}=$sum"
  done
}
# stats: virtio_net's counters (ethtool -S: Linux 6.1 names its per-queue ones rx_queue_0_packets, Linux 7.2
# rx0_kicks and, with VIRTIO_NET_F_DEVICE_STATS, the device's rx0_hw_packets), as stat_<name>=value; and
# the interface's totals as stat_if_rx_packets / stat_if_tx_packets.
step_stats() {
  ethtool -S $IF 2>/dev/null | sed -n 's/^ *\([a-z0-9_]*\): \([0-9]*\)$/RESULT stat_\1=\2/p'
  R "stat_if_rx_packets=$(cat /sys/class/net/$IF/statistics/rx_packets) stat_if_tx_packets=$(cat /sys/class/net/$IF/statistics/tx_packets)"
}
# coal:ARGS  ethtool -C with ARGS ('.' for spaces: rx-usecs.20000.rx-frames.64); the values read back.
step_coal() {
  ethtool -C $IF $(echo $1 | tr '.' ' '); R "ethtool_C_rc=$?"
  c=$(ethtool -c $IF 2>&1)
  R "coal_rx_usecs=$(echo "$c" | sed -n 's/^rx-usecs:[[:space:]]*//p') coal_rx_frames=$(echo "$c" | sed -n 's/^rx-frames:[[:space:]]*//p')"
}
# pqcoal:MASK:ARGS  ethtool --per-queue QUEUE_MASK --coalesce ARGS; the queues' rx-usecs/rx-frames read back.
step_pqcoal() {
  m=${1%%:*}; ethtool --per-queue $IF queue_mask $m --coalesce $(echo ${1#*:} | tr '.' ' '); R "ethtool_pqC_rc=$?"
  c=$(ethtool --per-queue $IF queue_mask 0xf --show-coalesce 2>&1)
  R "pqcoal_rx_usecs=$(echo "$c" | sed -n 's/^rx-usecs:[[:space:]]*//p' | tr '\n' '.' | sed 's/\.$//') pqcoal_rx_frames=$(echo "$c" | sed -n 's/^rx-frames:[[:space:]]*//p' | tr '\n' '.' | sed 's/\.$//')"
}
# carrier: announces, then waits for the host to take the link down and up again.
step_carrier() {
  R "carrier_wait=down"
  for i in $(seq 200); do [ "$(cat /sys/class/net/$IF/carrier)" = 0 ] && break; sleep 0.1; done
  R "carrier_seen_down=$((1 - $(cat /sys/class/net/$IF/carrier)))"
  R "carrier_wait=up"
  for i in $(seq 200); do [ "$(cat /sys/class/net/$IF/carrier)" = 1 ] && break; sleep 0.1; done
  R "carrier_seen_up=$(cat /sys/class/net/$IF/carrier)"
}
# snmp PROTO FIELD: a counter of /proc/net/snmp (e.g. Icmp InEchos).
snmp() { awk -v p="$1:" -v f="$2" '$1 == p { if (!h) { for (i = 2; i <= NF; i++) if ($i == f) c = i; h = 1 } else print $c }' /proc/net/snmp; }
# waitcount PROTO FIELD BASE N: waits (up to 15 s) until the counter is BASE + N; prints the increase.
waitcount() {
  for i in $(seq 150); do [ $(($(snmp $1 $2) - $3)) -ge $4 ] && break; sleep 0.1; done
  echo $(($(snmp $1 $2) - $3))
}
# hostping:N  asks the host to ping us N times (host_ping_go) and counts the echo requests answered.
step_hostping() { b=$(snmp Icmp InEchos); R "host_ping_go=$1"; R "host_ping_in=$(waitcount Icmp InEchos $b $1)"; }
# udp:N[.BURST.MS]  asks the host for N UDP datagrams from many source ports (udp_go), BURST of them every
# MS milliseconds (default 8 every 2), and counts their arrival (no listener: each one is a NoPorts).
step_udp() { b=$(snmp Udp NoPorts); R "udp_go=$1"; R "udp_in=$(waitcount Udp NoPorts $b ${1%%.*})"; }
# tcpsyn:N  N connection attempts to PEER port 9 (closed: a SYN out, a RST back) from distinct source
# ports on each CPU in turn, so XPS and the flow hash spread the guest's transmits over its tx queues.
step_tcpsyn() {
  for c in $(seq 0 $(($(grep -c ^processor /proc/cpuinfo) - 1))); do
    for i in $(seq $1); do taskset -c $c nc -w 1 -p $((40000 + c * 100 + i)) $PEER 9 </dev/null >/dev/null 2>&1; done
  done
  R "tcpsyn_done=$1"
}
# --- SR-IOV container-in-VM steps (test/guest/sriov.test.ts): two VF netdevs, found by MAC (vnt.vf0mac,
# vnt.vf1mac), each moved into a network namespace of its own (namespace A: 10.88.0.1, B: 10.88.0.2; the
# host's tap behind the uplink: vnt.peer). The guest has no bridge: A <-> B goes through the device's switch.
ifbymac() { for n in /sys/class/net/*; do [ "$(cat $n/address)" = "$1" ] && { basename $n; return 0; }; done; return 1; }
ina() { nsenter -t $NSA -n "$@"; }
inb() { nsenter -t $NSB -n "$@"; }
# LOWER_UP in the flags is netif_carrier_ok (a moved netdev's sysfs is not visible from here).
carrier_of() { inb ip link show dev $1 | grep -q LOWER_UP && echo 1 || echo 0; }
# vfns: both namespaces, each owning one VF netdev, up with its address.
step_vfns() {
  IFA=$(ifbymac $(arg vf0mac)); IFB=$(ifbymac $(arg vf1mac))
  R "vf_ifa=$IFA vf_ifb=$IFB"
  [ -n "$IFA" ] && [ -n "$IFB" ] || return 1
  unshare -n sleep 100000 & NSA=$!
  unshare -n sleep 100000 & NSB=$!
  sleep 0.2
  ip link set dev $IFA netns $NSA && ip link set dev $IFB netns $NSB || return 1
  ina ip link set lo up; ina ip link set $IFA up; ina ip addr add 10.88.0.1/24 dev $IFA
  inb ip link set lo up; inb ip link set $IFB up; inb ip addr add 10.88.0.2/24 dev $IFB
  for i in $(seq 30); do [ "$(carrier_of $IFB)" = 1 ] && break; sleep 0.1; done
  R "vfns_root_has_ifa=$([ -e /sys/class/net/$IFA ] && echo 1 || echo 0) vf_b_carrier=$(carrier_of $IFB)"
}
# vfping:N  A pings B.
step_vfping() {
  out=$(ina ping -c ${1:-3} -W 2 10.88.0.2 2>&1); rc=$?
  R "vfping_rc=$rc vfping_received=$(echo "$out" | sed -n 's/.* \([0-9]*\) packets received.*/\1/p')"
}
# vftcp: BYTES random bytes from A to B over TCP; both sides' SHA-256.
step_vftcp() {
  # The receiver's stdin must not end: busybox nc half-closes on stdin EOF, and the sender quits on that.
  mkfifo /tmp/vfhold; sleep 100000 > /tmp/vfhold & h=$!
  inb sh -c "nc -l -p 5003 < /tmp/vfhold > /tmp/vfrx" & p=$!
  sleep 0.3
  dd if=/dev/urandom of=/tmp/vftx bs=65536 count=$((BYTES / 65536)) 2>/dev/null
  ina nc -w 10 10.88.0.2 5003 < /tmp/vftx; R "vftcp_tx_rc=$?"
  wait $p
  R "vftcp_tx_sha256=$(sha256sum /tmp/vftx | cut -d' ' -f1) vftcp_rx_bytes=$(wc -c < /tmp/vfrx) vftcp_rx_sha256=$(sha256sum /tmp/vfrx | cut -d' ' -f1)"
  kill $h; rm -f /tmp/vftx /tmp/vfrx /tmp/vfhold
}
# vfuplink:N  A pings the host's tap (PEER) through the switch's uplink.
step_vfuplink() {
  out=$(ina ping -c ${1:-3} -W 2 $PEER 2>&1); rc=$?
  R "vfuplink_rc=$rc vfuplink_received=$(echo "$out" | sed -n 's/.* \([0-9]*\) packets received.*/\1/p')"
}
# vfspoof: A (untrusted) asks for another MAC (refused: MAC_ADDR_SET answered VIRTIO_NET_ERR), then sends
# frames with a forged source MAC through a macvlan on its VF (ARP requests for 10.89.0.2).
step_vfspoof() {
  ina ip link set dev $IFA address 02:11:22:33:44:55 2>/dev/null; rc=$?
  R "vfmac_set_rc=$rc vfmac_after=$(ina ip link show dev $IFA | sed -n 's/.*link\/ether \([0-9a-f:]*\).*/\1/p')"
  insmod /mods/macvlan.ko 2>/dev/null
  ina ip link add link $IFA name mv0 type macvlan || { R "macvlan=failed"; return 1; }
  ina ip link set dev mv0 address 02:11:22:33:44:66; ina ip link set mv0 up; ina ip addr add 10.89.0.1/24 dev mv0
  R "mark=spoof_start"
  out=$(ina ping -c ${1:-4} -W 1 10.89.0.2 2>&1)
  R "vfspoof_received=$(echo "$out" | sed -n 's/.* \([0-9]*\) packets received.*/\1/p')"
  ina ip link del mv0
}
# vfcarrier: B's carrier while the host sets its VF's link state to disable, then back to auto.
step_vfcarrier() {
  R "vfcarrier_wait=down"
  for i in $(seq 100); do [ "$(carrier_of $IFB)" = 0 ] && break; sleep 0.1; done
  R "vfcarrier_seen_down=$((1 - $(carrier_of $IFB))) vfcarrier_flags=$(inb ip link show dev $IFB | sed -n 's/.*<\([^>]*\)>.*/\1/p')"
  R "vfcarrier_wait=up"
  for i in $(seq 100); do [ "$(carrier_of $IFB)" = 1 ] && break; sleep 0.1; done
  R "vfcarrier_seen_up=$(carrier_of $IFB)"
  kill $NSA $NSB 2>/dev/null
}
# vxlan:VNI:ADDR/LEN:TPEER[:csum]  a VXLAN link vxVNI to PEER over $IF (iproute2's /usr/sbin/ip: busybox's
# cannot create one) with address ADDR, outer UDP checksums with `csum`; later steps talk to TPEER through
# it. Reports the tunnel offloads of $IF and the link.
step_vxlan() {
  for m in udp_tunnel ip6_udp_tunnel vxlan; do [ -f /mods/$m.ko ] && insmod /mods/$m.ko 2>/dev/null; done
  [ -x /usr/sbin/ip ] || { R "vxlan=no_iproute2"; return 1; }
  vni=$(echo $1 | cut -d: -f1); addr=$(echo $1 | cut -d: -f2); tpeer=$(echo $1 | cut -d: -f3)
  c=noudpcsum; [ "$(echo $1 | cut -d: -f4)" = csum ] && c=udpcsum
  /usr/sbin/ip link add vx$vni type vxlan id $vni remote $PEER local ${IP%/*} dstport 4789 dev $IF $c ||
    { R "vxlan=add_failed"; return 1; }
  /usr/sbin/ip link set vx$vni up && /usr/sbin/ip addr add $addr dev vx$vni || { R "vxlan=addr_failed"; return 1; }
  PEER=$tpeer
  R "vxlan=up vxlan_vni=$vni vxlan_$c=1 vxlan_mtu=$(cat /sys/class/net/vx$vni/mtu) vxlan_local=${addr%/*} vxlan_peer=$PEER"
  ethtool -k $IF 2>/dev/null | sed -n "s/^\([a-z-]*udp_tnl[a-z-]*\): \([a-z]*\).*/RESULT offload_${IF}_\1=\2/p" | tr '-' '_'
}
# mark:NAME  a point where the host snapshots its side (device counters) to compare with the guest's.
step_mark() { R "mark=$1"; }
# sleep:S
step_sleep() { sleep $1; }

for s in $(echo "$STEPS" | tr ',' ' '); do
  name=${s%%:*}; a=; [ "$name" != "$s" ] && a=${s#*:}
  if type step_$name >/dev/null 2>&1; then
    [ -n "$D" ] || [ "$name" = pci ] || find_dev
    step_$name $a || R "step_failed=$name"
  else
    R "step_unknown=$name"
  fi
done
R "done=1 uptime=$(up)"
poweroff -f
