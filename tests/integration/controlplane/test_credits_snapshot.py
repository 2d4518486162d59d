"""Credits in the data-plane snapshot: live balances per customer and per credit_only feature.

Plan "prepaid" of test_credits_api: a 10.00 platform fee, tokens-in at 0.01
(credit_then_invoice), tokens-out at 0.02 (credit_only). SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal

import grpc
import pytest

from controlplane.configsync.snapshot import build_snapshot, credit_id
from controlplane.credits.live import gateway_credits
from controlplane.entitlements.service import enforcement_state
from controlplane.gateway.types import Consumer, GatewayConfig
from controlplane.usage.types import TokenType
from dataplane.admission.entitlements import Enforcer, compile_enforcement
from meterline.admin.v1 import credits_pb2_grpc, customers_pb2

from .conftest import T0, Harness
from .test_credits_api import grant, record, setup

D = Decimal


@pytest.fixture
async def credits(harness: Harness) -> AsyncIterator[credits_pb2_grpc.CreditServiceStub]:
    async with grpc.aio.insecure_channel(harness.address) as channel:
        yield credits_pb2_grpc.CreditServiceStub(channel)


async def test_live_balances_per_feature_follow_scopes_and_stored_usage(
    harness: Harness, credits
) -> None:
    # Given acme's November: 1000 input tokens (10.00) and 500 output tokens (10.00,
    # credit_only) stored, the 10.00 platform fee, and three grants: 5.00 for tokens-out
    # first, 8.00 for anything, 3.00 for images only.
    await setup(harness)
    await harness.customers.CreateCustomer(
        customers_pb2.CreateCustomerRequest(customer=customers_pb2.Customer(key="nobody"))
    )
    record(harness, tokens=1000, kind=TokenType.INPUT, at=T0 + timedelta(days=3))
    record(harness, tokens=500, kind=TokenType.OUTPUT, at=T0 + timedelta(days=4))
    await grant(credits, "5", key="out-only", priority=1, features=("tokens-out",))
    await grant(credits, "8", key="anything")
    await grant(credits, "3", key="images", features=("images",))
    at = T0 + timedelta(days=10)
    with harness.cp.db.begin() as conn:
        found = gateway_credits(conn, at=at)
        access = enforcement_state(conn, at=at)
    # Then only acme is shipped (nobody has neither grants nor a credit_only plan).
    assert set(found) == {"acme"}
    acme = found["acme"]
    # The open invoice takes out-only's 5 and anything's 8 (credit_only output first, then
    # 3 of the fee): 3 left, all of it the images grant, which cannot pay tokens-out.
    assert acme.balance == D(3)
    assert dict(acme.feature_balances) == {"tokens-out": D(0)}

    # And the snapshot: credits on the consumer, credit_only on the tokens-out price only.
    config = GatewayConfig(consumers=(Consumer(username="acme-corp"),))
    built = build_snapshot(config, access, credits=found, balance_slices=2)
    (entry,) = built.snapshot.consumer_entitlements
    assert entry.credits.credit_id == credit_id("acme")
    assert entry.credits.balance == "3"
    assert dict(entry.credits.feature_balances) == {"tokens-out": "0"}
    modes = {price.feature: price.settlement_mode for price in entry.prices}
    assert modes == {"tokens-in": "", "tokens-out": "credit_only"}
    # A data plane refuses output-token usage (no credits may pay it) and reports 3 left.
    enforcer = Enforcer()
    enforcer.apply(compile_enforcement(built.snapshot))
    refusal = enforcer.admit_credits(entry.consumer_id, provider="openai", model="gpt-4o")
    assert refusal is not None and refusal.code == "insufficient_credits"
    assert enforcer.credits_left(entry.consumer_id) == D(3)
    # Without credits the snapshot carries nothing about them.
    plain = build_snapshot(config, access, balance_slices=2)
    assert not plain.snapshot.consumer_entitlements[0].HasField("credits")
    assert plain.version != built.version

    # When 5.00 more for tokens-out arrive (spent after "anything"), the next build lets
    # output usage through again, each data plane against half of it.
    await grant(credits, "5", key="more-out", priority=9, features=("tokens-out",))
    with harness.cp.db.begin() as conn:
        again = gateway_credits(conn, at=at)
    assert again["acme"].feature_balances == {"tokens-out": D(5)}
    assert again["acme"].balance == D(8)
    rebuilt = build_snapshot(config, access, credits=again, balance_slices=2)
    enforcer.apply(compile_enforcement(rebuilt.snapshot))
    assert enforcer.admit_credits(entry.consumer_id, provider="openai", model="gpt-4o") is None
    rule = enforcer.table.consumers[entry.consumer_id].credits.only[0]  # type: ignore[union-attr]
    assert rule.allowance == D("2.5")
