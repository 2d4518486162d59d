"""Billing periods: which ``[start, end)`` window of a cadence contains an instant.

Pure: no clock. Periods are always computed from the anchor as ``anchor + k * cadence`` rather
than by chaining ``period.end + cadence``, so a month-end anchor does not drift: with anchor
31 Jan and ``P1M`` the periods start 31 Jan, 29 Feb (clamped), 31 Mar, 30 Apr, ...

Calendar arithmetic happens on the anchor's wall clock (in its ``tzinfo``); comparisons are
between aware instants. Anchors are normally UTC.
"""

from __future__ import annotations

import calendar
import functools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import isodate

from controlplane.errors import InvalidArgument

# The average Gregorian month in seconds (365.2425 * 86400 / 12); only used to guess k.
_AVERAGE_MONTH = timedelta(seconds=2_629_746)

# Bounds of every cadence (billing cadences, usage periods, grant recurrences), shared by the
# API and YAML because both parse here: shorter ones would make the invoicing job create an
# invoice per minute of history, longer ones overflow the calendar (docs/limits.md).
MIN_CADENCE = timedelta(minutes=1)
MAX_CADENCE_MONTHS = 120
MAX_CADENCE_DELTA = timedelta(days=3653)
# Instants billing periods are computed for: periods of the longest cadence still end before
# datetime's year 9999 (docs/limits.md).
EARLIEST_TIME = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_TIME = datetime(9000, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Cadence:
    """A parsed, positive ISO 8601 duration: whole calendar months plus an exact time delta."""

    months: int
    delta: timedelta

    def times(self, k: int) -> Cadence:
        return Cadence(months=self.months * k, delta=self.delta * k)


@functools.lru_cache(maxsize=256)
def parse_cadence(text: str) -> Cadence:
    """Parse a positive ISO 8601 duration such as ``P1M``, ``P1D`` or ``PT1H``.

    Raises InvalidArgument for malformed, zero, negative or fractional-month durations, and
    for ones shorter than MIN_CADENCE or longer than ten years (P10Y or P3653D).
    """
    if not isinstance(text, str):
        raise InvalidArgument(f"billing cadence must be an ISO 8601 duration string, got {text!r}")
    if len(text) > 40:
        raise InvalidArgument(f"billing cadence {text[:40]!r}... is longer than 40 characters")
    try:
        parsed = isodate.parse_duration(text)
    except (isodate.ISO8601Error, ValueError, OverflowError, ArithmeticError) as exc:
        raise InvalidArgument(
            f"billing cadence {text!r} is not an ISO 8601 duration (like P1M, P1D, PT1H)"
        ) from exc
    if isinstance(parsed, timedelta):
        months, delta = 0, parsed
    else:
        total_months = Decimal(parsed.years) * 12 + Decimal(parsed.months)
        if total_months != total_months.to_integral_value():
            raise InvalidArgument(
                f"billing cadence {text!r} has a fractional number of months or years"
            )
        months, delta = int(total_months), parsed.tdelta
    if months < 0 or delta < timedelta(0) or (months == 0 and delta == timedelta(0)):
        raise InvalidArgument(f"billing cadence {text!r} must be positive")
    if (
        months > MAX_CADENCE_MONTHS
        or delta > MAX_CADENCE_DELTA
        or (months and months * _AVERAGE_MONTH + delta > MAX_CADENCE_DELTA)
    ):
        raise InvalidArgument(f"billing cadence {text!r} is longer than the maximum of ten years")
    if months == 0 and delta < MIN_CADENCE:
        raise InvalidArgument(f"billing cadence {text!r} is shorter than the minimum of PT1M")
    return Cadence(months=months, delta=delta)


def add_cadence(moment: datetime, cadence: Cadence) -> datetime:
    """``moment + cadence``: months first (day clamped to the month's end), then the delta."""
    shifted = moment
    if cadence.months:
        month_index = moment.year * 12 + (moment.month - 1) + cadence.months
        year, month = divmod(month_index, 12)
        month += 1
        day = min(moment.day, calendar.monthrange(year, month)[1])
        shifted = moment.replace(year=year, month=month, day=day)
    return shifted + cadence.delta


def _require_aware(name: str, value: datetime) -> None:
    if not isinstance(value, datetime):
        raise InvalidArgument(f"{name} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        raise InvalidArgument(f"{name} must be timezone-aware, got naive {value.isoformat()}")


def billing_period(*, anchor: datetime, cadence: str, at: datetime) -> tuple[datetime, datetime]:
    """The ``[start, end)`` period of ``cadence`` counted from ``anchor`` that contains ``at``.

    An instant exactly on a boundary belongs to the period it starts. ``at`` before the anchor
    gives the first period. Naive datetimes and non-positive cadences raise InvalidArgument.
    """
    _require_aware("anchor", anchor)
    _require_aware("at", at)
    for name, value in (("anchor", anchor), ("at", at)):
        if not EARLIEST_TIME <= value < LATEST_TIME:
            raise InvalidArgument(
                f"{name} {value.isoformat()} is outside the supported range "
                f"[{EARLIEST_TIME.date()}, {LATEST_TIME.date()})"
            )
    step = parse_cadence(cadence)
    if at <= anchor:
        return anchor, add_cadence(anchor, step)
    # Guess k from the average period length, then walk to the exact period; the guess is off
    # by at most a step or two because calendar months vary by only a few days.
    approx = step.months * _AVERAGE_MONTH + step.delta
    k = (at - anchor) // approx
    while k > 0 and add_cadence(anchor, step.times(k)) > at:
        k -= 1
    while add_cadence(anchor, step.times(k + 1)) <= at:
        k += 1
    return add_cadence(anchor, step.times(k)), add_cadence(anchor, step.times(k + 1))
