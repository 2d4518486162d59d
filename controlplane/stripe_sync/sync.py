"""Issued invoice -> Stripe invoice, one resumable step at a time (OpenMeter's Stripe app flow).

customer -> draft invoice (``auto_advance=false``) -> one invoice item per line -> finalize.
``save`` persists the record after every step; a sync that crashed resumes from the saved
record. Every call carries an idempotency key derived from Meterline ids, so a step repeated
after a crash replays Stripe's first answer instead of creating a second object. Stripe forgets
keys after 24 hours, so the draft and its items are also looked up by metadata before creating.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import stripe

from controlplane.errors import InvalidArgument
from controlplane.stripe_sync.money import stripe_currency, to_minor_units
from controlplane.stripe_sync.retry import RetryPolicy, call_with_retry
from controlplane.stripe_sync.types import (
    CollectionMethod,
    InvoiceToSync,
    LineToSync,
    StripeSettings,
    SyncRecord,
    SyncState,
)

if TYPE_CHECKING:
    from stripe.params import (
        InvoiceCreateParams,
        InvoiceItemCreateParams,
        InvoiceLineItemListParams,
        InvoiceListParams,
    )

log = logging.getLogger(__name__)

INVOICE_KEY = "meterline_invoice_id"
INVOICE_NUMBER_KEY = "meterline_invoice_number"
LINE_KEY = "meterline_line_id"
CUSTOMER_KEY = "meterline_customer"


def new_client(settings: StripeSettings) -> stripe.StripeClient:
    """The Stripe client for ``settings`` (SDK retries off: ``call_with_retry`` retries)."""
    return stripe.StripeClient(
        settings.api_key, base_addresses={"api": settings.api_base}, max_network_retries=0
    )


def metadata(obj: Any) -> dict[str, str]:
    """A Stripe object's metadata as a plain dict (SDK objects are not dicts)."""
    return {str(k): str(v) for k, v in obj.metadata.to_dict().items()}


def idempotency_key(invoice_id: str, step: str) -> str:
    """``meterline-invoice-<id>-<step>``: the same step of the same invoice, the same key."""
    return f"meterline-invoice-{invoice_id}-{step}"


@dataclass(frozen=True)
class _Step:
    client: stripe.StripeClient
    settings: StripeSettings
    invoice: InvoiceToSync
    save: Callable[[SyncRecord], None]
    policy: RetryPolicy
    sleep: Callable[[float], None]

    def call(self, what: str, call: Callable[[], Any]) -> Any:
        return call_with_retry(call, what=what, policy=self.policy, sleep=self.sleep)

    def options(self, step: str) -> stripe.RequestOptions:
        # Retries are ours (bounded, with backoff); an SDK retry inside each would multiply them.
        return {"idempotency_key": idempotency_key(self.invoice.id, step), "max_network_retries": 0}

    def advance(self, record: SyncRecord, **changes: Any) -> SyncRecord:
        record = replace(record, error=None, **changes)
        self.save(record)
        return record


class _Mismatch(Exception):
    """The Stripe draft does not hold exactly the Meterline lines; finalizing would be wrong."""


def sync_invoice(
    *,
    client: stripe.StripeClient,
    settings: StripeSettings,
    invoice: InvoiceToSync,
    record: SyncRecord,
    save: Callable[[SyncRecord], None],
    policy: RetryPolicy = RetryPolicy(),  # noqa: B008 - frozen, shared safely
    sleep: Callable[[float], None] = time.sleep,
) -> SyncRecord:
    """Bring ``invoice`` to a finalized Stripe invoice, resuming from ``record``.

    Returns the last record saved: ``finalized`` on success, ``failed`` with Stripe's
    message when Stripe refused a call (4xx) or stayed unavailable through the retries; calling
    again later resumes. Invalid amounts raise InvalidArgument before any Stripe call.
    """
    if record.invoice_id != invoice.id:
        raise InvalidArgument(f"sync record of {record.invoice_id} given for {invoice.id}")
    amounts = _amounts(invoice)
    if record.state is SyncState.FINALIZED:
        return record
    step = _Step(client, settings, invoice, save, policy, sleep)
    try:
        record = _customer(step, record)
        record, status, present = _draft(step, record)
        if status == "draft":
            record = _items(step, record, amounts, present)
            record = _finalize(step, record)
        else:
            # Finalized before a crash lost the save: the lines were checked before finalizing.
            record = step.advance(record, state=SyncState.FINALIZED)
    except (stripe.StripeError, _Mismatch) as exc:
        message = _message(exc)
        log.warning("Stripe sync of invoice %s failed: %s", invoice.id, message)
        record = replace(record, state=SyncState.FAILED, error=message)
        save(record)
        return record
    log.info("invoice %s synced to Stripe invoice %s", invoice.id, record.stripe_invoice_id)
    return record


