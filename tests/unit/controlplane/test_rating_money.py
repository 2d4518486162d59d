"""Rating: currencies, rounding to the minor unit and the unit pricer."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controlplane.errors import InvalidArgument
from controlplane.rating import (
    MINOR_UNITS,
    RatedLine,
    minor_units,
    rate_unit,
    rate_unit_line,
    round_money,
)
from controlplane.rating.money import rounding_places

D = Decimal


@pytest.mark.parametrize(
    ("currency", "places"),
    [
        pytest.param("USD", 2, id="usd"),
        pytest.param("EUR", 2, id="eur"),
        pytest.param("GBP", 2, id="gbp"),
        pytest.param("JPY", 0, id="jpy"),
        pytest.param("KRW", 0, id="krw"),
        pytest.param("KWD", 3, id="kwd"),
        pytest.param("BHD", 3, id="bhd"),
    ],
)
def test_minor_units(currency: str, places: int) -> None:
    assert minor_units(currency) == places


@pytest.mark.parametrize(
    "currency",
    [
        pytest.param("usd", id="lower-case"),
        pytest.param("XYZ", id="unknown"),
        pytest.param("", id="empty"),
        pytest.param("US", id="too-short"),
    ],
)
def test_unknown_currency_is_invalid(currency: str) -> None:
    with pytest.raises(InvalidArgument, match="unknown currency"):
        minor_units(currency)


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [
        pytest.param("1.005", "USD", "1.01", id="usd-tie-up"),
        pytest.param("1.004999", "USD", "1.00", id="usd-below-tie"),
        pytest.param("-1.005", "USD", "-1.01", id="negative-tie-away-from-zero"),
        pytest.param("-0.001", "USD", "0.00", id="no-negative-zero"),
        pytest.param("2.5", "JPY", "3", id="jpy-tie"),
        pytest.param("2.4999", "JPY", "2", id="jpy-below-tie"),
        pytest.param("1.0005", "IQD", "1.001", id="three-decimal-tie"),
        pytest.param("1.005", "KWD", "1.010", id="kwd-tie-in-tens-of-fils"),
        pytest.param("1.0049", "KWD", "1.000", id="kwd-below-tie"),
        pytest.param("7", "USD", "7.00", id="integer-gets-minor-digits"),
        pytest.param("1E+30", "USD", "1000000000000000000000000000000.00", id="huge"),
        pytest.param("0.000000000000000000000000000000005", "USD", "0.00", id="tiny"),
        pytest.param("123456789012345678901234567890.125", "USD",
                     "123456789012345678901234567890.13", id="more-digits-than-default-context"),
    ],
)  # fmt: skip
def test_round_money(amount: str, currency: str, expected: str) -> None:
    rounded = round_money(D(amount), currency)

    assert str(rounded) == expected


@pytest.mark.parametrize(
    ("quantity", "unit_price", "currency", "expected"),
    [
        pytest.param("1234567", "0.0000025", "USD", "3.09", id="tokens-per-token-price"),
        pytest.param("1000000", "0.00000015", "USD", "0.15", id="gpt-4o-mini-input-million"),
        pytest.param("3", "0.005", "USD", "0.02", id="tie-rounds-up"),
        pytest.param("1", "0.004", "USD", "0.00", id="rounds-down"),
        pytest.param("0", "12.34", "EUR", "0.00", id="zero-quantity"),
        pytest.param("500000", "0", "USD", "0.00", id="free"),
        pytest.param("1500", "0.3", "JPY", "450", id="jpy"),
        pytest.param("1", "0.0005", "IQD", "0.001", id="three-decimal-tie"),
        pytest.param("1", "0.005", "KWD", "0.010", id="kwd-tie-in-tens-of-fils"),
        pytest.param("123456789012345678901234567890", "1.23456789012345678901234567890", "USD",
                     "152415787532388367504953515625.36", id="exact-beyond-28-digits"),
    ],
)  # fmt: skip
def test_rate_unit(quantity: str, unit_price: str, currency: str, expected: str) -> None:
    amount = rate_unit(quantity=D(quantity), unit_price=D(unit_price), currency=currency)

    assert str(amount) == expected


def test_rate_unit_line() -> None:
    line = rate_unit_line(quantity=D("1234567"), unit_price=D("0.0000025"), currency="USD")

    assert line == RatedLine(quantity=D("1234567"), unit_price=D("0.0000025"), amount=D("3.09"))


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"quantity": 1.5, "unit_price": D("1")}, id="float-quantity"),
        pytest.param({"quantity": D("1"), "unit_price": 0.1}, id="float-price"),
        pytest.param({"quantity": 3, "unit_price": D("1")}, id="int-quantity"),
        pytest.param({"quantity": D("1"), "unit_price": "0.1"}, id="str-price"),
    ],
)
def test_rate_unit_refuses_non_decimals(kwargs: dict[str, object]) -> None:
    with pytest.raises(TypeError, match=r"must be a decimal\.Decimal"):
        rate_unit(currency="USD", **kwargs)  # type: ignore[arg-type]


def test_round_money_refuses_float() -> None:
    with pytest.raises(TypeError):
        round_money(0.1, "USD")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("quantity", "unit_price", "message"),
    [
        pytest.param("-1", "1", "quantity must not be negative", id="negative-quantity"),
        pytest.param("1", "-0.01", "unit_price must not be negative", id="negative-price"),
        pytest.param("NaN", "1", "quantity must be a finite number", id="nan"),
        pytest.param("1", "Infinity", "unit_price must be a finite number", id="infinite"),
    ],
)
def test_rate_unit_refuses_impossible_values(quantity: str, unit_price: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        rate_unit(quantity=D(quantity), unit_price=D(unit_price), currency="USD")


def _half_up(value: Fraction, places: int) -> Fraction:
    """Reference rounding on exact rationals: ties away from zero."""
    scaled = value * 10**places
    sign = -1 if scaled < 0 else 1
    magnitude = abs(scaled)
    whole = int(magnitude)  # floor, as magnitude >= 0
    if magnitude - whole >= Fraction(1, 2):
        whole += 1
    return Fraction(sign * whole, 10**places)


decimals = st.decimals(
    min_value=0, max_value=10**15, allow_nan=False, allow_infinity=False, places=12
)
currencies = st.sampled_from(sorted(MINOR_UNITS))


@given(quantity=decimals, unit_price=decimals, currency=currencies)
def test_rate_unit_is_the_exact_product_rounded_once(
    quantity: Decimal, unit_price: Decimal, currency: str
) -> None:
    amount = rate_unit(quantity=quantity, unit_price=unit_price, currency=currency)

    step = rounding_places(currency)
    assert Fraction(amount) == _half_up(Fraction(quantity) * Fraction(unit_price), step)
    assert amount.as_tuple().exponent == -MINOR_UNITS[currency]


@given(amount=st.decimals(allow_nan=False, allow_infinity=False), currency=currencies)
def test_round_money_is_within_half_a_minor_unit(amount: Decimal, currency: str) -> None:
    rounded = round_money(amount, currency)

    step = rounding_places(currency)
    assert Fraction(rounded) == _half_up(Fraction(amount), step)
    assert abs(Fraction(rounded) - Fraction(amount)) <= Fraction(1, 2 * 10**step)
    assert not rounded.is_signed() or rounded < 0


@given(units=st.integers(min_value=-(10**9), max_value=10**9), currency=currencies)
def test_exact_ties_round_away_from_zero(units: int, currency: str) -> None:
    step = rounding_places(currency)
    # units + 1/2 rounding steps is exactly halfway between two representable amounts.
    tie = (D(units) + D("0.5")).scaleb(-step)

    rounded = round_money(tie, currency)

    away = units + 1 if tie > 0 else units
    assert rounded == D(away).scaleb(-step)
