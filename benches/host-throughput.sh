#!/usr/bin/env bash
# TAP mode throughput against the kernel and Open vSwitch, side by side in one run:
# iperf3 TCP (Gbit/s) and UDP 64-byte packets per second between two pods on one node,
# and across two nodes, for
#   - podnet (`podnet tap`, one node per namespace),
#   - the Linux bridge (veth pods on a bridge device),
#   - Open vSwitch's userspace datapath (datapath_type=netdev, type=tap ports moved into
#     the pod namespaces; its own ovsdb-server and ovs-vswitchd with OVS_RUNDIR,
#     OVS_DBDIR and OVS_LOGDIR in a temp dir, inside a namespace of their own),
#   - the kernel's VXLAN device set up as flannel sets it up (flannel.1, cni0, veth pods),
#     also against a podnet node in both directions.
# Prints one table with the ratio podnet / each.
#
#   sudo benches/host-throughput.sh            # PODNET=path/to/podnet, SECONDS_PER_RUN=4
#
# Network safety: everything runs in network namespaces named pnb<pid>-*, created here
# and deleted on exit and on failure (trap); addresses are assigned inside them and no
# namespace has a route out. Every iperf3 and podnet run is bounded by `timeout`.
# Needs: root, iproute2, iperf3, python3; openvswitch-switch for the OVS rows (skipped
# with a note without it).
set -euo pipefail
cd "$(dirname "$0")/.."

T="${SECONDS_PER_RUN:-4}"
PODNET="${PODNET:-target/release/podnet}"
P="pnb$$-"
TMP="$(mktemp -d /tmp/podnet-bench.XXXXXX)"
PIDS=()

for tool in ip iperf3 python3 timeout; do
  command -v "$tool" >/dev/null || { echo "needs $tool" >&2; exit 2; }
done
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces, TAP devices)" >&2; exit 2; }
[ -x "$PODNET" ] || { echo "no podnet binary at $PODNET (cargo build --release, or PODNET=...)" >&2; exit 2; }

cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  PIDS=()
  for ns in $(ip netns list | awk '{print $1}' | grep "^$P" || true); do
    ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
  done
}
trap 'cleanup; rm -rf "$TMP"' EXIT
trap 'exit 130' INT TERM

ns() { ip netns add "$P$1"; ip -n "$P$1" link set lo up; }
inns() { local n="$1"; shift; ip netns exec "$P$n" "$@"; }

# A veth pod: namespace $1 gets eth0 with $2/$3 (gateway $4, MTU $5); the host end $7
# goes into namespace $6.
veth_pod() {
  ns "$1"
  ip link add "$7" netns "$P$6" type veth peer name eth0 netns "$P$1"
  ip -n "$P$1" addr add "$2/$3" dev eth0
  ip -n "$P$1" link set eth0 mtu "$5" up
  ip -n "$P$1" route add default via "$4"
  ip -n "$P$6" link set "$7" mtu "$5" up
}

# iperf3 from namespace $1 to $2 (server namespace $3); mode tcp or udp64. Prints Gbit/s
# or packets per second received.
measure() {
  local client="$1" dst="$2" server="$3" mode="$4" out
  timeout $((T + 15)) ip netns exec "$P$server" iperf3 -s -1 -p 5201 >/dev/null 2>&1 &
  local spid=$!
  for _ in $(seq 50); do
    inns "$server" ss -ltn 2>/dev/null | grep -q ':5201 ' && break
    sleep 0.1
  done
  if [ "$mode" = tcp ]; then
    out=$(timeout $((T + 10)) ip netns exec "$P$client" iperf3 -c "$dst" -p 5201 -t "$T" -J 2>/dev/null || true)
  else
    out=$(timeout $((T + 10)) ip netns exec "$P$client" iperf3 -c "$dst" -p 5201 -t "$T" -u -l 64 -b 0 -J 2>/dev/null || true)
  fi
  wait "$spid" 2>/dev/null || true
  python3 -c '
import json, sys
mode = sys.argv[1]
try:
    end = json.loads(sys.stdin.read())["end"]
except Exception:
    print("-"); sys.exit()
if mode == "tcp":
    print("%.2f" % (end["sum_received"]["bits_per_second"] / 1e9))
else:
    s = end["sum"]
    print("%.0f" % ((s["packets"] - s["lost_packets"]) / s["seconds"]))
' "$mode" <<<"$out"
}

