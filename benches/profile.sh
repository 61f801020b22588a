#!/usr/bin/env bash
# Instructions per packet of each pipeline benchmark, and where they go, from callgrind.
#
#   benches/profile.sh [BENCHMARK...]     (default: every pipeline/* benchmark)
#
# Runs the criterion benchmark binary under `valgrind --tool=callgrind` for a few seconds
# per benchmark (`--profile-time`), collecting only inside criterion's measured calls
# (`iter_batched_ref`), so the set-up of the other benchmarks in the file is not counted.
# Instruction counts do not depend on the machine's load, unlike wall-clock figures:
# this is the profile that says what bounds each figure in BENCHMARKS.md. Needs valgrind
# (Debian: valgrind). Prints one block per benchmark: instructions per packet in
# `Switch::process`, then its callees' shares.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "profile.sh: valgrind is not installed" >&2; exit 2; }
secs="${PROFILE_SECS:-3}"
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(bridge vxlan_encap vxlan_decap udp_encap udp_decap dnat_new dnat_est_10k dnat_est_1m chain)
# PROFILE_BIN: a benchmark binary built elsewhere (another commit's), instead of this tree's.
bin=${PROFILE_BIN:-}
[ -n "$bin" ] || bin=$(cargo bench --bench pipeline --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json,sys
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m["target"]["name"]=="pipeline" and m.get("executable"): print(m["executable"])' | tail -1)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# A copy, so that a rebuild while this runs does not change what is measured.
cp "$bin" "$out/pipeline" && bin="$out/pipeline"
for name in "${names[@]}"; do
  f="$out/$name.cg"
  valgrind --tool=callgrind --callgrind-out-file="$f" \
    --toggle-collect='criterion::bencher::Bencher*::iter_batched_ref*' \
    "$bin" --bench --profile-time "$secs" "^pipeline/$name\$" >/dev/null 2>&1
  # Switch::process is called once per batch of 64 per switch; chain runs two switches.
  per_batch=1; [ "$name" = chain ] && per_batch=2
  [ -n "${PROFILE_KEEP:-}" ] && cp "$f" "$PROFILE_KEEP/$name.cg"
  callgrind_annotate --tree=caller --inclusive=yes "$f" 2>/dev/null >"$f.tree"
  callgrind_annotate --inclusive=no "$f" 2>/dev/null >"$f.self"
  python3 - "$name" "$per_batch" "$f.tree" "$f.self" <<'PY'
import re, sys
name, per_batch, tree, flat = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
num = lambda s: int(s.replace(",", ""))
# Calls of Switch::process from criterion's measured routine, and their inclusive cost.
calls = total = 0
lines = open(tree).read().split("\n")
for i, l in enumerate(lines):
    if re.search(r"\*\s+\S+:podnet_switch::switch::Switch::process(\s|$)", l):
        for c in lines[i - 1::-1]:
            m = re.match(r"^\s*([\d,]+) \(\s*[\d.]+%\)\s+<\s+\S+(?:iter_batched_ref|Chain::run) \(([\d,]+)x\)", c)
            if not m:
                break
            total += num(m.group(1))
            calls += num(m.group(2))
packets = calls // per_batch * 64
if packets == 0:
    sys.exit(f"profile.sh: no measured call of Switch::process found for {name}")
print(f"pipeline/{name}: {total / packets:.0f} instructions per packet in Switch::process ({packets} packets)")
# Where they go: the functions with the most instructions of their own, over the
# measured routine and its per-batch set-up (pipeline::batch and the copies it makes are
# the set-up, outside Switch::process).
rows = []
for l in open(flat):
    m = re.match(r"^\s*([\d,]+) \(\s*[\d.]+%\)\s+(\S+?):(\S+)", l)
    if m and "PROGRAM TOTALS" not in l:
        rows.append((num(m.group(1)), m.group(3)))
merged = {}
for ir, fn in rows:
    fn = re.sub(r"^podnet_switch::", "", fn)
    merged[fn] = merged.get(fn, 0) + ir
for fn, ir in sorted(merged.items(), key=lambda kv: -kv[1])[:10]:
    print(f"  {ir / packets:6.0f}/pkt  {fn}")
PY
done
