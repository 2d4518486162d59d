"""Stored invoices on SQLite and PostgreSQL: gathering -> draft -> issued -> paid / void.

Every amount is checked to the cent. Plan "pro": a flat 10.00 fee in advance and input tokens
priced graduated (up to 1000 at 0.01, above at 0.005), so late usage can cross a tier edge.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from controlplane.api.convert import to_timestamp
from controlplane.cli.main import main
from controlplane.usage import storage as usage_storage
from controlplane.usage.types import TokenType, UsageEvent
from meterline.admin.v1 import billing_pb2, catalog_pb2, customers_pb2

from .conftest import T0, Harness

NOV_END = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
DEC_END = datetime(2027, 1, 1, 12, 0, tzinfo=UTC)
_ids = itertools.count()


def pro_plan() -> catalog_pb2.Plan:
    tier = catalog_pb2.PriceTier
    return catalog_pb2.Plan(
        key="pro",
        currency="USD",
        billing_cadence="P1M",
        rate_cards=[
            catalog_pb2.RateCard(
                key="platform",
                price=catalog_pb2.Price(type=catalog_pb2.PRICE_TYPE_FLAT, amount="10"),
            ),
            catalog_pb2.RateCard(
                feature="tokens-in",
                price=catalog_pb2.Price(
                    type=catalog_pb2.PRICE_TYPE_TIERED,
                    tier_mode=catalog_pb2.TIER_MODE_GRADUATED,
                    tiers=[tier(up_to="1000", unit_price="0.01"), tier(unit_price="0.005")],
                ),
            ),
        ],
    )


async def setup_pro(harness: Harness, *, start: datetime | None = None) -> str:
    """The pro plan and customer acme (subject acme-corp); returns the subscription id."""
    await harness.catalog.CreateFeature(
        catalog_pb2.CreateFeatureRequest(
            feature=catalog_pb2.Feature(
                key="tokens-in", meter="llm_tokens", filters={"type": "input"}
            )
        )
    )
    plan = await harness.catalog.CreatePlan(catalog_pb2.CreatePlanRequest(plan=pro_plan()))
    await harness.catalog.PublishPlan(catalog_pb2.PublishPlanRequest(name=plan.name))
    await harness.customers.CreateCustomer(
        customers_pb2.CreateCustomerRequest(
            customer=customers_pb2.Customer(key="acme", subjects=["acme-corp"])
        )
    )
    sub = customers_pb2.Subscription(customer="customers/acme", plan="plans/pro")
    if start is not None:
        sub.start_time.CopyFrom(to_timestamp(start))
    created = await harness.customers.CreateSubscription(
        customers_pb2.CreateSubscriptionRequest(subscription=sub)
    )
    return created.id


def record(harness: Harness, *, tokens: int, at: datetime, ingested: datetime) -> None:
    event = UsageEvent(
        id=f"e-{next(_ids)}",
        source="test",
        type="llm.tokens",
        subject="acme-corp",
        time=at,
        provider="openai",
        model="gpt-4o",
        token_type=TokenType.INPUT,
        tokens=tokens,
        status_code=200,
    )
    with harness.cp.db.begin() as conn:
        usage_storage.insert_events(conn, [event], ingest_time=ingested)


async def close(harness: Harness, at: datetime) -> billing_pb2.CloseInvoicesResponse:
    harness.clock.set(at)
    return await harness.billing.CloseInvoices(billing_pb2.CloseInvoicesRequest())


async def invoices(harness: Harness) -> list[billing_pb2.Invoice]:
    response = await harness.billing.ListInvoices(
        billing_pb2.ListInvoicesRequest(parent="customers/acme")
    )
    return list(response.invoices)


def state(invoice: billing_pb2.Invoice) -> str:
    return billing_pb2.InvoiceState.Name(invoice.state).removeprefix("INVOICE_STATE_")


def summary(invoice: billing_pb2.Invoice) -> list[tuple[str, str, str, bool]]:
    return [(line.rate_card, line.quantity, line.amount, line.late_usage) for line in invoice.lines]


async def expect_error(call, code: grpc.StatusCode, needle: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == code
    assert needle in (info.value.details() or "")


async def test_a_month_with_late_usage_after_issue(harness: Harness) -> None:
    # Given acme on pro from 1 Nov 12:00 with 900 tokens in November
    await setup_pro(harness)
    record(harness, tokens=900, at=T0 + timedelta(days=9), ingested=T0 + timedelta(days=9))

    # When the job runs mid-month, the open period is a gathering invoice, computed live
    closed = await close(harness, T0 + timedelta(days=19))
    assert len(closed.created_invoices) == 1 and not closed.drafted_invoices
    (nov,) = await invoices(harness)
    assert state(nov) == "GATHERING"
    assert nov.name == f"invoices/{nov.id}" and nov.number == ""
    assert summary(nov) == [("platform", "1", "10.00", False), ("tokens-in", "900", "9.00", False)]
    assert nov.total == "19.00"

    # Issuing it before the period ends is refused and changes nothing
    await expect_error(
        harness.billing.IssueInvoice(billing_pb2.IssueInvoiceRequest(name=nov.name)),
        grpc.StatusCode.FAILED_PRECONDITION,
        "is gathering",
    )
    assert state((await invoices(harness))[0]) == "GATHERING"

    # Within the grace interval after the period, it stays gathering; the next one opens
    closed = await close(harness, NOV_END + timedelta(minutes=30))
    assert len(closed.created_invoices) == 1 and not closed.drafted_invoices
    # After it, it becomes a draft; usage that arrives now still lands on it
    closed = await close(harness, NOV_END + timedelta(hours=1))
    assert closed.drafted_invoices == [nov.name]
    record(
        harness, tokens=50, at=NOV_END - timedelta(hours=1), ingested=NOV_END + timedelta(hours=1)
    )

    # Issued: numbered, frozen
    issued = await harness.billing.IssueInvoice(billing_pb2.IssueInvoiceRequest(name=nov.name))
    assert state(issued) == "ISSUED"
    assert issued.number == "ML-USD-2026-000001"
    assert summary(issued) == [
        ("platform", "1", "10.00", False),
        ("tokens-in", "950", "9.50", False),
    ]
    assert issued.total == "19.50"
    assert all(line.id for line in issued.lines)

    # Issuing it again is refused and changes nothing
    await expect_error(
        harness.billing.IssueInvoice(billing_pb2.IssueInvoiceRequest(name=nov.name, force=True)),
        grpc.StatusCode.FAILED_PRECONDITION,
        "already issued",
    )

    # Late November usage (300 tokens) and December usage (100 tokens) arrive
    harness.clock.set(NOV_END + timedelta(days=1))
    record(
        harness, tokens=300, at=NOV_END - timedelta(days=2), ingested=NOV_END + timedelta(days=1)
    )
    record(
        harness, tokens=100, at=NOV_END + timedelta(days=4), ingested=NOV_END + timedelta(days=4)
    )

    # The issued invoice never changes
    again = await harness.billing.GetInvoice(billing_pb2.GetInvoiceRequest(name=nov.name))
    assert again == issued

    # The late usage is its own line on December's invoice, priced as what it adds to November:
    # graduated(1250) - graduated(950) = 11.25 - 9.50 = 1.75
    dec = (await invoices(harness))[1]
    assert state(dec) == "GATHERING"
    assert summary(dec) == [
        ("platform", "1", "10.00", False),
        ("tokens-in", "100", "1.00", False),
        ("tokens-in", "300", "1.75", True),
    ]
    late = dec.lines[2]
    assert "late usage for 2026-11-01T12:00Z..2026-12-01T12:00Z" in late.description
    assert late.period_start_time.ToDatetime(tzinfo=UTC) == T0
    assert dec.total == "12.75"

    # December is issued with it; afterwards nothing is billed twice
    await close(harness, DEC_END + timedelta(hours=2))
    dec_issued = await harness.billing.IssueInvoice(billing_pb2.IssueInvoiceRequest(name=dec.name))
    # Numbered per currency and year of issue
    assert dec_issued.number == "ML-USD-2027-000001"
    assert summary(dec_issued) == summary(dec)
    assert dec_issued.total == "12.75"
    jan = (await invoices(harness))[2]
    assert state(jan) == "GATHERING"
    assert summary(jan) == [("platform", "1", "10.00", False), ("tokens-in", "0", "0.00", False)]

    # Paid and void
    paid = await harness.billing.MarkInvoicePaid(billing_pb2.MarkInvoicePaidRequest(name=dec.name))
    assert state(paid) == "PAID"
    await expect_error(
        harness.billing.VoidInvoice(billing_pb2.VoidInvoiceRequest(name=dec.name)),
        grpc.StatusCode.FAILED_PRECONDITION,
        "paid invoice cannot be voided",
    )
    assert (
        state(await harness.billing.GetInvoice(billing_pb2.GetInvoiceRequest(name=dec.name)))
        == "PAID"
    )
    voided = await harness.billing.VoidInvoice(billing_pb2.VoidInvoiceRequest(name=nov.name))
    assert state(voided) == "VOID"
    assert summary(voided) == summary(issued) and voided.total == "19.50"


async def test_late_usage_of_a_force_issued_period(harness: Harness) -> None:
    # Given an invoice issued early with force, 500 tokens billed
    await setup_pro(harness)
    record(harness, tokens=500, at=T0 + timedelta(days=1), ingested=T0 + timedelta(days=1))
    await close(harness, T0 + timedelta(days=2))
    (nov,) = await invoices(harness)
    issued = await harness.billing.IssueInvoice(
        billing_pb2.IssueInvoiceRequest(name=nov.name, force=True)
    )
    assert issued.total == "15.00"

    # When more November usage comes after the issue (600 tokens: crosses the 1000 edge)
    record(harness, tokens=600, at=T0 + timedelta(days=3), ingested=T0 + timedelta(days=3))
    await close(harness, NOV_END + timedelta(days=1))

    # Then it is billed once, on December's invoice: graduated(1100) - graduated(500) = 5.50
    dec = (await invoices(harness))[1]
    assert summary(dec) == [
        ("platform", "1", "10.00", False),
        ("tokens-in", "0", "0.00", False),
        ("tokens-in", "600", "5.50", True),
    ]


async def test_a_subscription_cancelled_mid_month(harness: Harness) -> None:
    # Given a subscription cancelled on 15 Nov 12:00
    sub = await setup_pro(harness)
    record(harness, tokens=500, at=T0 + timedelta(days=9), ingested=T0 + timedelta(days=9))
    record(harness, tokens=200, at=T0 + timedelta(days=19), ingested=T0 + timedelta(days=19))
    await harness.customers.CancelSubscription(
        customers_pb2.CancelSubscriptionRequest(
            name=f"subscriptions/{sub}", end_time=to_timestamp(T0 + timedelta(days=14))
        )
    )

    # Then its invoice becomes a draft an hour after the cancellation, not at the month's end
    closed = await close(harness, T0 + timedelta(days=14, minutes=59))
    assert len(closed.created_invoices) == 1 and not closed.drafted_invoices
    closed = await close(harness, T0 + timedelta(days=14, hours=1))
    assert len(closed.drafted_invoices) == 1

    # And only usage before the cancellation is billed, the flat fee for 14 of 30 days
    # (10 x 14/30 = 4.666.. -> 4.67); no later invoice appears
    issued = await harness.billing.IssueInvoice(
        billing_pb2.IssueInvoiceRequest(name=closed.drafted_invoices[0])
    )
    assert summary(issued) == [
        ("platform", "1", "4.67", False),
        ("tokens-in", "500", "5.00", False),
    ]
    assert issued.total == "9.67"
    assert "prorated for 2026-11-01T12:00Z..2026-11-15T12:00Z" in issued.lines[0].description
    assert issued.lines[1].period_end_time.ToDatetime(tzinfo=UTC) == T0 + timedelta(days=14)
    closed = await close(harness, DEC_END + timedelta(days=40))
    assert not closed.created_invoices
    assert len(await invoices(harness)) == 1

    # When usage from before the cancellation arrives after the final invoice was issued
    record(
        harness,
        tokens=300,
        at=T0 + timedelta(days=12),
        ingested=DEC_END + timedelta(days=41),
    )
    closed = await close(harness, DEC_END + timedelta(days=41))

    # Then a draft carries it as late usage: graduated(800) - graduated(500) = 3.00, once
    assert len(closed.created_invoices) == 1 and closed.drafted_invoices == closed.created_invoices
    late = await harness.billing.IssueInvoice(
        billing_pb2.IssueInvoiceRequest(name=closed.created_invoices[0])
    )
    assert summary(late) == [("tokens-in", "300", "3.00", True)]
    assert late.total == "3.00"
    closed = await close(harness, DEC_END + timedelta(days=42))
    assert not closed.created_invoices


async def test_a_future_dated_subscription(harness: Harness) -> None:
    # Given a subscription created on 1 Nov that starts on 10 Nov 00:00
    start = datetime(2026, 11, 10, tzinfo=UTC)
    await setup_pro(harness, start=start)
    record(harness, tokens=700, at=start - timedelta(hours=1), ingested=start - timedelta(hours=1))
    record(harness, tokens=1200, at=start + timedelta(days=1), ingested=start + timedelta(days=1))

    # Before it starts no invoice exists
    closed = await close(harness, start - timedelta(minutes=1))
    assert not closed.created_invoices

    # Its first period starts at its start; usage before it is never billed
    await close(harness, start + timedelta(days=2))
    (first,) = await invoices(harness)
    assert first.period_start_time.ToDatetime(tzinfo=UTC) == start
    assert first.period_end_time.ToDatetime(tzinfo=UTC) == datetime(2026, 12, 10, tzinfo=UTC)
    # 1000 x 0.01 + 200 x 0.005
    assert summary(first) == [
        ("platform", "1", "10.00", False),
        ("tokens-in", "1200", "11.00", False),
    ]
    assert first.total == "21.00"


async def test_bad_input_changes_nothing(harness: Harness) -> None:
    await setup_pro(harness)
    await close(harness, T0 + timedelta(days=1))
    (nov,) = await invoices(harness)

    for call, code in [
        (
            harness.billing.GetInvoice(billing_pb2.GetInvoiceRequest(name="invoices/nope")),
            grpc.StatusCode.NOT_FOUND,
        ),
        (
            harness.billing.IssueInvoice(billing_pb2.IssueInvoiceRequest(name="invoices/nope")),
            grpc.StatusCode.NOT_FOUND,
        ),
        (
            harness.billing.VoidInvoice(billing_pb2.VoidInvoiceRequest(name="invoices/nope")),
            grpc.StatusCode.NOT_FOUND,
        ),
        (
            harness.billing.IssueInvoice(billing_pb2.IssueInvoiceRequest(name="")),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            harness.billing.GetInvoice(billing_pb2.GetInvoiceRequest(name="customers/acme")),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            harness.billing.ListInvoices(billing_pb2.ListInvoicesRequest(parent="customers/nope")),
            grpc.StatusCode.NOT_FOUND,
        ),
        # Voiding or paying an invoice that was never issued
        (
            harness.billing.VoidInvoice(billing_pb2.VoidInvoiceRequest(name=nov.name)),
            grpc.StatusCode.FAILED_PRECONDITION,
        ),
        (
            harness.billing.MarkInvoicePaid(billing_pb2.MarkInvoicePaidRequest(name=nov.name)),
            grpc.StatusCode.FAILED_PRECONDITION,
        ),
        (
            harness.billing.RetryInvoiceSync(billing_pb2.RetryInvoiceSyncRequest(name=nov.name)),
            grpc.StatusCode.FAILED_PRECONDITION,
        ),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call
        assert info.value.code() == code
    assert await invoices(harness) == [nov]

    # Issuing a gathering invoice twice: the first (forced) issues it, the second is refused
    first = await harness.billing.IssueInvoice(
        billing_pb2.IssueInvoiceRequest(name=nov.name, force=True)
    )
    await expect_error(
        harness.billing.IssueInvoice(billing_pb2.IssueInvoiceRequest(name=nov.name, force=True)),
        grpc.StatusCode.FAILED_PRECONDITION,
        "already issued",
    )
    assert await invoices(harness) == [first]
    # Filter by state
    response = await harness.billing.ListInvoices(
        billing_pb2.ListInvoicesRequest(states=[billing_pb2.INVOICE_STATE_DRAFT])
    )
    assert list(response.invoices) == []


async def test_cli_list_show_issue_void(
    harness: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a November draft with 900 tokens
    await setup_pro(harness)
    record(harness, tokens=900, at=T0 + timedelta(days=9), ingested=T0 + timedelta(days=9))
    await close(harness, NOV_END + timedelta(hours=2))
    nov = (await invoices(harness))[0]

    async def cli(*args: str) -> tuple[int, str, str]:
        code = await asyncio.to_thread(main, ["invoice", *args, "--cp", harness.address])
        out, err = capsys.readouterr()
        return code, out, err

    # list
    code, out, _ = await cli("list", "--customer", "acme", "--state", "draft")
    assert code == 0
    assert nov.id in out and "draft" in out and "19.00 USD" in out
    # show (JSON)
    code, out, _ = await cli("show", nov.id, "--json")
    data = json.loads(out)
    assert (data["state"], data["number"], data["total"]) == ("draft", None, "19.00")
    # issue
    code, out, _ = await cli("issue", nov.id)
    assert code == 0
    assert "Invoice ML-USD-2026-000001 [issued] for acme" in out
    assert out.rstrip().endswith("19.00")
    # issue again: a clear error, exit 1
    code, _, err = await cli("issue", nov.id)
    assert code == 1
    assert "FAILED_PRECONDITION" in err and "already issued" in err
    # void
    code, out, _ = await cli("void", nov.id)
    assert (code, out.strip()) == (0, "invoice ML-USD-2026-000001 is void")
    code, _, err = await cli("show", "no-such-invoice")
    assert code == 1 and "NOT_FOUND" in err
    # preview still works
    code, out, _ = await cli("preview", "acme")
    assert code == 0 and out.startswith("Invoice preview for acme")