def _amounts(invoice: InvoiceToSync) -> dict[str, int]:
    """Minor-unit amount per line id; refuses an invoice Stripe would total differently."""
    amounts: dict[str, int] = {}
    for line in invoice.lines:
        if line.id in amounts:
            raise InvalidArgument(f"invoice {invoice.id} has line {line.id} twice")
        if line.period_start.tzinfo is None or line.period_end.tzinfo is None:
            raise InvalidArgument(f"line {line.id} has a period without a time zone")
        amounts[line.id] = to_minor_units(line.amount, invoice.currency)
    if sum(amounts.values()) != to_minor_units(invoice.total, invoice.currency):
        raise InvalidArgument(
            f"invoice {invoice.id} total {invoice.total} is not the sum of its lines"
        )
    return amounts


def _customer(step: _Step, record: SyncRecord) -> SyncRecord:
    if record.stripe_customer_id is not None:
        return record
    invoice = step.invoice
    metadata = {CUSTOMER_KEY: invoice.customer_key}
    if invoice.customer_stripe_id is not None:
        # Link an existing Stripe customer: name it as Meterline's, keep its own name.
        stripe_id = invoice.customer_stripe_id
        customer = step.call(
            "update customer",
            lambda: step.client.v1.customers.update(
                stripe_id, params={"metadata": metadata}, options=step.options("customer")
            ),
        )
    else:
        customer = _find_customer(step) or step.call(
            "create customer",
            lambda: step.client.v1.customers.create(
                params={"name": invoice.customer_name, "metadata": metadata},
                options=step.options("customer"),
            ),
        )
    return step.advance(record, state=SyncState.CUSTOMER_SYNCED, stripe_customer_id=customer.id)


def _find_customer(step: _Step) -> Any:
    """The Stripe customer an earlier sync made for this Meterline customer, if any.

    The idempotency key covers a crash within a day; this covers later retries and invoices
    whose caller did not keep the Stripe id. Search lags writes by about a minute, which the key
    covers. The oldest match wins, so every invoice of a customer picks the same one.
    """
    key = step.invoice.customer_key.replace("\\", "\\\\").replace("'", "\\'")
    try:
        found = step.call(
            "search customers",
            lambda: step.client.v1.customers.search(
                params={"query": f"metadata['{CUSTOMER_KEY}']:'{key}'", "limit": 100}
            ),
        )
    except stripe.InvalidRequestError as exc:
        # Search is not offered to every Stripe account (India); the key still protects a day.
        log.warning("Stripe customer search unavailable: %s", exc.user_message)
        return None
    return min(found.data, key=lambda c: (c.created, c.id), default=None)


def _draft(step: _Step, record: SyncRecord) -> tuple[SyncRecord, str, dict[str, list[int]]]:
    """The Stripe invoice (found or created), its status, and the lines it already holds."""
    assert record.stripe_customer_id is not None
    customer_id = record.stripe_customer_id
    stripe_invoice: Any = None
    if record.stripe_invoice_id is not None:
        invoice_id = record.stripe_invoice_id
        stripe_invoice = step.call(
            "read invoice", lambda: step.client.v1.invoices.retrieve(invoice_id)
        )
    else:
        stripe_invoice = _find_invoice(step, customer_id)
    if stripe_invoice is None:
        params: InvoiceCreateParams = {
            "customer": customer_id,
            "auto_advance": False,
            "collection_method": step.settings.collection_method.value,
            "currency": stripe_currency(step.invoice.currency),
            "metadata": {INVOICE_KEY: step.invoice.id, INVOICE_NUMBER_KEY: step.invoice.number},
            "pending_invoice_items_behavior": "exclude",
            "automatic_tax": {"enabled": step.settings.automatic_tax},
        }
        if step.settings.collection_method is CollectionMethod.SEND_INVOICE:
            assert step.settings.days_until_due is not None
            params["days_until_due"] = step.settings.days_until_due
        stripe_invoice = step.call(
            "create invoice",
            lambda: step.client.v1.invoices.create(params=params, options=step.options("create")),
        )
    if record.stripe_invoice_id != stripe_invoice.id:
        record = step.advance(
            record, state=SyncState.INVOICE_CREATED, stripe_invoice_id=stripe_invoice.id
        )
    status = str(stripe_invoice.status)
    present = _present_lines(step, stripe_invoice.id) if status == "draft" else {}
    return record, status, present


