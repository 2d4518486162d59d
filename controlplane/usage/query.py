"""Meter queries (windowed aggregates per group) and quantities for invoicing.

Both read hourly rollups for the whole UTC hours of a span and raw events only for the
partial hours at its edges — or raw events for the whole span when the aggregation has no
rollup (LATEST, UNIQUE_COUNT) or the window is a minute. ``aggregate.py`` holds the semantics.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, Connection, select

from controlplane.errors import InvalidArgument
from controlplane.storage import schema as s
from controlplane.usage import meter_storage, rollups
from controlplane.usage import storage as token_storage
from controlplane.usage.aggregate import (
    Grouper,
    Point,
    Row,
    WindowSize,
    ceil_hour,
    floor_time,
)
from controlplane.usage.meters import (
    LLM_TOKENS,
    CompiledMeter,
    MeterAggregation,
    Unreadable,
    loads_exact,
)

HOUR = timedelta(hours=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# The built-in meter's dimensions (columns of usage_events).
LLM_DIMENSIONS = tuple(token_storage.DIMENSION_COLUMNS)


@dataclass(frozen=True)
class MeterView:
    """What a query needs to know of a meter, built-in or operator-defined."""

    key: str
    aggregation: MeterAggregation
    dimensions: tuple[str, ...]
    compiled: CompiledMeter | None  # None for llm_tokens


def resolve_meter(conn: Connection, key: str) -> MeterView:
    """The meter named ``key``; InvalidArgument naming the known meters if there is none."""
    if key == LLM_TOKENS:
        return MeterView(LLM_TOKENS, MeterAggregation.SUM, LLM_DIMENSIONS, None)
    meter = meter_storage.find_meter(conn, key)
    if meter is None:
        known = [LLM_TOKENS, *(m.key for m in meter_storage.list_meters(conn))]
        raise InvalidArgument(f"unknown meter {key!r}; known: {', '.join(known)}")
    return MeterView(
        meter.key, meter.aggregation, tuple(sorted(meter.group_by)), CompiledMeter.of(meter)
    )


def check_dimensions(meter: MeterView, names: Iterable[str], what: str) -> None:
    for name in names:
        if name not in meter.dimensions:
            raise InvalidArgument(
                f"{what}: {name!r} is not a dimension of meter {meter.key} "
                f"({', '.join(meter.dimensions) or 'it has none'})"
            )


def _span_clause(
    subject: Any,
    time: Any,
    *,
    subjects: Sequence[str],
    edge_subjects: Callable[[], Any] | None,
    start: datetime | None,
    end: datetime | None,
) -> list[ColumnElement[bool]]:
    """The WHERE terms of a span of raw events: its subjects (or the edge hour's), its times."""
    terms: list[ColumnElement[bool]] = []
    if subjects:
        terms.append(subject.in_(list(subjects)))
    elif edge_subjects is not None:
        terms.append(subject.in_(edge_subjects()))
    if start is not None:
        terms.append(time >= start)
    if end is not None:
        terms.append(time < end)
    return terms


def _raw_points(
    conn: Connection,
    meter: MeterView,
    *,
    subjects: Sequence[str],
    start: datetime | None,
    end: datetime | None,
    filters: Mapping[str, str],
    where: ColumnElement[bool] | None = None,
) -> Iterator[Point]:
    if start is not None and end is not None and end <= start:
        return
    # Every subject's events of a part of one hour (a span's edge): only the subjects that hour's
    # rollups name, so the (subject, time) index is probed, not scanned whole.
    hour = floor_time(start, WindowSize.HOUR) if start is not None else None
    one_hour = hour is not None and end is not None and end <= hour + HOUR
    source = LLM_TOKENS if meter.compiled is None else rollups.EVENTS

    def edge_subjects() -> Any:  # a subquery: the subjects the hour's rollups name
        assert hour is not None
        return rollups.subjects_in_hour(source, hour)

    def span(subject: Any, time: Any) -> list[ColumnElement[bool]]:
        return _span_clause(
            subject,
            time,
            subjects=subjects,
            edge_subjects=edge_subjects if one_hour else None,
            start=start,
            end=end,
        )

    if meter.compiled is None:
        t = s.usage_events
        query = select(t.c.subject, t.c.time, t.c.tokens, *token_storage.DIMENSION_COLUMNS.values())
        query = query.where(*span(t.c.subject, t.c.time))
        for dimension, value in filters.items():
            query = query.where(token_storage.filter_clause(dimension, value))
        for row in conn.execute(query):
            dimensions = {d: str(v) for d, v in zip(LLM_DIMENSIONS, row[3:], strict=True)}
            yield Point(row.subject, row.time, dimensions, Decimal(row.tokens))
        return
    e = s.meter_events
    query = select(e.c.subject, e.c.time, e.c.data).where(
        e.c.type == meter.compiled.meter.event_type, *span(e.c.subject, e.c.time)
    )
    if where is not None:
        query = query.where(where)
    for subject, time, data in conn.execute(query):
        try:
            reading = meter.compiled.read(loads_exact(data))
        except Unreadable:
            continue  # stored for another meter of the type, before this one existed
        if rollups.matches(reading.dimensions, filters):
            yield Point(subject, time, reading.dimensions, reading.value)


def _fill(
    conn: Connection,
    grouper: Grouper,
    meter: MeterView,
    *,
    subjects: Sequence[str],
    start: datetime | None,
    end: datetime | None,
    filters: Mapping[str, str],
    use_rollups: bool,
) -> None:
    """Feed the grouper every event of [start, end): rollups for whole hours if allowed."""
    if not use_rollups:
        for point in _raw_points(
            conn, meter, subjects=subjects, start=start, end=end, filters=filters
        ):
            grouper.add(point)
        return
    first_hour = ceil_hour(start) if start is not None else None
    last_hour = floor_time(end, WindowSize.HOUR) if end is not None else None
    if first_hour is not None and last_hour is not None and first_hour >= last_hour:
        _fill(
            conn,
            grouper,
            meter,
            subjects=subjects,
            start=start,
            end=end,
            filters=filters,
            use_rollups=False,
        )
        return
    edges = []
    if start is not None and first_hour is not None and start < first_hour:
        edges.append((start, first_hour))
    if end is not None and last_hour is not None and last_hour < end:
        edges.append((last_hour, end))
    for edge_start, edge_end in edges:
        for point in _raw_points(
            conn, meter, subjects=subjects, start=edge_start, end=edge_end, filters=filters
        ):
            grouper.add(point)
    # Combined in SQL per window, dimension set (and subject if grouped by it): the rows the
    # database returns are few whatever the events; filters apply to the dimension sets.
    for subject, bucket, dimensions, value, count in rollups.grouped_rows(
        conn,
        meter=meter.key,
        subjects=subjects,
        start=first_hour,
        end=last_hour,
        aggregation=meter.aggregation,
        by_subject="subject" in grouper.group_by,
        window=grouper.window.value if grouper.window is not None else None,
    ):
        if _rollup_matches(meter, dimensions, filters):
            grouper.add_rollup(subject, bucket or first_hour or _EPOCH, dimensions, value, count)


def _rollup_matches(
    meter: MeterView, dimensions: Mapping[str, str], filters: Mapping[str, str]
) -> bool:
    if meter.compiled is None:
        return token_storage.llm_dimensions_match(dimensions, filters, billable_only=False)
    return rollups.matches(dimensions, filters)


def query(
    conn: Connection,
    *,
    meter: str,
    subjects: Sequence[str] = (),
    filters: Mapping[str, str] | None = None,
    group_by: Sequence[str] = (),
    window: WindowSize | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> list[Row]:
    """Aggregates of a meter per window and group, like OpenMeter's meter query.

    ``group_by`` names meter dimensions or ``subject``; no window means one row per group over
    the whole span; windows are UTC-aligned and clipped to [start, end).
    """
    view = resolve_meter(conn, meter)
    filters = dict(filters or {})
    check_dimensions(view, filters, "filters")
    check_dimensions(view, [g for g in group_by if g != "subject"], "group_by")
    if view.compiled is None:
        for dimension, value in filters.items():
            token_storage.filter_clause(dimension, value)
    if start is not None and end is not None and end < start:
        raise InvalidArgument("the query's end is before its start")
    grouper = Grouper(
        aggregation=view.aggregation, group_by=group_by, window=window, start=start, end=end
    )
    use_rollups = view.aggregation.rolls_up and window is not WindowSize.MINUTE
    _fill(
        conn,
        grouper,
        view,
        subjects=subjects,
        start=start,
        end=end,
        filters=filters,
        use_rollups=use_rollups,
    )
    return grouper.rows()


def quantity(
    conn: Connection,
    *,
    meter: str,
    subjects: Sequence[str],
    filters: Mapping[str, str],
    start: datetime,
    end: datetime,
    where: ColumnElement[bool] | None = None,
    whole_hours: Collection[datetime] = (),
) -> Decimal:
    """The quantity a feature bills: meter ``meter`` over the subjects' events in [start, end)
    matching ``filters`` (dimension -> value), aggregated over the whole span.

    ``where`` (operator meters only) is a condition on ``meter_events`` rows that an event must
    also meet, like "not billed yet" (``invoicing.storage.meter_billed_clause``); the events are
    then read raw, as rollups cannot tell them apart, except in ``whole_hours``: whole UTC hours
    the caller knows every event of meets ``where``, read from rollups (SUM, COUNT, MAX).

    For invoices and entitlements: ``llm_tokens`` counts billable (2xx) requests only unless a
    filter names ``status_code`` (exact integer, same as ``usage.storage.sum_tokens``); an
    operator meter gives its aggregation over the span (SUM/COUNT/MAX; UNIQUE_COUNT distinct
    over the span; LATEST the last value) as an exact Decimal, 0 without events. Reads rollups
    for whole hours and raw events for the partial edge hours only.
    """
    if not subjects or end <= start:
        return Decimal(0)
    if meter == LLM_TOKENS:
        if where is not None:
            raise InvalidArgument(f"a condition on meter_events cannot select {LLM_TOKENS} events")
        return Decimal(
            token_storage.sum_tokens(conn, subjects=subjects, start=start, end=end, filters=filters)
        )
    view = resolve_meter(conn, meter)
    check_dimensions(view, filters, "filters")
    grouper = Grouper(aggregation=view.aggregation, group_by=(), window=None, start=start, end=end)
    if where is not None:
        hours = sorted(h for h in whole_hours if start <= h and h + HOUR <= end)
        if not view.aggregation.rolls_up:
            hours = []
        raw, at = [], start
        for hour in hours:
            if at < hour:
                raw.append((at, hour))
            at = hour + HOUR
        if at < end:
            raw.append((at, end))
        for raw_start, raw_end in raw:
            for point in _raw_points(
                conn,
                view,
                subjects=subjects,
                start=raw_start,
                end=raw_end,
                filters=filters,
                where=where,
            ):
                grouper.add(point)
        if hours:
            wanted = set(hours)
            for subject, bucket, dimensions, value, count in rollups.hourly_rows(
                conn, meter=view.key, subjects=subjects, start=hours[0], end=hours[-1] + HOUR
            ):
                if bucket in wanted and _rollup_matches(view, dimensions, filters):
                    grouper.add_rollup(subject, bucket, dimensions, value, count)
        rows = grouper.rows()
        return rows[0].value if rows else Decimal(0)
    _fill(
        conn,
        grouper,
        view,
        subjects=subjects,
        start=start,
        end=end,
        filters=filters,
        use_rollups=view.aggregation.rolls_up,
    )
    rows = grouper.rows()
    return rows[0].value if rows else Decimal(0)
