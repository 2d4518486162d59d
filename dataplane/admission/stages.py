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
gives it every usage event of the request to count (``Admitted.head``, ``Admitted.count``;
a stream's cost figures go beside its usage chunk through ``Admitted.metering.body``).
"""

from __future__ import annotations

from dataplane.admission.cost import Metering, admit, admit_credits
from dataplane.admission.entitlements import Enforcer
from dataplane.admission.ratelimit import RateLimitAdmission, RateLimiter, RouteRateLimits
from dataplane.config.model import Consumer
from dataplane.http.asgi import Headers, Scope
from meterline.dataplane.v1 import usage_pb2

_UNLIMITED = RateLimitAdmission()


class Admitted:
    """What admission decided for one request: the headers its response gets, and the
    counters its usage events go to (the proxy calls these; nothing wraps ``send``)."""

    __slots__ = ("_count_limits", "metering", "rate_limits")

    def __init__(self, metering: Metering, rate_limits: RateLimitAdmission) -> None:
        self.metering = metering
        self.rate_limits = rate_limits
        self._count_limits = rate_limits.counter

    def head(self, headers: Headers) -> Headers:
        """The headers admission adds to a response head with ``headers``: the rate limits',
        then the cost headers (admission.cost.Metering.head)."""
        limit_headers = self.rate_limits.headers
        if not limit_headers:
            return self.metering.head(headers)
        return [*limit_headers, *self.metering.head(headers)]

    def count(self, event: usage_pb2.UsageEvent) -> None:
        """Count one usage event of the request (after the usage reporter has it)."""
        self.metering.record(event)
        if self._count_limits is not None:
            self._count_limits(event)


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
    if not metering.plain:  # plain: no policy, so no credits either
        admit_credits(enforcer, consumer_id=consumer_id, provider=provider, model=model)
    limits = (
        _UNLIMITED
        if rate_limits is None
        else await rate_limiter.admit(
            rate_limits, consumer=consumer, scope=scope, model=model, provider=provider
        )
    )
    return Admitted(metering, limits)
