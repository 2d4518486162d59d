"""Invoices and their lines."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from controlplane.catalog.types import PaymentTerm, PriceType
from controlplane.rating.charge import LineType, TierCharge


class InvoiceState(StrEnum):
    """OpenMeter's lifecycle: gathering -> draft -> issued -> paid | payment_failed | void."""

    # The open period; lines are computed live (a preview).
    GATHERING = "gathering"
    # The period (plus the grace interval for late events) has ended; still computed live.
    DRAFT = "draft"
    # Numbered; lines and total frozen for ever.
    ISSUED = "issued"
    PAID = "paid"
    PAYMENT_FAILED = "payment_failed"
    VOID = "void"

    @property
    def open(self) -> bool:
        """Gathering or draft: lines are still computed, nothing is frozen."""
        return self in (InvoiceState.GATHERING, InvoiceState.DRAFT)


@dataclass(frozen=True)
class InvoiceLine:
    """One line: a rate card's price line, or one of its discount and commitment lines.

    ``amount`` is rounded to the currency's minor unit; ``unit_price`` is None for graduated
    lines, whose ``tiers`` explain the amount.
    """

    subscription: str
    rate_card: str
    feature: str | None
    description: str
    quantity: Decimal
    unit_price: Decimal | None
    amount: Decimal
    period_start: datetime
    period_end: datetime
    type: LineType = LineType.USAGE
    price_type: PriceType | None = None
    payment_term: PaymentTerm | None = None
    free_quantity: Decimal = Decimal(0)
    packages: Decimal | None = None
    tiers: tuple[TierCharge, ...] = ()
    # Set on stored lines.
    id: str = ""
    # Usage of an already issued period that arrived after its invoice was issued.
    late_usage: bool = False
    # model_list lines: which model and token type the line prices.
    model: str | None = None
    token_type: str | None = None
    # Credit lines: the grant that paid (controlplane.credits).
    credit_grant: str | None = None


@dataclass(frozen=True)
class Invoice:
    """What a customer owes for a period: ``total`` is the sum of the rounded lines."""

    customer: str
    currency: str
    period_start: datetime
    period_end: datetime
    lines: tuple[InvoiceLine, ...]
    total: Decimal
    state: InvoiceState = InvoiceState.GATHERING
    # Stored invoices only (a preview has none of these).
    id: str = ""
    number: str | None = None
    issue_time: datetime | None = None
    create_time: datetime | None = None
    update_time: datetime | None = None
    sync_state: str | None = None
    sync_error: str | None = None
    stripe_invoice_id: str | None = None
