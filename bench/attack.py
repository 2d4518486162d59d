"""The data plane under a slow-loris attack: normal requests' latency with and without it.

    python bench/attack.py [--attackers 2000] [--duration 6] [--rounds 2] [--workers 8] [--check]

Starts a data plane (the gateway in front of the fake OpenAI provider, key-auth on, default
edge limits but for --header-timeout) in a subprocess on 127.0.0.1, then, from this process:

per round (``--rounds``):
1. unattacked: ``--workers`` keep-alive clients send chat completions for ``--duration`` s;
2. attacked: ``--attackers`` connections from 127.0.0.2 (another client address on loopback)
   each send half a request head and then one more byte every second, never finishing, while
   the same clients run again for ``--duration`` s. The attackers keep reconnecting when cut.

Prints p50/p99 of the normal requests and their failures in each run, and the server's RSS
and open descriptors (peak, sampled every 100 ms from /proc). ``--check`` exits 1 when any
normal request failed, or when no round kept the attacked p99 within 3x of that round's
unattacked p99 (a 5 ms floor, so a quiet machine's sub-millisecond baseline does not make noise
a failure; on a shared 2-core machine one round can be noisy on its own). Bounded: about
rounds x (2 x duration + 5) s; loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
KEY = "sk-bench-attack-0001"
BODY = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello from the bench"}]}'


# -- the server subprocess ------------------------------------------------------------------


async def serve(port: int, header_timeout: float, per_client: int) -> None:
    from dataplane.config.keys import hash_key
    from dataplane.http.server import ServerLimits, serve_http
    from dataplane.proxy.compiler import compile_snapshot
    from dataplane.proxy.gateway import Gateway
    from dataplane.testing.fake_openai import FakeProvider
    from meterline.dataplane.v1 import snapshot_pb2

    events: list[object] = []
    # The provider keeps idle connections longer than the gateway's pool does (30 s), as real
    # providers do: a pooled connection closed by the provider while a request is written to it
    # would be a 502 that has nothing to do with the attack.
    provider_limits = ServerLimits(keep_alive_s=120.0)
    provider = FakeProvider()

    async def forget_requests() -> None:
        # The fake records every request for tests: kept, it would show as the gateway's RSS.
        while True:
            await asyncio.sleep(0.5)
            provider.requests.clear()

    forgetting = asyncio.create_task(forget_requests())
    async with serve_http(provider, port=0, limits=provider_limits) as upstream:
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
        del events
        limits = ServerLimits(
            header_timeout_s=header_timeout, max_connections_per_client=per_client
        )
        async with serve_http(gateway, port=port, limits=limits):
            print("ready", flush=True)
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGTERM, stop.set)
            await stop.wait()
        await gateway.aclose()
    forgetting.cancel()


# -- the clients ----------------------------------------------------------------------------

REQUEST = (
    b"POST /chat HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer " + KEY.encode() + b"\r\n"
    b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(BODY) + BODY
)


async def normal_client(
    port: int, until: float, latencies: list[float], failures: list[str]
) -> None:
    loop = asyncio.get_running_loop()
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    while loop.time() < until:
        start = time.perf_counter()
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            assert reader is not None
            writer.write(REQUEST)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            if not head.startswith(b"HTTP/1.1 200"):
                failures.append(head.split(b"\r\n", 1)[0].decode())
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - start)
            if b"connection: close" in head.lower():
                writer.close()
                writer = None
        except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
            failures.append(type(exc).__name__)
            if writer is not None:
                writer.close()
            writer = None
    if writer is not None:
        writer.close()


async def slow_loris(port: int, stop: asyncio.Event, opened: list[int]) -> None:
    """One attacker: half a head, then a byte a second; reconnects when cut."""
    head = b"POST /chat HTTP/1.1\r\nHost: bench\r\nX-Padding: "
    while not stop.is_set():
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.2", 0))
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
            reader, writer = await asyncio.open_connection(sock=sock)
        except OSError:
            await asyncio.sleep(0.5)
            continue
        opened[0] += 1
        try:
            writer.write(head)
            while not stop.is_set():
                await asyncio.sleep(1.0)
                writer.write(b"a")
                await writer.drain()
                if reader.at_eof():
                    break
        except (OSError, TimeoutError):
            pass
        finally:
            writer.close()


def sample(pid: int, peak: dict[str, int]) -> None:
    with contextlib.suppress(OSError):
        for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                peak["rss_kb"] = max(peak.get("rss_kb", 0), int(line.split()[1]))
        peak["fds"] = max(peak.get("fds", 0), len(os.listdir(f"/proc/{pid}/fd")))


async def run_normal(
    port: int, workers: int, duration: float, pid: int, peak: dict[str, int]
) -> tuple[list[float], list[str]]:
    latencies: list[float] = []
    failures: list[str] = []
    loop = asyncio.get_running_loop()
    until = loop.time() + duration
    clients = [
        asyncio.create_task(normal_client(port, until, latencies, failures)) for _ in range(workers)
    ]
    while loop.time() < until:
        sample(pid, peak)
        await asyncio.sleep(0.1)
    await asyncio.gather(*clients)
    return latencies, failures


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else 0.0


async def attackers(port: int, count: int, seconds: float) -> None:
    """The attacking process: ``count`` slow-loris connections for ``seconds``."""
    stop = asyncio.Event()
    opened = [0]
    tasks = []
    for index in range(count):
        tasks.append(asyncio.create_task(slow_loris(port, stop, opened)))
        if index % 200 == 199:
            await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)
    print("holding", flush=True)
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    print(opened[0], flush=True)


async def attacked_round(
    args: argparse.Namespace, port: int, pid: int
) -> tuple[list[float], list[str], dict[str, int], int]:
    """Normal traffic while a separate attacker process holds its slow-loris connections."""
    # The attacker is its own process (another machine, in real life): sharing this event
    # loop, 2,000 reconnecting sockets would delay the normal clients, not the server.
    attacker = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--attack-only",
        "--port",
        str(port),
        "--attackers",
        str(args.attackers),
        "--duration",
        str(args.duration + 1),
        stdout=asyncio.subprocess.PIPE,
    )
    assert attacker.stdout is not None
    await asyncio.wait_for(attacker.stdout.readline(), 60)  # "holding"
    peak: dict[str, int] = {}
    hit, hit_fail = await run_normal(port, args.workers, args.duration, pid, peak)
    opened = int((await attacker.stdout.readline()) or b"0")
    await attacker.wait()
    return hit, hit_fail, peak, opened


async def attack(args: argparse.Namespace, port: int, pid: int) -> int:
    await run_normal(port, args.workers, 1.0, pid, {})  # warm-up: pooled upstream connections
    print(
        f"{'run':<22}{'requests':>9}{'failed':>8}{'p50 ms':>9}{'p99 ms':>9}{'RSS MB':>8}{'fds':>7}"
    )

    def show(name: str, latencies: list[float], failures: list[str], seen: dict[str, int]) -> None:
        print(
            f"{name:<22}{len(latencies):>9}{len(failures):>8}"
            f"{percentile(latencies, 0.50):>9.2f}{percentile(latencies, 0.99):>9.2f}"
            f"{seen.get('rss_kb', 0) / 1024:>8.1f}{seen.get('fds', 0):>7}",
            flush=True,
        )

    # Rounds of (unattacked, attacked), each attacked run compared with the unattacked run just
    # before it: on a shared machine one noisy second can move a p99 on its own.
    failed_any = False
    within = 0
    for round_ in range(1, args.rounds + 1):
        base_peak: dict[str, int] = {}
        base, base_fail = await run_normal(port, args.workers, args.duration, pid, base_peak)
        show(f"{round_}: unattacked", base, base_fail, base_peak)
        hit, hit_fail, peak, opened = await attacked_round(args, port, pid)
        show(f"{round_}: {args.attackers} slow-loris", hit, hit_fail, peak)
        print(f"   attacker connections opened (with reconnects): {opened}")
        if hit_fail or base_fail:
            failed_any = True
            print(f"   failures: {sorted(set(hit_fail + base_fail))}")
        base_p99 = max(percentile(base, 0.99), 5.0)
        if hit and percentile(hit, 0.99) <= 3 * base_p99:
            within += 1
    if args.check and (failed_any or not within):
        print("FAIL: a normal request failed, or no attacked run kept p99 within 3x")
        return 1
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--attackers", type=int, default=2000)
    parser.add_argument("--duration", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--port", type=int, default=18190)
    parser.add_argument("--header-timeout", type=float, default=10.0)
    parser.add_argument(
        "--max-connections-per-client", type=int, default=1000, help="the server's flag"
    )
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--attack-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.attack_only:
        import uvloop

        uvloop.run(attackers(args.port, args.attackers, args.duration))
        return 0
    if args.serve:
        import uvloop

        uvloop.run(serve(args.port, args.header_timeout, args.max_connections_per_client))
        return 0
    child = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--serve",
            "--port",
            str(args.port),
            "--header-timeout",
            str(args.header_timeout),
            "--max-connections-per-client",
            str(args.max_connections_per_client),
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert child.stdout is not None
        if child.stdout.readline().strip() != "ready":
            print("the data plane did not start", file=sys.stderr)
            return 1
        import uvloop

        return uvloop.run(attack(args, args.port, child.pid))
    finally:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            child.kill()


if __name__ == "__main__":
    sys.exit(main())
