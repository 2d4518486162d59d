#!/usr/bin/env bash
# Data-plane speed beside LiteLLM and Portkey, in one run of ../shared/bench-peers/run.sh.
#
#   bash bench/dataplane.sh            # needs: bash ../shared/bench-peers/setup.sh (once)
#
# Meterline runs as the third target with key-auth, ai-proxy and metering on, its usage
# streaming to a control plane (SQLite in a temporary folder) started here. After the run the
# control plane's stored usage is printed, so the load's tokens can be checked against it.
# Any knob of run.sh (TARGETS, MODES, CONNS, REPEATS, DURATION...) passes through; DP_WORKERS
# (default 1) sets the data plane's --workers, DP_ARGS adds any other data-plane flag (e.g.
# "--state-dir /tmp/dp-state" to measure with the usage spool on), DP_ENV sets variables for
# the data plane alone (e.g. "OTEL_TRACES_SAMPLER=always_on ...": bench/tracing_ab.sh).
#
# The data plane runs as `python -m dataplane`, its own entry point: `meterline dataplane`
# serves the same code but first imports the control plane's CLI (SQLAlchemy and more), which
# costs ~45 MB of resident memory per data-plane process and nothing else.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PEERS="${BENCH_PEERS:-$ROOT/../shared/bench-peers}"
PYTHON="${PYTHON:-python3}"
UPSTREAM_PORT="${UPSTREAM_PORT:-18080}"
DP_PORT="${DP_PORT:-18000}"
CP_PORT="${CP_PORT:-18051}"
KEY="bench-consumer-key"
WORK="$(mktemp -d -t meterline-bench-XXXXXX)"

"$PYTHON" -m controlplane controlplane --insecure-dev --db "sqlite:///$WORK/meterline.db" \
  --listen "127.0.0.1:$CP_PORT" >"$WORK/controlplane.log" 2>&1 &
CP_PID=$!
trap 'kill $CP_PID 2>/dev/null; wait $CP_PID 2>/dev/null; rm -rf "$WORK"' EXIT

cat >"$WORK/bench.yaml" <<YAML
_format_version: "3.0"
services:
  - name: bench
    url: http://127.0.0.1:$UPSTREAM_PORT
    routes: [{name: v1, paths: [/v1]}]
    plugins:
      - name: ai-proxy
        config:
          route_type: llm/v1/chat
          auth: {header_name: Authorization, header_value: Bearer sk-bench-upstream}
          model:
            provider: openai
            options: {upstream_url: "http://127.0.0.1:$UPSTREAM_PORT/v1/chat/completions"}
consumers:
  - username: bench-consumer
    keyauth_credentials: [{key: $KEY}]
plugins:
  - name: key-auth
YAML
# The control plane may still be starting: wait for it up to 30 s (the CLI waits 2 s).
METERLINE_CONNECT_TIMEOUT=30 "$PYTHON" -m controlplane apply "$WORK/bench.yaml" --cp "127.0.0.1:$CP_PORT"

THIRD_NAME=meterline \
THIRD_CMD="exec env ${DP_ENV:-} $PYTHON -m dataplane --insecure-dev --cp 127.0.0.1:$CP_PORT --listen 127.0.0.1:$DP_PORT --workers ${DP_WORKERS:-1} ${DP_ARGS:-}" \
UPSTREAM_PORT="$UPSTREAM_PORT" \
  bash "$PEERS/run.sh" "http://127.0.0.1:$DP_PORT/v1/chat/completions" "apikey: $KEY"

echo
echo "usage stored by the control plane (subject bench-consumer):"
"$PYTHON" - "$CP_PORT" <<'PY'
import sys
from collections import Counter

import grpc

from meterline.admin.v1 import usage_pb2, usage_pb2_grpc

with grpc.insecure_channel(f"127.0.0.1:{sys.argv[1]}") as channel:
    stub = usage_pb2_grpc.UsageServiceStub(channel)
    rows = stub.QueryMeter(
        usage_pb2.QueryMeterRequest(
            meter="llm_tokens", subjects=["bench-consumer"], group_by=["type", "status_code"]
        )
    ).rows
for row in rows:
    print(f"  type={row.group['type']:<6} status={row.group['status_code']}  tokens={row.value}")
PY
