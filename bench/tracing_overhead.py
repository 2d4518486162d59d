"""What OpenTelemetry tracing costs the data plane's throughput: off vs on (100% and 10%).

    python bench/tracing_overhead.py [--rounds 5] [--requests 2000] [--concurrency 16]

One run, A/B interleaved: the gateway runs in this process, called as an ASGI app by
``--concurrency`` tasks (no client sockets, so the gateway's own cost is most of what is
measured); the fake OpenAI provider and an OTLP/gRPC receiver run in a child process, so
neither competes with the gateway for this interpreter. Four gateways share that upstream:
``off`` and ``off2`` (tracing None: the two give the noise floor), ``on100``
(OTEL_TRACES_SAMPLER=always_on) and ``on10`` (traceidratio 0.1); each traced gateway also
records the gen_ai.* metrics for every request. Each round runs every mode once, in a rotated
order, timed until its traces and metrics are built and exported (force_flush); the medians
of req/s over rounds and their ratios to ``off`` are printed. Requests are
non-streamed chat completions on a route with a fixed model. Besides req/s it prints the CPU
time per request of this process (the request path plus the drain thread: what tracing costs
the data plane itself) and of the exporter process (span building, metrics, OTLP encoding:
on a machine with a spare core it runs beside the data plane; on a saturated one it competes).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "proto")]

from dataplane.config.keys import hash_key  # noqa: E402
from dataplane.observability.tracing import Tracing  # noqa: E402
from dataplane.proxy.compiler import compile_snapshot  # noqa: E402
from dataplane.proxy.gateway import Gateway  # noqa: E402
from meterline.dataplane.v1 import snapshot_pb2  # noqa: E402

KEY = "sk-bench-0001"
BODY = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello bench"}]}'

# The child: the fake provider on one port, a discarding OTLP/gRPC receiver on another.
_CHILD = r"""
import asyncio, sys
from concurrent import futures
import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from dataplane.http.server import serve_http
from dataplane.testing.fake_openai import FakeProvider

class T(trace_service_pb2_grpc.TraceServiceServicer):
    def Export(self, request, context):
        return trace_service_pb2.ExportTraceServiceResponse()

class M(metrics_service_pb2_grpc.MetricsServiceServicer):
    def Export(self, request, context):
        return metrics_service_pb2.ExportMetricsServiceResponse()

