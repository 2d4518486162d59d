"""Storage of grants, and usage per segment of an entitlement's timeline."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from decimal import ROUND_CEILING
from typing import Any

from sqlalchemy import Connection, Row, insert, select, update

from controlplane.entitlements.types import Grant
from controlplane.errors import FailedPrecondition, NotFound
from controlplane.storage import schema as s
from controlplane.usage.meters import LLM_TOKENS
from controlplane.usage.query import quantity
from controlplane.usage.storage import segment_sums

g = s.grants
u = s.usage_events


def _grant(r: Row[Any]) -> Grant:
    return Grant(
        id=r.id,
        customer=r.customer,
        feature=r.feature,
        amount=r.amount,
        priority=r.priority,
        effective_time=r.effective_time,
        expiration_time=r.expiration_time,
        recurrence_interval=r.recurrence_interval,
        void_time=r.void_time,
        create_time=r.create_time,
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
    meter: str,
    subjects: Sequence[str],
    segments: Sequence[tuple[datetime, datetime]],
    period_starts: Collection[datetime],
    filters: Mapping[str, str],
) -> list[int]:
    """The usage of each contiguous ``[start, end)`` segment, in whole units.

    ``llm_tokens``: the SUM of tokens, with the same selection as invoicing
    (``usage.storage.sum_tokens``): the subjects' events through the feature's filters,
    billable (2xx) only unless a filter names status_code.

    An operator meter (``usage.query.quantity``, quantities possibly fractional): the usage up
    to a segment's end is the meter's aggregate from the start of its usage period (the
    segment's own start if it is one of ``period_starts``, else the previous segment's period),
    rounded up to a whole unit (a started unit counts); a segment's usage is what that adds.
    So SUM and COUNT burn their sum, MAX and UNIQUE_COUNT the period's peak or distinct count,
    and LATEST its reading. Usage never decreases within a period: a lower later value (a
    LATEST reading, negative SUM values) gives no units back.
    """
    if meter == LLM_TOKENS:
        # Rollups for whole hours, raw events for hours a segment boundary cuts.
        return segment_sums(conn, subjects=subjects, segments=segments, filters=filters)
    usage: list[int] = []
    period_start: datetime | None = None
    counted = 0
    for start, end in segments:
        if period_start is None or start in period_starts:
            period_start, counted = start, 0
        so_far = quantity(
            conn, meter=meter, subjects=subjects, filters=filters, start=period_start, end=end
        )
        whole = max(counted, int(so_far.to_integral_value(rounding=ROUND_CEILING)))
        usage.append(whole - counted)
        counted = whole
    return usage
