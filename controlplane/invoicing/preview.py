"""Invoice preview: the current period's lines, computed from stored usage and the catalog."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import Connection

from controlplane.catalog import storage as catalog
from controlplane.catalog.types import PriceType
from controlplane.customers import storage as customers
from controlplane.errors import FailedPrecondition
from controlplane.invoicing.types import Invoice, InvoiceLine
from controlplane.rating import rate_unit, round_money
from controlplane.subscriptions import storage as subscriptions
from controlplane.subscriptions.periods import billing_period
from controlplane.usage import storage as usage


def preview_invoice(conn: Connection, *, customer_key: str, at: datetime) -> Invoice:
    """The invoice of the billing period containing ``at``, from usage so far.

    Each subscription contributes one line per priced rate card; its quantity is the usage of
    the customer's subjects in [max(period start, subscription start), min(period end,
    subscription end)).
    """
    customer = customers.get_customer(conn, customer_key)
    running = [
        sub
        for sub in subscriptions.list_subscriptions(conn, customer.key)
        if sub.start_time <= at and (sub.end_time is None or sub.end_time > at)
    ]
    if not running:
        raise FailedPrecondition(f"customer {customer.key!r} has no running subscription")
    lines: list[InvoiceLine] = []
    currencies = set()
    period_starts, period_ends = [], []
    for sub in running:
        plan = catalog.get_plan(conn, sub.plan_key, sub.plan_version)
        currencies.add(plan.currency)
        period_start, period_end = billing_period(
            anchor=sub.start_time, cadence=plan.billing_cadence, at=at
        )
        start = max(period_start, sub.start_time)
        end = period_end if sub.end_time is None else min(period_end, sub.end_time)
        period_starts.append(start)
        period_ends.append(end)
        for card in plan.rate_cards:
            if card.price is None or card.price.type is not PriceType.UNIT:
                continue
            feature = catalog.get_feature(conn, card.feature)
            quantity = Decimal(
                usage.sum_tokens(
                    conn,
                    subjects=customer.subjects,
                    start=start,
                    end=end,
                    filters=feature.filters,
                )
            )
            unit_price = card.price.amount
            lines.append(
                InvoiceLine(
                    subscription=sub.id,
                    rate_card=card.key,
                    feature=feature.key,
                    description=f"{feature.name or feature.key} ({quantity} x {unit_price})",
                    quantity=quantity,
                    unit_price=unit_price,
                    amount=rate_unit(
                        quantity=quantity, unit_price=unit_price, currency=plan.currency
                    ),
                    period_start=start,
                    period_end=end,
                )
            )
    if len(currencies) != 1:
        raise FailedPrecondition(
            f"customer {customer.key!r} has subscriptions in several currencies: "
            f"{sorted(currencies)}"
        )
    currency = currencies.pop()
    total = round_money(sum((line.amount for line in lines), Decimal(0)), currency)
    return Invoice(
        customer=customer.key,
        currency=currency,
        period_start=min(period_starts),
        period_end=max(period_ends),
        lines=tuple(lines),
        total=total,
    )
