"""Browser sessions: a random id in an HttpOnly cookie, a CSRF token, an expiry.

Sessions live in this process's memory: a restart (or another replica) signs everyone out,
which is the safe failure. Session ids and CSRF tokens are compared in constant time.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from controlplane.clock import Clock
from controlplane.console.auth import Principal

DEFAULT_TTL = timedelta(hours=8)
# Bounded: a flood of sign-ins cannot grow memory without end; the oldest go first.
MAX_SESSIONS = 10_000


@dataclass(frozen=True)
class Session:
    id: str
    csrf: str
    principal: Principal
    expire_time: datetime


class SessionStore:
    """Sessions by id, each valid until its expiry (absolute: no sliding renewal)."""

    def __init__(self, *, clock: Clock, ttl: timedelta = DEFAULT_TTL) -> None:
        self._clock = clock
        self.ttl = ttl
        self._sessions: dict[str, Session] = {}

    def create(self, principal: Principal) -> Session:
        now = self._clock.now()
        self._expire(now)
        while len(self._sessions) >= MAX_SESSIONS:
            self._sessions.pop(next(iter(self._sessions)))
        session = Session(
            id=secrets.token_urlsafe(32),
            csrf=secrets.token_urlsafe(32),
            principal=principal,
            expire_time=min(now + self.ttl, principal.expire_time or now + self.ttl),
        )
        self._sessions[session.id] = session
        return session

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        session = self._sessions.get(session_id)
        if session is None or not hmac.compare_digest(session.id, session_id):
            return None
        if self._clock.now() >= session.expire_time:
            del self._sessions[session_id]
            return None
        return session

    def delete(self, session_id: str | None) -> None:
        if session_id:
            self._sessions.pop(session_id, None)

    def _expire(self, now: datetime) -> None:
        for id in [i for i, s in self._sessions.items() if now >= s.expire_time]:
            del self._sessions[id]


def csrf_ok(session: Session, submitted: str | None) -> bool:
    return bool(submitted) and hmac.compare_digest(session.csrf, submitted or "")
