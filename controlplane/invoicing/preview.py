"""Invoice preview: the current period's lines, computed from stored usage and the catalog."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import Connection

from controlplane.catalog import storage as catalog
from controlplane.catalog.types import Feature, Price, PriceType, RateCard
from controlplane.customers import storage as customers
from controlplane.errors import FailedPrecondition
from controlplane.invoicing.types import Invoice, InvoiceLine
from controlplane.rating import LineType, RatedLine, rate_card_lines, round_money
from controlplane.subscriptions import storage as subscriptions
from controlplane.subscriptions.periods import billing_period
from controlplane.usage import storage as usage


def describe_line(card: RateCard, feature: Feature | None, line: RatedLine) -> str:
    """A line's explanation in words, e.g. ``calls: 1500 (100 free), graduated tiers``."""
    price = card.price
    assert price is not None
    name = (feature.name or feature.key) if feature is not None else card.key
    if line.type is LineType.FLAT:
        term = price.payment_term.value.replace("_", " ") if price.payment_term else "in advance"
        return f"{name}: flat fee {price.amount} per period, {term}"
    if line.type is LineType.DISCOUNT:
        assert card.discounts is not None
        return f"{name}: {card.discounts.percentage}% discount"
    if line.type is LineType.MAXIMUM_COMMITMENT:
        assert card.commitments is not None
        return f"{name}: maximum commitment {card.commitments.maximum_amount}"
    if line.type is LineType.MINIMUM_COMMITMENT:
        assert card.commitments is not None
        return f"{name}: minimum commitment {card.commitments.minimum_amount} top-up"
    quantity = (
        f"{line.quantity} ({line.free_quantity} free)"
        if line.free_quantity
        else (f"{line.quantity}")
    )
    return f"{name}: {quantity} {_price_words(price, line)}"


def _price_words(price: Price, line: RatedLine) -> str:
    if price.type is PriceType.UNIT:
        return f"x {price.amount}"
    if price.type is PriceType.PACKAGE:
        return f"= {line.packages} x {price.amount} per {price.quantity_per_package}"
    mode = price.mode.value if price.mode else "tiered"
    return f"{mode} tiers " + ", ".join(f"{t.tier}: {t.quantity}" for t in line.tiers)


def preview_invoice(conn: Connection, *, customer_key: str, at: datetime) -> Invoice:
    """The invoice of the billing period containing ``at``, from usage so far.

    Each priced rate card of each subscription contributes its lines (``rate_card_lines``);
    usage quantities are those of the customer's subjects in [max(period start, subscription
    start), min(period end, subscription end)). Commitments are applied as if the period ended
    at ``at``.
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
            anchor=sub.anchor, cadence=plan.billing_cadence, at=at
        )
        start = max(period_start, sub.start_time)
        end = period_end if sub.end_time is None else min(period_end, sub.end_time)
        period_starts.append(start)
        period_ends.append(end)
        for card in plan.rate_cards:
            price = card.price
            if price is None:
                continue
            feature = catalog.get_feature(conn, card.feature) if card.feature else None
            quantity = Decimal(0)
            if price.usage_based and feature is not None:
                quantity = Decimal(
                    usage.sum_tokens(
                        conn,
                        subjects=customer.subjects,
                        start=start,
                        end=end,
                        filters=feature.filters,
                    )
                )
            for rated in rate_card_lines(
                price=price,
                quantity=quantity,
                currency=plan.currency,
                discounts=card.discounts,
                commitments=card.commitments,
            ):
                is_price_line = rated.type in (LineType.FLAT, LineType.USAGE)
                lines.append(
                    InvoiceLine(
                        subscription=sub.id,
                        rate_card=card.key,
                        feature=card.feature,
                        description=describe_line(card, feature, rated),
                        quantity=rated.quantity,
                        unit_price=rated.unit_price,
                        amount=rated.amount,
                        period_start=start,
                        period_end=end,
                        type=rated.type,
                        price_type=price.type if is_price_line else None,
                        payment_term=price.payment_term if rated.type is LineType.FLAT else None,
                        free_quantity=rated.free_quantity,
                        packages=rated.packages,
                        tiers=rated.tiers,
                    )
                )
    if len(currencies) != 1:
        raise FailedPrecondition(
            f"customer {customer.key!r} has subscriptions in several currencies: "
            f"{sorted(currencies)}"
        )
    currency = currencies.pop()
    # Lines are already rounded, so their sum is exact in the minor unit.
    total = round_money(sum((line.amount for line in lines), Decimal(0)), currency)
    return Invoice(
        customer=customer.key,
        currency=currency,
        period_start=min(period_starts),
        period_end=max(period_ends),
        lines=tuple(lines),
        total=total,
    )
