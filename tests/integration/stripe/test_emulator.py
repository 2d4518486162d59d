"""The Stripe emulator, driven by the official SDK as Meterline drives Stripe."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import stripe

from support.processes import free_port, http_ready, wait_until

EMULATOR = Path(__file__).parents[2] / "support" / "stripe_emulator.py"


@pytest.fixture
def sdk(emulator) -> stripe.StripeClient:
    return emulator.client()


@pytest.fixture
def customer(sdk):
    return sdk.v1.customers.create(
        params={
            "name": "Acme",
            "email": "billing@acme.test",
            "metadata": {"meterline_customer": "acme"},
        }
    )


def draft(sdk, customer, **params):
    return sdk.v1.invoices.create(
        params={"customer": customer.id, "auto_advance": False, "currency": "usd", **params}
    )


def item(sdk, customer, invoice, amount, **params):
    return sdk.v1.invoice_items.create(
        params={
            "customer": customer.id,
            "invoice": invoice.id,
            "amount": amount,
            "currency": "usd",
            **params,
        }
    )


def test_customers_create_read_update_list_search(sdk, customer):
    assert customer.object == "customer" and customer.id.startswith("cus_")
    assert sdk.v1.customers.retrieve(customer.id).name == "Acme"

    updated = sdk.v1.customers.update(
        customer.id, params={"name": "Acme Corp", "metadata": {"extra": "1"}}
    )
    assert updated.name == "Acme Corp"
    assert updated.metadata.to_dict() == {"meterline_customer": "acme", "extra": "1"}
    removed = sdk.v1.customers.update(customer.id, params={"metadata": {"extra": ""}})
    assert removed.metadata.to_dict() == {"meterline_customer": "acme"}

    other = sdk.v1.customers.create(params={"name": "Other"})
    listed = sdk.v1.customers.list(params={"limit": 1})
    assert [c.id for c in listed.data] == [customer.id] and listed.has_more
    assert [c.id for c in listed.auto_paging_iter()] == [customer.id, other.id]
    found = sdk.v1.customers.search(params={"query": "metadata['meterline_customer']:'acme'"})
    assert found.object == "search_result" and [c.id for c in found.data] == [customer.id]


def test_invoice_lifecycle_draft_items_finalize_pay(emulator, sdk, customer):
    invoice = draft(sdk, customer, metadata={"meterline_invoice_id": "inv_1"})
    assert (invoice.status, invoice.total, invoice.auto_advance) == ("draft", 0, False)
    first = item(
        sdk,
        customer,
        invoice,
        1234,
        description="ai-token (1234000 x 0.00001)",
        period={"start": 1735689600, "end": 1738368000},
        metadata={"meterline_line_id": "l1"},
    )
    item(sdk, customer, invoice, -200, description="discount")
    assert first.object == "invoiceitem" and first.period.start == 1735689600

    assert sdk.v1.invoices.retrieve(invoice.id).total == 1034  # a draft follows its items
    lines = sdk.v1.invoices.line_items.list(invoice.id)
    assert [line.amount for line in lines.data] == [1234, -200]
    assert lines.data[0].metadata.to_dict() == {"meterline_line_id": "l1"}
    assert lines.data[0].parent.invoice_item_details.invoice_item == first.id

    finalized = sdk.v1.invoices.finalize_invoice(invoice.id, params={"auto_advance": True})
    assert (finalized.status, finalized.total, finalized.amount_due) == ("open", 1034, 1034)
    assert finalized.number and finalized.auto_advance is True
    assert finalized.lines.total_count == 2

    paid = sdk.v1.invoices.pay(invoice.id)
    assert (paid.status, paid.amount_paid, paid.amount_remaining) == ("paid", 1034, 0)
    assert [e["type"] for e in emulator.events] == [
        "invoice.created",
        "invoice.finalized",
        "invoice.paid",
    ]
    found = sdk.v1.invoices.search(params={"query": "metadata['meterline_invoice_id']:'inv_1'"})
    assert [i.id for i in found.data] == [invoice.id]
    assert [i.id for i in sdk.v1.invoices.list(params={"customer": customer.id}).data] == [
        invoice.id
    ]


def test_state_rules(sdk, customer):
    invoice = draft(sdk, customer)
    item(sdk, customer, invoice, 500)
    with pytest.raises(stripe.InvalidRequestError, match="open or uncollectible"):
        sdk.v1.invoices.void_invoice(invoice.id)
    sdk.v1.invoices.finalize_invoice(invoice.id)
    with pytest.raises(stripe.InvalidRequestError, match="re-finalize"):
        sdk.v1.invoices.finalize_invoice(invoice.id)
    with pytest.raises(stripe.InvalidRequestError, match="no longer editable") as raised:
        item(sdk, customer, invoice, 100)
    assert raised.value.code == "invoice_not_editable"
    assert sdk.v1.invoices.void_invoice(invoice.id).status == "void"
    with pytest.raises(stripe.InvalidRequestError):
        sdk.v1.invoices.pay(invoice.id)


def _invoice_in(sdk, customer, status):
    """A 5.00 invoice brought to ``status`` through Stripe's own transitions."""
    invoice = draft(sdk, customer)
    item(sdk, customer, invoice, 500)
    if status == "draft":
        return invoice
    sdk.v1.invoices.finalize_invoice(invoice.id)
    if status == "paid":
        sdk.v1.invoices.pay(invoice.id, params={"paid_out_of_band": True})
    elif status == "void":
        sdk.v1.invoices.void_invoice(invoice.id)
    elif status == "uncollectible":
        sdk.v1.invoices.mark_uncollectible(invoice.id)
    return sdk.v1.invoices.retrieve(invoice.id)


