"""Hourly usage rollups: per meter, subject, dimensions and UTC hour, kept with the events.

Upkeep: the transaction that inserts events adds the *newly inserted* ones (duplicates are
dropped by the insert first) to their hour's row: SUM and llm_tokens add values, COUNT adds
events, MAX keeps the larger value. LATEST and UNIQUE_COUNT have no rollup: they read raw
events (a distinct set or a latest event does not combine from hourly numbers without storing
the values themselves).

Reads: whole hours of a span come from rollups, the partial hours at either edge from raw
events (``controlplane.usage.query``). PostgreSQL adds decimal strings as ``numeric`` in the
upsert (exact), each connection in its own shard of a row; SQLite, with one writer, adds
them in Python in shard 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any

import orjson
from sqlalchemy import (
    Connection,
    Integer,
    Numeric,
    Table,
    and_,
    cast,
    exc,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from controlplane.storage import schema as s
from controlplane.usage.meters import LLM_TOKENS, MeterAggregation
from controlplane.usage.quantities import EXACT

r = s.usage_rollups

# The rollup rows counting every stored operator-meter event per subject and hour, whatever
# meters read it (dimensions "{}"): what the billing ledger's hourly counts are compared with.
# No meter can have this key (keys start with a letter or digit).
EVENTS = ":events"


@dataclass
class Delta:
    """What a batch of new events adds to one rollup row."""

    value: Decimal
    count: int


RollupKey = tuple[str, str, datetime, str]  # meter, subject, hour, canonical dimensions


class Deltas:
    """Rollup changes of one insert, combined in memory before they touch the database."""

    def __init__(self) -> None:
        self.additive: dict[RollupKey, Delta] = {}
        self.maximum: dict[RollupKey, Delta] = {}

    def add(
        self,
        *,
        aggregation: MeterAggregation,
        meter: str,
        subject: str,
        time: datetime,
        dimensions: str,
        value: Decimal | None,
        count: int = 1,
    ) -> None:
        """Add ``count`` events whose values total ``value`` (their maximum, for MAX)."""
        if not aggregation.rolls_up:
            return
        key = (meter, subject, time.replace(minute=0, second=0, microsecond=0), dimensions)
        target = self.maximum if aggregation is MeterAggregation.MAX else self.additive
        delta = target.get(key)
        amount = value if value is not None else Decimal(0)
        if delta is None:
            target[key] = Delta(amount, count)
        elif aggregation is MeterAggregation.MAX:
            delta.value = max(delta.value, amount)
            delta.count += count
        else:
            delta.value = EXACT.add(delta.value, amount)
            delta.count += count

    def __bool__(self) -> bool:
        return bool(self.additive or self.maximum)


def _naive(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(tzinfo=None)


_PG_UPSERT = """
    INSERT INTO usage_rollups (meter, subject, bucket, dimensions, shard, value, count)
    SELECT u.meter, u.subject, u.bucket, u.dimensions, pg_backend_pid() % 16, u.value, u.count
    FROM json_to_recordset(CAST(:rows AS json)) AS u(
        meter text, subject text, bucket timestamp, dimensions text, value text, count bigint
    )
    ORDER BY u.meter, u.subject, u.bucket, u.dimensions
    ON CONFLICT (meter, subject, bucket, dimensions, shard) DO UPDATE SET
        value = CAST({combine} AS text),
        count = usage_rollups.count + excluded.count
