"""Storage of usage events: idempotent inserts and meter aggregation."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import ColumnElement, Connection, func, select, text
from sqlalchemy.dialects import sqlite

from controlplane.errors import InvalidArgument
from controlplane.storage import schema as s
from controlplane.usage.types import TokenType, UsageEvent

t = s.usage_events

# Meter dimensions -> columns. "type" is the token type.
DIMENSION_COLUMNS: Mapping[str, Any] = {
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
    unique = list({e.id: e for e in events}.values())
    if conn.dialect.name == "postgresql":
        accepted = _insert_json(conn, unique, ingest_time=ingest_time)
        return InsertResult(accepted=accepted, duplicates=len(events) - accepted)
    rows = [
        {
            "id": e.id,
            "source": e.source,
            "type": e.type,
            "subject": e.subject,
            "time": e.time,
            "provider": e.provider,
            "model": e.model,
            "token_type": e.token_type.value,
            "tokens": e.tokens,
            "status_code": e.status_code,
            "route": e.route,
            "request_id": e.request_id,
            "estimated": e.estimated,
            "ingest_time": ingest_time,
        }
        for e in unique
    ]
    statement = sqlite.insert(t).on_conflict_do_nothing(index_elements=["id"]).returning(t.c.id)
    accepted = len(conn.execute(statement, rows).all())
    return InsertResult(accepted=accepted, duplicates=len(events) - accepted)


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
            status_code, route, request_id, estimated, ingest_time
        )
        SELECT
            u.id, u.source, u.type, u.subject, u.time, u.provider, u.model, u.token_type,
            u.tokens, u.status_code, u.route, u.request_id, u.estimated,
            CAST(:ingest_time AS timestamp)
        FROM json_to_recordset(CAST(:rows AS json)) AS u(
            id text, source text, type text, subject text, time timestamp, provider text,
            model text, token_type text, tokens bigint, status_code integer, route text,
            request_id text, estimated boolean
        )
        ON CONFLICT (id) DO NOTHING
        RETURNING 1
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
    )


def list_events(
    conn: Connection, *, subject: str | None = None, limit: int = 100, offset: int = 0
) -> list[UsageEvent]:
    query = select(t).order_by(t.c.time, t.c.id).limit(limit).offset(offset)
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
            return column == int(value)  # type: ignore[no-any-return]
        except ValueError:
            raise InvalidArgument(f"status_code filter must be an integer, got {value!r}") from None
    return column == value  # type: ignore[no-any-return]


def sum_tokens(
    conn: Connection,
    *,
    subjects: Iterable[str],
    start: datetime,
    end: datetime,
    filters: Mapping[str, str],
    billable_only: bool = True,
) -> int:
    """Exact SUM of tokens of llm.tokens events in [start, end) matching the filters."""
    subjects = list(subjects)
    if not subjects or end <= start:
        return 0
    query = select(func.coalesce(func.sum(t.c.tokens), 0)).where(
        t.c.subject.in_(subjects), t.c.time >= start, t.c.time < end
    )
    if billable_only and "status_code" not in filters:
        # Failed upstream requests are recorded but not billed.
        query = query.where(t.c.status_code >= 200, t.c.status_code < 300)
    for dimension, value in filters.items():
        query = query.where(filter_clause(dimension, value))
    return int(conn.execute(query).scalar_one())


def group_tokens(
    conn: Connection,
    *,
    subjects: Sequence[str],
    start: datetime | None,
    end: datetime | None,
    filters: Mapping[str, str],
    group_by: Sequence[str],
) -> list[tuple[dict[str, str], int]]:
    """SUM of tokens grouped by dimensions (for usage queries)."""
    columns = []
    for dimension in group_by:
        if dimension not in DIMENSION_COLUMNS:
            raise InvalidArgument(f"unknown group_by dimension {dimension!r}")
        columns.append(DIMENSION_COLUMNS[dimension])
    query = select(*columns, func.coalesce(func.sum(t.c.tokens), 0))
    if subjects:
        query = query.where(t.c.subject.in_(subjects))
    if start is not None:
        query = query.where(t.c.time >= start)
    if end is not None:
        query = query.where(t.c.time < end)
    for dimension, value in filters.items():
        query = query.where(filter_clause(dimension, value))
    if columns:
        query = query.group_by(*columns).order_by(*columns)
    result = []
    for row in conn.execute(query):
        group = {d: str(v) for d, v in zip(group_by, row[:-1], strict=True)}
        result.append((group, int(row[-1])))
    return result
