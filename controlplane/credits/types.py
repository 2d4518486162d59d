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
    # What the open invoices would take from credits if issued now (settled - live, unclamped).
    pending: Decimal = Decimal(0)


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


class RechargeMode(StrEnum):
    """How an auto-recharge rule sizes its top-up."""

    # Live balance below ``threshold``: buy ``amount``.
    THRESHOLD = "threshold"
    # Live balance below ``threshold``: buy what brings it back to ``target``.
    TARGET = "target"


@dataclass(frozen=True)
class RechargeRule:
    """A customer's auto-recharge rule; zero bounds and caps mean none."""

    customer: str
    mode: RechargeMode
    threshold: Decimal
    amount: Decimal = Decimal(0)
    target: Decimal = Decimal(0)
    minimum: Decimal = Decimal(0)
    maximum: Decimal = Decimal(0)
    # Per billing period: how many top-ups, and their total; 0 is no cap.
    max_count: int = 0
    max_amount: Decimal = Decimal(0)
    # Empty: the plan's. Only checked (a rule in another currency is refused).
    currency: str = ""
    create_time: datetime | None = None
    update_time: datetime | None = None


@dataclass(frozen=True)
class RechargeOutcome:
    """What one evaluation of a customer's rule did: the invoice it issued, or why not."""

    customer: str
    invoice_id: str = ""
    amount: Decimal = Decimal(0)
    reason: str = ""


@dataclass(frozen=True)
class CreditAlert:
    """Credit-balance thresholds of a customer, each fired once per crossing on ``channel``.

    ``percents``: of the amount of the last funded grant; ``amounts``: absolute balances.
    """

    customer: str
    key: str
    channel: str
    percents: tuple[Decimal, ...] = ()
    amounts: tuple[Decimal, ...] = ()
    create_time: datetime | None = None


@dataclass(frozen=True)
class CreditOutlook:
    """The live balance, the burn rate over ``window_days`` and when the balance runs out.

    ``burn_per_day`` is None without two spending samples in the window; ``run_out_time`` is
    None when nothing burns (or nothing is left to run out of: then it is ``at``).
    """

    balance: CreditBalance
    window_days: int
    spent_in_window: Decimal | None
    window_start: datetime | None
    burn_per_day: Decimal | None
    run_out_time: datetime | None


@dataclass(frozen=True)
class CreditsSpec:
    """``billing.credits`` of a declarative document: grants, recharge rules and alerts."""

    grants: tuple[CreditGrantSpec, ...] = ()
    recharge: tuple[RechargeRule, ...] = ()
    alerts: tuple[CreditAlert, ...] = ()