"""
# Rows are upserted in key order, so concurrent batches lock shared rows in the same order
# and never deadlock.
_PG_ADD = text(
    _PG_UPSERT.format(
        combine="CAST(usage_rollups.value AS numeric) + CAST(excluded.value AS numeric)"
    )
)
_PG_MAX = text(
    _PG_UPSERT.format(
        combine="GREATEST(CAST(usage_rollups.value AS numeric), CAST(excluded.value AS numeric))"
    )
)


def apply(conn: Connection, deltas: Deltas) -> None:
    """Add a batch's deltas to the rollup rows, in the caller's transaction."""
    for rows, is_max in ((deltas.additive, False), (deltas.maximum, True)):
        if not rows:
            continue
        if conn.dialect.name == "postgresql":
            payload = orjson.dumps(
                [
                    {
                        "meter": meter,
                        "subject": subject,
                        "bucket": _naive(bucket),
                        "dimensions": dimensions,
                        "value": str(delta.value),
                        "count": delta.count,
                    }
                    for (meter, subject, bucket, dimensions), delta in rows.items()
                ]
            ).decode()
            conn.execute(_PG_MAX if is_max else _PG_ADD, {"rows": payload})
        else:
            _apply_sqlite(conn, rows, is_max=is_max)


# Token sums are integers: SQLite adds them exactly (64-bit) while both sides are below 10^18,
# so their sum stays below 2^63. Past that SQLite's "+" turns into a float
# (1.84467440737096e+19): rows already at 10^18 or more (_SQLITE_BIG_ROWS, one statement that
# normally finds nothing) and deltas that large are added exactly in Python (_apply_exact)
# instead. The rows travel as one JSON
# parameter taken apart by json_each, so the upsert is one statement and one sqlite3_step: an
# executemany steps once per row, and Python's sqlite3 releases and re-takes the GIL around
# every step, which under a busy event loop costs up to a switch interval (5 ms) each.
# "WHERE true" disambiguates INSERT ... SELECT ... ON CONFLICT for SQLite's parser.
_SQLITE_INTEGER_UPSERT = text(
    """
    INSERT INTO usage_rollups (meter, subject, bucket, dimensions, shard, value, count)
    SELECT
        json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'),
        json_extract(value, '$[3]'), 0, CAST(json_extract(value, '$[4]') AS TEXT),
        json_extract(value, '$[5]')
    FROM json_each(:rows) WHERE true
    ON CONFLICT (meter, subject, bucket, dimensions, shard) DO UPDATE SET
        value = CAST(CAST(usage_rollups.value AS INTEGER) + CAST(excluded.value AS INTEGER)
            AS TEXT),
        count = usage_rollups.count + excluded.count
    """
)
_SQLITE_BIG_ROWS = text(
    """
    SELECT r.meter, r.subject, r.bucket, r.dimensions
    FROM json_each(:rows) AS j JOIN usage_rollups AS r
        ON r.meter = json_extract(j.value, '$[0]') AND r.subject = json_extract(j.value, '$[1]')
        AND r.bucket = json_extract(j.value, '$[2]')
        AND r.dimensions = json_extract(j.value, '$[3]') AND r.shard = 0
    WHERE length(r.value) > 18
    """
)
_SMALL = 10**18


def _sqlite_bucket(value: datetime) -> str:
    # How UTCDateTime stores a value on SQLite (naive UTC, always microseconds).
    return _naive(value).isoformat(" ", "microseconds")


def _apply_sqlite(conn: Connection, rows: Mapping[RollupKey, Delta], *, is_max: bool) -> None:
    if not is_max and all(key[0] == LLM_TOKENS for key in rows):
        payload = orjson.dumps(
            [
                (meter, subject, _sqlite_bucket(bucket), dimensions, str(int(d.value)), d.count)
                for (meter, subject, bucket, dimensions), d in sorted(rows.items())
            ]
        ).decode()
        big = {tuple(row) for row in conn.execute(_SQLITE_BIG_ROWS, {"rows": payload})}
        small = {
            key: d
            for key, d in rows.items()
            if d.value < _SMALL and (key[0], key[1], _sqlite_bucket(key[2]), key[3]) not in big
        }
        if len(small) < len(rows):
            _apply_exact(conn, {k: d for k, d in rows.items() if k not in small}, is_max=False)
            payload = orjson.dumps(
                [
                    (m, subject, _sqlite_bucket(bucket), dims, str(int(d.value)), d.count)
                    for (m, subject, bucket, dims), d in sorted(small.items())
                ]
            ).decode()
        if small:
            conn.execute(_SQLITE_INTEGER_UPSERT, {"rows": payload})
        return
    _apply_exact(conn, rows, is_max=is_max)


def _apply_exact(conn: Connection, rows: Mapping[RollupKey, Delta], *, is_max: bool) -> None:
    # Decimal values: added in Python (SQLite would go through a float). One writer at a time.
    for (meter, subject, bucket, dimensions), delta in sorted(rows.items()):
        where = and_(
            r.c.meter == meter,
            r.c.subject == subject,
            r.c.bucket == bucket,
            r.c.dimensions == dimensions,
            r.c.shard == 0,
        )
        found = conn.execute(select(r.c.value, r.c.count).where(where)).first()
        if found is None:
            conn.execute(
                insert(r).values(
                    meter=meter,
                    subject=subject,
                    bucket=bucket,
                    dimensions=dimensions,
                    shard=0,
                    value=str(delta.value),
                    count=delta.count,
                )
            )
            continue
        old, count = Decimal(found[0]), int(found[1])
        value = max(old, delta.value) if is_max else EXACT.add(old, delta.value)
        conn.execute(update(r).where(where).values(value=str(value), count=count + delta.count))


@lru_cache(maxsize=4096)
def parse_dimensions(text: str) -> Mapping[str, str]:
    """Canonical dimension text -> mapping (cached: a meter has few distinct sets)."""
    value: dict[str, str] = orjson.loads(text)
    return value


def canonical(dimensions: Mapping[str, str]) -> str:
    """The rollup key text of a dimension set (sorted keys, as written on insert)."""
    return orjson.dumps(dict(dimensions), option=orjson.OPT_SORT_KEYS).decode()


def matches(dimensions: Mapping[str, str], filters: Mapping[str, str]) -> bool:
    return all(dimensions.get(d, "") == v for d, v in filters.items())


def totals_by_dimensions(
    conn: Connection,
    *,
    meter: str,
    subjects: Sequence[str],
    start: datetime,
    end: datetime,
    aggregation: MeterAggregation,
) -> list[tuple[Mapping[str, str], Decimal, int]]:
    """Per dimension set: the rollups of hours in [start, end) (both whole hours) combined."""
    if not subjects or end <= start:
        return []
    where = (
        r.c.meter == meter,
        r.c.subject.in_(list(subjects)),
        r.c.bucket >= start,
        r.c.bucket < end,
    )
    combined: dict[str, tuple[Decimal, int]] = {}
    if conn.dialect.name == "postgresql":
        numeric = cast(r.c.value, Numeric)
        value = func.max(numeric) if aggregation is MeterAggregation.MAX else func.sum(numeric)
        query = select(r.c.dimensions, value, func.sum(r.c.count)).where(*where)
        for dimensions, total, count in conn.execute(query.group_by(r.c.dimensions)):
            combined[dimensions] = (Decimal(total), int(count))
    else:
        query = select(r.c.dimensions, r.c.value, r.c.count).where(*where)
        for dimensions, raw, count in conn.execute(query):
            amount = Decimal(raw)
            previous = combined.get(dimensions)
            if previous is None:
                combined[dimensions] = (amount, int(count))
            elif aggregation is MeterAggregation.MAX:
                combined[dimensions] = (max(previous[0], amount), previous[1] + int(count))
            else:
                combined[dimensions] = (previous[0] + amount, previous[1] + int(count))
    return [(parse_dimensions(d), v, c) for d, (v, c) in combined.items()]


def hourly_rows(
    conn: Connection,
    *,
    meter: str,
    subjects: Sequence[str] | None,
    start: datetime | None,
    end: datetime | None,
) -> Iterable[tuple[str, datetime, Mapping[str, str], Decimal, int]]:
    """Rollup rows (subject, hour, dimensions, value, count) of whole hours in [start, end)."""
    query = select(r.c.subject, r.c.bucket, r.c.dimensions, r.c.value, r.c.count).where(
        r.c.meter == meter
    )
    if subjects:
        query = query.where(r.c.subject.in_(list(subjects)))
    if start is not None:
        query = query.where(r.c.bucket >= start)
    if end is not None:
        query = query.where(r.c.bucket < end)
    for subject, bucket, dimensions, value, count in conn.execute(query):
        yield subject, bucket, parse_dimensions(dimensions), Decimal(value), int(count)


# SQLite adds integer text exactly in SQL while it stays below 2^63 (sum() raises "integer
# overflow" rather than going through a float): rows of at most 18 digits are summed there,
# the rest (decimals, negatives, longer numbers) in Python with Decimal.
_SQLITE_INTEGER_TEXT = "value NOT GLOB '*[^0-9]*' AND length(value) BETWEEN 1 AND 18"


GroupedRow = tuple[str, datetime | None, Mapping[str, str], Decimal, int]


def grouped_rows(
    conn: Connection,
    *,
    meter: str,
    subjects: Sequence[str] | None,
    start: datetime | None,
    end: datetime | None,
    aggregation: MeterAggregation,
    by_subject: bool,
    window: str | None,
) -> list[GroupedRow]:
    """``hourly_rows`` combined in SQL: one row per (subject if ``by_subject``, window,
    dimensions) instead of one per hour. ``window`` is "hour", "day" or None (the whole span).

    The rows a caller combines further (a grouper adding them up) give exactly the totals of
    the hourly rows: SUM adds exactly (PostgreSQL ``numeric``; SQLite 64-bit integers, or
    Decimal in Python for values SQLite cannot add exactly), COUNT adds counts, MAX keeps the
    largest. A window's bucket is its UTC start (an hour or a midnight).
    """
    dialect = conn.dialect.name
    if window == "day":
        bucket: Any = (
            func.date_trunc("day", r.c.bucket)
            if dialect == "postgresql"
            else func.substr(r.c.bucket, 1, 10)
        )
    elif window == "hour":
        bucket = r.c.bucket
    elif window is None:
        bucket = None
    else:
        raise ValueError(f"unknown window {window!r}")
    keys: list[Any] = [r.c.dimensions]
    if by_subject:
        keys.append(r.c.subject)
    if bucket is not None:
        keys.append(bucket)
    where: list[Any] = [r.c.meter == meter]
    if subjects:
        where.append(r.c.subject.in_(list(subjects)))
    if start is not None:
        where.append(r.c.bucket >= start)
    if end is not None:
        where.append(r.c.bucket < end)
    is_max = aggregation is MeterAggregation.MAX

    def unpack(row: Any, value: Decimal) -> GroupedRow:
        subject = row[1] if by_subject else ""
        hour = as_hour(row[len(keys) - 1]) if bucket is not None else None
        return subject, hour, parse_dimensions(row[0]), value, int(row[-1])

    if dialect == "postgresql":
        numeric = cast(r.c.value, Numeric)
        value = func.max(numeric) if is_max else func.sum(numeric)
        query = select(*keys, value, func.sum(r.c.count)).where(*where).group_by(*keys)
        return [unpack(row, Decimal(row[-2])) for row in conn.execute(query)]
    integer = text(_SQLITE_INTEGER_TEXT)
    as_int = cast(r.c.value, Integer)
    value = func.max(as_int) if is_max else func.sum(as_int)
    query = select(*keys, value, func.sum(r.c.count)).where(*where, integer).group_by(*keys)
    try:
        found = [unpack(row, Decimal(row[-2])) for row in conn.execute(query)]
    except exc.OperationalError as error:
        if "overflow" not in str(error):
            raise
        found = []
        where_rest: list[Any] = list(where)
    else:
        where_rest = [*where, text(f"NOT ({_SQLITE_INTEGER_TEXT})")]
    # The rest one hourly row at a time (a grouper adds them to the SQL-summed rows).
    rest = select(*keys, r.c.value, r.c.count).where(*where_rest)
    found += [unpack(row, Decimal(row[-2])) for row in conn.execute(rest)]
    return found


def subjects_in_hour(meter: str, hour: datetime) -> Any:
    """SQL: the subjects with rollups of ``meter`` in the UTC hour starting at ``hour``.

    Raw events are indexed by subject first (then time): a read of one partial hour for every
    subject names these, so it probes the index per subject instead of scanning all of it.
    """
    return (
        select(r.c.subject)
        .where(r.c.meter == meter, r.c.bucket == hour)
        .distinct()
        .scalar_subquery()
    )


def delete_meter(conn: Connection, meter: str) -> None:
    conn.execute(r.delete().where(r.c.meter == meter))


def event_counts_by_hour(
    conn: Connection, *, meter: str, subjects: Sequence[str], start: datetime, end: datetime
) -> dict[datetime, int]:
    """Events per UTC hour (hours in [start, end)) of the subjects, from the rollups."""
    query = (
        select(r.c.bucket, func.sum(r.c.count))
        .where(
            r.c.meter == meter,
            r.c.subject.in_(list(subjects)),
            r.c.bucket >= start,
            r.c.bucket < end,
        )
        .group_by(r.c.bucket)
    )
    return {bucket: int(count) for bucket, count in conn.execute(query)}


def hour_of(column: Any, dialect: str) -> Any:
    """SQL for the UTC hour of a naive-UTC timestamp column (read back with ``as_hour``)."""
    if dialect == "postgresql":
        return func.date_trunc("hour", column)
    return func.strftime("%Y-%m-%d %H:00:00", column)


def as_hour(value: Any) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    return value.replace(tzinfo=UTC)


b = s.billed_usage_hours


def add_billed_hours(
    conn: Connection,
    subscription: str,
    counts: Mapping[datetime, int],
    *,
    table: Table = b,
    invoice_id: str | None = None,
) -> None:
    """Add events newly recorded in a billing ledger to their hours' billed counts: in
    ``billed_usage_hours`` (llm_tokens) per subscription, or in ``billed_meter_hours``
    (operator meters, ``table``) per subscription and ``invoice_id``."""
    if not counts:
        return
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(table)
    keys = ["subscription_id", "bucket"] + (["invoice_id"] if invoice_id is not None else [])
    statement = statement.on_conflict_do_update(
        index_elements=keys, set_={"count": table.c.count + statement.excluded.count}
    )
    extra = {"invoice_id": invoice_id} if invoice_id is not None else {}
    conn.execute(
        statement,
        [
            {"subscription_id": subscription, "bucket": hour, "count": count, **extra}
            for hour, count in sorted(counts.items())
        ],
    )


def billed_counts(
    conn: Connection,
    *,
    subscription: str,
    start: datetime,
    end: datetime,
    table: Table = b,
    invoice_id: str | None = None,
) -> dict[datetime, int]:
    """Billed events per hour in [start, end) of the subscription (by ``invoice_id`` only, if
    given; ``billed_meter_hours`` only)."""
    query = (
        select(table.c.bucket, func.sum(table.c.count))
        .where(
            table.c.subscription_id == subscription,
            table.c.bucket >= start,
            table.c.bucket < end,
        )
        .group_by(table.c.bucket)
    )
    if invoice_id is not None:
        query = query.where(table.c.invoice_id == invoice_id)
    return {bucket: int(count) for bucket, count in conn.execute(query)}
