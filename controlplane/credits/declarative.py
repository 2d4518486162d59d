"""``billing.credits`` of a declarative document: parsing, and applying by key.

```yaml
billing:
  credits:
    - {customer: acme, amount: "20", funding: promotional, key: welcome-credit, expires: P90D}
    - {customer: acme, amount: "5", key: images-trial, features: [images], priority: 1}
```

or, with auto-recharge rules and credit alerts, a mapping:

```yaml
billing:
  credits:
    grants:
      - {customer: acme, amount: "20", key: welcome-credit}
    recharge:
      - {customer: acme, mode: threshold, threshold: "5", amount: "20", max_count: 3}
    alerts:
      - {customer: acme, key: low, channel: ops, percents: [50, 20], amounts: ["5"]}
```

The ``key`` is the grant's idempotency key: applying the file again never grants twice. A
grant never changes once made; to take one back, void it (``meterline credits void``). A
changed amount under a known key is therefore left as stored (and reported).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from sqlalchemy import Connection

from controlplane.credits import alerts, recharge, service, storage
from controlplane.credits import recharge_storage as recharge_store
from controlplane.credits.types import (
    CreditAlert,
    CreditGrant,
    CreditGrantSpec,
    Funding,
    RechargeMode,
    RechargeRule,
)
from controlplane.errors import InvalidArgument, NotFound
from controlplane.subscriptions.periods import parse_cadence

if TYPE_CHECKING:
    # Only a type here: the declarative package imports this module.
    from controlplane.declarative.entry import Entry

KEYS = ("customer", "amount", "funding", "key", "priority", "expires", "features", "description")


def _section(billing: Entry) -> Entry | None:
    """``billing.credits`` in its mapping form (grants, recharge, alerts), or None."""
    if not isinstance(billing.data.get("credits"), Mapping):
        return None
    section = billing.sub("credits")
    assert section is not None
    section.check_keys(("grants", "recharge", "alerts"))
    return section


def parse_credits(
    billing: Entry, customers: dict[str, str], features: dict[str, str]
) -> tuple[CreditGrantSpec, ...]:
    """Read the grants of ``billing.credits``; problems go to ``billing.problems``."""
    specs: list[CreditGrantSpec] = []
    seen: dict[tuple[str, str], str] = {}
    section = _section(billing)
    found = (
        billing.entries("credits", label="key")
        if section is None
        else section.entries("grants", label="key")
    )
    for entry in found:
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


RECHARGE_KEYS = (
    "customer",
    "mode",
    "threshold",
    "amount",
    "target",
    "minimum",
    "maximum",
    "max_count",
    "max_amount",
    "currency",
)
ALERT_KEYS = ("customer", "key", "channel", "percents", "amounts")


def parse_credit_recharge(billing: Entry, customers: dict[str, str]) -> tuple[RechargeRule, ...]:
    """Read ``billing.credits.recharge``: one rule per customer."""
    section = _section(billing)
    if section is None:
        return ()
    rules: list[RechargeRule] = []
    seen: dict[str, str] = {}
    for entry in section.entries("recharge", label="customer"):
        before = len(entry.problems)
        entry.check_keys(RECHARGE_KEYS)
        customer = entry.string("customer", required=True)
        if customer is not None and customer not in customers:
            entry.fail(f'unknown customer "{customer}"')
        if customer is not None and customer in seen:
            entry.fail(f'customer "{customer}" already has a recharge rule at {seen[customer]}')
        elif customer is not None:
            seen[customer] = entry.where
        mode = entry.choice(
            "mode", tuple(m.value for m in RechargeMode), default=RechargeMode.THRESHOLD.value
        )
        threshold = entry.decimal("threshold", required=True)
        zero = Decimal(0)
        amount = entry.decimal("amount")
        target = entry.decimal("target")
        minimum = entry.decimal("minimum")
        maximum = entry.decimal("maximum")
        max_amount = entry.decimal("max_amount")
        max_count = entry.integer("max_count", minimum=0)
        currency = entry.string("currency") or ""
        if mode == RechargeMode.THRESHOLD.value and not entry.has("amount"):
            entry.fail_field("amount", "is required for a threshold rule")
        if mode == RechargeMode.TARGET.value and not entry.has("target"):
            entry.fail_field("target", "is required for a target rule")
        if minimum and maximum and minimum > maximum:
            entry.fail_field("minimum", f"{minimum} is above maximum {maximum}")
        if len(entry.problems) > before or customer is None or mode is None or threshold is None:
            continue
        rules.append(
            RechargeRule(
                customer=customer,
                mode=RechargeMode(mode),
                threshold=threshold,
                amount=amount or zero,
                target=target or zero,
                minimum=minimum or zero,
                maximum=maximum or zero,
                max_count=max_count or 0,
                max_amount=max_amount or zero,
                currency=currency,
            )
        )
    return tuple(rules)


def _levels(entry: Entry, key: str) -> tuple[Decimal, ...] | None:
    value = entry.data.get(key)
    if value is None:
        return ()
    if not isinstance(value, list):
        entry.fail_field(key, 'must be a list, like [50, 20] or ["5"]')
        return None
    levels: list[Decimal] = []
    for index, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, int | str):
            entry.fail_field(
                f"{key}[{index}]", 'must be an integer or a quoted decimal like "12.5"'
            )
            return None
        try:
            levels.append(recharge.parse_money(str(item), what=f"{key}[{index}]"))
        except InvalidArgument as exc:
            entry.fail(str(exc))
            return None
    return tuple(levels)


def parse_credit_alerts(billing: Entry, customers: dict[str, str]) -> tuple[CreditAlert, ...]:
    """Read ``billing.credits.alerts``; a channel not in the file is checked when applied."""
    section = _section(billing)
    if section is None:
        return ()
    found: list[CreditAlert] = []
    seen: set[tuple[str, str]] = set()
    for entry in section.entries("alerts", label="key"):
        before = len(entry.problems)
        entry.check_keys(ALERT_KEYS)
        customer = entry.string("customer", required=True)
        if customer is not None and customer not in customers:
            entry.fail(f'unknown customer "{customer}"')
        key = entry.string("key", required=True)
        channel = entry.string("channel", required=True)
        percents = _levels(entry, "percents")
        amounts = _levels(entry, "amounts")
        if percents == () and amounts == ():
            entry.fail("needs percents or amounts (or both)")
        if customer is not None and key is not None:
            if (customer, key) in seen:
                entry.fail(f'credit alert "{key}" of "{customer}" is given twice')
            seen.add((customer, key))
        if (
            len(entry.problems) > before
            or customer is None
            or key is None
            or channel is None
            or percents is None
            or amounts is None
        ):
            continue
        found.append(
            CreditAlert(
                customer=customer, key=key, channel=channel, percents=percents, amounts=amounts
            )
        )
    return tuple(found)


def apply_credit_rules(
    conn: Connection,
    rules: tuple[RechargeRule, ...],
    credit_alerts: tuple[CreditAlert, ...],
    *,
    now: datetime,
) -> list[str]:
    """Create or replace the file's recharge rules and credit alerts (unchanged ones are left
    alone, as are rules and alerts only in the database); the changes made. InvalidArgument
    names the entry; the caller's transaction then changes nothing."""
    changes: list[str] = []
    for rule in rules:
        try:
            checked = recharge.check_rule(conn, rule, now=now)
        except (InvalidArgument, NotFound) as exc:
            raise InvalidArgument(f"billing.credits.recharge ({rule.customer}): {exc}") from None
        current = recharge_store.get_rule(conn, rule.customer)
        if current is not None and recharge.same_rule(current, checked):
            continue
        recharge.set_rule(conn, rule, now=now)
        verb = "replaced" if current is not None else "created"
        changes.append(f"{verb} the credit recharge rule of {rule.customer}")
    for alert in credit_alerts:
        try:
            checked_alert = alerts.check_alert(conn, alert, now=now)
        except (InvalidArgument, NotFound) as exc:
            raise InvalidArgument(
                f"billing.credits.alerts ({alert.customer}/{alert.key}): {exc}"
            ) from None
        current_alert = recharge_store.get_alert(conn, alert.customer, alert.key)
        if current_alert is not None and replace(current_alert, create_time=None) == checked_alert:
            continue
        alerts.set_alert(conn, checked_alert, now=now)
        verb = "replaced" if current_alert is not None else "created"
        changes.append(f"{verb} credit alert {alert.key} of {alert.customer}")
    return changes
