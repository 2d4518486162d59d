"""Which credits pay which charges of an invoice: a pure function, no clock and no I/O.

Rules (docs/credits.md):

- Grants are used by priority (lower first), then earliest expiry (never-expiring last), then
  earliest effective time, then id.
- A grant scoped to features only pays charges of those features; an unscoped grant pays any
  charge, flat fees included.
- Within one grant, ``credit_only`` charges are paid before ``credit_then_invoice`` ones (the
  remainder of the first is never invoiced, of the second it is), then in invoice order.
- A charge is a rate card's net amount on the invoice (its lines summed, discounts included);
  a net amount at or below zero needs no credit.
- What credits leave of a ``credit_only`` charge is *uncovered*: not invoiced, reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from controlplane.catalog.types import SettlementMode

ZERO = Decimal(0)


@dataclass(frozen=True)
class AvailableCredit:
    """A grant's remaining amount, as the pure function sees it."""

    grant_id: str
    remaining: Decimal
    priority: int
    effective_time: datetime
    expire_time: datetime | None
    # Empty: every feature and the flat fees.
    features: frozenset[str] = frozenset()


@dataclass(frozen=True)
class DueCharge:
    """What a rate card (of a subscription) asks for on an invoice."""

    subscription: str
    rate_card: str
    feature: str | None
    amount: Decimal
    settlement_mode: SettlementMode = SettlementMode.CREDIT_THEN_INVOICE


@dataclass(frozen=True)
class CreditUse:
    """``amount`` of one grant paying one charge."""

    grant_id: str
    subscription: str
    rate_card: str
    feature: str | None
    amount: Decimal


@dataclass(frozen=True)
class Settlement:
    """The uses, in order, and what is left of each charge (``credit_only``: uncovered)."""

    uses: tuple[CreditUse, ...]
    left: tuple[tuple[DueCharge, Decimal], ...]

    def used_by_grant(self) -> dict[str, Decimal]:
        """Total used per grant, in the order grants were used."""
        totals: dict[str, Decimal] = {}
        for use in self.uses:
            totals[use.grant_id] = totals.get(use.grant_id, ZERO) + use.amount
        return totals

    def uncovered(self) -> tuple[tuple[DueCharge, Decimal], ...]:
        """``credit_only`` charges credits did not fully pay, with the unpaid amount."""
        return tuple(
            (charge, left)
            for charge, left in self.left
            if left > 0 and charge.settlement_mode is SettlementMode.CREDIT_ONLY
        )


def spending_order(credit: AvailableCredit) -> tuple[int, int, datetime, datetime, str]:
    """Sort key of grants: priority, then expiry (None last), then effective time, then id."""
    never = credit.expire_time is None
    expiry = credit.effective_time if credit.expire_time is None else credit.expire_time
    return (credit.priority, 1 if never else 0, expiry, credit.effective_time, credit.grant_id)


def _pays(credit: AvailableCredit, charge: DueCharge) -> bool:
    if not credit.features:
        return True
    return charge.feature is not None and charge.feature in credit.features


def settle(credits: Sequence[AvailableCredit], charges: Sequence[DueCharge]) -> Settlement:
    """Apply ``credits`` to ``charges``; every amount stays exact (no rounding here)."""
    order = sorted(range(len(charges)), key=lambda i: (
        0 if charges[i].settlement_mode is SettlementMode.CREDIT_ONLY else 1, i
    ))  # fmt: skip
    left = [max(charge.amount, ZERO) for charge in charges]
    uses: list[CreditUse] = []
    for credit in sorted(credits, key=spending_order):
        remaining = credit.remaining
        for i in order:
            if remaining <= 0:
                break
            charge = charges[i]
            if left[i] <= 0 or not _pays(credit, charge):
                continue
            amount = min(remaining, left[i])
            left[i] -= amount
            remaining -= amount
            uses.append(
                CreditUse(
                    grant_id=credit.grant_id,
                    subscription=charge.subscription,
                    rate_card=charge.rate_card,
                    feature=charge.feature,
                    amount=amount,
                )
            )
    return Settlement(uses=tuple(uses), left=tuple(zip(charges, left, strict=True)))
