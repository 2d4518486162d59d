"""Proration of flat fees by time: a fee for part of a billing period.

``amount x part / whole`` where part and whole are exact microsecond counts; the quotient is
computed to 60 significant digits (far beyond any minor unit) and rounded once to the
currency's minor unit, ties away from zero (ROUND_HALF_UP), like every other line.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from decimal import ROUND_HALF_UP, Context, Decimal

from controlplane.catalog.types import Commitments
from controlplane.errors import InvalidArgument
from controlplane.rating.money import require_decimal, round_money

_QUOTIENT = Context(prec=60, rounding=ROUND_HALF_UP)
_MICROSECOND = timedelta(microseconds=1)


def prorate(*, amount: Decimal, part: timedelta, whole: timedelta, currency: str) -> Decimal:
    """The share of ``amount`` that ``part`` of a ``whole`` period is worth, rounded once."""
    require_decimal("amount", amount)
    if whole <= timedelta(0):
        raise InvalidArgument("a billing period must be longer than zero")
    if part < timedelta(0) or part > whole:
        raise InvalidArgument("the prorated part must lie within the billing period")
    if part == whole:
        return round_money(amount, currency)
    numerator = _QUOTIENT.multiply(amount, Decimal(part // _MICROSECOND))
    return round_money(_QUOTIENT.divide(numerator, Decimal(whole // _MICROSECOND)), currency)


def prorate_minimum(
    commitments: Commitments | None, *, part: timedelta, whole: timedelta, currency: str
) -> Commitments | None:
    """Commitments for part of a period: the minimum shrinks with the time served.

    ``minimum_amount x part / whole``, rounded once like a flat fee; the maximum stays whole
    (a cap never makes a part period dearer than a whole one).
    """
    if commitments is None or commitments.minimum_amount is None or part == whole:
        return commitments
    minimum = prorate(amount=commitments.minimum_amount, part=part, whole=whole, currency=currency)
    return replace(commitments, minimum_amount=minimum)
