"""Void and mark-paid in Meterline reach the Stripe emulator: once, whatever fails on the way."""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest

from controlplane.stripe_sync import SyncRecord, SyncState, sync_invoice
from controlplane.stripe_sync.types import SyncTarget
from support.processes import wait_until


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


def synced(client, settings, invoice_factory, store_factory, policy, sleeps):
    """An invoice synced as issued: open in Stripe, auto_advance on."""
    invoice = invoice_factory()
    store = store_factory(SyncRecord(invoice.id))
    record = run(client, settings, invoice, store, policy, sleeps)
    assert record.state is SyncState.FINALIZED
    return invoice, store


def processed(emulator, path):
    """Calls to ``POST path`` Stripe executed (not replays, not refusals before executing)."""
    return [
        r
        for r in emulator.calls("POST", path)
        if not r.replayed and (r.status == 200 or r.status >= 500)
    ]


def test_void_voids_the_open_stripe_invoice_once(
    emulator, client, settings, invoice_factory, store_factory, policy, sleeps
):
    # Given an issued invoice open in Stripe
    invoice, store = synced(client, settings, invoice_factory, store_factory, policy, sleeps)
    stripe_id = store.record.stripe_invoice_id

    # When it is voided in Meterline and synced, twice
    voided = replace(invoice, target=SyncTarget.VOID)
    record = run(client, settings, voided, store, policy, sleeps)
    calls = len(emulator.requests)
    again = run(client, settings, voided, store, policy, sleeps)

    # Then Stripe's invoice is void, no longer collected, voided once with a key from its id
    assert record.state is SyncState.VOIDED and record.synced and record.error is None
    assert again == record and len(emulator.requests) == calls
    stripe_invoice = emulator.invoices[stripe_id]
    assert stripe_invoice["status"] == "void"
    assert stripe_invoice["auto_advance"] is False
    (void_call,) = emulator.calls("POST", "/v1/invoices/*/void")
    assert void_call.idempotency_key == "meterline-invoice-inv_01-void"
    assert [e["type"] for e in emulator.events].count("invoice.voided") == 1


def test_mark_paid_pays_the_open_stripe_invoice_out_of_band_once(
    emulator, client, settings, invoice_factory, store_factory, policy, sleeps
):
    invoice, store = synced(client, settings, invoice_factory, store_factory, policy, sleeps)
    stripe_id = store.record.stripe_invoice_id
    emulator.decline_payments(store.record.stripe_customer_id)  # a charge would fail

    paid = replace(invoice, target=SyncTarget.PAID)
    record = run(client, settings, paid, store, policy, sleeps)
    calls = len(emulator.requests)
    again = run(client, settings, paid, store, policy, sleeps)

    # Then Stripe's invoice is paid out of band: no charge attempted, the amount recorded
    assert record.state is SyncState.PAID and record.synced
    assert again == record and len(emulator.requests) == calls
    stripe_invoice = emulator.invoices[stripe_id]
    assert stripe_invoice["status"] == "paid"
    assert stripe_invoice["paid_out_of_band"] is True
    assert stripe_invoice["attempt_count"] == 0
    assert stripe_invoice["amount_paid"] == 1035
    (pay,) = emulator.calls("POST", "/v1/invoices/*/pay")
    assert pay.params == {"paid_out_of_band": "true"}
    assert pay.idempotency_key == "meterline-invoice-inv_01-pay"


@pytest.mark.parametrize(
    ("target", "path", "event"),
    [
        (SyncTarget.VOID, "/v1/invoices/*/void", "invoice.voided"),
        (SyncTarget.PAID, "/v1/invoices/*/pay", "invoice.paid"),
    ],
    ids=["void", "paid"],
)
def test_an_answer_lost_after_stripe_acted_is_not_acted_again(
    emulator,
    client,
    settings,
    invoice_factory,
    store_factory,
    policy,
    sleeps,
    target,
    path,
    event,
):
    # Given Stripe voids / pays but the answer is a 500, replayed as such under the same key
    invoice, store = synced(client, settings, invoice_factory, store_factory, policy, sleeps)
    emulator.fail_next("POST", path, status=500, after_processing=True)

    # When the sync runs: its retries get the saved 500 and it fails, visibly
    first = run(client, settings, replace(invoice, target=target), store, policy, sleeps)
    assert first.state is SyncState.FAILED
    assert "HTTP 500" in (first.error or "")
    assert store.record == first

    # Then the next run (even after Stripe forgot the key) reads the status and stops there
    emulator.forget_idempotency_keys()
    record = run(client, settings, replace(invoice, target=target), store, policy, sleeps)
    assert record.state in (SyncState.VOIDED, SyncState.PAID) and record.error is None
    assert len(processed(emulator, path)) == 1
    assert [e["type"] for e in emulator.events].count(event) == 1


