"""Usage of a span as pages show it: totals, requests, errors, a chart by model, provider cost.

Everything comes from ``QueryMeter`` on the built-in ``llm_tokens`` meter, which reads hourly
rollups for whole hours (never every raw event). One input event is recorded per request
(failed ones included), so requests are the event count of ``type=input`` rows.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from controlplane.console.api import ConsoleApi
from meterline.admin.v1 import gateway_pb2, usage_pb2

PER_MILLION = Decimal(1_000_000)
GROUPS = ("model", "provider", "type", "status_code", "route")
WINDOWS = {"hour": usage_pb2.WINDOW_SIZE_HOUR, "day": usage_pb2.WINDOW_SIZE_DAY}


def _ts(value: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


@dataclass(frozen=True)
class RouteCost:
    """A route's ai-proxy model.options prices, per million tokens (Kong's unit)."""

    input: Decimal
    output: Decimal


@dataclass(frozen=True)
class Group:
    """Tokens of one set of llm_tokens dimensions over a span, with their provider cost."""

    dimensions: Mapping[str, str]
    tokens: int
    cost: Decimal


@dataclass(frozen=True)
class Usage:
    tokens_by_type: Mapping[str, int]
    requests: int
    errors: int
    # Per model: tokens by type, requests and provider cost.
    models: Sequence[Mapping[str, Any]]
    provider_cost: Decimal
    chart: Mapping[str, Any]
    # The same tokens per window by token type.
    chart_by_type: Mapping[str, Any] = field(default_factory=dict)
    # Per (model, provider, route, status_code, type) over the span: tokens and provider cost.
    groups: Sequence[Group] = ()

    @property
    def tokens(self) -> int:
        return sum(self.tokens_by_type.values())

    @property
    def error_rate(self) -> Decimal:
        if not self.requests:
            return Decimal(0)
        return (Decimal(self.errors) / Decimal(self.requests)).quantize(Decimal("0.0001"))

    def to_json(self) -> dict[str, Any]:
        return {
            "tokens": self.tokens,
            "tokens_by_type": dict(self.tokens_by_type),
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": str(self.error_rate),
            "provider_cost": str(self.provider_cost),
            "models": list(self.models),
            "chart": self.chart,
            "chart_by_type": self.chart_by_type,
        }


def _decimal(value: Any) -> Decimal | None:
    if value in (None, ""):
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


async def route_costs(api: ConsoleApi) -> dict[str, RouteCost]:
    """Each route's provider prices: its ai-proxy plugin's, else its service's, else global."""
    routes = (
        await api.unchecked("gateway", "ListRoutes", gateway_pb2.ListRoutesRequest(page_size=1000))
    ).routes
    plugins = (
        await api.unchecked(
            "gateway", "ListPlugins", gateway_pb2.ListPluginsRequest(page_size=1000)
        )
    ).plugins
    prices: dict[tuple[str, str], RouteCost] = {}
    for plugin in plugins:
        if plugin.plugin_name != "ai-proxy" or not plugin.enabled or plugin.consumer:
            continue
        config = json_of(plugin.config)
        options = (config.get("model") or {}).get("options") or {}
        input_cost, output_cost = (
            _decimal(options.get("input_cost")),
            _decimal(options.get("output_cost")),
        )
        if input_cost is None and output_cost is None:
            continue
        scope = ("route", plugin.route) if plugin.route else ("service", plugin.service)
        prices[scope] = RouteCost(input_cost or Decimal(0), output_cost or Decimal(0))
    result = {}
    for route in routes:
        cost = (
            prices.get(("route", route.name))
            or prices.get(("service", route.service))
            or prices.get(("service", ""))
        )
        if cost is not None:
            result[route.route_name] = cost
    return result


def json_of(struct: Any) -> dict[str, Any]:
    from google.protobuf import json_format

    value = json_format.MessageToDict(struct)
    return value if isinstance(value, dict) else {}


