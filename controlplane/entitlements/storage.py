"""Storage of grants, and usage sums per segment of an entitlement's timeline."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime

from sqlalchemy import Connection, case, func, insert, literal, select, update

from controlplane.entitlements.types import Grant
from controlplane.errors import FailedPrecondition, NotFound
from controlplane.storage import schema as s
from controlplane.usage.storage import filter_clause

g = s.grants
u = s.usage_events


def _grant(r: object) -> Grant:
    return Grant(
        id=r.id,  # type: ignore[attr-defined]
        customer=r.customer,  # type: ignore[attr-defined]
        feature=r.feature,  # type: ignore[attr-defined]
        amount=r.amount,  # type: ignore[attr-defined]
        priority=r.priority,  # type: ignore[attr-defined]
        effective_time=r.effective_time,  # type: ignore[attr-defined]
        expiration_time=r.expiration_time,  # type: ignore[attr-defined]
        recurrence_interval=r.recurrence_interval,  # type: ignore[attr-defined]
        void_time=r.void_time,  # type: ignore[attr-defined]
        create_time=r.create_time,  # type: ignore[attr-defined]
    )


def insert_grant(conn: Connection, grant: Grant, *, now: datetime) -> Grant:
    """Store a checked grant under a new id."""
    id = str(uuid.uuid4())
    conn.execute(
        insert(g).values(
            id=id,
            customer=grant.customer,
            feature=grant.feature,
            amount=grant.amount,
            priority=grant.priority,
            effective_time=grant.effective_time,
            expiration_time=grant.expiration_time,
            recurrence_interval=grant.recurrence_interval,
            void_time=None,
            create_time=now,
        )
    )
    return get_grant(conn, id)


def get_grant(conn: Connection, id: str) -> Grant:
    row = conn.execute(select(g).where(g.c.id == id)).first()
    if row is None:
        raise NotFound(f"grant {id!r} not found")
    return _grant(row)


def list_grants(
    conn: Connection,
    *,
    customers: Sequence[str] | None = None,
    feature: str | None = None,
    include_voided: bool = True,
) -> list[Grant]:
    query = select(g).order_by(g.c.effective_time, g.c.id)
    if customers is not None:
        query = query.where(g.c.customer.in_(list(customers)))
    if feature is not None:
        query = query.where(g.c.feature == feature)
    if not include_voided:
        query = query.where(g.c.void_time.is_(None))
    return [_grant(r) for r in conn.execute(query)]


def void_grant(conn: Connection, id: str, *, now: datetime) -> Grant:
    """Stop a grant from now on; what it covered before stays covered."""
    grant = get_grant(conn, id)
    if grant.void_time is not None:
        raise FailedPrecondition(f"grant {id!r} is already void")
    conn.execute(update(g).where(g.c.id == id).values(void_time=now))
    return get_grant(conn, id)


def segment_usage(
    conn: Connection,
    *,
    subjects: Sequence[str],
    segments: Sequence[tuple[datetime, datetime]],
    filters: Mapping[str, str],
) -> list[int]:
    """SUM of tokens of each contiguous ``[start, end)`` segment, in one query.

    Same selection as invoicing (``usage.storage.sum_tokens``): the subjects' events
    through the feature's filters, billable (2xx) only unless a filter names status_code.
    """
    if not segments:
        return []
    if not subjects:
        return [0] * len(segments)
    first, last = segments[0][0], segments[-1][1]
    index = (
        case(
            *((u.c.time < end, i) for i, (_, end) in enumerate(segments[:-1])),
            else_=len(segments) - 1,
        )
        if len(segments) > 1
        else literal(0)
    )
    rows = select(index.label("segment"), u.c.tokens.label("tokens")).where(
        u.c.subject.in_(list(subjects)), u.c.time >= first, u.c.time < last
    )
    if "status_code" not in filters:
        rows = rows.where(u.c.status_code >= 200, u.c.status_code < 300)
    for dimension, value in filters.items():
        rows = rows.where(filter_clause(dimension, value))
    inner = rows.subquery()
    query = select(inner.c.segment, func.sum(inner.c.tokens)).group_by(inner.c.segment)
    sums = [0] * len(segments)
    for position, total in conn.execute(query):
        sums[int(position)] += int(total)
    return sums
