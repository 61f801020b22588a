#!/usr/bin/env bash
# Packet-hops per second of the simulator's event loop (issue 13: >= 1,000,000 on one core),
# on packet-dense scenarios: benches/hops/bulk.yaml (one 200 MB TCP transfer between two
# pods on two nodes) and benches/hops/small.yaml (16 nodes, 128 pods, each sending a ping
# and a 64-byte UDP request every millisecond to a pod on another node).
#
#   benches/hops.sh [SCENARIO.yaml...]     (default: benches/hops/*.yaml)
#
# For each scenario, one `podnet sim --json --timing` run; prints a Markdown table:
#
#   wall    the run's wall-clock time (`--timing`: loading, building, running, report)
#   cpu     user + system CPU time of the process (GNU time): what one core spent. On a
#           shared machine the process gets a fraction of a core, so wall time is longer
#   hops/s  packet-hops over cpu (per core-second) and over wall
#
# With HOPS_CALLGRIND=1 it also runs each scenario to HOPS_UNTIL (default 50ms) under
# callgrind and prints instructions per packet-hop (whole process: loading and the report
# included), a figure the machine's load does not change. HOPS_BIN=PATH measures that
# binary instead of building target/release/podnet (to compare with an older build).
# Needs GNU time (and valgrind for HOPS_CALLGRIND).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -n "${HOPS_BIN:-}" ] || cargo build --release --quiet -p podnet
[ -x /usr/bin/time ] || { echo "benches/hops.sh: needs /usr/bin/time (GNU time)" >&2; exit 2; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
# A copy, so that a rebuild while this runs does not change what is measured.
cp "${HOPS_BIN:-target/release/podnet}" "$dir/podnet"
bin="$dir/podnet"
files=("$@")
[ ${#files[@]} -gt 0 ] || files=(benches/hops/*.yaml)

echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| scenario | events | packet-hops | wall | cpu | packet-hops/s (cpu) | packet-hops/s (wall) | delivered | trace_hash |"
echo "|---|---|---|---|---|---|---|---|---|"
for f in "${files[@]}"; do
  /usr/bin/time -f "cpu %U %S" "$bin" sim "$f" --json --timing > "$dir/r.json" 2> "$dir/err" || true
  python3 - "$dir/r.json" "$dir/err" "$f" <<'PY'
import json, re, sys
r = json.load(open(sys.argv[1]))
err = open(sys.argv[2]).read()
wall = float(re.search(r"in ([0-9.]+) s wall", err).group(1))
u, s = re.search(r"cpu ([0-9.]+) ([0-9.]+)", err).groups()
cpu = float(u) + float(s)
hops = r["packet_hops"]
sent = sum(t["sent"] for t in r["traffic"]); got = sum(t["delivered"] for t in r["traffic"])
print(f"| {r['scenario']} | {r['events']:,} | {hops:,} | {wall:.2f} s | {cpu:.2f} s "
      f"| {hops/max(cpu,1e-3)/1e6:.2f} M | {hops/max(wall,1e-3)/1e6:.2f} M | {got:,} of {sent:,} | {r['trace_hash']} |")
PY
done
echo
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"

if [ "${HOPS_CALLGRIND:-0}" = 1 ]; then
  command -v valgrind >/dev/null || { echo "benches/hops.sh: valgrind is not installed" >&2; exit 2; }
  until="${HOPS_UNTIL:-50ms}"
  echo
  echo "| scenario (to $until) | instructions | packet-hops | instructions per packet-hop |"
  echo "|---|---|---|---|"
  for f in "${files[@]}"; do
    valgrind --tool=callgrind --callgrind-out-file="$dir/cg.out" \
      "$bin" sim "$f" --until "$until" --json > "$dir/r.json" 2> "$dir/cg.err" || true
    python3 - "$dir/r.json" "$dir/cg.err" <<'PY'
import json, re, sys
r = json.load(open(sys.argv[1]))
ir = int(re.search(r"refs:\s+([0-9,]+)", open(sys.argv[2]).read()).group(1).replace(",", ""))
hops = r["packet_hops"]
print(f"| {r['scenario']} | {ir:,} | {hops:,} | {ir/max(hops,1):,.0f} |")
PY
  done
fi
