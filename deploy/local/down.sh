#!/usr/bin/env bash
# Stop what deploy/local/up.sh started (SIGTERM, then SIGKILL after 10 s).
set -uo pipefail
RUN_DIR="${1:-${TMPDIR:-/tmp}/meterline-local}"
shopt -s nullglob
pids=()
for f in "$RUN_DIR"/dataplane-*.pid "$RUN_DIR"/controlplane.pid "$RUN_DIR"/fake.pid; do
  pid=$(cat "$f")
  kill -TERM "$pid" 2>/dev/null && pids+=("$pid")
  rm -f "$f"
done
for _ in $(seq 1 100); do
  alive=0
  for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
  [ "$alive" = 0 ] && exit 0
  sleep 0.1
done
for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null; done
exit 0
