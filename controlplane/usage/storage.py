"""Storage of usage events: idempotent inserts and meter aggregation."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, func, select
from sqlalchemy.dialects import postgresql, sqlite

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
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(t).on_conflict_do_nothing(index_elements=["id"]).returning(t.c.id)
    accepted = len(conn.execute(statement, rows).all())
    return InsertResult(accepted=accepted, duplicates=len(events) - accepted)


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


def _filter_clause(dimension: str, value: str) -> ColumnElement[bool]:
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
        query = query.where(_filter_clause(dimension, value))
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
        query = query.where(_filter_clause(dimension, value))
    if columns:
        query = query.group_by(*columns).order_by(*columns)
    result = []
    for row in conn.execute(query):
        group = {d: str(v) for d, v in zip(group_by, row[:-1], strict=True)}
        result.append((group, int(row[-1])))
    return result
