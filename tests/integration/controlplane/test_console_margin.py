"""Margin over time (``/margin`` and its twin), in process on a frozen clock.

November's usage is invoiced when the period closes; December's is the open period. Every
figure below is computed by hand from the events, the plan (1 USD per billable input token of
openai) and the route's prices (150 and 600 USD per million input and output tokens).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from controlplane.api.auth import Scope, TokenEntry, hash_token
from controlplane.console.app import Console
from controlplane.usage.storage import insert_events
from controlplane.usage.types import TokenType, UsageEvent
from meterline.admin.v1 import billing_pb2, credits_pb2, gateway_pb2

ADMIN = "mlt_admin-token-for-margin-tests"
READ = "mlt_read-token-for-margin-tests"
TOKENS = [
    TokenEntry(name="ops", scope=Scope.ADMIN, hash=hash_token(ADMIN)),
    TokenEntry(name="viewer", scope=Scope.READ, hash=hash_token(READ)),
]
NOV = datetime(2026, 11, 1, tzinfo=UTC)
DEC = datetime(2026, 12, 1, tzinfo=UTC)


def _event(
    n: int, at: datetime, kind: str, tokens: int, *, model: str, status: int = 200
) -> UsageEvent:
    return UsageEvent(
        id=f"margin-{n}",
        source="test",
        type="llm.tokens",
        subject="acme-corp",
        time=at,
        provider="openai",
        model=model,
        token_type=TokenType(kind),
        tokens=tokens,
        status_code=status,
        route="chat",
    )


@pytest.fixture
async def client(harness, walkthrough) -> AsyncIterator[httpx.AsyncClient]:
    # The walkthrough with provider prices on its route.
    costed = walkthrough.replace(
        'options: {upstream_url: "http://127.0.0.1:9/v1/chat/completions"}',
        'options: {upstream_url: "http://127.0.0.1:9/v1/chat/completions",'
        " input_cost: 150, output_cost: 600}",
    )
    assert costed != walkthrough
    await harness.gateway.ApplyConfig(gateway_pb2.ApplyConfigRequest(document=costed))
    november = [
        _event(1, NOV + timedelta(days=1, hours=10), "input", 1000, model="gpt-4o-mini"),
        _event(2, NOV + timedelta(days=1, hours=10), "output", 500, model="gpt-4o-mini"),
        # A failed request: its tokens cost, but are not billed.
        _event(3, NOV + timedelta(days=2), "input", 2000, model="gpt-4o-mini", status=500),
    ]
    with harness.cp.db.begin() as conn:
        insert_events(conn, november, ingest_time=NOV + timedelta(days=3))
    # December: November's period (from the subscription's start, Nov 1 12:00) closes;
    # December's usage is the open period's.
    harness.clock.set(DEC + timedelta(days=1, hours=12))
    await harness.billing.CloseInvoices(billing_pb2.CloseInvoicesRequest())
    december = [
        _event(4, DEC + timedelta(days=1, hours=1), "input", 300, model="gpt-4o"),
        _event(5, DEC + timedelta(days=1, hours=1), "output", 100, model="gpt-4o"),
    ]
    with harness.cp.db.begin() as conn:
        insert_events(conn, december, ingest_time=DEC + timedelta(days=1, hours=2))
    app = Console(
        servicers=harness.cp.servicers, db=harness.cp.db, clock=harness.clock, tokens=TOKENS
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://console.test",
        headers={"Authorization": f"Bearer {READ}"},
    ) as http:
        yield http


def _figures(twin: dict) -> list[tuple[str, dict[str, str], str, str]]:
    return [(m["month"], m["billed"], m["provider_cost"], m["margin"]) for m in twin["months"]]


async def test_margin_per_month_for_everything_and_each_selection(client, harness):
    # A credit top-up's one-off invoice is a purchase of credits, not revenue of a month.
    top_up = await harness.cp.servicers.credits.CreateCreditTopUp(
        credits_pb2.CreateCreditTopUpRequest(parent="customers/acme", amount="40"), None
    )
    assert top_up.state == billing_pb2.INVOICE_STATE_ISSUED and top_up.total == "40.00"
    closed = await harness.billing.ListInvoices(billing_pb2.ListInvoicesRequest())
    november = [
        i
        for i in closed.invoices
        if i.period_start_time.ToDatetime(UTC) < DEC and i.id != top_up.id
    ]
    assert [i.total for i in november] == ["1000.00"]  # the billable input tokens
    # Everything: November's invoice and its tokens' cost (3000 input, 500 output); December's
    # open preview (300 input) and its cost (300 input, 100 output).
    everything = (await client.get("/margin.json?months=3")).json()
    assert _figures(everything) == [
        ("2026-10", {}, "0", "0"),
        ("2026-11", {"USD": "1000.00"}, "0.75", "999.25"),
        ("2026-12", {"USD": "300.00"}, "0.105", "299.895"),
    ]
    assert everything["chart"]["series"]["margin (USD)"] == [0.0, 999.25, 299.895]
    assert everything["chart"]["times"] == [
        int(datetime(2026, m, 1, tzinfo=UTC).timestamp()) for m in (10, 11, 12)
    ]
    # One customer: the same (acme is the only one), December from its own preview.
    acme = (await client.get("/margin.json?months=3&customer=acme")).json()
    assert _figures(acme) == _figures(everything)
    assert acme["selection"] == {"customer": "acme", "model": "", "feature": ""}
    # One feature: its lines, and the cost of the billable tokens its filters match (input).
    feature = (await client.get("/margin.json?months=2&feature=ai-token")).json()
    assert _figures(feature) == [
        ("2026-11", {"USD": "1000.00"}, "0.15", "999.85"),
        ("2026-12", {"USD": "300.00"}, "0.045", "299.955"),
    ]
    # One model: unit prices bill no model's lines, so only its cost shows.
    model = (await client.get("/margin.json?months=2&model=gpt-4o")).json()
    assert _figures(model) == [("2026-11", {}, "0", "0"), ("2026-12", {}, "0.105", "-0.105")]
    # The page: the chart's data and the table.
    page = await client.get("/margin?months=3")
    assert page.status_code == 200
    assert 'id="chart-margin-data"' in page.text
    assert '<tr data-month="2026-11"><td>2026-11</td><td class="n billed">1,000.00 USD' in page.text


@pytest.mark.parametrize(
    ("query", "status", "says"),
    [
        pytest.param("months=0", 400, "months must be 1 to 24", id="no-months"),
        pytest.param("months=soon", 400, "whole number", id="months-not-a-number"),
        pytest.param("customer=acme&model=gpt-4o", 400, "choose one", id="two-selections"),
        pytest.param("customer=nobody", 404, "nobody", id="unknown-customer"),
        pytest.param("feature=nothing", 404, "nothing", id="unknown-feature"),
    ],
)
async def test_margin_refuses_bad_queries(client, query, status, says):
    answer = await client.get(f"/margin.json?{query}")
    assert answer.status_code == status and says in answer.json()["error"]
