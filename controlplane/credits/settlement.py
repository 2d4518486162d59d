"""Credits on invoices: which grants pay an invoice's lines, as credit and uncovered lines.

The pure part is ``controlplane.credits.apply.settle``; this module feeds it the customer's
grants (remainders from the ledger) and turns its answer into invoice lines. Issuing an
invoice ledgers one ``consumed`` entry per credit line (same grant, same amount); an open
invoice shows the lines issuing it now would add, without ledgering anything.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import Connection

from controlplane.catalog.types import SettlementMode
from controlplane.credits import storage
from controlplane.credits.apply import AvailableCredit, DueCharge, Settlement, settle
from controlplane.credits.types import CreditGrant, TransactionType
from controlplane.invoicing import storage as invoices
from controlplane.invoicing.types import InvoiceLine, InvoiceState
from controlplane.rating.charge import LineType
from controlplane.rating.money import round_money

ONE = Decimal(1)


@dataclass(frozen=True)
class InvoiceScope:
    """The invoice credits are applied to."""

    id: str
    customer: str
    currency: str
    period_start: datetime
    period_end: datetime


def usable_grants(conn: Connection, scope: InvoiceScope) -> list[tuple[CreditGrant, Decimal]]:
    """Unvoided grants in the invoice's currency overlapping its period, with what remains."""
    grants = [
        grant
        for grant in storage.list_grants(conn, scope.customer)
        if grant.currency == scope.currency
        and grant.void_time is None
        and grant.overlaps(scope.period_start, scope.period_end)
    ]
    remaining = storage.remaining_by_grant(conn, [grant.id for grant in grants])
    return [(grant, remaining[grant.id]) for grant in grants if remaining[grant.id] > 0]


def charges_of(
    lines: Sequence[InvoiceLine], modes: Mapping[tuple[str, str], SettlementMode]
) -> list[DueCharge]:
    """One charge per (subscription, rate card): its lines' net amount, in invoice order."""
    totals: dict[tuple[str, str], Decimal] = {}
    features: dict[tuple[str, str], str | None] = {}
    for line in lines:
        if line.type in (LineType.CREDIT, LineType.UNCOVERED):
            continue
        where = (line.subscription, line.rate_card)
        totals[where] = totals.get(where, Decimal(0)) + line.amount
        features.setdefault(where, line.feature)
    return [
        DueCharge(
            subscription=sub,
            rate_card=card,
            feature=features[sub, card],
            amount=amount,
            settlement_mode=modes.get((sub, card), SettlementMode.CREDIT_THEN_INVOICE),
        )
        for (sub, card), amount in totals.items()
    ]


def _grant_name(grant: CreditGrant) -> str:
    return grant.key or grant.id


def credit_lines(
    grants: Sequence[tuple[CreditGrant, Decimal]],
    scope: InvoiceScope,
    settlement: Settlement,
) -> list[InvoiceLine]:
    """One negative line per grant used, then one per uncovered ``credit_only`` charge."""
    by_id = {grant.id: grant for grant, _ in grants}
    lines: list[InvoiceLine] = []
    # Charges are sums of rounded lines and grants sit on the same grid (service._check), so
    # rounding here only fixes the exponent ("5" -> "5.00"): it never changes an amount.
    for grant_id, exact in settlement.used_by_grant().items():
        grant = by_id[grant_id]
        used = round_money(exact, scope.currency)
        scope_words = ", ".join(grant.features) if grant.features else "all usage"
        lines.append(
            InvoiceLine(
                subscription="",
                rate_card="",
                feature=grant.features[0] if len(grant.features) == 1 else None,
                description=(
                    f"credits: {_grant_name(grant)} ({grant.funding.value}, {scope_words})"
                ),
                quantity=ONE,
                unit_price=-used,
                amount=-used,
                period_start=scope.period_start,
                period_end=scope.period_end,
                type=LineType.CREDIT,
                credit_grant=grant.id,
            )
        )
    for charge, exact_left in settlement.uncovered():
        left = round_money(exact_left, scope.currency)
        lines.append(
            InvoiceLine(
                subscription=charge.subscription,
                rate_card=charge.rate_card,
                feature=charge.feature,
                description=(
                    f"{charge.rate_card}: {left} not covered by credits (credit_only): not invoiced"
                ),
                quantity=ONE,
                unit_price=-left,
                amount=-left,
                period_start=scope.period_start,
                period_end=scope.period_end,
                type=LineType.UNCOVERED,
            )
        )
    return lines


def apply_to_invoice(
    conn: Connection,
    *,
    scope: InvoiceScope,
    lines: Sequence[InvoiceLine],
    modes: Mapping[tuple[str, str], SettlementMode],
) -> list[InvoiceLine]:
    """The credit and uncovered lines credits add to ``lines`` now (nothing is written)."""
    charges = charges_of(lines, modes)
    if not charges:
        return []
    grants = usable_grants(conn, scope)
    available = [
        AvailableCredit(
            grant_id=grant.id,
            remaining=remaining,
            priority=grant.priority,
            effective_time=grant.effective_time,
            expire_time=grant.expire_time,
            features=frozenset(grant.features),
        )
        for grant, remaining in grants
    ]
    return credit_lines(grants, scope, settle(available, charges))


def ledger_consumption(
    conn: Connection, *, scope: InvoiceScope, lines: Sequence[InvoiceLine], now: datetime
) -> None:
    """Ledger one ``consumed`` entry per credit line of an invoice being issued."""
    for line in lines:
        if line.type is not LineType.CREDIT or line.credit_grant is None:
            continue
        grant = storage.get_grant(conn, line.credit_grant)
        storage.add_transaction(
            conn,
            grant=grant,
            type=TransactionType.CONSUMED,
            amount=line.amount,
            time=now,
            now=now,
            invoice_id=scope.id,
            description=f"invoice {scope.period_start.date()}..{scope.period_end.date()}",
        )


def expire_due(conn: Connection, *, customer: str, now: datetime) -> list[str]:
    """Ledger ``expired`` for the remainders no invoice can use any more; the grants expired.

    A grant's remainder expires once its expiry has passed and no open invoice of the
    customer has a period starting before it (such an invoice may still spend it).
    """
    grants = [
        grant
        for grant in storage.list_grants(conn, customer)
        if grant.void_time is None and grant.expire_time is not None and grant.expire_time <= now
    ]
    if not grants:
        return []
    open_starts = [
        row.period_start
        for row in invoices.list_invoice_rows(
            conn, customer=customer, states=(InvoiceState.GATHERING, InvoiceState.DRAFT)
        )
    ]
    remaining = storage.remaining_by_grant(conn, [grant.id for grant in grants])
    expired: list[str] = []
    for grant in grants:
        assert grant.expire_time is not None
        if remaining[grant.id] <= 0:
            continue
        if any(start < grant.expire_time for start in open_starts):
            continue
        storage.add_transaction(
            conn,
            grant=grant,
            type=TransactionType.EXPIRED,
            amount=-remaining[grant.id],
            time=grant.expire_time,
            now=now,
            description="unspent remainder expired",
        )
        expired.append(grant.id)
    return expired
