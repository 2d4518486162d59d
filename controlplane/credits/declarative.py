"""``billing.credits`` of a declarative document: parsing, and applying by key.

```yaml
billing:
  credits:
    - {customer: acme, amount: "20", funding: promotional, key: welcome-credit, expires: P90D}
    - {customer: acme, amount: "5", key: images-trial, features: [images], priority: 1}
```

The ``key`` is the grant's idempotency key: applying the file again never grants twice. A
grant never changes once made; to take one back, void it (``meterline credits void``). A
changed amount under a known key is therefore left as stored (and reported).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import Connection

from controlplane.credits import service, storage
from controlplane.credits.types import CreditGrant, CreditGrantSpec, Funding
from controlplane.errors import InvalidArgument
from controlplane.subscriptions.periods import parse_cadence

if TYPE_CHECKING:
    # Only a type here: the declarative package imports this module.
    from controlplane.declarative.entry import Entry

KEYS = ("customer", "amount", "funding", "key", "priority", "expires", "features", "description")


def parse_credits(
    billing: Entry, customers: dict[str, str], features: dict[str, str]
) -> tuple[CreditGrantSpec, ...]:
    """Read ``billing.credits``; problems go to ``billing.problems``."""
    specs: list[CreditGrantSpec] = []
    seen: dict[tuple[str, str], str] = {}
    for entry in billing.entries("credits", label="key"):
        before = len(entry.problems)
        entry.check_keys(KEYS)
        customer = entry.string("customer", required=True)
        if customer is not None and customer not in customers:
            entry.fail(f'unknown customer "{customer}"')
        amount = entry.decimal("amount", required=True)
        if amount is not None and amount == 0:
            entry.fail_field("amount", "must be above zero")
        funding = entry.choice(
            "funding", tuple(f.value for f in Funding), default=Funding.PROMOTIONAL.value
        )
        key = entry.string("key", required=True)
        priority = entry.integer("priority", minimum=0)
        expires = entry.string("expires") or ""
        if expires:
            try:
                parse_cadence(expires)
            except InvalidArgument:
                entry.fail_field(
                    "expires", f'must be an ISO 8601 duration like P90D, got "{expires}"'
                )
        scope = entry.string_list("features")
        for feature in scope or ():
            if feature not in features:
                entry.fail_field("features", f'names unknown feature "{feature}"')
        description = entry.string("description") or ""
        if customer is not None and key is not None:
            if (customer, key) in seen:
                entry.fail(
                    f'credit key "{key}" of "{customer}" is already used at {seen[customer, key]}'
                )
            else:
                seen[customer, key] = entry.where
        if (
            len(entry.problems) > before
            or customer is None
            or amount is None
            or funding is None
            or key is None
            or scope is None
        ):
            continue
        specs.append(
            CreditGrantSpec(
                customer=customer,
                amount=amount,
                funding=Funding(funding),
                key=key,
                priority=priority if priority is not None else 10,
                expires=expires,
                features=scope,
                description=description,
            )
        )
    return tuple(specs)


def apply_credits(
    conn: Connection, specs: tuple[CreditGrantSpec, ...], *, now: datetime
) -> list[str]:
    """Grant what the file declares and is not granted yet (by key); the changes made."""
    changes: list[str] = []
    for spec in specs:
        found = storage.find_by_key(conn, spec.customer, spec.key)
        if found is not None:
            if found.amount != spec.amount:
                changes.append(
                    f"kept credit grant {spec.key} of {spec.customer}: {found.amount}"
                    f" {found.currency} (grants never change; void it and use a new key)"
                )
            continue
        grant = CreditGrant(
            id="",
            customer=spec.customer,
            amount=spec.amount,
            currency="",
            funding=spec.funding,
            priority=spec.priority,
            effective_time=now,
            expire_time=None,
            features=spec.features,
            key=spec.key,
            description=spec.description,
        )
        if spec.expires:
            grant = replace(grant, expire_time=service.expiry_after(now, spec.expires))
        created, made = service.create_grant(conn, grant, now=now)
        if made:
            expiry = f", expires {created.expire_time.isoformat()}" if created.expire_time else ""
            changes.append(
                f"granted {created.amount} {created.currency} of {created.funding.value}"
                f" credits to {created.customer} ({created.key}{expiry})"
            )
    return changes
