"""Prepaid credits: money a customer can spend, and the ledger of what happened to it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum


class Funding(StrEnum):
    """How a grant was paid for."""

    # Paid through one of Meterline's own invoices (a top-up).
    INVOICE = "invoice"
    # Given away (a welcome credit, a goodwill gesture).
    PROMOTIONAL = "promotional"
    # Paid outside Meterline (a wire transfer, a reseller).
    EXTERNAL = "external"


class TransactionType(StrEnum):
    """What a ledger entry records; every balance is a sum of these."""

    FUNDED = "funded"
    CONSUMED = "consumed"
    EXPIRED = "expired"
    VOIDED = "voided"
    ADJUSTED = "adjusted"


@dataclass(frozen=True)
class CreditGrant:
    """``amount`` of ``currency`` a customer may spend on ``features`` (empty: on everything).

    Grants are spent by ``priority`` (lower first), then earliest ``expire_time`` (never-
    expiring last), then earliest ``effective_time``. A grant pays usage of billing periods its
    active window ``[effective_time, expire_time)`` overlaps.
    """

    id: str
    customer: str
    amount: Decimal
    currency: str
    funding: Funding
    priority: int
    effective_time: datetime
    expire_time: datetime | None
    features: tuple[str, ...]
    key: str
    description: str = ""
    void_time: datetime | None = None
    create_time: datetime | None = None

    def active(self, at: datetime) -> bool:
        """Effective, not expired and not voided at ``at``."""
        return (
            self.effective_time <= at
            and (self.expire_time is None or at < self.expire_time)
            and (self.void_time is None or at < self.void_time)
        )

    def overlaps(self, start: datetime, end: datetime) -> bool:
        """Whether the grant may pay usage of the period ``[start, end)``."""
        return self.effective_time < end and (self.expire_time is None or self.expire_time > start)


@dataclass(frozen=True)
class CreditTransaction:
    """One ledger entry: ``amount`` is signed (funded and positive adjustments add)."""

    id: str
    customer: str
    grant_id: str
    type: TransactionType
    amount: Decimal
    currency: str
    time: datetime
    invoice_id: str = ""
    description: str = ""


@dataclass(frozen=True)
class GrantBalance:
    """A grant and what remains of it, as the ledger says."""

    grant: CreditGrant
    remaining: Decimal


@dataclass(frozen=True)
class CreditBalance:
    """A customer's credit balance at ``at``.

    ``settled``: the remainders of the grants active at ``at`` after every issued invoice;
    ``live``: ``settled`` minus what the customer's open invoices would consume if issued now.
    """

    customer: str
    currency: str
    at: datetime
    settled: Decimal
    live: Decimal
    grants: tuple[GrantBalance, ...]


@dataclass(frozen=True)
class CreditGrantSpec:
    """A grant as a declarative document states it (``billing.credits``)."""

    customer: str
    amount: Decimal
    funding: Funding
    key: str
    priority: int = 10
    # ISO 8601 duration from the grant's effective time, e.g. P90D.
    expires: str = ""
    features: tuple[str, ...] = ()
    description: str = ""
