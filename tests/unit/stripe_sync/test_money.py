"""Decimal -> Stripe minor units: exact, or refused."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controlplane.errors import InvalidArgument
from controlplane.stripe_sync import stripe_currency, to_minor_units


@pytest.mark.parametrize(
    ("amount", "currency", "minor"),
    [
        pytest.param("12.34", "USD", 1234, id="usd"),
        pytest.param("0.01", "USD", 1, id="one-cent"),
        pytest.param("-2.00", "EUR", -200, id="discount"),
        pytest.param("12.3400000", "USD", 1234, id="trailing-zeros"),
        pytest.param("0", "USD", 0, id="zero"),
        pytest.param("-0.00", "USD", 0, id="negative-zero"),
        pytest.param("500", "JPY", 500, id="zero-decimal"),
        pytest.param("1.230", "KWD", 1230, id="three-decimal"),
        pytest.param("-7.5", "BHD", -7500, id="three-decimal-discount"),
        pytest.param("1E+2", "USD", 10000, id="exponent"),
        pytest.param("12345678901234567890123456789.99", "USD", 1234567890123456789012345678999,
                     id="beyond-default-precision"),
    ],
)  # fmt: skip
def test_exact_amounts(amount, currency, minor):
    assert to_minor_units(Decimal(amount), currency) == minor


@pytest.mark.parametrize(
    ("amount", "currency", "message"),
    [
        pytest.param(Decimal("12.345"), "USD", "finer than", id="sub-cent"),
        pytest.param(Decimal("1.234"), "KWD", "multiple of 0.010", id="three-decimal-last-digit"),
        pytest.param(Decimal("1.0001"), "KWD", "finer than", id="three-decimal-sub-fils"),
        pytest.param(Decimal("0.5"), "JPY", "finer than", id="fractional-yen"),
        pytest.param(Decimal("Infinity"), "USD", "finite", id="infinity"),
        pytest.param(Decimal("1"), "XXX", "unknown currency", id="unknown-currency"),
        pytest.param(Decimal("1"), "usd", "unknown currency", id="lower-case"),
    ],
)
def test_refused_amounts(amount, currency, message):
    with pytest.raises(InvalidArgument, match=message):
        to_minor_units(amount, currency)


@pytest.mark.parametrize("amount", [1.5, 1, "1.5"], ids=["float", "int", "str"])
def test_only_decimals(amount):
    with pytest.raises(TypeError):
        to_minor_units(amount, "USD")


@given(st.integers(min_value=-(10**30), max_value=10**30), st.sampled_from(["USD", "JPY", "IQD"]))
def test_round_trip(minor, currency):
    places = {"USD": 2, "JPY": 0, "IQD": 3}[currency]
    assert to_minor_units(Decimal(f"{minor}E-{places}"), currency) == minor


@given(st.integers(min_value=-(10**30), max_value=10**30))
def test_round_trip_in_tens_of_fils(tens):
    assert to_minor_units(Decimal(f"{tens}E-2"), "KWD") == tens * 10


def test_stripe_currency_is_lower_case_iso():
    assert stripe_currency("USD") == "usd"
    with pytest.raises(InvalidArgument):
        stripe_currency("DOGE")
