"""Margin over time: billed revenue beside provider cost, month by month, for everything or
one customer, model or feature.

Billed, per calendar month (UTC) of an invoice's period start:

- closed periods: the invoices no longer open (draft, issued, paid, payment failed; never
  void, nor credit top-ups, whose period is empty: buying credits is not usage billed), summed
  per month and currency by the database (``invoicing.monthly.billed_by_month``, for a
  principal that may call ``ListInvoices``); narrowed to a model or feature, their lines of
  that model (``model_list`` prices) or that feature (or rate card);
- this month: also the open periods' invoices as they stand now: one customer's
  ``PreviewInvoice``, or every customer's (``invoicing.totals``, as the overview computes it).

Provider cost: the ``llm_tokens`` rollups per day (``usage.UsageReader``, ``QueryMeter``'s
query), priced by each route's ``ai-proxy`` ``input_cost``/``output_cost``
(``usage.route_costs``) and summed per month;
narrowed to a customer's subjects, a model, or the billable requests a feature's filters match.
Margin is billed minus provider cost, in USD only (provider prices are taken as USD).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from controlplane.console import usage
from controlplane.console.api import ConsoleApi
from controlplane.errors import FailedPrecondition, InvalidArgument, NotFound
from controlplane.invoicing.monthly import month_index
from controlplane.invoicing.totals import OpenTotals
from controlplane.usage.storage import llm_dimensions_match
from meterline.admin.v1 import billing_pb2, catalog_pb2, customers_pb2

MAX_MONTHS = 24

# (month starts, selection) -> per month, currency -> billed: the closed invoices.
ClosedBilled = Callable[[list[datetime], "Selection"], Awaitable[list[dict[str, Decimal]]]]


@dataclass(frozen=True)
class Selection:
    """What the figures are narrowed to: nothing, or one customer, model or feature."""

    customer: str = ""
    model: str = ""
    feature: str = ""

    def __post_init__(self) -> None:
        if sum(bool(v) for v in (self.customer, self.model, self.feature)) > 1:
            raise InvalidArgument("choose one of customer, model or feature (or none)")

    def to_json(self) -> dict[str, str]:
        return {"customer": self.customer, "model": self.model, "feature": self.feature}


def month_starts(now: datetime, months: int) -> list[datetime]:
    """The ``months`` calendar months (UTC) ending with ``now``'s, oldest first."""
    first = usage.month_start(now)
    starts = [first]
    for _ in range(months - 1):
        previous = starts[-1]
        year, month = (
            (previous.year, previous.month - 1)
            if previous.month > 1
            else (
                previous.year - 1,
                12,
            )
        )
        starts.append(previous.replace(year=year, month=month))
    return starts[::-1]


async def _open_billed(
    api: ConsoleApi,
    selection: Selection,
    open_totals: Callable[[], Awaitable[OpenTotals]],
) -> dict[str, Decimal]:
    """The open periods' invoices now, narrowed to the selection."""
    if selection.customer:
        try:
            preview = await api.call(
                "billing",
                "PreviewInvoice",
                billing_pb2.PreviewInvoiceRequest(customer=f"customers/{selection.customer}"),
            )
        except (NotFound, FailedPrecondition):
            return {}
        return {preview.currency: Decimal(preview.total)}
    found = await open_totals()
    if selection.model:
        return {c: v for (c, m), v in found.by_model.items() if m == selection.model}
    if selection.feature:
        return {c: v for (c, f), v in found.by_feature.items() if f == selection.feature}
    return dict(found.by_currency)


async def _costs(
    api: ConsoleApi,
    *,
    starts: list[datetime],
    now: datetime,
    selection: Selection,
    costs: Mapping[str, usage.RouteCost],
    reader: usage.UsageReader,
) -> list[Decimal]:
    """Provider cost per month from the rollups' daily rows."""
    subjects: list[str] = []
    wanted: dict[str, str] = {}
    if selection.customer:
        customer = await api.call(
            "customers",
            "GetCustomer",
            customers_pb2.GetCustomerRequest(name=f"customers/{selection.customer}"),
        )
        if not customer.subjects:
            return [Decimal(0) for _ in starts]
        subjects = list(customer.subjects)
    if selection.model:
        wanted = {"model": selection.model}
    if selection.feature:
        feature = await api.call(
            "catalog",
            "GetFeature",
            catalog_pb2.GetFeatureRequest(name=f"features/{selection.feature}"),
        )
        if feature.meter.rsplit("/", 1)[-1] != "llm_tokens":
            return [Decimal(0) for _ in starts]
        wanted = dict(feature.filters)
    rows = await reader.rows(
        start=starts[0], end=usage.rollup_end(now), window="day", subjects=subjects
    )
    by_month = [Decimal(0) for _ in starts]
    for row in rows:
        group = row.group
        # A feature bills its filters' billable requests; a model is every request of it.
        if wanted and not llm_dimensions_match(
            group, wanted, billable_only=bool(selection.feature)
        ):
            continue
        route_cost = costs.get(group.get("route", ""))
        kind = group.get("type", "")
        if route_cost is None or kind not in ("input", "output"):
            continue
        index = month_index(row.window_start or starts[0], starts)
        if index is None:
            continue
        price = route_cost.input if kind == "input" else route_cost.output
        by_month[index] += price * row.value / usage.PER_MILLION
    return by_month


async def over_time(
    api: ConsoleApi,
    *,
    now: datetime,
    months: int,
    selection: Selection,
    open_totals: Callable[[], Awaitable[OpenTotals]],
    closed_billed: ClosedBilled,
    reader: usage.UsageReader,
) -> dict[str, Any]:
    """Billed, provider cost and margin per month, as the margin page and its twin show."""
    if not 1 <= months <= MAX_MONTHS:
        raise InvalidArgument(f"months must be 1 to {MAX_MONTHS}, got {months}")
    starts = month_starts(now, months)

    async def provider_cost() -> list[Decimal]:
        route_costs = await usage.route_costs(api)
        return await _costs(
            api, starts=starts, now=now, selection=selection, costs=route_costs, reader=reader
        )

    # Independent reads (each in its own thread and transaction): their database time overlaps.
    billed, open_billed, cost = await asyncio.gather(
        closed_billed(starts, selection),
        _open_billed(api, selection, open_totals),
        provider_cost(),
    )
    for currency, amount in open_billed.items():
        billed[-1][currency] = billed[-1].get(currency, Decimal(0)) + amount
    margins = [m.get("USD", Decimal(0)) - c for m, c in zip(billed, cost, strict=True)]
    rows = [
        {
            "month": start.strftime("%Y-%m"),
            "start": start.isoformat(),
            "billed": {c: str(v) for c, v in sorted(month_billed.items())},
            "provider_cost": str(month_cost),
            "margin": str(month_margin),
        }
        for start, month_billed, month_cost, month_margin in zip(
            starts, billed, cost, margins, strict=True
        )
    ]
    # Chart coordinates only: the table and the JSON keep the exact decimal strings.
    chart = {
        "times": [int(s.timestamp()) for s in starts],
        "series": {
            "billed (USD)": [float(m.get("USD", Decimal(0))) for m in billed],
            "provider cost (USD)": [float(c) for c in cost],
            "margin (USD)": [float(m) for m in margins],
        },
        "window": "month",
        "start": int(starts[0].timestamp()),
        "end": int(now.timestamp()),
    }
    return {
        "months": rows,
        "selection": selection.to_json(),
        "chart": chart,
        "other_currencies": sorted({c for m in billed for c in m if c != "USD"}),
    }
