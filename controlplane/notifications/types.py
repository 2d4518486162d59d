"""Notification channels, rules, events and deliveries: plain types."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum


class RuleType(StrEnum):
    ENTITLEMENT_THRESHOLD = "entitlement_threshold"
    INVOICE = "invoice"
    BUDGET_THRESHOLD = "budget_threshold"


class DeliveryState(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


# Invoice events a rule may watch (Stripe's sync failure and the invoicing job's failure to
# advance a customer included).
INVOICE_EVENTS = (
    "invoice.issued",
    "invoice.paid",
    "invoice.payment_failed",
    "invoice.void",
    "invoice.sync_failed",
    "invoice.job_failed",
)
JOB_FAILED_EVENT = "invoice.job_failed"
THRESHOLD_EVENT = "entitlement.threshold"
BUDGET_EVENT = "budget.threshold"
MIN_SECRET_LENGTH = 16


@dataclass(frozen=True)
class Channel:
    """A webhook endpoint and the secret its deliveries are signed with."""

    key: str
    url: str
    signing_secret: str = field(repr=False)
    create_time: datetime | None = None


@dataclass(frozen=True)
class Rule:
    """What to watch and which channel hears about it."""

    key: str
    type: RuleType
    channel: str
    # Percentages of a metered entitlement's limit (entitlement_threshold).
    thresholds: tuple[Decimal, ...] = ()
    # "" means every feature / customer.
    feature: str = ""
    customer: str = ""
    # Invoice event types (invoice); empty means all of them.
    invoice_events: tuple[str, ...] = ()
    create_time: datetime | None = None


@dataclass(frozen=True)
class Event:
    """One firing of a rule, stored once (``dedupe_key`` is unique)."""

    id: str
    rule: str
    dedupe_key: str
    type: str
    payload: str
    create_time: datetime


@dataclass(frozen=True)
class Attempt:
    number: int
    time: datetime
    status_code: int
    error: str
    duration_ms: int


@dataclass(frozen=True)
class Delivery:
    id: str
    event_id: str
    channel: str
    state: DeliveryState
    attempts: tuple[Attempt, ...]
    next_attempt_time: datetime
    create_time: datetime


@dataclass(frozen=True)
class NotificationSettings:
    """Retries: attempt n+1 is due ``retry_base_seconds * 2**(n-1)`` (at most
    ``retry_max_seconds``) after attempt n fails; after ``max_attempts`` the delivery fails."""

    max_attempts: int = 8
    retry_base_seconds: float = 30.0
    retry_max_seconds: float = 3600.0
    timeout_seconds: float = 10.0
    # A claimed delivery is not claimed again (by any replica) for this long.
    lease_seconds: float = 120.0
    # Deliveries claimed per round.
    batch: int = 50
    # Channels may name loopback, link-local or unspecified addresses (--allow-private-webhook-
    # urls): off, a channel cannot make the control plane call itself or the cloud metadata
    # service.
    allow_private_urls: bool = False

    def backoff_seconds(self, attempts: int) -> float:
        return float(
            min(self.retry_base_seconds * 2 ** max(attempts - 1, 0), self.retry_max_seconds)
        )


@dataclass(frozen=True)
class NotificationsSpec:
    """``billing.notifications`` of a declarative document: channels and rules."""

    channels: tuple[Channel, ...] = ()
    rules: tuple[Rule, ...] = ()
