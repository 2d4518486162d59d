"""What OpenTelemetry tracing costs the data plane: off vs on (100% and 10% sampling), one run.

    python bench/tracing_overhead.py [--rounds 7] [--requests 1500] [--concurrency 16]
    valgrind --tool=callgrind --collect-atstart=no --toggle-collect=builtin_eval \
        python bench/tracing_overhead.py --only on100 --requests 1000     # instruction counts
    valgrind --tool=callgrind --trace-children=yes \
        python bench/tracing_overhead.py --only on100 --requests 1000     # the exporter child's

A/B interleaved: the gateway runs in this process, called as an ASGI app by ``--concurrency``
tasks (no client sockets, so the gateway's own cost is most of what is measured); the fake
OpenAI provider and a discarding OTLP/gRPC receiver run in a child process. Four gateways
share that upstream: ``off`` and ``off2`` (tracing None: the two give the noise floor),
``on100`` (OTEL_TRACES_SAMPLER=always_on) and ``on10`` (traceidratio 0.1); each traced gateway
also records the gen_ai.* metrics for every request, and has its own exporter child process
(dataplane.observability.otel_process). Each round runs every mode once, in a rotated order,
timed until its spans and metrics are exported (force_flush: the child acknowledges).
Printed: the medians over rounds of req/s and of this process's CPU time per request, all its
threads, each with its ratio to ``off``, that CPU split in two (the event loop's thread: the
request path; every other thread: the tracing thread that hands the records to the child),
and apart the exporter child's CPU per request (from /proc/PID/stat: the response ids, span
encoding, histograms, OTLP export, gRPC's threads), which runs on another core.

``--only MODE`` runs one mode (after ``--warmup`` requests) with its timed part inside
``eval`` (the records handed to the child, and the wait for its acknowledgement, in that call
too) for callgrind's instruction counts, which are repeatable whatever else runs. Callgrind
also counts the ``eval`` calls made while modules are imported (namedtuple's, more with the
SDK imported): subtract the count of ``--requests 0`` of the same mode, then divide by the
requests. Callgrind follows only this process unless ``--trace-children=yes``; the exporter
child never calls ``eval``, so count it whole (no toggle; its file's ``cmd:`` line names
``dataplane.observability.otel_process``) and subtract its count at ``--requests 0`` too.
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
# --tree DIR: the gateway and tracing of another checkout under this harness (an A/B with the
# same harness: the code before the exporter process has no exporter_pid, and a force_flush
# without a deadline that returns None).
if "--tree" in sys.argv:
    ROOT = Path(sys.argv[sys.argv.index("--tree") + 1]).resolve()
sys.path[:0] = [str(ROOT), str(ROOT / "proto")]

import dataplane.observability.tracing as tracing_module  # noqa: E402
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
        "scheme": "http",
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


def _median_ratio(values: list[float], base: list[float]) -> tuple[float, float]:
    median = statistics.median(values)
    return median, median / statistics.median(base)


def flush(tracing: Tracing, timeout: float) -> bool:
    """``tracing.force_flush``: True once everything is exported (--tree: the code before the
    exporter process flushes synchronously and returns None)."""
    try:
        done = tracing.force_flush(timeout=timeout)
    except TypeError:
        done = tracing.force_flush()
    return done is not False


def tune_gc(how: str) -> None:
    """``--gc dataplane``: the collector as the data plane's CLI sets it (dataplane.cli._tune_gc:
    start-up objects frozen, gen-0 threshold 20,000); ``default``: Python's."""
    if how == "dataplane":
        from dataplane import cli

        cli._tune_gc()


