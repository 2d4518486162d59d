"""Proration of flat fees (rating.proration) and the frozen-line JSON of stored invoices."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controlplane.errors import InvalidArgument
from controlplane.invoicing.storage import line_from_json, line_to_json
from controlplane.invoicing.types import InvoiceLine
from controlplane.rating.charge import LineType, TierCharge
from controlplane.rating.proration import prorate

DAY = timedelta(days=1)


@pytest.mark.parametrize(
    ("amount", "part", "whole", "currency", "expected"),
    [
        pytest.param("10", 14 * DAY, 30 * DAY, "USD", "4.67", id="14-of-30-rounds-up"),
        pytest.param("10", 10 * DAY, 30 * DAY, "USD", "3.33", id="10-of-30-rounds-down"),
        pytest.param("30", 20 * DAY, 30 * DAY, "USD", "20.00", id="exact"),
        pytest.param("10", 30 * DAY, 30 * DAY, "USD", "10.00", id="whole-period"),
        pytest.param("10", timedelta(0), 30 * DAY, "USD", "0.00", id="nothing"),
        pytest.param("0.05", 15 * DAY, 30 * DAY, "USD", "0.03", id="tie-away-from-zero"),
        pytest.param("1000", 1 * DAY, 31 * DAY, "JPY", "32", id="zero-decimals"),
        pytest.param("1", timedelta(microseconds=1), 30 * DAY, "USD", "0.00", id="one-microsecond"),
    ],
)
def test_prorate(amount: str, part: timedelta, whole: timedelta, currency: str, expected: str):
    assert str(prorate(amount=Decimal(amount), part=part, whole=whole, currency=currency)) == (
        expected
    )


@pytest.mark.parametrize(
    ("part", "whole"),
    [
        pytest.param(-DAY, 30 * DAY, id="negative-part"),
        pytest.param(31 * DAY, 30 * DAY, id="part-beyond-whole"),
        pytest.param(timedelta(0), timedelta(0), id="empty-period"),
    ],
)
def test_prorate_refuses_impossible_parts(part: timedelta, whole: timedelta) -> None:
    with pytest.raises(InvalidArgument):
        prorate(amount=Decimal(10), part=part, whole=whole, currency="USD")


def test_prorate_refuses_floats() -> None:
    with pytest.raises(TypeError):
        prorate(amount=10.0, part=DAY, whole=30 * DAY, currency="USD")  # type: ignore[arg-type]


@given(
    cents=st.integers(min_value=0, max_value=10**9),
    days=st.lists(st.integers(min_value=1, max_value=30), min_size=1, max_size=5),
)
def test_parts_sum_to_the_whole_within_a_cent_per_part(cents: int, days: list[int]) -> None:
    amount = Decimal(cents) / 100
    whole = sum(days) * DAY
    parts = [prorate(amount=amount, part=d * DAY, whole=whole, currency="USD") for d in days]
    assert abs(sum(parts) - amount) <= Decimal("0.005") * len(days)


def test_stored_lines_round_trip_exactly() -> None:
    line = InvoiceLine(
        id="l1",
        subscription="s1",
        rate_card="tokens",
        feature="tokens-in",
        description="tokens-in: late usage",
        quantity=Decimal("1500"),
        unit_price=None,
        amount=Decimal("12.50"),
        period_start=datetime(2026, 11, 1, 12, tzinfo=UTC),
        period_end=datetime(2026, 12, 1, 12, tzinfo=UTC),
        type=LineType.USAGE,
        free_quantity=Decimal("100"),
        tiers=(
            TierCharge(1, Decimal(1000), Decimal(1000), Decimal("0.01"), Decimal(0), Decimal(10)),
            TierCharge(2, None, Decimal(500), Decimal("0.005"), Decimal(0), Decimal("2.500")),
        ),
        late_usage=True,
    )
    assert line_from_json("l1", line_to_json(line)) == line
