"""Storage of budgets."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Row, delete, insert, select

from controlplane.budgets.types import Budget, BudgetMode
from controlplane.errors import NotFound
from controlplane.storage import schema as s

b = s.budgets


def _budget(r: Row[Any]) -> Budget:
    return Budget(
        id=r.id,
        customer=r.customer,
        amount=Decimal(r.amount),
        currency=r.currency,
        period=r.period,
        mode=BudgetMode(r.mode),
        create_time=r.create_time,
    )


def insert_budget(conn: Connection, budget: Budget, *, now: datetime) -> Budget:
    """Store a checked budget under a new id."""
    id = str(uuid.uuid4())
    conn.execute(
        insert(b).values(
            id=id,
            customer=budget.customer,
            amount=str(budget.amount),
            currency=budget.currency,
            period=budget.period,
            mode=budget.mode.value,
            create_time=now,
        )
    )
    return get_budget(conn, id)


def get_budget(conn: Connection, id: str) -> Budget:
    row = conn.execute(select(b).where(b.c.id == id)).first()
    if row is None:
        raise NotFound(f"budget {id!r} not found")
    return _budget(row)


def list_budgets(conn: Connection, customer: str | None = None) -> list[Budget]:
    query = select(b).order_by(b.c.customer, b.c.create_time, b.c.id)
    if customer is not None:
        query = query.where(b.c.customer == customer)
    return [_budget(row) for row in conn.execute(query)]


def delete_budget(conn: Connection, id: str) -> None:
    conn.execute(delete(b).where(b.c.id == id))