def child_cpu_s(tracing: Tracing | None) -> float:
    """CPU time (user + system, all its threads) of the exporter child so far."""
    pid = getattr(tracing, "exporter_pid", None)
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def only(
    mode: str,
    upstream: str,
    otlp: str,
    requests: int,
    concurrency: int,
    warmup: int,
    gc_mode: str = "default",
) -> None:
    """One mode, its timed part inside ``eval`` (callgrind --toggle-collect=builtin_eval):
    the load and the flush that hands its records to the exporter child and waits until the
    child exported them (the child's own work is not in this process's count: its CPU is
    printed apart, and callgrind counts it with --trace-children=yes)."""
    # The tracing work happens in the eval'd flush, not in the tracing thread meanwhile.
    tracing_module._DRAIN_INTERVAL_S = 1e6  # type: ignore[misc]
    tracing = None
    if mode == "on100":
        tracing = traced(otlp, "always_on")
    elif mode == "on10":
        tracing = traced(otlp, "traceidratio", "0.1")
    gateway = Gateway(node_id="bench", usage_sink=lambda event: None, tracing=tracing)
    gateway.apply(compile_snapshot(snapshot(upstream), version="v1"))
    loop = asyncio.new_event_loop()
    tune_gc(gc_mode)
    # A fixed warm-up, whatever --requests: the child's whole-run count minus that of
    # --requests 0 is then the timed requests' work alone.
    loop.run_until_complete(load(gateway, warmup, concurrency))
    if tracing is not None:
        assert flush(tracing, 1800)

    def timed() -> None:
        if requests:
            loop.run_until_complete(load(gateway, requests, concurrency))
        if tracing is not None:
            # Slow under valgrind with --trace-children=yes: a long deadline.
            assert flush(tracing, 1800)

    cpu_start, child_start = time.process_time(), child_cpu_s(tracing)
    eval("timed()", {"timed": timed})  # the callgrind toggle
    per = max(requests, 1)
    print(
        f"{mode}: data plane {(time.process_time() - cpu_start) / per * 1e6:.1f} us CPU/request,"
        f" exporter child {(child_cpu_s(tracing) - child_start) / per * 1e6:.1f} us CPU/request"
        f" (pid {getattr(tracing, 'exporter_pid', None)})"
    )
    loop.run_until_complete(gateway.aclose())
    loop.close()
    if tracing is not None:
        try:
            tracing.shutdown(timeout=600)  # the child exits (and callgrind writes its counts)
        except TypeError:  # --tree: before the exporter process
            tracing.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=1500)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--only", choices=("off", "on100", "on10"))
    parser.add_argument("--warmup", type=int, default=250, help="--only: requests before")
    parser.add_argument(
        "--gc",
        choices=("default", "dataplane"),
        default="default",
        help="the cyclic collector: Python's thresholds, or the data plane CLI's",
    )
    parser.add_argument("--tree", help="import the gateway and tracing from this checkout")
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'proto'}"}
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
    )
    assert child.stdout is not None and child.stdin is not None
    upstream, otlp_port = child.stdout.readline().decode().split()
    otlp = f"http://127.0.0.1:{otlp_port}"
    try:
        if args.only:
            only(
                args.only,
                upstream,
                otlp,
                args.requests,
                args.concurrency,
                args.warmup,
                args.gc,
            )
        else:
            asyncio.run(interleaved(args, upstream, otlp))
    finally:
        child.stdin.close()
        child.wait(timeout=10)


async def interleaved(args: argparse.Namespace, upstream: str, otlp: str) -> None:
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
    tune_gc(args.gc)
    try:
        for gateway in gateways.values():  # warm-up: connections, caches
            await load(gateway, args.requests // 4, args.concurrency)
        rates: dict[str, list[float]] = {mode: [] for mode in gateways}
        cpu: dict[str, list[float]] = {mode: [] for mode in gateways}
        # Of that CPU: the event loop's thread (the request path, the metrics it records), and
        # every other thread (the tracing thread and the flush encoding and sending the spans,
        # gRPC's own threads).
        loop_cpu: dict[str, list[float]] = {mode: [] for mode in gateways}
        other_cpu: dict[str, list[float]] = {mode: [] for mode in gateways}
        # The exporter child's (another process, another core).
        child_cpu: dict[str, list[float]] = {mode: [] for mode in gateways}
        modes = list(gateways)
        for round_ in range(args.rounds):
            order = modes[round_ % len(modes) :] + modes[: round_ % len(modes)]
            for mode in order:
                tracing = tracings[mode]
                cpu_start, loop_start = time.process_time(), time.thread_time()
                child_start = child_cpu_s(tracing)
                start = time.perf_counter()
                await load(gateways[mode], args.requests, args.concurrency)
                if tracing is not None:
                    # Timed too: what is still pending is encoded and exported in this turn.
                    assert await asyncio.to_thread(flush, tracing, 60)
                rates[mode].append(args.requests / (time.perf_counter() - start))
                # CPU of this process: event loop, tracing thread, gRPC's threads.
                total = (time.process_time() - cpu_start) / args.requests * 1e6
                on_loop = (time.thread_time() - loop_start) / args.requests * 1e6
                cpu[mode].append(total)
                loop_cpu[mode].append(on_loop)
                other_cpu[mode].append(total - on_loop)
                child_cpu[mode].append((child_cpu_s(tracing) - child_start) / args.requests * 1e6)
            print(
                f"round {round_ + 1}: "
                + "  ".join(f"{m} {rates[m][-1]:.0f} req/s {cpu[m][-1]:.0f} us" for m in modes),
                flush=True,
            )
        print(f"\nmedians over {args.rounds} rounds x {args.requests} requests")
        print(
            "  mode      req/s  ratio   CPU us/req  ratio   event loop  other threads"
            "  exporter child"
        )
        for mode in modes:
            rate, rate_ratio = _median_ratio(rates[mode], rates["off"])
            mode_cpu, cpu_ratio = _median_ratio(cpu[mode], cpu["off"])
            print(
                f"  {mode:6} {rate:8.0f} {rate_ratio:6.3f} {mode_cpu:10.1f} {cpu_ratio:6.3f}"
                f" {statistics.median(loop_cpu[mode]):12.1f}"
                f" {statistics.median(other_cpu[mode]):14.1f}"
                f" {statistics.median(child_cpu[mode]):15.1f}"
            )
    finally:
        for gateway in gateways.values():
            await gateway.aclose()
        for tracing in tracings.values():
            if tracing is not None:
                tracing.shutdown()


if __name__ == "__main__":
    main()
