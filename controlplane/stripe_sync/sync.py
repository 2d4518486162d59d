"""Issued invoice -> Stripe invoice, one resumable step at a time (OpenMeter's Stripe app flow).

customer -> draft invoice (``auto_advance=false``) -> one invoice item per line -> finalize,
then what Meterline decided since: mark-paid -> ``pay`` with ``paid_out_of_band``; void ->
``void`` (a draft is deleted, with its items). ``save`` persists the record after every step; a
sync that crashed resumes from the saved record. Every write carries an idempotency key derived
from Meterline ids (the customer's key from the customer, the rest from the invoice), so a step
repeated after a crash replays Stripe's first answer instead of acting twice. Stripe forgets
keys after 24 hours, so the customer, the draft and its items are also looked up before
creating, and the invoice's status is re-read before paying or voiding it.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import stripe

from controlplane.errors import InvalidArgument
from controlplane.stripe_sync.money import stripe_currency, to_minor_units
from controlplane.stripe_sync.retry import RetryPolicy, call_with_retry
from controlplane.stripe_sync.types import (
    CollectionMethod,
    CustomerLinks,
    InvoiceToSync,
    LineToSync,
    StripeSettings,
    SyncBlocked,
    SyncRecord,
    SyncState,
    SyncTarget,
)
from controlplane.tracing import traced_stripe_http_client

if TYPE_CHECKING:
    from stripe.params import (
        InvoiceCreateParams,
        InvoiceItemCreateParams,
        InvoiceItemListParams,
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
        settings.api_key,
        base_addresses={"api": settings.api_base},
        max_network_retries=0,
        # A CLIENT span per Stripe call when tracing is on (controlplane.tracing).
        http_client=traced_stripe_http_client(),
    )


def metadata(obj: Any) -> dict[str, str]:
    """A Stripe object's metadata as a plain dict (SDK objects are not dicts)."""
    return {str(k): str(v) for k, v in obj.metadata.to_dict().items()}


def idempotency_key(invoice_id: str, step: str) -> str:
    """``meterline-invoice-<id>-<step>``: the same step of the same invoice, the same key."""
    return f"meterline-invoice-{invoice_id}-{step}"


_PLAIN_KEY = re.compile(r"[A-Za-z0-9._-]{1,100}")


def customer_idempotency_key(customer_key: str, step: str) -> str:
    """``meterline-customer-<key>-<step>``: one key per Meterline customer, whichever invoice.

    Per customer, not per invoice: two invoices of a new customer synced at once must get one
    Stripe customer. A key Stripe's 255 characters cannot hold plainly is hashed (":" never
    occurs in a plain key, so the two forms cannot collide).
    """
    if _PLAIN_KEY.fullmatch(customer_key):
        return f"meterline-customer-{customer_key}-{step}"
    digest = hashlib.sha256(customer_key.encode()).hexdigest()
    return f"meterline-customer-sha256:{digest}-{step}"


class _Unlinked:
    """No stored links (the engine used alone): the invoice's own link, no cross-sync lock.

    The per-customer idempotency key still gives one Stripe customer within Stripe's 24 hours.
    """

    def __init__(self, invoice: InvoiceToSync) -> None:
        self._stripe_id = invoice.customer_stripe_id

    @contextmanager
    def lock(self, customer_key: str) -> Iterator[None]:
        yield

    def get(self, customer_key: str) -> str | None:
        return self._stripe_id

    def link(self, customer_key: str, stripe_customer_id: str) -> str:
        return stripe_customer_id


@dataclass(frozen=True)
class _Step:
    client: stripe.StripeClient
    settings: StripeSettings
    invoice: InvoiceToSync
    save: Callable[[SyncRecord], None]
    policy: RetryPolicy
    sleep: Callable[[float], None]
    links: CustomerLinks

    def call(self, what: str, call: Callable[[], Any]) -> Any:
        return call_with_retry(call, what=what, policy=self.policy, sleep=self.sleep)

    def options(self, step: str) -> stripe.RequestOptions:
        # Retries are ours (bounded, with backoff); an SDK retry inside each would multiply them.
        return {"idempotency_key": idempotency_key(self.invoice.id, step), "max_network_retries": 0}

    def customer_options(self, step: str) -> stripe.RequestOptions:
        key = customer_idempotency_key(self.invoice.customer_key, step)
        return {"idempotency_key": key, "max_network_retries": 0}

    def advance(self, record: SyncRecord, **changes: Any) -> SyncRecord:
        record = replace(record, error=None, **changes)
        self.save(record)
        return record


class _Mismatch(Exception):
    """The Stripe draft does not hold exactly the Meterline lines; finalizing would be wrong."""


class _Refused(Exception):
    """Stripe's invoice is in a state that cannot become what Meterline decided."""


