"""Invoice lines from quantities already read: pure (no database, no clock), table-tested.

Invoices are computed in two steps, the OpenMeter way: ``lifecycle`` first snapshots what
each rate card of a segment is rated on (its feature's quantity, tokens per model and price
window, the price list: all of the I/O, as a ``CardUsage`` per rate card), then
``segment_lines`` turns the snapshot into lines with the code below, which reads nothing.

A late segment (usage of a period whose invoice is issued already) gives one ``late_usage``
line per rate card, priced as the difference the late usage makes to that period:
``lines(billed before + late) - lines(billed before)``, so tiers, free units and commitments
of the original period still apply (``late_usage_line``, for every price type).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal

from controlplane.catalog.types import Commitments, Feature, Plan, PriceList, PriceType, RateCard
from controlplane.invoicing.describe import describe_line
from controlplane.invoicing.types import InvoiceLine
from controlplane.rating import LineType, RatedLine, rate_card_lines
from controlplane.rating.modellist import ModelUsage, model_list_lines
from controlplane.rating.proration import prorate, prorate_minimum
from controlplane.subscriptions.types import Subscription


@dataclass(frozen=True)
class Segment:
    """The part of an invoice's usage one subscription contributes: [start, end).

    ``period_start``/``period_end``: the whole billing period the usage belongs to (differs
    from start/end when clipped by the subscription's start or end, or by a late window).
    """

    sub: Subscription
    plan: Plan
    start: datetime
    end: datetime
    period_start: datetime
    period_end: datetime
    late: bool = False


@dataclass(frozen=True)
class CardUsage:
    """What one rate card of one segment is rated on, read from storage before rating.

    Usage-based cards: ``quantity`` is the feature's quantity over the events being billed.
    In a late segment it is over the events billed before *and* the late ones (re-aggregated:
    MAX, UNIQUE_COUNT and LATEST are not sums of per-set quantities), ``billed_before`` over
    the events earlier invoices billed.

    model_list cards: ``price_list``, and ``models``, the billed events' tokens per model,
    token type and price window; in a late segment ``models`` holds the late events only and
    ``models_before`` the events earlier invoices billed (token counts add up).
    """

    card: RateCard
    feature: Feature | None = None
    quantity: Decimal = Decimal(0)
    billed_before: Decimal = Decimal(0)
    price_list: PriceList | None = None
    models: tuple[ModelUsage, ...] = ()
    models_before: tuple[ModelUsage, ...] = ()


def when(moment: datetime) -> str:
    """A period bound in a description: the date alone at midnight, else to the minute."""
    if (moment.hour, moment.minute, moment.second, moment.microsecond) == (0, 0, 0, 0):
        return moment.strftime("%Y-%m-%d")
    return moment.isoformat(timespec="minutes").replace("+00:00", "Z")


def plain(value: Decimal) -> Decimal:
    """A difference without the trailing zeros subtraction leaves (14.75 - 13.75 is 1, not
    1.00), never in exponent notation."""
    if value == value.to_integral_value():
        return value.quantize(Decimal(1))
    return value.normalize()


def lines_total(lines: Sequence[InvoiceLine | RatedLine]) -> Decimal:
    """The sum of lines' amounts (lines are rounded already: exact in the minor unit)."""
    return sum((line.amount for line in lines), Decimal(0))


def served(segment: Segment) -> tuple[datetime, datetime]:
    """The part of the segment's whole billing period its subscription covers."""
    sub = segment.sub
    end = segment.period_end if sub.end_time is None else min(segment.period_end, sub.end_time)
    return max(segment.period_start, sub.start_time), end


def segment_lines(segment: Segment, cards: Sequence[CardUsage]) -> list[InvoiceLine]:
    """The segment's lines, rate card by rate card, in the order of ``cards``."""
    return [line for usage in cards for line in card_lines(segment, usage)]


def card_lines(segment: Segment, usage: CardUsage) -> list[InvoiceLine]:
    """One rate card's lines for one segment: its price line(s), discount and commitments, or
    (late segments) its one late-usage line."""
    card, feature = usage.card, usage.feature
    price = card.price
    if price is None:
        return []
    # A part period (start, plan change, cancellation) owes a part of the minimum.
    served_start, served_end = served(segment)
    commitments = prorate_minimum(
        card.commitments,
        part=served_end - served_start,
        whole=segment.period_end - segment.period_start,
        currency=segment.plan.currency,
    )
    if price.type is PriceType.MODEL_LIST:
        if feature is None or usage.price_list is None:
            return []
        return _model_list_lines(segment, usage, feature, usage.price_list, commitments)
    if segment.late:
        if not price.usage_based or feature is None:
            return []  # flat fees were charged with the period

        def rated(quantity: Decimal) -> tuple[RatedLine, ...]:
            assert price is not None
            return rate_card_lines(
                price=price,
                quantity=quantity,
                currency=segment.plan.currency,
                discounts=card.discounts,
                commitments=commitments,
            )

        # The period's quantity with the late events, less what earlier invoices billed: for
        # SUM/COUNT (and tokens) the late events' own sum; for MAX, UNIQUE_COUNT and LATEST
        # the change they make to the period's re-aggregated quantity.
        before = usage.billed_before
        late = plain(usage.quantity - before)
        if not late:
            return []
        return [
            late_usage_line(
                segment,
                card,
                feature,
                quantity=late,
                before=rated(before),
                after=rated(before + late),
                detail=f" (billed before: {before})",
            )
        ]
    return list(_period_lines(segment, card, feature, usage.quantity, commitments))


def late_usage_line(
    segment: Segment,
    card: RateCard,
    feature: Feature,
    *,
    quantity: Decimal,
    before: Sequence[RatedLine],
    after: Sequence[RatedLine],
    detail: str,
) -> InvoiceLine:
    """The one line of a rate card's late usage: ``after - before``, the rated lines of the
    period with and without the late usage (a negative amount is a credit)."""
    assert card.price is not None
    name = feature.name or feature.key
    return InvoiceLine(
        subscription=segment.sub.id,
        rate_card=card.key,
        feature=card.feature,
        description=(
            f"{name}: late usage for {when(segment.period_start)}.."
            f"{when(segment.period_end)}: {quantity}{detail}"
        ),
        quantity=quantity,
        unit_price=None,
        amount=lines_total(after) - lines_total(before),
        period_start=segment.start,
        period_end=segment.end,
        type=LineType.USAGE,
        price_type=card.price.type,
        late_usage=True,
    )


def _period_lines(
    segment: Segment,
    card: RateCard,
    feature: Feature | None,
    quantity: Decimal,
    commitments: Commitments | None,
) -> list[InvoiceLine]:
    """A rate card's lines for (part of) its own period: flat fees prorated to the time
    served, usage priced, then discount and commitment lines."""
    price = card.price
    assert price is not None
    partial = (segment.start, segment.end) != (segment.period_start, segment.period_end)
    if price.type is PriceType.FLAT and partial:
        # Part of a period (plan change, cancellation): the fee for the time served.
        price = replace(
            price,
            amount=prorate(
                amount=price.amount,
                part=segment.end - segment.start,
                whole=segment.period_end - segment.period_start,
                currency=segment.plan.currency,
            ),
        )
    described = replace(card, commitments=commitments)
    prorated = f", prorated for {when(segment.start)}..{when(segment.end)}" if partial else ""
    lines = []
    for line in rate_card_lines(
        price=price,
        quantity=quantity,
        currency=segment.plan.currency,
        discounts=card.discounts,
        commitments=commitments,
    ):
        is_price_line = line.type in (LineType.FLAT, LineType.USAGE)
        lines.append(
            InvoiceLine(
                subscription=segment.sub.id,
                rate_card=card.key,
                feature=card.feature,
                description=describe_line(described, feature, line)
                + (prorated if line.type in (LineType.FLAT, LineType.MINIMUM_COMMITMENT) else ""),
                quantity=line.quantity,
                unit_price=line.unit_price,
                amount=line.amount,
                period_start=segment.start,
                period_end=segment.end,
                type=line.type,
                price_type=price.type if is_price_line else None,
                payment_term=price.payment_term if line.type is LineType.FLAT else None,
                free_quantity=line.free_quantity,
                packages=line.packages,
                tiers=line.tiers,
            )
        )
    return lines


def _model_list_lines(
    segment: Segment,
    usage: CardUsage,
    feature: Feature,
    price_list: PriceList,
    commitments: Commitments | None,
) -> list[InvoiceLine]:
    """A model_list rate card: a line per model, token type and price period (or one late
    line)."""
    card = usage.card
    price = card.price
    assert price is not None

    def rated(items: Sequence[ModelUsage]) -> tuple[RatedLine, ...]:
        return model_list_lines(
            usage=items,
            price_list=price_list,
            markup_percent=price.markup_percent,
            currency=segment.plan.currency,
            discounts=card.discounts,
            commitments=commitments,
        )

    if segment.late:
        quantity = sum((u.quantity for u in usage.models), Decimal(0))
        if not quantity:
            return []
        before = list(usage.models_before)
        return [
            late_usage_line(
                segment,
                card,
                feature,
                quantity=quantity,
                before=rated(before),
                after=rated(before + list(usage.models)),
                detail=f" tokens at {price_list.key} prices",
            )
        ]
    described = replace(card, commitments=commitments)
    return [
        InvoiceLine(
            subscription=segment.sub.id,
            rate_card=card.key,
            feature=card.feature,
            description=describe_line(described, feature, line),
            quantity=line.quantity,
            unit_price=line.unit_price,
            amount=line.amount,
            period_start=segment.start,
            period_end=segment.end,
            type=line.type,
            price_type=price.type if line.type is LineType.USAGE else None,
            model=line.model,
            token_type=line.token_type,
        )
        for line in rated(usage.models)
    ]
