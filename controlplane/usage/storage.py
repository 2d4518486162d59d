"""Storage of usage events: idempotent inserts and meter aggregation."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    Numeric,
    and_,
    case,
    cast,
    func,
    literal,
    or_,
    select,
    text,
)

from controlplane.errors import InvalidArgument
from controlplane.storage import schema as s
from controlplane.usage import rollups
from controlplane.usage.aggregate import WindowSize, ceil_hour, floor_time
from controlplane.usage.meters import LLM_TOKENS, MeterAggregation
from controlplane.usage.types import TokenType, UsageEvent

t = s.usage_events

# Meter dimensions -> columns. "type" is the token type.
DIMENSION_COLUMNS: Mapping[str, ColumnElement[Any]] = {
    "model": t.c.model,
    "provider": t.c.provider,
    "type": t.c.token_type,
    "status_code": t.c.status_code,
    "route": t.c.route,
}


@dataclass(frozen=True)
class InsertResult:
    accepted: int
    duplicates: int


def insert_events(
    conn: Connection, events: Sequence[UsageEvent], *, ingest_time: datetime
) -> InsertResult:
    """Store events; an id seen before (in this batch or earlier) is a duplicate, not an error."""
    if not events:
        return InsertResult(0, 0)
    forget_totals(conn)
    unique = list({e.id: e for e in events}.values())
    if conn.dialect.name == "postgresql":
        accepted = _insert_json(conn, unique, ingest_time=ingest_time)
        return InsertResult(accepted=accepted, duplicates=len(events) - accepted)
    # Which ids are stored already, then the insert: two statements of one step each (usually
    # no row comes back), instead of RETURNING, which steps once per inserted row, and Python's
    # sqlite3 re-takes the GIL at every step (a switch interval each under a busy event loop:
    # ~1 s per 500-event batch with four streams). Both run in the caller's write transaction
    # (Database.begin_write: BEGIN IMMEDIATE), so no writer gets in between.
    ids = orjson.dumps([e.id for e in unique]).decode()
    stored = set(conn.execute(_SQLITE_STORED_IDS, {"ids": ids}).scalars())
    fresh = [e for e in unique if e.id not in stored]
    if fresh:
        rows = orjson.dumps(
            [
                (
                    e.id,
                    e.source,
                    e.type,
                    e.subject,
                    _sqlite_time(e.time),
                    e.provider,
                    e.model,
                    e.token_type.value,
                    e.tokens,
                    e.status_code,
                    e.route,
                    e.request_id,
                    e.estimated,
                    e.time_to_first_token_ms,
                    e.latency_ms,
                )
                for e in fresh
            ]
        ).decode()
        params = {"ingest_time": _sqlite_time(ingest_time), "rows": rows}
        conn.execute(_SQLITE_JSON_INSERT, params)
    _roll_up(conn, fresh)
    return InsertResult(accepted=len(fresh), duplicates=len(events) - len(fresh))


_SQLITE_STORED_IDS = text(
    "SELECT id FROM usage_events WHERE id IN (SELECT value FROM json_each(:ids))"
)


# SQLite's counterpart of _JSON_INSERT below: the batch travels as one JSON array of rows that
# SQLite takes apart in C (json_each), instead of SQLAlchemy binding every value of every row
# in Python (most of the store's CPU: bench/README.md). "WHERE true" is SQLite's required
# disambiguation of INSERT ... SELECT ... ON CONFLICT.
_SQLITE_JSON_INSERT = text(
    """
    INSERT INTO usage_events (
        id, source, type, subject, time, provider, model, token_type, tokens,
        status_code, route, request_id, estimated, ingest_time,
        time_to_first_token_ms, latency_ms
    )
    SELECT
        json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'),
        json_extract(value, '$[3]'), json_extract(value, '$[4]'), json_extract(value, '$[5]'),
        json_extract(value, '$[6]'), json_extract(value, '$[7]'), json_extract(value, '$[8]'),
        json_extract(value, '$[9]'), json_extract(value, '$[10]'),
        json_extract(value, '$[11]'), json_extract(value, '$[12]'), :ingest_time,
        json_extract(value, '$[13]'), json_extract(value, '$[14]')
    FROM json_each(:rows) WHERE true
    ON CONFLICT (id) DO NOTHING
    """
)


def _sqlite_time(value: datetime) -> str:
    """``value`` as SQLAlchemy's SQLite DATETIME stores it (naive UTC, always microseconds),
    so raw inserts compare and read back exactly like values bound through the column type."""
    return _naive_utc(value).isoformat(" ", "microseconds")


def llm_dimensions(
    *, model: str, provider: str, route: str, status_code: int, token_type: str
) -> str:
    """The canonical rollup dimensions of an llm_tokens event (see rollups.py)."""
    return orjson.dumps(
        {
            "model": model,
            "provider": provider,
            "route": route,
            "status_code": str(status_code),
            "type": token_type,
        }
    ).decode()


def _roll_up(conn: Connection, events: Sequence[UsageEvent]) -> None:
    # Only events this insert stored are given: a duplicate was counted when it first arrived.
    # Summed per (subject, hour, dimensions) in plain ints first: a batch holds many events
    # of few rollup rows, and the dimension text is built once per row, not per event.
    sums: dict[tuple[str, datetime, str, str, str, int, str], list[int]] = {}
    for e in events:
        key = (
            e.subject,
            e.time.replace(minute=0, second=0, microsecond=0),
            e.model,
            e.provider,
            e.route,
            e.status_code,
            e.token_type.value,
        )
        found = sums.get(key)
        if found is None:
            sums[key] = [e.tokens, 1]
        else:
            found[0] += e.tokens
            found[1] += 1
    deltas = rollups.Deltas()
    for (subject, hour, model, provider, route, status_code, token_type), (
        tokens,
        count,
    ) in sums.items():
        deltas.add(
            aggregation=MeterAggregation.SUM,
            meter=LLM_TOKENS,
            subject=subject,
            time=hour,
            dimensions=llm_dimensions(
                model=model,
                provider=provider,
                route=route,
                status_code=status_code,
                token_type=token_type,
            ),
            value=Decimal(tokens),
            count=count,
        )
    rollups.apply(conn, deltas)


# One statement per batch whatever its size: the rows travel as one JSON parameter that the
# server turns back into rows (json_to_recordset, in C). A multi-row VALUES (what SQLAlchemy's
# insertmanyvalues builds) is a new, long SQL text that psycopg re-parses on every batch, and
# array parameters are dumped element by element in Python: each was most of the ingest CPU
# (bench/README.md). This text never changes, so the server plans it once per connection.
_JSON_INSERT = text(
    """
    WITH inserted AS (
        INSERT INTO usage_events (
            id, source, type, subject, time, provider, model, token_type, tokens,
            status_code, route, request_id, estimated, ingest_time,
            time_to_first_token_ms, latency_ms
        )
        SELECT
            u.id, u.source, u.type, u.subject, u.time, u.provider, u.model, u.token_type,
            u.tokens, u.status_code, u.route, u.request_id, u.estimated,
            CAST(:ingest_time AS timestamp), u.time_to_first_token_ms, u.latency_ms
        FROM json_to_recordset(CAST(:rows AS json)) AS u(
            id text, source text, type text, subject text, time timestamp, provider text,
            model text, token_type text, tokens bigint, status_code integer, route text,
            request_id text, estimated boolean,
            time_to_first_token_ms bigint, latency_ms bigint
        )
        ON CONFLICT (id) DO NOTHING
        RETURNING subject, time, tokens, model, provider, route, status_code, token_type
    ),
    -- Only the rows this statement inserted roll up (controlplane/usage/rollups.py), in key
    -- order, into this connection's shard. The dimension text is llm_dimensions' (to_json
    -- escapes a string exactly as orjson does).
    dimensioned AS (
        SELECT
            subject, date_trunc('hour', time) AS bucket, tokens,
            '{"model":' || CAST(to_json(model) AS text)
                || ',"provider":' || CAST(to_json(provider) AS text)
                || ',"route":' || CAST(to_json(route) AS text)
                || ',"status_code":"' || status_code
                || '","type":' || CAST(to_json(token_type) AS text) || '}' AS dimensions
        FROM inserted
    ),
    rolled AS (
        INSERT INTO usage_rollups (meter, subject, bucket, dimensions, shard, value, count)
        SELECT
            'llm_tokens', subject, bucket, dimensions, pg_backend_pid() % 16,
            CAST(sum(tokens) AS text), count(*)
        FROM dimensioned
        GROUP BY subject, bucket, dimensions
        ORDER BY subject, bucket, dimensions
        ON CONFLICT (meter, subject, bucket, dimensions, shard) DO UPDATE SET
            value = CAST(
                CAST(usage_rollups.value AS numeric) + CAST(excluded.value AS numeric) AS text
            ),
            count = usage_rollups.count + excluded.count
    )
    SELECT count(*) FROM inserted
    """
)


def _naive_utc(value: datetime) -> datetime:
    # What UTCDateTime stores: naive UTC (a raw parameter skips the column type's conversion).
    if value.tzinfo is UTC:
        return value.replace(tzinfo=None)
    if value.tzinfo is None:
        raise ValueError("naive datetime given to the database")
    return value.astimezone(UTC).replace(tzinfo=None)


def _insert_json(conn: Connection, events: Sequence[UsageEvent], *, ingest_time: datetime) -> int:
    rows = orjson.dumps(
        [
            {
                "id": e.id,
                "source": e.source,
                "type": e.type,
                "subject": e.subject,
                "time": _naive_utc(e.time),
                "provider": e.provider,
                "model": e.model,
                "token_type": e.token_type.value,
                "tokens": e.tokens,
                "status_code": e.status_code,
                "route": e.route,
                "request_id": e.request_id,
                "estimated": e.estimated,
                "time_to_first_token_ms": e.time_to_first_token_ms,
                "latency_ms": e.latency_ms,
            }
            for e in events
        ]
    ).decode()
    params = {"ingest_time": _naive_utc(ingest_time), "rows": rows}
    return int(conn.execute(_JSON_INSERT, params).scalar_one())


def _event(r: Any) -> UsageEvent:
    return UsageEvent(
        id=r.id,
        source=r.source,
        type=r.type,
        subject=r.subject,
        time=r.time,
        provider=r.provider,
        model=r.model,
        token_type=TokenType(r.token_type),
        tokens=r.tokens,
        status_code=r.status_code,
        route=r.route,
        request_id=r.request_id,
        estimated=r.estimated,
        time_to_first_token_ms=r.time_to_first_token_ms,
        latency_ms=r.latency_ms,
    )


def list_events(
    conn: Connection,
    *,
    subject: str | None = None,
    limit: int = 100,
    offset: int = 0,
    newest_first: bool = False,
) -> list[UsageEvent]:
    order = (t.c.time.desc(), t.c.id.desc()) if newest_first else (t.c.time, t.c.id)
    query = select(t).order_by(*order).limit(limit).offset(offset)
    if subject:
        query = query.where(t.c.subject == subject)
    return [_event(r) for r in conn.execute(query)]


def filter_clause(dimension: str, value: str) -> ColumnElement[bool]:
    """The WHERE clause of one meter-dimension filter (the same for preview, invoices and
    entitlements, so they all select the same usage)."""
    column = DIMENSION_COLUMNS.get(dimension)
    if column is None:
        raise InvalidArgument(f"unknown dimension {dimension!r}")
    if dimension == "status_code":
        try:
            return column == int(value)
        except ValueError:
            raise InvalidArgument(f"status_code filter must be an integer, got {value!r}") from None
    return column == value


def sum_tokens(
    conn: Connection,
    *,
    subjects: Iterable[str],
    start: datetime,
    end: datetime,
    filters: Mapping[str, str],
    billable_only: bool = True,
) -> int:
    """Exact SUM of tokens of llm.tokens events in [start, end) matching the filters.

    Whole UTC hours come from the hourly rollups; only the partial hours at the edges of the
    span are summed from raw events, so the cost does not grow with the events in the span.
    """
    subjects = list(subjects)
    if not subjects or end <= start:
        return 0
    for dimension, value in filters.items():
        filter_clause(dimension, value)  # unknown dimensions and bad values fail even on no data
    return sum(
        tokens
        for dimensions, tokens in dimension_totals(conn, subjects=subjects, start=start, end=end)
        if llm_dimensions_match(dimensions, filters, billable_only=billable_only)
    )


def tokens_by_model(
    conn: Connection,
    *,
    subjects: Sequence[str],
    start: datetime,
    end: datetime,
    filters: Mapping[str, str],
) -> dict[tuple[str, str], int]:
    """``sum_tokens`` per (model, token type), non-zero sums only (what model prices rate)."""
    if not subjects or end <= start:
        return {}
    for dimension, value in filters.items():
        filter_clause(dimension, value)
    result: dict[tuple[str, str], int] = {}
    for dimensions, tokens in dimension_totals(conn, subjects=subjects, start=start, end=end):
        if llm_dimensions_match(dimensions, filters, billable_only=True):
            key = (dimensions["model"], dimensions["type"])
            result[key] = result.get(key, 0) + tokens
    return {key: total for key, total in result.items() if total}


_CACHE = "meterline.usage.dimension_totals"


def dimension_totals(
    conn: Connection, *, subjects: Sequence[str], start: datetime, end: datetime
) -> list[tuple[Mapping[str, str], int]]:
    """Tokens of the subjects' events in [start, end) per set of llm_tokens dimensions.

    Rollups for whole hours, raw events for the partial hours at the edges. Remembered for the
    rest of the transaction (an invoice asks once per rate card for the same window); inserting
    events through ``insert_events`` forgets it.
    """
    # Remembered only inside an explicit transaction (None would match a later checkout of
    # the same pooled connection).
    transaction = conn.get_transaction()
    key = (tuple(sorted(subjects)), start, end)
    cached = conn.info.get(_CACHE)
    if (
        transaction is not None
        and cached is not None
        and cached[0] is transaction
        and (key in cached[1])
    ):
        result: list[tuple[Mapping[str, str], int]] = cached[1][key]
        return result
    totals: dict[str, tuple[Mapping[str, str], int]] = {}

    def add(dimensions: Mapping[str, str], tokens: int) -> None:
        text = rollups.canonical(dimensions)
        previous = totals.get(text)
        totals[text] = (dimensions, tokens + (previous[1] if previous else 0))

    first_hour = ceil_hour(start)
    last_hour = floor_time(end, WindowSize.HOUR)
    edges = [(start, end)] if first_hour >= last_hour else [(start, first_hour), (last_hour, end)]
    for edge_start, edge_end in edges:
        for dimensions, tokens in _raw_totals(conn, list(subjects), edge_start, edge_end):
            add(dimensions, tokens)
    if first_hour < last_hour:
        for dimensions, value, _ in rollups.totals_by_dimensions(
            conn,
            meter=LLM_TOKENS,
            subjects=subjects,
            start=first_hour,
            end=last_hour,
            aggregation=MeterAggregation.SUM,
        ):
            add(dimensions, int(value))
    result = list(totals.values())
    if transaction is None:
        return result
    if cached is None or cached[0] is not transaction:
        # The transaction object is held here, so a later transaction can never share its id.
        remembered: dict[tuple[tuple[str, ...], datetime, datetime], Any] = {}
        cached = (transaction, remembered)
        conn.info[_CACHE] = cached
    cached[1][key] = result
    return result


def forget_totals(conn: Connection) -> None:
    """Drop remembered ``dimension_totals`` (usage changed in this transaction)."""
    conn.info.pop(_CACHE, None)


def segment_sums(
    conn: Connection,
    *,
    subjects: Sequence[str],
    segments: Sequence[tuple[datetime, datetime]],
    filters: Mapping[str, str],
) -> list[int]:
    """``sum_tokens`` of each contiguous ``[start, end)`` segment, in three queries at most.

    Hours wholly inside one segment come from rollups (one query, grouped by segment and
    dimensions); hours cut by a segment boundary come from raw events (one query).
    """
    if not segments:
        return []
    subjects = list(subjects)
    if not subjects:
        return [0] * len(segments)
    for dimension, value in filters.items():
        filter_clause(dimension, value)
    bounds = [segments[0][0], *(end for _, end in segments)]
    cut_hours = sorted(
        {floor_time(b, WindowSize.HOUR) for b in bounds if b != floor_time(b, WindowSize.HOUR)}
    )
    sums = [0] * len(segments)

    def segment_of(column: Any) -> Any:
        if len(segments) == 1:
            return literal(0)
        return case(
            *((column < end, i) for i, (_, end) in enumerate(segments[:-1])),
            else_=len(segments) - 1,
        )

    # Raw events of the cut hours, clipped to the whole span.
    if cut_hours:
        windows = [
            and_(t.c.time >= max(h, bounds[0]), t.c.time < min(h + timedelta(hours=1), bounds[-1]))
            for h in cut_hours
        ]
        columns = (t.c.model, t.c.provider, t.c.route, t.c.status_code, t.c.token_type)
        query = (
            select(segment_of(t.c.time).label("segment"), *columns, func.sum(t.c.tokens))
            .where(t.c.subject.in_(subjects), or_(*windows))
            .group_by(text("1"), *columns)
        )
        for position, model, provider, route, status_code, token_type, total in conn.execute(query):
            dimensions = {
                "model": model,
                "provider": provider,
                "route": route,
                "status_code": str(status_code),
                "type": token_type,
            }
            if llm_dimensions_match(dimensions, filters, billable_only=True):
                sums[int(position)] += int(total)
    # Rollups of the whole hours in between.
    r = s.usage_rollups
    first_hour, last_hour = ceil_hour(bounds[0]), floor_time(bounds[-1], WindowSize.HOUR)
    if first_hour < last_hour:
        segment = segment_of(r.c.bucket).label("segment")
        # PostgreSQL sums numeric (exact at any size). SQLite sums 64-bit integers, exact while
        # every rollup is below 10^18 (rollups.py keeps bigger ones as exact text, which a
        # CAST would clamp): when one is, that query's rows are added up here instead.
        wide = conn.dialect.name == "postgresql"
        where = (
            r.c.meter == LLM_TOKENS,
            r.c.subject.in_(subjects),
            r.c.bucket >= first_hour,
            r.c.bucket < last_hour,
            *((r.c.bucket.not_in(cut_hours),) if cut_hours else ()),
        )
        hours = (
            select(
                segment,
                r.c.dimensions,
                func.sum(cast(r.c.value, Numeric if wide else BigInteger)),
                func.max(func.length(r.c.value)),
            )
            .where(*where)
            .group_by(text("1"), r.c.dimensions)
        )
        rows: Iterable[Any] = list(conn.execute(hours))
        if not wide and any(width > 18 for *_, width in rows):
            rows = conn.execute(
                select(segment, r.c.dimensions, r.c.value, literal(0)).where(*where)
            )
        for position, text_key, value, _ in rows:
            if llm_dimensions_match(
                rollups.parse_dimensions(text_key), filters, billable_only=True
            ):
                sums[int(position)] += int(value)
    return sums


def llm_dimensions_match(
    dimensions: Mapping[str, str], filters: Mapping[str, str], *, billable_only: bool
) -> bool:
    """The rollup twin of ``filter_clause`` plus the billable (2xx) rule of ``sum_tokens``."""
    for dimension, value in filters.items():
        expected = str(int(value)) if dimension == "status_code" else value
        if dimensions.get(dimension, "") != expected:
            return False
    if billable_only and "status_code" not in filters:
        return 200 <= int(dimensions["status_code"]) < 300
    return True


def _raw_totals(
    conn: Connection, subjects: list[str], start: datetime, end: datetime
) -> list[tuple[Mapping[str, str], int]]:
    if end <= start:
        return []
    columns = (t.c.model, t.c.provider, t.c.route, t.c.status_code, t.c.token_type)
    query = (
        select(*columns, func.sum(t.c.tokens))
        .where(t.c.subject.in_(subjects), t.c.time >= start, t.c.time < end)
        .group_by(*columns)
    )
    return [
        (
            {
                "model": model,
                "provider": provider,
                "route": route,
                "status_code": str(status_code),
                "type": token_type,
            },
            int(total),
        )
        for model, provider, route, status_code, token_type, total in conn.execute(query)
    ]
