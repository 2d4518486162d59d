"""Which invoices the job brings to Stripe: those whose Stripe invoice is not yet what their
state asks, unless their sync failed (those wait for retry-sync)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from controlplane.invoicing.storage import InvoiceRow
from controlplane.invoicing.types import InvoiceState
from controlplane.stripe_sync import SyncRecord, SyncState
from controlplane.stripe_sync.app import needs_sync
from controlplane.stripe_sync.storage import sync_record_to_json
from controlplane.stripe_sync.types import SyncTarget

T = datetime(2026, 12, 1, tzinfo=UTC)


def row(state: InvoiceState, sync: SyncState | None) -> InvoiceRow:
    record = SyncRecord(invoice_id="i", state=sync) if sync is not None else None
    return InvoiceRow(
        id="i",
        customer="acme",
        currency="USD",
        period_start=T,
        period_end=T,
        state=state,
        number="ML-USD-2026-000001",
        total=Decimal("1.00"),
        issue_time=T,
        sync_state=sync.value if sync else None,
        sync_record=sync_record_to_json(record) if record else None,
        create_time=T,
        update_time=T,
    )


ISSUED, PAID, FAILED, VOID = (
    InvoiceState.ISSUED,
    InvoiceState.PAID,
    InvoiceState.PAYMENT_FAILED,
    InvoiceState.VOID,
)


@pytest.mark.parametrize(
    ("state", "sync", "expected"),
    [
        pytest.param(ISSUED, None, True, id="issued-never-synced"),
        pytest.param(ISSUED, SyncState.PENDING, True, id="issued-pending"),
        pytest.param(ISSUED, SyncState.ITEMS_SYNCED, True, id="issued-mid-way"),
        pytest.param(ISSUED, SyncState.FINALIZED, False, id="issued-synced"),
        pytest.param(ISSUED, SyncState.FAILED, False, id="issued-failed-waits-for-retry"),
        pytest.param(FAILED, SyncState.FINALIZED, False, id="payment-failed-stays-open"),
        pytest.param(PAID, SyncState.FINALIZED, True, id="paid-not-yet-in-stripe"),
        pytest.param(PAID, SyncState.PAID, False, id="paid-in-stripe"),
        pytest.param(PAID, None, True, id="paid-never-synced"),
        pytest.param(VOID, SyncState.FINALIZED, True, id="void-not-yet-in-stripe"),
        pytest.param(VOID, SyncState.VOIDED, False, id="void-in-stripe"),
        pytest.param(VOID, None, False, id="void-never-sent-nothing-to-undo"),
        pytest.param(VOID, SyncState.FAILED, False, id="void-failed-waits-for-retry"),
        pytest.param(InvoiceState.DRAFT, None, False, id="draft-not-synced"),
        pytest.param(InvoiceState.GATHERING, None, False, id="gathering-not-synced"),
    ],
)
def test_needs_sync(state: InvoiceState, sync: SyncState | None, expected: bool) -> None:
    assert needs_sync(row(state, sync)) is expected


@pytest.mark.parametrize(
    ("sync", "target", "done"),
    [
        (SyncState.FINALIZED, SyncTarget.OPEN, True),
        (SyncState.FINALIZED, SyncTarget.PAID, False),
        (SyncState.FINALIZED, SyncTarget.VOID, False),
        (SyncState.PAID, SyncTarget.PAID, True),
        (SyncState.VOIDED, SyncTarget.VOID, True),
        (SyncState.FAILED, SyncTarget.OPEN, False),
    ],
)
def test_a_record_is_done_only_in_its_targets_state(
    sync: SyncState, target: SyncTarget, done: bool
) -> None:
    assert SyncRecord(invoice_id="i", state=sync).done(target) is done
