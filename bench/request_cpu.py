"""CPU cost per request of the data plane's OpenAI chat path, non-streamed and streamed.

    python bench/request_cpu.py                          # CPU µs/request of this tree
    python bench/request_cpu.py --tree /tmp/base --tree .   # A/B: the same script, two trees
    python bench/request_cpu.py --callgrind --tree /tmp/base --tree .   # instructions/request
    python bench/request_cpu.py --callgrind --keep /tmp/cg ...   # and keep callgrind's files
                                                   # (callgrind_annotate --inclusive=yes FILE)
    CALLGRIND_EXTRA="--cache-sim=yes" python bench/request_cpu.py --callgrind ...  # and cache
                                                   # misses (I1mr, D1mr, DLmr...) in the files

What runs in the measured process is what a data-plane worker runs for a request: the HTTP
server (``serve_http``), the Observability middleware, the Gateway (route matching, key-auth,
ai-proxy to an OpenAI provider, admission, metering into a usage sink) and the upstream HTTP
client, configured as in ``bench/dataplane.sh`` (global key-auth, one route /v1, ai-proxy
llm/v1/chat to openai). The load client (keep-alive connections, ``--concurrency`` of them)
and the fake OpenAI provider run in a child process built from THIS script's tree, so both
sides of an A/B talk to the same upstream and pay nothing for the client.

Each ``--tree`` is measured in its own subprocess with that tree (and its proto/) first on
sys.path; the script adapts to the module layout of older trees (e.g. ae3a415's flat
``dataplane.proxy`` / ``dataplane.httpserver``). Wall time on a shared machine is noise, so
the figures are this process's CPU time per request (all threads) or, with ``--callgrind``,
the instructions executed per request (valgrind's callgrind, collected only inside the timed
``eval``; repeatable whatever else the machine runs). Each figure is the timed part only,
after a warm-up, divided by the number of requests.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
KEY = "bench-consumer-key"
BODIES = {
    "nonstream": b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello bench"}]}',
    "stream": b'{"model":"gpt-4o-mini","stream":true,'
    b'"messages":[{"role":"user","content":"hello bench"}]}',
}

# The child: the fake OpenAI provider and the load client, from this script's tree.
_CHILD = r"""
import asyncio, sys
from dataplane.http.server import serve_http
from dataplane.testing.fake_openai import FakeProvider


class _Conn(asyncio.Protocol):
    def __init__(self, request):
        self.request = request
        self.buf = bytearray()
        self.done = None
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport

    def send(self):
        self.buf.clear()
        self.done = asyncio.get_running_loop().create_future()
        self.transport.write(self.request)
        return self.done

    def data_received(self, data):
        buf = self.buf
        buf += data
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(buf[:end]).lower()
        if b"transfer-encoding: chunked" in head:
            complete = buf.endswith(b"\r\n0\r\n\r\n")
        else:
            length = int(head.split(b"content-length:")[1].split(b"\r\n")[0])
            complete = len(buf) - end - 4 >= length
        if complete and not self.done.done():
            self.done.set_result(int(head[9:12]))

    def connection_lost(self, exc):
        if self.done is not None and not self.done.done():
            self.done.set_exception(ConnectionError("closed"))


