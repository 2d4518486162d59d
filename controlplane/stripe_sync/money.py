"""Decimal amounts to Stripe's integer minor units: the only place Meterline does this."""

from __future__ import annotations

from decimal import Decimal

from controlplane.errors import InvalidArgument
from controlplane.rating.money import (
    ROUNDED_TO_TENS,
    exact_context,
    minor_units,
    require_decimal,
)


def to_minor_units(amount: Decimal, currency: str) -> int:
    """``amount`` in ``currency``'s minor unit (USD 12.34 -> 1234, JPY 500 -> 500).

    Refuses amounts finer than the minor unit: rounding here would make Stripe's total differ
    from Meterline's, and amounts are rounded once, in rating. Stripe takes BHD, JOD, KWD, OMR
    and TND only in multiples of ten minor units (5.120 KWD -> 5120); rating rounds those
    currencies' lines to 0.010, so anything else is refused here too.
    """
    require_decimal("amount", amount)
    places = minor_units(currency)
    context = exact_context(amount, extra_digits=places + max(amount.adjusted(), 0))
    scaled = amount.scaleb(places, context=context)
    if scaled != scaled.to_integral_value(context=context):
        raise InvalidArgument(
            f"amount {amount} {currency} is finer than the currency's minor unit "
            f"({places} decimal places)"
        )
    minor = int(scaled)
    if currency in ROUNDED_TO_TENS and minor % 10:
        raise InvalidArgument(
            f"amount {amount} {currency} is not a multiple of 0.010: Stripe takes {currency} "
            "amounts only in multiples of ten minor units"
        )
    return minor


def stripe_currency(currency: str) -> str:
    """Stripe's spelling of an ISO 4217 code (lower case), after checking Meterline knows it."""
    minor_units(currency)
    return currency.lower()
