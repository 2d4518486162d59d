"""The data plane's HTTP server against the uvicorn setup it replaced, on a trivial app.

    python bench/http_server.py [--repeats 3] [--duration 8] [--connections 32]

Starts the same ASGI app (reads the body, answers a ~600-byte JSON) in two subprocesses on
uvloop: (a) uvicorn configured exactly as ``serve_http`` configured it before (httptools, no
access log, no proxy headers, loop="none", a 1 s date tick) and (b) ``dataplane.http.server``.
Drives each with ``wrk -t1 -c32 -d8s`` and ../shared/bench-peers/post.lua, interleaved, and
prints req/s, p99 and the server process's CPU per request (utime+stime from /proc), the
medians and the ratio. Traffic stays on 127.0.0.1:18100-18199. The server is pinned to the
last core and wrk to the first when the machine has two or more.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import pathlib
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent
POST_LUA = ROOT.parent / "shared" / "bench-peers" / "post.lua"
PORTS = {"uvicorn": 18101, "meterline": 18102}
RESPONSE = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1764201600,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Benchmarking an AI gateway on loopback measures its own "
                    "overhead, since the network adds almost nothing.",
                    "refusal": None,
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 31,
            "completion_tokens": 18,
            "total_tokens": 49,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
        },
        "service_tier": "default",
        "system_fingerprint": "fp_bench00000",
    },
    separators=(",", ":"),
).encode()


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Read the whole body, answer a fixed JSON document."""
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(RESPONSE)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": RESPONSE, "more_body": False})


@contextlib.asynccontextmanager
async def serve_uvicorn(port: int) -> AsyncIterator[None]:
    """uvicorn as ``dataplane.http.server.serve_http`` ran it before it was replaced."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(2048)
    sock.setblocking(False)
    config = uvicorn.Config(
        app,
        loop="none",
        http="httptools",
        ws="none",
        lifespan="off",
        access_log=False,
        server_header=False,
        proxy_headers=False,
        log_config=None,
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    config.load()
    server.lifespan = config.lifespan_class(config)

    async def tick() -> None:
        while True:
            await server.on_tick(0)
            await asyncio.sleep(1.0)

    try:
        await server.startup(sockets=[sock])
        ticker = asyncio.create_task(tick())
        try:
            yield
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
            await server.shutdown(sockets=[sock])
    finally:
        sock.close()


@contextlib.asynccontextmanager
async def serve_meterline(port: int) -> AsyncIterator[None]:
    from dataplane.http.server import serve_http

    async with serve_http(app, port=port):
        yield


async def serve(kind: str, port: int) -> None:
    """Child process: serve until stdin closes."""
    server = serve_uvicorn if kind == "uvicorn" else serve_meterline
    loop = asyncio.get_running_loop()
    async with server(port):
        print("ready", flush=True)
        await loop.run_in_executor(None, sys.stdin.read)


def cpu_seconds(pid: int) -> float:
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(port: int, duration: float, connections: int, cpu: int | None) -> dict[str, float]:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", "--latency"]
    command += ["-s", str(POST_LUA), f"http://127.0.0.1:{port}/v1/chat/completions"]
    out = subprocess.run(
        command,
        capture_output=True,
        text=True,
        check=True,
        timeout=duration + 30,
        preexec_fn=(lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None,
    ).stdout
    line = next(line for line in out.splitlines() if line.startswith("BENCH_JSON "))
    result: dict[str, float] = json.loads(line.removeprefix("BENCH_JSON "))
    errors = sum(int(v) for k, v in result.items() if k.startswith("err_"))
    if errors:
        raise SystemExit(f"wrk reported {errors} errors on port {port}: {out}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--serve", choices=sorted(PORTS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        import uvloop

        uvloop.run(serve(args.serve, PORTS[args.serve]))
        return

    cores = sorted(os.sched_getaffinity(0))
    server_cpu, wrk_cpu = (cores[-1], cores[0]) if len(cores) > 1 else (None, None)
    print(f"load average before: {os.getloadavg()}", flush=True)
    servers: dict[str, subprocess.Popen[str]] = {}
    try:
        for kind in PORTS:
            child = subprocess.Popen(
                [sys.executable, __file__, "--serve", kind],
                cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                preexec_fn=(lambda: os.sched_setaffinity(0, {server_cpu}))
                if server_cpu is not None
                else None,
            )
            servers[kind] = child
            assert child.stdout is not None
            if child.stdout.readline().strip() != "ready":
                raise SystemExit(f"{kind} server did not start")
            wrk(PORTS[kind], 1, args.connections, wrk_cpu)  # warm-up
        results: dict[str, list[tuple[float, float, float]]] = {kind: [] for kind in PORTS}
        for repeat in range(args.repeats):
            for kind, child in servers.items():
                before = cpu_seconds(child.pid)
                summary = wrk(PORTS[kind], args.duration, args.connections, wrk_cpu)
                cpu_us = (cpu_seconds(child.pid) - before) / summary["requests"] * 1e6
                results[kind].append((summary["rps"], summary["lat_p99_ms"], cpu_us))
                print(
                    f"run {repeat + 1} {kind:9} {summary['rps']:9.0f} req/s  "
                    f"p99 {summary['lat_p99_ms']:6.2f} ms  server CPU {cpu_us:5.1f} us/req",
                    flush=True,
                )
                time.sleep(0.5)
    finally:
        for child in servers.values():
            assert child.stdin is not None
            child.stdin.close()
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
    print(f"load average after: {os.getloadavg()}")
    medians = {
        kind: tuple(statistics.median(run[i] for run in runs) for i in range(3))
        for kind, runs in results.items()
    }
    for kind, (rps, p99, cpu_us) in medians.items():
        print(f"median {kind:9} {rps:9.0f} req/s  p99 {p99:6.2f} ms  CPU {cpu_us:5.1f} us/req")
    old, new = medians["uvicorn"], medians["meterline"]
    print(
        f"meterline / uvicorn: req/s x{new[0] / old[0]:.2f}, p99 x{new[1] / old[1]:.2f}, "
        f"CPU per request x{new[2] / old[2]:.2f}"
    )


if __name__ == "__main__":
    main()
