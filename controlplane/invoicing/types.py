"""Invoices and their lines."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from controlplane.catalog.types import PaymentTerm, PriceType
from controlplane.rating.charge import LineType, TierCharge


class InvoiceState(StrEnum):
    GATHERING = "gathering"


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
