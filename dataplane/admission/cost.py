"""The gateway's enforcement step, X-Meterline-* cost headers, and the cost estimate.

The estimate answers ``POST <route path>/cost/estimate`` and, where no route's path covers
it, ``POST /v1/cost/estimate`` for the route that serves the body's model.

``admit`` runs after key-auth and body parsing, before the provider call: it answers 400 for
malformed task headers and 429 (``insufficient_quota``) for a refused request, and otherwise
returns the ``send`` and usage sink to use, wrapped so that the request's usage events are
counted locally and its response carries ``X-Meterline-Input-Tokens``,
``X-Meterline-Output-Tokens``, ``X-Meterline-Cost`` (+ ``X-Meterline-Currency``),
``X-Meterline-Remaining`` (tokens left of the tightest metered entitlement) and
``X-Meterline-Budget-Remaining`` (money left of the tightest budget or task budget).
A stream's headers leave before its usage is known: they carry the remaining figures as of
the request's start; when the client asked for the usage chunk (OpenAI format,
``stream_options.include_usage``), that final chunk gets a ``meterline`` object beside
``usage`` (``{"input_tokens": ..., "output_tokens": ..., "cost": ..., ...}``); the chunk is
held back until the request's usage is counted. A stream without such a chunk (a Responses
API stream, a preserve route) ends instead with an SSE comment line
``: meterline {...}`` (ignored by SSE clients and SDKs, readable raw).
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final

import orjson

from dataplane.admission.entitlements import (
    BadTaskHeaders,
    Enforcer,
    Figures,
    Refusal,
    TaskBudget,
    UsageItem,
    task_budget,
    unit_price,
)
from dataplane.config.keys import hash_key
from dataplane.http.asgi import (
    JSON_CONTENT_TYPE,
    BodyTooLarge,
    Message,
    Receive,
    Scope,
    Send,
    read_body,
    send_response,
)
from dataplane.translate.openai_format import error_body
from dataplane.usage.estimate import estimate_tokens, prompt_text, tokenizer
from meterline.dataplane.v1 import usage_pb2

if TYPE_CHECKING:
    from dataplane.config.model import KeyAuthPolicy
    from dataplane.proxy.runtime import CompiledRoute, RuntimeConfig

ESTIMATE_SUFFIX: Final = "/cost/estimate"
_KINDS: Final = {
    usage_pb2.TOKEN_TYPE_INPUT: "input",
    usage_pb2.TOKEN_TYPE_OUTPUT: "output",
    usage_pb2.TOKEN_TYPE_CACHED_INPUT: "cached_input",
    usage_pb2.TOKEN_TYPE_REASONING: "reasoning",
    usage_pb2.TOKEN_TYPE_CACHE_WRITE: "cache_write",
}
_EVENT_STREAM: Final = b"text/event-stream"
# How an OpenAI usage chunk shows in the relayed bytes (other chunks carry "usage":null).
_USAGE_MARKERS: Final = (b'"usage":{', b'"usage": {')


def _beside_usage(events: bytes, figures: dict[str, object]) -> tuple[bytes, bool]:
    """``events`` with ``"meterline": figures`` added to the chunk that carries ``usage``.

    Only the line holding a usage marker is parsed and rewritten; the bytes around it are
    copied as they are (a whole stream may be held here: splitting it into lines cost ~10%
    of a streamed request's CPU).
    """
    start = 0
    while True:
        found = [i for i in (events.find(m, start) for m in _USAGE_MARKERS) if i != -1]
        if not found:
            return events, False
        at = min(found)
        line_start = events.rfind(b"\n", 0, at) + 1
        line_end = events.find(b"\n", at)
        if line_end == -1:
            line_end = len(events)
        line = events[line_start:line_end]
        if line.startswith(b"data:"):
            try:
                chunk = orjson.loads(line[5:])
            except orjson.JSONDecodeError:
                chunk = None
            if isinstance(chunk, dict) and isinstance(chunk.get("usage"), dict):
                chunk["meterline"] = figures
                rewritten = b"data: " + orjson.dumps(chunk)
                return events[:line_start] + rewritten + events[line_end:], True
        start = line_end


UsageSink = Callable[[usage_pb2.UsageEvent], None]


def _error(message: str, *, type: str, code: str, anthropic: bool) -> bytes:
    if anthropic:
        return orjson.dumps(
            {"type": "error", "error": {"type": type, "code": code, "message": message}}
        )
    return error_body(message, type=type, code=code)


class _Metering:
    """One admitted request: counts its usage events and adds the cost headers."""

    __slots__ = (
        "consumer_id",
        "done",
        "enforcer",
        "held",
        "items",
        "model",
        "provider",
        "route_id",
        "sink",
        "stream",
        "stream_figures",
        "task",
    )

    def __init__(
        self,
        *,
        enforcer: Enforcer,
        consumer_id: str | None,
        route_id: str,
        provider: str,
        model: str,
        task: TaskBudget | None,
        sink: UsageSink,
        stream_figures: bool,
    ) -> None:
        self.enforcer = enforcer
        self.consumer_id = consumer_id
        self.route_id = route_id
        self.provider = provider
        self.model = model
        self.task = task
        self.sink = sink
        self.items: list[UsageItem] = []
        self.stream = False
        self.stream_figures = stream_figures
        self.held: list[bytes] = []
        self.done = False

    def usage_sink(self, event: usage_pb2.UsageEvent) -> None:
        self.sink(event)
        self.enforcer.appended += 1
        tokens = event.llm_tokens
        self.items.append(
            UsageItem(
                provider=tokens.provider,
                model=tokens.model,
                kind=_KINDS.get(tokens.token_type, "input"),
                status=tokens.status_code,
                tokens=tokens.tokens,
            )
        )

    def _figures(self) -> Figures:
        enforcer = self.enforcer
        if self.done:
            figures = Figures()
        else:
            self.done = True
            figures = enforcer.record(
                consumer_id=self.consumer_id,
                route_id=self.route_id,
                items=self.items,
                task=self.task,
            )
        tokens, money = enforcer.remaining(
            self.consumer_id, provider=self.provider, model=self.model, task=self.task
        )
        figures.remaining_tokens = tokens
        figures.remaining_money = money
        return figures

    def wrap(self, send: Send) -> Send:
        async def metered_send(message: Message) -> None:
            kind = message["type"]
            if kind == "http.response.start":
                headers = list(message.get("headers") or ())
                self.stream = any(
                    name == b"content-type" and _EVENT_STREAM in value for name, value in headers
                )
                if self.stream:
                    # Usage is not known yet: only what was left when the request started.
                    tokens, money = self.enforcer.remaining(
                        self.consumer_id, provider=self.provider, model=self.model, task=self.task
                    )
                    figures = Figures(remaining_tokens=tokens, remaining_money=money)
                    headers += figures.headers(usage=False)
                else:
                    headers += self._figures().headers()
                message = {**message, "headers": headers}
            elif kind == "http.response.body" and self.stream and self.stream_figures:
                body: bytes = message.get("body", b"")
                if message.get("more_body"):
                    # The usage chunk is held back until the usage is counted, to carry the
                    # figures beside it (it comes last, with [DONE]).
                    if self.held or any(marker in body for marker in _USAGE_MARKERS):
                        self.held.append(body)
                        return
                else:
                    figures_json = self._figures().as_json()
                    out, placed = _beside_usage(b"".join(self.held), figures_json)
                    self.held.clear()
                    if not placed:
                        out += b": meterline " + orjson.dumps(figures_json) + b"\n\n"
                    await send({"type": "http.response.body", "body": out, "more_body": True})
            await send(message)

        return metered_send


async def admit(
    enforcer: Enforcer,
    *,
    consumer_id: str | None,
    route_id: str,
    provider: str,
    model: str,
    headers: list[tuple[bytes, bytes]],
    send: Send,
    usage_sink: UsageSink,
    anthropic: bool,
    id_header: tuple[bytes, bytes],
    stream_figures: bool = False,
) -> tuple[Send, UsageSink] | None:
    """The wrapped ``send`` and usage sink of an admitted request; None when refused (the
    400 or 429 answer is sent)."""
    try:
        task = task_budget(headers)
    except BadTaskHeaders as exc:
        body = _error(
            str(exc), type="invalid_request_error", code="invalid_task_budget", anthropic=anthropic
        )
        await send_response(send, 400, body, [JSON_CONTENT_TYPE, id_header])
        return None
    refusal: Refusal | None = enforcer.admit(consumer_id, provider=provider, model=model, task=task)
    if refusal is not None:
        body = _error(
            refusal.message, type="insufficient_quota", code=refusal.code, anthropic=anthropic
        )
        await send_response(send, 429, body, [JSON_CONTENT_TYPE, id_header])
        return None
    metering = _Metering(
        enforcer=enforcer,
        consumer_id=consumer_id,
        route_id=route_id,
        provider=provider,
        model=model,
        task=task,
        sink=usage_sink,
        stream_figures=stream_figures,
    )
    return metering.wrap(send), metering.usage_sink


def _max_tokens(document: dict[str, Any], default: int) -> int | None:
    for key in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
        value = document.get(key)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f'"{key}" must be a positive integer')
            return value
    return default or None


def _text(value: Decimal | None) -> str | None:
    if value is None:
        return None
    text = format(value.normalize(), "f")
    return "0" if text == "-0" else text


async def serve_estimate(
    enforcer: Enforcer,
    *,
    raw: bytes,
    consumer_id: str | None,
    route_id: str,
    provider: str,
    route_model: str,
    default_max_tokens: int,
    headers: list[tuple[bytes, bytes]],
    send: Send,
    anthropic: bool,
    id_header: tuple[bytes, bytes],
) -> None:
    """Answer POST <route>/cost/estimate: tokens and prices of a chat request, not sent."""

    async def bad(message: str, code: str) -> None:
        body = _error(message, type="invalid_request_error", code=code, anthropic=anthropic)
        await send_response(send, 400, body, [JSON_CONTENT_TYPE, id_header])

    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        await bad(f"We could not parse the JSON body of your request: {exc}", "invalid_json")
        return
    if not isinstance(document, dict):
        await bad("The request body must be a JSON object.", "invalid_json")
        return
    messages = document.get("messages")
    if not isinstance(messages, list) or not messages:
        await bad('"messages" must be a non-empty array, as in a chat completion.', "invalid_value")
        return
    model = route_model or document.get("model")
    if not isinstance(model, str) or not model:
        await bad('"model" is required (a string).', "invalid_value")
        return
    try:
        max_tokens = _max_tokens(document, default_max_tokens)
        task = task_budget(headers)
    except (ValueError, BadTaskHeaders) as exc:
        await bad(str(exc), "invalid_value")
        return
    input_tokens = estimate_tokens(prompt_text(document))
    table = enforcer.table
    policy = table.consumers.get(consumer_id) if consumer_id else None
    route_cost = table.route_costs.get(route_id)
    input_price = unit_price(policy, route_cost, provider=provider, model=model, kind="input")
    output_price = unit_price(policy, route_cost, provider=provider, model=model, kind="output")
    input_cost = None if input_price is None else input_price * input_tokens
    max_output_cost = (
        None if output_price is None or max_tokens is None else output_price * max_tokens
    )
    tokens_left, money_left = enforcer.remaining(
        consumer_id, provider=provider, model=model, task=task
    )
    refusal = enforcer.admit(consumer_id, provider=provider, model=model, task=task)
    answer = {
        "object": "cost.estimate",
        "model": model,
        "currency": (policy.currency if policy is not None else "") or None,
        "input_tokens": input_tokens,
        "tokenizer": "cl100k_base" if tokenizer() is not None else "chars/4",
        "max_output_tokens": max_tokens,
        "input_cost": _text(input_cost),
        "max_output_cost": _text(max_output_cost),
        "max_total_cost": _text(input_cost + max_output_cost)
        if input_cost is not None and max_output_cost is not None
        else None,
        "remaining_tokens": tokens_left,
        "remaining_budget": _text(money_left),
        "allowed": refusal is None,
        "refusal_code": refusal.code if refusal is not None else None,
    }
    await send_response(send, 200, orjson.dumps(answer), [JSON_CONTENT_TYPE, id_header])


RESERVED_ESTIMATE_PATH: Final = "/v1/cost/estimate"


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


async def serve_reserved_estimate(
    enforcer: Enforcer,
    *,
    config: RuntimeConfig,
    scope: Scope,
    receive: Receive,
    send: Send,
    find_key: Callable[[KeyAuthPolicy], str | None],
    max_body_bytes: int,
    id_header: tuple[bytes, bytes],
) -> None:
    """POST /v1/cost/estimate where no route's path covers it: the route is the one that
    serves the body's ``model``; the caller authenticates as that route asks."""

    async def fail(status: int, message: str, type: str, code: str) -> None:
        body = error_body(message, type=type, code=code)
        await send_response(send, status, body, [JSON_CONTENT_TYPE, id_header])

    try:
        raw = await read_body(receive, limit=max_body_bytes)
    except BodyTooLarge:
        await fail(
            413,
            f"The request body exceeds {max_body_bytes} bytes.",
            "invalid_request_error",
            "request_too_large",
        )
        return
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        await fail(
            400,
            f"We could not parse the JSON body of your request: {exc}",
            "invalid_request_error",
            "invalid_json",
        )
        return
    model = document.get("model") if isinstance(document, dict) else None
    if not isinstance(model, str) or not model:
        await fail(
            400,
            '"model" is required (a string): it selects the route to estimate for.',
            "invalid_request_error",
            "invalid_value",
        )
        return
    route = _route_for_model(config, model)
    if route is None or route.ai_proxy is None:
        await fail(
            404, f'No route serves model "{model}".', "invalid_request_error", "model_not_found"
        )
        return
    consumer_id: str | None = None
    if route.key_auth is not None:
        key = find_key(route.key_auth)
        consumer = config.consumers_by_key_hash.get(hash_key(key)) if key else None
        if consumer is None:
            await fail(
                401,
                "No API key found in request"
                if key is None
                else "Invalid authentication credentials",
                "invalid_request_error",
                "missing_api_key" if key is None else "invalid_api_key",
            )
            return
        consumer_id = consumer.id
    policy = route.ai_proxy
    await serve_estimate(
        enforcer,
        raw=raw,
        consumer_id=consumer_id,
        route_id=route.id,
        provider=policy.target.provider,
        route_model=policy.model,
        default_max_tokens=policy.max_tokens,
        headers=scope["headers"],
        send=send,
        anthropic=False,
        id_header=id_header,
    )
