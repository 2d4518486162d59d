"""The unit pricer: quantity times a per-unit price, rounded once per line."""

from __future__ import annotations

from decimal import Decimal

from controlplane.errors import InvalidArgument
from controlplane.rating.charge import EXACT, Charge, RatedLine
from controlplane.rating.money import require_decimal, round_money


def non_negative(name: str, value: object) -> Decimal:
    """``value`` if it is a Decimal >= 0."""
    number = require_decimal(name, value)
    if number < 0:
        raise InvalidArgument(f"{name} must not be negative, got {number}")
    return number


def rate_unit(*, quantity: Decimal, unit_price: Decimal, currency: str) -> Decimal:
    """``quantity * unit_price`` computed exactly, then rounded to the currency's minor unit."""
    q = non_negative("quantity", quantity)
    p = non_negative("unit_price", unit_price)
    return round_money(EXACT.multiply(q, p), currency)


def rate_unit_line(*, quantity: Decimal, unit_price: Decimal, currency: str) -> RatedLine:
    """A :class:`RatedLine` for ``quantity`` units at ``unit_price``."""
    amount = rate_unit(quantity=quantity, unit_price=unit_price, currency=currency)
    return RatedLine(quantity=quantity, unit_price=unit_price, amount=amount)


def price_unit(*, quantity: Decimal, unit_price: Decimal, currency: str) -> Charge:
    """The unit price's charge: ``quantity * unit_price``."""
    q = non_negative("quantity", quantity)
    p = non_negative("unit_price", unit_price)
    exact = EXACT.multiply(q, p)
    return Charge(quantity=q, exact_amount=exact, amount=round_money(exact, currency), unit_price=p)
