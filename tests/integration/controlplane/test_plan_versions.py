"""Plans as versioned products: draft -> published -> archived, published versions never
change, subscriptions stay on their version until migrated; admin API, YAML and CLI."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import grpc
import pytest

from controlplane.api.convert import to_timestamp
from controlplane.cli.main import main
from meterline.admin.v1 import billing_pb2, catalog_pb2, customers_pb2, gateway_pb2

from .conftest import T0, Harness
from .test_invoice_lifecycle import NOV_END, close, invoices, record, setup_pro, summary

MIGRATE = T0 + timedelta(days=10)  # 11 Nov 12:00: 10 of November's 30 days on version 1
FAILED, INVALID = grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.INVALID_ARGUMENT


async def expect(call, code: grpc.StatusCode, needle: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == code, info.value.details()
    assert needle in (info.value.details() or ""), info.value.details()


async def get(harness: Harness, name: str) -> catalog_pb2.Plan:
    return await harness.catalog.GetPlan(catalog_pb2.GetPlanRequest(name=name))


def flat_card(amount: str) -> catalog_pb2.RateCard:
    return catalog_pb2.RateCard(
        key="platform", price=catalog_pb2.Price(type=catalog_pb2.PRICE_TYPE_FLAT, amount=amount)
    )


async def test_versions_publish_archive_and_migrate(harness: Harness) -> None:
    # Given pro v1 published (flat 10.00 + graduated tokens) and acme subscribed to it
    sub = await setup_pro(harness)
    v1 = await get(harness, "plans/pro/versions/1")
    assert v1.state == catalog_pb2.PLAN_STATE_ACTIVE

    # A published version never changes
    update = catalog_pb2.UpdatePlanRequest(
        plan=catalog_pb2.Plan(name="plans/pro/versions/1", rate_cards=[flat_card("99")])
    )
    update.update_mask.paths.append("rate_cards")
    await expect(harness.catalog.UpdatePlan(update), FAILED, "a published version never changes")
    assert await get(harness, "plans/pro/versions/1") == v1

    # A new version is a draft copy; drafts change (invalid changes are refused, change nothing)
    v2 = await harness.catalog.CreatePlanVersion(
        catalog_pb2.CreatePlanVersionRequest(name="plans/pro")
    )
    assert (v2.version, v2.state) == (2, catalog_pb2.PLAN_STATE_DRAFT)
    assert list(v2.rate_cards) == list(v1.rate_cards)
    bad = catalog_pb2.UpdatePlanRequest(
        plan=catalog_pb2.Plan(
            name="plans/pro/versions/2",
            rate_cards=[
                catalog_pb2.RateCard(
                    feature="tokens-in",
                    price=catalog_pb2.Price(
                        type=catalog_pb2.PRICE_TYPE_TIERED,
                        tier_mode=catalog_pb2.TIER_MODE_GRADUATED,
                        tiers=[
                            catalog_pb2.PriceTier(up_to="1000", unit_price="0.01"),
                            catalog_pb2.PriceTier(up_to="500", unit_price="0.02"),
                        ],
                    ),
                )
            ],
        ),
    )
    await expect(harness.catalog.UpdatePlan(bad), INVALID, "the last tier is open-ended")
    bad_mask = catalog_pb2.UpdatePlanRequest(plan=catalog_pb2.Plan(name="plans/pro/versions/2"))
    bad_mask.update_mask.paths.append("state")
    await expect(harness.catalog.UpdatePlan(bad_mask), INVALID, "cannot update state")
    assert list((await get(harness, "plans/pro/versions/2")).rate_cards) == list(v1.rate_cards)
    good = catalog_pb2.UpdatePlanRequest(
        plan=catalog_pb2.Plan(
            name="plans/pro/versions/2", rate_cards=[flat_card("20"), v1.rate_cards[1]]
        )
    )
    good.update_mask.paths.append("rate_cards")
    v2 = await harness.catalog.UpdatePlan(good)
    assert v2.rate_cards[0].price.amount == "20" and v2.display_name == v1.display_name

    # Migrating to a version that is not published is refused
    migrate = customers_pb2.MigrateSubscriptionRequest(
        name=f"subscriptions/{sub}", target_version=2
    )
    await expect(harness.customers.MigrateSubscription(migrate), FAILED, "not published")

    # Publishing v2 archives v1, but acme stays on v1 until migrated
    await harness.catalog.PublishPlan(catalog_pb2.PublishPlanRequest(name="plans/pro/versions/2"))
    assert (await get(harness, "plans/pro/versions/1")).state == catalog_pb2.PLAN_STATE_ARCHIVED
    await expect(
        harness.catalog.PublishPlan(catalog_pb2.PublishPlanRequest(name="plans/pro/versions/1")),
        FAILED,
        "only drafts can be published",
    )
    running = await harness.customers.GetSubscription(
        customers_pb2.GetSubscriptionRequest(name=f"subscriptions/{sub}")
    )
    assert running.plan == "plans/pro/versions/1"

    # When acme is migrated on 11 Nov 12:00 (600 tokens before, 500 after)
    record(harness, tokens=600, at=T0 + timedelta(days=2), ingested=T0 + timedelta(days=2))
    record(harness, tokens=500, at=MIGRATE + timedelta(days=1), ingested=MIGRATE)
    harness.clock.set(MIGRATE)
    moved = await harness.customers.MigrateSubscription(
        customers_pb2.MigrateSubscriptionRequest(name=f"subscriptions/{sub}")
    )
    assert moved.plan == "plans/pro/versions/2"
    assert moved.start_time.ToDatetime().isoformat() == "2026-11-11T12:00:00"
    await expect(
        harness.customers.MigrateSubscription(
            customers_pb2.MigrateSubscriptionRequest(name=f"subscriptions/{moved.id}")
        ),
        FAILED,
        "already on plans/pro/versions/2",
    )

    # Then November bills v1 for 10 days and v2 for 20: 10 x 10/30 = 3.33, 20 x 20/30 = 13.33
    await close(harness, NOV_END + timedelta(hours=1))
    nov = (await invoices(harness))[0]
    issued = await harness.billing.IssueInvoice(billing_pb2.IssueInvoiceRequest(name=nov.name))
    assert summary(issued) == [
        ("platform", "1", "3.33", False),
        ("tokens-in", "600", "6.00", False),
        ("platform", "1", "13.33", False),
        ("tokens-in", "500", "5.00", False),
    ]
    assert issued.total == "27.66"

    # Archiving: no new subscriptions; only the published version can be archived
    await expect(
        harness.catalog.ArchivePlan(catalog_pb2.ArchivePlanRequest(name="plans/pro/versions/1")),
        FAILED,
        "only the published version can be archived",
    )
    archived = await harness.catalog.ArchivePlan(
        catalog_pb2.ArchivePlanRequest(name="plans/pro/versions/2")
    )
    assert archived.state == catalog_pb2.PLAN_STATE_ARCHIVED
    await harness.customers.CreateCustomer(
        customers_pb2.CreateCustomerRequest(
            customer=customers_pb2.Customer(key="beta", subjects=["beta-corp"])
        )
    )
    await expect(
        harness.customers.CreateSubscription(
            customers_pb2.CreateSubscriptionRequest(
                subscription=customers_pb2.Subscription(customer="customers/beta", plan="plans/pro")
            )
        ),
        FAILED,
        "has no published version",
    )


async def test_billing_anchor_gives_a_prorated_first_period(harness: Harness) -> None:
    # Given a subscription starting 11 Nov 12:00 anchored on 1 Nov 12:00 (the 1st of a month)
    await setup_pro(harness, start=T0 + timedelta(days=40))  # acme elsewhere, after December
    await harness.customers.CreateCustomer(
        customers_pb2.CreateCustomerRequest(
            customer=customers_pb2.Customer(key="beta", subjects=["beta-corp"])
        )
    )
    sub = customers_pb2.Subscription(customer="customers/beta", plan="plans/pro")
    sub.start_time.CopyFrom(to_timestamp(MIGRATE))
    sub.billing_anchor_time.CopyFrom(to_timestamp(MIGRATE + timedelta(days=1)))
    await expect(
        harness.customers.CreateSubscription(
            customers_pb2.CreateSubscriptionRequest(subscription=sub)
        ),
        INVALID,
        "billing_anchor_time must not be after start_time",
    )
    sub.billing_anchor_time.CopyFrom(to_timestamp(T0))
    created = await harness.customers.CreateSubscription(
        customers_pb2.CreateSubscriptionRequest(subscription=sub)
    )
    assert created.billing_anchor_time.ToDatetime().isoformat() == "2026-11-01T12:00:00"
    # Then its first invoice covers 1 Nov .. 1 Dec and charges 20 of 30 days: 10 x 20/30
    harness.clock.set(MIGRATE + timedelta(days=2))
    preview = await harness.billing.PreviewInvoice(
        billing_pb2.PreviewInvoiceRequest(customer="customers/beta")
    )
    assert preview.period_start_time.ToDatetime().isoformat() == "2026-11-01T12:00:00"
    assert preview.period_end_time.ToDatetime().isoformat() == "2026-12-01T12:00:00"
    assert [(x.rate_card, x.amount) for x in preview.lines] == [
        ("platform", "6.67"),
        ("tokens-in", "0.00"),
    ]


YAML = """\
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
        - {key: platform, price: {type: flat, amount: "AMOUNT"}}
  customers:
    - {key: acme, name: Acme, subjects: [acme-corp]}
  subscriptions:
    - {customer: acme, plan: pro, start: "2026-11-01T12:00:00Z"}