async def span_usage(
    api: ConsoleApi,
    *,
    start: datetime,
    end: datetime,
    subjects: Sequence[str] | None = None,
    window: str = "day",
    costs: Mapping[str, RouteCost] | None = None,
) -> Usage:
    """Usage in [start, end) of ``subjects`` (None: everyone's; empty: nobody's)."""
    if subjects is not None and not subjects:
        return Usage(
            {}, 0, 0, [], Decimal(0), {"times": [], "series": {}}, {"times": [], "series": {}}
        )
    common: dict[str, Any] = {
        "meter": "llm_tokens",
        "subjects": list(subjects or ()),
        "start_time": _ts(start),
        "end_time": _ts(end),
    }
    # One query for totals and chart: the rollup rows it reads dominate its cost.
    step = 3600 if window == "hour" else 86400
    answer = await api.unchecked(
        "usage",
        "QueryMeter",
        usage_pb2.QueryMeterRequest(
            group_by=list(GROUPS),
            window_size=WINDOWS.get(window, WINDOWS["day"]),
            **common,
        ),
    )
    first = int(start.timestamp()) // step * step
    times = list(range(first, int(end.timestamp()) + 1, step)) or [first]
    index = {t: i for i, t in enumerate(times)}
    series: dict[str, list[int]] = {}
    type_series: dict[str, list[int]] = {}
    totals: dict[tuple[str, ...], list[Any]] = {}
    by_type: dict[str, int] = defaultdict(int)
    models: dict[str, dict[str, Any]] = {}
    requests = errors = 0
    cost_total = Decimal(0)
    for row in answer.rows:
        group = row.group
        tokens = int(Decimal(row.value))
        token_type = group.get("type", "")
        by_type[token_type] += tokens
        name = group.get("model", "")
        model = models.setdefault(name, {"model": name, "tokens": defaultdict(int), "requests": 0})
        model["tokens"][token_type] += tokens
        # Windows are UTC-aligned; the first one is clipped to the span's start.
        slot = row.window_start.seconds // step * step
        series.setdefault(name or "(none)", [0] * len(times))[index[slot]] += tokens
        type_series.setdefault(token_type or "(none)", [0] * len(times))[index[slot]] += tokens
        key = tuple(group.get(g, "") for g in GROUPS)
        total = totals.setdefault(key, [0, Decimal(0)])
        total[0] += tokens
        if token_type == "input":
            requests += row.event_count
            model["requests"] += row.event_count
            if int(group.get("status_code") or 0) >= 400:
                errors += row.event_count
        route_cost = (costs or {}).get(group.get("route", ""))
        if route_cost is not None and token_type in ("input", "output"):
            price = route_cost.input if token_type == "input" else route_cost.output
            cost = price * tokens / PER_MILLION
            cost_total += cost
            total[1] += cost
            model["provider_cost"] = model.get("provider_cost", Decimal(0)) + cost
    model_rows = [
        {
            "model": m["model"],
            "tokens": dict(m["tokens"]),
            "total_tokens": sum(m["tokens"].values()),
            "requests": m["requests"],
            "provider_cost": str(m.get("provider_cost", Decimal(0))),
        }
        for m in sorted(models.values(), key=lambda m: -sum(m["tokens"].values()))
    ]
    # The chart: tokens per window by model, as uPlot wants them (x in epoch seconds, every
    # window of the span, so a quiet hour shows as 0, not as a line drawn across it).
    chart = {
        "times": times if series else [],
        "series": dict(sorted(series.items())),
        "window": window,
        "start": int(start.timestamp()),
        "end": int(end.timestamp()),
    }
    chart_by_type = {**chart, "series": dict(sorted(type_series.items()))}
    chart_by_type["times"] = times if type_series else []
    groups = [
        Group(dict(zip(GROUPS, key, strict=True)), tokens, cost)
        for key, (tokens, cost) in sorted(totals.items())
    ]
    return Usage(
        dict(by_type), requests, errors, model_rows, cost_total, chart, chart_by_type, groups
    )


async def top_subjects(
    api: ConsoleApi,
    *,
    start: datetime,
    end: datetime,
    window: str,
    costs: Mapping[str, RouteCost],
    top: int,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The ``top`` subjects by tokens in [start, end) (tokens, provider cost) and their tokens
    per window, as a chart (one series per subject)."""
    common: dict[str, Any] = {"meter": "llm_tokens", "start_time": _ts(start), "end_time": _ts(end)}
    answer = await api.unchecked(
        "usage",
        "QueryMeter",
        usage_pb2.QueryMeterRequest(group_by=["subject", "type", "route"], **common),
    )
    by_subject: dict[str, dict[str, Any]] = {}
    for row in answer.rows:
        subject = row.group.get("subject", "")
        tokens = int(Decimal(row.value))
        entry = by_subject.setdefault(
            subject, {"subject": subject, "tokens": 0, "provider_cost": Decimal(0)}
        )
        entry["tokens"] += tokens
        route_cost = costs.get(row.group.get("route", ""))
        kind = row.group.get("type", "")
        if route_cost is not None and kind in ("input", "output"):
            price = route_cost.input if kind == "input" else route_cost.output
            entry["provider_cost"] += price * tokens / PER_MILLION
    chosen = sorted(by_subject.values(), key=lambda e: (-e["tokens"], e["subject"]))[:top]
    step = 3600 if window == "hour" else 86400
    first = int(start.timestamp()) // step * step
    times = list(range(first, int(end.timestamp()) + 1, step)) or [first]
    index = {t: i for i, t in enumerate(times)}
    series: dict[str, list[int]] = {}
    if chosen:
        windowed = await api.unchecked(
            "usage",
            "QueryMeter",
            usage_pb2.QueryMeterRequest(
                group_by=["subject"],
                subjects=[e["subject"] for e in chosen],
                window_size=WINDOWS.get(window, WINDOWS["day"]),
                **common,
            ),
        )
        for row in windowed.rows:
            slot = row.window_start.seconds // step * step
            label = row.group.get("subject", "")
            series.setdefault(label, [0] * len(times))[index[slot]] += int(Decimal(row.value))
    chart = {
        "times": times if series else [],
        "series": dict(sorted(series.items())),
        "window": window,
        "start": int(start.timestamp()),
        "end": int(end.timestamp()),
    }
    return chosen, chart


def month_start(now: datetime) -> datetime:
    """This UTC calendar month's start: the span the overview shows by default."""
    return now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
