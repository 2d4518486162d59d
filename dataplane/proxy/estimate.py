"""The cost-estimate endpoints: the same route and key-auth steps as a request, no provider call.

``POST <route path>/cost/estimate`` estimates for that route; ``POST /v1/cost/estimate``, where
no route's path covers it, for the route that serves the body's ``model``. The arithmetic is
admission's (dataplane.admission.cost.estimate).
"""

from __future__ import annotations

from typing import Final

import orjson

from dataplane.admission.cost import estimate
from dataplane.admission.entitlements import Enforcer
from dataplane.config.keys import authenticate
from dataplane.config.model import AiProxyPolicy, Consumer
from dataplane.errors import Rejection
from dataplane.http.asgi import BodyTooLarge, Receive, Scope, read_body
from dataplane.proxy.runtime import CompiledRoute, RuntimeConfig

RESERVED_ESTIMATE_PATH: Final = "/v1/cost/estimate"


def estimate_on_route(
    enforcer: Enforcer,
    route: CompiledRoute,
    policy: AiProxyPolicy,
    consumer: Consumer | None,
    raw: bytes,
    scope: Scope,
) -> dict[str, object]:
    """The estimate of ``raw`` on ``route`` for ``consumer`` (already authenticated)."""
    return estimate(
        enforcer,
        raw=raw,
        consumer_id=consumer.id if consumer else None,
        route_id=route.id,
        provider=policy.target.provider,
        route_model=policy.model,
        default_max_tokens=policy.max_tokens,
        headers=scope["headers"],
    )


def _route_for_model(config: RuntimeConfig, model: str) -> CompiledRoute | None:
    """The ai-proxy route that would serve ``model``: one whose model is ``model``, else one
    that keeps the client's model (and allows it); the first by name."""
    exact: list[CompiledRoute] = []
    open_: list[CompiledRoute] = []
    for route in config.routes:
        policy = route.ai_proxy
        if policy is None:
            continue
        if policy.model == model:
            exact.append(route)
        elif not policy.model and (not policy.model_allow_list or model in policy.model_allow_list):
            open_.append(route)
    found = exact or open_
    return min(found, key=lambda route: route.name) if found else None


async def estimate_for_model(
    enforcer: Enforcer,
    config: RuntimeConfig,
    scope: Scope,
    receive: Receive,
    *,
    max_body_bytes: int,
) -> dict[str, object]:
    """POST /v1/cost/estimate: the route is the one that serves the body's ``model``; the
    caller authenticates as that route asks. Raises Rejection (OpenAI's format: no route)."""
    try:
        raw = await read_body(receive, limit=max_body_bytes)
    except BodyTooLarge:
        raise Rejection(
            413,
            f"The request body exceeds {max_body_bytes} bytes.",
            type="invalid_request_error",
            code="request_too_large",
        ) from None
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise Rejection(
            400,
            f"We could not parse the JSON body of your request: {exc}",
            type="invalid_request_error",
            code="invalid_json",
        ) from None
    model = document.get("model") if isinstance(document, dict) else None
    if not isinstance(model, str) or not model:
        raise Rejection(
            400,
            '"model" is required (a string): it selects the route to estimate for.',
            type="invalid_request_error",
            code="invalid_value",
        )
    route = _route_for_model(config, model)
    if route is None or route.ai_proxy is None:
        raise Rejection(
            404,
            f'No route serves model "{model}".',
            type="invalid_request_error",
            code="model_not_found",
        )
    consumer = authenticate(route.key_auth, config.consumers_by_key_hash, scope)
    return estimate_on_route(enforcer, route, route.ai_proxy, consumer, raw, scope)
