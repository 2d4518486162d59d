"""The Stripe app of a control plane: issued, voided and paid invoices synced, webhooks applied.

Glue between stored invoices and the storage-free ``stripe_sync`` engine. Two locks
(``locks``: PostgreSQL advisory locks across replicas, a process lock on SQLite):

- per invoice, held for the whole sync: two replicas never sync one invoice at once. The job
  and the issue hook skip an invoice being synced elsewhere; void, mark-paid and retry wait for
  it, and a sync re-reads the invoice's state before letting go, so a void or mark-paid made
  while the invoice was syncing is carried out by whichever sync holds the lock;
- per customer, held while the sync looks up or creates the customer's Stripe customer: one
  Stripe customer per Meterline customer, whichever replica syncs which invoice, and a stored
  link is never replaced by a sync.

The ``SyncRecord`` is saved after every step, so a sync that died half-way resumes where it
stopped (``sync_pending`` on the next job run, or ``meterline invoice retry-sync``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import stripe
from sqlalchemy import Connection

from controlplane.clock import Clock
from controlplane.customers import storage as customers
from controlplane.errors import FailedPrecondition
from controlplane.invoicing import lifecycle, storage
from controlplane.invoicing.storage import InvoiceRow
from controlplane.invoicing.types import InvoiceLine, InvoiceState
from controlplane.notifications.invoices import emit_invoice_event
from controlplane.storage.db import Database
from controlplane.stripe_sync import (
    InvoiceToSync,
    LineToSync,
    PaymentState,
    RetryPolicy,
    StripeSettings,
    SyncRecord,
    SyncState,
    WebhookOutcome,
    handle_webhook,
    new_client,
    sync_invoice,
)
from controlplane.stripe_sync import storage as sync_storage
from controlplane.stripe_sync.locks import hold
from controlplane.stripe_sync.types import SyncBlocked, SyncTarget

log = logging.getLogger(__name__)

# Meterline invoice state -> what its Stripe invoice must become.
TARGETS = {
    InvoiceState.ISSUED: SyncTarget.OPEN,
    InvoiceState.PAYMENT_FAILED: SyncTarget.OPEN,
    InvoiceState.PAID: SyncTarget.PAID,
    InvoiceState.VOID: SyncTarget.VOID,
}
SYNCED_STATES = tuple(TARGETS)
# How long void, mark-paid and retry wait for a sync running elsewhere, and a sync for the
# customer's lock (held for a Stripe search and create, seconds at most).
WAIT_SECONDS = 30.0
# A void or mark-paid landing while a sync runs makes it go round again; bounded.
MAX_ROUNDS = 3


def line_description(line: InvoiceLine) -> str:
    """What Stripe shows: "feature (quantity x unit price)" for price lines."""
    name = line.feature or line.rate_card
    if line.late_usage:
        return line.description
    if line.unit_price is not None and line.type.value in ("flat", "usage"):
        return f"{name} ({line.quantity} x {line.unit_price})"
    return line.description


class _DatabaseLinks:
    """``CustomerLinks`` on the ``stripe_customers`` table, under a per-customer lock."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    @contextmanager
    def lock(self, customer_key: str) -> Iterator[None]:
        with hold(self._db, f"stripe-customer:{customer_key}", wait=WAIT_SECONDS) as got:
            if not got:
                raise SyncBlocked(
                    f"customer {customer_key!r} is being linked to Stripe elsewhere for over "
                    f"{WAIT_SECONDS:.0f}s"
                )
            yield

    def get(self, customer_key: str) -> str | None:
        with self._db.begin() as conn:
            return sync_storage.stripe_customer_id(conn, customer_key)

    def link(self, customer_key: str, stripe_customer_id: str) -> str:
        with self._db.begin() as conn:
            return sync_storage.link_stripe_customer_if_absent(
                conn, customer_key, stripe_customer_id, now=self._clock.now()
            )


def _record_of(row: InvoiceRow) -> SyncRecord | None:
    return sync_storage.sync_record_from_json(row.sync_record) if row.sync_record else None