def _act(sdk, invoice, action):
    if action == "finalize":
        return sdk.v1.invoices.finalize_invoice(invoice.id).status
    if action == "pay":
        return sdk.v1.invoices.pay(invoice.id, params={"paid_out_of_band": True}).status
    if action == "void":
        return sdk.v1.invoices.void_invoice(invoice.id).status
    if action == "mark_uncollectible":
        return sdk.v1.invoices.mark_uncollectible(invoice.id).status
    assert sdk.v1.invoices.delete(invoice.id).deleted is True
    return "deleted"


# Stripe's invoice state machine: draft -> open -> paid | void | uncollectible;
# uncollectible -> paid | void; paid and void are final; only a draft is deleted.
# None: refused with a 400 invalid_request_error, nothing changes.
TRANSITIONS = {
    "draft": {
        "finalize": "open",
        "pay": None,
        "void": None,
        "mark_uncollectible": None,
        "delete": "deleted",
    },
    "open": {
        "finalize": None,
        "pay": "paid",
        "void": "void",
        "mark_uncollectible": "uncollectible",
        "delete": None,
    },
    "uncollectible": {
        "finalize": None,
        "pay": "paid",
        "void": "void",
        "mark_uncollectible": None,
        "delete": None,
    },
    "paid": {a: None for a in ("finalize", "pay", "void", "mark_uncollectible", "delete")},
    "void": {a: None for a in ("finalize", "pay", "void", "mark_uncollectible", "delete")},
}


@pytest.mark.parametrize(
    ("status", "action", "after"),
    [
        pytest.param(status, action, after, id=f"{status}-{action}")
        for status, actions in TRANSITIONS.items()
        for action, after in actions.items()
    ],
)
def test_invoice_state_machine(emulator, sdk, customer, status, action, after):
    invoice = _invoice_in(sdk, customer, status)
    if after is None:
        with pytest.raises(stripe.InvalidRequestError) as raised:
            _act(sdk, invoice, action)
        assert raised.value.http_status == 400
        assert sdk.v1.invoices.retrieve(invoice.id).status == status
        return
    assert _act(sdk, invoice, action) == after
    if after == "deleted":
        with pytest.raises(stripe.InvalidRequestError) as raised:
            sdk.v1.invoices.retrieve(invoice.id)
        assert raised.value.http_status == 404 and raised.value.code == "resource_missing"
    else:
        assert sdk.v1.invoices.retrieve(invoice.id).status == after


def test_paid_out_of_band_moves_no_money_and_voiding_a_paid_invoice_is_refused(sdk, customer):
    emulator_declines = draft(sdk, customer)
    item(sdk, customer, emulator_declines, 700)
    sdk.v1.invoices.finalize_invoice(emulator_declines.id)

    paid = sdk.v1.invoices.pay(emulator_declines.id, params={"paid_out_of_band": True})

    assert (paid.status, paid.paid_out_of_band, paid.amount_paid) == ("paid", True, 700)
    assert (paid.attempt_count, paid.amount_remaining) == (0, 0)
    with pytest.raises(stripe.InvalidRequestError, match="open or uncollectible") as raised:
        sdk.v1.invoices.void_invoice(paid.id)
    assert raised.value.code == "invoice_not_editable"
    with pytest.raises(stripe.InvalidRequestError, match="already paid"):
        sdk.v1.invoices.pay(paid.id, params={"paid_out_of_band": True})