def sync_invoice(
    *,
    client: stripe.StripeClient,
    settings: StripeSettings,
    invoice: InvoiceToSync,
    record: SyncRecord,
    save: Callable[[SyncRecord], None],
    links: CustomerLinks | None = None,
    policy: RetryPolicy = RetryPolicy(),  # noqa: B008 - frozen, shared safely
    sleep: Callable[[float], None] = time.sleep,
) -> SyncRecord:
    """Bring the Stripe invoice of ``invoice`` to its target, resuming from ``record``.

    Target ``open``: a finalized Stripe invoice Stripe collects (``finalized``). ``paid``: the
    same finalized without collection and paid out of band (``paid``). ``void``: voided, its
    draft deleted, or nothing ever sent (``voided``). Returns the last record saved; ``failed``
    with Stripe's message when Stripe refused a call (4xx), stayed unavailable through the
    retries, or holds an invoice that cannot reach the target (a paid one cannot be voided);
    calling again later resumes. ``links`` (the caller's storage) makes one Stripe customer per
    Meterline customer across concurrent syncs. Invalid amounts raise InvalidArgument before
    any Stripe call.
    """
    if record.invoice_id != invoice.id:
        raise InvalidArgument(f"sync record of {record.invoice_id} given for {invoice.id}")
    amounts = _amounts(invoice)
    if record.done(invoice.target):
        return record
    step = _Step(client, settings, invoice, save, policy, sleep, links or _Unlinked(invoice))
    try:
        if invoice.target is SyncTarget.VOID:
            record = _void(step, record)
        else:
            record = _customer(step, record)
            record, status, present = _draft(step, record)
            if status == "draft":
                record = _items(step, record, amounts, present)
                status = _finalize(step, record)
            # Else finalized before a crash lost the save: the lines were checked before that.
            record = step.advance(record, state=SyncState.FINALIZED)
            if invoice.target is SyncTarget.PAID:
                record = _pay(step, record, status)
    except (stripe.StripeError, _Mismatch, _Refused, SyncBlocked) as exc:
        message = _message(exc)
        log.warning("Stripe sync of invoice %s failed: %s", invoice.id, message)
        record = replace(record, state=SyncState.FAILED, error=message)
        save(record)
        return record
    log.info(
        "invoice %s synced to Stripe invoice %s (%s)",
        invoice.id,
        record.stripe_invoice_id,
        record.state.value,
    )
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
    """The customer's Stripe customer: the linked one, else found or created, then linked.

    All under the customer's lock, so a second invoice of the same customer waits and then
    finds the link the first stored, instead of creating a second Stripe customer.
    """
    if record.stripe_customer_id is not None:
        return record
    invoice = step.invoice
    metadata = {CUSTOMER_KEY: invoice.customer_key}
    with step.links.lock(invoice.customer_key):
        linked = step.links.get(invoice.customer_key)
        if linked is not None:
            # Name a linked Stripe customer as Meterline's; keep its own name.
            customer = step.call(
                "update customer",
                lambda: step.client.v1.customers.update(
                    linked,
                    params={"metadata": metadata},
                    options=step.customer_options(f"link-{linked}"),
                ),
            )
            stripe_id = str(customer.id)
        else:
            customer = _find_customer(step) or step.call(
                "create customer",
                lambda: step.client.v1.customers.create(
                    params={"name": invoice.customer_name, "metadata": metadata},
                    options=step.customer_options("create"),
                ),
            )
            stripe_id = step.links.link(invoice.customer_key, str(customer.id))
    return step.advance(record, state=SyncState.CUSTOMER_SYNCED, stripe_customer_id=stripe_id)


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


