"""Admission by money: entitlements, budgets, task budgets; X-Meterline-* cost headers; estimates.

``estimate`` answers ``POST <route path>/cost/estimate`` (and ``POST /v1/cost/estimate``, for
the route that serves the body's model; dataplane.proxy.estimate routes and authenticates).

``admit`` runs after key-auth and body parsing, before the provider call: it raises Rejection,
400 for malformed task headers and 429 (``insufficient_quota``) for a refused request, and
otherwise returns the request's ``Metering``: it counts the request's usage events locally,
and the response carries ``X-Meterline-Input-Tokens``,
``X-Meterline-Output-Tokens``, ``X-Meterline-Cost`` (+ ``X-Meterline-Currency``),
``X-Meterline-Remaining`` (tokens left of the tightest metered entitlement) and
``X-Meterline-Budget-Remaining`` (money left of the tightest budget or task budget) and, for a
customer with prepaid credits, ``X-Meterline-Credits-Remaining`` (its live credit balance
minus this data plane's local usage).

``admit_credits`` is the credits stage: 402 (``insufficient_quota``, code
``insufficient_credits``) when the request needs ``credit_only`` credits and this data plane's
slice of them is spent.
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
from typing import Any, Final

import orjson

from dataplane.admission.entitlements import (
    INPUT_KINDS,
    BadTaskHeaders,
    Enforcer,
    Figures,
    TaskBudget,
    UsageItem,
    task_budget,
    unit_price,
)
from dataplane.errors import Rejection
from dataplane.usage.estimate import estimate_tokens, prompt_text, tokenizer
from meterline.dataplane.v1 import usage_pb2

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


def _has_usage(body: bytes) -> bool:
    """Whether ``body`` holds an OpenAI usage chunk (``find``: a bytes ``in`` first tries its
    operand as an int, ~1k instructions, and this runs on every chunk of a stream)."""
    compact, spaced = _USAGE_MARKERS
    return body.find(compact) != -1 or body.find(spaced) != -1


class Metering:
    """One admitted request's metering: counts its usage events, gives its cost headers.

    ``plain`` (decided at admission): the consumer has no enforcement policy, the route no
    cost, the request no task budget. Counting it changes no counter and its headers are
    only its token counts, so they are built without the enforcer, as long as the snapshot
    it was admitted under is still the one served (a new one may price it).
    """

    __slots__ = (
        "consumer_id",
        "done",
        "enforcer",
        "events",
        "figures",
        "held",
        "model",
        "plain",
        "provider",
        "route_id",
        "stream",
        "stream_figures",
        "table",
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
        stream_figures: bool,
        plain: bool = False,
    ) -> None:
        self.enforcer = enforcer
        self.table = enforcer.table
        self.consumer_id = consumer_id
        self.route_id = route_id
        self.provider = provider
        self.model = model
        self.task = task
        self.plain = plain
        # The request's usage events, counted (as UsageItems) when its figures are asked for.
        self.events: list[usage_pb2.UsageEvent] = []
        self.stream = False
        self.stream_figures = stream_figures
        self.held: list[bytes] = []
        self.done = False
        # What Enforcer.record counted and priced of the request (its cost, for traces).
        self.figures: Figures | None = None

    def _items(self) -> list[UsageItem]:
        return [
            UsageItem(
                provider=tokens.provider,
                model=tokens.model,
                kind=_KINDS.get(tokens.token_type, "input"),
                status=tokens.status_code,
                tokens=tokens.tokens,
            )
            for tokens in [event.llm_tokens for event in self.events]
        ]

    def _figures(self) -> Figures:
        enforcer = self.enforcer
        if self.done:
            figures = Figures()
        elif self.plain and enforcer.table is self.table:
            self.done = True
            return _plain_figures(self.events)
        else:
            self.done = True
            figures = self.figures = enforcer.record(
                consumer_id=self.consumer_id,
                route_id=self.route_id,
                items=self._items(),
                task=self.task,
            )
        tokens, money = enforcer.remaining(
            self.consumer_id, provider=self.provider, model=self.model, task=self.task
        )
        figures.remaining_tokens = tokens
        figures.remaining_money = money
        figures.remaining_credits = enforcer.credits_left(self.consumer_id)
        return figures

    def record(self, event: usage_pb2.UsageEvent) -> None:
        """Count one usage event of this request (after the reporter has it)."""
        self.enforcer.appended += 1
        self.events.append(event)

    def cost(self) -> Decimal | None:
        """What the request's usage costs by the snapshot's prices (None if unpriced);
        read-only, for traces (observability.tracing prices a request off the request path):
        the cost its figures counted when they are made, else its usage priced now."""
        figures = self.figures
        if figures is not None:
            return figures.cost
        table = self.enforcer.table
        policy = table.consumers.get(self.consumer_id) if self.consumer_id else None
        route_cost = table.route_costs.get(self.route_id)
        if not ((policy is not None and policy.prices) or route_cost is not None):
            return None
        total = Decimal(0)
        for item in self._items():
            price = unit_price(
                policy,
                route_cost,
                provider=item.provider,
                model=item.model,
                kind=item.kind,
                status=item.status,
            )
            if price is not None and item.tokens:
                total += price * item.tokens
        return total

    def head(self, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """The cost headers to add to a response head with ``headers``."""
        stream = False
        for name, value in headers:  # a loop, not any(<generator>): on every response head
            # find, not bytes ``in`` (which first tries its operand as an int: ~1k instructions)
            if name == b"content-type" and value.find(_EVENT_STREAM) != -1:
                stream = True
                break
        self.stream = stream
        if not stream:
            if self.plain and not self.done and self.enforcer.table is self.table:
                # Figures.headers of _plain_figures, without the Figures.
                self.done = True
                input_tokens, output_tokens = _plain_tokens(self.events)
                return [
                    (b"x-meterline-input-tokens", str(input_tokens).encode()),
                    (b"x-meterline-output-tokens", str(output_tokens).encode()),
                ]
            return self._figures().headers()
        if self.plain and self.enforcer.table is self.table:
            return []  # nothing is left of anything: no remaining figures to tell
        # Usage is not known yet: only what was left when the request started.
        tokens, money = self.enforcer.remaining(
            self.consumer_id, provider=self.provider, model=self.model, task=self.task
        )
        return Figures(
            remaining_tokens=tokens,
            remaining_money=money,
            remaining_credits=self.enforcer.credits_left(self.consumer_id),
        ).headers(usage=False)

    def body(self, body: bytes, *, more: bool) -> bytes | None:
        """What to send of a response body chunk: None holds it back, bytes go out first.

        A stream's usage chunk is held until the request's usage is counted, to carry the
        figures beside it (it comes last, with [DONE]); the last chunk releases what was held.
        """
        if not (self.stream and self.stream_figures):
            return b""
        if more:
            if self.held or _has_usage(body):
                self.held.append(body)
                return None
            return b""
        figures_json = self._figures().as_json()
        out, placed = _beside_usage(b"".join(self.held), figures_json)
        self.held.clear()
        if not placed:
            out += b": meterline " + orjson.dumps(figures_json) + b"\n\n"
        return out


def _plain_figures(events: list[usage_pb2.UsageEvent]) -> Figures:
    """What ``Enforcer.record`` counts of a plain request: its input and output tokens."""
    input_tokens, output_tokens = _plain_tokens(events)
    return Figures(input_tokens=input_tokens, output_tokens=output_tokens)


def _plain_tokens(events: list[usage_pb2.UsageEvent]) -> tuple[int, int]:
    """The input and output tokens of ``events`` (Figures.input_tokens, output_tokens)."""
    input_tokens = output_tokens = 0
    for event in events:
        tokens = event.llm_tokens
        if _KINDS.get(tokens.token_type, "input") in INPUT_KINDS:
            input_tokens += tokens.tokens
        else:
            output_tokens += tokens.tokens
    return input_tokens, output_tokens


def admit(
    enforcer: Enforcer,
    *,
    consumer_id: str | None,
    route_id: str,
    provider: str,
    model: str,
    headers: list[tuple[bytes, bytes]],
    stream_figures: bool = False,
) -> Metering:
    """Entitlements, budgets and task budgets of one request, before the provider is called.

    Returns the request's ``Metering`` (it counts the request's usage locally and gives the
    cost headers); raises Rejection: 400 for malformed task headers, 429 insufficient_quota.
    A consumer without a policy and a request without a task are not looked at further
    (the Metering is ``plain`` if the route has no cost either).
    """
    try:
        task = task_budget(headers)
    except BadTaskHeaders as exc:
        raise Rejection(
            400, str(exc), type="invalid_request_error", code="invalid_task_budget"
        ) from None
    table = enforcer.table
    if task is None and (consumer_id is None or consumer_id not in table.consumers):
        # No policy and no task: nothing Enforcer.admit would refuse.
        plain = route_id not in table.route_costs
    else:
        plain = False
        refusal = enforcer.admit(consumer_id, provider=provider, model=model, task=task)
        if refusal is not None:
            raise Rejection(429, refusal.message, type="insufficient_quota", code=refusal.code)
    return Metering(
        enforcer=enforcer,
        consumer_id=consumer_id,
        route_id=route_id,
        provider=provider,
        model=model,
        task=task,
        stream_figures=stream_figures,
        plain=plain,
    )


def admit_credits(
    enforcer: Enforcer, *, consumer_id: str | None, provider: str, model: str
) -> None:
    """Prepaid credits of one request, before the provider is called: raises Rejection (402,
    ``insufficient_quota``, code ``insufficient_credits``) when the request needs credit_only
    credits and this data plane's slice of them is spent."""
    refusal = enforcer.admit_credits(consumer_id, provider=provider, model=model)
    if refusal is not None:
        raise Rejection(402, refusal.message, type="insufficient_quota", code=refusal.code)


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


