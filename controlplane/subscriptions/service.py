"""Subscription use cases over time: plan changes, version migrations, declared subscriptions.

Shared by the admin API and the declarative flow so both refuse the same things the same way.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection

from controlplane.catalog import storage as catalog
from controlplane.catalog.types import Plan, PlanState
from controlplane.customers import storage as customers
from controlplane.declarative.types import SubscriptionSpec
from controlplane.errors import FailedPrecondition, InvalidArgument
from controlplane.invoicing import lifecycle
from controlplane.subscriptions import storage as subscriptions
from controlplane.subscriptions.types import Subscription


def _name(plan: Plan) -> str:
    return f"plans/{plan.key}/versions/{plan.version}"


def subscribable_plan(conn: Connection, plan_key: str, version: int | None) -> Plan:
    """The plan a subscription may start on or change to: the active version, or the one named,
    which must be active (published, not archived or a draft)."""
    plan = (
        catalog.active_plan(conn, plan_key)
        if version is None
        else catalog.get_plan(conn, plan_key, version)
    )
    if plan.state is not PlanState.ACTIVE:
        raise InvalidArgument(f"{_name(plan)} is {plan.state.value}, not active")
    return plan


def subscribe(
    conn: Connection,
    *,
    customer: str,
    plan_key: str,
    version: int | None,
    start: datetime,
    anchor: datetime | None,
    now: datetime,
) -> Subscription:
    """Start ``customer`` on a plan at ``start``; periods repeat from ``anchor`` (default: the
    plan's anchor for ``start``), which must not be after ``start``."""
    if anchor is not None and anchor > start:
        raise InvalidArgument(
            "subscription.billing_anchor_time must not be after start_time: periods repeat"
            " from the anchor, so give one a period earlier"
        )
    customers.get_customer(conn, customer)
    plan = subscribable_plan(conn, plan_key, version)
    return subscriptions.create_subscription(
        conn,
        customer=customer,
        plan_key=plan.key,
        plan_version=plan.version,
        start_time=start,
        now=now,
        billing_anchor=anchor or catalog.subscription_anchor(plan, start),
    )


def change_to(
    conn: Connection, id: str, *, plan: Plan, at: datetime, now: datetime
) -> Subscription:
    """Move subscription ``id`` to a published ``plan`` version at ``at`` (same anchor).

    The old version's lines end at ``at`` and the new one's start there (flat fees and
    minimum commitments prorated). Currency and cadence stay; issued periods stay untouched.
    """
    if plan.state is not PlanState.ACTIVE:
        raise FailedPrecondition(
            f"{_name(plan)} is {plan.state.value}, not published; publish it first"
        )
    old = subscriptions.get_subscription(conn, id)
    old_plan = catalog.get_plan(conn, old.plan_key, old.plan_version)
    if (old_plan.currency, old_plan.billing_cadence) != (plan.currency, plan.billing_cadence):
        raise InvalidArgument(
            "a plan change keeps the currency and billing cadence"
            f" ({old_plan.currency}, {old_plan.billing_cadence}); cancel and subscribe"
            " anew instead"
        )
    lifecycle.check_change_time(conn, customer=old.customer, at=at)
    return subscriptions.change_plan(
        conn, id, plan_key=plan.key, plan_version=plan.version, at=at, now=now
    )


def migrate(
    conn: Connection, id: str, *, version: int | None, at: datetime, now: datetime
) -> Subscription:
    """Move a subscription to another version of its own plan (default: the published one)."""
    sub = subscriptions.get_subscription(conn, id)
    target = (
        catalog.active_plan(conn, sub.plan_key)
        if version is None
        else catalog.get_plan(conn, sub.plan_key, version)
    )
    if target.version == sub.plan_version:
        raise FailedPrecondition(
            f"subscription {id!r} is already on {_name(target)}; nothing to migrate"
        )
    return change_to(conn, id, plan=target, at=at, now=now)


def _find(subs: list[Subscription], plan: str, start: datetime) -> Subscription | None:
    return next((s for s in subs if s.plan_key == plan and s.start_time == start), None)


def apply_subscription(conn: Connection, spec: SubscriptionSpec, *, now: datetime) -> list[str]:
    """Bring a declared subscription about: create it, make its plan changes, end it.

    Idempotent: a subscription with an explicit ``start`` is found again by (plan, start), one
    with ``start: now`` by running on its plan. Changes already made are recognised by their
    time; the file adds changes and ends, it never rewrites what already happened.
    """
    done: list[str] = []
    subs = subscriptions.list_subscriptions(conn, spec.customer)
    current = _find(subs, spec.plan, spec.start) if spec.start is not None else None
    if current is None:
        first_change = spec.changes[0][0] if spec.changes else None
        current = next(
            (
                s
                for s in subs
                if s.plan_key == spec.plan
                and (s.end_time is None or s.end_time > now or s.end_time == first_change)
            ),
            None,
        )
    if current is None:
        plan = catalog.active_plan(conn, spec.plan)
        start = spec.start or now
        if spec.billing_anchor is not None and spec.billing_anchor > start:
            raise InvalidArgument("billing_anchor must not be after the subscription's start")
        current = subscriptions.create_subscription(
            conn,
            customer=spec.customer,
            plan_key=plan.key,
            plan_version=plan.version,
            start_time=start,
            now=now,
            billing_anchor=spec.billing_anchor or catalog.subscription_anchor(plan, start),
        )
        done.append(
            f"created subscription {current.id} ({spec.customer} on {plan.key} v{plan.version})"
        )
    for at, target in spec.changes:
        if current.end_time is None:
            plan = catalog.active_plan(conn, target)
            current = change_to(conn, current.id, plan=plan, at=at, now=now)
            done.append(
                f"changed subscription of {spec.customer} to {plan.key} v{plan.version}"
                f" at {at.isoformat()} ({current.id})"
            )
            continue
        following = _find(subscriptions.list_subscriptions(conn, spec.customer), target, at)
        if current.end_time != at or following is None:
            raise FailedPrecondition(
                f"subscription {current.id} of {spec.customer} ended at"
                f" {current.end_time.isoformat()}, not by a change to {target!r} at"
                f" {at.isoformat()}; a file cannot rewrite what already happened"
            )
        current = following
    if spec.end is not None and current.end_time is None:
        if spec.end == "period_end":
            plan = catalog.get_plan(conn, current.plan_key, current.plan_version)
            current = subscriptions.cancel_at_period_end(
                conn, current.id, cadence=plan.billing_cadence, now=now
            )
        else:
            assert isinstance(spec.end, datetime)
            current = subscriptions.cancel_subscription(conn, current.id, end_time=spec.end)
        assert current.end_time is not None
        done.append(
            f"subscription {current.id} of {spec.customer} ends {current.end_time.isoformat()}"
        )
    return done
