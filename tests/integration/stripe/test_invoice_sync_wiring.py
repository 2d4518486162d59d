"""Issued invoices synced to the Stripe emulator by the control plane; webhooks over HTTP.

Against a real control plane (grpc.aio, SQLite and PostgreSQL), the Stripe emulator and the
official SDK: issue -> Stripe invoice with the same lines and total; a failed sync is visible
and retryable; Stripe's webhooks move invoices to paid / payment_failed / void; two replicas
syncing at once create one Stripe invoice.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import grpc
import httpx
import pytest

from controlplane.clock import FrozenClock
from controlplane.declarative.apply import apply_document
from controlplane.invoicing import lifecycle
from controlplane.server import ControlPlane
from controlplane.storage.db import Database
from controlplane.stripe_sync import RetryPolicy, StripeSettings
from controlplane.stripe_sync.app import StripeApp
from controlplane.usage import storage as usage_storage
from controlplane.usage.types import TokenType, UsageEvent
from meterline.admin.v1 import (
    billing_pb2,
    billing_pb2_grpc,
    customers_pb2,
    customers_pb2_grpc,
)
from support.stripe_emulator import StripeEmulator

T0 = datetime(2026, 11, 1, tzinfo=UTC)
DOC = """\
_format_version: "3.0"
billing:
  features:
    - {key: tokens-in, meter: llm_tokens, filters: {type: input}}
  plans:
    - key: pro
      name: Pro
      currency: USD
      billing_cadence: P1M
      rate_cards:
        - {key: platform, price: {type: flat, amount: "10"}}
        - feature: tokens-in
          price:
            type: tiered
            mode: graduated
            tiers: [{up_to: "1000", unit_price: "0.01"}, {unit_price: "0.005"}]
          discounts: {percentage: "10"}
  customers:
    - {key: acme, name: Acme Corp, subjects: [acme-corp]}
  subscriptions:
    - {customer: acme, plan: pro, start: "2026-11-01T00:00:00Z"}
