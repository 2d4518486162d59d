"""Fixtures for the Stripe sync: a fresh emulator per test and a crashable record store."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

import pytest
import stripe

from controlplane.stripe_sync import (
    InvoiceToSync,
    LineToSync,
    RetryPolicy,
    StripeSettings,
    SyncRecord,
    new_client,
)
from support.stripe_emulator import StripeEmulator, running_stripe_emulator

API_KEY = "sk_test_meterline_51Hsecret"
WEBHOOK_SECRET = "whsec_meterline_topsecret"
PERIOD_START = datetime(2025, 1, 1, tzinfo=UTC)
PERIOD_END = datetime(2025, 2, 1, tzinfo=UTC)


class Crash(Exception):
    """The control plane died (injected by a test)."""


@dataclass
class Store:
    """What the invoicing package will do with records: keep the last one saved.

    ``crash_at=k`` makes the k-th save raise Crash; with ``keep`` the record is stored first
    (died after saving), otherwise it is lost (Stripe did the step, Meterline never knew).
    """

    record: SyncRecord
    crash_at: int | None = None
    keep: bool = False
    saves: list[SyncRecord] = field(default_factory=list)

    def save(self, record: SyncRecord) -> None:
        self.saves.append(record)
        if self.crash_at == len(self.saves):
            if self.keep:
                self.record = record
            raise Crash(f"crash at save {len(self.saves)}")
        self.record = record


@pytest.fixture(scope="session")
def served_emulator() -> Iterator[StripeEmulator]:
    with running_stripe_emulator(api_key=API_KEY, webhook_secret=WEBHOOK_SECRET) as running:
        yield running


@pytest.fixture
def emulator(served_emulator: StripeEmulator) -> StripeEmulator:
    """The shared emulator server, emptied for this test."""
    served_emulator.reset()
    return served_emulator


@pytest.fixture
def settings(emulator: StripeEmulator) -> StripeSettings:
    return StripeSettings(api_key=API_KEY, webhook_secret=WEBHOOK_SECRET, api_base=emulator.url)


@pytest.fixture
def client(settings: StripeSettings) -> stripe.StripeClient:
    return new_client(settings)


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def policy() -> RetryPolicy:
    return RetryPolicy(attempts=4, base_delay=0.5, max_delay=2.0)


def make_invoice(
    *, id: str = "inv_01", customer_stripe_id: str | None = None, currency: str = "USD"
) -> InvoiceToSync:
    """Three lines, one of them a discount: 12.34 + 0.01 + (-2.00) = 10.35."""
    lines = (
        LineToSync(
            id=f"{id}-l1",
            description="ai-token (1234000 x 0.00001)",
            amount=Decimal("12.34"),
            period_start=PERIOD_START,
            period_end=PERIOD_END,
        ),
        LineToSync(
            id=f"{id}-l2",
            description="ai-token-output (1 x 0.01)",
            amount=Decimal("0.01"),
            period_start=PERIOD_START,
            period_end=PERIOD_END,
        ),
        LineToSync(
            id=f"{id}-l3",
            description="ai-token discount (10%)",
            amount=Decimal("-2.00"),
            period_start=PERIOD_START,
            period_end=PERIOD_END,
        ),
    )
    return InvoiceToSync(
        id=id,
        number=f"ML-{id}",
        customer_key="acme",
        customer_name="Acme Corp",
        customer_stripe_id=customer_stripe_id,
        currency=currency,
        lines=lines,
        total=sum((line.amount for line in lines), Decimal(0)),
    )


@pytest.fixture
def crash() -> type[Crash]:
    return Crash


@pytest.fixture
def invoice_factory() -> object:
    return make_invoice


@pytest.fixture
def store_factory() -> object:
    return Store