def needs_sync(row: InvoiceRow) -> bool:
    """Whether Stripe does not yet hold what the invoice's state asks, and no one gave up.

    A void invoice never sent to Stripe has nothing to undo; a failed sync waits for
    ``retry-sync`` (or a void / mark-paid, which start it again).
    """
    target = TARGETS.get(row.state)
    if target is None:
        return False
    record = _record_of(row)
    if record is None:
        return target is not SyncTarget.VOID
    return record.state is not SyncState.FAILED and not record.done(target)


class StripeApp:
    """Syncs issued invoices to Stripe (and their void / paid) and applies webhook outcomes."""

    def __init__(
        self,
        *,
        db: Database,
        settings: StripeSettings,
        clock: Clock,
        client: stripe.StripeClient | None = None,
        policy: RetryPolicy | None = None,
        on_sync_failed: Callable[[], None] | None = None,
    ) -> None:
        self.db = db
        # Told about every sync that ends failed (metrics).
        self._on_sync_failed = on_sync_failed
        self.settings = settings
        self.clock = clock
        self.client = client or new_client(settings)
        self.policy = policy or RetryPolicy()
        self._links = _DatabaseLinks(db, clock)
        self._tasks: set[asyncio.Task[SyncRecord | None]] = set()

    # Sync ---------------------------------------------------------------------------------

    def _to_sync(self, conn: Connection, invoice_id: str) -> tuple[InvoiceToSync, SyncRecord]:
        row = storage.get_invoice_row(conn, invoice_id)
        if row.state not in TARGETS:
            raise FailedPrecondition(
                f"invoice {invoice_id!r} is {row.state.value}; only issued invoices are synced"
            )
        assert row.number is not None and row.total is not None
        customer = customers.get_customer(conn, row.customer)
        stripe_id = sync_storage.stripe_customer_id(conn, row.customer)
        lines = tuple(
            LineToSync(
                id=line.id,
                description=line_description(line),
                amount=line.amount,
                period_start=line.period_start,
                period_end=line.period_end,
            )
            for line in storage.stored_lines(conn, invoice_id)
        )
        invoice = InvoiceToSync(
            id=row.id,
            number=row.number,
            customer_key=customer.key,
            customer_name=customer.name,
            customer_stripe_id=stripe_id,
            currency=row.currency,
            lines=lines,
            total=row.total,
            target=TARGETS[row.state],
        )
        return invoice, _record_of(row) or SyncRecord(invoice_id=row.id)

    def _save(self, record: SyncRecord) -> None:
        now = self.clock.now()
        with self.db.begin() as conn:
            sync_storage.save_sync_record(conn, record, now=now)
            if record.state is SyncState.FAILED:
                invoice = lifecycle.get_invoice(conn, record.invoice_id)
                emit_invoice_event(conn, invoice, "invoice.sync_failed", now=now)

    def sync(self, invoice_id: str, *, wait: bool = False) -> SyncRecord | None:
        """Bring the invoice's Stripe invoice to what its state asks (blocking).

        None if another replica is syncing it now (``wait``: after waiting for it a while), or
        if the invoice is void and was never sent to Stripe.
        """
        # Named by the bare id, as replicas before 0012 named it: a rolling upgrade still locks.
        with hold(self.db, invoice_id, wait=WAIT_SECONDS if wait else None) as got:
            if not got:
                log.info("invoice %s is being synced elsewhere; skipped", invoice_id)
                return None
            result: SyncRecord | None = None
            for _ in range(MAX_ROUNDS):
                # Read under the lock: the record another replica saved is the one to resume,
                # and the state a void or mark-paid left is the one to reach.
                with self.db.begin() as conn:
                    row = storage.get_invoice_row(conn, invoice_id)
                    if row.state is InvoiceState.VOID and row.sync_record is None:
                        return result
                    invoice, record = self._to_sync(conn, invoice_id)
                if record.done(invoice.target):
                    return record
                if record.state is SyncState.FAILED:
                    record = SyncRecord(
                        invoice_id=record.invoice_id,
                        state=SyncState.PENDING,
                        stripe_customer_id=record.stripe_customer_id,
                        stripe_invoice_id=record.stripe_invoice_id,
                        synced_line_ids=record.synced_line_ids,
                    )
                result = sync_invoice(
                    client=self.client,
                    settings=self.settings,
                    invoice=invoice,
                    record=record,
                    save=self._save,
                    links=self._links,
                    policy=self.policy,
                )
                if result.state is SyncState.FAILED:
                    if self._on_sync_failed is not None:
                        self._on_sync_failed()
                    return result
            return result

    def mark_pending(self, invoice_id: str) -> None:
        """Record that an invoice waits for its sync (visible before it starts).

        A new record after an issue; after a void or mark-paid, the record keeps its Stripe
        ids and says ``pending`` until Stripe holds the new state.
        """
        now = self.clock.now()
        with self.db.begin() as conn:
            row = storage.get_invoice_row(conn, invoice_id)
            record = _record_of(row)
            target = TARGETS.get(row.state)
            if record is None:
                if target is not None and target is not SyncTarget.VOID:
                    sync_storage.save_sync_record(conn, SyncRecord(invoice_id=invoice_id), now=now)
            elif (
                target is not None
                and not record.done(target)
                # A record mid-way belongs to a sync running now; it goes round again itself.
                and (record.synced or record.state is SyncState.FAILED)
            ):
                sync_storage.save_sync_record(
                    conn,
                    SyncRecord(
                        invoice_id=invoice_id,
                        state=SyncState.PENDING,
                        stripe_customer_id=record.stripe_customer_id,
                        stripe_invoice_id=record.stripe_invoice_id,
                        synced_line_ids=record.synced_line_ids,
                    ),
                    now=now,
                )

    def pending_ids(self) -> list[str]:
        """Invoices whose Stripe invoice is not yet what their state asks, and not failed."""
        with self.db.begin() as conn:
            rows = storage.list_invoice_rows(conn, states=SYNCED_STATES, top_ups=True)
        return [r.id for r in rows if needs_sync(r)]

    def sync_pending(self) -> list[SyncRecord | None]:
        return [self.sync(id) for id in self.pending_ids()]

    async def on_issued(self, invoice_id: str) -> None:
        """Start the sync of a just-issued invoice in the background."""
        await asyncio.to_thread(self.mark_pending, invoice_id)
        self._start(invoice_id, wait=False)

    async def on_settled(self, invoice_id: str) -> None:
        """Carry a void or mark-paid made in Meterline to Stripe, in the background.

        Waits for a sync of the invoice running now (it may be the one creating the Stripe
        invoice this must void); a failure is left ``failed`` with Stripe's message.
        """
        await asyncio.to_thread(self.mark_pending, invoice_id)
        self._start(invoice_id, wait=True)

    def _start(self, invoice_id: str, *, wait: bool) -> None:
        task = asyncio.create_task(asyncio.to_thread(self._sync_logged, invoice_id, wait))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _sync_logged(self, invoice_id: str, wait: bool) -> SyncRecord | None:
        try:
            return self.sync(invoice_id, wait=wait)
        except Exception:
            log.exception("Stripe sync of invoice %s crashed; the job retries it", invoice_id)
            return None

    async def retry(self, invoice_id: str) -> None:
        """Run the sync now (after it failed); waits for it."""
        await asyncio.to_thread(self.sync, invoice_id, wait=True)

    async def drain(self) -> None:
        """Wait for the background syncs started so far."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # Webhooks -----------------------------------------------------------------------------

    def webhook(self, *, payload: bytes, signature: str | None) -> WebhookOutcome:
        """Verify a delivery and apply its state unless the invoice is already there."""
        outcome = handle_webhook(
            payload=payload,
            signature=signature,
            settings=self.settings,
            client=self.client,
            policy=self.policy,
        )
        if outcome.meterline_invoice_id is None or outcome.state is None:
            return outcome
        state = {
            PaymentState.PAID: InvoiceState.PAID,
            PaymentState.PAYMENT_FAILED: InvoiceState.PAYMENT_FAILED,
            PaymentState.VOID: InvoiceState.VOID,
        }[outcome.state]
        now = self.clock.now()
        try:
            with self.db.begin() as conn:
                lifecycle.set_payment_state(
                    conn, id=outcome.meterline_invoice_id, state=state, now=now
                )
        except FailedPrecondition as exc:
            # A final state (paid, void) is not undone by a late or reordered event.
            log.info("webhook %s not applied: %s", outcome.event_id, exc)
        return outcome
