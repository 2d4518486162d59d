"""Billing periods: [start, end) windows of a cadence counted from an anchor."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controlplane.errors import InvalidArgument
from controlplane.subscriptions.periods import Cadence, add_cadence, billing_period, parse_cadence


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, micro: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)


PLUS_2 = timezone(timedelta(hours=2))
CASES = [
    pytest.param(utc(2025, 1, 1), "P1M", utc(2025, 1, 15), utc(2025, 1, 1), utc(2025, 2, 1),
                 id="monthly-mid-period"),
    pytest.param(utc(2025, 1, 1), "P1M", utc(2025, 1, 1), utc(2025, 1, 1), utc(2025, 2, 1),
                 id="at-anchor"),
    pytest.param(utc(2025, 1, 1), "P1M", utc(2025, 2, 1), utc(2025, 2, 1), utc(2025, 3, 1),
                 id="boundary-belongs-to-next-period"),
    pytest.param(utc(2025, 1, 1), "P1M", utc(2025, 1, 31, 23, 59, 59, 999999), utc(2025, 1, 1),
                 utc(2025, 2, 1), id="last-microsecond"),
    pytest.param(utc(2025, 1, 1), "P1M", utc(2024, 6, 1), utc(2025, 1, 1), utc(2025, 2, 1),
                 id="before-anchor-is-first-period"),
    pytest.param(utc(2024, 1, 31), "P1M", utc(2024, 2, 10), utc(2024, 1, 31), utc(2024, 2, 29),
                 id="jan-31-clamps-to-feb-29-leap"),
    pytest.param(utc(2024, 1, 31), "P1M", utc(2024, 3, 1), utc(2024, 2, 29), utc(2024, 3, 31),
                 id="after-leap-feb"),
    pytest.param(utc(2024, 1, 31), "P1M", utc(2024, 4, 30), utc(2024, 4, 30), utc(2024, 5, 31),
                 id="month-end-anchor-does-not-drift"),
    pytest.param(utc(2023, 1, 31), "P1M", utc(2023, 3, 15), utc(2023, 2, 28), utc(2023, 3, 31),
                 id="jan-31-clamps-to-feb-28"),
    pytest.param(utc(2025, 1, 15, 12), "P1M", utc(2026, 1, 15, 11), utc(2025, 12, 15, 12),
                 utc(2026, 1, 15, 12), id="across-year-end"),
    pytest.param(utc(2000, 1, 31), "P1M", utc(3000, 2, 28, 12), utc(3000, 2, 28),
                 utc(3000, 3, 31), id="a-thousand-years-later"),
    pytest.param(utc(2024, 2, 29), "P1Y", utc(2025, 3, 1), utc(2025, 2, 28), utc(2026, 2, 28),
                 id="yearly-from-leap-day"),
    pytest.param(utc(2024, 2, 29), "P1Y", utc(2028, 2, 29), utc(2028, 2, 29), utc(2029, 2, 28),
                 id="yearly-back-on-leap-day"),
    pytest.param(utc(2025, 1, 1), "P3M", utc(2025, 8, 20), utc(2025, 7, 1), utc(2025, 10, 1),
                 id="quarterly"),
    pytest.param(utc(2025, 1, 1), "P1D", utc(2025, 3, 1, 5), utc(2025, 3, 1), utc(2025, 3, 2),
                 id="daily"),
    pytest.param(utc(2024, 2, 28), "P1D", utc(2024, 2, 29, 23), utc(2024, 2, 29), utc(2024, 3, 1),
                 id="daily-leap-day"),
    pytest.param(utc(2025, 1, 1), "PT1H", utc(2025, 1, 1, 13, 30), utc(2025, 1, 1, 13),
                 utc(2025, 1, 1, 14), id="hourly"),
    pytest.param(utc(2025, 1, 1), "PT1H", utc(2025, 1, 1, 14), utc(2025, 1, 1, 14),
                 utc(2025, 1, 1, 15), id="hourly-boundary"),
    pytest.param(utc(2025, 1, 6), "P1W", utc(2025, 1, 20), utc(2025, 1, 20), utc(2025, 1, 27),
                 id="weekly"),
    pytest.param(utc(2025, 1, 1), "P1M15D", utc(2025, 3, 1), utc(2025, 2, 16), utc(2025, 3, 31),
                 id="months-plus-days"),
    pytest.param(datetime(2025, 1, 1, tzinfo=PLUS_2), "P1M", utc(2025, 1, 31, 22, 30),
                 datetime(2025, 2, 1, tzinfo=PLUS_2), datetime(2025, 3, 1, tzinfo=PLUS_2),
                 id="anchor-offset-wall-clock"),
]  # fmt: skip


@pytest.mark.parametrize(("anchor", "cadence", "at", "start", "end"), CASES)
def test_billing_period(
    anchor: datetime, cadence: str, at: datetime, start: datetime, end: datetime
) -> None:
    assert billing_period(anchor=anchor, cadence=cadence, at=at) == (start, end)


@pytest.mark.parametrize(
    ("anchor", "cadence", "at", "message"),
    [
        pytest.param(datetime(2025, 1, 1), "P1M", utc(2025, 1, 1), "anchor must be timezone-aware",
                     id="naive-anchor"),
        pytest.param(utc(2025, 1, 1), "P1M", datetime(2025, 1, 1), "at must be timezone-aware",
                     id="naive-at"),
        pytest.param(utc(2025, 1, 1), "P0D", utc(2025, 1, 1), "must be positive", id="zero"),
        pytest.param(utc(2025, 1, 1), "PT0S", utc(2025, 1, 1), "must be positive",
                     id="zero-time"),
        pytest.param(utc(2025, 1, 1), "-P1D", utc(2025, 1, 1), "must be positive",
                     id="negative"),
        pytest.param(utc(2025, 1, 1), "P1.5M", utc(2025, 1, 1), "fractional number of months",
                     id="fractional-month"),
        pytest.param(utc(2025, 1, 1), "monthly", utc(2025, 1, 1), "not an ISO 8601 duration",
                     id="not-iso"),
        pytest.param(utc(2025, 1, 1), "", utc(2025, 1, 1), "not an ISO 8601 duration",
                     id="empty"),
    ],
)  # fmt: skip
def test_billing_period_rejects(anchor: datetime, cadence: str, at: datetime, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        billing_period(anchor=anchor, cadence=cadence, at=at)


@pytest.mark.parametrize(
    ("text", "cadence"),
    [
        pytest.param("P1M", Cadence(months=1, delta=timedelta(0)), id="month"),
        pytest.param("P1Y", Cadence(months=12, delta=timedelta(0)), id="year"),
        pytest.param("P1Y2M3DT4H", Cadence(months=14, delta=timedelta(days=3, hours=4)),
                     id="mixed"),
        pytest.param("P1.5D", Cadence(months=0, delta=timedelta(days=1, hours=12)),
                     id="fractional-day"),
        pytest.param("PT1H", Cadence(months=0, delta=timedelta(hours=1)), id="hour"),
    ],
)  # fmt: skip
def test_parse_cadence(text: str, cadence: Cadence) -> None:
    assert parse_cadence(text) == cadence


CADENCES = ["P1M", "P1Y", "P3M", "P1D", "PT1H", "P1W", "P1M15D", "PT15M", "P2M"]
instants = st.datetimes(
    min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)


@given(anchor=instants, at=instants, cadence=st.sampled_from(CADENCES))
def test_period_contains_at_and_periods_tile(anchor: datetime, at: datetime, cadence: str) -> None:
    start, end = billing_period(anchor=anchor, cadence=cadence, at=at)

    assert start < end
    if at >= anchor:
        assert start <= at < end
    else:
        assert start == anchor
    # The next period starts exactly where this one ends: no gap, no overlap.
    assert billing_period(anchor=anchor, cadence=cadence, at=end)[0] == end
    # The period is anchor + k * cadence for some k, never a chained sum.
    step = parse_cadence(cadence)
    if step.months == 0:
        assert (start - anchor) % step.delta == timedelta(0)
        assert end - start == step.delta
    else:
        k = 0
        while add_cadence(anchor, step.times(k)) < start:
            k += 1
        assert add_cadence(anchor, step.times(k)) == start
        assert add_cadence(anchor, step.times(k + 1)) == end
