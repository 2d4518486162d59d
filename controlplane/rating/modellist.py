"""The model_list pricer: each token type of each model at a price list's price, plus a markup.

Usage arrives split into windows that no price change crosses (``ModelUsage``); the price in
effect at a window's start prices all of it. Windows of the same model, token type and price
entry add up to one line, so an invoice shows one line per model, token type and price period.
Each line is ``round(tokens x list_price x (100 + markup_percent) / 100)``, exact until that one
rounding (to the currency's minor unit, ties away from zero). A model or token type the list
has no price for (yet) becomes a visible line at 0 with no unit price, never an error, so one
new model cannot hold up every invoice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from controlplane.catalog.types import (
    MODEL_PRICE_TOKEN_TYPES,
    Commitments,
    Discounts,
    PriceList,
)
from controlplane.rating.charge import EXACT, LineType, RatedLine
from controlplane.rating.money import round_money
from controlplane.rating.ratecard import HUNDRED, adjustment_lines
from controlplane.rating.unit import non_negative


@dataclass(frozen=True)
class ModelUsage:
    """Tokens of one model and token type in a window starting at ``start``."""

    model: str
    token_type: str
    start: datetime
    quantity: Decimal


def marked_up(price: Decimal, markup_percent: Decimal | None) -> Decimal:
    """``price x (100 + markup) / 100``, exact."""
    if not markup_percent:
        return price
    factor = EXACT.add(HUNDRED, non_negative("markup_percent", markup_percent))
    return EXACT.divide(EXACT.multiply(price, factor), HUNDRED)


def _type_order(token_type: str) -> int:
    order = MODEL_PRICE_TOKEN_TYPES
    return order.index(token_type) if token_type in order else len(order)


def model_usage_lines(
    *,
    usage: Sequence[ModelUsage],
    price_list: PriceList,
    markup_percent: Decimal | None,
    currency: str,
) -> tuple[RatedLine, ...]:
    """One usage line per model, token type and price entry (see the module docstring)."""
    groups: dict[tuple[str, str, datetime | None], Decimal] = {}
    for item in usage:
        quantity = non_negative("quantity", item.quantity)
        if not quantity:
            continue
        entry = price_list.effective(item.model, item.start)
        since = None
        if entry is not None and entry.price_of(item.token_type) is not None:
            since = entry.effective_from
        key = (item.model, item.token_type, since)
        groups[key] = EXACT.add(groups.get(key, Decimal(0)), quantity)
    lines = []
    for (model, token_type, since), quantity in sorted(
        groups.items(),
        key=lambda kv: (kv[0][0], _type_order(kv[0][1]), kv[0][1], kv[0][2] is not None, kv[0][2]),
    ):
        entry = price_list.effective(model, since) if since is not None else None
        list_price = entry.price_of(token_type) if entry is not None else None
        if list_price is None:
            lines.append(
                RatedLine(
                    quantity=quantity,
                    unit_price=None,
                    amount=round_money(Decimal(0), currency),
                    model=model,
                    token_type=token_type,
                )
            )
            continue
        unit_price = marked_up(list_price, markup_percent)
        lines.append(
            RatedLine(
                quantity=quantity,
                unit_price=unit_price,
                amount=round_money(EXACT.multiply(quantity, unit_price), currency),
                model=model,
                token_type=token_type,
                list_price=list_price,
                price_from=since,
            )
        )
    return tuple(lines)


def model_list_lines(
    *,
    usage: Sequence[ModelUsage],
    price_list: PriceList,
    markup_percent: Decimal | None,
    currency: str,
    discounts: Discounts | None = None,
    commitments: Commitments | None = None,
) -> tuple[RatedLine, ...]:
    """A model_list rate card's lines: its usage lines, then discount and commitment lines."""
    lines = model_usage_lines(
        usage=usage, price_list=price_list, markup_percent=markup_percent, currency=currency
    )
    total = sum((line.amount for line in lines), Decimal(0))
    return (
        *lines,
        *adjustment_lines(
            total=total, currency=currency, discounts=discounts, commitments=commitments
        ),
    )


__all__ = ["LineType", "ModelUsage", "marked_up", "model_list_lines", "model_usage_lines"]
