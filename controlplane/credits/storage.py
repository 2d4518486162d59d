"""Storage of credit grants and their ledger (``credit_grants``, ``credit_transactions``)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Row, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from controlplane.credits.types import CreditGrant, CreditTransaction, Funding, TransactionType
from controlplane.errors import NotFound
from controlplane.storage import schema as s

g = s.credit_grants
t = s.credit_transactions


def _grant(r: Row[Any]) -> CreditGrant:
    return CreditGrant(
        id=r.id,
        customer=r.customer,
        amount=Decimal(r.amount),
        currency=r.currency,
        funding=Funding(r.funding),
        priority=r.priority,
        effective_time=r.effective_time,
        expire_time=r.expire_time,
        features=tuple(json.loads(r.features)),
        key=r.key or "",
        description=r.description,
        void_time=r.void_time,
        create_time=r.create_time,
    )


def _transaction(r: Row[Any]) -> CreditTransaction:
    return CreditTransaction(
        id=r.id,
        customer=r.customer,
        grant_id=r.grant_id,
        type=TransactionType(r.type),
        amount=Decimal(r.amount),
        currency=r.currency,
        time=r.time,
        invoice_id=r.invoice_id or "",
        description=r.description,
    )


def find_by_key(conn: Connection, customer: str, key: str) -> CreditGrant | None:
    row = conn.execute(select(g).where(g.c.customer == customer, g.c.key == key)).first()
    return None if row is None else _grant(row)


def insert_grant(conn: Connection, grant: CreditGrant, *, now: datetime) -> CreditGrant | None:
    """Store a checked grant and its ``funded`` entry; None if its key is already taken."""
    id = str(uuid.uuid4())
    values = {
        "id": id,
        "customer": grant.customer,
        "key": grant.key or None,
        "amount": str(grant.amount),
        "currency": grant.currency,
        "funding": grant.funding.value,
        "priority": grant.priority,
        "effective_time": grant.effective_time,
        "expire_time": grant.expire_time,
        "features": json.dumps(list(grant.features)),
        "description": grant.description,
        "create_time": now,
    }
    try:
        # A savepoint, so a concurrent insert of the same key leaves the transaction usable.
        with conn.begin_nested():
            conn.execute(insert(g).values(**values))
    except IntegrityError:
        if grant.key and find_by_key(conn, grant.customer, grant.key) is not None:
            return None
        raise
    stored = get_grant(conn, id)
    add_transaction(
        conn,
        grant=stored,
        type=TransactionType.FUNDED,
        amount=stored.amount,
        time=stored.effective_time,
        now=now,
        description=f"{stored.funding.value} grant",
    )
    return stored


def get_grant(conn: Connection, id: str, *, lock: bool = False) -> CreditGrant:
    query = select(g).where(g.c.id == id)
    if lock:
        query = query.with_for_update()
    row = conn.execute(query).first()
    if row is None:
        raise NotFound(f"credit grant {id!r} not found")
    return _grant(row)


def list_grants(conn: Connection, customer: str, *, lock: bool = False) -> list[CreditGrant]:
    query = select(g).where(g.c.customer == customer).order_by(g.c.create_time, g.c.id)
    if lock:
        query = query.with_for_update()
    return [_grant(row) for row in conn.execute(query)]


def set_void_time(conn: Connection, id: str, when: datetime) -> None:
    conn.execute(update(g).where(g.c.id == id).values(void_time=when))


def add_transaction(
    conn: Connection,
    *,
    grant: CreditGrant,
    type: TransactionType,
    amount: Decimal,
    time: datetime,
    now: datetime,
    invoice_id: str = "",
    description: str = "",
) -> CreditTransaction:
    id = str(uuid.uuid4())
    # The caller holds the customer's row lock, so no other writer takes the same number (and
    # the unique constraint would refuse it if one did).
    last = conn.execute(select(func.max(t.c.seq)).where(t.c.customer == grant.customer)).scalar()
    conn.execute(
        insert(t).values(
            id=id,
            customer=grant.customer,
            seq=(last or 0) + 1,
            grant_id=grant.id,
            type=type.value,
            amount=str(amount),
            currency=grant.currency,
            time=time,
            invoice_id=invoice_id or None,
            description=description,
            create_time=now,
        )
    )
    row = conn.execute(select(t).where(t.c.id == id)).one()
    return _transaction(row)


def list_transactions(
    conn: Connection, customer: str, *, grant_id: str = "", invoice_id: str = ""
) -> list[CreditTransaction]:
    query = select(t).where(t.c.customer == customer)
    if grant_id:
        query = query.where(t.c.grant_id == grant_id)
    if invoice_id:
        query = query.where(t.c.invoice_id == invoice_id)
    query = query.order_by(t.c.seq)
    return [_transaction(row) for row in conn.execute(query)]


def remaining_by_grant(
    conn: Connection, grant_ids: Sequence[str], *, at: datetime | None = None
) -> dict[str, Decimal]:
    """Each grant's ledger sum (of entries up to ``at``): what remains of it.

    Summed in Python: amounts are decimal text.
    """
    totals = {id: Decimal(0) for id in grant_ids}
    if not grant_ids:
        return totals
    query = select(t.c.grant_id, t.c.amount).where(t.c.grant_id.in_(grant_ids))
    if at is not None:
        query = query.where(t.c.time <= at)
    rows = conn.execute(query)
    for grant_id, amount in rows:
        totals[grant_id] += Decimal(amount)
    return totals
