"""A portal token as stored: its hash, never the token itself."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

PORTAL_TOKEN_PREFIX = "mlp_"
# A portal token is for one browsing session or an embed; a year would be a credential.
MAX_TTL = timedelta(days=30)


@dataclass(frozen=True)
class PortalToken:
    """Output of ``service.create``/``list``; ``token`` is set only once, at creation."""

    id: str
    customer: str
    create_time: datetime
    expire_time: datetime
    revoke_time: datetime | None = None
    token: str | None = None

    def valid_at(self, now: datetime) -> bool:
        return self.revoke_time is None and now < self.expire_time
