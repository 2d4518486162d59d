#!/usr/bin/env bash
# What OpenTelemetry tracing costs a real data plane, with the machine's drift paired out: one
# data plane per mode, all started at once against one control plane, one fake provider and one
# OTLP/gRPC receiver, then wrk alternating between them in short runs (the order rotated each
# round), so each round's runs are seconds apart.
#
#   ROUNDS=30 SECONDS_PER_RUN=2 bash bench/tracing_alternating.sh     # needs wrk
#
# MODES (default "off on100 off2 on10"): off and off2 are the same data plane without OTEL_*
# (off2 is the noise floor: its ratio to off should be ~1), on100 samples every request, on10
# one in ten (traceidratio). STREAM=1 streams. Printed per mode: the median req/s and the median
# of each round's ratio to that round's "off" run, with the spread of those ratios. Only the
# ratios compare: these machines are noisy (single runs of the same code differ by 1.2x here).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PEERS="${BENCH_PEERS:-$ROOT/../shared/bench-peers}"
PYTHON="${PYTHON:-python3}"
ROUNDS="${ROUNDS:-30}"
SECS="${SECONDS_PER_RUN:-2}"
CONNS="${CONNS:-32}"
read -r -a modes <<<"${MODES:-off on100 off2 on10}"
[ "${modes[0]}" = off ] || { echo "MODES must start with off (the baseline)"; exit 2; }
export PYTHONPATH="$ROOT:$ROOT/proto${PYTHONPATH:+:$PYTHONPATH}"
WORK="$(mktemp -d -t meterline-tracing-alt-XXXXXX)"
cleanup() { kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
CP_PORT="${CP_PORT:-18061}" UPSTREAM_PORT="${UPSTREAM_PORT:-18080}" BASE_PORT="${BASE_PORT:-18110}"

"$PYTHON" -m controlplane controlplane --insecure-dev --db "sqlite:///$WORK/cp.db" \
  --listen "127.0.0.1:$CP_PORT" >"$WORK/cp.log" 2>&1 &
FAKE_PORT="$UPSTREAM_PORT" python3 "$PEERS/fake_upstream.py" >"$WORK/upstream.log" 2>&1 &
# The OTLP/gRPC receiver: answers every export, keeps nothing (a real collector runs elsewhere).
"$PYTHON" - "$WORK/otlp.port" >"$WORK/otlp.log" 2>&1 <<'PY' &
import sys
from concurrent import futures

import grpc


def export(request: bytes, context) -> bytes:
    return b""


server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
server.add_generic_rpc_handlers(
    tuple(
        grpc.method_handlers_generic_handler(
            f"opentelemetry.proto.collector.{name}",
            {"Export": grpc.unary_unary_rpc_method_handler(export)},
        )
        for name in ("trace.v1.TraceService", "metrics.v1.MetricsService")
    )
)
port = server.add_insecure_port("127.0.0.1:0")
server.start()
with open(sys.argv[1], "w") as out:
    out.write(str(port))
server.wait_for_termination()
PY
for _ in $(seq 100); do [ -s "$WORK/otlp.port" ] && break; sleep 0.1; done
OTLP="http://127.0.0.1:$(cat "$WORK/otlp.port")"

KEY=bench-consumer-key
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
METERLINE_CONNECT_TIMEOUT=30 "$PYTHON" -m controlplane apply "$WORK/bench.yaml" \
  --cp "127.0.0.1:$CP_PORT" >/dev/null

ON="OTEL_EXPORTER_OTLP_ENDPOINT=$OTLP OTEL_EXPORTER_OTLP_PROTOCOL=grpc OTEL_SERVICE_NAME=bench"
ports=()
for index in "${!modes[@]}"; do
  case "${modes[$index]}" in
    off|off2) env="" ;;
    on100) env="$ON OTEL_TRACES_SAMPLER=always_on" ;;
    on10) env="$ON OTEL_TRACES_SAMPLER=traceidratio OTEL_TRACES_SAMPLER_ARG=0.1" ;;
    *) echo "unknown mode ${modes[$index]} (off off2 on100 on10)"; exit 2 ;;
  esac
  port=$((BASE_PORT + index))
  env $env METERLINE_STATE_DIR= "$PYTHON" -m dataplane --insecure-dev --cp "127.0.0.1:$CP_PORT" \
    --listen "127.0.0.1:$port" >"$WORK/dp-${modes[$index]}.log" 2>&1 &
  ports+=("$port")
done

url() { echo "http://127.0.0.1:$1/v1/chat/completions"; }
load() {  # load PORT SECONDS -> requests completed
  BENCH_STREAM="${STREAM:-0}" BENCH_OUT="$WORK/wrk.json" timeout $(( $2 + 20 )) \
    wrk -t1 -c"$CONNS" -d"$2s" --timeout 10s -s "$PEERS/post.lua" -H "apikey: $KEY" "$(url "$1")" \
    | awk '/requests in/ {print $1}'
}
body='{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}'
for port in "${ports[@]}"; do  # each answers, then a warm-up
  for _ in $(seq 150); do
    code="$(curl -s -o /dev/null -w '%{http_code}' -X POST -H "apikey: $KEY" \
      -H 'content-type: application/json' -d "$body" "$(url "$port")" || true)"
    [ "$code" = 200 ] && break
    sleep 0.2
  done
  [ "$code" = 200 ] || { echo "the data plane on $port does not answer"; tail "$WORK"/dp-*.log; exit 1; }
  load "$port" 2 >/dev/null
done

: >"$WORK/runs.txt"
for round in $(seq 1 "$ROUNDS"); do
  for step in "${!modes[@]}"; do
    index=$(( (step + round - 1) % ${#modes[@]} ))
    echo "$round ${modes[$index]} $(load "${ports[$index]}" "$SECS")" >>"$WORK/runs.txt"
  done
done

"$PYTHON" - "$WORK/runs.txt" "$SECS" "${modes[@]}" <<'PY'
import statistics
import sys
from collections import defaultdict

path, seconds, modes = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
rounds: dict[int, dict[str, float]] = defaultdict(dict)
for line in open(path):
    number, mode, requests = line.split()
    rounds[int(number)][mode] = int(requests) / seconds
print(f"{len(rounds)} rounds of {seconds:g} s per mode")
print(f"{'mode':8} {'req/s':>8} {'paired ratio to off':>20} {'quartiles':>14}")
for mode in modes:
    rates = [r[mode] for r in rounds.values()]
    ratios = sorted(r[mode] / r["off"] for r in rounds.values())
    q1, _, q3 = statistics.quantiles(ratios, n=4)
    print(
        f"{mode:8} {statistics.median(rates):8.0f} {statistics.median(ratios):20.3f}"
        f"   {q1:.3f}-{q3:.3f}"
    )
PY
