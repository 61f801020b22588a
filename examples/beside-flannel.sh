#!/usr/bin/env bash
# A podnet node (namespace pnex-n1, pod pnex-a1 at 10.0.1.10) beside a kernel node set up
# as flannel's vxlan backend and the CNI bridge plugin set one up (namespace pnex-n2:
# flannel.1 VXLAN id 1 dstport 8472 nolearning, cni0 bridge, a veth pod pnex-k1 at
# 10.0.2.10), joined by a veth underlay. Every offload stays at its default. Only
# namespaces named pnex-* are touched; nothing gets a route out.
#
#   sudo examples/beside-flannel.sh up   # then: sudo ip netns exec pnex-k1 ping 10.0.1.10
#   sudo examples/beside-flannel.sh down
set -euo pipefail
cd "$(dirname "$0")"
PODNET="${PODNET:-$(ls ../target/release/podnet 2>/dev/null || command -v podnet)}"

down() {
  if [ -f /run/podnet/pnex-node-a.pid ]; then
    kill "$(cat /run/podnet/pnex-node-a.pid)" 2>/dev/null || true
    rm -f /run/podnet/pnex-node-a.pid
  fi
  for ns in pnex-n1 pnex-n2 pnex-a1 pnex-k1; do ip netns del "$ns" 2>/dev/null || true; done
}

up() {
  down
  trap 'down' ERR
  for ns in pnex-n1 pnex-n2 pnex-a1 pnex-k1; do
    ip netns add "$ns"
    ip -n "$ns" link set lo up
  done
  ip link add ul1 netns pnex-n1 type veth peer name ul2 netns pnex-n2
  ip -n pnex-n1 addr add 172.16.0.1/24 dev ul1
  ip -n pnex-n1 link set ul1 up
  ip -n pnex-n2 addr add 172.16.0.2/24 dev ul2
  ip -n pnex-n2 link set ul2 up

  # The kernel node, as flanneld (vxlan backend) and the bridge CNI plugin configure it.
  k="ip -n pnex-n2"
  $k link add flannel.1 type vxlan id 1 local 172.16.0.2 dstport 8472 nolearning
  $k link set flannel.1 address 0e:00:00:00:02:00 mtu 1450 up
  $k addr add 10.0.2.0/32 dev flannel.1
  $k link add cni0 type bridge
  $k addr add 10.0.2.1/24 dev cni0
  $k link set cni0 up
  # Per remote node (here: podnet's node-a): a neighbour, an FDB entry and a route.
  $k neigh replace 10.0.1.0 lladdr 0e:00:00:00:01:00 dev flannel.1 nud permanent
  ip netns exec pnex-n2 bridge fdb append 0e:00:00:00:01:00 dev flannel.1 dst 172.16.0.1
  $k route add 10.0.1.0/24 via 10.0.1.0 dev flannel.1 onlink
  ip netns exec pnex-n2 sysctl -qw net.ipv4.ip_forward=1
  # Its pod.
  ip link add vk1 netns pnex-n2 type veth peer name eth0 netns pnex-k1
  $k link set vk1 master cni0 mtu 1450 up
  ip -n pnex-k1 addr add 10.0.2.10/24 dev eth0
  ip -n pnex-k1 link set eth0 mtu 1450 up
  ip -n pnex-k1 route add default via 10.0.2.1

  mkdir -p /run/podnet
  ip netns exec pnex-n1 "$PODNET" tap --config beside-flannel.yaml 2>/run/podnet/pnex-node-a.log &
  echo $! >/run/podnet/pnex-node-a.pid
  for _ in $(seq 50); do
    "$PODNET" ctl --socket /run/podnet/pnex-node-a.sock stats >/dev/null 2>&1 && break
    sleep 0.1
  done
  "$PODNET" ctl --socket /run/podnet/pnex-node-a.sock stats >/dev/null
  echo "up: try  ip netns exec pnex-k1 ping -c3 10.0.1.10"
}

case "${1:-up}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
