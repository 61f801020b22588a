#!/usr/bin/env bash
# The scale benchmark: podnet sim on generated clusters of N nodes (30 pods a node, a
# service per 150 pods up to 1,000, 200 ping and 200 service traffics of 5 requests, 2 s
# simulated), for each N given (default 100 1000 5000). Prints a Markdown table:
#
#   build  wall time of loading and building the world (a run with --until 0s: the
#          world, the first instant's events and the report)
#   run    wall time of the whole run (build included), from `podnet sim --timing`
#   RSS    peak resident memory of the whole run (/usr/bin/time -v)
#   hops/s packet-hops of the run over the time of its event loop (run - build)
#
# Usage: benches/scale.sh [N...]   (builds target/release/podnet first; needs GNU time)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p podnet
bin=./target/release/podnet
[ -x /usr/bin/time ] || { echo "benches/scale.sh: needs /usr/bin/time (GNU time)" >&2; exit 2; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(100 1000 5000)

wall_of() { sed -n 's/.*in \([0-9.]*\) s wall.*/\1/p' "$1"; }

echo "| nodes | pods | services | build | run | peak RSS | events | packet-hops | packet-hops/s | delivered |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for n in "${sizes[@]}"; do
  "$bin" sim --generate "nodes=$n" > "$dir/s.yaml"
  "$bin" sim "$dir/s.yaml" --until 0s --timing > /dev/null 2> "$dir/build.err" || true
  /usr/bin/time -v "$bin" sim "$dir/s.yaml" --json --timing > "$dir/r.json" 2> "$dir/run.err" || true
  build=$(wall_of "$dir/build.err")
  run=$(wall_of "$dir/run.err")
  rss=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$dir/run.err")
  python3 - "$dir/r.json" "$n" "$build" "$run" "$rss" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
n, build, run, rss = sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
pods = len(r["cluster"]["pods"]); services = len(r["cluster"]["services"])
sent = sum(t["sent"] for t in r["traffic"]); got = sum(t["delivered"] for t in r["traffic"])
hops = r["packet_hops"]
print(f"| {int(n):,} | {pods:,} | {services:,} | {build:.2f} s | {run:.2f} s | {rss/1024:,.0f} MiB "
      f"| {r['events']:,} | {hops:,} | {hops/max(run-build,1e-3)/1e6:.2f} M | {got:,} of {sent:,} |")
PY
done
