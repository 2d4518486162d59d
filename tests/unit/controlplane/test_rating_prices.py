"""The pricers, one table each: flat, unit, graduated, volume, package, and a rate card's
discounts and commitments. Worked examples come from public documentation (cited per case)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.catalog.types import (
    Commitments,
    Discounts,
    PaymentTerm,
    Price,
    PriceType,
    Tier,
    TierMode,
)
from controlplane.errors import InvalidArgument
from controlplane.rating import (
    LineType,
    price_flat,
    price_graduated,
    price_package,
    price_unit,
    price_volume,
    rate_card_lines,
)

D = Decimal


def tiers(*spec: tuple[str | None, str, str]) -> tuple[Tier, ...]:
    return tuple(
        Tier(up_to=None if up is None else D(up), unit_price=D(unit), flat_price=D(flat))
        for up, unit, flat in spec
    )


# Stripe "Set up tiered pricing" (Typographic fonts): 1-5 at 7, 6-10 at 6.5, 11+ at 6 USD.
STRIPE = tiers(("5", "7", "0"), ("10", "6.5", "0"), (None, "6", "0"))
# Lago "Volume" charge model: 4 tiers with a $10 flat fee each.
LAGO_VOLUME = tiers(
    ("10000", "0.0010", "10"),
    ("50000", "0.0008", "10"),
    ("100000", "0.0006", "10"),
    (None, "0.0004", "10"),
)
# Lago "Graduated": $1 for the first 100 units, $0.50 for the next 100, $0.10 after.
LAGO_GRADUATED = tiers(("100", "1", "0"), ("200", "0.50", "0"), (None, "0.10", "0"))
# Zuplo/OpenMeter "Pricing models": 0-1,000 at $0.10, 1,001-10,000 at $0.05, 10,001+ at $0.01.
ZUPLO = tiers(("1000", "0.10", "0"), ("10000", "0.05", "0"), (None, "0.01", "0"))
# Flat prices per tier (OpenMeter: a tier's flat price is charged once usage enters the tier).
FLATS = tiers(("10", "1", "5"), ("20", "0.5", "7"), (None, "0.1", "11"))


# -- flat --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [
        pytest.param("49", "USD", "49.00", id="platform-fee"),
        pytest.param("0", "USD", "0.00", id="free"),
        pytest.param("19.995", "USD", "20.00", id="half-up"),
        pytest.param("19.994", "USD", "19.99", id="below-half"),
        pytest.param("1500.5", "JPY", "1501", id="jpy-no-minor-unit"),
        pytest.param("1.0005", "IQD", "1.001", id="three-places"),
        pytest.param("1.0005", "KWD", "1.000", id="kwd-in-tens-of-fils"),
    ],
)
def test_flat(amount: str, currency: str, expected: str) -> None:
    charge = price_flat(amount=D(amount), currency=currency)
    assert (charge.quantity, charge.amount, str(charge.amount)) == (1, D(expected), expected)


# -- unit --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("quantity", "unit_price", "expected"),
    [
        pytest.param("0", "0.01", "0.00", id="zero-usage"),
        pytest.param("100000", "0.001", "100.00", id="zuplo-per-unit-100k-calls"),
        pytest.param("1234567", "0.0000025", "3.09", id="per-token-price"),
        pytest.param("1", "0.005", "0.01", id="half-cent-rounds-up"),
        pytest.param("2.5", "0.01", "0.03", id="fractional-quantity"),
        pytest.param("10" * 12, "0.0000025", "252525252525252525.25", id="very-large"),
    ],
)
def test_unit(quantity: str, unit_price: str, expected: str) -> None:
    charge = price_unit(quantity=D(quantity), unit_price=D(unit_price), currency="USD")
    assert str(charge.amount) == expected


# -- tiered, graduated ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "quantity", "expected", "tier_quantities"),
    [
        # Stripe's graduated example (same tiers as its volume example below).
        pytest.param(STRIPE, "0", "0.00", ["0"], id="stripe-zero"),
        pytest.param(STRIPE, "1", "7.00", ["1"], id="stripe-1"),
        pytest.param(STRIPE, "5", "35.00", ["5"], id="stripe-5-at-edge"),
        pytest.param(STRIPE, "6", "41.50", ["5", "1"], id="stripe-6-one-above"),
        pytest.param(STRIPE, "10", "67.50", ["5", "5"], id="stripe-10-at-edge"),
        pytest.param(STRIPE, "11", "73.50", ["5", "5", "1"], id="stripe-11-one-above"),
        pytest.param(STRIPE, "20", "127.50", ["5", "5", "10"], id="stripe-20"),
        pytest.param(STRIPE, "25", "157.50", ["5", "5", "15"], id="stripe-25"),
        pytest.param(STRIPE, "5.5", "38.25", ["5", "0.5"], id="stripe-fraction-past-edge"),
        pytest.param(LAGO_GRADUATED, "250", "155.00", ["100", "100", "50"], id="lago-250"),
        pytest.param(ZUPLO, "15000", "600.00", ["1000", "9000", "5000"], id="zuplo-15k"),
        pytest.param(
            ZUPLO,
            "1" + "0" * 16,
            "100000000000450.00",
            ["1000", "9000", "9999999999990000"],
            id="very-large",
        ),
        # Flat prices: the first tier's even at zero; each later one once usage enters it.
        pytest.param(FLATS, "0", "5.00", ["0"], id="flat-first-tier-at-zero"),
        pytest.param(FLATS, "10", "15.00", ["10"], id="flat-at-edge-stays-below"),
        pytest.param(FLATS, "11", "22.50", ["10", "1"], id="flat-one-above-enters"),
        pytest.param(FLATS, "10.001", "22.00", ["10", "0.001"], id="flat-fraction-above-enters"),
        pytest.param(FLATS, "20", "27.00", ["10", "10"], id="flat-second-edge"),
        pytest.param(FLATS, "21", "38.10", ["10", "10", "1"], id="flat-third-tier"),
    ],
)
def test_graduated(
    table: tuple[Tier, ...], quantity: str, expected: str, tier_quantities: list[str]
) -> None:
    charge = price_graduated(quantity=D(quantity), tiers=table, currency="USD")
    assert str(charge.amount) == expected
    assert [str(t.quantity) for t in charge.tiers] == tier_quantities
    assert sum(t.amount for t in charge.tiers) == charge.exact_amount
    assert [t.tier for t in charge.tiers] == list(range(1, len(charge.tiers) + 1))


def test_graduated_rounds_the_line_once_not_each_tier() -> None:
    # Each tier is 0.004 (rounds to 0.00 alone); the line's 0.008 rounds to 0.01.
    table = tiers(("1", "0.004", "0"), (None, "0.004", "0"))
    charge = price_graduated(quantity=D(2), tiers=table, currency="USD")
    assert [t.amount for t in charge.tiers] == [D("0.004"), D("0.004")]
    assert charge.amount == D("0.01")


# -- tiered, volume ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "quantity", "expected", "tier"),
    [
        # Stripe's volume example: the total drops past the edge only per unit, 5 -> 35, 6 -> 39.
        pytest.param(STRIPE, "0", "0.00", 1, id="stripe-zero"),
        pytest.param(STRIPE, "1", "7.00", 1, id="stripe-1"),
        pytest.param(STRIPE, "5", "35.00", 1, id="stripe-5-at-edge"),
        pytest.param(STRIPE, "6", "39.00", 2, id="stripe-6-one-above"),
        pytest.param(STRIPE, "10", "65.00", 2, id="stripe-10-at-edge"),
        pytest.param(STRIPE, "11", "66.00", 3, id="stripe-11-one-above"),
        pytest.param(STRIPE, "20", "120.00", 3, id="stripe-20"),
        pytest.param(STRIPE, "25", "150.00", 3, id="stripe-25"),
        pytest.param(LAGO_VOLUME, "65000", "49.00", 3, id="lago-65000-calls"),
        pytest.param(LAGO_VOLUME, "0", "10.00", 1, id="lago-zero-pays-first-flat"),
        pytest.param(LAGO_VOLUME, "10000", "20.00", 1, id="lago-at-edge"),
        pytest.param(LAGO_VOLUME, "10001", "18.00", 2, id="lago-one-above-drops"),
        pytest.param(ZUPLO, "15000", "150.00", 3, id="zuplo-15k"),
        pytest.param(ZUPLO, "10" * 9, "1010101010101010.10", 3, id="very-large"),
    ],
)
def test_volume(table: tuple[Tier, ...], quantity: str, expected: str, tier: int) -> None:
    charge = price_volume(quantity=D(quantity), tiers=table, currency="USD")
    assert str(charge.amount) == expected
    assert [t.tier for t in charge.tiers] == [tier]
    assert charge.tiers[0].quantity == D(quantity)


# -- package -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("quantity", "amount", "size", "expected", "packages"),
    [
        pytest.param("0", "2", "1000", "0.00", "0", id="zero-usage"),
        pytest.param("1", "2", "1000", "2.00", "1", id="one-unit-starts-a-package"),
        pytest.param("999", "2", "1000", "2.00", "1", id="below-edge"),
        pytest.param("1000", "2", "1000", "2.00", "1", id="at-edge"),
        pytest.param("1001", "2", "1000", "4.00", "2", id="one-above"),
        pytest.param("2500", "2", "1000", "6.00", "3", id="rounds-up"),
        pytest.param("0.5", "1", "0.25", "2.00", "2", id="fractional-size"),
        pytest.param(
            "10" * 10, "0.015", "1000", "151515151515151.53", "10101010101010102", id="very-large"
        ),
    ],
)
def test_package(quantity: str, amount: str, size: str, expected: str, packages: str) -> None:
    charge = price_package(
        quantity=D(quantity), amount=D(amount), quantity_per_package=D(size), currency="USD"
    )
    assert (str(charge.amount), str(charge.packages)) == (expected, packages)


# -- a rate card's lines -------------------------------------------------------------------------

ISSUE_TIERS = Price(
    type=PriceType.TIERED,
    mode=TierMode.GRADUATED,
    tiers=tiers(("1000", "0.01", "0"), (None, "0.005", "0")),
)
UNIT = Price(type=PriceType.UNIT, amount=D("0.10"))
FLAT = Price(type=PriceType.FLAT, amount=D("49"), payment_term=PaymentTerm.IN_ADVANCE)


def kinds(lines: tuple[object, ...]) -> list[tuple[str, str]]:
    return [(line.type.value, str(line.amount)) for line in lines]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("price", "quantity", "discounts", "commitments", "expected"),
    [
        pytest.param(FLAT, "0", None, None, [("flat", "49.00")], id="flat"),
        pytest.param(
            FLAT,
            "0",
            Discounts(percentage=D("10")),
            None,
            [("flat", "49.00"), ("discount", "-4.90")],
            id="flat-percentage",
        ),
        # The issue's example rate card: 100 free units, then graduated, floor 5, cap 500.
        pytest.param(
            ISSUE_TIERS,
            "0",
            Discounts(usage=D(100)),
            Commitments(minimum_amount=D(5), maximum_amount=D(500)),
            [("usage", "0.00"), ("minimum_commitment", "5.00")],
            id="issue-no-usage-tops-up",
        ),
        pytest.param(
            ISSUE_TIERS,
            "1100",
            Discounts(usage=D(100)),
            Commitments(minimum_amount=D(5), maximum_amount=D(500)),
            [("usage", "10.00")],
            id="issue-free-units-fill-tier-1-exactly",
        ),
        pytest.param(
            ISSUE_TIERS,
            "1101",
            Discounts(usage=D(100)),
            Commitments(minimum_amount=D(5), maximum_amount=D(500)),
            [("usage", "10.01")],
            id="issue-one-above-enters-tier-2",
        ),
        pytest.param(
            ISSUE_TIERS,
            "200100",
            Discounts(usage=D(100)),
            Commitments(minimum_amount=D(5), maximum_amount=D(500)),
            [("usage", "1005.00"), ("maximum_commitment", "-505.00")],
            id="issue-capped",
        ),
        pytest.param(
            UNIT,
            "50",
            Discounts(usage=D(100)),
            None,
            [("usage", "0.00")],
            id="usage-discount-larger-than-usage",
        ),
        # Percentage first, then the cap: 200 -> -50 -> 150, capped at 120.
        pytest.param(
            UNIT,
            "2000",
            Discounts(percentage=D(25)),
            Commitments(maximum_amount=D(120)),
            [("usage", "200.00"), ("discount", "-50.00"), ("maximum_commitment", "-30.00")],
            id="percentage-then-maximum",
        ),
        # Percentage first, then the floor: 100 -> -50 -> 50, topped up to 80.
        pytest.param(
            UNIT,
            "1000",
            Discounts(percentage=D(50)),
            Commitments(minimum_amount=D(80)),
            [("usage", "100.00"), ("discount", "-50.00"), ("minimum_commitment", "30.00")],
            id="percentage-then-minimum",
        ),
        pytest.param(
            UNIT,
            "800",
            None,
            Commitments(minimum_amount=D(80)),
            [("usage", "80.00")],
            id="minimum-exactly-met",
        ),
        pytest.param(
            UNIT,
            "1",
            Discounts(percentage=D("12.5")),
            None,
            [("usage", "0.10"), ("discount", "-0.01")],
            id="discount-rounds-half-up",
        ),
        pytest.param(
            UNIT,
            "1",
            Discounts(percentage=D(100)),
            None,
            [("usage", "0.10"), ("discount", "-0.10")],
            id="hundred-percent",
        ),
    ],
)
def test_rate_card_lines(
    price: Price,
    quantity: str,
    discounts: Discounts | None,
    commitments: Commitments | None,
    expected: list[tuple[str, str]],
) -> None:
    lines = rate_card_lines(
        price=price,
        quantity=D(quantity),
        currency="USD",
        discounts=discounts,
        commitments=commitments,
    )
    assert kinds(lines) == expected


def test_usage_line_shows_the_free_units_and_the_tiers() -> None:
    (line,) = rate_card_lines(
        price=ISSUE_TIERS, quantity=D(1500), currency="USD", discounts=Discounts(usage=D(100))
    )
    assert line.type is LineType.USAGE
    assert (line.quantity, line.free_quantity) == (D(1500), D(100))
    assert [(t.tier, t.quantity, t.amount) for t in line.tiers] == [
        (1, D(1000), D("10.00")),
        (2, D(400), D("2.000")),
    ]
    assert line.amount == D("12.00")


# -- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "message"),
    [
        pytest.param(
            lambda: price_graduated(quantity=D(1), tiers=(), currency="USD"),
            "tiers must not be empty",
            id="no-tiers",
        ),
        pytest.param(
            lambda: price_graduated(
                quantity=D(1),
                tiers=tiers(("10", "1", "0"), ("5", "1", "0"), (None, "1", "0")),
                currency="USD",
            ),
            "tiers[1].up_to must be greater than 10",
            id="tiers-out-of-order",
        ),
        pytest.param(
            lambda: price_volume(quantity=D(1), tiers=tiers(("10", "1", "0")), currency="USD"),
            "the last tier must not have up_to",
            id="last-tier-bounded",
        ),
        pytest.param(
            lambda: price_volume(
                quantity=D(1), tiers=tiers(("10", "-1", "0"), (None, "1", "0")), currency="USD"
            ),
            "tiers[0].unit_price must not be negative",
            id="negative-tier-price",
        ),
        pytest.param(
            lambda: price_unit(quantity=D(-1), unit_price=D(1), currency="USD"),
            "quantity must not be negative",
            id="negative-quantity",
        ),
        pytest.param(
            lambda: price_package(
                quantity=D(1), amount=D(1), quantity_per_package=D(0), currency="USD"
            ),
            "quantity_per_package must be positive",
            id="empty-package",
        ),
        pytest.param(
            lambda: price_flat(amount=D(1), currency="XYZ"),
            "unknown currency 'XYZ'",
            id="unknown-currency",
        ),
        pytest.param(
            lambda: rate_card_lines(
                price=UNIT, quantity=D(1), currency="USD", discounts=Discounts(percentage=D(101))
            ),
            "discounts.percentage must be at most 100",
            id="percentage-over-100",
        ),
    ],
)
def test_pricers_refuse_impossible_input(call: object, message: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        call()  # type: ignore[operator]
    assert message in str(raised.value)


def test_floats_are_refused() -> None:
    with pytest.raises(TypeError):
        price_unit(quantity=1.5, unit_price=D(1), currency="USD")  # type: ignore[arg-type]


# -- properties ----------------------------------------------------------------------------------

quantities = st.integers(min_value=0, max_value=3000).map(D)
prices = st.decimals(min_value=0, max_value=10, places=4, allow_nan=False, allow_infinity=False)


@st.composite
def tier_tables(draw: st.DrawFn) -> tuple[Tier, ...]:
    edges = sorted(draw(st.sets(st.integers(min_value=1, max_value=2000), max_size=4)))
    bounds: list[int | None] = [*edges, None]
    return tuple(
        Tier(
            up_to=None if up is None else D(up),
            unit_price=draw(prices),
            flat_price=draw(prices),
        )
        for up in bounds
    )


@settings(max_examples=60, deadline=None)
@given(table=tier_tables(), quantity=st.integers(min_value=0, max_value=400))
def test_graduated_equals_the_sum_of_one_unit_at_a_time(
    table: tuple[Tier, ...], quantity: int
) -> None:
    # Unit by unit: unit n (1-based) is priced by the tier holding n; a tier's flat price is
    # paid when its first unit arrives, the first tier's from the start.
    total = table[0].flat_price
    lower = D(0)
    index = 0
    for n in range(1, quantity + 1):
        while table[index].up_to is not None and n > table[index].up_to:  # type: ignore[operator]
            lower = table[index].up_to  # type: ignore[assignment]
            index += 1
            total += table[index].flat_price
        total += table[index].unit_price
    assert lower >= 0
    charge = price_graduated(quantity=D(quantity), tiers=table, currency="USD")
    assert charge.exact_amount == total


@settings(max_examples=60, deadline=None)
@given(table=tier_tables(), a=quantities, b=quantities)
def test_graduated_never_decreases(table: tuple[Tier, ...], a: Decimal, b: Decimal) -> None:
    low, high = sorted((a, b))
    amount = price_graduated(quantity=low, tiers=table, currency="USD").amount
    assert amount <= price_graduated(quantity=high, tiers=table, currency="USD").amount


@given(unit_price=prices, a=quantities, b=quantities)
def test_unit_never_decreases(unit_price: Decimal, a: Decimal, b: Decimal) -> None:
    low, high = sorted((a, b))
    assert (
        price_unit(quantity=low, unit_price=unit_price, currency="USD").amount
        <= price_unit(quantity=high, unit_price=unit_price, currency="USD").amount
    )


@given(
    amount=prices,
    size=st.integers(min_value=1, max_value=500).map(D),
    a=quantities,
    b=quantities,
)
def test_package_never_decreases_and_rounds_up(
    amount: Decimal, size: Decimal, a: Decimal, b: Decimal
) -> None:
    low, high = sorted((a, b))
    first = price_package(quantity=low, amount=amount, quantity_per_package=size, currency="USD")
    second = price_package(quantity=high, amount=amount, quantity_per_package=size, currency="USD")
    assert first.amount <= second.amount
    assert first.packages is not None
    assert first.packages * size >= low > (first.packages - 1) * size or low == 0
