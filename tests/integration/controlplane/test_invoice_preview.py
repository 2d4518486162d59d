"""The preview is the stored invoice's own computation: what issuing the period now would
freeze, line for line and to the cent, prorations and minimum commitments included."""

from __future__ import annotations

from datetime import timedelta

import grpc
import pytest

from controlplane.api.convert import to_timestamp
from meterline.admin.v1 import billing_pb2, catalog_pb2, customers_pb2

from .conftest import T0, Harness
from .test_invoice_lifecycle import NOV_END, close, invoices, record, setup_pro
from .test_subscriptions_over_time import CHANGE, publish_plus


def full(invoice: billing_pb2.Invoice) -> list[tuple[str, ...]]:
    return [
        (x.subscription, x.rate_card, x.description, x.quantity, x.unit_price, x.amount)
        for x in invoice.lines
    ]


async def preview(harness: Harness, customer: str = "acme") -> billing_pb2.Invoice:
    return await harness.billing.PreviewInvoice(
        billing_pb2.PreviewInvoiceRequest(customer=f"customers/{customer}")
    )


async def test_preview_equals_the_issued_invoice_across_a_plan_change(harness: Harness) -> None:
    # Given acme on pro until 11 Nov 12:00 and on pro-plus after it, with usage on both sides
    sub = await setup_pro(harness)
    await publish_plus(harness)
    record(harness, tokens=1200, at=T0 + timedelta(days=3), ingested=T0 + timedelta(days=3))
    harness.clock.set(CHANGE)
    await harness.customers.ChangeSubscriptionPlan(
        customers_pb2.ChangeSubscriptionPlanRequest(
            name=f"subscriptions/{sub}", plan="plans/pro-plus"
        )
    )
    record(harness, tokens=700, at=CHANGE + timedelta(days=2), ingested=CHANGE + timedelta(days=2))

    # When previewing on 25 Nov, before the job created any invoice
    harness.clock.set(T0 + timedelta(days=24))
    before = await preview(harness)
    assert before.id == ""

    # Then the lines are per subscription, prorated: pro 10 x 10/30 = 3.33, 1000 x 0.01 +
    # 200 x 0.005 = 11.00; pro-plus 30 x 20/30 = 20.00, 700 x 0.002 = 1.40
    assert [(x.rate_card, x.quantity, x.amount) for x in before.lines] == [
        ("platform", "1", "3.33"),
        ("tokens-in", "1200", "11.00"),
        ("platform", "1", "20.00"),
        ("tokens-in", "700", "1.40"),
    ]
    assert before.total == "35.73"
    assert len({x.subscription for x in before.lines}) == 2
    assert "prorated for 2026-11-01T12:00Z..2026-11-11T12:00Z" in before.lines[0].description

    # And once the job stored the invoice the preview is that invoice, and issuing freezes
    # exactly what the preview showed
    await close(harness, T0 + timedelta(days=24))
    stored = (await invoices(harness))[0]
    during = await preview(harness)
    assert during.id == stored.id and full(during) == full(before)
    await close(harness, NOV_END + timedelta(hours=1))
    issued = await harness.billing.IssueInvoice(billing_pb2.IssueInvoiceRequest(name=stored.name))
    assert full(issued) == full(before) and issued.total == before.total
    # (an issued period previews as its frozen invoice)
    harness.clock.set(T0 + timedelta(days=24))
    again = await preview(harness)
    assert again.number == issued.number and full(again) == full(issued)