@pytest.mark.parametrize("status", [500, 503, 429, 409])
@pytest.mark.parametrize("target", [SyncTarget.VOID, SyncTarget.PAID], ids=["void", "paid"])
def test_transient_errors_are_retried_with_the_same_key(
    emulator, client, settings, invoice_factory, store_factory, policy, sleeps, status, target
):
    invoice, store = synced(client, settings, invoice_factory, store_factory, policy, sleeps)
    path = "/v1/invoices/*/void" if target is SyncTarget.VOID else "/v1/invoices/*/pay"
    emulator.fail_next("POST", path, status=status, times=2)

    record = run(client, settings, replace(invoice, target=target), store, policy, sleeps)

    assert record.state in (SyncState.VOIDED, SyncState.PAID)
    attempts = emulator.calls("POST", path)
    assert [a.status for a in attempts] == [status, status, 200]
    assert len({a.idempotency_key for a in attempts}) == 1
    assert sleeps == [0.5, 1.0]
    expected = "void" if target is SyncTarget.VOID else "paid"
    assert emulator.invoices[store.record.stripe_invoice_id]["status"] == expected


def test_voiding_an_invoice_paid_in_stripe_is_reported_not_hidden(
    emulator, client, settings, invoice_factory, store_factory, policy, sleeps
):
    # Given the customer paid in Stripe before Meterline heard of it
    invoice, store = synced(client, settings, invoice_factory, store_factory, policy, sleeps)
    stripe_id = store.record.stripe_invoice_id
    client.v1.invoices.pay(stripe_id)

    # When the invoice is voided in Meterline
    record = run(client, settings, replace(invoice, target=SyncTarget.VOID), store, policy, sleeps)

    # Then the sync fails saying why and what to do; Stripe is left as it is
    assert record.state is SyncState.FAILED
    assert record.error is not None
    assert f"Stripe invoice {stripe_id} is paid" in record.error
    assert "cannot void a paid invoice" in record.error
    assert emulator.invoices[stripe_id]["status"] == "paid"
    assert emulator.calls("POST", "/v1/invoices/*/void") == []


def test_marking_paid_an_invoice_voided_in_stripe_is_reported(
    emulator, client, settings, invoice_factory, store_factory, policy, sleeps
):
    invoice, store = synced(client, settings, invoice_factory, store_factory, policy, sleeps)
    stripe_id = store.record.stripe_invoice_id
    client.v1.invoices.void_invoice(stripe_id)

    record = run(client, settings, replace(invoice, target=SyncTarget.PAID), store, policy, sleeps)

    assert record.state is SyncState.FAILED
    assert f"Stripe invoice {stripe_id} is void" in (record.error or "")
    assert emulator.calls("POST", "/v1/invoices/*/pay") == []


def test_an_uncollectible_invoice_can_be_voided_or_paid(
    emulator, client, settings, invoice_factory, store_factory, policy, sleeps
):
    invoice, store = synced(client, settings, invoice_factory, store_factory, policy, sleeps)
    client.v1.invoices.mark_uncollectible(store.record.stripe_invoice_id)

    record = run(client, settings, replace(invoice, target=SyncTarget.PAID), store, policy, sleeps)

    assert record.state is SyncState.PAID
    assert emulator.invoices[record.stripe_invoice_id]["status"] == "paid"


@pytest.mark.parametrize("crash_at", [3, 4, 5, 6])
def test_void_of_a_half_synced_invoice_deletes_the_draft_and_its_items(
    emulator, client, settings, invoice_factory, store_factory, crash, policy, sleeps, crash_at
):
    # Given a sync that died with a draft in Stripe (items partly or wholly added)
    invoice = invoice_factory()
    store = store_factory(SyncRecord(invoice.id), crash_at=crash_at, keep=True)
    with pytest.raises(crash):
        run(client, settings, invoice, store, policy, sleeps)
    (draft,) = emulator.invoices.values()
    assert draft["status"] == "draft"

    # When the invoice is voided in Meterline
    store.crash_at = None
    record = run(client, settings, replace(invoice, target=SyncTarget.VOID), store, policy, sleeps)

    # Then the draft is gone, and no item of it is left pending for a later invoice
    assert record.state is SyncState.VOIDED
    assert emulator.invoices == {}
    assert emulator.invoice_items == {}
    assert emulator.calls("POST", "/v1/invoices/*/finalize") == []


