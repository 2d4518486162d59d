"""Portal tokens: create (shown once), check, list and revoke."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from datetime import datetime, timedelta

from sqlalchemy import Connection

from controlplane.customers import storage as customers
from controlplane.errors import FailedPrecondition, InvalidArgument
from controlplane.portal import storage
from controlplane.portal.types import MAX_TTL, PORTAL_TOKEN_PREFIX, PortalToken


def hash_portal_token(token: str) -> str:
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


def create(conn: Connection, *, customer: str, ttl: timedelta, now: datetime) -> PortalToken:
    """A new token for ``customer`` valid for ``ttl``; the plain token is in the result only."""
    if ttl <= timedelta(0):
        raise InvalidArgument(f"ttl must be positive, got {ttl}")
    if ttl > MAX_TTL:
        raise InvalidArgument(f"ttl must be at most {MAX_TTL.days} days, got {ttl}")
    customers.get_customer(conn, customer)  # NotFound names it
    token = PORTAL_TOKEN_PREFIX + secrets.token_urlsafe(32)
    stored = storage.insert_token(
        conn,
        id=uuid.uuid4().hex,
        customer=customer,
        token_hash=hash_portal_token(token),
        now=now,
        expire=now + ttl,
    )
    return PortalToken(
        id=stored.id,
        customer=stored.customer,
        create_time=stored.create_time,
        expire_time=stored.expire_time,
        token=token,
    )


def authenticate(conn: Connection, token: str, *, now: datetime) -> PortalToken | None:
    """The valid (unexpired, unrevoked) token ``token`` is, or None."""
    if not token.startswith(PORTAL_TOKEN_PREFIX):
        return None
    found = storage.find_by_hash(conn, hash_portal_token(token))
    if found is None or not found.valid_at(now):
        return None
    return found


def revoke(conn: Connection, id: str, *, now: datetime) -> PortalToken:
    token = storage.get_token(conn, id)
    if token.revoke_time is not None:
        raise FailedPrecondition(f"portal token {id!r} is already revoked")
    storage.revoke(conn, id, now=now)
    return storage.get_token(conn, id)
