"""Credit top-ups: a one-off invoice that buys credits, granted when it is paid.

A top-up is an ordinary issued invoice (numbered, synced to Stripe by the existing sync, moved
by Stripe's webhooks) of kind ``credit_top_up`` with one line. When it becomes paid, one
``invoice``-funded grant of its total is made, keyed by the invoice id, so a repeated webhook
grants once; a failed payment grants nothing. This module only writes the grant; creating the
invoice is ``controlplane.credits.service.create_top_up``.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Connection

from controlplane.credits import recharge_storage, storage
from controlplane.credits.types import CreditGrant, Funding
from controlplane.invoicing.storage import InvoiceRow
from controlplane.notifications import storage as notifications
from controlplane.notifications.invoices import event_payload

TOP_UP_FAILED_EVENT = "credit.top_up_failed"

# Top-up credits are spent after promotional ones of the default priority (0): a customer's
# bought money lasts longest.
TOP_UP_PRIORITY = 10


def top_up_key(invoice_id: str) -> str:
    return f"top-up-{invoice_id}"


def grant_paid_top_up(conn: Connection, row: InvoiceRow, *, now: datetime) -> CreditGrant:
    """The grant a paid top-up invoice buys (made once: the key is the invoice's)."""
    key = top_up_key(row.id)
    found = storage.find_by_key(conn, row.customer, key)
    if found is not None:
        return found
    assert row.total is not None
    made = storage.insert_grant(
        conn,
        CreditGrant(
            id="",
            customer=row.customer,
            amount=row.total,
            currency=row.currency,
            funding=Funding.INVOICE,
            priority=TOP_UP_PRIORITY,
            effective_time=now,
            expire_time=None,
            features=(),
            key=key,
            description=f"top-up invoice {row.number}",
        ),
        now=now,
    )
    assert made is not None
    return made


def top_up_failed(conn: Connection, row: InvoiceRow, *, now: datetime) -> int:
    """Tell the customer's credit alerts that a top-up's payment failed (nothing is granted);
    how many events. Once per alert and invoice."""
    created = 0
    for alert in recharge_storage.list_alerts(conn, row.customer):
        event_id = str(uuid.uuid4())
        payload = event_payload(
            event_id,
            TOP_UP_FAILED_EVENT,
            now,
            {
                "alert": alert.key,
                "customer": row.customer,
                "invoice": row.id,
                "number": row.number,
                "currency": row.currency,
                "amount": str(row.total),
                "auto_recharge": recharge_storage.is_recharge(conn, row.id),
            },
        )
        created += notifications.insert_channel_event(
            conn,
            rule_key=f"credits/{row.customer}/{alert.key}"[:200],
            channel=alert.channel,
            dedupe_key=f"credit-top-up-failed|{row.customer}|{alert.key}|{row.id}"[:500],
            type=TOP_UP_FAILED_EVENT,
            payload=payload,
            event_id=event_id,
            now=now,
        )
    return created
