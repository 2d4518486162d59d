#!/usr/bin/env bash
# What OpenTelemetry tracing costs a real data plane: off, on at 100% and on at 10% sampling,
# through bench/dataplane.sh (wrk, key-auth, ai-proxy, metering, usage streamed to a control
# plane), the three modes interleaved in one run (rotated order per round).
#
#   ROUNDS=3 DURATION=8 bash bench/tracing_ab.sh        # needs wrk (apt-get install -y wrk)
#
# "on" exports the data plane's spans and GenAI metrics over OTLP/gRPC to a receiver started
# here that keeps the trace exports' bytes unparsed; only the data plane gets the OTEL_*
# variables (DP_ENV). After each run the spans it exported are counted (at 100% sampling at
# least two per timed request, else a line says the exporter fell behind). Printed per load
# mode: the median req/s and the data plane's CPU per request (its process tree, so the
# exporter process it starts is counted), each with its ratio to "off": of the medians, and
# "paired", the median of each round's ratio to that round's "off" run. Only ratios within one
# run compare: these machines are noisy. DURATION, MODES and CONNS pass through to run.sh;
# TRACING (default "off on100 on10") picks the modes, among them on10nometrics (10% sampling,
# no GenAI metrics) and metricsonly (no spans), to take the cost apart. DP_EXTRA adds variables
# to the data plane's environment in every mode (e.g. PYTHONPATH for a sitecustomize probe).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROUNDS="${ROUNDS:-3}"
PYTHON="${PYTHON:-python3}"
export BENCH_PEERS="${BENCH_PEERS:-$ROOT/../shared/bench-peers}"
export PYTHONPATH="$ROOT:$ROOT/proto${PYTHONPATH:+:$PYTHONPATH}"
TMP="$(mktemp -d -t meterline-tracing-ab-XXXXXX)"

# The OTLP/gRPC receiver (the collector's TraceService and MetricsService). It shares these
# two cores with the data plane, where a real collector runs elsewhere: so it does the least it
# can, keeping each trace export's bytes unparsed (length-prefixed, in a file) and answering
# with an empty response; the spans are counted from that file between runs.
"$PYTHON" - "$TMP/otlp.port" >"$TMP/otlp.log" 2>&1 <<'PY' &
import struct
import sys
from concurrent import futures

import grpc

out = open(sys.argv[1] + ".traces", "ab", buffering=0)


def traces(request: bytes, context) -> bytes:
    out.write(struct.pack("<I", len(request)) + request)
    return b""  # an empty ExportTraceServiceResponse


def metrics(request: bytes, context) -> bytes:
    return b""


def service(name, handler):
    return grpc.method_handlers_generic_handler(
        f"opentelemetry.proto.collector.{name}",
        {"Export": grpc.unary_unary_rpc_method_handler(handler)},  # bytes in, bytes out
    )


