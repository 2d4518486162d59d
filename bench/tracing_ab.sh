#!/usr/bin/env bash
# What OpenTelemetry tracing costs a real data plane: off, on at 100% and on at 10% sampling,
# through bench/dataplane.sh (wrk, key-auth, ai-proxy, metering, usage streamed to a control
# plane), the three modes interleaved in one run (rotated order per round).
#
#   ROUNDS=3 DURATION=8 bash bench/tracing_ab.sh        # needs wrk (apt-get install -y wrk)
#
# "on" exports the data plane's spans and GenAI metrics over OTLP/gRPC to a receiver started
# here that discards them; only the data plane gets the OTEL_* variables (DP_ENV). Printed per
# load mode: the median req/s and the data plane's CPU per request (its process tree, so the
# exporter process it starts is counted), each with its ratio to "off". Only ratios within one
# run compare: these machines are noisy. DURATION, MODES and CONNS pass through to run.sh.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROUNDS="${ROUNDS:-3}"
PYTHON="${PYTHON:-python3}"
export BENCH_PEERS="${BENCH_PEERS:-$ROOT/../shared/bench-peers}"
export PYTHONPATH="$ROOT:$ROOT/proto${PYTHONPATH:+:$PYTHONPATH}"
TMP="$(mktemp -d -t meterline-tracing-ab-XXXXXX)"

# The discarding OTLP/gRPC receiver (the collector's TraceService and MetricsService).
"$PYTHON" - "$TMP/otlp.port" >"$TMP/otlp.log" 2>&1 <<'PY' &
import sys
from concurrent import futures

import grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


SPANS = [0]


class Traces(trace_service_pb2_grpc.TraceServiceServicer):
    def Export(self, request, context):
        SPANS[0] += sum(
            len(scope.spans) for rs in request.resource_spans for scope in rs.scope_spans
        )
        with open(sys.argv[1] + ".spans", "w") as out:  # what arrived so far
            out.write(str(SPANS[0]))
        return trace_service_pb2.ExportTraceServiceResponse()


class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
    def Export(self, request, context):
        return metrics_service_pb2.ExportMetricsServiceResponse()


server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(), server)
metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Metrics(), server)
port = server.add_insecure_port("127.0.0.1:0")
server.start()
with open(sys.argv[1], "w") as out:
    out.write(str(port))
server.wait_for_termination()
PY
OTLP_PID=$!
trap 'kill $OTLP_PID 2>/dev/null; wait $OTLP_PID 2>/dev/null; rm -rf "$TMP"' EXIT
for _ in $(seq 100); do [ -s "$TMP/otlp.port" ] && break; sleep 0.1; done
OTLP="http://127.0.0.1:$(cat "$TMP/otlp.port")"
ON="OTEL_EXPORTER_OTLP_ENDPOINT=$OTLP OTEL_EXPORTER_OTLP_PROTOCOL=grpc OTEL_SERVICE_NAME=bench"

run_mode() {  # run_mode NAME ROUND
  local name="$1" round="$2" env=""
  case "$name" in
    on100) env="$ON OTEL_TRACES_SAMPLER=always_on" ;;
    on10) env="$ON OTEL_TRACES_SAMPLER=traceidratio OTEL_TRACES_SAMPLER_ARG=0.1" ;;
  esac
  BENCH_WORK="$TMP/work-$name-$round" TARGETS=" " REPEATS=1 LAT_CONNS=0 WARMUP=2 \
    DURATION="${DURATION:-10}" MODES="${MODES:-nonstream stream}" PYTHON="$PYTHON" \
    DP_ENV="$env" bash "$ROOT/bench/dataplane.sh" >"$TMP/$name-$round.log" 2>&1 \
    || { echo "$name round $round failed:"; tail -20 "$TMP/$name-$round.log"; exit 1; }
  cat "$TMP"/work-"$name"-"$round"/results/*/runs.jsonl >>"$TMP/$name.jsonl"
  # Spans received so far: they must grow in the traced modes (tracing really on).
  echo "round $round: $name: $(cat "$TMP/otlp.port.spans" 2>/dev/null || echo 0) spans received in all"
}

modes=(off on100 on10)
for round in $(seq 1 "$ROUNDS"); do
  shift_by=$(( (round - 1) % 3 ))
  order=("${modes[@]:$shift_by}" "${modes[@]:0:$shift_by}")
  for name in "${order[@]}"; do
    run_mode "$name" "$round"
    echo "round $round: $name done"
  done
done

"$PYTHON" - "$TMP" <<'PY'
import json
import statistics
import sys
from pathlib import Path

runs = {}
for name in ("off", "on100", "on10"):
    for line in (Path(sys.argv[1]) / f"{name}.jsonl").read_text().splitlines():
        run = json.loads(line)
        if run["target"] == "meterline":
            runs.setdefault(f'{run["mode"]} c={run["conns"]}', {}).setdefault(name, []).append(run)

print(f"\n{'mode':16} {'tracing':8} {'req/s':>9} {'ratio':>6} {'CPU us/req':>11} {'ratio':>6}  runs")
for mode in sorted(runs):
    off_rps = off_cpu = None
    for name in ("off", "on100", "on10"):
        found = runs[mode].get(name, [])
        if not found:
            continue
        rps = statistics.median(r["rps"] for r in found)
        cpu = statistics.median(
            r["proxy_cores"] / r["rps"] * 1e6 for r in found if r.get("proxy_cores")
        )
        if name == "off":
            off_rps, off_cpu = rps, cpu
        each = ", ".join(f"{r['rps']:.0f}" for r in found)
        print(
            f"{mode:16} {name:8} {rps:9.1f} {rps / off_rps:6.3f} {cpu:11.1f}"
            f" {cpu / off_cpu:6.3f}  {each}"
        )
PY