def estimate(
    enforcer: Enforcer,
    *,
    raw: bytes,
    consumer_id: str | None,
    route_id: str,
    provider: str,
    route_model: str,
    default_max_tokens: int,
    headers: list[tuple[bytes, bytes]],
) -> dict[str, object]:
    """The answer of POST <route>/cost/estimate: tokens and prices of a chat request, not sent.

    Raises Rejection (400) for a body that is not a chat request.
    """

    def bad(message: str, code: str) -> Rejection:
        return Rejection(400, message, type="invalid_request_error", code=code)

    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise bad(
            f"We could not parse the JSON body of your request: {exc}", "invalid_json"
        ) from None
    if not isinstance(document, dict):
        raise bad("The request body must be a JSON object.", "invalid_json")
    messages = document.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad('"messages" must be a non-empty array, as in a chat completion.', "invalid_value")
    model = route_model or document.get("model")
    if not isinstance(model, str) or not model:
        raise bad('"model" is required (a string).', "invalid_value")
    try:
        max_tokens = _max_tokens(document, default_max_tokens)
        task = task_budget(headers)
    except (ValueError, BadTaskHeaders) as exc:
        raise bad(str(exc), "invalid_value") from None
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
    refusal = enforcer.admit(
        consumer_id, provider=provider, model=model, task=task
    ) or enforcer.admit_credits(consumer_id, provider=provider, model=model)
    credits_left = enforcer.credits_left(consumer_id)
    return {
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
        "remaining_credits": _text(credits_left),
        "allowed": refusal is None,
        "refusal_code": refusal.code if refusal is not None else None,
    }
