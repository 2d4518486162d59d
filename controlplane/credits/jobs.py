"""The credit job: auto-recharge, credit alerts and spending samples, per customer.

Run after usage is stored (for the customers of the batch's subjects) and periodically (every
customer with grants, a recharge rule or alerts). One write transaction per customer, under its
row lock: concurrent ingestion on one or many replicas issues a customer's top-up once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import select

from controlplane.credits import alerts, outlook, recharge, service
from controlplane.credits import recharge_storage as store
from controlplane.credits.types import RechargeOutcome
from controlplane.errors import MeterlineError
from controlplane.invoicing import storage as invoices
from controlplane.storage import schema as s
from controlplane.storage.db import Database

log = logging.getLogger(__name__)


def watched_customers(db: Database, *, subjects: Iterable[str] | None = None) -> list[str]:
    """Customers with a recharge rule or credit alerts (of ``subjects`` when given), and with
    ``subjects`` None also every customer holding grants (their burn rate is sampled)."""
    with db.begin() as conn:
        keys = set(store.list_rule_customers(conn)) | set(store.list_alert_customers(conn))
        if subjects is None:
            keys |= set(conn.execute(select(s.credit_grants.c.customer).distinct()).scalars())
            return sorted(keys)
        wanted = set(subjects)
        if not keys or not wanted:
            return []
        cs = s.customer_subjects
        owners = conn.execute(
            select(cs.c.customer).distinct().where(cs.c.subject.in_(sorted(wanted)))
        ).scalars()
        return sorted(keys & set(owners))


def run_customer(db: Database, *, customer: str, now: datetime) -> RechargeOutcome:
    """Recharge, alerts and a spending sample for one customer, in one write transaction."""
    with db.begin_write() as conn:
        invoices.lock_customer(conn, customer)
        # A top-up grants nothing until paid: the balance is the same before and after it.
        balance = service.balance(conn, customer=customer, at=now)
        outcome = recharge.evaluate(conn, customer=customer, now=now, balance=balance)
        alerts.evaluate(conn, customer=customer, now=now, balance=balance)
        outlook.record_sample(conn, customer=customer, now=now, balance=balance)
    return outcome


def run(
    db: Database, *, now: datetime, subjects: Iterable[str] | None = None
) -> list[RechargeOutcome]:
    """``run_customer`` for every watched customer; the top-ups issued (failures are logged)."""
    issued: list[RechargeOutcome] = []
    for customer in watched_customers(db, subjects=subjects):
        try:
            outcome = run_customer(db, customer=customer, now=now)
        except MeterlineError as exc:
            log.warning("credit job: customer %s: %s", customer, exc)
            continue
        if outcome.invoice_id:
            log.info(
                "auto-recharge: customer %s, top-up %s of %s",
                customer,
                outcome.invoice_id,
                outcome.amount,
            )
            issued.append(outcome)
    return issued


def run_alerts(db: Database, *, now: datetime) -> int:
    """Credit alerts only, for every customer with alerts (the notification job's share); how
    many events."""
    created = 0
    with db.begin() as conn:
        keys = store.list_alert_customers(conn)
    for customer in keys:
        try:
            with db.begin_write() as conn:
                created += alerts.evaluate(conn, customer=customer, now=now)
        except MeterlineError as exc:
            log.warning("credit alerts: customer %s: %s", customer, exc)
    return created
