"""Credit alerts: balance thresholds of a customer fired through notification channels.

An alert names a channel (``controlplane.notifications``, signed webhooks) and thresholds:
``percents`` of the amount of the customer's last funded grant, and absolute ``amounts``. A
threshold fires ``credit.balance_low`` when the live balance is at or below it, once per
crossing: the event's dedupe key holds the last funded grant, so a new grant (a top-up) re-arms
every threshold and nothing else does (only funding raises a balance).
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import Connection

from controlplane.credits import recharge_storage as store
from controlplane.credits import service, storage
from controlplane.credits.types import CreditAlert, CreditBalance, CreditGrant
from controlplane.customers import storage as customers
from controlplane.errors import InvalidArgument, NotFound
from controlplane.notifications import storage as notifications
from controlplane.notifications.invoices import event_payload

BALANCE_LOW_EVENT = "credit.balance_low"
MAX_THRESHOLDS = 20
_KEY = re.compile(r"^[A-Za-z0-9._~-]{1,200}$")


def check_alert(conn: Connection, alert: CreditAlert, *, now: datetime) -> CreditAlert:
    """The alert as stored (thresholds sorted), or InvalidArgument / NotFound."""
    customers.get_customer(conn, alert.customer)
    if not _KEY.match(alert.key):
        raise InvalidArgument(
            f'credit alert key "{alert.key}" may contain only letters, digits and "._~-"'
        )
    try:
        notifications.get_channel(conn, alert.channel)
    except NotFound:
        raise InvalidArgument(f'notification channel "{alert.channel}" does not exist') from None
    if not alert.percents and not alert.amounts:
        raise InvalidArgument("a credit alert needs percents or amounts (or both)")
    if len(alert.percents) + len(alert.amounts) > MAX_THRESHOLDS:
        raise InvalidArgument(f"a credit alert has at most {MAX_THRESHOLDS} thresholds")
    for percent in alert.percents:
        if not percent.is_finite() or not 0 < percent <= 100:
            raise InvalidArgument(f"credit alert percent {percent} must be above 0 and at most 100")
    currency = service.plan_currency(conn, alert.customer, now)
    for amount in alert.amounts:
        if not amount.is_finite() or amount < 0:
            raise InvalidArgument(f"credit alert amount {amount} must not be negative")
        service.check_grid(amount, currency, what="credit alert amount")
    for values, what in ((alert.percents, "percent"), (alert.amounts, "amount")):
        if len(set(values)) != len(values):
            raise InvalidArgument(f"credit alert {what}s must not repeat")
    return CreditAlert(
        customer=alert.customer,
        key=alert.key,
        channel=alert.channel,
        percents=tuple(sorted(alert.percents, reverse=True)),
        amounts=tuple(sorted(alert.amounts, reverse=True)),
    )


def set_alert(conn: Connection, alert: CreditAlert, *, now: datetime) -> CreditAlert:
    """Create or replace an alert (checked first: nothing changes on bad input)."""
    checked = check_alert(conn, alert, now=now)
    return store.put_alert(conn, checked, now=now)


def list_alerts(conn: Connection, *, customer: str) -> list[CreditAlert]:
    customers.get_customer(conn, customer)
    return store.list_alerts(conn, customer)


def delete_alert(conn: Connection, *, customer: str, key: str) -> None:
    customers.get_customer(conn, customer)
    if not store.delete_alert(conn, customer, key):
        raise NotFound(f"customer {customer!r} has no credit alert {key!r}")


def last_funded(conn: Connection, customer: str, at: datetime) -> CreditGrant | None:
    """The grant funded last by ``at`` (latest effective time), voided ones aside."""
    grants = [
        grant
        for grant in storage.list_grants(conn, customer)
        if grant.effective_time <= at and grant.void_time is None
    ]
    if not grants:
        return None
    return max(grants, key=lambda grant: (grant.effective_time, grant.create_time or at))


def evaluate(
    conn: Connection, *, customer: str, now: datetime, balance: CreditBalance | None = None
) -> int:
    """Fire every threshold of the customer's alerts the live balance is at or below and that
    has not fired since the last funding; how many events."""
    alerts = store.list_alerts(conn, customer)
    if not alerts:
        return 0
    found = balance or service.balance(conn, customer=customer, at=now)
    funded = last_funded(conn, customer, now)
    epoch = funded.id if funded is not None else "none"
    created = 0
    for alert in alerts:
        crossed: list[tuple[str, Decimal, Decimal]] = []
        if funded is not None:
            crossed += [
                ("percent", p, funded.amount * p / 100)
                for p in alert.percents
                if found.live * 100 <= p * funded.amount
            ]
        crossed += [("amount", a, a) for a in alert.amounts if found.live <= a]
        for kind, value, level in crossed:
            event_id = str(uuid.uuid4())
            payload = event_payload(
                event_id,
                BALANCE_LOW_EVENT,
                now,
                {
                    "alert": alert.key,
                    "customer": customer,
                    "currency": found.currency,
                    "live": str(found.live),
                    "settled": str(found.settled),
                    "threshold_type": kind,
                    "threshold": str(value),
                    "threshold_amount": str(level),
                    "last_funded_grant": funded.id if funded is not None else None,
                    "last_funded_amount": str(funded.amount) if funded is not None else None,
                },
            )
            created += notifications.insert_channel_event(
                conn,
                rule_key=f"credits/{customer}/{alert.key}"[:200],
                channel=alert.channel,
                dedupe_key=f"credit|{customer}|{alert.key}|{epoch}|{kind}|{value}"[:500],
                type=BALANCE_LOW_EVENT,
                payload=payload,
                event_id=event_id,
                now=now,
            )
    return created