def _find_invoice(step: _Step, customer_id: str) -> Any:
    """The customer's Stripe invoice for this Meterline invoice, if an earlier run made one.

    A list, not Stripe's search: search lags writes by up to a minute.
    """

    def page(after: str | None) -> Any:
        params: InvoiceListParams = {"customer": customer_id, "limit": 100}
        if after is not None:
            params["starting_after"] = after
        return step.client.v1.invoices.list(params=params)

    found = [
        inv
        for inv in _each(step, "list invoices", page)
        if metadata(inv).get(INVOICE_KEY) == step.invoice.id
    ]
    if len(found) > 1:
        raise _Mismatch(
            f"Stripe has {len(found)} invoices for Meterline invoice {step.invoice.id}: "
            + ", ".join(inv.id for inv in found)
        )
    return found[0] if found else None


def _present_lines(step: _Step, stripe_invoice_id: str) -> dict[str, list[int]]:
    """Amounts of the draft's lines by Meterline line id (a list, to see duplicates)."""

    def page(after: str | None) -> Any:
        params: InvoiceLineItemListParams = {"limit": 100}
        if after is not None:
            params["starting_after"] = after
        return step.client.v1.invoices.line_items.list(stripe_invoice_id, params=params)

    present: dict[str, list[int]] = {}
    for line in _each(step, "list invoice lines", page):
        present.setdefault(metadata(line).get(LINE_KEY, ""), []).append(int(line.amount))
    return present


def _each(step: _Step, what: str, page: Callable[[str | None], Any]) -> Iterator[Any]:
    """Every object of a Stripe list, page by page, each page retried on its own."""
    after: str | None = None
    while True:
        listed = step.call(what, functools.partial(page, after))
        yield from listed.data
        if not listed.has_more or not listed.data:
            return
        after = listed.data[-1].id


def _items(
    step: _Step, record: SyncRecord, amounts: dict[str, int], present: dict[str, list[int]]
) -> SyncRecord:
    """One invoice item per line not yet on the draft, then a check that the draft is exact."""
    assert record.stripe_customer_id is not None and record.stripe_invoice_id is not None
    customer_id, invoice_id = record.stripe_customer_id, record.stripe_invoice_id
    currency = stripe_currency(step.invoice.currency)
    for line in step.invoice.lines:
        if line.id not in present:
            present[line.id] = [
                _create_item(step, line, amounts[line.id], customer_id, invoice_id, currency)
            ]
        if line.id not in record.synced_line_ids:
            record = step.advance(record, synced_line_ids=(*record.synced_line_ids, line.id))
    extra = sorted(set(present) - set(amounts))
    if extra:
        raise _Mismatch(f"Stripe invoice {invoice_id} has lines Meterline did not send: {extra}")
    for line_id, amount in amounts.items():
        if present[line_id] != [amount]:
            raise _Mismatch(
                f"Stripe invoice {invoice_id} has {present[line_id]} for line {line_id}, "
                f"expected [{amount}]"
            )
    return step.advance(record, state=SyncState.ITEMS_SYNCED)


def _create_item(
    step: _Step,
    line: LineToSync,
    amount: int,
    customer_id: str,
    invoice_id: str,
    currency: str,
) -> int:
    params: InvoiceItemCreateParams = {
        "customer": customer_id,
        "invoice": invoice_id,
        "amount": amount,
        "currency": currency,
        "description": line.description,
        "period": {
            "start": int(line.period_start.timestamp()),
            "end": int(line.period_end.timestamp()),
        },
        "metadata": {LINE_KEY: line.id, INVOICE_KEY: step.invoice.id},
    }
    item = step.call(
        f"create item for line {line.id}",
        lambda: step.client.v1.invoice_items.create(
            params=params, options=step.options(f"line-{line.id}")
        ),
    )
    return int(item.amount)


def _finalize(step: _Step, record: SyncRecord) -> SyncRecord:
    """Finalize with ``auto_advance`` on, so Stripe charges or sends the invoice itself."""
    assert record.stripe_invoice_id is not None
    invoice_id = record.stripe_invoice_id
    finalized = step.call(
        "finalize invoice",
        lambda: step.client.v1.invoices.finalize_invoice(
            invoice_id, params={"auto_advance": True}, options=step.options("finalize")
        ),
    )
    expected = to_minor_units(step.invoice.total, step.invoice.currency)
    # The subtotal, not the total: Stripe's automatic tax adds to the total on purpose.
    if finalized.subtotal != expected:
        # Too late to stop Stripe, but finance must see it.
        log.error(
            "Stripe invoice %s subtotal %s differs from Meterline invoice %s total %s",
            invoice_id,
            finalized.subtotal,
            step.invoice.id,
            expected,
        )
    return step.advance(record, state=SyncState.FINALIZED)


def _message(exc: Exception) -> str:
    """Stripe's own message (safe to show: it never holds the API key in full)."""
    if isinstance(exc, stripe.StripeError):
        status = f"HTTP {exc.http_status}" if exc.http_status else "no response"
        return f"Stripe {status}: {exc.user_message or str(exc)}"
    return str(exc)