declare -A R
record() { R["$1"]="$2"; printf '  %-34s %s\n' "$1" "$2" >&2; }

both() { # name client dst server
  record "$1 tcp" "$(measure "$2" "$3" "$4" tcp)"
  record "$1 udp64" "$(measure "$2" "$3" "$4" udp64)"
}

# --- the Linux bridge, one node ----------------------------------------------------
bridge_same_node() {
  ns br
  ip -n "${P}br" link add br0 type bridge
  ip -n "${P}br" addr add 10.9.1.1/24 dev br0
  ip -n "${P}br" link set br0 up
  veth_pod b1 10.9.1.10 24 10.9.1.1 1500 br vb1
  veth_pod b2 10.9.1.11 24 10.9.1.1 1500 br vb2
  ip -n "${P}br" link set vb1 master br0
  ip -n "${P}br" link set vb2 master br0
  both "bridge same-node" b1 10.9.1.11 b2
  cleanup
}

# --- Open vSwitch userspace datapath, one node -------------------------------------
ovs_same_node() {
  if ! command -v ovs-vswitchd >/dev/null || ! command -v ovsdb-server >/dev/null; then
    echo "  (no openvswitch-switch: OVS rows skipped)" >&2
    return
  fi
  local d="$TMP/ovs"
  mkdir -p "$d"
  export OVS_RUNDIR="$d" OVS_DBDIR="$d" OVS_LOGDIR="$d" OVS_PKGDATADIR=/usr/share/openvswitch
  ns ovs
  ovsdb-tool create "$d/conf.db" /usr/share/openvswitch/vswitch.ovsschema
  inns ovs ovsdb-server "$d/conf.db" --remote="punix:$d/db.sock" --pidfile="$d/ovsdb-server.pid" \
    --log-file="$d/ovsdb-server.log" --unixctl="$d/ovsdb-server.ctl" 2>/dev/null &
  PIDS+=($!)
  for _ in $(seq 50); do [ -S "$d/db.sock" ] && break; sleep 0.1; done
  local vsctl=(ovs-vsctl --db="unix:$d/db.sock" --timeout=10)
  "${vsctl[@]}" --no-wait init
  inns ovs ovs-vswitchd "unix:$d/db.sock" --pidfile="$d/ovs-vswitchd.pid" \
    --log-file="$d/ovs-vswitchd.log" --unixctl="$d/ovs-vswitchd.ctl" 2>/dev/null &
  PIDS+=($!)
  "${vsctl[@]}" add-br obr -- set bridge obr datapath_type=netdev
  local i
  for i in 1 2; do
    "${vsctl[@]}" add-port obr otap$i -- set interface otap$i type=tap
    ns o$i
    for _ in $(seq 50); do ip -n "${P}ovs" link show otap$i >/dev/null 2>&1 && break; sleep 0.1; done
    ip -n "${P}ovs" link set otap$i netns "${P}o$i"
    ip -n "${P}o$i" addr add 10.9.2.1$i/24 dev otap$i
    ip -n "${P}o$i" link set otap$i up
  done
  inns o1 ping -c1 -W2 10.9.2.12 >/dev/null 2>&1 || true
  both "ovs-netdev same-node" o1 10.9.2.12 o2
  cleanup
  unset OVS_RUNDIR OVS_DBDIR OVS_LOGDIR OVS_PKGDATADIR
}