"""


async def test_yaml_changes_make_new_versions_and_leave_subscriptions_alone(
    harness: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    async def apply(amount: str) -> list[str]:
        document = YAML.replace("AMOUNT", amount)
        response = await harness.gateway.ApplyConfig(
            gateway_pb2.ApplyConfigRequest(document=document)
        )
        return list(response.changes)

    assert "created and published plan pro version 1" in await apply("10")
    # a changed plan is a new version, published; v1 is archived, acme stays on it
    assert await apply("12") == ["created and published plan pro version 2"]
    assert await apply("12") == []

    async def cli(*args: str) -> tuple[int, str, str]:
        code = await asyncio.to_thread(main, [*args, "--cp", harness.address])
        out, err = capsys.readouterr()
        return code, out, err

    code, out, _ = await cli("plans", "list")
    assert code == 0
    # newest first; both versions were made in the same (frozen) instant: by version then
    assert [line.split()[:3] for line in out.splitlines()] == [
        ["KEY", "VERSION", "STATE"],
        ["pro", "v1", "archived"],
        ["pro", "v2", "published"],
    ]
    code, out, _ = await cli("subscription", "list", "--customer", "acme")
    assert "plans/pro/versions/1" in out
    code, out, _ = await cli("plans", "new-version", "pro")
    assert code == 0 and out.split()[:3] == ["pro", "v3", "draft"]
    code, out, _ = await cli("plans", "show", "pro", "--version", "3")
    assert code == 0 and '"amount": "12"' in out
    code, out, _ = await cli("plans", "publish", "pro", "--version", "3")
    assert code == 0 and out.split()[:3] == ["pro", "v3", "published"]
    sub_id = (
        (await harness.customers.ListSubscriptions(customers_pb2.ListSubscriptionsRequest()))
        .subscriptions[0]
        .id
    )
    code, out, _ = await cli("subscription", "migrate", sub_id, "--at", "2026-11-16T12:00:00Z")
    assert code == 0 and "plans/pro/versions/3" in out
    code, out, err = await cli("plans", "archive", "pro", "--version", "1")
    assert code == 1 and "FAILED_PRECONDITION" in err and "archived" in err
    code, out, _ = await cli("plans", "archive", "pro", "--version", "3")
    assert code == 0 and out.split()[:3] == ["pro", "v3", "archived"]
    # November: v1 10.00 for 15 of 30 days = 5.00, v3 12.00 for 15 = 6.00
    harness.clock.set(NOV_END - timedelta(days=1))
    preview = await harness.billing.PreviewInvoice(
        billing_pb2.PreviewInvoiceRequest(customer="customers/acme")
    )
    assert [(x.rate_card, x.amount) for x in preview.lines] == [
        ("platform", "5.00"),
        ("platform", "6.00"),
    ]


async def test_publishing_an_invalid_draft_is_refused_and_changes_nothing(harness: Harness) -> None:
    # Given a draft whose stored rate card went bad (as a draft stored by an older release,
    # before today's checks, could be): a negative flat amount written straight to the table
    from sqlalchemy import update

    from controlplane.storage import schema as s

    draft = await harness.catalog.CreatePlan(
        catalog_pb2.CreatePlanRequest(
            plan=catalog_pb2.Plan(
                key="legacy", currency="USD", billing_cadence="P1M", rate_cards=[flat_card("5")]
            )
        )
    )
    with harness.cp.db.begin() as conn:
        conn.execute(
            update(s.rate_cards)
            .where(s.rate_cards.c.plan_key == "legacy")
            .values(price='{"amount": "-5", "payment_term": "in_advance", "type": "flat"}')
        )
    # When it is published, Then the checks run again: INVALID_ARGUMENT, still a draft
    await expect(
        harness.catalog.PublishPlan(catalog_pb2.PublishPlanRequest(name=draft.name)),
        INVALID,
        "price.amount must not be negative, got -5",
    )
    assert (await get(harness, draft.name)).state == catalog_pb2.PLAN_STATE_DRAFT


ANCHORED = """\
_format_version: "3.0"
billing:
  plans:
    - key: monthly
      name: Monthly
      currency: USD
      billing_cadence: P1M
      billing_anchor: "ANCHOR"
      rate_cards:
        - {key: platform, price: {type: flat, amount: "10"}}
  customers:
    - {key: acme, name: Acme, subjects: [acme-corp]}
  subscriptions:
    - {customer: acme, plan: monthly, start: "START"}