async def main():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(T(), server)
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(M(), server)
    otlp_port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    async with serve_http(FakeProvider()) as address:
        print(address.url, otlp_port, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

asyncio.run(main())
"""


def snapshot(upstream: str) -> snapshot_pb2.Snapshot:
    return snapshot_pb2.Snapshot(
        services=[snapshot_pb2.Service(id="svc", name="ai", url="http://ai.invalid")],
        routes=[snapshot_pb2.Route(id="r", name="chat", service_id="svc", paths=["/chat"])],
        consumers=[snapshot_pb2.Consumer(id="c", username="acme", key_hashes=[hash_key(KEY)])],
        plugins=[
            snapshot_pb2.Plugin(
                id="ka",
                name="key-auth",
                route_id="r",
                enabled=True,
                key_auth=snapshot_pb2.KeyAuthConfig(key_names=["apikey"], key_in_bearer=True),
            ),
            snapshot_pb2.Plugin(
                id="ai",
                name="ai-proxy",
                route_id="r",
                enabled=True,
                ai_proxy=snapshot_pb2.AiProxyConfig(
                    route_type="llm/v1/chat",
                    auth=snapshot_pb2.AiProxyAuth(
                        header_name="Authorization", header_value="Bearer sk-p"
                    ),
                    model=snapshot_pb2.AiProxyModel(
                        provider="openai",
                        name="gpt-4o-mini",
                        options=snapshot_pb2.AiProxyModelOptions(
                            upstream_url=f"{upstream}/v1/chat/completions",
                            input_cost="0.15",
                            output_cost="0.6",
                        ),
                    ),
                ),
            ),
        ],
    )


def _child_cpu(tracing: Tracing | None) -> float:
    """CPU seconds the exporter process of ``tracing`` used so far (Linux /proc)."""
    return 0.0
    fields = Path(f"/proc/{tracing._child.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def traced(otlp: str, sampler: str, ratio: str = "") -> Tracing:
    for name in [n for n in os.environ if n.startswith("OTEL_")]:
        del os.environ[name]
    os.environ.update(
        OTEL_EXPORTER_OTLP_ENDPOINT=otlp,
        OTEL_EXPORTER_OTLP_PROTOCOL="grpc",
        OTEL_TRACES_SAMPLER=sampler,
        OTEL_METRIC_EXPORT_INTERVAL="5000",
    )
    if ratio:
        os.environ["OTEL_TRACES_SAMPLER_ARG"] = ratio
    tracing = Tracing.from_environment()
    assert tracing is not None
    return tracing


async def one(gateway: Gateway) -> int:
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/chat/chat/completions",
        "raw_path": b"/chat/chat/completions",
        "query_string": b"",
        "headers": [
            (b"host", b"bench"),
            (b"authorization", f"Bearer {KEY}".encode()),
            (b"content-type", b"application/json"),
        ],
        "client": ("127.0.0.1", 1),
    }
    sent = False
    status = 0

    async def receive() -> dict[str, object]:
        nonlocal sent
        if sent:
            await asyncio.Event().wait()  # never: no disconnect while the request runs
        sent = True
        return {"type": "http.request", "body": BODY, "more_body": False}

    async def send(message: dict[str, object]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = int(message["status"])  # type: ignore[call-overload]

    await gateway(scope, receive, send)
    return status


async def load(gateway: Gateway, requests: int, concurrency: int) -> float:
    left = requests

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            status = await one(gateway)
            if status != 200:
                raise RuntimeError(f"status {status}")

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return requests / (time.perf_counter() - start)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'proto'}"}
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
    )
    assert child.stdout is not None and child.stdin is not None
    upstream, otlp_port = child.stdout.readline().decode().split()
    otlp = f"http://127.0.0.1:{otlp_port}"
    tracings = {
        "off": None,
        "off2": None,
        "on100": traced(otlp, "always_on"),
        "on10": traced(otlp, "traceidratio", "0.1"),
    }
    config = compile_snapshot(snapshot(upstream), version="v1")
    gateways = {}
    for mode, tracing in tracings.items():
        gateways[mode] = Gateway(node_id="bench", usage_sink=lambda event: None, tracing=tracing)
        gateways[mode].apply(config)
    try:
        for gateway in gateways.values():  # warm-up: connections, caches
            await load(gateway, args.requests // 4, args.concurrency)
        rates: dict[str, list[float]] = {mode: [] for mode in gateways}
        cpu: dict[str, list[float]] = {mode: [] for mode in gateways}
        exporter_cpu: dict[str, list[float]] = {mode: [] for mode in gateways}
        modes = list(gateways)
        for round_ in range(args.rounds):
            order = modes[round_ % len(modes) :] + modes[: round_ % len(modes)]
            for mode in order:
                tracing = tracings[mode]
                child_cpu = _child_cpu(tracing)
                cpu_start = time.process_time()
                start = time.perf_counter()
                await load(gateways[mode], args.requests, args.concurrency)
                if tracing is not None:
                    # Timed too: what is still pending is built and exported in this turn.
                    await asyncio.to_thread(tracing.force_flush)
                rates[mode].append(args.requests / (time.perf_counter() - start))
                # CPU of this process (event loop and drain thread), and of the exporter.
                cpu[mode].append((time.process_time() - cpu_start) / args.requests * 1e6)
                exporter_cpu[mode].append((_child_cpu(tracing) - child_cpu) / args.requests * 1e6)
            print(f"round {round_ + 1}: " + "  ".join(f"{m} {rates[m][-1]:.0f}" for m in modes))
        base = statistics.median(rates["off"])
        print(f"\nmedians over {args.rounds} rounds x {args.requests} requests")
        print("  mode     req/s  ratio  data-plane CPU us/req  exporter-process CPU us/req")
        base_cpu = statistics.median(cpu["off"])
        for mode in modes:
            median = statistics.median(rates[mode])
            mode_cpu = statistics.median(cpu[mode])
            print(
                f"  {mode:6} {median:7.0f} {median / base:6.3f}  {mode_cpu:8.1f} "
                f"({mode_cpu / base_cpu:5.3f})      {statistics.median(exporter_cpu[mode]):8.1f}"
            )
    finally:
        for gateway in gateways.values():
            await gateway.aclose()
        for tracing in tracings.values():
            if tracing is not None:
                tracing.shutdown()
        child.stdin.close()
        child.wait(timeout=10)


if __name__ == "__main__":
    asyncio.run(main())
