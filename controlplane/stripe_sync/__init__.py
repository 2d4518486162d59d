"""Stripe sync: issued invoices become Stripe invoices exactly once; payments come back.

The whole Stripe integration lives here, in two layers:

- the engine (``types``, ``money``, ``retry``, ``sync``, ``webhooks``; exported below) is free
  of storage and transport: the caller persists ``SyncRecord`` after every step (``save``) and
  applies ``WebhookOutcome`` states to its invoices; decimal amounts become Stripe's integer
  minor units only in ``money``;
- the database glue: ``storage`` (sync records, customer links), ``locks`` (per invoice and per
  customer, across replicas) and ``app.StripeApp`` (hooks for issue, void and mark-paid, the
  job's resumption, webhooks applied to invoices). Import them by module;
  ``controlplane.invoicing`` never imports this package.

Wiring: build ``StripeSettings`` (from ``METERLINE_STRIPE_*``, None = sync off) and one
``StripeApp`` in the composition root. See docs/stripe.md.
"""

from __future__ import annotations

from controlplane.stripe_sync.money import stripe_currency, to_minor_units
from controlplane.stripe_sync.retry import RetryPolicy
from controlplane.stripe_sync.sync import (
    customer_idempotency_key,
    idempotency_key,
    new_client,
    sync_invoice,
)
from controlplane.stripe_sync.types import (
    CollectionMethod,
    CustomerLinks,
    InvoiceToSync,
    LineToSync,
    PaymentState,
    StripeSettings,
    SyncBlocked,
    SyncRecord,
    SyncState,
    SyncTarget,
    WebhookOutcome,
)
from controlplane.stripe_sync.webhooks import handle_webhook

__all__ = [
    "CollectionMethod",
    "CustomerLinks",
    "InvoiceToSync",
    "LineToSync",
    "PaymentState",
    "RetryPolicy",
    "StripeSettings",
    "SyncBlocked",
    "SyncRecord",
    "SyncState",
    "SyncTarget",
    "WebhookOutcome",
    "customer_idempotency_key",
    "handle_webhook",
    "idempotency_key",
    "new_client",
    "stripe_currency",
    "sync_invoice",
    "to_minor_units",
]
