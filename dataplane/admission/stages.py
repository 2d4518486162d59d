"""Admission: the named stages a request passes before the provider is called.

Each stage decides and returns what it decided; a refusal is raised as ``Rejection`` (the
route's translator renders it). The stages, in order:

1. ``budgets``: entitlements, money budgets and task budgets (admission.cost, from the
   snapshot plus local counters): 400 for malformed task headers, 429 insufficient_quota;
   admitted, the request's ``Metering`` counts its usage and gives the X-Meterline-* headers.
2. ``credits``: prepaid credits (admission.cost.admit_credits, from the snapshot plus the
   same local money counters): 402 insufficient_credits when the request needs
   ``credit_only`` credits and this data plane's slice of them is spent. One dict lookup for
   a customer without credits.
3. ``rate limits``: rate-limiting-advanced / ai-rate-limiting-advanced of the route
   (admission.ratelimit): 429 (or 503 with the store down); admitted, the RateLimit-*
   headers and the counter of the request's tokens and cost.

What was decided travels as one ``Admitted``; the proxy adds its headers to the response and
gives it every usage event of the request to count.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from dataplane.admission.cost import Metering, admit, admit_credits
from dataplane.admission.entitlements import Enforcer
from dataplane.admission.ratelimit import RateLimitAdmission, RateLimiter, RouteRateLimits
from dataplane.config.model import Consumer
from dataplane.http.asgi import Scope
from meterline.dataplane.v1 import usage_pb2

UsageSink = Callable[[usage_pb2.UsageEvent], None]

_UNLIMITED = RateLimitAdmission()


@dataclass(frozen=True, slots=True)
class Admitted:
    """What admission decided for one request."""

    metering: Metering
    rate_limits: RateLimitAdmission

    def recorder(self, sink: UsageSink) -> UsageSink:
        """The usage sink of this request: ``sink`` (the reporter) first, then the counters."""
        count_cost = self.metering.record
        count_limits = self.rate_limits.counter

        if count_limits is None:

            def record(event: usage_pb2.UsageEvent) -> None:
                sink(event)
                count_cost(event)

            return record

        def record_limited(event: usage_pb2.UsageEvent) -> None:
            sink(event)
            count_cost(event)
            count_limits(event)

        return record_limited


async def admit_request(
    *,
    enforcer: Enforcer,
    rate_limiter: RateLimiter,
    rate_limits: RouteRateLimits | None,
    consumer: Consumer | None,
    route_id: str,
    provider: str,
    model: str,
    scope: Scope,
    stream_figures: bool,
) -> Admitted:
    """Run the admission stages of one request; raise Rejection at the first refusal."""
    consumer_id = consumer.id if consumer is not None else None
    metering = admit(
        enforcer,
        consumer_id=consumer_id,
        route_id=route_id,
        provider=provider,
        model=model,
        headers=scope["headers"],
        stream_figures=stream_figures,
    )
    admit_credits(enforcer, consumer_id=consumer_id, provider=provider, model=model)
    limits = (
        _UNLIMITED
        if rate_limits is None
        else await rate_limiter.admit(
            rate_limits, consumer=consumer, scope=scope, model=model, provider=provider
        )
    )
    return Admitted(metering=metering, rate_limits=limits)
