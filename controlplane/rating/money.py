"""Currencies and rounding: amounts are Decimal, rounded to the currency's minor unit."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import ROUND_HALF_UP, Context, Decimal

from controlplane.errors import InvalidArgument

# ISO 4217 minor units (number of decimal places) of the currencies Meterline bills in.
MINOR_UNITS: Mapping[str, int] = {
    # 0 decimals
    "BIF": 0, "CLP": 0, "DJF": 0, "GNF": 0, "ISK": 0, "JPY": 0, "KMF": 0, "KRW": 0,
    "PYG": 0, "RWF": 0, "UGX": 0, "VND": 0, "VUV": 0, "XAF": 0, "XOF": 0, "XPF": 0,
    # 3 decimals
    "BHD": 3, "IQD": 3, "JOD": 3, "KWD": 3, "LYD": 3, "OMR": 3, "TND": 3,
    # 2 decimals
    "AED": 2, "ARS": 2, "AUD": 2, "BGN": 2, "BRL": 2, "CAD": 2, "CHF": 2, "CNY": 2,
    "COP": 2, "CZK": 2, "DKK": 2, "EGP": 2, "EUR": 2, "GBP": 2, "HKD": 2, "HUF": 2,
    "IDR": 2, "ILS": 2, "INR": 2, "MXN": 2, "MYR": 2, "NGN": 2, "NOK": 2, "NZD": 2,
    "PEN": 2, "PHP": 2, "PKR": 2, "PLN": 2, "RON": 2, "RUB": 2, "SAR": 2, "SEK": 2,
    "SGD": 2, "THB": 2, "TRY": 2, "TWD": 2, "UAH": 2, "USD": 2, "ZAR": 2,
}  # fmt: skip

# Stripe takes the three-decimal currencies it supports only in multiples of ten minor units
# ("5.124 KWD must be rounded to 5120 or 5130"). Lines in these currencies are rounded to 0.010
# everywhere, so an invoice's total is the same in Meterline and in Stripe, Stripe or not.
ROUNDED_TO_TENS: frozenset[str] = frozenset({"BHD", "JOD", "KWD", "OMR", "TND"})


def minor_units(currency: str) -> int:
    """Decimal places of ``currency``'s minor unit (USD 2, JPY 0, KWD 3)."""
    if not isinstance(currency, str):
        raise InvalidArgument(f"currency must be a string, got {type(currency).__name__}")
    try:
        return MINOR_UNITS[currency]
    except KeyError:
        raise InvalidArgument(
            f"unknown currency {currency!r}: expected an upper-case ISO 4217 code like USD"
        ) from None


def rounding_places(currency: str) -> int:
    """Decimal places lines are rounded to: the minor unit, or one less for ROUNDED_TO_TENS."""
    places = minor_units(currency)
    return places - 1 if currency in ROUNDED_TO_TENS else places


def require_decimal(name: str, value: object) -> Decimal:
    """``value`` if it is a finite Decimal; floats are refused outright (TypeError)."""
    if not isinstance(value, Decimal):
        # A float has already lost the amount's exact value; an int is a caller bug too.
        raise TypeError(f"{name} must be a decimal.Decimal, got {type(value).__name__}")
    if not value.is_finite():
        raise InvalidArgument(f"{name} must be a finite number, got {value}")
    return value


def exact_context(*operands: Decimal, extra_digits: int = 0) -> Context:
    """A decimal context precise enough that multiplying ``operands`` is exact."""
    digits = sum(len(op.as_tuple().digits) for op in operands)
    return Context(prec=max(28, digits + extra_digits + 2), rounding=ROUND_HALF_UP)


def round_money(amount: Decimal, currency: str) -> Decimal:
    """``amount`` quantized to ``currency``'s minor unit, ties away from zero (ROUND_HALF_UP).

    BHD, JOD, KWD, OMR and TND are quantized to ten minor units (0.010), Stripe's rule.
    """
    require_decimal("amount", amount)
    places = minor_units(currency)
    # Room for every integer digit plus the minor digits, so quantize never overflows.
    context = exact_context(amount, extra_digits=max(amount.adjusted(), 0) + places)
    step = Decimal(1).scaleb(-rounding_places(currency))
    rounded = amount.quantize(step, rounding=ROUND_HALF_UP, context=context)
    # Written with all of the minor unit's digits (KWD 5.130, not 5.13).
    rounded = rounded.quantize(Decimal(1).scaleb(-places), context=context)
    # -0.001 rounds to -0.00; money has no negative zero.
    return rounded.copy_abs() if rounded.is_zero() else rounded
