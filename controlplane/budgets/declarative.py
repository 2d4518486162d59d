"""``billing.budgets`` of a declarative document: parsing, and applying by (customer, mode).

```yaml
billing:
  budgets:
    - {customer: acme, amount: "100", currency: USD, period: P1M, mode: hard}
```

A customer has at most one budget per mode in a file; applying it again changes nothing, a
changed amount updates the stored budget of that customer and mode.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import Connection

from controlplane.budgets import service, storage
from controlplane.budgets.types import Budget, BudgetMode, BudgetSpec

if TYPE_CHECKING:
    # Only a type here: the declarative package imports this module.
    from controlplane.declarative.entry import Entry


def parse_budgets(billing: Entry, customers: dict[str, str]) -> tuple[BudgetSpec, ...]:
    """Read ``billing.budgets``; problems go to ``billing.problems``."""
    specs: list[BudgetSpec] = []
    seen: dict[tuple[str, str], str] = {}
    for entry in billing.entries("budgets", label="customer"):
        before = len(entry.problems)
        entry.check_keys(("customer", "amount", "currency", "period", "mode"))
        customer = entry.string("customer", required=True)
        if customer is not None and customer not in customers:
            entry.fail(f'unknown customer "{customer}"')
        amount = entry.decimal("amount", required=True)
        currency = entry.string("currency") or ""
        period = entry.string("period") or ""
        mode = entry.choice("mode", tuple(m.value for m in BudgetMode), default="hard")
        if customer is not None and mode is not None:
            if (customer, mode) in seen:
                entry.fail(
                    f'customer "{customer}" already has a {mode} budget at {seen[customer, mode]}'
                )
            else:
                seen[customer, mode] = entry.where
        if len(entry.problems) > before or customer is None or amount is None or mode is None:
            continue
        specs.append(
            BudgetSpec(
                customer=customer,
                amount=amount,
                currency=currency,
                period=period,
                mode=BudgetMode(mode),
            )
        )
    return tuple(specs)


def apply_budgets(conn: Connection, specs: tuple[BudgetSpec, ...], *, now: datetime) -> list[str]:
    """Store the declared budgets (create, or update the amount); the changes made."""
    changes: list[str] = []
    for spec in specs:
        current = [b for b in storage.list_budgets(conn, spec.customer) if b.mode is spec.mode]
        wanted = Budget(
            id="",
            customer=spec.customer,
            amount=spec.amount,
            currency=spec.currency,
            period=spec.period,
            mode=spec.mode,
        )
        if current:
            budget = current[0]
            if (
                budget.amount == spec.amount
                and spec.currency in ("", budget.currency)
                and (spec.period in ("", budget.period))
            ):
                continue
            storage.delete_budget(conn, budget.id)
        created = service.create_budget(conn, wanted, now=now)
        changes.append(
            f"{'updated' if current else 'created'} {spec.mode.value} budget of "
            f"{spec.customer}: {created.amount} {created.currency} per {created.period}"
        )
    return changes