# --- podnet ------------------------------------------------------------------------
podnet_node() { # namespace, node file
  ip netns exec "$P$1" timeout 600 "$PODNET" tap --config "$2" 2>"$TMP/$1.log" &
  PIDS+=($!)
  local sock
  sock=$(sed -n 's/^control: //p' "$2")
  for _ in $(seq 100); do
    "$PODNET" ctl --socket "$sock" stats >/dev/null 2>&1 && return
    sleep 0.1
  done
  echo "podnet in $1 did not start: $(cat "$TMP/$1.log")" >&2
  exit 1
}

node_file() { # file, name, subnet, ip, peer-name, peer-ip, peer-subnet, pods...
  local f="$1"
  {
    echo "node: $2"
    echo "subnet: $3"
    echo "underlay_ip: $4"
    echo "vtep_mac: \"0e:00:00:00:0${4##*.}:00\""
    echo "control: $TMP/$2.sock"
    if [ -n "$5" ]; then
      echo "peers:"
      echo "  - {name: $5, underlay_ip: $6, subnet: $7, vtep_mac: \"0e:00:00:00:0${6##*.}:00\"}"
    fi
    echo "pods:"
    shift 7
    local p
    for p in "$@"; do
      # name:tap:ip
      IFS=: read -r pn tap pip <<<"$p"
      echo "  - {name: $pn, tap: $tap, ip: $pip, netns: $P$pn}"
    done
  } >"$f"
}

podnet_same_node() {
  # A node without peers still needs its underlay address.
  underlay_pair
  ns a1; ns a2
  node_file "$TMP/same.yaml" node-a 10.0.1.0/24 172.16.0.1 "" "" "" a1:pa1:10.0.1.10 a2:pa2:10.0.1.11
  podnet_node n1 "$TMP/same.yaml"
  inns a1 ping -c1 -W2 10.0.1.11 >/dev/null 2>&1 || true
  both "podnet same-node" a1 10.0.1.11 a2
  "$PODNET" ctl --socket "$TMP/node-a.sock" stats >"$TMP/stats-same.json" || true
  cleanup
}

underlay_pair() {
  ns n1; ns n2
  ip link add ul1 netns "${P}n1" type veth peer name ul2 netns "${P}n2"
  ip -n "${P}n1" addr add 172.16.0.1/24 dev ul1
  ip -n "${P}n1" link set ul1 up
  ip -n "${P}n2" addr add 172.16.0.2/24 dev ul2
  ip -n "${P}n2" link set ul2 up
}

# Namespace $1 as a kernel flannel node: subnet 10.0.$2.0/24, underlay 172.16.0.$2, the
# peer node 172.16.0.$3 with subnet 10.0.$3.0/24; pod namespace $4 at 10.0.$2.10.
kernel_node() {
  local n="$P$1" me="$2" peer="$3"
  ip -n "$n" link add flannel.1 type vxlan id 1 local 172.16.0.$me dstport 8472 nolearning
  ip -n "$n" link set flannel.1 address 0e:00:00:00:0$me:00 mtu 1450 up
  ip -n "$n" addr add 10.0.$me.0/32 dev flannel.1
  ip -n "$n" link add cni0 type bridge
  ip -n "$n" addr add 10.0.$me.1/24 dev cni0
  ip -n "$n" link set cni0 up
  ip -n "$n" neigh replace 10.0.$peer.0 lladdr 0e:00:00:00:0$peer:00 dev flannel.1 nud permanent
  ip netns exec "$n" bridge fdb append 0e:00:00:00:0$peer:00 dev flannel.1 dst 172.16.0.$peer
  ip -n "$n" route add 10.0.$peer.0/24 via 10.0.$peer.0 dev flannel.1 onlink
  ip netns exec "$n" sysctl -qw net.ipv4.ip_forward=1
  veth_pod "$4" 10.0.$me.10 24 10.0.$me.1 1450 "$1" vk$me
  ip -n "$n" link set vk$me master cni0
}

kernel_cross_node() {
  underlay_pair
  kernel_node n1 1 2 k1
  kernel_node n2 2 1 k2
  inns k1 ping -c1 -W2 10.0.2.10 >/dev/null 2>&1 || true
  both "kernel-vxlan cross-node" k1 10.0.2.10 k2
  cleanup
}

