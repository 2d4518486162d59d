"""What the data plane's Prometheus metrics cost per request, in CPU time.

    python bench/metrics_overhead.py [--requests 200000] [--shared]

Measures, in one process without network noise: (1) what a proxied request's exchange
records (``DataPlaneMetrics.exchange``: 2 histograms, 2 token counters); (2) the Observability
middleware around a trivial ASGI app against the app alone (the send wrapper, two clock reads,
the reserved-path check and ``response``: 1 counter, 1 histogram). Prints microseconds per
request and their share of a request's budget at 3,000 req/s on one core (333 us).
``--shared`` measures SharedDataPlaneMetrics, what each worker of ``--workers N`` uses (the same
request path; its once-a-second write of the totals is not per request).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from typing import Any

from dataplane.observability.metrics import (
    DataPlaneMetrics,
    Observability,
    new_metrics,
    shared_worker_metrics,
)
from dataplane.usage.tokens import TokenUsage

BUDGET_US = 1e6 / 3000


def recording(metrics: DataPlaneMetrics, n: int) -> float:
    usage = TokenUsage(input_tokens=12, output_tokens=16, cached_input_tokens=0)
    start = time.perf_counter()
    for _ in range(n):
        metrics.exchange(
            route="chat",
            provider="openai",
            model="gpt-4o-mini",
            usage=usage,
            ttft_s=0.0031,
            upstream_s=0.0029,
        )
    return (time.perf_counter() - start) / n * 1e6


async def middleware(n: int) -> tuple[float, float]:
    scope = {"type": "http", "path": "/chat/chat/completions", "method": "POST"}
    start_message = {"type": "http.response.start", "status": 200, "headers": []}
    body_message = {"type": "http.response.body", "body": b"{}", "more_body": False}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        scope["meterline.route"] = "chat"
        await send(start_message)
        await send(body_message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        return None

    wrapped = Observability(app, metrics=new_metrics(), ready=lambda: True)
    timings = []
    for target in (app, wrapped):
        start = time.perf_counter()
        for _ in range(n):
            await target(dict(scope), receive, send)
        timings.append((time.perf_counter() - start) / n * 1e6)
    return timings[0], timings[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--shared", action="store_true", help="multiprocess mode (workers)")
    args = parser.parse_args()
    n = args.requests
    with shared_worker_metrics() if args.shared else contextlib.nullcontext():
        record_us = recording(new_metrics(), n)
        bare_us, wrapped_us = asyncio.run(middleware(n))
    added = wrapped_us - bare_us
    print(f"exchange():  {record_us:6.2f} us")
    print(f"middleware:  {added:6.2f} us (app alone {bare_us:.2f} us, wrapped {wrapped_us:.2f} us)")
    total = added + record_us
    print(
        f"per request: {total:6.2f} us = {total / BUDGET_US:.1%} of {BUDGET_US:.0f} us "
        "(3,000 req/s on one core)"
    )


if __name__ == "__main__":
    main()
