"""Entitlements, grants and the snapshot's enforcement state, through the gRPC API."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import grpc
import pytest

from controlplane.cli.main import main as cli
from controlplane.usage import storage as usage
from controlplane.usage.types import TokenType, UsageEvent
from meterline.admin.v1 import (
    catalog_pb2,
    entitlements_pb2,
    entitlements_pb2_grpc,
    gateway_pb2,
)
from tests.integration.controlplane.conftest import T0

STARTER = f"""\
_format_version: "3.0"
consumers:
  - username: acme-corp
    keyauth_credentials: [{{key: acme-secret-key}}]
  - username: acme-bot
    keyauth_credentials: [{{key: acme-bot-key}}]
  - username: free-rider
billing:
  features:
    - {{key: all-tokens, meter: llm_tokens}}
    - {{key: output-tokens, meter: llm_tokens, filters: {{type: output}}}}
    - {{key: sso, meter: llm_tokens, filters: {{model: none}}}}
  plans:
    - key: starter
      name: Starter
      currency: USD
      billing_cadence: P1M
      rate_cards:
        - feature: all-tokens          # meter llm_tokens, no filter: input + output
          price: {{type: unit, amount: "0.000002"}}
          entitlement: {{type: metered, limit: 500000, usage_period: P1M, soft_limit: false}}
        - feature: output-tokens
          entitlement: {{type: metered, limit: 1000, usage_period: P1D, soft_limit: true}}
        - feature: sso
          entitlement: {{type: static, config: {{domains: [acme.example]}}}}
  customers:
    - {{key: acme, name: Acme Corp, subjects: [acme-corp, acme-bot]}}
  subscriptions:
    - {{customer: acme, plan: starter, start: "{T0.isoformat()}"}}
