"""Plain types of the Stripe sync: settings, what is synced, how far a sync got."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Protocol

from controlplane.errors import InvalidArgument

DEFAULT_API_BASE = "https://api.stripe.com"


class CollectionMethod(StrEnum):
    """How Stripe collects a finalized invoice."""

    CHARGE_AUTOMATICALLY = "charge_automatically"
    SEND_INVOICE = "send_invoice"


@dataclass(frozen=True)
class StripeSettings:
    """The Stripe app of one control plane. Secrets never appear in ``repr``/``str``."""

    api_key: str = field(repr=False)
    webhook_secret: str | None = field(default=None, repr=False)
    api_base: str = DEFAULT_API_BASE
    collection_method: CollectionMethod = CollectionMethod.CHARGE_AUTOMATICALLY
    days_until_due: int | None = None
    automatic_tax: bool = False

    def __post_init__(self) -> None:
        if not self.api_key:
            raise InvalidArgument("the Stripe API key must not be empty")
        if self.collection_method is CollectionMethod.SEND_INVOICE:
            if self.days_until_due is None or self.days_until_due < 0:
                raise InvalidArgument(
                    "collection method send_invoice needs days_until_due (0 or more)"
                )
        elif self.days_until_due is not None:
            raise InvalidArgument("days_until_due only applies to collection method send_invoice")

    def __repr__(self) -> str:
        return (
            f"StripeSettings(api_key='***', webhook_secret="
            f"{'***' if self.webhook_secret else None!r}, api_base={self.api_base!r}, "
            f"collection_method={self.collection_method.value!r}, "
            f"days_until_due={self.days_until_due!r}, automatic_tax={self.automatic_tax!r})"
        )

    __str__ = __repr__

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> StripeSettings | None:
        """Settings from ``METERLINE_STRIPE_*`` variables; None (sync off) without an API key."""
        api_key = environ.get("METERLINE_STRIPE_API_KEY", "")
        if not api_key:
            return None
        method = environ.get("METERLINE_STRIPE_COLLECTION_METHOD", "charge_automatically")
        try:
            collection_method = CollectionMethod(method)
        except ValueError:
            raise InvalidArgument(
                f"METERLINE_STRIPE_COLLECTION_METHOD must be charge_automatically or "
                f"send_invoice, got {method!r}"
            ) from None
        days = environ.get("METERLINE_STRIPE_DAYS_UNTIL_DUE", "")
        if days and not days.isdigit():
            raise InvalidArgument(f"METERLINE_STRIPE_DAYS_UNTIL_DUE must be a number, got {days!r}")
        if not days and collection_method is CollectionMethod.SEND_INVOICE:
            days = "30"
        tax = environ.get("METERLINE_STRIPE_AUTOMATIC_TAX", "false").lower()
        if tax not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
            raise InvalidArgument(
                f"METERLINE_STRIPE_AUTOMATIC_TAX must be true or false, got {tax!r}"
            )
        return cls(
            api_key=api_key,
            webhook_secret=environ.get("METERLINE_STRIPE_WEBHOOK_SECRET") or None,
            api_base=environ.get("METERLINE_STRIPE_API_BASE") or DEFAULT_API_BASE,
            collection_method=collection_method,
            days_until_due=int(days) if days else None,
            automatic_tax=tax in ("true", "1", "yes", "on"),
        )


@dataclass(frozen=True)
class LineToSync:
    """One invoice line as Stripe gets it: ``amount`` is already rounded to the minor unit.

    ``description`` is shown as given ("feature (quantity x unit price)"); a discount is a
    negative amount.
    """

    id: str
    description: str
    amount: Decimal
    period_start: datetime
    period_end: datetime


class SyncTarget(StrEnum):
    """Where the Stripe invoice must end up, from the Meterline invoice's state."""

    # Issued (or payment_failed): finalized, Stripe collects it.
    OPEN = "open"
    # Marked paid in Meterline: finalized without collection, then paid out of band.
    PAID = "paid"
    # Void in Meterline: voided in Stripe (a draft is deleted; nothing sent, nothing to do).
    VOID = "void"


@dataclass(frozen=True)
class InvoiceToSync:
    """An issued Meterline invoice, whatever stores it, and what Stripe must make of it."""

    id: str
    number: str
    customer_key: str
    customer_name: str
    customer_stripe_id: str | None
    currency: str
    lines: tuple[LineToSync, ...]
    total: Decimal
    target: SyncTarget = SyncTarget.OPEN


class SyncBlocked(Exception):
    """A lock the sync needs stayed held elsewhere; the sync fails for now and is retried."""


class CustomerLinks(Protocol):
    """Where the caller remembers each Meterline customer's Stripe customer.

    The sync looks the link up and creates a Stripe customer only while holding ``lock`` for
    that customer, so concurrent syncs of one customer's invoices (threads or replicas) create
    one Stripe customer. ``link`` never replaces a stored link.
    """

    def lock(self, customer_key: str) -> AbstractContextManager[None]:
        """Held by one sync at a time per customer; raises SyncBlocked if it waited too long."""
        ...

    def get(self, customer_key: str) -> str | None:
        """The Stripe customer id linked to ``customer_key``, if any."""
        ...

    def link(self, customer_key: str, stripe_customer_id: str) -> str:
        """Store the link unless one exists; returns the link now stored."""
        ...


class SyncState(StrEnum):
    """How far the sync of one invoice got; ``finalized``, ``paid`` and ``voided`` are synced.

    ``failed`` is the one word for a failed sync in the API (``INVOICE_SYNC_STATE_FAILED``),
    the CLI, the docs and the database; the notification sent then is ``invoice.sync_failed``.
    """

    PENDING = "pending"
    CUSTOMER_SYNCED = "customer_synced"
    INVOICE_CREATED = "invoice_created"
    ITEMS_SYNCED = "items_synced"
    FINALIZED = "finalized"
    # Marked paid in Meterline and paid (out of band) in Stripe.
    PAID = "paid"
    # Void in Meterline and void (or deleted, or never created) in Stripe.
    VOIDED = "voided"
    FAILED = "failed"


@dataclass(frozen=True)
class SyncRecord:
    """What the caller persists per invoice between steps; ``error`` is Stripe's message."""

    invoice_id: str
    state: SyncState = SyncState.PENDING
    stripe_customer_id: str | None = None
    stripe_invoice_id: str | None = None
    synced_line_ids: tuple[str, ...] = ()
    error: str | None = None

    @property
    def synced(self) -> bool:
        return self.state in (SyncState.FINALIZED, SyncState.PAID, SyncState.VOIDED)

    def done(self, target: SyncTarget) -> bool:
        """Whether Stripe already holds what ``target`` asks for."""
        return self.state is DONE[target]


# The record state that ends the sync of each target.
DONE = {
    SyncTarget.OPEN: SyncState.FINALIZED,
    SyncTarget.PAID: SyncState.PAID,
    SyncTarget.VOID: SyncState.VOIDED,
}


class PaymentState(StrEnum):
    """The Meterline invoice state a Stripe webhook moves an invoice to."""

    PAID = "paid"
    PAYMENT_FAILED = "payment_failed"
    VOID = "void"


@dataclass(frozen=True)
class WebhookOutcome:
    """What a verified webhook means for Meterline; ``state`` None means change nothing.

    ``state`` comes from the Stripe invoice as re-read after the event, not from the event,
    so repeated and out-of-order deliveries give the same answer.
    """

    event_id: str
    event_type: str
    stripe_invoice_id: str | None = None
    meterline_invoice_id: str | None = None
    state: PaymentState | None = None
    stripe_status: str | None = None