"""


@pytest.mark.parametrize(
    ("anchor", "start", "now", "period", "amount"),
    [
        # every customer billed on the 1st: 11 Nov 12:00 .. 1 Dec is 19.5 of 30 days
        pytest.param(
            "2026-01-01T00:00:00Z",
            "2026-11-11T12:00:00Z",
            "2026-11-20T00:00:00Z",
            ("2026-11-01T00:00:00", "2026-12-01T00:00:00"),
            "6.50",
            id="first-of-month",
        ),
        # a Jan 31 anchor clamps to Feb 28 (2027); unit tests cover the return to Mar 31
        pytest.param(
            "2026-01-31T00:00:00Z",
            "2027-02-10T00:00:00Z",
            "2027-02-20T00:00:00Z",
            ("2027-01-31T00:00:00", "2027-02-28T00:00:00"),
            "6.43",  # 18 of 28 days
            id="jan-31-to-feb-28",
        ),
        # a leap year: Jan 31 -> Feb 29
        pytest.param(
            "2026-01-31T00:00:00Z",
            "2028-02-01T00:00:00Z",
            "2028-02-10T00:00:00Z",
            ("2028-01-31T00:00:00", "2028-02-29T00:00:00"),
            "9.66",  # 28 of 29 days
            id="jan-31-to-feb-29-leap",
        ),
        # a plan anchor after the start: the subscription is anchored at its start
        pytest.param(
            "2027-06-01T00:00:00Z",
            "2026-11-11T12:00:00Z",
            "2026-11-20T00:00:00Z",
            ("2026-11-11T12:00:00", "2026-12-11T12:00:00"),
            "10.00",
            id="anchor-after-start",
        ),
    ],
)
async def test_plan_billing_anchor_in_yaml(
    harness: Harness,
    anchor: str,
    start: str,
    now: str,
    period: tuple[str, str],
    amount: str,
) -> None:
    from datetime import datetime

    document = ANCHORED.replace("ANCHOR", anchor).replace("START", start)
    await harness.gateway.ApplyConfig(gateway_pb2.ApplyConfigRequest(document=document))
    plan = await get(harness, "plans/monthly")
    assert plan.billing_anchor_time.ToJsonString() == anchor
    harness.clock.set(datetime.fromisoformat(now))
    invoice = await harness.billing.PreviewInvoice(
        billing_pb2.PreviewInvoiceRequest(customer="customers/acme")
    )
    assert (
        invoice.period_start_time.ToDatetime().isoformat(),
        invoice.period_end_time.ToDatetime().isoformat(),
    ) == period
    assert [x.amount for x in invoice.lines] == [amount]
