"""Aggregation of meter readings into windows and groups (pure: no database, no clock).

Windows are UTC-aligned: a minute, an hour or a day starting at a whole minute, hour or
midnight UTC, like OpenMeter's ``windowSize`` with ``windowTimeZone=UTC``.

How aggregations combine across windows (and across hourly rollups):

- SUM and COUNT add up; MAX is the maximum of the maxima.
- UNIQUE_COUNT counts distinct values over the whole span asked for, not the sum of per-window
  counts: a value seen in two hours counts once in the day.
- LATEST is the value of the event with the latest ``time`` in the span (ties: the larger
  value, so the answer never depends on storage order).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum

from controlplane.errors import InvalidArgument
from controlplane.usage.meters import MeterAggregation
from controlplane.usage.quantities import EXACT


class WindowSize(StrEnum):
    MINUTE = "minute"
    HOUR = "hour"
    DAY = "day"

    @property
    def length(self) -> timedelta:
        return {
            WindowSize.MINUTE: timedelta(minutes=1),
            WindowSize.HOUR: timedelta(hours=1),
            WindowSize.DAY: timedelta(days=1),
        }[self]


def floor_time(time: datetime, size: WindowSize) -> datetime:
    """The start of the UTC window holding ``time``."""
    time = time.replace(second=0, microsecond=0)
    if size is WindowSize.MINUTE:
        return time
    time = time.replace(minute=0)
    if size is WindowSize.HOUR:
        return time
    return time.replace(hour=0)


def ceil_hour(time: datetime) -> datetime:
    floor = floor_time(time, WindowSize.HOUR)
    return floor if floor == time else floor + timedelta(hours=1)


@dataclass
class Accumulator:
    """The running aggregate of one group in one window."""

    aggregation: MeterAggregation
    total: Decimal = Decimal(0)
    count: int = 0
    maximum: Decimal | None = None
    latest: tuple[datetime, Decimal] | None = None
    values: set[str] = field(default_factory=set)

    def add(self, value: Decimal | str | None, time: datetime) -> None:
        """One raw event's reading."""
        self.count += 1
        aggregation = self.aggregation
        if aggregation is MeterAggregation.SUM:
            assert isinstance(value, Decimal)
            self.total = EXACT.add(self.total, value)
        elif aggregation is MeterAggregation.MAX:
            assert isinstance(value, Decimal)
            if self.maximum is None or value > self.maximum:
                self.maximum = value
        elif aggregation is MeterAggregation.LATEST:
            assert isinstance(value, Decimal)
            if self.latest is None or (time, value) > self.latest:
                self.latest = (time, value)
        elif aggregation is MeterAggregation.UNIQUE_COUNT:
            assert value is not None
            self.values.add(str(value))

    def add_rollup(self, value: Decimal, count: int) -> None:
        """One hourly rollup row (SUM, COUNT and MAX only)."""
        assert self.aggregation.rolls_up
        self.count += count
        if self.aggregation is MeterAggregation.SUM:
            self.total = EXACT.add(self.total, value)
        elif self.aggregation is MeterAggregation.MAX and (
            self.maximum is None or value > self.maximum
        ):
            self.maximum = value

    def result(self) -> Decimal:
        aggregation = self.aggregation
        if aggregation is MeterAggregation.SUM:
            return self.total
        if aggregation is MeterAggregation.COUNT:
            return Decimal(self.count)
        if aggregation is MeterAggregation.MAX:
            return self.maximum if self.maximum is not None else Decimal(0)
        if aggregation is MeterAggregation.LATEST:
            return self.latest[1] if self.latest is not None else Decimal(0)
        return Decimal(len(self.values))


@dataclass(frozen=True)
class Point:
    """One event as an aggregation sees it."""

    subject: str
    time: datetime
    dimensions: Mapping[str, str]
    value: Decimal | str | None


@dataclass(frozen=True)
class Row:
    """One aggregate: a group in a window (the window is None when no window was asked)."""

    window_start: datetime | None
    window_end: datetime | None
    group: Mapping[str, str]
    value: Decimal
    # Events aggregated (rollups keep it): requests, where one event per request is counted.
    event_count: int = 0


GroupKey = tuple[datetime | None, tuple[str, ...]]


class Grouper:
    """Accumulators per (window, group), fed by raw points and rollup rows."""

    def __init__(
        self,
        *,
        aggregation: MeterAggregation,
        group_by: Sequence[str],
        window: WindowSize | None,
        start: datetime | None,
        end: datetime | None,
    ) -> None:
        self.aggregation = aggregation
        self.group_by = tuple(group_by)
        self.window = window
        self.start = start
        self.end = end
        self.groups: dict[GroupKey, Accumulator] = {}

    def _key(self, subject: str, time: datetime, dimensions: Mapping[str, str]) -> GroupKey:
        window = floor_time(time, self.window) if self.window is not None else None
        group = tuple(subject if d == "subject" else dimensions.get(d, "") for d in self.group_by)
        return window, group

    def _accumulator(self, key: GroupKey) -> Accumulator:
        accumulator = self.groups.get(key)
        if accumulator is None:
            accumulator = self.groups[key] = Accumulator(self.aggregation)
        return accumulator

    def add(self, point: Point) -> None:
        key = self._key(point.subject, point.time, point.dimensions)
        self._accumulator(key).add(point.value, point.time)

    def add_rollup(
        self,
        subject: str,
        bucket: datetime,
        dimensions: Mapping[str, str],
        value: Decimal,
        count: int,
    ) -> None:
        key = self._key(subject, bucket, dimensions)
        self._accumulator(key).add_rollup(value, count)

    def rows(self) -> list[Row]:
        rows = []
        for (window, group), accumulator in sorted(
            self.groups.items(), key=lambda item: (item[0][0] or datetime.min, item[0][1])
        ):
            window_start = window_end = None
            if window is not None and self.window is not None:
                window_start, window_end = window, window + self.window.length
                if self.start is not None:
                    window_start = max(window_start, self.start)
                if self.end is not None:
                    window_end = min(window_end, self.end)
            rows.append(
                Row(
                    window_start=window_start,
                    window_end=window_end,
                    group=dict(zip(self.group_by, group, strict=True)),
                    value=accumulator.result(),
                    event_count=accumulator.count,
                )
            )
        return rows


def aggregate(
    points: Iterable[Point],
    *,
    aggregation: MeterAggregation,
    group_by: Sequence[str] = (),
    window: WindowSize | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> list[Row]:
    """Aggregate raw points (already selected) per window and group; the reference semantics."""
    grouper = Grouper(
        aggregation=aggregation, group_by=group_by, window=window, start=start, end=end
    )
    for point in points:
        grouper.add(point)
    return grouper.rows()


def parse_window(text: str) -> WindowSize | None:
    if not text:
        return None
    try:
        return WindowSize(text.lower())
    except ValueError:
        raise InvalidArgument(f"unknown window {text!r}; expected minute, hour or day") from None
