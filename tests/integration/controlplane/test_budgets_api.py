"""Money budgets through YAML, the admin API and the CLI; their state in snapshots."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal

import grpc
import pytest

from controlplane.cli.main import main as cli
from controlplane.usage import storage as usage
from controlplane.usage.types import TokenType, UsageEvent
from meterline.admin.v1 import entitlements_pb2, entitlements_pb2_grpc, gateway_pb2
from meterline.dataplane.v1 import config_pb2
from tests.integration.controlplane.conftest import T0

DOCUMENT = f"""\
_format_version: "3.0"
consumers:
  - username: acme-corp
    keyauth_credentials: [{{key: acme-secret-key}}]
billing:
  features:
    - {{key: input-tokens, meter: llm_tokens, filters: {{type: input}}}}
    - {{key: output-tokens, meter: llm_tokens, filters: {{type: output}}}}
  plans:
    - key: team
      name: Team
      currency: USD
      billing_cadence: P1M
      rate_cards:
        - {{feature: input-tokens, price: {{type: unit, amount: "0.001"}}}}
        - feature: output-tokens
          price:
            type: tiered
            mode: graduated
            tiers:
              - {{up_to: "1000", unit_price: "0.002"}}
              - {{unit_price: "0.001"}}
  customers:
    - {{key: acme, name: Acme Corp, subjects: [acme-corp]}}
    - {{key: idle, name: Idle Inc, subjects: [idle-bot]}}
  subscriptions:
    - {{customer: acme, plan: team, start: "{T0.isoformat()}"}}
  budgets:
    - {{customer: acme, amount: "100", currency: USD, period: P1M, mode: hard}}
