"""Upstream HTTP clients compared on the data plane's job: POST a chat completion to a
keep-alive upstream and read the whole JSON body, with 32 requests in flight.

Contenders: httpx, aiohttp's ClientSession, and the data plane's own client
(dataplane.http.client.UpstreamClients, httptools underneath).

    python bench/upstream_clients.py [--url URL] [--requests 5000] [--concurrency 32]

Start an upstream first (e.g. ../shared/bench-peers/fake_upstream.py on 127.0.0.1:18080).
Prints req/s and CPU ms per request for each client, median of --repeats runs, interleaved.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

BODY = (
    b'{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are terse."},'
    b'{"role":"user","content":"Say hi"}],"max_tokens":64}'
)
HEADERS = {"content-type": "application/json", "authorization": "Bearer sk-bench"}


async def _drive(one: Callable[[], Awaitable[int]], requests: int, concurrency: int) -> None:
    remaining = requests

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            status = await one()
            assert status == 200, status

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def run_httpx(url: str, requests: int, concurrency: int) -> None:
    import httpx

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:

        async def one() -> int:
            response = await client.post(url, content=BODY, headers=HEADERS)
            return response.status_code

        await _drive(one, requests, concurrency)


async def run_aiohttp(url: str, requests: int, concurrency: int) -> None:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> int:
            async with session.post(url, data=BODY, headers=HEADERS) as response:
                await response.read()
                return response.status

        await _drive(one, requests, concurrency)


async def run_meterline(url: str, requests: int, concurrency: int) -> None:
    from dataplane.http.client import UpstreamClients, split_url

    # As the proxy sends them: raw (name, value) pairs, Host/Content-Length added by the pool.
    headers = [(name.encode(), value.encode()) for name, value in HEADERS.items()]
    clients = UpstreamClients(limit=concurrency)
    pool = clients.get(split_url(url).origin)
    try:

        async def one() -> int:
            response = await pool.request("POST", url, body=BODY, headers=headers)
            await response.read()
            response.release()
            return response.status

        await _drive(one, requests, concurrency)
    finally:
        await clients.aclose()


CLIENTS = {"httpx": run_httpx, "aiohttp": run_aiohttp, "meterline": run_meterline}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="http://127.0.0.1:18080/v1/chat/completions")
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in CLIENTS}
    for _ in range(args.repeats):
        for name, run in CLIENTS.items():
            wall, cpu = time.perf_counter(), time.process_time()
            asyncio.run(run(args.url, args.requests, args.concurrency))
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            results[name].append((args.requests / wall, cpu * 1000 / args.requests))
    base = statistics.median(r for r, _ in results["httpx"])
    print(f"{'client':<10} {'req/s':>10} {'CPU ms/req':>11} {'vs httpx':>9}")
    for name, runs in results.items():
        rps = statistics.median(r for r, _ in runs)
        cpu = statistics.median(c for _, c in runs)
        print(f"{name:<10} {rps:>10,.0f} {cpu:>11.3f} {rps / base:>8.2f}x")


if __name__ == "__main__":
    main()
