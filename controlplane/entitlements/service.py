"""Entitlement use cases: values of a customer's entitlements, grants."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy import Connection, select

from controlplane.budgets import service as budgets
from controlplane.catalog import storage as catalog
from controlplane.catalog.types import EntitlementType, Feature, Plan, RateCard
from controlplane.customers import storage as customers
from controlplane.customers.types import Customer
from controlplane.entitlements import engine
from controlplane.entitlements import storage as grants_storage
from controlplane.entitlements.types import ConsumerAccess, EntitlementValue, Grant
from controlplane.errors import FailedPrecondition, InvalidArgument, MeterlineError, NotFound
from controlplane.storage import schema as s
from controlplane.subscriptions import storage as subscriptions
from controlplane.subscriptions.periods import parse_cadence
from controlplane.subscriptions.types import Subscription

MAX_GRANT_PRIORITY = 1000
log = logging.getLogger(__name__)


def _running(subscription: Subscription, at: datetime) -> bool:
    end = subscription.end_time
    return subscription.start_time <= at and (end is None or at < end)


def _value(
    conn: Connection,
    *,
    customer: Customer,
    subscription: Subscription,
    card: RateCard,
    feature: Feature,
    grants: list[Grant],
    at: datetime,
) -> EntitlementValue:
    entitlement = card.entitlement
    assert entitlement is not None
    value = EntitlementValue(
        customer=customer.key,
        subscription=subscription.id,
        feature=feature.key,
        type=entitlement.type,
        has_access=True,
        meter=feature.meter,
        filters=dict(feature.filters),
        config=entitlement.config,
        limit=entitlement.limit,
        usage_period=entitlement.usage_period,
        soft_limit=entitlement.soft_limit,
        preserve_overage_at_reset=entitlement.preserve_overage_at_reset,
    )
    if entitlement.type is not EntitlementType.METERED:
        return value
    own = [g for g in grants if g.feature == feature.key]
    anchor = subscription.start_time
    line = engine.timeline(entitlement=entitlement, anchor=anchor, grants=own, at=at)
    usage = grants_storage.segment_usage(
        conn,
        meter=feature.meter,
        subjects=customer.subjects,
        segments=line.segments(),
        period_starts=line.period_starts,
        filters=feature.filters,
    )
    balance = engine.evaluate(
        entitlement=entitlement, anchor=anchor, grants=own, at=at, line=line, usage=usage
    )
    return replace(value, balance=balance, has_access=engine.metered_access(entitlement, balance))


@dataclass(frozen=True)
class _Catalog:
    """Plans and features read once for many customers."""

    plans: dict[tuple[str, int], Plan]
    features: dict[str, Feature]

    @classmethod
    def load(cls, conn: Connection) -> _Catalog:
        return cls(
            plans={(p.key, p.version): p for p in catalog.list_plans(conn)},
            features={f.key: f for f in catalog.list_features(conn)},
        )


def customer_values(conn: Connection, *, customer: str, at: datetime) -> list[EntitlementValue]:
    """Every entitlement of the customer's subscriptions running at ``at``, by feature."""
    found = customers.get_customer(conn, customer)
    return _customer_values(
        conn,
        customer=found,
        subs=subscriptions.list_subscriptions(conn, found.key),
        at=at,
        known=_Catalog.load(conn),
    )


def _customer_values(
    conn: Connection,
    *,
    customer: Customer,
    subs: list[Subscription],
    at: datetime,
    known: _Catalog,
) -> list[EntitlementValue]:
    found = customer
    grants = grants_storage.list_grants(conn, customers=[found.key])
    features = known.features
    values: list[EntitlementValue] = []
    seen: set[str] = set()
    for subscription in subs:
        if not _running(subscription, at):
            continue
        plan = known.plans[(subscription.plan_key, subscription.plan_version)]
        for card in plan.rate_cards:
            if card.entitlement is None or card.feature is None or card.feature in seen:
                continue
            # Grants belong to the customer and feature: with two running subscriptions
            # selling the same feature, the earlier one's entitlement is the one that counts.
            seen.add(card.feature)
            values.append(
                _value(
                    conn,
                    customer=found,
                    subscription=subscription,
                    card=card,
                    feature=features[card.feature],
                    grants=grants,
                    at=at,
                )
            )
    return sorted(values, key=lambda v: v.feature)


def subject_customer(conn: Connection, subject: str) -> str:
    """The key of the customer that pays for ``subject``."""
    t = s.customer_subjects
    row = conn.execute(select(t.c.customer).where(t.c.subject == subject)).first()
    if row is None:
        raise NotFound(f"subject {subject!r} belongs to no customer")
    return str(row.customer)