"""


@pytest.fixture
async def ent(harness) -> AsyncIterator[entitlements_pb2_grpc.EntitlementServiceStub]:
    async with grpc.aio.insecure_channel(harness.address) as channel:
        yield entitlements_pb2_grpc.EntitlementServiceStub(channel)


def use(harness, tokens: int, kind: TokenType) -> None:
    event = UsageEvent(
        id=str(uuid.uuid4()),
        source="test",
        type="llm.tokens",
        subject="acme-corp",
        time=harness.clock.now(),
        provider="openai",
        model="gpt-4o-mini",
        token_type=kind,
        tokens=tokens,
        status_code=200,
    )
    with harness.cp.db.begin() as conn:
        usage.insert_events(conn, [event], ingest_time=harness.clock.now())


async def apply(harness, document: str = DOCUMENT) -> gateway_pb2.ApplyConfigResponse:
    return await harness.gateway.ApplyConfig(gateway_pb2.ApplyConfigRequest(document=document))


async def snapshot(harness) -> config_pb2.ConfigResponse:
    call = harness.config_stream.StreamConfig()
    await call.write(config_pb2.ConfigRequest(node=config_pb2.Node(id="dp-budgets")))
    response = await call.read()
    call.cancel()
    return response


async def test_yaml_budget_spent_from_the_invoice_and_prices_in_the_snapshot(harness, ent):
    await apply(harness)
    again = await apply(harness)
    assert not [c for c in again.changes if "budget" in c]  # applying twice changes nothing
    use(harness, 2_000, TokenType.INPUT)
    use(harness, 1_500, TokenType.OUTPUT)
    listed = await ent.ListBudgets(entitlements_pb2.ListBudgetsRequest(parent="customers/acme"))
    (budget,) = listed.budgets
    assert (budget.amount, budget.currency, budget.period) == ("100", "USD", "P1M")
    assert budget.mode == entitlements_pb2.BUDGET_MODE_HARD
    # 2000 x 0.001 + (1000 x 0.002 + 500 x 0.001) = 4.50
    assert Decimal(budget.spent) == Decimal("4.50")
    assert Decimal(budget.remaining) == Decimal("95.50")

    harness.cp.hub.poll_seconds = 0.05
    await harness.cp.hub.notify()
    response = await snapshot(harness)
    (entry,) = response.snapshot.consumer_entitlements
    assert entry.currency == "USD"
    prices = {p.feature: (dict(p.filters), Decimal(p.unit_price)) for p in entry.prices}
    # Tiered: the unit price of the tier the period's usage is in now (1500 > 1000).
    assert prices == {
        "input-tokens": ({"type": "input"}, Decimal("0.001")),
        "output-tokens": ({"type": "output"}, Decimal("0.001")),
    }
    (state,) = entry.budgets
    assert (state.budget_id, state.amount, Decimal(state.spent), state.hard) == (
        budget.id,
        "100",
        Decimal("4.50"),
        True,
    )

    # A changed amount updates the budget of that customer and mode.
    changed = await apply(harness, DOCUMENT.replace('amount: "100"', 'amount: "250"'))
    assert any("updated hard budget of acme" in c for c in changed.changes)
    listed = await ent.ListBudgets(entitlements_pb2.ListBudgetsRequest())
    assert [b.amount for b in listed.budgets] == ["250"]


@pytest.mark.parametrize(
    ("budget", "parent", "code", "needle"),
    [
        pytest.param(
            {"amount": "-5"},
            "customers/acme",
            grpc.StatusCode.INVALID_ARGUMENT,
            "negative",
            id="negative-amount",
        ),
        pytest.param(
            {"amount": "ten"},
            "customers/acme",
            grpc.StatusCode.INVALID_ARGUMENT,
            "decimal",
            id="not-a-number",
        ),
        pytest.param(
            {"amount": "Infinity"},
            "customers/acme",
            grpc.StatusCode.INVALID_ARGUMENT,
            "finite",
            id="infinite",
        ),
        pytest.param(
            {}, "customers/acme", grpc.StatusCode.INVALID_ARGUMENT, "required", id="no-amount"
        ),
        pytest.param(
            {"amount": "10", "currency": "EUR"},
            "customers/acme",
            grpc.StatusCode.INVALID_ARGUMENT,
            "not the currency",
            id="other-currency",
        ),
        pytest.param(
            {"amount": "10", "period": "P1D"},
            "customers/acme",
            grpc.StatusCode.INVALID_ARGUMENT,
            "billing cadence",
            id="other-period",
        ),
        pytest.param(
            {"amount": "10"},
            "customers/nobody",
            grpc.StatusCode.NOT_FOUND,
            "nobody",
            id="unknown-customer",
        ),
        pytest.param(
            {"amount": "10"},
            "customers/idle",
            grpc.StatusCode.FAILED_PRECONDITION,
            "no running subscription",
            id="no-subscription",
        ),
    ],
)
async def test_bad_budgets_are_refused_and_store_nothing(
    harness, ent, budget, parent, code, needle
):
    await apply(harness)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await ent.CreateBudget(
            entitlements_pb2.CreateBudgetRequest(
                parent=parent, budget=entitlements_pb2.Budget(**budget)
            )
        )
    assert refused.value.code() == code
    assert needle in refused.value.details()
    listed = await ent.ListBudgets(entitlements_pb2.ListBudgetsRequest())
    assert len(listed.budgets) == 1  # the file's


@pytest.mark.parametrize(
    ("entry", "needle"),
    [
        pytest.param('{customer: acme, amount: "-1"}', "amount", id="negative"),
        pytest.param("{customer: acme, amount: 0.5}", "float", id="float"),
        pytest.param(
            '{customer: nobody, amount: "1"}', 'unknown customer "nobody"', id="unknown-customer"
        ),
        pytest.param('{customer: acme, amount: "1", mode: strict}', "mode", id="bad-mode"),
        pytest.param(
            '{customer: acme, amount: "1", currency: EUR}', "not the currency", id="other-currency"
        ),
    ],
)
async def test_bad_budgets_in_yaml_store_nothing(harness, ent, entry, needle):
    document = DOCUMENT.replace(
        '    - {customer: acme, amount: "100", currency: USD, period: P1M, mode: hard}',
        f"    - {entry}",
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await apply(harness, document)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert needle in refused.value.details()
    with pytest.raises(grpc.aio.AioRpcError):  # nothing was stored, not even the customer
        await ent.ListBudgets(entitlements_pb2.ListBudgetsRequest(parent="customers/acme"))


async def test_cli_creates_lists_and_deletes_budgets(harness, ent, capsys):
    await apply(harness)

    def run(*args: str) -> tuple[int, str, str]:
        code = cli([*args, "--cp", harness.address])
        out = capsys.readouterr()
        return code, out.out, out.err

    code, out, _ = await asyncio.to_thread(
        run, "budgets", "create", "acme", "--amount", "20", "--mode", "soft", "--json"
    )
    assert code == 0
    created = json.loads(out)
    assert (created["amount"], created["currency"], created["mode"]) == ("20", "USD", "soft")
    assert created["spent"] == "0.00" and created["remaining"] == "20.00"
    code, out, _ = await asyncio.to_thread(run, "budgets", "list", "acme")
    assert code == 0 and created["id"] in out and "soft" in out and "hard" in out
    code, _, err = await asyncio.to_thread(run, "budgets", "create", "acme", "--amount", "-3")
    assert code == 1 and "INVALID_ARGUMENT" in err and "negative" in err
    code, out, _ = await asyncio.to_thread(run, "budgets", "delete", "acme", created["id"])
    assert code == 0 and created["id"] in out
    code, _, err = await asyncio.to_thread(run, "budgets", "delete", "acme", created["id"])
    assert code == 1 and "NOT_FOUND" in err
    listed = await ent.ListBudgets(entitlements_pb2.ListBudgetsRequest(parent="customers/acme"))
    assert [b.mode for b in listed.budgets] == [entitlements_pb2.BUDGET_MODE_HARD]


MODEL_LIST = f"""\
_format_version: "3.0"
consumers:
  - username: acme-corp
    keyauth_credentials: [{{key: acme-secret-key}}]
billing:
  features:
    - {{key: openai-tokens, meter: llm_tokens, filters: {{provider: openai}}}}
  price_lists:
    - key: openai-list
      currency: USD
      prices:
        - {{model: gpt-4o, input: "0.0000025", output: "0.00001",
            effective_from: "2026-01-01T00:00:00Z"}}
        - {{model: gpt-4o-mini, input: "0.00000015", effective_from: "2026-01-01T00:00:00Z"}}
  plans:
    - key: resale
      name: Resale
      currency: USD
      billing_cadence: P1M
      rate_cards:
        - feature: openai-tokens
          price: {{type: model_list, price_list: openai-list, markup_percent: "20"}}
  customers:
    - {{key: acme, name: Acme Corp, subjects: [acme-corp]}}
  subscriptions:
    - {{customer: acme, plan: resale, start: "{T0.isoformat()}"}}
"""


async def test_model_list_prices_reach_the_snapshot_marked_up(harness):
    await apply(harness, MODEL_LIST)
    response = await snapshot(harness)
    (entry,) = response.snapshot.consumer_entitlements
    prices = {(p.filters["model"], p.filters["type"]): Decimal(p.unit_price) for p in entry.prices}
    assert prices == {
        ("gpt-4o", "input"): Decimal("0.000003"),
        ("gpt-4o", "output"): Decimal("0.000012"),
        ("gpt-4o-mini", "input"): Decimal("0.00000018"),
    }
    assert all(p.filters["provider"] == "openai" for p in entry.prices)
