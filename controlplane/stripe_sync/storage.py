"""Storage of the Stripe sync: each invoice's ``SyncRecord`` and each customer's Stripe link.

The record lives in two columns of ``invoices`` (``sync_state`` for queries, ``sync_record``
as JSON); the link in ``stripe_customers``, one row per Meterline customer.
"""

from __future__ import annotations

import json
from datetime import datetime

from sqlalchemy import Connection, select, update
from sqlalchemy.dialects import postgresql, sqlite

from controlplane.errors import InvalidArgument
from controlplane.storage import schema as s
from controlplane.stripe_sync.types import SyncRecord, SyncState

inv = s.invoices
links = s.stripe_customers


# Sync records ---------------------------------------------------------------------------------


def sync_record_to_json(record: SyncRecord) -> str:
    return json.dumps(
        {
            "invoice_id": record.invoice_id,
            "state": record.state.value,
            "stripe_customer_id": record.stripe_customer_id,
            "stripe_invoice_id": record.stripe_invoice_id,
            "synced_line_ids": list(record.synced_line_ids),
            "error": record.error,
        },
        sort_keys=True,
    )


def sync_record_from_json(text: str) -> SyncRecord:
    data = json.loads(text)
    return SyncRecord(
        invoice_id=data["invoice_id"],
        state=SyncState(data["state"]),
        stripe_customer_id=data["stripe_customer_id"],
        stripe_invoice_id=data["stripe_invoice_id"],
        synced_line_ids=tuple(data["synced_line_ids"]),
        error=data["error"],
    )


def save_sync_record(conn: Connection, record: SyncRecord, *, now: datetime) -> None:
    conn.execute(
        update(inv)
        .where(inv.c.id == record.invoice_id)
        .values(
            sync_state=record.state.value,
            sync_record=sync_record_to_json(record),
            update_time=now,
        )
    )


# Customer links -------------------------------------------------------------------------------


def _check_stripe_id(stripe_id: str) -> None:
    if not stripe_id.startswith("cus_"):
        raise InvalidArgument(f"stripe_customer_id must look like cus_..., got {stripe_id!r}")


def stripe_customer_ids(conn: Connection, keys: list[str] | None = None) -> dict[str, str]:
    """Meterline customer key -> linked Stripe customer id (of ``keys`` only, when given)."""
    query = select(links) if keys is None else select(links).where(links.c.customer.in_(keys))
    return {r.customer: r.stripe_customer_id for r in conn.execute(query)}


def stripe_customer_id(conn: Connection, customer: str) -> str | None:
    """The Stripe customer ``customer`` is linked to, if any."""
    found = conn.execute(
        select(links.c.stripe_customer_id).where(links.c.customer == customer)
    ).scalar()
    return str(found) if found is not None else None


def link_stripe_customer(conn: Connection, customer: str, stripe_id: str, *, now: datetime) -> None:
    """Link (or re-link) a customer to a Stripe customer id: the operator's choice wins."""
    _check_stripe_id(stripe_id)
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(links).values(
        customer=customer, stripe_customer_id=stripe_id, create_time=now, update_time=now
    )
    conn.execute(
        statement.on_conflict_do_update(
            index_elements=["customer"],
            set_={"stripe_customer_id": stripe_id, "update_time": now},
        )
    )


def link_stripe_customer_if_absent(
    conn: Connection, customer: str, stripe_id: str, *, now: datetime
) -> str:
    """Link ``customer`` to ``stripe_id`` unless it is linked already; the link now stored.

    What a sync calls: a link once stored is never replaced by a sync, so every invoice of a
    customer lands on one Stripe customer even if two syncs raced to create it.
    """
    _check_stripe_id(stripe_id)
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    conn.execute(
        dialect.insert(links)
        .values(customer=customer, stripe_customer_id=stripe_id, create_time=now, update_time=now)
        .on_conflict_do_nothing(index_elements=["customer"])
    )
    stored = stripe_customer_id(conn, customer)
    assert stored is not None, "the link was just inserted or already there"
    return stored
