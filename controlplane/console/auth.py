"""Who a console request acts for: an operator (token scope read/admin) or a portal customer.

Operator tokens are the control plane's own (``controlplane.api.auth``: the tokens file, by
hash); portal tokens are the database's (``controlplane.portal``). A read principal may call
only the read-only methods the gRPC interceptor lets a read token call (``is_read_only``).
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from controlplane.api.auth import TOKEN_PREFIX, Scope, TokenEntry, hash_token, is_read_only


class Kind(StrEnum):
    OPERATOR = "operator"
    PORTAL = "portal"


@dataclass(frozen=True)
class Principal:
    kind: Kind
    # The operator token's name, or the portal token's id.
    name: str
    scope: Scope | None = None
    # Portal principals only: the one customer they may see.
    customer: str | None = None
    expire_time: datetime | None = None

    @property
    def is_operator(self) -> bool:
        return self.kind is Kind.OPERATOR

    @property
    def can_change(self) -> bool:
        return self.kind is Kind.OPERATOR and self.scope is Scope.ADMIN

    def may_call(self, method: str) -> bool:
        """Whether this principal may call the admin API method ``method`` (its bare name)."""
        if self.kind is not Kind.OPERATOR:
            return False
        return self.scope is Scope.ADMIN or is_read_only(method)


def operator_principal(entries: Sequence[TokenEntry], token: str) -> Principal | None:
    """The operator whose token this is, or None."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    digest = hash_token(token)
    for entry in entries:
        if hmac.compare_digest(entry.hash, digest):
            return Principal(kind=Kind.OPERATOR, name=entry.name, scope=entry.scope)
    return None
