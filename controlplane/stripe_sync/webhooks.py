"""Stripe webhooks -> Meterline invoice states, verified, and safe to repeat or reorder."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import stripe

from controlplane.errors import FailedPrecondition, InvalidArgument
from controlplane.stripe_sync.retry import RetryPolicy, call_with_retry
from controlplane.stripe_sync.sync import INVOICE_KEY, metadata
from controlplane.stripe_sync.types import PaymentState, StripeSettings, WebhookOutcome

log = logging.getLogger(__name__)

INVOICE_EVENTS = frozenset(
    {
        "invoice.paid",
        "invoice.payment_failed",
        "invoice.voided",
        "invoice.finalized",
        "invoice.marked_uncollectible",
        "invoice.payment_succeeded",
        "invoice.updated",
        "invoice.overdue",
    }
)


def handle_webhook(
    *,
    payload: bytes,
    signature: str | None,
    settings: StripeSettings,
    client: stripe.StripeClient,
    policy: RetryPolicy = RetryPolicy(),  # noqa: B008 - frozen, shared safely
    sleep: Callable[[float], None] = time.sleep,
) -> WebhookOutcome:
    """Verify one webhook delivery and say which state its Meterline invoice is now in.

    The state is read from the Stripe invoice as it is now, not from the event: a late
    ``invoice.payment_failed`` for an invoice paid since answers ``paid``. The caller applies
    the state unless the invoice is already in it. A missing or bad signature raises
    InvalidArgument (HTTP 400, nothing changes); a Stripe error while re-reading propagates,
    so the endpoint answers 5xx and Stripe delivers again later.
    """
    if not settings.webhook_secret:
        raise FailedPrecondition("Stripe webhooks are off: no webhook secret is configured")
    try:
        event = stripe.Webhook.construct_event(
            payload, signature, settings.webhook_secret, api_key=settings.api_key
        )
    except stripe.SignatureVerificationError:
        raise InvalidArgument("Stripe webhook signature is missing or invalid") from None
    except ValueError:
        raise InvalidArgument("Stripe webhook payload is not a JSON event") from None
    outcome = WebhookOutcome(event_id=str(event.id), event_type=str(event.type))
    obj: dict[str, Any] = event.data.object.to_dict()
    if event.type not in INVOICE_EVENTS or obj.get("object") != "invoice":
        return outcome
    stripe_invoice_id = str(obj["id"])
    current: Any = call_with_retry(
        lambda: client.v1.invoices.retrieve(stripe_invoice_id),
        what="read invoice",
        policy=policy,
        sleep=sleep,
    )
    meterline_id = metadata(current).get(INVOICE_KEY)
    if meterline_id is None:
        # An invoice Meterline did not create (a subscription's, a manual one): not ours.
        return WebhookOutcome(
            event_id=outcome.event_id,
            event_type=outcome.event_type,
            stripe_invoice_id=stripe_invoice_id,
            stripe_status=str(current.status),
        )
    state = _state(str(current.status), event.type)
    log.info(
        "Stripe event %s (%s) for invoice %s: Stripe status %s -> %s",
        event.id,
        event.type,
        meterline_id,
        current.status,
        state,
    )
    return WebhookOutcome(
        event_id=outcome.event_id,
        event_type=outcome.event_type,
        stripe_invoice_id=stripe_invoice_id,
        meterline_invoice_id=str(meterline_id),
        state=state,
        stripe_status=str(current.status),
    )


def _state(status: str, event_type: str) -> PaymentState | None:
    """Meterline's state for a Stripe invoice status; None leaves the invoice as it is."""
    if status == "paid":
        return PaymentState.PAID
    if status == "void":
        return PaymentState.VOID
    if status == "uncollectible":
        return PaymentState.PAYMENT_FAILED
    if status == "open" and event_type in ("invoice.payment_failed", "invoice.overdue"):
        # Still open after a failed attempt: Stripe may retry, the invoice is overdue for now.
        return PaymentState.PAYMENT_FAILED
    return None