server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
server.add_generic_rpc_handlers(
    (
        service("trace.v1.TraceService", traces),
        service("metrics.v1.MetricsService", metrics),
    )
)
port = server.add_insecure_port("127.0.0.1:0")
server.start()
with open(sys.argv[1], "w") as out_port:
    out_port.write(str(port))
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
    # Parts of "on", to take its cost apart (TRACING="off on10 on10nometrics metricsonly"):
    on10nometrics) env="$ON OTEL_TRACES_SAMPLER=traceidratio OTEL_TRACES_SAMPLER_ARG=0.1 OTEL_METRICS_EXPORTER=none" ;;
    metricsonly) env="$ON OTEL_TRACES_EXPORTER=none" ;;
    off) ;;
    *) echo "unknown tracing mode $name (off on100 on10 on10nometrics metricsonly)"; exit 2 ;;
  esac
  BENCH_WORK="$TMP/work-$name-$round" TARGETS=" " REPEATS=1 LAT_CONNS=0 WARMUP=2 \
    DURATION="${DURATION:-10}" MODES="${MODES:-nonstream stream}" PYTHON="$PYTHON" \
    DP_ENV="$env ${DP_EXTRA:-}" bash "$ROOT/bench/dataplane.sh" >"$TMP/$name-$round.log" 2>&1 \
    || { echo "$name round $round failed:"; tail -20 "$TMP/$name-$round.log"; exit 1; }
  cat "$TMP"/work-"$name"-"$round"/results/*/runs.jsonl >>"$TMP/$name.jsonl"
  # The spans this run's data plane exported (it flushes them as it stops): at 100% sampling
  # at least two per timed request (the request and its attempt; the warm-up adds more). Fewer
  # would mean the exporter fell behind and dropped spans.
  local before="$spans" requests
  spans="$("$PYTHON" - "$TMP/otlp.port.traces" <<'PY'
import struct
import sys

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

data = open(sys.argv[1], "rb").read() if __import__("os").path.exists(sys.argv[1]) else b""
count = offset = 0
while offset < len(data):
    (size,) = struct.unpack_from("<I", data, offset)
    request = ExportTraceServiceRequest.FromString(data[offset + 4 : offset + 4 + size])
    count += sum(len(scope.spans) for rs in request.resource_spans for scope in rs.scope_spans)
    offset += 4 + size
print(count)
PY
)"
  requests="$("$PYTHON" -c 'import json, sys
print(sum(json.loads(line)["requests"] for line in open(sys.argv[1])))' \
    "$(ls "$TMP"/work-"$name"-"$round"/results/*/runs.jsonl)")"
  echo "round $round: $name: $((spans - before)) spans exported for $requests timed requests"
  if [ "$name" = on100 ] && [ $((spans - before)) -lt $((2 * requests)) ]; then
    echo "round $round: on100: fewer than two spans per request: the exporter fell behind"
  fi
}
spans=0

read -r -a modes <<<"${TRACING:-off on100 on10}"
[ "${modes[0]}" = off ] || { echo "TRACING must start with off (the baseline)"; exit 2; }
for round in $(seq 1 "$ROUNDS"); do
  shift_by=$(( (round - 1) % ${#modes[@]} ))
  order=("${modes[@]:$shift_by}" "${modes[@]:0:$shift_by}")
  for name in "${order[@]}"; do
    run_mode "$name" "$round"
    echo "round $round: $name done"
  done
done

"$PYTHON" - "$TMP" "${modes[@]}" <<'PY'
import json
import statistics
import sys
from pathlib import Path

runs = {}
for name in sys.argv[2:]:
    for line in (Path(sys.argv[1]) / f"{name}.jsonl").read_text().splitlines():
        run = json.loads(line)
        if run["target"] == "meterline":
            runs.setdefault(f'{run["mode"]} c={run["conns"]}', {}).setdefault(name, []).append(run)

print(
    f"\n{'mode':16} {'tracing':8} {'req/s':>9} {'ratio':>6} {'paired':>6} {'CPU us/req':>11}"
    f" {'ratio':>6} {'paired':>6}  runs"
)
for mode in sorted(runs):
    off = runs[mode].get("off", [])
    off_rps = statistics.median(r["rps"] for r in off)
    off_cpu = statistics.median(r["proxy_cores"] / r["rps"] * 1e6 for r in off)
    for name in sys.argv[2:]:
        found = runs[mode].get(name, [])
        if not found:
            continue
        rps = statistics.median(r["rps"] for r in found)
        cpu = statistics.median(r["proxy_cores"] / r["rps"] * 1e6 for r in found)
        # Each round's ratio to the same round's "off" (run next to it), then their median:
        # steadier than the ratio of medians when the machine's speed drifts between rounds.
        paired_rps = statistics.median(r["rps"] / o["rps"] for r, o in zip(found, off))
        paired_cpu = statistics.median(
            (r["proxy_cores"] / r["rps"]) / (o["proxy_cores"] / o["rps"])
            for r, o in zip(found, off)
        )
        each = ", ".join(f"{r['rps']:.0f}" for r in found)
        print(
            f"{mode:16} {name:8} {rps:9.1f} {rps / off_rps:6.3f} {paired_rps:6.3f}"
            f" {cpu:11.1f} {cpu / off_cpu:6.3f} {paired_cpu:6.3f}  {each}"
        )
PY
