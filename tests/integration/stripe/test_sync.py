"""sync_invoice against the Stripe emulator, driven by the official SDK: exactly once, always."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import pytest
import stripe

from controlplane.errors import InvalidArgument
from controlplane.rating.money import round_money
from controlplane.stripe_sync import (
    CollectionMethod,
    InvoiceToSync,
    LineToSync,
    StripeSettings,
    SyncRecord,
    SyncState,
    new_client,
    sync_invoice,
)

STEPS_OF_THREE_LINES = 7  # customer, invoice, 3 lines, items synced, finalized


def run(client, settings, invoice, store, policy, sleeps):
    return sync_invoice(
        client=client,
        settings=settings,
        invoice=invoice,
        record=store.record,
        save=store.save,
        policy=policy,
        sleep=sleeps.append,
    )


def assert_exactly_once(emulator, invoice):
    """One Stripe customer and invoice for the Meterline invoice, with exactly its lines."""
    assert len(emulator.customers) == 1
    found = emulator.invoices_with_metadata("meterline_invoice_id", invoice.id)
    assert len(found) == 1
    stripe_invoice = found[0]
    items = emulator.items_of(stripe_invoice["id"])
    assert sorted(i["metadata"]["meterline_line_id"] for i in items) == sorted(
        line.id for line in invoice.lines
    )
    assert sum(i["amount"] for i in items) == int(invoice.total * 100)
    assert stripe_invoice["status"] == "open"
    assert stripe_invoice["total"] == int(invoice.total * 100)
    return stripe_invoice


def test_issued_invoice_becomes_a_finalized_stripe_invoice_with_the_same_lines(
    emulator, client, settings, invoice_factory, store_factory, policy, sleeps
):
    # Given an issued invoice with a usage line, a one-cent line and a discount
    invoice = invoice_factory()
    store = store_factory(SyncRecord(invoice.id))

    # When it is synced
    record = run(client, settings, invoice, store, policy, sleeps)

    # Then Stripe holds one finalized invoice with the same lines and total, to the cent
    assert record.state is SyncState.FINALIZED and record.synced and record.error is None
    stripe_invoice = assert_exactly_once(emulator, invoice)
    assert record.stripe_invoice_id == stripe_invoice["id"]
    assert stripe_invoice["total"] == stripe_invoice["amount_due"] == 1035
    assert stripe_invoice["currency"] == "usd"
    assert stripe_invoice["auto_advance"] is True  # Stripe collects from here on
    assert stripe_invoice["collection_method"] == "charge_automatically"
    assert stripe_invoice["metadata"] == {
        "meterline_invoice_id": "inv_01",
        "meterline_invoice_number": "ML-inv_01",
    }
    lines = {
        line["metadata"]["meterline_line_id"]: line
        for line in emulator.items_of(stripe_invoice["id"])
    }
    assert [lines[line.id]["amount"] for line in invoice.lines] == [1234, 1, -200]
    assert lines["inv_01-l1"]["description"] == "ai-token (1234000 x 0.00001)"
    assert lines["inv_01-l1"]["period"] == {"start": 1735689600, "end": 1738368000}
    assert lines["inv_01-l1"]["currency"] == "usd"
    customer = emulator.customers[record.stripe_customer_id]
    assert customer["name"] == "Acme Corp"
    assert customer["metadata"] == {"meterline_customer": "acme"}
    # Every step was saved in order, and every write carried a key derived from Meterline ids
    assert [r.state for r in store.saves] == [
        SyncState.CUSTOMER_SYNCED,
        SyncState.INVOICE_CREATED,
        SyncState.INVOICE_CREATED,
        SyncState.INVOICE_CREATED,
        SyncState.INVOICE_CREATED,
        SyncState.ITEMS_SYNCED,
        SyncState.FINALIZED,
    ]
    assert store.saves[-1].synced_line_ids == ("inv_01-l1", "inv_01-l2", "inv_01-l3")
    writes = [r for r in emulator.requests if r.method == "POST"]
    assert [r.idempotency_key for r in writes] == [
        "meterline-customer-acme-create",
        "meterline-invoice-inv_01-create",
        "meterline-invoice-inv_01-line-inv_01-l1",
        "meterline-invoice-inv_01-line-inv_01-l2",
        "meterline-invoice-inv_01-line-inv_01-l3",
        "meterline-invoice-inv_01-finalize",
    ]
    assert sleeps == []


def test_a_synced_invoice_is_not_synced_again(
    emulator, client, settings, invoice_factory, store_factory, policy, sleeps
):
    invoice = invoice_factory()
    store = store_factory(SyncRecord(invoice.id))
    run(client, settings, invoice, store, policy, sleeps)
    calls = len(emulator.requests)

    again = run(client, settings, invoice, store, policy, sleeps)

    assert again == store.record and again.state is SyncState.FINALIZED
    assert len(emulator.requests) == calls


def test_an_existing_stripe_customer_is_linked_not_duplicated(
    emulator, client, settings, invoice_factory, store_factory, policy, sleeps
):
    # Given a customer that already exists in Stripe
    existing = client.v1.customers.create(params={"name": "ACME Corporation Ltd"})
    invoice = invoice_factory(customer_stripe_id=existing.id)
    store = store_factory(SyncRecord(invoice.id))

    record = run(client, settings, invoice, store, policy, sleeps)

    # Then the invoice is billed to it, and it is named as Meterline's customer
    assert record.stripe_customer_id == existing.id
    assert_exactly_once(emulator, invoice)
    assert emulator.customers[existing.id]["metadata"] == {"meterline_customer": "acme"}
    assert emulator.customers[existing.id]["name"] == "ACME Corporation Ltd"


def test_send_invoice_collection_with_days_until_due(
    emulator, client, invoice_factory, store_factory, policy, sleeps
):
    settings = StripeSettings(
        api_key="sk_test_meterline_51Hsecret",
        api_base=emulator.url,
        collection_method=CollectionMethod.SEND_INVOICE,
        days_until_due=14,
        automatic_tax=True,
    )
    invoice = invoice_factory()
    run(client, settings, invoice, store_factory(SyncRecord(invoice.id)), policy, sleeps)

    stripe_invoice = assert_exactly_once(emulator, invoice)
    assert stripe_invoice["collection_method"] == "send_invoice"
    assert stripe_invoice["days_until_due"] == 14
    assert stripe_invoice["due_date"] == stripe_invoice["status_transitions"]["finalized_at"] + (
        14 * 86400
    )
    assert stripe_invoice["automatic_tax"]["enabled"] is True


@pytest.mark.parametrize("keep", [False, True], ids=["save-lost", "save-kept"])
@pytest.mark.parametrize("crash_at", range(1, STEPS_OF_THREE_LINES + 1))
def test_crash_after_any_step_then_resume_creates_nothing_twice(
    emulator,
    client,
    settings,
    invoice_factory,
    store_factory,
    crash,
    policy,
    sleeps,
    crash_at,
    keep,
):
    # Given a sync that dies at a step: after Stripe did it, before or after Meterline saved it
    invoice = invoice_factory()
    store = store_factory(SyncRecord(invoice.id), crash_at=crash_at, keep=keep)
    with pytest.raises(crash):
        run(client, settings, invoice, store, policy, sleeps)

    # When the control plane comes back and syncs again from what it saved
    store.crash_at = None
    record = run(client, settings, invoice, store, policy, sleeps)

    # Then there is exactly one Stripe invoice with exactly the right items
    assert record.state is SyncState.FINALIZED
    assert store.record == record
    assert_exactly_once(emulator, invoice)


@pytest.mark.parametrize(
    "path",
    [
        "/v1/customers",
        "/v1/invoices",
        "/v1/invoiceitems",
        "/v1/invoices/*/finalize",
    ],
)
def test_response_lost_after_stripe_did_the_work_is_replayed_not_repeated(
    emulator, client, settings, invoice_factory, store_factory, policy, sleeps, path
):
    # Given Stripe does the work but the answer is a 500 (and replayed as such, as Stripe does)
    emulator.fail_next("POST", path, status=500, after_processing=True)
    invoice = invoice_factory()
    store = store_factory(SyncRecord(invoice.id))

    # When the sync runs: the retry gets the same saved 500, then gives up for now
    first = run(client, settings, invoice, store, policy, sleeps)
    assert first.state is SyncState.FAILED
    assert "HTTP 500" in (first.error or "")

    # Then, once Stripe's saved answer is gone (keys expire after 24 hours), a retry finishes
    # the job from what exists in Stripe instead of creating it again
    emulator.forget_idempotency_keys()
    record = run(client, settings, invoice, store, policy, sleeps)
    assert record.state is SyncState.FINALIZED
    assert_exactly_once(emulator, invoice)


@pytest.mark.parametrize("crash_at", range(1, STEPS_OF_THREE_LINES + 1))
def test_crash_then_resume_after_idempotency_keys_expired(
    emulator, client, settings, invoice_factory, store_factory, crash, policy, sleeps, crash_at
):
    # Given a crash that lost the save, and a restart more than a day later
    invoice = invoice_factory()
    store = store_factory(SyncRecord(invoice.id), crash_at=crash_at)
    with pytest.raises(crash):
        run(client, settings, invoice, store, policy, sleeps)
    emulator.forget_idempotency_keys()

    store.crash_at = None
    record = run(client, settings, invoice, store, policy, sleeps)

    assert record.state is SyncState.FINALIZED
    stripe_invoice = assert_exactly_once(emulator, invoice)
    if crash_at > 1:
        assert record.stripe_invoice_id == stripe_invoice["id"]


@pytest.mark.parametrize("status", [500, 502, 503, 429, 409])
@pytest.mark.parametrize(
    "path", ["/v1/customers", "/v1/invoices", "/v1/invoiceitems", "/v1/invoices/*/finalize"]
)
def test_transient_stripe_errors_are_retried_with_backoff(
    emulator, client, settings, invoice_factory, store_factory, policy, sleeps, status, path
):
    emulator.fail_next("POST", path, status=status, times=2)
    invoice = invoice_factory()
    store = store_factory(SyncRecord(invoice.id))

    record = run(client, settings, invoice, store, policy, sleeps)

    assert record.state is SyncState.FINALIZED
    assert_exactly_once(emulator, invoice)
    assert sleeps == [0.5, 1.0]


def test_stripe_down_for_longer_than_the_retries_is_failed_then_resumed(
    emulator, client, settings, invoice_factory, store_factory, policy, sleeps
):
    # Given Stripe answers 503 to every invoice item for a while
    emulator.fail_next("POST", "/v1/invoiceitems", status=503, times=10, message="Overloaded.")
    invoice = invoice_factory()
    store = store_factory(SyncRecord(invoice.id))

    first = run(client, settings, invoice, store, policy, sleeps)

    # Then the sync stops after a bounded number of attempts, visibly failed, progress kept
    assert first.state is SyncState.FAILED
    assert first.error == "Stripe HTTP 503: Overloaded."
    assert first.stripe_invoice_id is not None
    assert sleeps == [0.5, 1.0, 2.0]  # 4 attempts, capped backoff
    assert store.record == first

    # When Stripe is back, the retry finishes the same invoice
    emulator.clear_faults()
    record = run(client, settings, invoice, store, policy, sleeps)
    assert record.state is SyncState.FINALIZED and record.error is None
    assert record.stripe_invoice_id == first.stripe_invoice_id
    assert_exactly_once(emulator, invoice)


def test_stripe_400_is_failed_with_its_message_and_retry_after_the_fix_succeeds(
    emulator, client, settings, invoice_factory, store_factory, policy, sleeps
):
    # Given an invoice linked to a Stripe customer id that does not exist
    invoice = invoice_factory(customer_stripe_id="cus_deleted")
    store = store_factory(SyncRecord(invoice.id))

    failed = run(client, settings, invoice, store, policy, sleeps)

    # Then the sync fails at once (no retries for a 4xx), with Stripe's message, nothing made
    assert failed.state is SyncState.FAILED
    assert failed.error == "Stripe HTTP 404: No such customer: 'cus_deleted'"
    assert sleeps == []
    assert emulator.invoices == {}

    # When the operator links the right customer and retries
    existing = client.v1.customers.create(params={"name": "Acme"})
    fixed = replace(invoice, customer_stripe_id=existing.id)
    record = run(client, settings, fixed, store, policy, sleeps)

    assert record.state is SyncState.FINALIZED and record.error is None
    assert_exactly_once(emulator, fixed)


def test_stripe_400_on_finalize_is_failed_and_retryable(
    emulator, client, settings, invoice_factory, store_factory, policy, sleeps
):
    emulator.fail_next(
        "POST",
        "/v1/invoices/*/finalize",
        status=400,
        message="Your account cannot currently make live charges.",
    )
    invoice = invoice_factory()
    store = store_factory(SyncRecord(invoice.id))

    failed = run(client, settings, invoice, store, policy, sleeps)
    assert failed.state is SyncState.FAILED
    assert failed.error == "Stripe HTTP 400: Your account cannot currently make live charges."
    [draft] = emulator.invoices.values()
    assert draft["status"] == "draft"

    record = run(client, settings, invoice, store, policy, sleeps)
    assert record.state is SyncState.FINALIZED
    assert_exactly_once(emulator, invoice)


def test_a_draft_changed_in_stripe_is_not_finalized(
    emulator, client, settings, invoice_factory, store_factory, crash, policy, sleeps
):
    # Given a sync stopped after creating the draft, and someone adds an item to it in Stripe
    invoice = invoice_factory()
    store = store_factory(SyncRecord(invoice.id), crash_at=3, keep=True)
    with pytest.raises(crash):
        run(client, settings, invoice, store, policy, sleeps)
    client.v1.invoice_items.create(
        params={
            "customer": store.record.stripe_customer_id,
            "invoice": store.record.stripe_invoice_id,
            "amount": 999,
            "currency": "usd",
        }
    )
    store.crash_at = None

    record = run(client, settings, invoice, store, policy, sleeps)

    # Then Meterline refuses to finalize an invoice that is not its own
    assert record.state is SyncState.FAILED
    assert "lines Meterline did not send" in (record.error or "")
    assert emulator.invoices[record.stripe_invoice_id]["status"] == "draft"


def test_a_bad_api_key_is_failed(emulator, invoice_factory, store_factory, policy, sleeps, client):
    settings = StripeSettings(api_key="sk_test_wrong_key_1234", api_base=emulator.url)
    invoice = invoice_factory()
    record = run(
        new_client(settings),
        settings,
        invoice,
        store_factory(SyncRecord(invoice.id)),
        policy,
        sleeps,
    )

    assert record.state is SyncState.FAILED
    assert record.error is not None and record.error.startswith("Stripe HTTP 401: Invalid API Key")
    assert "sk_test_wrong_key_1234" not in record.error


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        pytest.param(Decimal("12.345"), "finer than the currency's minor unit", id="sub-cent"),
        pytest.param(Decimal("NaN"), "finite", id="nan"),
    ],
)
def test_amounts_stripe_cannot_hold_exactly_are_refused_before_any_call(
    emulator, client, settings, invoice_factory, store_factory, policy, sleeps, amount, message
):
    invoice = invoice_factory()
    bad_line = replace(invoice.lines[0], amount=amount)
    bad = replace(invoice, lines=(bad_line, *invoice.lines[1:]))

    with pytest.raises(InvalidArgument, match=message):
        run(client, settings, bad, store_factory(SyncRecord(invoice.id)), policy, sleeps)
    assert emulator.requests == []


def test_a_total_that_is_not_the_sum_of_the_lines_is_refused(
    emulator, client, settings, invoice_factory, store_factory, policy, sleeps
):
    invoice = invoice_factory()
    bad = replace(invoice, total=invoice.total + Decimal("0.01"))

    with pytest.raises(InvalidArgument, match="not the sum of its lines"):
        run(client, settings, bad, store_factory(SyncRecord(invoice.id)), policy, sleeps)
    assert emulator.requests == []


def test_zero_decimal_currency(emulator, client, settings, store_factory, policy, sleeps):
    start, end = datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 2, 1, tzinfo=UTC)
    line = LineToSync("l1", "ai-token (500 x 1)", Decimal("500"), start, end)
    invoice = InvoiceToSync("inv_jpy", "ML-1", "acme", "Acme", None, "JPY", (line,), Decimal(500))
    run(client, settings, invoice, store_factory(SyncRecord(invoice.id)), policy, sleeps)

    [stripe_invoice] = emulator.invoices.values()
    assert (stripe_invoice["currency"], stripe_invoice["total"]) == ("jpy", 500)


def test_three_decimal_currency_in_tens_of_minor_units(
    emulator, client, settings, store_factory, policy, sleeps
):
    # Stripe takes KWD in multiples of 10 fils; rating rounds KWD lines to 0.010.
    start, end = datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 2, 1, tzinfo=UTC)
    amount = round_money(Decimal("12.3456"), "KWD")
    assert amount == Decimal("12.350")
    line = LineToSync("l1", "ai-token (123456 x 0.0001)", amount, start, end)
    invoice = InvoiceToSync("inv_kwd", "ML-1", "acme", "Acme", None, "KWD", (line,), amount)
    run(client, settings, invoice, store_factory(SyncRecord(invoice.id)), policy, sleeps)

    [stripe_invoice] = emulator.invoices.values()
    assert (stripe_invoice["currency"], stripe_invoice["total"]) == ("kwd", 12350)


def test_the_emulator_refuses_three_decimal_amounts_stripe_refuses(emulator):
    customer = emulator.client().v1.customers.create({"name": "Acme"})
    with pytest.raises(stripe.InvalidRequestError, match="multiple of 10"):
        emulator.client().v1.invoice_items.create(
            {"customer": customer.id, "amount": 12345, "currency": "kwd"}
        )
    assert emulator.invoice_items == {}


def test_secrets_never_reach_repr_or_logs(
    emulator, client, settings, invoice_factory, store_factory, policy, sleeps, caplog
):
    caplog.set_level(logging.DEBUG)
    emulator.fail_next("POST", "/v1/invoices", status=500, times=1)
    emulator.fail_next("POST", "/v1/invoiceitems", status=400, message="Bad item.")
    invoice = invoice_factory()
    store = store_factory(SyncRecord(invoice.id))

    run(client, settings, invoice, store, policy, sleeps)
    run(client, settings, invoice, store, policy, sleeps)
    wrong = replace(settings, api_key="sk_test_wrong_key_9876")
    failed = run(
        new_client(wrong), wrong, invoice, store_factory(SyncRecord(invoice.id)), policy, sleeps
    )

    assert "Bad item." in caplog.text and "HTTP 401" in caplog.text
    for text in (caplog.text, repr(settings), str(settings), repr(store.saves), repr(failed)):
        assert wrong.api_key not in text
        assert settings.api_key not in text
        assert settings.webhook_secret is not None and settings.webhook_secret not in text
