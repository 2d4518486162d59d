"""The unit pricer: quantity times a per-unit price, rounded once per line."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from controlplane.errors import InvalidArgument
from controlplane.rating.money import exact_context, require_decimal, round_money


@dataclass(frozen=True)
class RatedLine:
    """One priced quantity: ``amount == round_money(quantity * unit_price)``."""

    quantity: Decimal
    unit_price: Decimal
    amount: Decimal


def _non_negative(name: str, value: object) -> Decimal:
    number = require_decimal(name, value)
    if number < 0:
        raise InvalidArgument(f"{name} must not be negative, got {number}")
    return number


def rate_unit(*, quantity: Decimal, unit_price: Decimal, currency: str) -> Decimal:
    """``quantity * unit_price`` computed exactly, then rounded to the currency's minor unit."""
    q = _non_negative("quantity", quantity)
    p = _non_negative("unit_price", unit_price)
    exact = q.fma(p, Decimal(0), context=exact_context(q, p))
    return round_money(exact, currency)


def rate_unit_line(*, quantity: Decimal, unit_price: Decimal, currency: str) -> RatedLine:
    """A :class:`RatedLine` for ``quantity`` units at ``unit_price``."""
    amount = rate_unit(quantity=quantity, unit_price=unit_price, currency=currency)
    return RatedLine(quantity=quantity, unit_price=unit_price, amount=amount)