podnet_cross_node() {
  underlay_pair
  ns a1; ns b1
  node_file "$TMP/a.yaml" node-a 10.0.1.0/24 172.16.0.1 node-b 172.16.0.2 10.0.2.0/24 a1:pa1:10.0.1.10
  node_file "$TMP/b.yaml" node-b 10.0.2.0/24 172.16.0.2 node-a 172.16.0.1 10.0.1.0/24 b1:pb1:10.0.2.10
  podnet_node n1 "$TMP/a.yaml"
  podnet_node n2 "$TMP/b.yaml"
  inns a1 ping -c1 -W2 10.0.2.10 >/dev/null 2>&1 || true
  both "podnet cross-node" a1 10.0.2.10 b1
  "$PODNET" ctl --socket "$TMP/node-b.sock" stats >"$TMP/stats-cross.json" || true
  cleanup
}

podnet_kernel() {
  underlay_pair
  ns a1
  node_file "$TMP/a.yaml" node-a 10.0.1.0/24 172.16.0.1 node-b 172.16.0.2 10.0.2.0/24 a1:pa1:10.0.1.10
  podnet_node n1 "$TMP/a.yaml"
  kernel_node n2 2 1 k2
  inns a1 ping -c1 -W2 10.0.2.10 >/dev/null 2>&1 || true
  record "podnet->kernel tcp" "$(measure a1 10.0.2.10 k2 tcp)"
  record "kernel->podnet tcp" "$(measure k2 10.0.1.10 a1 tcp)"
  "$PODNET" ctl --socket "$TMP/node-a.sock" stats >"$TMP/stats-interop.json" || true
  cleanup
}

echo "podnet host throughput: $(nproc) cores, $(uname -r), ${T}s per run" >&2
bridge_same_node
ovs_same_node
podnet_same_node
kernel_cross_node
podnet_cross_node
podnet_kernel

ratio() { python3 -c 'import sys
a, b = sys.argv[1], sys.argv[2]
try: print("%.2f" % (float(a) / float(b)))
except Exception: print("-")' "$1" "$2"; }
v() { echo "${R[$1]:--}"; }

echo
echo "| path | TCP Gbit/s | podnet / it | UDP 64 B pps | podnet / it |"
echo "|---|---|---|---|---|"
row() { # label key podnet-key
  echo "| $1 | $(v "$2 tcp") | $(ratio "$(v "$3 tcp")" "$(v "$2 tcp")") | $(v "$2 udp64") | $(ratio "$(v "$3 udp64")" "$(v "$2 udp64")") |"
}
row "podnet, same node" "podnet same-node" "podnet same-node"
row "Linux bridge, same node (veth)" "bridge same-node" "podnet same-node"
row "Open vSwitch userspace (netdev, tap ports), same node" "ovs-netdev same-node" "podnet same-node"
row "podnet <-> podnet, cross node (VXLAN)" "podnet cross-node" "podnet cross-node"
row "kernel VXLAN (flannel) <-> kernel, cross node" "kernel-vxlan cross-node" "podnet cross-node"
echo "| podnet -> kernel VXLAN node | $(v "podnet->kernel tcp") | $(ratio "$(v "podnet->kernel tcp")" "$(v "kernel-vxlan cross-node tcp")") (vs kernel<->kernel) | | |"
echo "| kernel VXLAN node -> podnet | $(v "kernel->podnet tcp") | $(ratio "$(v "kernel->podnet tcp")" "$(v "kernel-vxlan cross-node tcp")") (vs kernel<->kernel) | | |"
echo
python3 - "$TMP" <<'PYEOF'
import json, sys, os
for name in ("same", "cross", "interop"):
    p = os.path.join(sys.argv[1], f"stats-{name}.json")
    try:
        d = json.load(open(p))
    except Exception:
        continue
    drops = {k: v for k, v in d["counters"]["drops"].items() if v}
    edges = {k: v for k, v in d["edges"].items() if v}
    print(f"podnet {name}: drops {drops or 'none'}; edges {edges}")
PYEOF
