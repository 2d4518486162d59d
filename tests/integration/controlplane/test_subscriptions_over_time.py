"""Subscriptions over time, invoiced to the cent: plan change mid-period (prorated flat fees),
cancel at period end, and the bad inputs of both."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from controlplane.api.convert import to_timestamp
from controlplane.cli.main import main
from controlplane.usage import storage as usage_storage
from controlplane.usage.types import TokenType, UsageEvent
from meterline.admin.v1 import billing_pb2, catalog_pb2, customers_pb2, gateway_pb2

from .conftest import T0, Harness
from .test_invoice_lifecycle import (
    DEC_END,
    NOV_END,
    close,
    invoices,
    record,
    setup_pro,
    summary,
)

CHANGE = T0 + timedelta(days=10)  # 11 Nov 12:00: 10 of November's 30 days on the old plan


async def publish_plus(harness: Harness, *, cadence: str = "P1M") -> None:
    """Plan pro-plus: a flat 30.00 and tokens at 0.002."""
    plan = await harness.catalog.CreatePlan(
        catalog_pb2.CreatePlanRequest(
            plan=catalog_pb2.Plan(
                key="pro-plus",
                currency="USD",
                billing_cadence=cadence,
                rate_cards=[
                    catalog_pb2.RateCard(
                        key="platform",
                        price=catalog_pb2.Price(type=catalog_pb2.PRICE_TYPE_FLAT, amount="30"),
                    ),
                    catalog_pb2.RateCard(
                        feature="tokens-in",
                        price=catalog_pb2.Price(type=catalog_pb2.PRICE_TYPE_UNIT, amount="0.002"),
                    ),
                ],
            )
        )
    )
    await harness.catalog.PublishPlan(catalog_pb2.PublishPlanRequest(name=plan.name))


async def test_plan_change_mid_month(harness: Harness) -> None:
    # Given acme on pro with 600 tokens before the change and 1000 after it
    sub = await setup_pro(harness)
    await publish_plus(harness)
    record(harness, tokens=600, at=T0 + timedelta(days=4), ingested=T0 + timedelta(days=4))
    record(harness, tokens=1000, at=CHANGE + timedelta(days=1), ingested=CHANGE + timedelta(days=1))
    # (an event exactly at the change belongs to the new plan)
    record(harness, tokens=500, at=CHANGE, ingested=CHANGE)

    # When the plan changes on 11 Nov 12:00
    harness.clock.set(CHANGE)
    new = await harness.customers.ChangeSubscriptionPlan(
        customers_pb2.ChangeSubscriptionPlanRequest(
            name=f"subscriptions/{sub}", plan="plans/pro-plus"
        )
    )
    old = await harness.customers.GetSubscription(
        customers_pb2.GetSubscriptionRequest(name=f"subscriptions/{sub}")
    )
    assert old.end_time.ToDatetime(tzinfo=UTC) == CHANGE
    assert old.state == customers_pb2.SUBSCRIPTION_STATE_CANCELED
    assert new.start_time.ToDatetime(tzinfo=UTC) == CHANGE
    assert new.billing_anchor_time.ToDatetime(tzinfo=UTC) == T0
    assert new.plan == "plans/pro-plus/versions/1"

    # Then November is one invoice: the old plan's lines end at the change, the new plan's
    # start there; flat fees are prorated by time (10 x 10/30 = 3.33, 30 x 20/30 = 20.00)
    await close(harness, NOV_END + timedelta(hours=1))
    nov = (await invoices(harness))[0]
    issued = await harness.billing.IssueInvoice(billing_pb2.IssueInvoiceRequest(name=nov.name))
    assert summary(issued) == [
        ("platform", "1", "3.33", False),
        ("tokens-in", "600", "6.00", False),
        ("platform", "1", "20.00", False),
        ("tokens-in", "1500", "3.00", False),
    ]
    assert issued.total == "32.33"
    periods = [
        (
            line.period_start_time.ToDatetime(tzinfo=UTC),
            line.period_end_time.ToDatetime(tzinfo=UTC),
        )
        for line in issued.lines
    ]
    assert periods == [(T0, CHANGE)] * 2 + [(CHANGE, NOV_END)] * 2
    assert [line.subscription for line in issued.lines] == [f"subscriptions/{sub}"] * 2 + [
        f"subscriptions/{new.id}"
    ] * 2

    # December is the new plan only, unprorated
    dec = (await invoices(harness))[1]
    assert summary(dec) == [("platform", "1", "30.00", False), ("tokens-in", "0", "0.00", False)]


async def test_cancel_at_period_end(harness: Harness) -> None:
    sub = await setup_pro(harness)
    record(harness, tokens=100, at=T0 + timedelta(days=20), ingested=T0 + timedelta(days=20))
    record(
        harness, tokens=100, at=NOV_END + timedelta(days=1), ingested=NOV_END + timedelta(days=1)
    )
    harness.clock.set(T0 + timedelta(days=9))

    canceled = await harness.customers.CancelSubscription(
        customers_pb2.CancelSubscriptionRequest(
            name=f"subscriptions/{sub}", timing=customers_pb2.CANCEL_TIMING_PERIOD_END
        )
    )

    # It ends with its period: the whole flat fee, usage after the end never billed
    assert canceled.end_time.ToDatetime(tzinfo=UTC) == NOV_END
    await close(harness, NOV_END + timedelta(days=40))
    (nov,) = await invoices(harness)
    assert summary(nov) == [("platform", "1", "10.00", False), ("tokens-in", "100", "1.00", False)]
    assert nov.state == billing_pb2.INVOICE_STATE_DRAFT


async def expect(call, code: grpc.StatusCode, needle: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == code
    assert needle in (info.value.details() or "")


async def test_bad_plan_changes_change_nothing(harness: Harness) -> None:
    sub = await setup_pro(harness)
    await publish_plus(harness)
    name = f"subscriptions/{sub}"
    change = customers_pb2.ChangeSubscriptionPlanRequest

    await expect(
        harness.customers.ChangeSubscriptionPlan(change(name=name, plan="plans/pro")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "already on plans/pro/versions/1",
    )
    await expect(
        harness.customers.ChangeSubscriptionPlan(
            change(name="subscriptions/nope", plan="plans/pro-plus")
        ),
        grpc.StatusCode.NOT_FOUND,
        "nope",
    )
    await expect(
        harness.customers.ChangeSubscriptionPlan(change(name=name, plan="plans/nope")),
        grpc.StatusCode.NOT_FOUND,
        "nope",
    )
    await expect(
        harness.customers.ChangeSubscriptionPlan(
            change(
                name=name, plan="plans/pro-plus", change_time=to_timestamp(T0 - timedelta(days=1))
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "before the subscription's start_time",
    )
    await expect(
        harness.customers.CancelSubscription(
            customers_pb2.CancelSubscriptionRequest(
                name=name,
                timing=customers_pb2.CANCEL_TIMING_PERIOD_END,
                end_time=to_timestamp(T0 + timedelta(days=3)),
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "exclude each other",
    )
    # A change reaching back into an issued period
    await close(harness, NOV_END + timedelta(hours=1))
    (nov, _) = await invoices(harness)
    await harness.billing.IssueInvoice(billing_pb2.IssueInvoiceRequest(name=nov.name))
    await expect(
        harness.customers.ChangeSubscriptionPlan(
            change(
                name=name,
                plan="plans/pro-plus",
                change_time=to_timestamp(NOV_END - timedelta(days=1)),
            )
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "is issued",
    )
    subs = await harness.customers.ListSubscriptions(
        customers_pb2.ListSubscriptionsRequest(parent="customers/acme")
    )
    assert [(s.id, s.HasField("end_time")) for s in subs.subscriptions] == [(sub, False)]

    # Canceled subscriptions cannot change plan
    await harness.customers.CancelSubscription(customers_pb2.CancelSubscriptionRequest(name=name))
    await expect(
        harness.customers.ChangeSubscriptionPlan(change(name=name, plan="plans/pro-plus")),
        grpc.StatusCode.FAILED_PRECONDITION,
        "is canceled",
    )


async def test_cli_change_plan_and_cancel(
    harness: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    sub = await setup_pro(harness)
    await publish_plus(harness)
    harness.clock.set(CHANGE)

    async def cli(*args: str) -> tuple[int, str, str]:
        code = await asyncio.to_thread(main, ["subscription", *args, "--cp", harness.address])
        out, err = capsys.readouterr()
        return code, out, err

    code, out, _ = await cli("change-plan", sub, "pro-plus", "--at", "2026-11-11T12:00:00Z")
    assert code == 0 and "plans/pro-plus/versions/1" in out and "active" in out
    new_id = out.splitlines()[1].split()[0]
    code, out, _ = await cli("list", "--customer", "acme")
    # newest first: the new subscription, then the one the change ended
    assert [line.split()[3] for line in out.splitlines()] == ["STATE", "active", "canceled"]
    code, out, _ = await cli("cancel", new_id, "--at-period-end", "--utc")
    assert code == 0 and out.splitlines()[1].split()[3:] == [
        "canceled",
        "2026-11-11",
        "12:00:00",
        "UTC",
        "2026-12-01",
        "12:00:00",
        "UTC",
    ]
    code, out, _ = await cli("get", new_id, "-o", "json")
    assert json.loads(out)["end_time"] == "2026-12-01T12:00:00Z"
    code, _, err = await cli("cancel", new_id)
    assert code == 1 and "FAILED_PRECONDITION" in err and "already canceled" in err


# Subscriptions over time in the declarative file ---------------------------------------------

OVER_TIME = """\
_format_version: "3.0"
billing:
  features:
    - {key: tokens-in, meter: llm_tokens, filters: {type: input}}
  plans:
    - key: pro
      name: Pro
      currency: USD
      billing_cadence: P1M
      rate_cards:
        - {key: platform, price: {type: flat, amount: "10"}}
        - {feature: tokens-in, price: {type: unit, amount: "0.01"}}
    - key: pro-plus
      name: Pro Plus
      currency: USD
      billing_cadence: P1M
      rate_cards:
        - {key: platform, price: {type: flat, amount: "30"}}
        - {feature: tokens-in, price: {type: unit, amount: "0.002"}}
  customers:
    - {key: acme, name: Acme, subjects: [acme-corp]}
    - {key: beta, name: Beta, subjects: [beta-corp]}
    - {key: gamma, name: Gamma, subjects: [gamma-corp]}
  subscriptions:
    - customer: acme
      plan: pro
      start: "2026-11-01T12:00:00Z"
      changes: [{at: "2026-11-11T12:00:00Z", plan: pro-plus}]ACME_END
    - {customer: beta, plan: pro, start: "2026-11-01T12:00:00Z", end: "2026-11-16T12:00:00Z"}
    - {customer: gamma, plan: pro, start: "2026-12-01T12:00:00Z"}