"""


@dataclass
class Plane:
    cp: ControlPlane
    app: StripeApp
    billing: billing_pb2_grpc.BillingServiceStub
    webhook_url: str
    customers: customers_pb2_grpc.CustomerServiceStub


def setup_usage(db: Database) -> None:
    apply_document(db, text=DOC, now=T0)
    with db.begin() as conn:
        usage_storage.insert_events(
            conn,
            [
                UsageEvent(
                    id="e1",
                    source="t",
                    type="llm.tokens",
                    subject="acme-corp",
                    time=T0 + timedelta(days=3),
                    provider="openai",
                    model="m",
                    token_type=TokenType.INPUT,
                    tokens=1333,
                    status_code=200,
                )
            ],
            ingest_time=T0 + timedelta(days=3),
        )


@pytest.fixture
async def plane(
    migrated_db_url: str, emulator: StripeEmulator, settings: StripeSettings
) -> AsyncIterator[Plane]:
    clock = FrozenClock(T0 + timedelta(days=33))
    db = Database.connect(migrated_db_url)
    setup_usage(db)
    app = StripeApp(
        db=db, settings=settings, clock=clock, policy=RetryPolicy(attempts=2, base_delay=0.01)
    )
    cp = ControlPlane(
        db=db, listen="127.0.0.1:0", clock=clock, stripe=app, webhook_listen="127.0.0.1:0"
    )
    port = await cp.start()
    webhook_url = f"http://127.0.0.1:{cp.webhook_port}/stripe/webhook"
    emulator.reset(webhook_url=webhook_url)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield Plane(
            cp,
            app,
            billing_pb2_grpc.BillingServiceStub(channel),
            webhook_url,
            customers_pb2_grpc.CustomerServiceStub(channel),
        )
    await cp.stop(0)
    # Syncs may still run in threads: end them before the pool goes away.
    await asyncio.get_running_loop().shutdown_default_executor()
    db.dispose()


async def issue_november(plane: Plane) -> billing_pb2.Invoice:
    closed = await plane.billing.CloseInvoices(billing_pb2.CloseInvoicesRequest())
    (draft,) = closed.drafted_invoices
    await plane.billing.IssueInvoice(billing_pb2.IssueInvoiceRequest(name=draft))
    await plane.app.drain()
    return await plane.billing.GetInvoice(billing_pb2.GetInvoiceRequest(name=draft))


async def test_issue_creates_the_same_invoice_in_stripe(
    plane: Plane, emulator: StripeEmulator
) -> None:
    # When November is issued
    invoice = await issue_november(plane)

    # Then it is synced: one finalized Stripe invoice with the same lines and total
    assert invoice.sync_state == billing_pb2.INVOICE_SYNC_STATE_SYNCED
    assert invoice.sync_error == ""
    # 10.00 + graduated(1333) = 10 + 1.665 -> 11.67, 10% off -> -1.17
    assert [(line.rate_card, line.amount) for line in invoice.lines] == [
        ("platform", "10.00"),
        ("tokens-in", "11.67"),
        ("tokens-in", "-1.17"),
    ]
    assert invoice.total == "20.50"
    (stripe_invoice,) = emulator.invoices_with_metadata("meterline_invoice_id", invoice.id)
    assert stripe_invoice["id"] == invoice.stripe_invoice_id
    assert stripe_invoice["status"] == "open"
    assert stripe_invoice["total"] == 2050
    items = emulator.items_of(stripe_invoice["id"])
    assert sorted(i["amount"] for i in items) == [-117, 1000, 1167]
    assert sum(Decimal(i["amount"]) for i in items) / 100 == Decimal(invoice.total)
    assert "platform (1 x 10)" in {i["description"] for i in items}
    # The Stripe customer is remembered for the customer's next invoices
    customer = await plane.customers.GetCustomer(
        customers_pb2.GetCustomerRequest(name="customers/acme")
    )
    assert customer.stripe_customer_id == stripe_invoice["customer"]


async def test_a_linked_stripe_customer_is_billed(plane: Plane, emulator: StripeEmulator) -> None:
    existing = await asyncio.to_thread(
        emulator.client().v1.customers.create, {"name": "Acme Corporation (Stripe)"}
    )
    for request, code in [
        (
            customers_pb2.LinkStripeCustomerRequest(
                name="customers/nope", stripe_customer_id="cus_1"
            ),
            grpc.StatusCode.NOT_FOUND,
        ),
        (
            customers_pb2.LinkStripeCustomerRequest(name="customers/acme", stripe_customer_id="x"),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await plane.customers.LinkStripeCustomer(request)
        assert info.value.code() == code
    linked = await plane.customers.LinkStripeCustomer(
        customers_pb2.LinkStripeCustomerRequest(
            name="customers/acme", stripe_customer_id=existing.id
        )
    )
    assert linked.stripe_customer_id == existing.id

    invoice = await issue_november(plane)

    assert emulator.invoices[invoice.stripe_invoice_id]["customer"] == existing.id
    assert list(emulator.customers) == [existing.id]
    assert emulator.customers[existing.id]["name"] == "Acme Corporation (Stripe)"


async def test_failed_sync_is_visible_and_retryable(plane: Plane, emulator: StripeEmulator) -> None:
    # Given Stripe refuses the invoice creation once
    emulator.fail_next("POST", "/v1/invoices", status=400, message="No such tax rate: txr_1")
    invoice = await issue_november(plane)
    assert invoice.sync_state == billing_pb2.INVOICE_SYNC_STATE_FAILED
    assert "No such tax rate" in invoice.sync_error
    assert emulator.invoices_with_metadata("meterline_invoice_id", invoice.id) == []

    # When the operator retries
    retried = await plane.billing.RetryInvoiceSync(
        billing_pb2.RetryInvoiceSyncRequest(name=invoice.name)
    )

    # Then it is synced, once
    assert retried.sync_state == billing_pb2.INVOICE_SYNC_STATE_SYNCED
    assert retried.sync_error == ""
    assert len(emulator.invoices_with_metadata("meterline_invoice_id", invoice.id)) == 1


async def test_webhooks_move_the_invoice_and_bad_signatures_change_nothing(
    plane: Plane, emulator: StripeEmulator
) -> None:
    invoice = await issue_november(plane)
    client = emulator.client()

    # A badly signed request: 400, nothing changes
    async with httpx.AsyncClient() as http:
        payload, _ = emulator.signed({"id": "evt_x", "type": "invoice.paid"})
        bad = await http.post(
            plane.webhook_url, content=payload, headers={"Stripe-Signature": "t=1,v1=00"}
        )
        unsigned = await http.post(plane.webhook_url, content=payload)
    assert (bad.status_code, unsigned.status_code) == (400, 400)
    got = await plane.billing.GetInvoice(billing_pb2.GetInvoiceRequest(name=invoice.name))
    assert got.state == billing_pb2.INVOICE_STATE_ISSUED

    # Payment fails: payment_failed
    emulator.decline_payments(emulator.invoices[invoice.stripe_invoice_id]["customer"])
    with pytest.raises(Exception):  # noqa: B017 - the SDK's CardError
        await asyncio.to_thread(client.v1.invoices.pay, invoice.stripe_invoice_id)
    await asyncio.to_thread(emulator.wait_for_deliveries)
    got = await plane.billing.GetInvoice(billing_pb2.GetInvoiceRequest(name=invoice.name))
    assert got.state == billing_pb2.INVOICE_STATE_PAYMENT_FAILED

    # Paid out of band: paid; the old failure delivered again changes nothing
    await asyncio.to_thread(
        client.v1.invoices.pay, invoice.stripe_invoice_id, {"paid_out_of_band": True}
    )
    await asyncio.to_thread(emulator.wait_for_deliveries)
    emulator.deliver(emulator.last_event("invoice.payment_failed"))
    emulator.deliver(emulator.last_event("invoice.paid"))
    deliveries = await asyncio.to_thread(emulator.wait_for_deliveries)
    assert all(d.status == 200 for d in deliveries[-2:])
    got = await plane.billing.GetInvoice(billing_pb2.GetInvoiceRequest(name=invoice.name))
    assert got.state == billing_pb2.INVOICE_STATE_PAID
    assert got.total == invoice.total and list(got.lines) == list(invoice.lines)


async def test_voided_in_stripe_voids_the_invoice(plane: Plane, emulator: StripeEmulator) -> None:
    invoice = await issue_november(plane)
    await asyncio.to_thread(emulator.client().v1.invoices.void_invoice, invoice.stripe_invoice_id)
    await asyncio.to_thread(emulator.wait_for_deliveries)
    got = await plane.billing.GetInvoice(billing_pb2.GetInvoiceRequest(name=invoice.name))
    assert got.state == billing_pb2.INVOICE_STATE_VOID


@pytest.mark.postgres
def test_two_replicas_syncing_at_once_create_one_stripe_invoice(
    pg_url: str, emulator: StripeEmulator, settings: StripeSettings
) -> None:
    # Given an issued invoice and two control planes' Stripe apps on one PostgreSQL
    dbs = [Database.connect(pg_url) for _ in range(2)]
    try:
        setup_usage(dbs[0])
        now = T0 + timedelta(days=33)
        clock = FrozenClock(now)
        result = lifecycle.advance(
            dbs[0], now=now, settings=lifecycle.InvoicingSettings(auto_issue=True)
        )
        (invoice_id,) = result.issued
        apps = [StripeApp(db=db, settings=settings, clock=clock) for db in dbs]
        # Stripe is slow, so the two syncs overlap
        emulator.fail_next("POST", "/v1/customers", status=500, times=1)

        # When both sync it at the same moment, then again
        barrier = threading.Barrier(2)
        results: list[object] = [None, None]

        def run(i: int) -> None:
            barrier.wait()
            results[i] = apps[i].sync(invoice_id)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for app in apps:
            app.sync_pending()

        # Then exactly one Stripe invoice exists, finalized, with one item per line
        (stripe_invoice,) = emulator.invoices_with_metadata("meterline_invoice_id", invoice_id)
        assert stripe_invoice["status"] == "open"
        assert len(emulator.items_of(stripe_invoice["id"])) == 3
        assert len(emulator.calls("POST", "/v1/invoices/*/finalize")) == 1
        with dbs[1].begin() as conn:
            got = lifecycle.get_invoice(conn, invoice_id)
        assert got.sync_state == "finalized" and got.stripe_invoice_id == stripe_invoice["id"]
    finally:
        for db in dbs:
            db.dispose()


class Crash(Exception):
    pass


@pytest.mark.parametrize("crash_at", [1, 2, 3, 5])
def test_a_sync_that_died_half_way_is_resumed_by_the_job(
    migrated_db_url: str, emulator: StripeEmulator, settings: StripeSettings, crash_at: int
) -> None:
    # Given an issued invoice whose sync dies at the crash_at-th saved step
    db = Database.connect(migrated_db_url)
    try:
        setup_usage(db)
        now = T0 + timedelta(days=33)
        clock = FrozenClock(now)
        result = lifecycle.advance(
            db, now=now, settings=lifecycle.InvoicingSettings(auto_issue=True)
        )
        (invoice_id,) = result.issued
        saves = 0

        class Dying(StripeApp):
            def _save(self, record: object) -> None:
                nonlocal saves
                saves += 1
                super()._save(record)  # type: ignore[arg-type]
                if saves == crash_at:
                    raise Crash

        with pytest.raises(Crash):
            Dying(db=db, settings=settings, clock=clock).sync(invoice_id)
        assert StripeApp(db=db, settings=settings, clock=clock).pending_ids() == [invoice_id]

        # When the job of a fresh replica runs
        StripeApp(db=db, settings=settings, clock=clock).sync_pending()

        # Then one finalized Stripe invoice with exactly the invoice's lines
        (stripe_invoice,) = emulator.invoices_with_metadata("meterline_invoice_id", invoice_id)
        assert stripe_invoice["status"] == "open"
        assert sorted(i["amount"] for i in emulator.items_of(stripe_invoice["id"])) == [
            -117,
            1000,
            1167,
        ]
        assert len(emulator.customers) == 1
        with db.begin() as conn:
            assert lifecycle.get_invoice(conn, invoice_id).sync_state == "finalized"
    finally:
        db.dispose()


# Void and mark-paid in Meterline reach Stripe --------------------------------------------------


async def get(plane: Plane, name: str) -> billing_pb2.Invoice:
    return await plane.billing.GetInvoice(billing_pb2.GetInvoiceRequest(name=name))


async def test_void_in_meterline_voids_the_stripe_invoice(
    plane: Plane, emulator: StripeEmulator
) -> None:
    # Given an issued invoice open in Stripe, which Stripe would charge
    invoice = await issue_november(plane)
    stripe_invoice = emulator.invoices[invoice.stripe_invoice_id]
    assert (stripe_invoice["status"], stripe_invoice["auto_advance"]) == ("open", True)

    # When the operator voids it
    voided = await plane.billing.VoidInvoice(billing_pb2.VoidInvoiceRequest(name=invoice.name))
    assert voided.state == billing_pb2.INVOICE_STATE_VOID
    await plane.app.drain()
    await asyncio.to_thread(emulator.wait_for_deliveries)

    # Then Stripe's invoice is void (nothing left to collect), and the sync says so
    assert stripe_invoice["status"] == "void" and stripe_invoice["auto_advance"] is False
    got = await get(plane, invoice.name)
    assert got.state == billing_pb2.INVOICE_STATE_VOID
    assert (got.sync_state, got.sync_error) == (billing_pb2.INVOICE_SYNC_STATE_SYNCED, "")
    # Stripe's invoice.voided came back and changed nothing
    assert [d.status for d in emulator.deliveries if d.event_type == "invoice.voided"] == [200]
    assert len(emulator.calls("POST", "/v1/invoices/*/void")) == 1
    with plane.cp.db.begin() as conn:
        assert lifecycle.get_invoice(conn, invoice.id).sync_state == "voided"


async def test_mark_paid_in_meterline_pays_the_stripe_invoice_out_of_band(
    plane: Plane, emulator: StripeEmulator
) -> None:
    invoice = await issue_november(plane)

    paid = await plane.billing.MarkInvoicePaid(
        billing_pb2.MarkInvoicePaidRequest(name=invoice.name)
    )
    assert paid.state == billing_pb2.INVOICE_STATE_PAID
    await plane.app.drain()
    await asyncio.to_thread(emulator.wait_for_deliveries)

    stripe_invoice = emulator.invoices[invoice.stripe_invoice_id]
    assert stripe_invoice["status"] == "paid"
    assert stripe_invoice["paid_out_of_band"] is True
    assert stripe_invoice["attempt_count"] == 0  # no charge
    got = await get(plane, invoice.name)
    assert got.state == billing_pb2.INVOICE_STATE_PAID
    assert got.sync_state == billing_pb2.INVOICE_SYNC_STATE_SYNCED
    (pay,) = emulator.calls("POST", "/v1/invoices/*/pay")
    assert pay.idempotency_key == f"meterline-invoice-{invoice.id}-pay"


async def test_a_void_stripe_refuses_is_failed_visible_and_retried(
    plane: Plane, emulator: StripeEmulator
) -> None:
    # Given Stripe unavailable for the void
    invoice = await issue_november(plane)
    emulator.fail_next("POST", "/v1/invoices/*/void", status=500, times=10)

    await plane.billing.VoidInvoice(billing_pb2.VoidInvoiceRequest(name=invoice.name))
    await plane.app.drain()

    # Then the invoice is void in Meterline and its sync failed with Stripe's answer
    got = await get(plane, invoice.name)
    assert got.state == billing_pb2.INVOICE_STATE_VOID
    assert got.sync_state == billing_pb2.INVOICE_SYNC_STATE_FAILED
    assert "HTTP 500" in got.sync_error
    assert emulator.invoices[invoice.stripe_invoice_id]["status"] == "open"
    assert plane.app.pending_ids() == []  # failed: waits for the operator

    # When the operator retries after Stripe recovered
    emulator.clear_faults()
    retried = await plane.billing.RetryInvoiceSync(
        billing_pb2.RetryInvoiceSyncRequest(name=invoice.name)
    )

    # Then it is voided, once
    assert retried.sync_state == billing_pb2.INVOICE_SYNC_STATE_SYNCED
    assert retried.sync_error == ""
    assert emulator.invoices[invoice.stripe_invoice_id]["status"] == "void"
    assert [e["type"] for e in emulator.events].count("invoice.voided") == 1


async def test_void_while_the_issue_sync_runs_leaves_nothing_to_collect(
    plane: Plane, emulator: StripeEmulator
) -> None:
    # Given Stripe slow to create the invoice, so the issue's sync is mid-way
    emulator.delay_next("POST", "/v1/invoices", seconds=0.3)
    closed = await plane.billing.CloseInvoices(billing_pb2.CloseInvoicesRequest())
    (name,) = closed.drafted_invoices
    await plane.billing.IssueInvoice(billing_pb2.IssueInvoiceRequest(name=name))

    # When the operator voids it before that sync finished
    await plane.billing.VoidInvoice(billing_pb2.VoidInvoiceRequest(name=name))
    await plane.app.drain()

    # Then no Stripe invoice is left to collect: voided (or its draft deleted), and synced
    got = await get(plane, name)
    assert got.sync_state == billing_pb2.INVOICE_SYNC_STATE_SYNCED
    left = emulator.invoices_with_metadata("meterline_invoice_id", got.id)
    assert all(i["status"] == "void" for i in left)
    assert not [i for i in emulator.invoice_items.values() if i["invoice"] is None]
    assert plane.app.pending_ids() == []


async def test_paid_in_stripe_is_recorded_by_the_job_without_paying_again(
    plane: Plane, emulator: StripeEmulator
) -> None:
    # Given an invoice the customer paid in Stripe (its webhook moved it to paid)
    invoice = await issue_november(plane)
    await asyncio.to_thread(emulator.client().v1.invoices.pay, invoice.stripe_invoice_id)
    await asyncio.to_thread(emulator.wait_for_deliveries)
    assert (await get(plane, invoice.name)).state == billing_pb2.INVOICE_STATE_PAID

    # When the job runs
    assert plane.app.pending_ids() == [invoice.id]
    await asyncio.to_thread(plane.app.sync_pending)

    # Then the sync notes Stripe's paid state; nothing is paid twice
    assert plane.app.pending_ids() == []
    assert len(emulator.calls("POST", "/v1/invoices/*/pay")) == 1
    assert emulator.invoices[invoice.stripe_invoice_id]["paid_out_of_band"] is False
