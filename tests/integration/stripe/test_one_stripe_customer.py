"""One Stripe customer per Meterline customer, however many invoices and replicas sync at once.

Two control planes' Stripe apps (two engines on one database: PostgreSQL, and SQLite) sync two
invoices of a new customer at the same moment while Stripe answers slowly; before the fix each
created its own Stripe customer and the link was left to whichever saved last.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest
from integration.stripe.test_invoice_sync_wiring import T0, setup_usage

from controlplane.clock import FrozenClock
from controlplane.invoicing import lifecycle
from controlplane.storage.db import Database
from controlplane.stripe_sync import RetryPolicy, StripeSettings, SyncRecord, SyncState
from controlplane.stripe_sync import storage as sync_storage
from controlplane.stripe_sync.app import StripeApp
from controlplane.stripe_sync.sync import customer_idempotency_key
from support.stripe_emulator import StripeEmulator

NOW = T0 + timedelta(days=64)


@pytest.fixture
def replicas(migrated_db_url: str) -> Iterator[list[Database]]:
    dbs = [Database.connect(migrated_db_url) for _ in range(2)]
    try:
        yield dbs
    finally:
        for db in dbs:
            db.dispose()


def issue_two_months(db: Database) -> list[str]:
    """November and December of the customer acme, issued (the customer is new to Stripe)."""
    setup_usage(db)
    result = lifecycle.advance(db, now=NOW, settings=lifecycle.InvoicingSettings(auto_issue=True))
    assert len(result.issued) == 2
    return result.issued


def apps(dbs: list[Database], settings: StripeSettings) -> list[StripeApp]:
    policy = RetryPolicy(attempts=3, base_delay=0.01)
    return [
        StripeApp(db=db, settings=settings, clock=FrozenClock(NOW), policy=policy) for db in dbs
    ]


def at_once(*calls: object) -> list[object]:
    barrier = threading.Barrier(len(calls))
    results: list[object] = [None] * len(calls)

    def run(i: int, call: object) -> None:
        barrier.wait()
        results[i] = call()  # type: ignore[operator]

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_two_replicas_syncing_two_invoices_of_a_new_customer_make_one_stripe_customer(
    replicas: list[Database], emulator: StripeEmulator, settings: StripeSettings
) -> None:
    # Given two issued invoices of a customer Stripe does not know, and Stripe slow to search
    invoice_ids = issue_two_months(replicas[0])
    emulator.delay_next("GET", "/v1/customers/search", seconds=0.3, times=2)
    first, second = apps(replicas, settings)

    # When each replica syncs one of them at the same moment
    records = at_once(lambda: first.sync(invoice_ids[0]), lambda: second.sync(invoice_ids[1]))

    # Then there is exactly one Stripe customer, and every invoice is on it
    assert [r.state for r in records] == [SyncState.FINALIZED, SyncState.FINALIZED]  # type: ignore[union-attr]
    (customer,) = emulator.customers.values()
    assert customer["metadata"] == {"meterline_customer": "acme"}
    assert len(emulator.invoices) == 2
    assert {i["customer"] for i in emulator.invoices.values()} == {customer["id"]}
    assert {r.stripe_customer_id for r in records} == {customer["id"]}  # type: ignore[union-attr]
    with replicas[1].begin() as conn:
        assert sync_storage.stripe_customer_ids(conn) == {"acme": customer["id"]}
    # Created once, under the customer's key (not an invoice's)
    (create,) = emulator.calls("POST", "/v1/customers")
    assert create.idempotency_key == customer_idempotency_key("acme", "create")
    assert create.idempotency_key == "meterline-customer-acme-create"


def test_a_sync_never_replaces_a_link(
    replicas: list[Database], emulator: StripeEmulator, settings: StripeSettings
) -> None:
    # Given November synced (acme -> the Stripe customer it created), December half-way
    november, december = issue_two_months(replicas[0])
    app = apps(replicas, settings)[0]
    app.sync(november)
    created = app._links.get("acme")
    assert created is not None

    # When the operator links acme to another Stripe customer, and a sync that had the old one
    # in its record resumes
    other = emulator.client().v1.customers.create(params={"name": "Acme (finance)"})
    with replicas[0].begin() as conn:
        sync_storage.link_stripe_customer(conn, "acme", other.id, now=NOW)
        sync_storage.save_sync_record(
            conn,
            SyncRecord(
                invoice_id=december, state=SyncState.CUSTOMER_SYNCED, stripe_customer_id=created
            ),
            now=NOW,
        )
    record = app.sync(december)

    # Then the invoice stays on the customer its sync began with, and the link is the operator's
    assert record is not None and record.state is SyncState.FINALIZED
    assert emulator.invoices[record.stripe_invoice_id]["customer"] == created
    with replicas[0].begin() as conn:
        assert sync_storage.stripe_customer_id(conn, "acme") == other.id
        # And a sync's link never replaces one stored
        assert (
            sync_storage.link_stripe_customer_if_absent(conn, "acme", created, now=NOW) == other.id
        )
        assert sync_storage.stripe_customer_id(conn, "acme") == other.id


def test_customer_keys_stripe_cannot_hold_plainly_are_hashed() -> None:
    assert customer_idempotency_key("acme-corp_1.eu", "create") == (
        "meterline-customer-acme-corp_1.eu-create"
    )
    odd = customer_idempotency_key("acme/ünïcode key", "create")
    assert odd.startswith("meterline-customer-sha256:") and len(odd) < 255
    assert odd != customer_idempotency_key("acme/unicode key", "create")
    assert len(customer_idempotency_key("x" * 200, "create")) < 255
