#!/bin/sh
# Host side of tunnel_gso.py: configures the network namespace of process $1 (the probe) with the host's
# iproute2: tap0 10.77.0.1/24 with the guest 10.77.0.2 as a permanent neighbour, vxlan vx0 (VNI 42, port
# 4789) to it with 10.99.0.1/24, the guest's inner address 10.99.0.2 as a permanent neighbour.
set -e
N="nsenter -t $1 -n"
$N ip link set tap0 address 02:00:00:00:00:01 up
$N ip addr add 10.77.0.1/24 dev tap0
$N ip neigh replace 10.77.0.2 lladdr 52:54:00:12:34:56 dev tap0 nud permanent
$N ip link add vx0 type vxlan id 42 remote 10.77.0.2 local 10.77.0.1 dstport 4789 dev tap0
$N ip link set vx0 address 06:00:00:00:00:01 up
$N ip addr add 10.99.0.1/24 dev vx0
$N ip neigh replace 10.99.0.2 lladdr 06:00:00:00:00:02 dev vx0 nud permanent