def test_deleting_a_draft_and_its_items(emulator, sdk, customer):
    invoice = draft(sdk, customer)
    first = item(sdk, customer, invoice, 500)
    second = item(sdk, customer, invoice, 300)

    assert sdk.v1.invoice_items.delete(first.id).deleted is True
    with pytest.raises(stripe.InvalidRequestError) as raised:
        sdk.v1.invoice_items.delete(first.id)
    assert raised.value.http_status == 404
    assert sdk.v1.invoices.retrieve(invoice.id).total == 300

    # A deleted draft is gone; its remaining items are pending on the customer again
    assert sdk.v1.invoices.delete(invoice.id).deleted is True
    assert emulator.invoice_items[second.id]["invoice"] is None
    with pytest.raises(stripe.InvalidRequestError) as raised:
        sdk.v1.invoices.delete(invoice.id)
    assert raised.value.http_status == 404
    # DELETE carries no idempotency key, as at Stripe
    assert all(r.idempotency_key is None for r in emulator.requests if r.method == "DELETE")

    # An item of a finalized invoice cannot be deleted
    open_invoice = draft(sdk, customer)
    kept = item(sdk, customer, open_invoice, 900)
    sdk.v1.invoices.finalize_invoice(open_invoice.id)
    with pytest.raises(stripe.InvalidRequestError, match="no longer editable"):
        sdk.v1.invoice_items.delete(kept.id)


def test_delay_next_answers_late_without_holding_others(emulator, sdk, customer):
    # Given a slow answer to one request
    emulator.delay_next("GET", "/v1/customers/*", seconds=1.5)
    slow = threading.Thread(target=sdk.v1.customers.retrieve, args=(customer.id,))
    start = time.monotonic()
    slow.start()
    wait_until(lambda: not emulator._delays, what="the slow request", timeout=5)

    # When another request is made meanwhile, it is answered while the slow one still waits
    sdk.v1.invoices.list()
    assert slow.is_alive()
    slow.join()
    assert time.monotonic() - start >= 1.5
    assert [r.path for r in emulator.requests][-2:] == [
        "/v1/invoices",
        f"/v1/customers/{customer.id}",
    ]


def test_zero_total_is_paid_on_finalize(sdk, customer):
    invoice = draft(sdk, customer)
    assert sdk.v1.invoices.finalize_invoice(invoice.id).status == "paid"


def test_send_invoice_needs_days_until_due_and_gets_a_due_date(sdk, customer):
    with pytest.raises(stripe.InvalidRequestError) as raised:
        draft(sdk, customer, collection_method="send_invoice")
    assert (raised.value.param, raised.value.code) == ("days_until_due", "parameter_missing")
    invoice = draft(sdk, customer, collection_method="send_invoice", days_until_due=30)
    item(sdk, customer, invoice, 100)
    finalized = sdk.v1.invoices.finalize_invoice(invoice.id)
    assert finalized.due_date == finalized.status_transitions.finalized_at + 30 * 86400


def test_pending_items_are_excluded_unless_asked(sdk, customer):
    sdk.v1.invoice_items.create(params={"customer": customer.id, "amount": 700, "currency": "usd"})
    excluded = draft(sdk, customer, pending_invoice_items_behavior="exclude")
    assert excluded.lines.total_count == 0
    included = draft(sdk, customer, pending_invoice_items_behavior="include")
    assert included.total == 700


def test_declined_payment_is_a_card_error_and_an_event(emulator, sdk, customer):
    invoice = draft(sdk, customer)
    item(sdk, customer, invoice, 100)
    sdk.v1.invoices.finalize_invoice(invoice.id)
    emulator.decline_payments(customer.id)

    with pytest.raises(stripe.CardError) as raised:
        sdk.v1.invoices.pay(invoice.id)

    assert raised.value.http_status == 402 and raised.value.code == "card_declined"
    assert emulator.last_event("invoice.payment_failed")["data"]["object"]["attempt_count"] == 1


def test_stripe_error_json(emulator, sdk, customer):
    with pytest.raises(stripe.InvalidRequestError) as missing:
        sdk.v1.invoices.retrieve("in_nope")
    assert missing.value.http_status == 404
    assert missing.value.json_body == {
        "error": {
            "type": "invalid_request_error",
            "message": "No such invoice: 'in_nope'",
            "param": "id",
            "code": "resource_missing",
        }
    }
    with pytest.raises(stripe.InvalidRequestError, match="Received unknown parameter: colour"):
        sdk.v1.customers.create(params={"colour": "red"})  # type: ignore[typeddict-unknown-key]
    with pytest.raises(stripe.InvalidRequestError, match="Invalid integer"):
        sdk.v1.invoice_items.create(
            params={"customer": customer.id, "amount": "12.5", "currency": "usd"}  # type: ignore[typeddict-item]
        )
    response = httpx.get(f"{emulator.url}/v1/nothing", headers={"Authorization": "Bearer x"})
    assert response.status_code == 401


