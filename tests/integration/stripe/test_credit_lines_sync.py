"""Credits and Stripe: credit lines as negative items; top-ups granted on the paid webhook.

Credit lines reach Stripe as their own negative items, to the cent, and match the ledger.

A real control plane (grpc.aio; SQLite and PostgreSQL), the Stripe stand-in over HTTP and the
official SDK. acme on "pro" (10.00 flat + 1333 input tokens graduated = 21.67) holds a 15.00
promotional grant from billing.credits and 5.00 of external credits for tokens only.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import grpc
import pytest

from controlplane.clock import FrozenClock
from controlplane.declarative.apply import apply_document
from controlplane.server import ControlPlane
from controlplane.storage.db import Database
from controlplane.stripe_sync import RetryPolicy, StripeSettings
from controlplane.stripe_sync.app import StripeApp
from controlplane.usage import storage as usage_storage
from controlplane.usage.types import TokenType, UsageEvent
from meterline.admin.v1 import billing_pb2, billing_pb2_grpc, credits_pb2, credits_pb2_grpc
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
  customers:
    - {key: acme, name: Acme Corp, subjects: [acme-corp]}
  subscriptions:
    - {customer: acme, plan: pro, start: "2026-11-01T00:00:00Z"}
  credits:
    - {customer: acme, amount: "15", funding: promotional, key: welcome-credit, expires: P90D}
    - {customer: acme, amount: "5", funding: external, key: tokens, features: [tokens-in],
       priority: 1}
"""


@dataclass
class Plane:
    app: StripeApp
    billing: billing_pb2_grpc.BillingServiceStub
    credits: credits_pb2_grpc.CreditServiceStub


@pytest.fixture
async def plane(
    migrated_db_url: str, emulator: StripeEmulator, settings: StripeSettings
) -> AsyncIterator[Plane]:
    clock = FrozenClock(T0 + timedelta(days=33))
    db = Database.connect(migrated_db_url)
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
    app = StripeApp(
        db=db, settings=settings, clock=clock, policy=RetryPolicy(attempts=2, base_delay=0.01)
    )
    cp = ControlPlane(
        db=db, listen="127.0.0.1:0", clock=clock, stripe=app, webhook_listen="127.0.0.1:0"
    )
    port = await cp.start()
    emulator.reset(webhook_url=f"http://127.0.0.1:{cp.webhook_port}/stripe/webhook")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield Plane(
            app,
            billing_pb2_grpc.BillingServiceStub(channel),
            credits_pb2_grpc.CreditServiceStub(channel),
        )
    await cp.stop(0)
    await asyncio.get_running_loop().shutdown_default_executor()
    db.dispose()


async def test_credit_lines_are_negative_stripe_items_equal_to_the_ledger(
    plane: Plane, emulator: StripeEmulator
) -> None:
    # When November is issued and synced
    closed = await plane.billing.CloseInvoices(billing_pb2.CloseInvoicesRequest())
    (draft,) = closed.drafted_invoices
    await plane.billing.IssueInvoice(billing_pb2.IssueInvoiceRequest(name=draft))
    await plane.app.drain()
    invoice = await plane.billing.GetInvoice(billing_pb2.GetInvoiceRequest(name=draft))

    # Then the tokens-only grant (priority 1) pays 5.00 of the tokens, the welcome credit
    # the fee (10.00) and 5.00 more of the tokens: 1.67 is left to pay
    credit = billing_pb2.INVOICE_LINE_TYPE_CREDIT
    assert [(line.rate_card, line.type == credit, line.amount) for line in invoice.lines] == [
        ("platform", False, "10.00"),
        ("tokens-in", False, "11.67"),
        ("", True, "-5.00"),
        ("", True, "-15.00"),
    ]
    assert invoice.total == "1.67"
    assert invoice.sync_state == billing_pb2.INVOICE_SYNC_STATE_SYNCED

    # And Stripe has the same items, credit lines as their own negative items, same total
    (stripe_invoice,) = emulator.invoices_with_metadata("meterline_invoice_id", invoice.id)
    assert stripe_invoice["total"] == 167
    items = emulator.items_of(stripe_invoice["id"])
    assert sorted(i["amount"] for i in items) == [-1500, -500, 1000, 1167]
    assert {i["description"] for i in items} >= {
        "credits: tokens (external, tokens-in)",
        "credits: welcome-credit (promotional, all usage)",
    }

    # And the ledger's consumed entries are those lines, to the cent
    ledger = await plane.credits.ListCreditTransactions(
        credits_pb2.ListCreditTransactionsRequest(parent="customers/acme")
    )
    consumed = sorted(
        Decimal(e.amount)
        for e in ledger.credit_transactions
        if e.type == credits_pb2.CREDIT_TRANSACTION_TYPE_CONSUMED
    )
    assert consumed == sorted(Decimal(line.amount) for line in invoice.lines if line.type == credit)
    assert sum(Decimal(i["amount"]) for i in items if i["amount"] < 0) / 100 == sum(consumed)
    balance = await plane.credits.GetCreditBalance(
        credits_pb2.GetCreditBalanceRequest(customer="customers/acme")
    )
    assert Decimal(balance.settled) == 0


