"""Browser sessions: a random id in an HttpOnly cookie, a CSRF token, an expiry.

Sessions live in the database (``console_sessions``), so every control-plane replica on one
database honours a cookie any of them issued, and signing out on one signs out everywhere. The
table holds only the sha256 of each session id (a database dump signs nobody in), the session's
CSRF token, who it acts for (operator name and scope, or portal token and customer) and its
absolute expiry; expired rows are deleted as they are met and at each sign-in. Session ids and
CSRF tokens are compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, delete, func, insert, select

from controlplane.api.auth import Scope
from controlplane.clock import Clock
from controlplane.console.auth import Kind, Principal
from controlplane.storage import schema as s
from controlplane.storage.db import Database

DEFAULT_TTL = timedelta(hours=8)
# Bounded: a flood of sign-ins cannot grow the table without end; the oldest go first.
MAX_SESSIONS = 10_000

t = s.console_sessions


@dataclass(frozen=True)
class Session:
    id: str
    csrf: str
    principal: Principal
    expire_time: datetime


def _hash(session_id: str) -> str:
    return "sha256:" + hashlib.sha256(session_id.encode()).hexdigest()


def _principal(row: Row[Any]) -> Principal:
    return Principal(
        kind=Kind(row.kind),
        name=row.name,
        scope=Scope(row.scope) if row.scope is not None else None,
        customer=row.customer,
        expire_time=row.principal_expire_time,
    )


class SessionStore:
    """Sessions by id, each valid until its expiry (absolute: no sliding renewal)."""

    def __init__(self, *, db: Database, clock: Clock, ttl: timedelta = DEFAULT_TTL) -> None:
        self._db = db
        self._clock = clock
        self.ttl = ttl

    def create(self, principal: Principal) -> Session:
        now = self._clock.now()
        session = Session(
            id=secrets.token_urlsafe(32),
            csrf=secrets.token_urlsafe(32),
            principal=principal,
            expire_time=min(now + self.ttl, principal.expire_time or now + self.ttl),
        )
        with self._db.begin() as conn:
            conn.execute(delete(t).where(t.c.expire_time <= now))
            extra = conn.execute(select(func.count()).select_from(t)).scalar_one() - (
                MAX_SESSIONS - 1
            )
            if extra > 0:
                oldest = select(t.c.id_hash).order_by(t.c.create_time, t.c.id_hash).limit(extra)
                conn.execute(delete(t).where(t.c.id_hash.in_(oldest)))
            conn.execute(
                insert(t).values(
                    id_hash=_hash(session.id),
                    csrf=session.csrf,
                    kind=principal.kind.value,
                    name=principal.name,
                    scope=principal.scope.value if principal.scope is not None else None,
                    customer=principal.customer,
                    principal_expire_time=principal.expire_time,
                    create_time=now,
                    expire_time=session.expire_time,
                )
            )
        return session

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        digest = _hash(session_id)
        with self._db.begin() as conn:
            row = conn.execute(select(t).where(t.c.id_hash == digest)).first()
            if row is None or not hmac.compare_digest(row.id_hash, digest):
                return None
            if self._clock.now() >= row.expire_time:
                conn.execute(delete(t).where(t.c.id_hash == digest))
                return None
        return Session(
            id=session_id, csrf=row.csrf, principal=_principal(row), expire_time=row.expire_time
        )

    def delete(self, session_id: str | None) -> None:
        if session_id:
            with self._db.begin() as conn:
                conn.execute(delete(t).where(t.c.id_hash == _hash(session_id)))

    def count(self) -> int:
        """Stored sessions, expired ones not yet deleted included."""
        with self._db.begin() as conn:
            return int(conn.execute(select(func.count()).select_from(t)).scalar_one())


def csrf_ok(session: Session, submitted: str | None) -> bool:
    return bool(submitted) and hmac.compare_digest(session.csrf, submitted or "")
