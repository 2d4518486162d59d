"""A/B of the request path between two source trees: the gateway's CPU per request and req/s.

    git archive <base-commit> | tar -x -C /tmp/base
    python bench/edge_ab.py --base /tmp/base [--rounds 3] [--duration 6] [--connections 16]

Each tree serves the same gateway (key-auth + ai-proxy, non-streamed chat completions, usage
events dropped) in front of the fake OpenAI provider, in a subprocess on uvloop that imports
that tree's ``dataplane``; keep-alive clients in this process drive it for ``--duration``
seconds. The trees alternate ``--rounds`` times; printed: requests/s and the server process's
CPU (utime + stime from /proc, the fake provider included: it is the same in both) per
request, each round and the medians. Loopback only (127.0.0.1:18170-18171).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pathlib
import signal
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
KEY = "sk-bench-ab-0001"
BODY = (
    b'{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are terse."},'
    b'{"role":"user","content":"Say hello to the benchmark, please."}],"temperature":0.2}'
)
REQUEST = (
    b"POST /chat/completions HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer "
    + KEY.encode()
    + b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(BODY)
    + BODY
)


def use_tree(tree: pathlib.Path) -> None:
    """Import ``dataplane`` and ``meterline`` from ``tree``, not from the editable install."""
    sys.path[:0] = [str(tree), str(tree / "proto")]
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in type(f).__module__.lower()]


async def serve(port: int) -> None:
    from dataplane.config.keys import hash_key
    from dataplane.http.server import serve_http
    from dataplane.proxy.compiler import compile_snapshot
    from dataplane.proxy.gateway import Gateway
    from dataplane.testing.fake_openai import FakeProvider
    from meterline.dataplane.v1 import snapshot_pb2

    async with serve_http(FakeProvider(), port=0) as upstream:
        snapshot = snapshot_pb2.Snapshot(
            services=[snapshot_pb2.Service(id="s", name="ai", url="http://ai.invalid")],
            routes=[snapshot_pb2.Route(id="r", name="chat", service_id="s", paths=["/chat"])],
            consumers=[snapshot_pb2.Consumer(id="c", username="bench", key_hashes=[hash_key(KEY)])],
            plugins=[
                snapshot_pb2.Plugin(
                    id="k",
                    name="key-auth",
                    enabled=True,
                    key_auth=snapshot_pb2.KeyAuthConfig(key_names=["apikey"], key_in_bearer=True),
                ),
                snapshot_pb2.Plugin(
                    id="a",
                    name="ai-proxy",
                    service_id="s",
                    enabled=True,
                    ai_proxy=snapshot_pb2.AiProxyConfig(
                        route_type="llm/v1/chat",
                        auth=snapshot_pb2.AiProxyAuth(
                            header_name="Authorization", header_value="Bearer sk-provider"
                        ),
                        model=snapshot_pb2.AiProxyModel(
                            provider="openai",
                            name="gpt-4o-mini",
                            options=snapshot_pb2.AiProxyModelOptions(
                                upstream_url=f"{upstream.url}/v1/chat/completions"
                            ),
                        ),
                    ),
                ),
            ],
        )
        gateway = Gateway(node_id="bench", usage_sink=lambda event: None)
        gateway.apply(compile_snapshot(snapshot, version="v1"))
        async with serve_http(gateway, port=port):
            import dataplane

            print(f"ready {dataplane.__file__}", flush=True)
            stop = asyncio.Event()
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
            await stop.wait()
        await gateway.aclose()


async def client(port: int, until: float, counts: list[int], failures: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    loop = asyncio.get_running_loop()
    while loop.time() < until:
        writer.write(REQUEST)
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            failures[0] += 1
        length = 0
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        await reader.readexactly(length)
        counts[0] += 1
    writer.close()


def cpu_seconds(pid: int) -> float:
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def drive(port: int, pid: int, duration: float, connections: int) -> tuple[float, float]:
    loop = asyncio.get_running_loop()
    # Warm up (pooled upstream connections, caches), then measure.
    await asyncio.gather(*(client(port, loop.time() + 1.0, [0], [0]) for _ in range(4)))
    counts, failures = [0], [0]
    cpu0, wall0 = cpu_seconds(pid), time.perf_counter()
    until = loop.time() + duration
    await asyncio.gather(*(client(port, until, counts, failures) for _ in range(connections)))
    cpu, wall = cpu_seconds(pid) - cpu0, time.perf_counter() - wall0
    if failures[0]:
        raise SystemExit(f"{failures[0]} requests failed")
    return counts[0] / wall, cpu / counts[0] * 1e6


def run_tree(tree: pathlib.Path, port: int, args: argparse.Namespace) -> tuple[float, float]:
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(tree), "--port", str(port)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline().strip()
        if not line.startswith("ready"):
            raise SystemExit(f"{tree}: the data plane did not start")
        if not line.split(" ", 1)[1].startswith(str(tree)):
            raise SystemExit(f"{tree}: imported the wrong dataplane ({line})")
        return asyncio.run(drive(port, child.pid, args.duration, args.connections))
    finally:
        child.send_signal(signal.SIGTERM)
        child.wait(15)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=pathlib.Path, help="the A tree (B is this checkout)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=6.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--serve", type=pathlib.Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=18170)
    args = parser.parse_args()
    if args.serve:
        use_tree(args.serve.resolve())
        import uvloop

        uvloop.run(serve(args.port))
        return 0
    trees = {"A (base)": args.base.resolve(), "B (this)": ROOT}
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in trees}
    for round_ in range(args.rounds):
        for index, (name, tree) in enumerate(trees.items()):
            rps, cpu_us = run_tree(tree, 18170 + index, args)
            results[name].append((rps, cpu_us))
            print(f"round {round_ + 1} {name}: {rps:8.0f} req/s  {cpu_us:6.1f} us CPU/request")
    medians = {
        name: (statistics.median(r for r, _ in runs), statistics.median(c for _, c in runs))
        for name, runs in results.items()
    }
    for name, (rps, cpu_us) in medians.items():
        print(f"median {name}: {rps:8.0f} req/s  {cpu_us:6.1f} us CPU/request")
    (a_rps, a_cpu), (b_rps, b_cpu) = medians.values()
    print(f"B/A: req/s {b_rps / a_rps:.3f}, CPU per request {b_cpu / a_cpu:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
