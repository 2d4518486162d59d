"""Usage of a span as pages show it: totals, requests, errors, a chart by model, provider cost.

Everything comes from the built-in ``llm_tokens`` meter's hourly rollups combined in SQL
(``UsageReader``: what ``QueryMeter`` adds up for whole hours), over whole hours only
(``rollup_end``), so never from a raw event. One input event is recorded per request (failed
ones included), so requests are the event count of ``type=input`` rows.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from controlplane.console.api import ConsoleApi, Forbidden
from controlplane.storage.db import Database
from controlplane.usage import rollups
from controlplane.usage.meters import LLM_TOKENS, MeterAggregation
from meterline.admin.v1 import gateway_pb2

PER_MILLION = Decimal(1_000_000)
GROUPS = ("model", "provider", "type", "status_code", "route")
WINDOWS = ("hour", "day")


def rollup_end(end: datetime) -> datetime:
    """The end of ``end``'s hour (``end`` itself on an hour boundary).

    Usage "so far" is read up to there: the hour's rollup row holds every event of it stored
    so far (ingestion keeps it in the same transaction), so the span is whole hours and no raw
    event is read. Events later than now exist only when a data plane's clock runs ahead."""
    hour = end.replace(minute=0, second=0, microsecond=0)
    return end if hour == end else hour + timedelta(hours=1)


@dataclass(frozen=True)
class RouteCost:
    """A route's ai-proxy model.options prices, per million tokens (Kong's unit)."""

    input: Decimal
    output: Decimal


@dataclass(frozen=True, slots=True)
class UsageRow:
    """``llm_tokens`` of one subject (``""`` unless asked by subject) and dimension set (all
    of the event's dimensions) in one window (``None``: the whole span)."""

    subject: str
    window_start: datetime | None
    group: Mapping[str, str]
    value: Decimal
    event_count: int


