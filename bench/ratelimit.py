"""Cost of the rate-limit step on the data plane's hot path, in-process (no HTTP).

``python bench/ratelimit.py [--requests 200000]``: microseconds per admitted request for a
route without limits (the attribute check), with a local requests limit (2 windows), and with a
local requests limit plus a token limit (whose per-request sink counts usage afterwards);
``--redis`` adds the same through Redis on 127.0.0.1:6379 (one round trip per check).
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

from dataplane.admission.ratelimit import RateLimiter, compile_route_limits
from dataplane.config.model import Consumer
from dataplane.translate.openai_openai import OpenAITranslator
from meterline.dataplane.v1 import snapshot_pb2

ROUTE = snapshot_pb2.Route(id="r", name="chat", service_id="s", paths=["/chat"])


def plugin(name: str, windows: list[tuple[int, int]], **config: object) -> snapshot_pb2.Plugin:
    return snapshot_pb2.Plugin(
        id=f"p-{name}",
        name=name,
        route_id="r",
        enabled=True,
        rate_limiting=snapshot_pb2.RateLimitingConfig(
            windows=[
                snapshot_pb2.RateLimitWindow(limit=str(limit), window_size=size)
                for limit, size in windows
            ],
            fault_tolerant=True,
            **config,  # type: ignore[arg-type]
        ),
    )


async def _noop_send(message: object) -> None:
    return None


async def run(plugins: list[snapshot_pb2.Plugin], requests: int) -> float:
    limits = compile_route_limits(ROUTE, plugins, ai_proxy=None)
    assert limits is not None
    limiter = RateLimiter()
    consumer = Consumer(id="c", username="acme")
    scope = {"headers": [], "client": ("127.0.0.1", 5000)}
    translator = OpenAITranslator()
    started = time.perf_counter()
    for _ in range(requests):
        admitted = await limiter.admit(
            limits,
            consumer=consumer,
            scope=scope,
            send=_noop_send,
            usage_sink=lambda event: None,
            translator=translator,
            anthropic=False,
            id_header=(b"x-request-id", b"0"),
        )
        assert admitted is not None
    elapsed = time.perf_counter() - started
    await limiter.aclose()
    return elapsed / requests * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--redis", action="store_true")
    args = parser.parse_args()
    big = 10**12
    requests_only = [plugin("rate-limiting-advanced", [(big, 1), (big, 60)])]
    with_tokens = [
        *requests_only,
        plugin("ai-rate-limiting-advanced", [(big, 60)], tokens_count_strategy="total_tokens"),
    ]
    print(f"local requests limit (2 windows): {await run(requests_only, args.requests):.2f} us")
    print(f"local requests + tokens limits:   {await run(with_tokens, args.requests):.2f} us")
    if args.redis:
        namespace = f"bench-{uuid.uuid4().hex}"
        redis = {
            "strategy": "redis",
            "namespace": namespace,
            "redis": snapshot_pb2.RateLimitRedis(host="127.0.0.1", port=6379),
        }
        shared = [plugin("rate-limiting-advanced", [(big, 1), (big, 60)], **redis)]
        count = min(args.requests, 20_000)
        print(f"redis requests limit (2 windows): {await run(shared, count):.2f} us")


if __name__ == "__main__":
    asyncio.run(main())
