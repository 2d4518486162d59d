"""handle_webhook: signed Stripe events -> Meterline states, harmless repeated or reordered."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import stripe

from controlplane.errors import FailedPrecondition, InvalidArgument
from controlplane.stripe_sync import (
    PaymentState,
    StripeSettings,
    SyncRecord,
    WebhookOutcome,
    handle_webhook,
    sync_invoice,
)


@pytest.fixture
def synced(emulator, client, settings, invoice_factory, store_factory, policy, sleeps) -> str:
    """A Meterline invoice synced and finalized in Stripe; its Stripe id."""
    invoice = invoice_factory()
    store = store_factory(SyncRecord(invoice.id))
    record = sync_invoice(
        client=client,
        settings=settings,
        invoice=invoice,
        record=store.record,
        save=store.save,
        policy=policy,
        sleep=sleeps.append,
    )
    assert record.stripe_invoice_id is not None
    return record.stripe_invoice_id


def handle(emulator, settings, client, event) -> WebhookOutcome:
    payload, signature = emulator.signed(event)
    return handle_webhook(payload=payload, signature=signature, settings=settings, client=client)


def test_paid(emulator, settings, client, synced):
    client.v1.invoices.pay(synced, params={"paid_out_of_band": True})

    outcome = handle(emulator, settings, client, emulator.last_event("invoice.paid"))

    assert outcome.state is PaymentState.PAID
    assert outcome.meterline_invoice_id == "inv_01"
    assert outcome.stripe_invoice_id == synced
    assert outcome.event_type == "invoice.paid"


def test_payment_failed(emulator, settings, client, synced):
    emulator.decline_payments(emulator.invoices[synced]["customer"])
    with pytest.raises(stripe.CardError):
        client.v1.invoices.pay(synced)

    outcome = handle(emulator, settings, client, emulator.last_event("invoice.payment_failed"))

    assert outcome.state is PaymentState.PAYMENT_FAILED
    assert outcome.stripe_status == "open"


def test_voided(emulator, settings, client, synced):
    client.v1.invoices.void_invoice(synced)

    outcome = handle(emulator, settings, client, emulator.last_event("invoice.voided"))

    assert outcome.state is PaymentState.VOID


def test_finalized_changes_nothing(emulator, settings, client, synced):
    outcome = handle(emulator, settings, client, emulator.last_event("invoice.finalized"))

    assert outcome.state is None
    assert outcome.meterline_invoice_id == "inv_01"


def test_repeated_delivery_gives_the_same_outcome(emulator, settings, client, synced):
    client.v1.invoices.pay(synced, params={"paid_out_of_band": True})
    event = emulator.last_event("invoice.paid")

    outcomes = {handle(emulator, settings, client, event) for _ in range(3)}

    assert len(outcomes) == 1
    assert outcomes.pop().state is PaymentState.PAID


def test_late_payment_failed_after_paid_still_says_paid(emulator, settings, client, synced):
    # Given a failed attempt, then a successful payment
    customer = emulator.invoices[synced]["customer"]
    emulator.decline_payments(customer)
    with pytest.raises(stripe.CardError):
        client.v1.invoices.pay(synced)
    emulator.declining_customers.discard(customer)
    client.v1.invoices.pay(synced)
    failed = emulator.last_event("invoice.payment_failed")
    paid = emulator.last_event("invoice.paid")

    # When the events arrive out of order: paid first, then the stale payment_failed
    first = handle(emulator, settings, client, paid)
    late = handle(emulator, settings, client, failed)

    # Then the stale event does not undo the payment
    assert first.state is late.state is PaymentState.PAID


def test_late_finalized_after_void_still_says_void(emulator, settings, client, synced):
    client.v1.invoices.void_invoice(synced)

    voided = handle(emulator, settings, client, emulator.last_event("invoice.voided"))
    late = handle(emulator, settings, client, emulator.last_event("invoice.finalized"))

    assert voided.state is late.state is PaymentState.VOID


def test_invoices_meterline_did_not_create_are_ignored(emulator, settings, client):
    customer = client.v1.customers.create(params={"name": "Someone"})
    other = client.v1.invoices.create(params={"customer": customer.id, "auto_advance": False})
    client.v1.invoices.finalize_invoice(other.id)  # nothing to collect: paid at once

    outcome = handle(emulator, settings, client, emulator.last_event("invoice.paid"))

    assert outcome.state is None and outcome.meterline_invoice_id is None
    assert outcome.stripe_status == "paid"


def test_other_event_types_are_ignored(emulator, settings, client):
    event = {"id": "evt_1", "object": "event", "type": "customer.created", "data": {"object": {}}}

    outcome = handle(emulator, settings, client, event)

    assert outcome == WebhookOutcome(event_id="evt_1", event_type="customer.created")
    assert emulator.requests == []


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda p, s, em: (p, None), id="unsigned"),
        pytest.param(lambda p, s, em: (p, ""), id="empty-header"),
        pytest.param(lambda p, s, em: (p, "garbage"), id="garbage-header"),
        pytest.param(lambda p, s, em: (p.replace(b"paid", b"void"), s), id="payload-changed"),
        pytest.param(
            lambda p, s, em: (p, em.sign(p.decode(), secret="whsec_someone_else")),
            id="wrong-secret",
        ),
        pytest.param(
            lambda p, s, em: (p, em.sign(p.decode(), timestamp=int(em.clock()) - 3600)),
            id="replayed-an-hour-later",
        ),
        pytest.param(lambda p, s, em: (b"not json", em.sign("not json")), id="not-json"),
    ],
)
def test_bad_signatures_are_rejected_and_change_nothing(emulator, settings, client, synced, tamper):
    client.v1.invoices.pay(synced, params={"paid_out_of_band": True})
    payload, signature = emulator.signed(emulator.last_event("invoice.paid"))
    payload, signature = tamper(payload, signature, emulator)
    calls = len(emulator.requests)

    with pytest.raises(InvalidArgument):
        handle_webhook(payload=payload, signature=signature, settings=settings, client=client)
    assert len(emulator.requests) == calls  # not even a read


def test_without_a_webhook_secret_webhooks_are_off(emulator, client):
    settings = StripeSettings(api_key="sk_test_meterline_51Hsecret", api_base=emulator.url)

    with pytest.raises(FailedPrecondition):
        handle_webhook(payload=b"{}", signature="t=1,v1=x", settings=settings, client=client)


@pytest.fixture
def receiver(settings, client) -> Iterator[tuple[str, list[object]]]:
    """A webhook endpoint as the control plane will have one: 400 on bad signatures."""
    outcomes: list[object] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            payload = self.rfile.read(int(self.headers["Content-Length"]))
            try:
                outcome = handle_webhook(
                    payload=payload,
                    signature=self.headers.get("Stripe-Signature"),
                    settings=settings,
                    client=client,
                )
            except InvalidArgument as exc:
                outcomes.append(exc)
                self.send_response(400)
            else:
                outcomes.append(outcome)
                self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/stripe/webhooks", outcomes
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_signed_delivery_over_http_end_to_end(emulator, client, synced, receiver):
    # Given the emulator delivers its events to the endpoint
    url, outcomes = receiver
    emulator.webhook_url = url

    # When the invoice is paid in Stripe
    client.v1.invoices.pay(synced, params={"paid_out_of_band": True})
    deliveries = emulator.wait_for_deliveries()

    # Then the endpoint verified the signature, re-read the invoice and saw it paid
    assert [(d.event_type, d.status) for d in deliveries] == [("invoice.paid", 200)]
    [outcome] = outcomes
    assert isinstance(outcome, WebhookOutcome) and outcome.state is PaymentState.PAID

    # And a redelivery (Stripe retries) is answered the same way
    emulator.deliver(emulator.last_event("invoice.paid"))
    emulator.wait_for_deliveries()
    assert outcomes[1] == outcome


def test_forged_delivery_over_http_gets_400(emulator, synced, receiver):
    url, outcomes = receiver
    event = emulator.last_event("invoice.finalized")
    emulator.webhook_secret = "whsec_forger"
    try:
        emulator.deliver(event, url)
        [delivery] = emulator.wait_for_deliveries()
    finally:
        emulator.webhook_secret = "whsec_meterline_topsecret"

    assert delivery.status == 400
    assert isinstance(outcomes[0], InvalidArgument)
    assert json.loads(emulator.signed(event)[0])["id"] == event["id"]
