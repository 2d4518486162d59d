"""Storage of portal tokens (hashes only)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, insert, select, update

from controlplane.errors import NotFound
from controlplane.portal.types import PortalToken
from controlplane.storage import schema as s

t = s.portal_tokens


def _token(row: Row[Any]) -> PortalToken:
    return PortalToken(
        id=row.id,
        customer=row.customer,
        create_time=row.create_time,
        expire_time=row.expire_time,
        revoke_time=row.revoke_time,
    )


def insert_token(
    conn: Connection, *, id: str, customer: str, token_hash: str, now: datetime, expire: datetime
) -> PortalToken:
    conn.execute(
        insert(t).values(
            id=id, customer=customer, hash=token_hash, create_time=now, expire_time=expire
        )
    )
    return PortalToken(id=id, customer=customer, create_time=now, expire_time=expire)


def find_by_hash(conn: Connection, token_hash: str) -> PortalToken | None:
    row = conn.execute(select(t).where(t.c.hash == token_hash)).first()
    return None if row is None else _token(row)


def get_token(conn: Connection, id: str) -> PortalToken:
    row = conn.execute(select(t).where(t.c.id == id)).first()
    if row is None:
        raise NotFound(f"portal token {id!r} not found")
    return _token(row)


def list_tokens(conn: Connection, customer: str | None) -> list[PortalToken]:
    query = select(t).order_by(t.c.create_time, t.c.id)
    if customer is not None:
        query = query.where(t.c.customer == customer)
    return [_token(r) for r in conn.execute(query)]


def revoke(conn: Connection, id: str, *, now: datetime) -> None:
    conn.execute(update(t).where(t.c.id == id, t.c.revoke_time.is_(None)).values(revoke_time=now))
