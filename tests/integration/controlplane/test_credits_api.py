"""Prepaid credits over a real in-process gRPC server, on SQLite and PostgreSQL.

Plan "prepaid": a flat 10.00 platform fee, input tokens at 0.01 (credit_then_invoice) and
output tokens at 0.02 (credit_only). acme's first period is 1 Nov 12:00 .. 1 Dec 12:00.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import grpc
import pytest

from controlplane.api.convert import to_timestamp
from controlplane.usage import storage as usage_storage
from controlplane.usage.types import TokenType, UsageEvent
from meterline.admin.v1 import (
    billing_pb2,
    catalog_pb2,
    credits_pb2,
    credits_pb2_grpc,
    customers_pb2,
)

from .conftest import T0, Harness

NOV_END = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
D = Decimal
_ids = itertools.count()
CREDIT = billing_pb2.INVOICE_LINE_TYPE_CREDIT
UNCOVERED = billing_pb2.INVOICE_LINE_TYPE_UNCOVERED


@pytest.fixture
async def credits(harness: Harness) -> AsyncIterator[credits_pb2_grpc.CreditServiceStub]:
    async with grpc.aio.insecure_channel(harness.address) as channel:
        yield credits_pb2_grpc.CreditServiceStub(channel)


def prepaid_plan() -> catalog_pb2.Plan:
    unit = catalog_pb2.PRICE_TYPE_UNIT
    return catalog_pb2.Plan(
        key="prepaid",
        currency="USD",
        billing_cadence="P1M",
        rate_cards=[
            catalog_pb2.RateCard(
                key="platform",
                price=catalog_pb2.Price(type=catalog_pb2.PRICE_TYPE_FLAT, amount="10"),
            ),
            catalog_pb2.RateCard(
                feature="tokens-in", price=catalog_pb2.Price(type=unit, amount="0.01")
            ),
            catalog_pb2.RateCard(
                feature="tokens-out",
                price=catalog_pb2.Price(type=unit, amount="0.02"),
                settlement_mode=catalog_pb2.SETTLEMENT_MODE_CREDIT_ONLY,
            ),
        ],
    )


async def setup(harness: Harness) -> None:
    for key, kind in (("tokens-in", "input"), ("tokens-out", "output"), ("images", "image")):
        await harness.catalog.CreateFeature(
            catalog_pb2.CreateFeatureRequest(
                feature=catalog_pb2.Feature(key=key, meter="llm_tokens", filters={"type": kind})
            )
        )
    plan = await harness.catalog.CreatePlan(catalog_pb2.CreatePlanRequest(plan=prepaid_plan()))
    await harness.catalog.PublishPlan(catalog_pb2.PublishPlanRequest(name=plan.name))
    await harness.customers.CreateCustomer(
        customers_pb2.CreateCustomerRequest(
            customer=customers_pb2.Customer(key="acme", subjects=["acme-corp"])
        )
    )
    await harness.customers.CreateSubscription(
        customers_pb2.CreateSubscriptionRequest(
            subscription=customers_pb2.Subscription(customer="customers/acme", plan="plans/prepaid")
        )
    )


def record(harness: Harness, *, tokens: int, kind: TokenType, at: datetime) -> None:
    event = UsageEvent(
        id=f"e-{next(_ids)}",
        source="test",
        type="llm.tokens",
        subject="acme-corp",
        time=at,
        provider="openai",
        model="gpt-4o",
        token_type=kind,
        tokens=tokens,
        status_code=200,
    )
    with harness.cp.db.begin() as conn:
        usage_storage.insert_events(conn, [event], ingest_time=at)


async def grant(
    credits: credits_pb2_grpc.CreditServiceStub,
    amount: str,
    *,
    key: str = "",
    priority: int = 5,
    effective: datetime | None = None,
    expires: datetime | None = None,
    features: tuple[str, ...] = (),
    currency: str = "",
    funding: int = credits_pb2.CREDIT_FUNDING_PROMOTIONAL,
) -> credits_pb2.CreditGrant:
    message = credits_pb2.CreditGrant(
        amount=amount,
        key=key,
        priority=priority,
        features=list(features),
        currency=currency,
        funding=funding,
    )
    if effective is not None:
        message.effective_time.CopyFrom(to_timestamp(effective))
    if expires is not None:
        message.expire_time.CopyFrom(to_timestamp(expires))
    return await credits.CreateCreditGrant(
        credits_pb2.CreateCreditGrantRequest(parent="customers/acme", credit_grant=message)
    )


async def ledger(
    credits: credits_pb2_grpc.CreditServiceStub,
) -> list[credits_pb2.CreditTransaction]:
    response = await credits.ListCreditTransactions(
        credits_pb2.ListCreditTransactionsRequest(parent="customers/acme")
    )
    return list(response.credit_transactions)


async def balance(credits: credits_pb2_grpc.CreditServiceStub) -> credits_pb2.CreditBalance:
    return await credits.GetCreditBalance(
        credits_pb2.GetCreditBalanceRequest(customer="customers/acme")
    )


def kind(entry: credits_pb2.CreditTransaction) -> str:
    return credits_pb2.CreditTransactionType.Name(entry.type).removeprefix(
        "CREDIT_TRANSACTION_TYPE_"
    )


async def test_grant_is_idempotent_by_key_and_ledgered_as_funded(
    harness: Harness, credits: credits_pb2_grpc.CreditServiceStub
) -> None:
    await setup(harness)
    first = await grant(credits, "20", key="welcome-credit")
    # The same key again (even with another amount) returns the first grant, never a second.
    again = await grant(credits, "50", key="welcome-credit")
    assert again.id == first.id and again.amount == "20"
    # As AIP-155 request_id too.
    by_request = await credits.CreateCreditGrant(
        credits_pb2.CreateCreditGrantRequest(
            parent="customers/acme",
            request_id="welcome-credit",
            credit_grant=credits_pb2.CreditGrant(amount="99"),
        )
    )
    assert by_request.id == first.id
    assert first.currency == "USD"  # the plan's
    assert first.funding == credits_pb2.CREDIT_FUNDING_PROMOTIONAL
    assert first.remaining == "20"
    listed = await credits.ListCreditGrants(
        credits_pb2.ListCreditGrantsRequest(parent="customers/acme")
    )
    assert [g.id for g in listed.credit_grants] == [first.id]
    entries = await ledger(credits)
    assert [(kind(e), e.amount, e.grant) for e in entries] == [("FUNDED", "20", first.name)]
    found = await balance(credits)
    # live: the open period's 10.00 platform fee (in advance) will be paid from the credits.
    assert (found.settled, found.live, found.currency) == ("20", "10.00", "USD")


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        pytest.param({"amount": "-5"}, "above zero", id="negative amount"),
        pytest.param({"amount": "0"}, "above zero", id="zero amount"),
        pytest.param({"amount": "abc"}, "decimal string", id="not a number"),
        pytest.param({"amount": "1.005"}, "more decimals than USD", id="sub-cent amount"),
        pytest.param({"amount": "5", "currency": "EUR"}, "not the currency", id="wrong currency"),
        pytest.param(
            {"amount": "5", "expires": T0 - timedelta(days=1)},
            "must be after its effective time",
            id="expiry before effective time",
        ),
        pytest.param(
            {"amount": "5", "expires": T0}, "must be after its effective time", id="expiry equal"
        ),
        pytest.param(
            {"amount": "5", "features": ("no-such-feature",)},
            "unknown feature 'no-such-feature'",
            id="unknown feature",
        ),
        pytest.param({"amount": "5", "priority": -1}, "priority", id="negative priority"),
        pytest.param({"amount": "5", "key": "bad key!"}, "key", id="malformed key"),
    ],
)
async def test_bad_grants_are_refused_and_change_nothing(
    harness: Harness,
    credits: credits_pb2_grpc.CreditServiceStub,
    fields: dict[str, object],
    needle: str,
) -> None:
    await setup(harness)
    fields = dict(fields)  # the parameter is shared by both databases' runs
    amount = str(fields.pop("amount"))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await grant(credits, amount, effective=T0, **fields)  # type: ignore[arg-type]
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert needle in (info.value.details() or "")
    listed = await credits.ListCreditGrants(
        credits_pb2.ListCreditGrantsRequest(parent="customers/acme")
    )
    assert list(listed.credit_grants) == []
    assert await ledger(credits) == []
    assert (await balance(credits)).settled == "0"


async def test_unknown_customer_and_grant_are_not_found(
    harness: Harness, credits: credits_pb2_grpc.CreditServiceStub
) -> None:
    await setup(harness)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await credits.CreateCreditGrant(
            credits_pb2.CreateCreditGrantRequest(
                parent="customers/nobody", credit_grant=credits_pb2.CreditGrant(amount="5")
            )
        )
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await credits.VoidCreditGrant(
            credits_pb2.VoidCreditGrantRequest(name="customers/acme/creditGrants/missing")
        )
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_void_takes_the_remainder_out_of_the_balance_once(
    harness: Harness, credits: credits_pb2_grpc.CreditServiceStub
) -> None:
    await setup(harness)
    kept = await grant(credits, "7.50", key="kept")
    voided = await grant(credits, "12.25", key="voided")
    assert (await balance(credits)).settled == "19.75"
    result = await credits.VoidCreditGrant(credits_pb2.VoidCreditGrantRequest(name=voided.name))
    assert D(result.remaining) == 0 and result.HasField("void_time")
    assert (await balance(credits)).settled == "7.50"
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await credits.VoidCreditGrant(credits_pb2.VoidCreditGrantRequest(name=voided.name))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    entries = await ledger(credits)
    assert [(kind(e), e.amount, e.grant) for e in entries] == [
        ("FUNDED", "7.50", kept.name),
        ("FUNDED", "12.25", voided.name),
        ("VOIDED", "-12.25", voided.name),
    ]
    # Every balance is a sum of the ledger.
    assert sum(D(e.amount) for e in entries) == D("7.50")


async def test_invoice_spends_credits_by_priority_expiry_and_scope(
    harness: Harness, credits: credits_pb2_grpc.CreditServiceStub
) -> None:
    # Given 1000 input tokens (10.00) and 500 output tokens (10.00, credit_only) in November
    await setup(harness)
    record(harness, tokens=1000, kind=TokenType.INPUT, at=T0 + timedelta(days=3))
    record(harness, tokens=500, kind=TokenType.OUTPUT, at=T0 + timedelta(days=4))
    # and grants: 5.00 for output tokens only, first by priority;
    out_only = await grant(credits, "5", key="out-only", priority=1, features=("tokens-out",))
    # 8.00 expiring exactly when November's period ends (it pays November);
    expiring = await grant(credits, "8", key="expiring", expires=NOV_END)
    # 30.00 effective exactly when it ends (it pays December, not November);
    december = await grant(credits, "30", key="december", effective=NOV_END)
    # 4.00 that never expires (spent after the expiring one at the same priority);
    forever = await grant(credits, "4", key="forever")
    # 2.00 for images only, expiring with November: nothing to pay, it expires.
    images = await grant(credits, "2", key="images", features=("images",), expires=NOV_END)

    # Then the open invoice already shows the credits, and the live balance takes them off
    harness.clock.set(T0 + timedelta(days=10))
    found = await balance(credits)
    assert (D(found.settled), D(found.live)) == (19, 2)  # 17 of 19 go to November
    # Spending order: priority, then expiry (expiring and images tie: the id decides).
    keys = [g.key for g in found.grants]
    assert keys[0] == "out-only" and keys[3] == "forever"
    assert set(keys[1:3]) == {"expiring", "images"}

    # When November is drafted and issued
    harness.clock.set(NOV_END + timedelta(hours=2))
    closed = await harness.billing.CloseInvoices(billing_pb2.CloseInvoicesRequest())
    (nov_name,) = closed.drafted_invoices
    issued = await harness.billing.IssueInvoice(billing_pb2.IssueInvoiceRequest(name=nov_name))

    # Then one negative credit line per grant used, in spending order, and the rest invoiced:
    # out-only pays 5 of the output tokens; expiring pays their other 5 (credit_only first)
    # and 3 of the platform fee; forever pays 4 more of the fee.
    lines = [(line.rate_card, line.type, line.amount, line.credit_grant) for line in issued.lines]
    assert lines == [
        ("platform", billing_pb2.INVOICE_LINE_TYPE_FLAT, "10.00", ""),
        ("tokens-in", billing_pb2.INVOICE_LINE_TYPE_USAGE, "10.00", ""),
        ("tokens-out", billing_pb2.INVOICE_LINE_TYPE_USAGE, "10.00", ""),
        ("", CREDIT, "-5.00", out_only.id),
        ("", CREDIT, "-8.00", expiring.id),
        ("", CREDIT, "-4.00", forever.id),
    ]
    assert issued.total == "13.00"  # 3.00 of the fee + 10.00 of input tokens

    # And the ledger's consumed entries are exactly the credit lines
    entries = await ledger(credits)
    consumed = {e.grant: D(e.amount) for e in entries if kind(e) == "CONSUMED"}
    assert consumed == {
        f"customers/acme/creditGrants/{line.credit_grant}": D(line.amount)
        for line in issued.lines
        if line.type == CREDIT
    }
    assert {e.invoice for e in entries if kind(e) == "CONSUMED"} == {nov_name}
    # The images grant expired (once no open invoice could spend it), at its expiry time
    expired = [e for e in entries if kind(e) == "EXPIRED"]
    assert [(e.grant, D(e.amount)) for e in expired] == [(images.name, D("-2"))]
    assert expired[0].time.ToDatetime(tzinfo=UTC) == NOV_END
    # Every grant's remainder is the sum of its ledger entries
    listed = await credits.ListCreditGrants(
        credits_pb2.ListCreditGrantsRequest(parent="customers/acme")
    )
    remaining = {g.key: D(g.remaining) for g in listed.credit_grants}
    assert remaining == {
        "out-only": 0,
        "expiring": 0,
        "december": 30,
        "forever": 0,
        "images": 0,
    }
    for g in listed.credit_grants:
        assert sum(D(e.amount) for e in entries if e.grant == g.name) == D(g.remaining)
    # The settled balance is December's grant; active grants are listed in spending order.
    after = await balance(credits)
    assert D(after.settled) == 30
    assert [g.grant for g in after.grants] == [out_only.name, forever.name, december.name]
    stored = await harness.billing.GetInvoice(billing_pb2.GetInvoiceRequest(name=nov_name))
    assert [line.amount for line in stored.lines if line.type == CREDIT] == [
        "-5.00",
        "-8.00",
        "-4.00",
    ]


async def test_credit_only_usage_beyond_credits_is_uncovered_not_invoiced(
    harness: Harness, credits: credits_pb2_grpc.CreditServiceStub
) -> None:
    await setup(harness)
    record(harness, tokens=500, kind=TokenType.OUTPUT, at=T0 + timedelta(days=4))
    small = await grant(credits, "2.50", key="small", features=("tokens-out",))
    harness.clock.set(NOV_END + timedelta(hours=2))
    closed = await harness.billing.CloseInvoices(billing_pb2.CloseInvoicesRequest())
    issued = await harness.billing.IssueInvoice(
        billing_pb2.IssueInvoiceRequest(name=closed.drafted_invoices[0])
    )
    lines = [(line.rate_card, line.type, line.amount) for line in issued.lines]
    assert lines == [
        ("platform", billing_pb2.INVOICE_LINE_TYPE_FLAT, "10.00"),
        ("tokens-in", billing_pb2.INVOICE_LINE_TYPE_USAGE, "0.00"),
        ("tokens-out", billing_pb2.INVOICE_LINE_TYPE_USAGE, "10.00"),
        ("", CREDIT, "-2.50"),
        ("tokens-out", UNCOVERED, "-7.50"),
    ]
    # credit_then_invoice is invoiced in full; credit_only never beyond its credits.
    assert issued.total == "10.00"
    assert [line.credit_grant for line in issued.lines if line.type == CREDIT] == [small.id]
    entries = await ledger(credits)
    assert [(kind(e), e.amount) for e in entries] == [("FUNDED", "2.50"), ("CONSUMED", "-2.50")]


async def test_declarative_credits_are_granted_once_by_key(
    harness: Harness, credits: credits_pb2_grpc.CreditServiceStub, walkthrough: str
) -> None:
    from meterline.admin.v1 import gateway_pb2

    document = walkthrough.replace(
        "  subscriptions:\n",
        "  credits:\n"
        '    - {customer: acme, amount: "20", funding: promotional, key: welcome-credit,'
        " expires: P90D}\n"
        "  subscriptions:\n",
    ).replace("entitlement: {type: boolean}}", "entitlement: {type: boolean},"
              " settlement_mode: credit_only}")  # fmt: skip
    first = await harness.gateway.ApplyConfig(gateway_pb2.ApplyConfigRequest(document=document))
    assert any("granted 20 USD of promotional credits to acme" in c for c in first.changes)
    harness.clock.set(T0 + timedelta(days=1))
    again = await harness.gateway.ApplyConfig(gateway_pb2.ApplyConfigRequest(document=document))
    assert not any("credit" in c for c in again.changes)
    listed = await credits.ListCreditGrants(
        credits_pb2.ListCreditGrantsRequest(parent="customers/acme")
    )
    (only,) = listed.credit_grants
    assert (only.key, only.amount, only.currency) == ("welcome-credit", "20", "USD")
    assert only.expire_time.ToDatetime(tzinfo=UTC) == T0 + timedelta(days=90)
    assert [kind(e) for e in await ledger(credits)] == ["FUNDED"]
    plan = await harness.catalog.GetPlan(catalog_pb2.GetPlanRequest(name="plans/starter"))
    assert plan.rate_cards[0].settlement_mode == catalog_pb2.SETTLEMENT_MODE_CREDIT_ONLY


async def test_cli_grants_shows_voids_and_lists_the_ledger(
    harness: Harness, credits: credits_pb2_grpc.CreditServiceStub, capsys: pytest.CaptureFixture
) -> None:
    import asyncio
    import json

    from controlplane.cli.main import main as cli

    await setup(harness)

    def run(*args: str) -> tuple[int, str, str]:
        code = cli([*args, "--cp", harness.address])
        out = capsys.readouterr()
        return code, out.out, out.err

    grant_args = ("credits", "grant", "acme", "--amount", "20", "--key", "welcome-credit")
    code, out, _ = await asyncio.to_thread(
        run, *grant_args, "--expires", "P90D", "--feature", "tokens-in", "-o", "json"
    )
    assert code == 0
    created = json.loads(out)
    assert (created["amount"], created["currency"], created["features"]) == (
        "20",
        "USD",
        ["tokens-in"],
    )
    assert created["expire_time"] == "2027-01-30T12:00:00Z"  # T0 + 90 days
    # The same key again: the same grant.
    code, out, _ = await asyncio.to_thread(run, *grant_args, "-o", "json")
    assert code == 0 and json.loads(out)["id"] == created["id"]
    code, out, _ = await asyncio.to_thread(run, "credits", "show", "acme")
    assert code == 0
    assert "settled   20 USD" in out and "welcome-credit" in out
    # Bad input: one line on stderr, non-zero, nothing granted.
    code, out, err = await asyncio.to_thread(run, "credits", "grant", "acme", "--amount", "-3")
    assert code == 1 and out == ""
    assert err.startswith("error: INVALID_ARGUMENT: credit grant amount must be above zero")
    code, out, _ = await asyncio.to_thread(
        run, "credits", "void", "acme", created["id"], "-o", "json"
    )
    voided = json.loads(out)
    assert code == 0 and D(voided["remaining"]) == 0 and voided["void_time"]
    code, out, _ = await asyncio.to_thread(run, "credits", "ledger", "acme", "-o", "json")
    assert code == 0
    assert [(e["type"], e["amount"]) for e in json.loads(out)] == [
        ("funded", "20"),
        ("voided", "-20"),
    ]
    code, out, _ = await asyncio.to_thread(run, "credits", "show", "acme", "-o", "yaml")
    assert code == 0 and "settled: '0'" in out


async def test_a_budget_counts_what_credits_pay(
    harness: Harness, credits: credits_pb2_grpc.CreditServiceStub
) -> None:
    from meterline.admin.v1 import entitlements_pb2, entitlements_pb2_grpc

    # Given a 100.00 budget, 15.00 of usage plus the 10.00 fee, and 12.00 of credits
    await setup(harness)
    record(harness, tokens=1000, kind=TokenType.INPUT, at=T0 + timedelta(days=2))
    record(harness, tokens=250, kind=TokenType.OUTPUT, at=T0 + timedelta(days=2))
    await grant(credits, "12", key="some-credit")
    harness.clock.set(T0 + timedelta(days=5))
    async with grpc.aio.insecure_channel(harness.address) as channel:
        ent = entitlements_pb2_grpc.EntitlementServiceStub(channel)
        await ent.CreateBudget(
            entitlements_pb2.CreateBudgetRequest(
                parent="customers/acme", budget=entitlements_pb2.Budget(amount="100")
            )
        )
        listed = await ent.ListBudgets(entitlements_pb2.ListBudgetsRequest(parent="customers/acme"))
    # Then the invoice total is net of credits, but the budget counts the whole consumption
    preview = await harness.billing.PreviewInvoice(
        billing_pb2.PreviewInvoiceRequest(customer="customers/acme")
    )
    assert preview.total == "13.00"  # 25.00 - 12.00
    (budget,) = listed.budgets
    assert D(budget.spent) == D("25.00")


async def test_the_same_key_sent_concurrently_grants_once(
    harness: Harness, credits: credits_pb2_grpc.CreditServiceStub
) -> None:
    import asyncio

    await setup(harness)
    results = await asyncio.gather(*(grant(credits, "10", key="race") for _ in range(6)))
    assert len({r.id for r in results}) == 1
    entries = await ledger(credits)
    assert [(kind(e), e.amount) for e in entries] == [("FUNDED", "10")]
    assert (await balance(credits)).settled == "10"


async def test_void_after_spending_voids_only_the_remainder(
    harness: Harness, credits: credits_pb2_grpc.CreditServiceStub
) -> None:
    # Given 30.00 of credits, of which November's invoice (10.00 fee + 10.00 tokens) takes 20.00
    await setup(harness)
    record(harness, tokens=1000, kind=TokenType.INPUT, at=T0 + timedelta(days=3))
    big = await grant(credits, "30", key="big")
    harness.clock.set(NOV_END + timedelta(hours=2))
    closed = await harness.billing.CloseInvoices(billing_pb2.CloseInvoicesRequest())
    issued = await harness.billing.IssueInvoice(
        billing_pb2.IssueInvoiceRequest(name=closed.drafted_invoices[0])
    )
    assert issued.total == "0.00"
    # When the grant is voided
    voided = await credits.VoidCreditGrant(credits_pb2.VoidCreditGrantRequest(name=big.name))
    # Then only the unspent 10.00 leaves; the invoice keeps its credit line
    entries = await ledger(credits)
    assert [(kind(e), D(e.amount)) for e in entries] == [
        ("FUNDED", D("30")),
        ("CONSUMED", D("-20")),
        ("VOIDED", D("-10")),
    ]
    assert D(voided.remaining) == 0
    # The settled balance in the past (before the invoice) is still readable: 30.00 then
    past = await credits.GetCreditBalance(
        credits_pb2.GetCreditBalanceRequest(
            customer="customers/acme", time=to_timestamp(T0 + timedelta(days=1))
        )
    )
    assert past.grants[0].key == "big"
    assert (D(past.settled), D(past.grants[0].remaining)) == (30, 30)
    stored = await harness.billing.GetInvoice(billing_pb2.GetInvoiceRequest(name=issued.name))
    assert [line.amount for line in stored.lines if line.type == CREDIT] == ["-20.00"]
    # December's open invoice has no credits left to use
    after = await balance(credits)
    assert (D(after.settled), D(after.live)) == (0, 0)


async def test_top_up_without_stripe_grants_when_marked_paid(
    harness: Harness, credits: credits_pb2_grpc.CreditServiceStub, capsys: pytest.CaptureFixture
) -> None:
    import asyncio
    import json

    from controlplane.cli.main import main as cli

    await setup(harness)

    def run(*args: str) -> tuple[int, str, str]:
        code = cli([*args, "--cp", harness.address])
        out = capsys.readouterr()
        return code, out.out, out.err

    code, out, err = await asyncio.to_thread(run, "credits", "top-up", "acme", "--amount", "-5")
    assert code == 1 and "above zero" in err
    code, out, _ = await asyncio.to_thread(
        run, "credits", "top-up", "acme", "--amount", "25.5", "-o", "json"
    )
    assert code == 0
    issued = json.loads(out)
    assert (issued["total"], issued["currency"]) == ("25.50", "USD")
    assert (await balance(credits)).settled == "0"  # not paid yet: nothing granted
    # Marked paid in Meterline (no Stripe): the credits arrive; again: nothing more
    name = f"invoices/{issued['invoice']}"
    await harness.billing.MarkInvoicePaid(billing_pb2.MarkInvoicePaidRequest(name=name))
    with pytest.raises(grpc.aio.AioRpcError):
        await harness.billing.MarkInvoicePaid(billing_pb2.MarkInvoicePaidRequest(name=name))
    assert [(kind(e), e.amount) for e in await ledger(credits)] == [("FUNDED", "25.50")]
    (bought,) = (
        await credits.ListCreditGrants(credits_pb2.ListCreditGrantsRequest(parent="customers/acme"))
    ).credit_grants
    assert bought.funding == credits_pb2.CREDIT_FUNDING_INVOICE
    # The top-up invoice stays out of period invoicing: November is still one gathering invoice
    preview = await harness.billing.PreviewInvoice(
        billing_pb2.PreviewInvoiceRequest(customer="customers/acme")
    )
    assert preview.total == "0.00"  # the 10.00 fee, paid by the bought credits