async def grants_and_ledger(plane: Plane) -> tuple[list[credits_pb2.CreditGrant], list[str]]:
    grants = await plane.credits.ListCreditGrants(
        credits_pb2.ListCreditGrantsRequest(parent="customers/acme")
    )
    ledger = await plane.credits.ListCreditTransactions(
        credits_pb2.ListCreditTransactionsRequest(parent="customers/acme")
    )
    entries = [
        f"{credits_pb2.CreditTransactionType.Name(e.type)} {e.amount}"
        for e in ledger.credit_transactions
    ]
    return list(grants.credit_grants), entries


async def top_up(plane: Plane, amount: str) -> billing_pb2.Invoice:
    issued = await plane.credits.CreateCreditTopUp(
        credits_pb2.CreateCreditTopUpRequest(parent="customers/acme", amount=amount)
    )
    await plane.app.drain()
    return await plane.billing.GetInvoice(billing_pb2.GetInvoiceRequest(name=issued.name))


async def test_a_top_up_grants_credits_on_the_paid_webhook_once(
    plane: Plane, emulator: StripeEmulator
) -> None:
    before, before_ledger = await grants_and_ledger(plane)
    # When acme tops up 50.00: a one-off invoice, synced to Stripe, nothing granted yet
    invoice = await top_up(plane, "50")
    assert (invoice.total, invoice.state) == ("50.00", billing_pb2.INVOICE_STATE_ISSUED)
    assert [(line.type, line.amount) for line in invoice.lines] == [
        (billing_pb2.INVOICE_LINE_TYPE_FLAT, "50.00")
    ]
    assert invoice.sync_state == billing_pb2.INVOICE_SYNC_STATE_SYNCED
    (stripe_invoice,) = emulator.invoices_with_metadata("meterline_invoice_id", invoice.id)
    assert stripe_invoice["total"] == 5000
    assert await grants_and_ledger(plane) == (before, before_ledger)
    # A second top-up while this one awaits payment is refused
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await plane.credits.CreateCreditTopUp(
            credits_pb2.CreateCreditTopUpRequest(parent="customers/acme", amount="10")
        )
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    # When Stripe says it is paid (webhook over HTTP), and says it again
    client = emulator.client()
    await asyncio.to_thread(client.v1.invoices.pay, invoice.stripe_invoice_id)
    await asyncio.to_thread(emulator.wait_for_deliveries)
    emulator.deliver(emulator.last_event("invoice.paid"))
    deliveries = await asyncio.to_thread(emulator.wait_for_deliveries)
    assert all(d.status == 200 for d in deliveries[-2:])

    # Then one invoice-funded grant of 50.00 exists, ledgered once
    grants, entries = await grants_and_ledger(plane)
    (bought,) = [g for g in grants if g.funding == credits_pb2.CREDIT_FUNDING_INVOICE]
    assert Decimal(bought.amount) == 50 and bought.key == f"top-up-{invoice.id}"
    assert entries == [*before_ledger, "CREDIT_TRANSACTION_TYPE_FUNDED 50.00"]
    paid = await plane.billing.GetInvoice(billing_pb2.GetInvoiceRequest(name=invoice.name))
    assert paid.state == billing_pb2.INVOICE_STATE_PAID
    balance = await plane.credits.GetCreditBalance(
        credits_pb2.GetCreditBalanceRequest(customer="customers/acme")
    )
    assert Decimal(balance.settled) == 15 + 5 + 50

    # And period invoicing is undisturbed: November (ended before the top-up) is drafted and
    # issued as before, paid by the grants active in November only
    closed = await plane.billing.CloseInvoices(billing_pb2.CloseInvoicesRequest())
    (draft,) = closed.drafted_invoices
    november = await plane.billing.IssueInvoice(billing_pb2.IssueInvoiceRequest(name=draft))
    assert november.total == "1.67"
    listed = await plane.billing.ListInvoices(
        billing_pb2.ListInvoicesRequest(parent="customers/acme")
    )
    assert {i.id for i in listed.invoices} >= {invoice.id, november.id}
    after = await plane.credits.GetCreditBalance(
        credits_pb2.GetCreditBalanceRequest(customer="customers/acme")
    )
    assert Decimal(after.settled) == 50


async def test_a_failed_top_up_payment_grants_nothing(
    plane: Plane, emulator: StripeEmulator
) -> None:
    before = await grants_and_ledger(plane)
    invoice = await top_up(plane, "20")
    emulator.decline_payments(emulator.invoices[invoice.stripe_invoice_id]["customer"])
    with pytest.raises(Exception):  # noqa: B017 - the SDK's CardError
        await asyncio.to_thread(emulator.client().v1.invoices.pay, invoice.stripe_invoice_id)
    await asyncio.to_thread(emulator.wait_for_deliveries)
    failed = await plane.billing.GetInvoice(billing_pb2.GetInvoiceRequest(name=invoice.name))
    assert failed.state == billing_pb2.INVOICE_STATE_PAYMENT_FAILED
    assert await grants_and_ledger(plane) == before