def entitlement_value(
    conn: Connection, *, customer: str, feature: str, at: datetime
) -> EntitlementValue:
    for value in customer_values(conn, customer=customer, at=at):
        if value.feature == feature:
            return value
    catalog.get_feature(conn, feature)
    raise NotFound(f"customer {customer!r} has no entitlement to feature {feature!r} now")


def _metered_somewhere(conn: Connection, customer: str, feature: str) -> bool:
    for subscription in subscriptions.list_subscriptions(conn, customer):
        plan = catalog.get_plan(conn, subscription.plan_key, subscription.plan_version)
        for card in plan.rate_cards:
            entitlement = card.entitlement
            if (
                card.feature == feature
                and entitlement is not None
                and entitlement.type is EntitlementType.METERED
            ):
                return True
    return False


def grant_problems(grant: Grant) -> list[str]:
    problems: list[str] = []
    if grant.amount <= 0:
        problems.append(f"grant.amount must be a positive number of units, got {grant.amount}")
    if not 0 <= grant.priority <= MAX_GRANT_PRIORITY:
        problems.append(
            f"grant.priority must be between 0 and {MAX_GRANT_PRIORITY}, got {grant.priority}"
        )
    if grant.expiration_time is not None and grant.expiration_time <= grant.effective_time:
        problems.append("grant.expiration_time must be after grant.effective_time")
    if grant.recurrence_interval is not None:
        try:
            parse_cadence(grant.recurrence_interval)
        except InvalidArgument:
            problems.append(
                f"grant.recurrence_interval {grant.recurrence_interval!r} is not a positive "
                "ISO 8601 duration (like P1M, P1D)"
            )
    return problems


def create_grant(conn: Connection, grant: Grant, *, now: datetime) -> Grant:
    """Store a grant for a customer's metered entitlement; nothing if it is invalid."""
    problems = grant_problems(grant)
    if problems:
        raise InvalidArgument("; ".join(problems))
    customers.get_customer(conn, grant.customer)
    catalog.get_feature(conn, grant.feature)
    if not _metered_somewhere(conn, grant.customer, grant.feature):
        raise FailedPrecondition(
            f"customer {grant.customer!r} has no subscription with a metered entitlement to "
            f"feature {grant.feature!r}: a grant would have nothing to add to"
        )
    return grants_storage.insert_grant(conn, grant, now=now)


def list_grants(
    conn: Connection, *, customer: str, feature: str | None, include_voided: bool
) -> list[Grant]:
    customers.get_customer(conn, customer)
    return grants_storage.list_grants(
        conn, customers=[customer], feature=feature, include_voided=include_voided
    )


def void_grant(conn: Connection, *, customer: str, id: str, now: datetime) -> Grant:
    grant = grants_storage.get_grant(conn, id)
    if grant.customer != customer:
        raise NotFound(f"grant {id!r} of customer {customer!r} not found")
    return grants_storage.void_grant(conn, id, now=now)


def enforcement_state(conn: Connection, *, at: datetime) -> list[ConsumerAccess]:
    """Per subject of every customer with a subscription: what the data planes enforce.

    Customers without any subscription are left out (not restricted); a customer whose
    subscriptions are all ended or not started is denied.
    """
    found: list[ConsumerAccess] = []
    known = _Catalog.load(conn)
    for customer in customers.list_customers(conn):
        subs = subscriptions.list_subscriptions(conn, customer.key)
        if not subs:
            continue
        running = any(_running(sub, at) for sub in subs)
        metered: tuple[EntitlementValue, ...] = ()
        if running:
            metered = tuple(
                value
                for value in _customer_values(
                    conn, customer=customer, subs=subs, at=at, known=known
                )
                if value.type is EntitlementType.METERED
            )
        try:
            currency, prices = budgets.token_prices(
                conn, customer=customer.key, subjects=list(customer.subjects), at=at
            )
            states = tuple(budgets.statuses(conn, customer=customer.key, at=at)) if running else ()
        except MeterlineError:
            # One customer's pricing must not hold up every balance: its data-plane prices
            # and budgets are left out (not enforced) until it is fixed.
            log.exception("pricing customer %r for the data planes failed", customer.key)
            currency, prices, states = "", (), ()
        found += [
            ConsumerAccess(
                subject=subject,
                customer=customer.key,
                has_access=running,
                metered=metered,
                currency=currency,
                prices=prices,
                budgets=states,
            )
            for subject in customer.subjects
        ]
    return sorted(found, key=lambda access: access.subject)
