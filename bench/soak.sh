#!/usr/bin/env bash
# Soak: the data plane under steady load for a long time; resident memory sampled throughout,
# metering checked at the end.
#
#   bash bench/soak.sh                 # 600 s, 32 connections, non-streaming
#   SOAK_SECONDS=120 STREAM=1 bash bench/soak.sh
#
# Needs wrk (bash ../shared/bench-peers/setup.sh once). Starts, on loopback: the bench-peers fake
# upstream, a control plane (SQLite in a temporary folder), one data plane (`python -m
# dataplane`, key-auth + ai-proxy + metering). wrk drives it with the bench-peers body for
# SOAK_SECONDS; the data plane's VmRSS is read from /proc every SAMPLE_SECONDS. Prints the RSS
# table, growth from the first sample after warm-up to the last, and stored usage against the
# requests wrk completed (the fake upstream reports fixed usage per request).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PEERS="${BENCH_PEERS:-$ROOT/../shared/bench-peers}"
PYTHON="${PYTHON:-python3}"
SOAK_SECONDS="${SOAK_SECONDS:-600}"
SAMPLE_SECONDS="${SAMPLE_SECONDS:-30}"
CONNS="${CONNS:-32}"
STREAM="${STREAM:-0}"
UPSTREAM_PORT="${UPSTREAM_PORT:-18180}"
DP_PORT="${DP_PORT:-18100}"
CP_PORT="${CP_PORT:-18151}"
KEY="soak-consumer-key"
WORK="$(mktemp -d -t meterline-soak-XXXXXX)"
command -v wrk >/dev/null || { echo "wrk missing: run bash $PEERS/setup.sh"; exit 1; }
UPY="${BENCH_WORK:-$HOME/.cache/meterline-bench-peers}/.venv-tools/bin/python"
[ -x "$UPY" ] || UPY=python3

PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

FAKE_PORT="$UPSTREAM_PORT" "$UPY" "$PEERS/fake_upstream.py" >"$WORK/upstream.log" 2>&1 &
PIDS+=($!)
"$PYTHON" -m controlplane controlplane --insecure-dev --db "sqlite:///$WORK/meterline.db" \
  --listen "127.0.0.1:$CP_PORT" >"$WORK/controlplane.log" 2>&1 &
PIDS+=($!)
sleep 3
cat >"$WORK/soak.yaml" <<YAML
_format_version: "3.0"
services:
  - name: soak
    url: http://127.0.0.1:$UPSTREAM_PORT
    routes: [{name: v1, paths: [/v1]}]
    plugins:
      - name: ai-proxy
        config:
          route_type: llm/v1/chat
          auth: {header_name: Authorization, header_value: Bearer sk-soak-upstream}
          model:
            provider: openai
            options: {upstream_url: "http://127.0.0.1:$UPSTREAM_PORT/v1/chat/completions"}
consumers:
  - username: soak-consumer
    keyauth_credentials: [{key: $KEY}]
plugins:
  - name: key-auth
YAML
METERLINE_CONNECT_TIMEOUT=30 "$PYTHON" -m controlplane apply "$WORK/soak.yaml" --cp "127.0.0.1:$CP_PORT" >/dev/null
"$PYTHON" -m dataplane --insecure-dev --cp "127.0.0.1:$CP_PORT" --listen "127.0.0.1:$DP_PORT" \
  >"$WORK/dataplane.log" 2>&1 &
DP_PID=$!
PIDS+=($DP_PID)
for _ in $(seq 1 100); do
  code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$DP_PORT/readyz" || true)
  [ "$code" = 200 ] && break
  # Before /readyz existed: any answer from the route means a config is loaded.
  code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H "apikey: $KEY" \
    "http://127.0.0.1:$DP_PORT/v1/chat/completions" -d '{}' || true)
  [ "$code" = 400 ] && break
  sleep 0.2
done

rss_mb() { awk '/VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$DP_PID/status"; }
echo "soak: ${SOAK_SECONDS}s, ${CONNS} connections, stream=$STREAM, data plane pid $DP_PID"
echo "t_s rss_mb"
echo "0 $(rss_mb)"
BENCH_STREAM="$STREAM" BENCH_OUT="$WORK/wrk.json" timeout $((SOAK_SECONDS + 30)) \
  wrk -t1 -c"$CONNS" -d"${SOAK_SECONDS}s" --timeout 10s -s "$PEERS/post.lua" \
  -H "apikey: $KEY" "http://127.0.0.1:$DP_PORT/v1/chat/completions" >"$WORK/wrk.txt" 2>&1 &
WRK_PID=$!
samples=()
elapsed=0
while kill -0 "$WRK_PID" 2>/dev/null; do
  sleep "$SAMPLE_SECONDS"
  elapsed=$((elapsed + SAMPLE_SECONDS))
  kill -0 "$WRK_PID" 2>/dev/null || break
  rss=$(rss_mb)
  samples+=("$rss")
  echo "$elapsed $rss"
done
wait "$WRK_PID" || true
sleep 2  # the last usage batch reaches the control plane
cat "$WORK/wrk.json"
CONNS="$CONNS" "$PYTHON" - "$CP_PORT" "$WORK/wrk.json" "${samples[@]}" <<'PY'
import json
import os
import sys

import grpc

from meterline.admin.v1 import usage_pb2, usage_pb2_grpc

port, wrk_json, *samples = sys.argv[1:]
summary = json.load(open(wrk_json))
rss = [float(s) for s in samples]
if len(rss) >= 3:
    # The first sample is warm-up (pools, caches, gc.freeze); growth is measured after it.
    base, last = rss[1], rss[-1]
    print(f"rss after warm-up {base:.1f} MB, last {last:.1f} MB, max {max(rss):.1f} MB, "
          f"growth {last - base:+.1f} MB over {len(rss) - 2} samples")
with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
    stub = usage_pb2_grpc.UsageServiceStub(channel)
    rows = stub.QueryMeter(
        usage_pb2.QueryMeterRequest(
            meter="llm_tokens", subjects=["soak-consumer"], group_by=["type", "status_code"]
        )
    ).rows
errors = sum(summary[k] for k in summary if k.startswith("err_"))
print(f"wrk: {summary['requests']} requests, {summary['rps']:.0f} req/s, "
      f"p99 {summary['lat_p99_ms']:.1f} ms, errors {errors}")
for row in rows:
    print(f"stored: type={row.group['type']} status={row.group['status_code']} tokens={row.value}")
output = sum(int(float(r.value)) for r in rows if r.group["type"] == "output")
per_request = int(os.environ.get("FAKE_COMPLETION_TOKENS", "16"))
print(f"requests billed (output tokens / {per_request}): {output / per_request:.0f}; wrk counted "
      f"{summary['requests']} (wrk does not count the <= {os.environ['CONNS']} in flight at its end)")
PY
