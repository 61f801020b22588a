#!/usr/bin/env bash
# Two podnet nodes on one host, each in its own network namespace, joined by a veth
# underlay (172.16.0.1 and .2), one pod each. Only namespaces named pnex-* are touched;
# nothing gets a route out.
#
#   sudo examples/two-nodes.sh up     # then: sudo ip netns exec pnex-a1 ping 10.0.2.10
#   sudo examples/two-nodes.sh down
#
# PODNET: the podnet binary (default: target/release/podnet, else podnet on PATH).
set -euo pipefail
cd "$(dirname "$0")"
PODNET="${PODNET:-$(ls ../target/release/podnet 2>/dev/null || command -v podnet)}"

down() {
  for n in node-a node-b; do
    if [ -f "/run/podnet/pnex-$n.pid" ]; then
      kill "$(cat "/run/podnet/pnex-$n.pid")" 2>/dev/null || true
      rm -f "/run/podnet/pnex-$n.pid"
    fi
  done
  for ns in pnex-n1 pnex-n2 pnex-a1 pnex-b1; do ip netns del "$ns" 2>/dev/null || true; done
}

up() {
  down
  trap 'down' ERR
  for ns in pnex-n1 pnex-n2 pnex-a1 pnex-b1; do
    ip netns add "$ns"
    ip -n "$ns" link set lo up
  done
  # The underlay: one veth between the two node namespaces.
  ip link add ul1 netns pnex-n1 type veth peer name ul2 netns pnex-n2
  ip -n pnex-n1 addr add 172.16.0.1/24 dev ul1
  ip -n pnex-n1 link set ul1 up
  ip -n pnex-n2 addr add 172.16.0.2/24 dev ul2
  ip -n pnex-n2 link set ul2 up
  mkdir -p /run/podnet
  # Each node creates its pod's TAP device and moves it into the pod namespace.
  ip netns exec pnex-n1 "$PODNET" tap --config two-nodes-a.yaml 2>/run/podnet/pnex-node-a.log &
  echo $! >/run/podnet/pnex-node-a.pid
  ip netns exec pnex-n2 "$PODNET" tap --config two-nodes-b.yaml 2>/run/podnet/pnex-node-b.log &
  echo $! >/run/podnet/pnex-node-b.pid
  for n in node-a node-b; do
    for _ in $(seq 50); do
      "$PODNET" ctl --socket "/run/podnet/pnex-$n.sock" stats >/dev/null 2>&1 && break
      sleep 0.1
    done
    "$PODNET" ctl --socket "/run/podnet/pnex-$n.sock" stats >/dev/null
  done
  echo "up: try  ip netns exec pnex-a1 ping -c3 10.0.2.10"
}

case "${1:-up}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
