"""The Stripe app of a control plane: issued invoices synced, webhooks applied.

Glue between stored invoices and the storage-free ``stripe_sync`` engine. The sync of one
invoice runs under a per-invoice lock held for its whole duration: a PostgreSQL advisory lock
(so two replicas never sync the same invoice at once; the second skips it) or, on SQLite, a
process-local lock. The engine's idempotency keys make even an overlapping sync harmless; the
lock keeps it from happening. The ``SyncRecord`` is saved after every step, so a sync that
died half-way resumes where it stopped (``sync_pending`` on the next job run, or
``meterline invoice retry-sync``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import stripe
from sqlalchemy import Connection, text

from controlplane.clock import Clock
from controlplane.customers import storage as customers
from controlplane.errors import FailedPrecondition
from controlplane.invoicing import lifecycle, storage
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

log = logging.getLogger(__name__)

SYNCED_STATES = (InvoiceState.ISSUED, InvoiceState.PAID, InvoiceState.PAYMENT_FAILED)
_LOCAL_LOCKS: dict[str, threading.Lock] = {}
_LOCAL_LOCKS_GUARD = threading.Lock()


def _lock_key(invoice_id: str) -> int:
    # A stable signed 64-bit key per invoice for pg_try_advisory_lock.
    return int.from_bytes(hashlib.sha256(invoice_id.encode()).digest()[:8], "big", signed=True)


def line_description(line: InvoiceLine) -> str:
    """What Stripe shows: "feature (quantity x unit price)" for price lines."""
    name = line.feature or line.rate_card
    if line.late_usage:
        return line.description
    if line.unit_price is not None and line.type.value in ("flat", "usage"):
        return f"{name} ({line.quantity} x {line.unit_price})"
    return line.description


class StripeApp:
    """Syncs issued invoices to Stripe and applies webhook outcomes."""

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
        self._tasks: set[asyncio.Task[SyncRecord | None]] = set()

    # Locking ------------------------------------------------------------------------------

    @contextmanager
    def _invoice_lock(self, invoice_id: str) -> Iterator[bool]:
        """True while this process holds the invoice's sync lock; False if someone else does."""
        if self.db.engine.dialect.name == "postgresql":
            with self.db.engine.connect() as conn:
                key = _lock_key(invoice_id)
                got = bool(
                    conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar()
                )
                conn.commit()
                try:
                    yield got
                finally:
                    if got:
                        conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                        conn.commit()
            return
        with _LOCAL_LOCKS_GUARD:
            lock = _LOCAL_LOCKS.setdefault(invoice_id, threading.Lock())
        got = lock.acquire(blocking=False)
        try:
            yield got
        finally:
            if got:
                lock.release()

    # Sync ---------------------------------------------------------------------------------

    def _to_sync(self, conn: Connection, invoice_id: str) -> tuple[InvoiceToSync, SyncRecord]:
        row = storage.get_invoice_row(conn, invoice_id)
        if row.state not in SYNCED_STATES:
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
        )
        record = (
            sync_storage.sync_record_from_json(row.sync_record)
            if row.sync_record is not None
            else SyncRecord(invoice_id=row.id)
        )
        return invoice, record

    def _save(self, customer_key: str, record: SyncRecord) -> None:
        now = self.clock.now()
        with self.db.begin() as conn:
            sync_storage.save_sync_record(conn, record, now=now)
            if record.stripe_customer_id:
                sync_storage.link_stripe_customer(
                    conn, customer_key, record.stripe_customer_id, now=now
                )
            if record.state is SyncState.FAILED:
                invoice = lifecycle.get_invoice(conn, record.invoice_id)
                emit_invoice_event(conn, invoice, "invoice.sync_failed", now=now)

    def sync(self, invoice_id: str) -> SyncRecord | None:
        """Sync one issued invoice (blocking); None if another replica is syncing it now."""
        with self._invoice_lock(invoice_id) as got:
            if not got:
                log.info("invoice %s is being synced elsewhere; skipped", invoice_id)
                return None
            # Read under the lock: the record another replica saved is the one to resume.
            with self.db.begin() as conn:
                invoice, record = self._to_sync(conn, invoice_id)
            if record.state is SyncState.FINALIZED:
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
                save=lambda r: self._save(invoice.customer_key, r),
                policy=self.policy,
            )
            if result.state is SyncState.FAILED and self._on_sync_failed is not None:
                self._on_sync_failed()
            return result

    def mark_pending(self, invoice_id: str) -> None:
        """Record that an issued invoice waits for its sync (visible before it starts)."""
        now = self.clock.now()
        with self.db.begin() as conn:
            row = storage.get_invoice_row(conn, invoice_id)
            if row.sync_record is None:
                sync_storage.save_sync_record(conn, SyncRecord(invoice_id=invoice_id), now=now)

    def pending_ids(self) -> list[str]:
        """Issued invoices whose sync has not finished and not failed (e.g. after a crash)."""
        with self.db.begin() as conn:
            rows = storage.list_invoice_rows(conn, states=SYNCED_STATES)
        return [
            r.id
            for r in rows
            if r.sync_state not in (SyncState.FINALIZED.value, SyncState.FAILED.value)
        ]

    def sync_pending(self) -> list[SyncRecord | None]:
        return [self.sync(id) for id in self.pending_ids()]

    async def on_issued(self, invoice_id: str) -> None:
        """Start the sync of a just-issued invoice in the background."""
        await asyncio.to_thread(self.mark_pending, invoice_id)
        task = asyncio.create_task(asyncio.to_thread(self._sync_logged, invoice_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _sync_logged(self, invoice_id: str) -> SyncRecord | None:
        try:
            return self.sync(invoice_id)
        except Exception:
            log.exception("Stripe sync of invoice %s crashed; the job retries it", invoice_id)
            return None

    async def retry(self, invoice_id: str) -> None:
        """Run the sync now (after it failed); waits for it."""
        await asyncio.to_thread(self.sync, invoice_id)

    async def drain(self) -> None:
        """Wait for the background syncs started so far."""
        if self._tasks:
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