async def load(host, port, path, body, requests, concurrency):
    request = (
        f"POST {path} HTTP/1.1\r\nhost: bench\r\napikey: {KEY}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    ).encode() + body
    loop = asyncio.get_running_loop()
    left = requests
    bad = 0

    async def worker():
        nonlocal left, bad
        _, conn = await loop.create_connection(lambda: _Conn(request), host, port)
        while left > 0:
            left -= 1
            if await conn.send() != 200:
                bad += 1
        conn.transport.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return bad


def otlp_receiver():
    # A discarding OTLP/gRPC receiver (--otel): its port, or 0 when the SDK is not there.
    try:
        from concurrent import futures

        import grpc
        from opentelemetry.proto.collector.metrics.v1 import (
            metrics_service_pb2 as m_pb2, metrics_service_pb2_grpc as m_grpc,
        )
        from opentelemetry.proto.collector.trace.v1 import (
            trace_service_pb2 as t_pb2, trace_service_pb2_grpc as t_grpc,
        )
    except ImportError:
        return 0

    class Traces(t_grpc.TraceServiceServicer):
        def Export(self, request, context):
            return t_pb2.ExportTraceServiceResponse()

    class Metrics(m_grpc.MetricsServiceServicer):
        def Export(self, request, context):
            return m_pb2.ExportMetricsServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    t_grpc.add_TraceServiceServicer_to_server(Traces(), server)
    m_grpc.add_MetricsServiceServicer_to_server(Metrics(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    RECEIVER.append(server)
    return port


RECEIVER = []


async def main():
    loop = asyncio.get_running_loop()
    otlp_port = otlp_receiver()
    async with serve_http(FakeProvider()) as address:
        print(address.url, otlp_port, flush=True)
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                return
            host, port, path, mode, requests, concurrency = line.split()
            body = BODIES[mode]
            bad = await load(host, int(port), path, body, int(requests), int(concurrency))
            print(bad, flush=True)


asyncio.run(main())
"""


def _child_source() -> str:
    return f"KEY = {KEY!r}\nBODIES = {BODIES!r}\n" + _CHILD


# ---------------------------------------------------------------------------------------------
# The worker: one tree, in its own process.


def _imports() -> dict[str, Any]:
    """The tree's classes, whichever module layout it has."""
    names: dict[str, Any] = {}
    try:  # the layered layout (dataplane.proxy.gateway, dataplane.http.server...)
        from dataplane.config.keys import hash_key
        from dataplane.http.server import serve_http
        from dataplane.observability.metrics import Observability, new_metrics
        from dataplane.proxy.compiler import compile_snapshot
        from dataplane.proxy.gateway import Gateway
    except ImportError:  # ae3a415 and before: flat modules (imported by name: mypy sees HEAD)
        flat = {
            "compile_snapshot": "dataplane.compiler",
            "serve_http": "dataplane.httpserver",
            "hash_key": "dataplane.keys",
            "Observability": "dataplane.metrics",
            "new_metrics": "dataplane.metrics",
            "Gateway": "dataplane.proxy",
        }
        from meterline.dataplane.v1 import snapshot_pb2

        names = {
            name: getattr(importlib.import_module(module), name) for name, module in flat.items()
        }
        names["snapshot_pb2"] = snapshot_pb2
        return names
    from meterline.dataplane.v1 import snapshot_pb2

    names.update(
        hash_key=hash_key,
        serve_http=serve_http,
        Observability=Observability,
        new_metrics=new_metrics,
        compile_snapshot=compile_snapshot,
        Gateway=Gateway,
        snapshot_pb2=snapshot_pb2,
    )
    return names


def _snapshot(m: dict[str, Any], upstream: str) -> Any:
    """bench/dataplane.sh's configuration: global key-auth, ai-proxy to openai on /v1."""
    pb = m["snapshot_pb2"]
    return pb.Snapshot(
        services=[pb.Service(id="svc", name="bench", url=upstream)],
        routes=[pb.Route(id="r", name="v1", service_id="svc", paths=["/v1"])],
        consumers=[pb.Consumer(id="c", username="bench-consumer", key_hashes=[m["hash_key"](KEY)])],
        plugins=[
            pb.Plugin(
                id="ka",
                name="key-auth",
                enabled=True,
                key_auth=pb.KeyAuthConfig(key_names=["apikey"]),
            ),
            pb.Plugin(
                id="ai",
                name="ai-proxy",
                service_id="svc",
                enabled=True,
                ai_proxy=pb.AiProxyConfig(
                    route_type="llm/v1/chat",
                    auth=pb.AiProxyAuth(
                        header_name="Authorization", header_value="Bearer sk-bench-upstream"
                    ),
                    model=pb.AiProxyModel(
                        provider="openai",
                        options=pb.AiProxyModelOptions(
                            upstream_url=f"{upstream}/v1/chat/completions"
                        ),
                    ),
                ),
            ),
        ],
    )


def worker(args: argparse.Namespace) -> None:
    m = _imports()
    child = subprocess.Popen(
        [sys.executable, "-c", _child_source()],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'proto'}"},
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    upstream, otlp_port = child.stdout.readline().split()
    events: list[Any] = []
    metrics = m["new_metrics"]()
    tracing = _tracing(args.otel, otlp_port)
    extra = {} if tracing is None else {"tracing": tracing}
    gateway = m["Gateway"](node_id="bench", usage_sink=events.append, metrics=metrics, **extra)
    gateway.apply(m["compile_snapshot"](_snapshot(m, upstream), version="v1"))
    app = m["Observability"](gateway, metrics=metrics, ready=lambda: True)
    # The data plane's own GC tuning (freeze what start-up made, higher thresholds), as
    # `python -m dataplane` does before serving: without it collections dominate the figures.
    tune_gc = getattr(importlib.import_module("dataplane.cli"), "_tune_gc", None)
    if tune_gc is not None:
        tune_gc()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    results: dict[str, float] = {}
    host, port = "", 0

    async def run(mode: str, requests: int) -> None:
        assert child.stdin is not None and child.stdout is not None
        child.stdin.write(
            f"{host} {port} /v1/chat/completions {mode} {requests} {args.concurrency}\n"
        )
        child.stdin.flush()
        bad = await loop.run_in_executor(None, child.stdout.readline)
        if bad.strip() != "0":
            raise SystemExit(f"{mode}: {bad.strip()} of {requests} requests were not 200")

    stack = contextlib.AsyncExitStack()
    address = loop.run_until_complete(stack.enter_async_context(m["serve_http"](app)))
    host, port = address.host, address.port
    for mode in args.modes:
        loop.run_until_complete(run(mode, args.warmup))
        _flush(tracing)
        events.clear()
        cpu = time.process_time()
        exporter_cpu = _exporter_cpu(tracing)
        # The callgrind toggle (--toggle-collect=builtin_eval): the timed part only, with
        # --otel the records handed to the exporter process (and its acknowledgement) too.
        timed = run(mode, args.requests)
        eval(
            "(run(timed), flush(tracing))",
            {"run": loop.run_until_complete, "timed": timed, "flush": _flush, "tracing": tracing},
        )
        results[mode] = (time.process_time() - cpu) / args.requests * 1e6
        if tracing is not None:
            results[f"{mode} exporter"] = (
                (_exporter_cpu(tracing) - exporter_cpu) / args.requests * 1e6
            )
        # Usage events: one or two per request (trees differ), never none.
        if not events or len(events) % args.requests:
            raise SystemExit(f"{mode}: {len(events)} usage events for {args.requests} requests")
        events.clear()
    loop.run_until_complete(stack.aclose())
    loop.run_until_complete(gateway.aclose())
    loop.close()
    if tracing is not None:
        tracing.shutdown()  # while the child's receiver still answers
    child.stdin.close()
    child.wait(timeout=10)
    print(json.dumps(results), flush=True)


def _tracing(mode: str, otlp_port: str) -> Any:
    """--otel: the data plane's Tracing as the OTEL_* variables configure it, exporting to the
    child's receiver; its thread's drains moved into the timed part (``_flush``), so callgrind's
    toggle counts them."""
    if mode == "off":
        return None
    tracing_module = importlib.import_module("dataplane.observability.tracing")
    setattr(tracing_module, "_DRAIN_INTERVAL_S", 1e6)  # noqa: B010 (a module read at run time)
    for name in [n for n in os.environ if n.startswith("OTEL_")]:
        del os.environ[name]
    os.environ.update(
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{otlp_port}",
        OTEL_EXPORTER_OTLP_PROTOCOL="grpc",
        OTEL_TRACES_SAMPLER="always_on" if mode == "on100" else "traceidratio",
        OTEL_TRACES_SAMPLER_ARG="0.1",
    )
    return tracing_module.Tracing.from_environment()


def _flush(tracing: Any) -> None:
    if tracing is not None and not tracing.force_flush(600):
        raise SystemExit("the exporter process did not flush")


def _exporter_cpu(tracing: Any) -> float:
    """CPU seconds of the exporter process so far (0 without one)."""
    pid = getattr(tracing, "exporter_pid", None)
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------------------------
# The driver: every tree, every mode, printed side by side.


def _callgrind_total(path: str) -> int:
    text = Path(path).read_text()
    found = re.search(r"^(?:summary|totals):\s*(\d+)", text, re.M)
    if found is None:
        raise SystemExit(f"no totals in {path}")
    return int(found.group(1))


def measure(tree: Path, args: argparse.Namespace) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": f"{tree}:{tree / 'proto'}"}
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        "--requests",
        str(args.requests),
        "--warmup",
        str(args.warmup),
        "--concurrency",
        str(args.concurrency),
        *(["--otel", args.otel] if args.otel != "off" else []),
        "--modes",
        *args.modes,
    ]
    if not args.callgrind:
        out = subprocess.run(command, env=env, cwd=tree, capture_output=True, text=True)
        if out.returncode:
            raise SystemExit(f"{tree}: worker failed\n{out.stderr[-3000:]}")
        return dict(json.loads(out.stdout.strip().splitlines()[-1]))
    figures: dict[str, float] = {}
    for mode in args.modes:  # one valgrind run per mode: one toggle count each
        with tempfile.TemporaryDirectory() as work:
            out_file = f"{work}/callgrind.out"
            if args.keep is not None:
                args.keep.mkdir(parents=True, exist_ok=True)
                out_file = str(args.keep / f"callgrind.{tree.name}.{mode}")
            subprocess.run(
                [
                    "valgrind",
                    "--tool=callgrind",
                    "--collect-atstart=no",
                    "--toggle-collect=builtin_eval",
                    *os.environ.get("CALLGRIND_EXTRA", "").split(),
                    f"--callgrind-out-file={out_file}",
                    *command[: -len(args.modes)],
                    mode,
                ],
                env=env,
                cwd=tree,
                check=True,
                capture_output=True,
                text=True,
            )
            figures[mode] = _callgrind_total(out_file) / args.requests
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tree", action="append", type=Path, help="a checkout (repeatable)")
    parser.add_argument("--requests", type=int, default=0, help="timed requests per mode")
    parser.add_argument("--warmup", type=int, default=0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--modes", nargs="+", default=["nonstream", "stream"], choices=BODIES)
    parser.add_argument("--callgrind", action="store_true", help="instructions, not CPU µs")
    parser.add_argument(
        "--otel",
        choices=("off", "on100", "on10"),
        default="off",
        help="OpenTelemetry tracing at 100%% or 10%% sampling, exported to a discarding receiver",
    )
    parser.add_argument("--keep", type=Path, help="with --callgrind: keep its files in this dir")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.requests:
        args.requests = 300 if args.callgrind or args.worker else 3000
    if not args.warmup:
        args.warmup = 100 if args.callgrind or args.worker else 500
    if args.worker:
        worker(args)
        return
    trees = [tree.resolve() for tree in (args.tree or [ROOT])]
    unit = "instructions" if args.callgrind else "CPU µs"
    rows = []
    for tree in trees:
        rev = subprocess.run(
            ["git", "-C", str(tree), "log", "--oneline", "-1", "--format=%h"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(tree), "diff", "--quiet"]).returncode != 0
        figures = measure(tree, args)
        rows.append((f"{rev}{'+' if dirty else ''} {tree}", figures))
        cells = "  ".join(f"{mode}={value:,.0f}" for mode, value in figures.items())
        print(f"{rows[-1][0]}: {unit}/request {cells}", flush=True)
    if len(rows) > 1:
        base = rows[0][1]
        for name, figures in rows[1:]:
            ratios = "  ".join(f"{mode}={figures[mode] / base[mode]:.3f}" for mode in args.modes)
            print(f"{name} / first: {ratios}")


if __name__ == "__main__":
    main()