def test_void_of_an_invoice_never_sent_calls_nothing(
    emulator, client, settings, invoice_factory, store_factory, policy, sleeps
):
    invoice = invoice_factory()
    store = store_factory(SyncRecord(invoice.id))

    record = run(client, settings, replace(invoice, target=SyncTarget.VOID), store, policy, sleeps)

    assert record.state is SyncState.VOIDED
    assert emulator.requests == []


def test_mark_paid_before_the_sync_creates_it_paid_without_collection(
    emulator, client, settings, invoice_factory, store_factory, policy, sleeps
):
    # Given an invoice marked paid before its sync ran
    invoice = replace(invoice_factory(), target=SyncTarget.PAID)
    store = store_factory(SyncRecord(invoice.id))

    record = run(client, settings, invoice, store, policy, sleeps)

    # Then Stripe holds it paid out of band, finalized without automatic collection
    assert record.state is SyncState.PAID
    stripe_invoice = emulator.invoices[record.stripe_invoice_id]
    assert stripe_invoice["status"] == "paid" and stripe_invoice["paid_out_of_band"] is True
    assert stripe_invoice["total"] == 1035
    (finalize,) = emulator.calls("POST", "/v1/invoices/*/finalize")
    assert finalize.params == {"auto_advance": "false"}
    assert finalize.idempotency_key == "meterline-invoice-inv_01-finalize-paid"
    assert len(emulator.items_of(record.stripe_invoice_id)) == 3


def test_a_stripe_outage_on_delete_is_failed_then_resumed(
    emulator, client, settings, invoice_factory, store_factory, crash, policy, sleeps
):
    invoice = invoice_factory()
    store = store_factory(SyncRecord(invoice.id), crash_at=5, keep=True)
    with pytest.raises(crash):
        run(client, settings, invoice, store, policy, sleeps)
    store.crash_at = None
    emulator.fail_next("DELETE", "/v1/invoices/*", status=503, times=4)

    voided = replace(invoice, target=SyncTarget.VOID)
    first = run(client, settings, voided, store, policy, sleeps)
    assert first.state is SyncState.FAILED and "HTTP 503" in (first.error or "")
    assert emulator.invoice_items == {}  # the items went before the outage

    record = run(client, settings, voided, store, policy, sleeps)
    assert record.state is SyncState.VOIDED and emulator.invoices == {}


def _meanwhile(emulator, path, sync, act):
    """Run ``sync`` with its ``POST path`` held back, ``act`` in Stripe while it waits."""
    emulator.delay_next("POST", path, seconds=0.5)
    done = []
    thread = threading.Thread(target=lambda: done.append(sync()))
    thread.start()
    wait_until(lambda: not emulator._delays, what="the held request", timeout=5)
    act()
    thread.join()
    return done[0]


@pytest.mark.parametrize(
    ("target", "path", "meanwhile", "state", "error"),
    [
        pytest.param(
            SyncTarget.PAID, "/v1/invoices/*/pay", "pay", SyncState.PAID, None, id="pay-paid"
        ),
        pytest.param(
            SyncTarget.VOID, "/v1/invoices/*/void", "void", SyncState.VOIDED, None, id="void-void"
        ),
        pytest.param(
            SyncTarget.VOID,
            "/v1/invoices/*/void",
            "pay",
            SyncState.FAILED,
            "cannot void a paid invoice",
            id="void-paid",
        ),
        pytest.param(
            SyncTarget.PAID,
            "/v1/invoices/*/pay",
            "void",
            SyncState.FAILED,
            "Stripe cannot pay a void invoice",
            id="pay-void",
        ),
    ],
)
def test_an_invoice_that_moved_in_stripe_meanwhile_is_judged_as_it_is_now(
    emulator,
    client,
    settings,
    invoice_factory,
    store_factory,
    policy,
    sleeps,
    target,
    path,
    meanwhile,
    state,
    error,
):
    # Given an open Stripe invoice, and Stripe slow to answer Meterline's pay / void
    invoice, store = synced(client, settings, invoice_factory, store_factory, policy, sleeps)
    stripe_id = store.record.stripe_invoice_id
    sdk = emulator.client()

    def act():
        # Meanwhile the customer pays it in Stripe, or someone voids it in the Dashboard
        if meanwhile == "pay":
            sdk.v1.invoices.pay(stripe_id)
        else:
            sdk.v1.invoices.void_invoice(stripe_id)

    record = _meanwhile(
        emulator,
        path,
        lambda: run(client, settings, replace(invoice, target=target), store, policy, sleeps),
        act,
    )

    # Then Stripe refused Meterline's call (the invoice had moved) and the sync judged the
    # invoice as it is now: done when it is where Meterline wanted it, else a clear failure
    assert [c.status for c in emulator.calls("POST", path)][-1] == 400
    assert record.state is state
    if error is None:
        assert record.error is None
    else:
        assert error in (record.error or "")
