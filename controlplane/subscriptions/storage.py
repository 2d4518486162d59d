"""Storage of subscriptions."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, delete, insert, select, update

from controlplane.errors import FailedPrecondition, InvalidArgument, NotFound
from controlplane.storage import schema as s
from controlplane.subscriptions.periods import billing_period
from controlplane.subscriptions.types import Subscription


def _subscription(r: Row[Any]) -> Subscription:
    return Subscription(
        id=r.id,
        customer=r.customer,
        plan_key=r.plan_key,
        plan_version=r.plan_version,
        start_time=r.start_time,
        end_time=r.end_time,
        create_time=r.create_time,
        billing_anchor=r.billing_anchor,
    )


def list_subscriptions(conn: Connection, customer: str | None = None) -> list[Subscription]:
    t = s.subscriptions
    query = select(t).order_by(t.c.start_time, t.c.id)
    if customer is not None:
        query = query.where(t.c.customer == customer)
    return [_subscription(r) for r in conn.execute(query)]


def get_subscription(conn: Connection, id: str) -> Subscription:
    row = conn.execute(select(s.subscriptions).where(s.subscriptions.c.id == id)).first()
    if row is None:
        raise NotFound(f"subscription {id!r} not found")
    return _subscription(row)


def delete_unstarted_subscription(conn: Connection, id: str, *, now: datetime) -> None:
    """Delete a subscription that starts after ``now``; one that has started may have been
    billed and is only ever cancelled."""
    sub = get_subscription(conn, id)
    if sub.start_time <= now:
        raise FailedPrecondition(
            f"subscription {id!r} started at {sub.start_time.isoformat()}: only one that has not"
            " started can be deleted; cancel it instead (meterline subscriptions cancel)"
        )
    conn.execute(delete(s.subscriptions).where(s.subscriptions.c.id == id))


def create_subscription(
    conn: Connection,
    *,
    customer: str,
    plan_key: str,
    plan_version: int,
    start_time: datetime,
    now: datetime,
    billing_anchor: datetime | None = None,
) -> Subscription:
    """A new subscription; a customer has at most one running subscription per plan.

    ``start_time`` may be in the future: nothing is billed before it.
    """
    for existing in list_subscriptions(conn, customer):
        if existing.plan_key == plan_key and (
            existing.end_time is None or existing.end_time > start_time
        ):
            raise FailedPrecondition(
                f"customer {customer!r} already has a running subscription to plan {plan_key!r}"
                f" ({existing.id})"
            )
    id = str(uuid.uuid4())
    conn.execute(
        insert(s.subscriptions).values(
            id=id,
            customer=customer,
            plan_key=plan_key,
            plan_version=plan_version,
            start_time=start_time,
            end_time=None,
            create_time=now,
            billing_anchor=billing_anchor,
        )
    )
    return get_subscription(conn, id)


def cancel_subscription(conn: Connection, id: str, *, end_time: datetime) -> Subscription:
    """End a running subscription at ``end_time`` (usage from then on is not billed)."""
    subscription = get_subscription(conn, id)
    if subscription.end_time is not None:
        raise FailedPrecondition(f"subscription {id!r} is already canceled")
    if end_time < subscription.start_time:
        raise InvalidArgument("end_time is before the subscription's start_time")
    t = s.subscriptions
    conn.execute(update(t).where(t.c.id == id).values(end_time=end_time))
    return get_subscription(conn, id)


def cancel_at_period_end(conn: Connection, id: str, *, cadence: str, now: datetime) -> Subscription:
    """End a subscription when its billing period running at ``now`` ends.

    A subscription that has not started yet ends at the end of its first period.
    """
    subscription = get_subscription(conn, id)
    _, end = billing_period(anchor=subscription.anchor, cadence=cadence, at=now)
    return cancel_subscription(conn, id, end_time=end)


def change_plan(
    conn: Connection,
    id: str,
    *,
    plan_key: str,
    plan_version: int,
    at: datetime,
    now: datetime,
) -> Subscription:
    """End subscription ``id`` at ``at`` and start one on the new plan there, same anchor.

    Both parts fall in the same billing periods, so they are invoiced together; each part's
    usage lines cover its own time, and flat fees are prorated (see invoicing.lifecycle).
    """
    old = get_subscription(conn, id)
    if old.end_time is not None:
        raise FailedPrecondition(f"subscription {id!r} is canceled; subscribe anew instead")
    if at < old.start_time:
        raise InvalidArgument("change_time is before the subscription's start_time")
    if (old.plan_key, old.plan_version) == (plan_key, plan_version):
        raise InvalidArgument(
            f"subscription {id!r} is already on plans/{plan_key}/versions/{plan_version}"
        )
    cancel_subscription(conn, id, end_time=at)
    return create_subscription(
        conn,
        customer=old.customer,
        plan_key=plan_key,
        plan_version=plan_version,
        start_time=at,
        now=now,
        billing_anchor=old.anchor,
    )
