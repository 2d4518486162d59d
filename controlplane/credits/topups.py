"""Credit top-ups: a one-off invoice that buys credits, granted when it is paid.

A top-up is an ordinary issued invoice (numbered, synced to Stripe by the existing sync, moved
by Stripe's webhooks) of kind ``credit_top_up`` with one line. When it becomes paid, one
``invoice``-funded grant of its total is made, keyed by the invoice id, so a repeated webhook
grants once; a failed payment grants nothing. This module only writes the grant; creating the
invoice is ``controlplane.credits.service.create_top_up``.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection

from controlplane.credits import storage
from controlplane.credits.types import CreditGrant, Funding
from controlplane.invoicing.storage import InvoiceRow

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