def test_bad_api_key_is_401_and_masked(emulator):
    client = emulator.client(api_key="sk_test_not_the_right_key_4242")
    with pytest.raises(stripe.AuthenticationError) as raised:
        client.v1.customers.list()
    assert raised.value.http_status == 401
    assert "4242" in str(raised.value) and "not_the_right" not in str(raised.value)


def test_idempotency_replays_the_first_response(emulator, sdk):
    options: stripe.RequestOptions = {"idempotency_key": "k-1"}
    first = sdk.v1.customers.create(params={"name": "Acme"}, options=options)
    again = sdk.v1.customers.create(params={"name": "Acme"}, options=options)

    assert again.id == first.id and len(emulator.customers) == 1
    assert [r.replayed for r in emulator.calls("POST", "/v1/customers")] == [False, True]
    with pytest.raises(stripe.IdempotencyError) as raised:
        sdk.v1.customers.create(params={"name": "Other"}, options=options)
    assert raised.value.http_status == 400
    assert raised.value.json_body["error"]["type"] == "idempotency_error"
    with pytest.raises(stripe.IdempotencyError):
        sdk.v1.customers.update(first.id, params={"name": "Acme"}, options=options)


def test_idempotency_does_not_save_validation_errors(emulator, sdk):
    options: stripe.RequestOptions = {"idempotency_key": "k-2"}
    with pytest.raises(stripe.InvalidRequestError):
        sdk.v1.invoices.create(params={"customer": "cus_missing"}, options=options)
    customer = sdk.v1.customers.create(params={"name": "Acme"})

    fixed = sdk.v1.invoices.create(params={"customer": customer.id}, options=options)

    assert fixed.customer == customer.id


def test_idempotency_saves_5xx_after_execution(emulator, sdk):
    emulator.fail_next("POST", "/v1/customers", status=500, after_processing=True)
    options: stripe.RequestOptions = {"idempotency_key": "k-3"}
    for _ in range(2):
        with pytest.raises(stripe.APIError):
            sdk.v1.customers.create(params={"name": "Acme"}, options=options)
    assert len(emulator.customers) == 1  # done once, its 500 replayed

    emulator.forget_idempotency_keys()
    sdk.v1.customers.create(params={"name": "Acme"}, options=options)
    assert len(emulator.customers) == 2  # a pruned key is a new request, as at Stripe


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (500, stripe.APIError),
        (503, stripe.APIError),
        (429, stripe.RateLimitError),
        (400, stripe.InvalidRequestError),
    ],
)
def test_injected_faults_hit_the_next_calls_only(emulator, sdk, status, error):
    emulator.fail_next("POST", "/v1/invoices/*/finalize", status=status, times=2)
    customer = sdk.v1.customers.create(params={"name": "Acme"})
    invoice = draft(sdk, customer)
    for _ in range(2):
        with pytest.raises(error) as raised:
            sdk.v1.invoices.finalize_invoice(invoice.id)
        assert raised.value.http_status == status
    assert sdk.v1.invoices.finalize_invoice(invoice.id).status == "paid"


def test_events_are_signed_as_stripe_signs_them(emulator, sdk, customer):
    invoice = draft(sdk, customer)
    sdk.v1.invoices.finalize_invoice(invoice.id)
    payload, header = emulator.signed(emulator.last_event("invoice.finalized"))

    event = stripe.Webhook.construct_event(payload, header, emulator.webhook_secret)

    assert event.type == "invoice.finalized" and event.data.object.id == invoice.id
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(payload, header, "whsec_other")
    assert header == stripe.WebhookSignature.generate_signature_header(
        payload.decode(), emulator.webhook_secret, timestamp=int(header[2:].split(",")[0])
    )


def test_runs_as_a_process(tmp_path):
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(EMULATOR), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: http_ready(f"{url}/_emulator/state", {401}), what="emulator")
        client = stripe.StripeClient(
            "sk_test_meterline_emulator", base_addresses={"api": url}, max_network_retries=0
        )
        created = client.v1.customers.create(params={"name": "Acme"})
        state = httpx.get(
            f"{url}/_emulator/state",
            headers={"Authorization": "Bearer sk_test_meterline_emulator"},
        ).json()
        assert [c["id"] for c in state["customers"]] == [created.id]
        assert json.dumps(state)
    finally:
        process.terminate()
        process.wait(timeout=10)