async def test_minimum_commitment_is_prorated_on_a_part_period(harness: Harness) -> None:
    # Given a plan: tokens at 0.001 with a minimum of 10.00 per month
    await harness.catalog.CreateFeature(
        catalog_pb2.CreateFeatureRequest(
            feature=catalog_pb2.Feature(
                key="tokens-in", meter="llm_tokens", filters={"type": "input"}
            )
        )
    )
    plan = await harness.catalog.CreatePlan(
        catalog_pb2.CreatePlanRequest(
            plan=catalog_pb2.Plan(
                key="committed",
                currency="USD",
                billing_cadence="P1M",
                rate_cards=[
                    catalog_pb2.RateCard(
                        feature="tokens-in",
                        price=catalog_pb2.Price(type=catalog_pb2.PRICE_TYPE_UNIT, amount="0.001"),
                        commitments=catalog_pb2.Commitments(minimum_amount="10"),
                    )
                ],
            )
        )
    )
    await harness.catalog.PublishPlan(catalog_pb2.PublishPlanRequest(name=plan.name))
    await harness.customers.CreateCustomer(
        customers_pb2.CreateCustomerRequest(
            customer=customers_pb2.Customer(key="acme", subjects=["acme-corp"])
        )
    )
    # acme subscribes 11 Nov 12:00 (anchored on the 1st) and cancels 21 Nov 12:00: it is
    # served 10 of November's 30 days
    sub = customers_pb2.Subscription(customer="customers/acme", plan="plans/committed")
    sub.start_time.CopyFrom(to_timestamp(T0 + timedelta(days=10)))
    sub.billing_anchor_time.CopyFrom(to_timestamp(T0))
    created = await harness.customers.CreateSubscription(
        customers_pb2.CreateSubscriptionRequest(subscription=sub)
    )
    cancel = customers_pb2.CancelSubscriptionRequest(name=created.name)
    cancel.end_time.CopyFrom(to_timestamp(T0 + timedelta(days=20)))
    await harness.customers.CancelSubscription(cancel)
    record(harness, tokens=1000, at=T0 + timedelta(days=12), ingested=T0 + timedelta(days=12))

    # Then the minimum is 10 x 10/30 = 3.33 (rounded once, half-up): usage 1.00, top-up 2.33
    harness.clock.set(T0 + timedelta(days=15))
    invoice = await preview(harness)
    assert [(x.rate_card, x.quantity, x.amount) for x in invoice.lines] == [
        ("tokens-in", "1000", "1.00"),
        ("tokens-in", "1", "2.33"),
    ]
    assert invoice.lines[1].type == billing_pb2.INVOICE_LINE_TYPE_MINIMUM_COMMITMENT
    assert "minimum commitment 3.33 top-up, prorated" in invoice.lines[1].description
    # issued to the same cents
    await close(harness, T0 + timedelta(days=21))
    stored = (await invoices(harness))[0]
    issued = await harness.billing.IssueInvoice(billing_pb2.IssueInvoiceRequest(name=stored.name))
    assert full(issued) == full(invoice) and issued.total == "3.33"


async def test_preview_without_a_billing_subscription_is_refused(harness: Harness) -> None:
    await setup_pro(harness, start=T0 + timedelta(days=40))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await preview(harness)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "has no running subscription at 2026-11-01T12:00:00+00:00" in (
        info.value.details() or ""
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await preview(harness, "nobody")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_operator_meter_features_invoice_through_the_same_path(harness: Harness) -> None:
    # Given an operator meter (SUM of $.units by region), a feature for eu and a plan on it
    from meterline.admin.v1 import usage_pb2

    from .test_usage_api import API_CALLS, cloudevent

    await harness.usage.CreateMeter(usage_pb2.CreateMeterRequest(meter=API_CALLS))
    await harness.catalog.CreateFeature(
        catalog_pb2.CreateFeatureRequest(
            feature=catalog_pb2.Feature(key="eu-calls", meter="api_calls", filters={"region": "eu"})
        )
    )

    def plan(key: str, price: catalog_pb2.Price) -> catalog_pb2.CreatePlanRequest:
        return catalog_pb2.CreatePlanRequest(
            plan=catalog_pb2.Plan(
                key=key,
                currency="USD",
                billing_cadence="P1M",
                rate_cards=[catalog_pb2.RateCard(feature="eu-calls", price=price)],
            )
        )

    # (a model_list price needs a token feature)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await harness.catalog.CreatePlan(
            plan(
                "bad",
                catalog_pb2.Price(type=catalog_pb2.PRICE_TYPE_MODEL_LIST, price_list="any"),
            )
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "its feature must meter llm_tokens, not 'api_calls'" in (info.value.details() or "")
    created = await harness.catalog.CreatePlan(
        plan("calls", catalog_pb2.Price(type=catalog_pb2.PRICE_TYPE_UNIT, amount="0.5"))
    )
    await harness.catalog.PublishPlan(catalog_pb2.PublishPlanRequest(name=created.name))
    await harness.customers.CreateCustomer(
        customers_pb2.CreateCustomerRequest(
            customer=customers_pb2.Customer(key="acme", subjects=["acme"])
        )
    )
    await harness.customers.CreateSubscription(
        customers_pb2.CreateSubscriptionRequest(
            subscription=customers_pb2.Subscription(customer="customers/acme", plan="plans/calls")
        )
    )
    events = [
        cloudevent("c1", minutes=5, units=3, region="eu"),
        cloudevent("c2", minutes=6, units=4, region="eu"),
        cloudevent("c3", minutes=7, units=10, region="us"),
        cloudevent("c4", minutes=8, units=100, region="eu", subject="someone-else"),
    ]
    await harness.usage.IngestEvents(usage_pb2.IngestEventsRequest(events_json=events))

    # Then the preview and the issued invoice bill 7 eu units x 0.5 = 3.50
    harness.clock.set(T0 + timedelta(days=3))
    before = await preview(harness)
    assert [(x.rate_card, x.quantity, x.amount) for x in before.lines] == [
        ("eu-calls", "7", "3.50")
    ]
    await close(harness, NOV_END + timedelta(hours=1))
    stored = (await invoices(harness))[0]
    issued = await harness.billing.IssueInvoice(billing_pb2.IssueInvoiceRequest(name=stored.name))
    assert full(issued) == full(before) and issued.total == "3.50"