"""


@pytest.fixture
async def ent(harness) -> AsyncIterator[entitlements_pb2_grpc.EntitlementServiceStub]:
    async with grpc.aio.insecure_channel(harness.address) as channel:
        yield entitlements_pb2_grpc.EntitlementServiceStub(channel)


def use(harness, subject: str, tokens: int, *, at=None, kind=TokenType.INPUT, status=200) -> None:
    event = UsageEvent(
        id=str(uuid.uuid4()),
        source="test",
        type="llm.tokens",
        subject=subject,
        time=at or harness.clock.now(),
        provider="openai",
        model="gpt-4o-mini",
        token_type=kind,
        tokens=tokens,
        status_code=status,
    )
    with harness.cp.db.begin() as conn:
        usage.insert_events(conn, [event], ingest_time=harness.clock.now())


async def values(ent, customer: str = "acme") -> dict[str, entitlements_pb2.EntitlementValue]:
    response = await ent.ListEntitlements(
        entitlements_pb2.ListEntitlementsRequest(customer=f"customers/{customer}")
    )
    return {v.feature: v for v in response.entitlements}


async def apply(harness, document: str = STARTER) -> None:
    await harness.gateway.ApplyConfig(gateway_pb2.ApplyConfigRequest(document=document))


async def test_starter_limit_grant_and_reset(harness, ent) -> None:
    # Given the Starter plan (500K tokens a month, hard) from T0
    await apply(harness)
    harness.clock.set(T0 + timedelta(days=3))
    # When both consumers of the customer use tokens, failed requests included
    use(harness, "acme-corp", 300_000)
    use(harness, "acme-bot", 150_000, kind=TokenType.OUTPUT)
    use(harness, "acme-bot", 99_999, status=500)  # not billed, not counted
    use(harness, "free-rider", 10**6)  # no customer
    tokens = (await values(ent))["all-tokens"]
    # Then the balance is shared by the customer's subjects
    assert (tokens.usage, tokens.balance, tokens.overage, tokens.has_access) == (
        450_000,
        50_000,
        0,
        True,
    )
    assert tokens.type == catalog_pb2.ENTITLEMENT_TYPE_METERED
    assert tokens.limit == 500_000 and not tokens.soft_limit
    assert tokens.period_start_time.ToDatetime().isoformat() == "2026-11-01T12:00:00"
    assert tokens.period_end_time.ToDatetime().isoformat() == "2026-12-01T12:00:00"

    # When usage passes the limit, access is gone and the overage shows
    use(harness, "acme-corp", 60_000)
    tokens = (await values(ent))["all-tokens"]
    assert (tokens.balance, tokens.overage, tokens.has_access) == (0, 10_000, False)
    # The soft-limited output entitlement allows beyond its daily 1000
    output = (await values(ent))["output-tokens"]
    assert (output.usage, output.balance, output.overage, output.has_access) == (
        150_000,
        0,
        149_000,
        True,
    )
    assert (await values(ent))["sso"].config == '{"domains":["acme.example"]}'

    # When a grant of 100K is created, it pays the overage and restores access
    grant = await ent.CreateGrant(
        entitlements_pb2.CreateGrantRequest(
            parent="customers/acme",
            grant=entitlements_pb2.Grant(feature="all-tokens", amount=100_000),
        )
    )
    assert grant.priority == 1 and grant.name == f"customers/acme/grants/{grant.id}"
    tokens = (await values(ent))["all-tokens"]
    assert (tokens.balance, tokens.overage, tokens.granted, tokens.has_access) == (
        90_000,
        0,
        600_000,
        True,
    )
    listed = await ent.ListGrants(entitlements_pb2.ListGrantsRequest(parent="customers/acme"))
    assert [g.id for g in listed.grants] == [grant.id]

    # When the next usage period starts, the limit resets and the grant's rest is kept
    harness.clock.set(T0 + timedelta(days=31))
    tokens = (await values(ent))["all-tokens"]
    assert (tokens.usage, tokens.balance, tokens.has_access) == (0, 590_000, True)

    # When the grant is voided, its rest is lost from then on
    voided = await ent.VoidGrant(entitlements_pb2.VoidGrantRequest(name=grant.name))
    assert voided.HasField("void_time")
    tokens = await ent.GetEntitlementValue(
        entitlements_pb2.GetEntitlementValueRequest(name="customers/acme/entitlements/all-tokens")
    )
    assert tokens.balance == 500_000
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await ent.VoidGrant(entitlements_pb2.VoidGrantRequest(name=grant.name))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    listed = await ent.ListGrants(entitlements_pb2.ListGrantsRequest(parent="customers/acme"))
    assert list(listed.grants) == []
    listed = await ent.ListGrants(
        entitlements_pb2.ListGrantsRequest(parent="customers/acme", include_voided=True)
    )
    assert len(listed.grants) == 1


async def test_list_by_subject_and_evaluation_time(harness, ent) -> None:
    await apply(harness)
    use(harness, "acme-bot", 1000, at=T0 + timedelta(days=40))
    response = await ent.ListEntitlements(
        entitlements_pb2.ListEntitlementsRequest(
            subject="acme-bot", time=_ts(T0 + timedelta(days=41))
        )
    )
    tokens = {v.feature: v for v in response.entitlements}["all-tokens"]
    assert tokens.usage == 1000 and tokens.customer == "customers/acme"


def _ts(moment):
    from controlplane.api.convert import to_timestamp

    return to_timestamp(moment)


async def test_preserve_overage_at_reset_through_the_api(harness, ent) -> None:
    document = STARTER.replace(
        "soft_limit: false}", "soft_limit: true, preserve_overage_at_reset: true}"
    )
    await apply(harness, document)
    use(harness, "acme-corp", 700_000, at=T0 + timedelta(days=1))
    harness.clock.set(T0 + timedelta(days=32))
    tokens = (await values(ent))["all-tokens"]
    assert (tokens.carried_overage, tokens.balance, tokens.has_access) == (200_000, 300_000, True)


@pytest.mark.parametrize(
    ("entitlement", "needle"),
    [
        pytest.param(
            "{type: metered, limit: -5, usage_period: P1M}",
            "entitlement.limit must not be negative, got -5",
            id="limit-negative",
        ),
        pytest.param(
            "{type: metered, limit: 5, usage_period: monthly}",
            "entitlement.usage_period 'monthly' is not a positive ISO 8601 duration",
            id="usage-period-invalid",
        ),
        pytest.param(
            "{type: metered, limit: 5, usage_period: P1M, soft_limit: 'no'}",
            "entitlement.soft_limit must be true or false, got a string",
            id="soft-limit-not-bool",
        ),
        pytest.param(
            "{type: metered, usage_period: P1M}",
            "entitlement.limit is required for a metered entitlement",
            id="limit-missing",
        ),
        pytest.param(
            "{type: metered, limit: 1.5, usage_period: P1M}",
            "entitlement.limit must be a whole number of units, got a float",
            id="limit-float",
        ),
        pytest.param(
            "{type: boolean, limit: 5}",
            'entitlement.limit is only for metered entitlements, not "boolean"',
            id="limit-on-boolean",
        ),
        pytest.param(
            "{type: static}",
            "entitlement.config is required for a static entitlement",
            id="static-without-config",
        ),
        pytest.param(
            "{type: static, config: [1]}",
            "entitlement.config must be a mapping",
            id="static-config-list",
        ),
    ],
)
async def test_bad_entitlements_in_yaml_store_nothing(harness, entitlement, needle) -> None:
    document = STARTER.replace(
        "{type: metered, limit: 500000, usage_period: P1M, soft_limit: false}", entitlement
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await apply(harness, document)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("billing.plans[0] (starter).rate_cards[0]: ")
    assert needle in err.value.details()
    plans = await harness.catalog.ListPlans(catalog_pb2.ListPlansRequest())
    assert list(plans.plans) == []
    consumers = await harness.gateway.ListConsumers(gateway_pb2.ListConsumersRequest())
    assert list(consumers.consumers) == []


async def test_metered_entitlement_on_a_flat_card_without_feature(harness) -> None:
    document = STARTER.replace(
        "        - feature: output-tokens\n",
        '        - key: base\n          price: {type: flat, amount: "10"}\n'
        "          entitlement: {type: metered, limit: 5, usage_period: P1M}\n"
        "        - feature: output-tokens\n",
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await apply(harness, document)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "rate_cards[1] (base)" in err.value.details()
    assert 'a "metered" entitlement needs a feature' in err.value.details()


async def test_catalog_api_round_trips_and_checks_entitlements(harness) -> None:
    await harness.catalog.CreateFeature(
        catalog_pb2.CreateFeatureRequest(feature=catalog_pb2.Feature(key="t", meter="llm_tokens"))
    )
    entitlement = catalog_pb2.Entitlement(
        type=catalog_pb2.ENTITLEMENT_TYPE_METERED,
        limit=0,
        usage_period="P1D",
        soft_limit=True,
        preserve_overage_at_reset=True,
    )
    plan = catalog_pb2.Plan(
        key="p",
        currency="USD",
        billing_cadence="P1M",
        rate_cards=[catalog_pb2.RateCard(feature="t", entitlement=entitlement)],
    )
    created = await harness.catalog.CreatePlan(catalog_pb2.CreatePlanRequest(plan=plan))
    assert created.rate_cards[0].entitlement == entitlement  # limit 0 kept apart from unset
    bad = catalog_pb2.Plan()
    bad.CopyFrom(plan)
    bad.rate_cards[0].entitlement.ClearField("limit")
    bad.rate_cards[0].entitlement.usage_period = "P0D"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await harness.catalog.CreatePlan(catalog_pb2.CreatePlanRequest(plan=bad))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "plan.rate_cards[0] (t): entitlement.limit is required" in err.value.details()
    assert "entitlement.usage_period 'P0D'" in err.value.details()
    plans = await harness.catalog.ListPlans(catalog_pb2.ListPlansRequest())
    assert len(plans.plans) == 1


@pytest.mark.parametrize(
    ("grant", "parent", "code", "needle"),
    [
        pytest.param(
            dict(feature="all-tokens", amount=0),
            "acme",
            grpc.StatusCode.INVALID_ARGUMENT,
            "grant.amount must be a positive",
            id="amount-zero",
        ),
        pytest.param(
            dict(feature="all-tokens", amount=5, recurrence_interval="weekly"),
            "acme",
            grpc.StatusCode.INVALID_ARGUMENT,
            "grant.recurrence_interval",
            id="recurrence-invalid",
        ),
        pytest.param(
            dict(feature="all-tokens", amount=5, priority=-1),
            "acme",
            grpc.StatusCode.INVALID_ARGUMENT,
            "grant.priority",
            id="priority",
        ),
        pytest.param(
            dict(feature="nope", amount=5),
            "acme",
            grpc.StatusCode.NOT_FOUND,
            "feature 'nope' not found",
            id="unknown-feature",
        ),
        pytest.param(
            dict(feature="all-tokens", amount=5),
            "nobody",
            grpc.StatusCode.NOT_FOUND,
            "customer",
            id="unknown-customer",
        ),
        pytest.param(
            dict(feature="sso", amount=5),
            "acme",
            grpc.StatusCode.FAILED_PRECONDITION,
            "no subscription with a metered entitlement",
            id="not-metered",
        ),
    ],
)
async def test_bad_grants(harness, ent, grant, parent, code, needle) -> None:
    await apply(harness)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await ent.CreateGrant(
            entitlements_pb2.CreateGrantRequest(
                parent=f"customers/{parent}", grant=entitlements_pb2.Grant(**grant)
            )
        )
    assert err.value.code() == code
    assert needle in err.value.details()


async def test_snapshot_carries_enforcement_state(harness, ent) -> None:
    await apply(harness)
    hub = harness.cp.hub
    first = await hub.current(refresh=True)
    states = {c.username: c for c in first.snapshot.consumer_entitlements}
    # Only consumers of a customer with a subscription are listed
    assert sorted(states) == ["acme-bot", "acme-corp"]
    corp, bot = states["acme-corp"], states["acme-bot"]
    assert corp.has_access and corp.customer == "acme"
    assert [m.feature for m in corp.metered] == ["all-tokens", "output-tokens"]
    tokens = corp.metered[0]
    assert (tokens.balance, tokens.has_access, tokens.soft_limit, tokens.limit) == (
        500_000,
        True,
        False,
        500_000,
    )
    assert dict(corp.metered[1].filters) == {"type": "output"}
    # Both consumers spend one balance
    assert tokens.balance_id == bot.metered[0].balance_id
    # The version is stable while nothing changes...
    assert (await hub.current(refresh=True)).version == first.version
    # ...and changes when a balance does
    use(harness, "acme-bot", 500_000)
    spent = await hub.current(refresh=True)
    assert spent.version != first.version
    tokens = {c.username: c for c in spent.snapshot.consumer_entitlements}["acme-corp"].metered[0]
    assert (tokens.balance, tokens.has_access) == (0, False)
    # A failed request changes nothing, so neither does the version
    use(harness, "acme-bot", 5, status=502)
    assert (await hub.current(refresh=True)).version == spent.version
    # A customer whose subscriptions are over is denied
    harness.clock.set(T0 - timedelta(days=1))
    before = await hub.current(refresh=True)
    assert not {c.username: c for c in before.snapshot.consumer_entitlements}[
        "acme-corp"
    ].has_access


async def test_cli_lists_entitlements_and_manages_grants(harness, ent, capsys) -> None:
    await apply(harness)
    use(harness, "acme-corp", 1234)

    def run(*args: str) -> str:
        assert cli([*args, "--cp", harness.address]) == 0
        return capsys.readouterr().out

    listed = json.loads(await asyncio.to_thread(run, "entitlements", "list", "acme", "--json"))
    tokens = {v["feature"]: v for v in listed}["all-tokens"]
    assert (tokens["usage"], tokens["balance"], tokens["has_access"]) == (1234, 498_766, True)
    table = await asyncio.to_thread(run, "entitlements", "list", "acme")
    assert "all-tokens" in table and "498766" in table and "static" in table
    created = json.loads(
        await asyncio.to_thread(
            run,
            "grants",
            "create",
            "acme",
            "--feature",
            "all-tokens",
            "--amount",
            "1000",
            "--expires",
            "2027-01-01T00:00:00Z",
            "--json",
        )
    )
    assert created["amount"] == 1000 and created["expires"] == "2027-01-01T00:00:00Z"
    assert created["id"] in await asyncio.to_thread(run, "grants", "list", "acme")
    assert "voided" in await asyncio.to_thread(run, "grants", "void", "acme", created["id"])
    assert await asyncio.to_thread(run, "grants", "list", "acme") == ""  # "no grants" on stderr


async def test_config_stream_pushes_fresh_balances_as_usage_arrives(harness) -> None:
    from meterline.dataplane.v1 import config_pb2
    from meterline.dataplane.v1 import usage_pb2 as dp_usage_pb2

    await apply(harness)
    call = harness.config_stream.StreamConfig()
    await call.write(config_pb2.ConfigRequest(node=config_pb2.Node(id="dp-1", version="0.1.0")))
    first = await asyncio.wait_for(call.read(), 5)
    await call.write(
        config_pb2.ConfigRequest(version_info=first.version_info, response_nonce=first.nonce)
    )
    [corp] = [c for c in first.snapshot.consumer_entitlements if c.username == "acme-corp"]
    assert corp.metered[0].balance == 500_000

    # When a data plane reports usage over the usage stream
    usage_call = harness.usage_stream.StreamUsage()
    event = dp_usage_pb2.UsageEvent(
        id="r1:input",
        source="dp-1",
        type="llm.tokens",
        subject="acme-bot",
        time=_ts(harness.clock.now()),
        llm_tokens=dp_usage_pb2.LlmTokens(
            provider="openai",
            model="gpt-4o-mini",
            token_type=dp_usage_pb2.TOKEN_TYPE_INPUT,
            tokens=1234,
            status_code=200,
            route="chat",
            request_id="r1",
        ),
    )
    await usage_call.write(dp_usage_pb2.UsageBatch(batch_id="b1", events=[event]))
    await usage_call.read()
    await usage_call.done_writing()

    # Then the next poll pushes a snapshot with the new balance to every data plane
    pushed = await asyncio.wait_for(call.read(), 5)
    assert pushed.version_info != first.version_info
    [corp] = [c for c in pushed.snapshot.consumer_entitlements if c.username == "acme-corp"]
    assert corp.metered[0].balance == 500_000 - 1234
    call.cancel()


async def test_applying_entitlements_twice_changes_nothing(harness) -> None:
    await apply(harness)
    again = await harness.gateway.ApplyConfig(gateway_pb2.ApplyConfigRequest(document=STARTER))
    assert list(again.changes) == []
    plan = await harness.catalog.GetPlan(catalog_pb2.GetPlanRequest(name="plans/starter"))
    metered = plan.rate_cards[0].entitlement
    assert (metered.limit, metered.usage_period, metered.soft_limit) == (500_000, "P1M", False)
    assert plan.rate_cards[2].entitlement.config == '{"domains":["acme.example"]}'
    changed = STARTER.replace("limit: 500000", "limit: 600000")
    applied = await harness.gateway.ApplyConfig(gateway_pb2.ApplyConfigRequest(document=changed))
    assert "created and published plan starter version 2" in applied.changes


async def test_a_failing_balance_computation_keeps_the_last_state(harness, monkeypatch) -> None:
    from controlplane.configsync import hub as hub_module

    await apply(harness)
    first = await harness.cp.hub.current(refresh=True)

    def broken(conn, *, at):
        raise RuntimeError("boom")

    monkeypatch.setattr(hub_module, "enforcement_state", broken)
    use(harness, "acme-corp", 10)
    # Config sync goes on with the last good entitlement state.
    assert (await harness.cp.hub.current(refresh=True)).version == first.version