class UsageReader:
    """``llm_tokens`` per window, dimension set and (if asked) subject over whole UTC hours,
    straight from the hourly rollups combined in SQL (``rollups.grouped_rows``): exactly what
    ``QueryMeter`` adds up for whole hours, before its grouper. The pages group the rows
    themselves: through ``QueryMeter`` an hourly month was 8,641 rows built as messages and a
    third of a second of grouping in Python. Operator pages are held to ``QueryMeter``'s scope
    rule; the portal (``checked=False``) builds every query for its own customer's subjects."""

    def __init__(self, db: Database, api: ConsoleApi, *, checked: bool = True) -> None:
        self._db = db
        self._api = api
        self._checked = checked

    async def rows(
        self,
        *,
        start: datetime,
        end: datetime,
        window: str | None,
        by_subject: bool = False,
        subjects: Sequence[str] = (),
    ) -> list[UsageRow]:
        """Rows of [start, end), both whole UTC hours; ``window`` "hour", "day" or None."""
        if self._checked and not self._api.principal.may_call("QueryMeter"):
            raise Forbidden(f"{self._api.principal.name!r} may not call QueryMeter")
        for edge in (start, end):
            if edge != edge.replace(minute=0, second=0, microsecond=0):
                raise ValueError(f"{edge} is not a whole UTC hour (use rollup_end)")

        def read() -> list[UsageRow]:
            with self._db.begin() as conn:
                found = rollups.grouped_rows(
                    conn,
                    meter=LLM_TOKENS,
                    subjects=list(subjects) or None,
                    start=start,
                    end=end,
                    aggregation=MeterAggregation.SUM,
                    by_subject=by_subject,
                    window=window,
                )
            day = window == "day"
            return [
                UsageRow(
                    subject,
                    # SQLite leaves some rows hourly (sums it cannot add exactly in SQL).
                    bucket.replace(hour=0) if day and bucket is not None else bucket,
                    dimensions,
                    value,
                    count,
                )
                for subject, bucket, dimensions, value, count in found
            ]

        return await asyncio.to_thread(read)


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
    reader: UsageReader,
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
    # One query for totals and chart: the rollup rows it reads dominate its cost.
    step = 3600 if window == "hour" else 86400
    rows = await reader.rows(
        start=start, end=rollup_end(end), window=window, subjects=subjects or ()
    )
    first = int(start.timestamp()) // step * step
    times = list(range(first, int(end.timestamp()) + 1, step)) or [first]
    index = {t: i for i, t in enumerate(times)}
    series: dict[str, list[int]] = {}
    type_series: dict[str, list[int]] = {}
    # Tokens and requests per dimension set over the span; priced once per set afterwards
    # (Decimal arithmetic per row cost more than the rest of the loop).
    totals: dict[tuple[str, ...], list[int]] = {}
    for row in rows:
        group = row.group
        tokens = int(row.value)
        key = tuple(group.get(g, "") for g in GROUPS)
        total = totals.get(key)
        if total is None:
            total = totals[key] = [0, 0]
        total[0] += tokens
        total[1] += row.event_count
        # Windows are UTC-aligned; the first one is clipped to the span's start.
        slot = index[_epoch(row.window_start) // step * step]
        series.setdefault(key[0] or "(none)", [0] * len(times))[slot] += tokens
        type_series.setdefault(key[2] or "(none)", [0] * len(times))[slot] += tokens
    by_type: dict[str, int] = defaultdict(int)
    models: dict[str, dict[str, Any]] = {}
    requests = errors = 0
    cost_total = Decimal(0)
    groups = []
    for key, (tokens, events) in sorted(totals.items()):
        dimensions = dict(zip(GROUPS, key, strict=True))
        name, token_type = dimensions["model"], dimensions["type"]
        by_type[token_type] += tokens
        model = models.setdefault(
            name,
            {"model": name, "tokens": defaultdict(int), "requests": 0, "provider_cost": Decimal(0)},
        )
        model["tokens"][token_type] += tokens
        if token_type == "input":
            requests += events
            model["requests"] += events
            if int(dimensions["status_code"] or 0) >= 400:
                errors += events
        cost = Decimal(0)
        route_cost = (costs or {}).get(dimensions["route"])
        if route_cost is not None and token_type in ("input", "output"):
            price = route_cost.input if token_type == "input" else route_cost.output
            cost = price * tokens / PER_MILLION
            cost_total += cost
            model["provider_cost"] += cost
        groups.append(Group(dimensions, tokens, cost))
    model_rows = [
        {
            "model": m["model"],
            "tokens": dict(m["tokens"]),
            "total_tokens": sum(m["tokens"].values()),
            "requests": m["requests"],
            "provider_cost": str(m["provider_cost"]),
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
    return Usage(
        dict(by_type), requests, errors, model_rows, cost_total, chart, chart_by_type, groups
    )


def _epoch(value: datetime | None) -> int:
    return int(value.timestamp()) if value is not None else 0


async def top_subjects(
    reader: UsageReader,
    *,
    start: datetime,
    end: datetime,
    window: str,
    costs: Mapping[str, RouteCost],
    top: int,
    chart_start: datetime | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The ``top`` subjects by tokens in [start, end) (tokens, provider cost) and their tokens
    per window from ``chart_start`` (default ``start``), as a chart (one series per subject)."""
    chart_start = chart_start or start
    span_end = rollup_end(end)
    by_subject: dict[str, dict[str, Any]] = {}
    for row in await reader.rows(start=start, end=span_end, window=None, by_subject=True):
        subject = row.subject
        tokens = int(row.value)
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
    first = int(chart_start.timestamp()) // step * step
    times = list(range(first, int(end.timestamp()) + 1, step)) or [first]
    index = {t: i for i, t in enumerate(times)}
    series: dict[str, list[int]] = {}
    if chosen:
        for row in await reader.rows(
            start=chart_start,
            end=span_end,
            window=window,
            by_subject=True,
            subjects=[e["subject"] for e in chosen],
        ):
            slot = _epoch(row.window_start) // step * step
            series.setdefault(row.subject, [0] * len(times))[index[slot]] += int(row.value)
    chart = {
        "times": times if series else [],
        "series": dict(sorted(series.items())),
        "window": window,
        "start": int(chart_start.timestamp()),
        "end": int(end.timestamp()),
    }
    return chosen, chart


def month_start(now: datetime) -> datetime:
    """This UTC calendar month's start: the span the overview shows by default."""
    return now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
