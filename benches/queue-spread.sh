#!/usr/bin/env bash
# How a podnet node's workers share its traffic: two pods on one node (`workers: 2`, the
# default on 2 cores), iperf3 TCP with 1 and 8 streams and UDP 64-byte datagrams with 1
# and 4 streams between them; for each run the CPU time and context switches of each
# worker thread (`perf stat --per-thread`), the five busiest commands on all CPUs
# (`perf record -a`, what else competes for the cores), and at the end what
# `podnet ctl stats` says of the spread (`workers`, each pod port's `queues`; absent
# before multi-queue TAPs).
#
#   sudo benches/queue-spread.sh [PODNET]     (default target/release/podnet; T=4 s a run)
#
# Network safety: everything runs in network namespaces named pnq<pid>-*, created here
# and deleted on exit and on failure (trap); addresses are assigned inside them and no
# namespace has a route out. Every iperf3 and podnet run is bounded by `timeout`.
# Needs: root, iproute2, iperf3, python3, perf.
set -euo pipefail
cd "$(dirname "$0")/.."
PODNET="${1:-target/release/podnet}"
T="${T:-4}"
P="pnq$$-"
TMP="$(mktemp -d /tmp/podnet-queues.XXXXXX)"
PIDS=()
for tool in ip iperf3 python3 perf timeout; do
  command -v "$tool" >/dev/null || { echo "needs $tool" >&2; exit 2; }
done
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces, TAP devices)" >&2; exit 2; }
[ -x "$PODNET" ] || { echo "no podnet binary at $PODNET" >&2; exit 2; }

cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  for ns in $(ip netns list | awk '{print $1}' | grep "^$P" || true); do
    ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
  done
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for n in n1 ul p1 p2; do ip netns add "$P$n"; ip -n "$P$n" link set lo up; done
ip link add ul1 netns "${P}n1" type veth peer name ul2 netns "${P}ul"
ip -n "${P}n1" addr add 172.16.0.1/24 dev ul1
ip -n "${P}n1" link set ul1 up
ip -n "${P}ul" addr add 172.16.0.2/24 dev ul2
ip -n "${P}ul" link set ul2 up
cat >"$TMP/node.yaml" <<YAML
node: node-a
subnet: 10.0.1.0/24
underlay_ip: 172.16.0.1
control: $TMP/node.sock
workers: 2
pods:
  - {name: a1, tap: pa1, ip: 10.0.1.10, netns: ${P}p1}
  - {name: a2, tap: pa2, ip: 10.0.1.11, netns: ${P}p2}
YAML
ip netns exec "${P}n1" timeout 300 "$PODNET" tap --config "$TMP/node.yaml" 2>"$TMP/podnet.log" &
PIDS+=($!)
for _ in $(seq 100); do
  "$PODNET" ctl --socket "$TMP/node.sock" stats >/dev/null 2>&1 && break
  sleep 0.1
done
PID=$(pgrep -f "^$PODNET tap --config $TMP/node.yaml")
ip netns exec "${P}p1" ping -c1 -W2 10.0.1.11 >/dev/null

run() { # label, iperf3 arguments
  timeout $((T + 15)) ip netns exec "${P}p2" iperf3 -s -1 -p 5201 >/dev/null 2>&1 &
  local srv=$!
  for _ in $(seq 50); do
    ip netns exec "${P}p2" ss -ltn | grep -q ':5201 ' && break
    sleep 0.1
  done
  perf stat --per-thread -e task-clock,context-switches -p "$PID" -o "$TMP/stat" -- sleep $((T - 1)) &
  local st=$!
  perf record -a -F 499 -o "$TMP/rec" -- sleep $((T - 1)) >/dev/null 2>&1 &
  local rec=$!
  local out
  out=$(timeout $((T + 10)) ip netns exec "${P}p1" iperf3 -c 10.0.1.11 -p 5201 -t "$T" -J "${@:2}" 2>/dev/null || true)
  wait "$st" "$rec" "$srv" 2>/dev/null || true
  echo "$out" | python3 -c '
import json, sys
e = json.load(sys.stdin)["end"]
if sys.argv[1].startswith("udp"):
    s = e["sum"]
    print(sys.argv[1], "%d datagrams/s received" % ((s["packets"] - s["lost_packets"]) / s["seconds"]))
else:
    print(sys.argv[1], "%.2f Gbit/s" % (e["sum_received"]["bits_per_second"] / 1e9))
' "$1"
  awk '/podnet-worker/ && /task-clock/ {cpu[$1] = $2} /podnet-worker/ && /context-switches/ {cs[$1] = $2}
       END {for (t in cpu) printf "    %s: %s ms on CPU, %s context switches\n", t, cpu[t], cs[t]}' "$TMP/stat" | sort
  perf report -i "$TMP/rec" --sort comm --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -5 | sed 's/^/    all CPUs: /'
}
run "tcp, 1 stream"
run "tcp, 8 streams" -P 8
run "udp64, 1 stream" -u -l 64 -b 0
run "udp64, 4 streams" -u -l 64 -b 0 -P 4
"$PODNET" ctl --socket "$TMP/node.sock" stats | python3 -c '
import json, sys
s = json.load(sys.stdin)
print("ctl stats, all runs: workers (batches, rx_packets):",
      [(w["batches"], w["rx_packets"]) for w in s.get("workers", [])] or "not reported")
for p in ("a1", "a2"):
    print("  port", p, "rx_packets per queue:", [q["rx_packets"] for q in s["ports"][p].get("queues", [])] or "not reported")
'