"""


def over_time(acme_end: str = "") -> str:
    return OVER_TIME.replace("ACME_END", f"\n      end: {acme_end}" if acme_end else "")


def use(harness: Harness, subject: str, tokens: int, at: datetime) -> None:
    event = UsageEvent(
        id=f"{subject}-{at.isoformat()}",
        source="test",
        type="llm.tokens",
        subject=subject,
        time=at,
        provider="openai",
        model="gpt-4o",
        token_type=TokenType.INPUT,
        tokens=tokens,
        status_code=200,
    )
    with harness.cp.db.begin() as conn:
        usage_storage.insert_events(conn, [event], ingest_time=at)


async def issued_totals(harness: Harness, customer: str) -> list[tuple[str, list[tuple[str, str]]]]:
    listed = await harness.billing.ListInvoices(
        billing_pb2.ListInvoicesRequest(parent=f"customers/{customer}")
    )
    result = []
    for invoice in listed.invoices:
        if invoice.state == billing_pb2.INVOICE_STATE_GATHERING:
            continue  # the period running now
        if invoice.state == billing_pb2.INVOICE_STATE_DRAFT:
            invoice = await harness.billing.IssueInvoice(
                billing_pb2.IssueInvoiceRequest(name=invoice.name)
            )
        result.append((invoice.total, [(x.rate_card, x.amount) for x in invoice.lines]))
    return result


async def test_yaml_plan_change_cancel_and_future_start_invoiced_to_the_cent(
    harness: Harness,
) -> None:
    async def apply(text: str) -> list[str]:
        response = await harness.gateway.ApplyConfig(gateway_pb2.ApplyConfigRequest(document=text))
        return list(response.changes)

    # Given the file applied on 1 Nov: acme changes plan on 11 Nov, beta ends 16 Nov, gamma
    # starts 1 Dec
    changes = await apply(over_time())
    assert any(
        "changed subscription of acme to pro-plus v1 at 2026-11-11T12:00" in c for c in changes
    )
    assert any("of beta ends 2026-11-16T12:00:00+00:00" in c for c in changes)
    assert await apply(over_time()) == []
    use(harness, "acme-corp", 600, T0 + timedelta(days=3))
    use(harness, "acme-corp", 1000, CHANGE + timedelta(days=1))
    use(harness, "beta-corp", 300, T0 + timedelta(days=5))
    use(harness, "beta-corp", 999, T0 + timedelta(days=16))  # after beta's end: never billed
    use(harness, "gamma-corp", 50, T0 + timedelta(days=6))  # before gamma's start: never billed
    use(harness, "gamma-corp", 100, NOV_END + timedelta(days=3))

    # When acme's file later says to end at the period's end (applied on 20 Nov)
    harness.clock.set(T0 + timedelta(days=19))
    changes = await apply(over_time("period_end"))
    assert len(changes) == 1 and "of acme ends 2026-12-01T12:00:00+00:00" in changes[0]
    assert await apply(over_time("period_end")) == []
    # ... and a file that rewrites the past is refused, changing nothing
    rewritten = over_time().replace("2026-11-11T12:00:00Z", "2026-11-12T12:00:00Z")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await apply(rewritten)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "cannot rewrite what already happened" in (info.value.details() or "")

    await close(harness, NOV_END + timedelta(hours=1))
    await close(harness, DEC_END + timedelta(hours=1))
    # Then acme: pro 10 x 10/30 = 3.33 + 600 x 0.01, pro-plus 30 x 20/30 + 1000 x 0.002
    assert await issued_totals(harness, "acme") == [
        (
            "31.33",
            [
                ("platform", "3.33"),
                ("tokens-in", "6.00"),
                ("platform", "20.00"),
                ("tokens-in", "2.00"),
            ],
        )
    ]
    # beta: 15 of 30 days = 5.00 + 300 x 0.01
    assert await issued_totals(harness, "beta") == [
        ("8.00", [("platform", "5.00"), ("tokens-in", "3.00")])
    ]
    # gamma: nothing in November; December in full
    assert await issued_totals(harness, "gamma") == [
        ("11.00", [("platform", "10.00"), ("tokens-in", "1.00")])
    ]


@pytest.mark.parametrize(
    ("entry", "needle"),
    [
        pytest.param(
            '{customer: acme, plan: pro, start: "2026-11-05T00:00:00Z",'
            ' changes: [{at: "2026-11-04T00:00:00Z", plan: pro-plus}]}',
            "changes[0] (pro-plus): at must be after the subscription's start",
            id="change-before-start",
        ),
        pytest.param(
            '{customer: acme, plan: pro, changes: [{at: "2026-11-04T00:00:00Z", plan: gold}]}',
            'unknown plan "gold"',
            id="change-to-unknown-plan",
        ),
        pytest.param(
            '{customer: acme, plan: pro, start: "2026-11-05T00:00:00Z",'
            ' billing_anchor: "2026-11-06T00:00:00Z"}',
            "billing_anchor must not be after start",
            id="anchor-after-start",
        ),
        pytest.param(
            '{customer: acme, plan: pro, start: "2026-11-05T00:00:00Z",'
            ' changes: [{at: "2026-11-10T00:00:00Z", plan: pro-plus}],'
            ' end: "2026-11-08T00:00:00Z"}',
            "end must be after the last plan change",
            id="end-before-change",
        ),
        pytest.param(
            '{customer: acme, plan: pro, start: "2026-11-05T00:00:00Z", end: "soon"}',
            "end must be an ISO 8601 timestamp",
            id="end-not-a-time",
        ),
    ],
)
async def test_bad_subscriptions_in_yaml_change_nothing(
    harness: Harness, entry: str, needle: str
) -> None:
    head = OVER_TIME[: OVER_TIME.index("  subscriptions:")]
    document = f"{head}  subscriptions:\n    - {entry}\n"
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await harness.gateway.ApplyConfig(gateway_pb2.ApplyConfigRequest(document=document))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert needle in (info.value.details() or ""), info.value.details()
    listed = await harness.customers.ListSubscriptions(customers_pb2.ListSubscriptionsRequest())
    assert list(listed.subscriptions) == []
