#!/usr/bin/env bash
# A/B of the data plane: the code of BASE (a git ref) against this tree, through the same
# harness as bench/dataplane.sh, the two sides interleaved in one run (ABBA order per round).
#
#   BASE=ae3a415 ROUNDS=3 bash bench/dataplane_ab.sh     # needs wrk (apt-get install -y wrk)
#   BASE=ae3a415 HEAD_REF=09206c8 bash bench/dataplane_ab.sh   # two refs, neither the tree
#
# Each side is its own checkout: BASE in a temporary git worktree, imported first through
# PYTHONPATH, so both sides run `python -m controlplane` and `python -m dataplane` of their
# own code against the same fake upstream. Prints, per mode, the median req/s, p50, p99 and
# the data plane's CPU per request of each side and the ratios head/base; these machines are
# noisy, so only ratios within one run compare (CPU per request is the steadier one).
# DURATION (s per load run, default 10), MODES, CONNS pass through to run.sh.
# Both sides run with their own defaults: since the data plane spools usage to its state
# directory by default (root: /var/lib/meterline), compare code with code against a BASE
# without that default as `METERLINE_STATE_DIR= BASE=... bash bench/dataplane_ab.sh` (no
# spool on either side), or give both a spool with DP_ARGS="--state-dir DIR".
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BASE="${BASE:-HEAD~1}"
ROUNDS="${ROUNDS:-3}"
PYTHON="${PYTHON:-python3}"
# The harness beside this checkout, whichever tree a side runs from.
export BENCH_PEERS="${BENCH_PEERS:-$ROOT/../shared/bench-peers}"
TMP="$(mktemp -d -t meterline-ab-XXXXXX)"
cleanup() {
  git -C "$ROOT" worktree remove --force "$TMP/base" >/dev/null 2>&1 || true
  git -C "$ROOT" worktree remove --force "$TMP/head" >/dev/null 2>&1 || true
  rm -rf "$TMP"
}
trap cleanup EXIT
git -C "$ROOT" worktree add --quiet --detach "$TMP/base" "$BASE"
HEAD_TREE="$ROOT"
if [ -n "${HEAD_REF:-}" ]; then
  git -C "$ROOT" worktree add --quiet --detach "$TMP/head" "$HEAD_REF"
  HEAD_TREE="$TMP/head"
fi
echo "base: $(git -C "$TMP/base" log --oneline -1)"
echo "head: $(git -C "$HEAD_TREE" log --oneline -1)$(git -C "$HEAD_TREE" diff --quiet || echo ' (+ uncommitted changes)')"

run_side() {  # run_side NAME TREE ROUND
  local name="$1" tree="$2" round="$3"
  (
    cd "$tree"
    # TARGETS=" ": no peer targets, only the data plane (run.sh's default is all of them).
    PYTHONPATH="$tree:$tree/proto" BENCH_WORK="$TMP/work-$name-$round" TARGETS=" " \
      REPEATS=1 LAT_CONNS=0 WARMUP=2 DURATION="${DURATION:-10}" \
      MODES="${MODES:-nonstream stream}" PYTHON="$PYTHON" \
      bash "$ROOT/bench/dataplane.sh" >"$TMP/$name-$round.log" 2>&1
  ) || { echo "$name round $round failed:"; tail -20 "$TMP/$name-$round.log"; exit 1; }
  cat "$TMP"/work-"$name"-"$round"/results/*/runs.jsonl >>"$TMP/$name.jsonl"
}

for round in $(seq 1 "$ROUNDS"); do
  if (( round % 2 )); then order=(base head); else order=(head base); fi
  for side in "${order[@]}"; do
    if [ "$side" = base ]; then run_side base "$TMP/base" "$round"; else run_side head "$HEAD_TREE" "$round"; fi
    echo "round $round: $side done"
  done
done

"$PYTHON" - "$TMP/base.jsonl" "$TMP/head.jsonl" <<'PY'
import json
import statistics
import sys

def load(path):
    runs = {}
    for line in open(path):
        run = json.loads(line)
        if run["target"] != "meterline":
            continue
        runs.setdefault(f'{run["mode"]} c={run["conns"]}', []).append(run)
    return runs

base, head = load(sys.argv[1]), load(sys.argv[2])
print(
    f"\n{'mode':14} {'side':5} {'req/s (median)':>15} {'runs':>24} {'p50 ms':>8} {'p99 ms':>8}"
    f" {'CPU us/req':>10}"
)
for mode in sorted(set(base) | set(head)):
    medians, cpus = {}, {}
    for name, runs in (("base", base.get(mode, [])), ("head", head.get(mode, []))):
        if not runs:
            continue
        rps = statistics.median(r["rps"] for r in runs)
        medians[name] = rps
        each = ", ".join(f"{r['rps']:.0f}" for r in runs)
        p50 = statistics.median(r["lat_p50_ms"] for r in runs)
        p99 = statistics.median(r["lat_p99_ms"] for r in runs)
        # The data plane's CPU (its process tree, from /proc) per request: steadier than req/s
        # on a shared machine, since it does not count time spent waiting for a core.
        per_request = [r["proxy_cores"] / r["rps"] * 1e6 for r in runs if r.get("proxy_cores")]
        cpu = statistics.median(per_request) if per_request else float("nan")
        cpus[name] = cpu
        print(f"{mode:14} {name:5} {rps:15.1f} {each:>24} {p50:8.2f} {p99:8.2f} {cpu:10.1f}")
    if len(medians) == 2:
        print(
            f"{mode:14} head/base req/s = {medians['head'] / medians['base']:.3f}, "
            f"CPU per request = {cpus['head'] / cpus['base']:.3f}"
        )
PY