def _finalize(step: _Step, record: SyncRecord) -> str:
    """Finalize; the Stripe status after it (``paid`` when nothing is due).

    ``auto_advance`` on for an invoice Stripe collects; off for one Meterline marked paid, so
    Stripe never charges it between the finalize and the out-of-band payment.
    """
    assert record.stripe_invoice_id is not None
    invoice_id = record.stripe_invoice_id
    collect = step.invoice.target is SyncTarget.OPEN
    finalized = step.call(
        "finalize invoice",
        lambda: step.client.v1.invoices.finalize_invoice(
            invoice_id,
            params={"auto_advance": collect},
            options=step.options("finalize" if collect else "finalize-paid"),
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
    return str(finalized.status)


# Stripe statuses an invoice can be paid or voided from.
_ACTIONABLE = ("open", "uncollectible")


def _pay(step: _Step, record: SyncRecord, status: str) -> SyncRecord:
    """Mark-paid in Meterline -> ``pay`` with ``paid_out_of_band`` (no money moves in Stripe).

    ``status`` was read (or returned) just before, so a pay whose answer was lost is not sent
    again once Stripe says ``paid``; within a day the idempotency key replays it anyway.
    """
    assert record.stripe_invoice_id is not None
    invoice_id = record.stripe_invoice_id
    if status in _ACTIONABLE:
        status = _act(
            step,
            invoice_id,
            "pay invoice out of band",
            lambda: step.client.v1.invoices.pay(
                invoice_id, params={"paid_out_of_band": True}, options=step.options("pay")
            ),
            reached="paid",
        )
    if status != "paid":
        raise _Refused(
            f"Meterline invoice {step.invoice.number} is paid but Stripe invoice {invoice_id} "
            f"is {status}; Stripe cannot pay a {status} invoice: reconcile it in Stripe"
        )
    return step.advance(record, state=SyncState.PAID)


def _void(step: _Step, record: SyncRecord) -> SyncRecord:
    """Void in Meterline -> the Stripe invoice voided, or its draft deleted with its items.

    No customer in the record means no Stripe invoice was ever created (the customer step is
    saved before the invoice is created): nothing to undo. Stripe cannot void a paid invoice:
    that is reported (``failed``), never papered over.
    """
    if record.stripe_customer_id is None:
        return step.advance(record, state=SyncState.VOIDED)
    current = _current_invoice(step, record)
    if current is None:
        return step.advance(record, state=SyncState.VOIDED)
    invoice_id, status = str(current.id), str(current.status)
    if record.stripe_invoice_id != invoice_id:
        record = step.advance(record, stripe_invoice_id=invoice_id)
    if status == "draft":
        _delete_draft(step, invoice_id)
        return step.advance(record, state=SyncState.VOIDED)
    if status in _ACTIONABLE:
        status = _act(
            step,
            invoice_id,
            "void invoice",
            lambda: step.client.v1.invoices.void_invoice(invoice_id, options=step.options("void")),
            reached="void",
        )
    if status == "paid":
        raise _Refused(
            f"Stripe invoice {invoice_id} is paid: Stripe cannot void a paid invoice. Refund "
            f"it in Stripe (a credit note), or mark Meterline invoice {step.invoice.number} "
            "paid instead of void"
        )
    if status != "void":
        raise _Refused(f"Stripe invoice {invoice_id} is {status}; it cannot be voided")
    return step.advance(record, state=SyncState.VOIDED)


def _act(step: _Step, invoice_id: str, what: str, call: Callable[[], Any], *, reached: str) -> str:
    """Pay or void; the Stripe status after it.

    When Stripe refuses because the invoice moved since it was read (the customer paid it,
    someone voided it in the Dashboard), the status it moved to is judged instead of failing.
    """
    try:
        step.call(what, call)
    except stripe.InvalidRequestError:
        moved = step.call("read invoice", lambda: step.client.v1.invoices.retrieve(invoice_id))
        if str(moved.status) in _ACTIONABLE:
            raise
        return str(moved.status)
    return reached


def _current_invoice(step: _Step, record: SyncRecord) -> Any:
    """The Stripe invoice as it is now (None if it never existed or its draft was deleted)."""
    assert record.stripe_customer_id is not None
    if record.stripe_invoice_id is None:
        return _find_invoice(step, record.stripe_customer_id)
    invoice_id = record.stripe_invoice_id
    try:
        return step.call("read invoice", lambda: step.client.v1.invoices.retrieve(invoice_id))
    except stripe.InvalidRequestError as exc:
        if exc.http_status == 404:
            return None
        raise


def _delete_draft(step: _Step, invoice_id: str) -> None:
    """Delete a draft's items, then the draft (DELETE takes no idempotency key: 404 = done).

    The items first: whatever Stripe does with the items of a deleted draft, none of
    Meterline's is left pending on the customer for a later invoice to sweep up.
    """

    def page(after: str | None) -> Any:
        params: InvoiceItemListParams = {"invoice": invoice_id, "limit": 100}
        if after is not None:
            params["starting_after"] = after
        return step.client.v1.invoice_items.list(params=params)

    for item_id in [str(item.id) for item in _each(step, "list invoice items", page)]:
        _delete(
            step, f"delete invoice item {item_id}", step.client.v1.invoice_items.delete, item_id
        )
    _delete(step, "delete draft invoice", step.client.v1.invoices.delete, invoice_id)


def _delete(step: _Step, what: str, delete: Callable[[str], Any], id: str) -> None:
    try:
        step.call(what, lambda: delete(id))
    except stripe.InvalidRequestError as exc:
        # Deleted by an earlier attempt whose answer was lost.
        if exc.http_status != 404:
            raise


def _message(exc: Exception) -> str:
    """Stripe's own message (safe to show: it never holds the API key in full)."""
    if isinstance(exc, stripe.StripeError):
        status = f"HTTP {exc.http_status}" if exc.http_status else "no response"
        return f"Stripe {status}: {exc.user_message or str(exc)}"
    return str(exc)
