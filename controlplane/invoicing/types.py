"""Invoices and their lines."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum


class InvoiceState(StrEnum):
    GATHERING = "gathering"


@dataclass(frozen=True)
class InvoiceLine:
    subscription: str
    rate_card: str
    feature: str
    description: str
    quantity: Decimal
    unit_price: Decimal
    amount: Decimal
    period_start: datetime
    period_end: datetime


@dataclass(frozen=True)
class Invoice:
    customer: str
    currency: str
    period_start: datetime
    period_end: datetime
    lines: tuple[InvoiceLine, ...]
    total: Decimal
    state: InvoiceState = InvoiceState.GATHERING
