"""Cadences the invoicer cannot handle are refused by the API and YAML alike, and one bad
subscription (stored before that was checked) never stops the invoicing job for the others."""

from __future__ import annotations

import json
from datetime import timedelta

import grpc
import pytest
from google.protobuf import field_mask_pb2
from sqlalchemy import update

from controlplane.storage import schema as s
from meterline.admin.v1 import (
    billing_pb2,
    catalog_pb2,
    gateway_pb2,
    notifications_pb2,
    notifications_pb2_grpc,
)
from tests.integration.controlplane.conftest import T0, Harness

BAD_CADENCES = [
    pytest.param("P0D", "must be positive", id="zero"),
    pytest.param("-P1M", "must be positive", id="negative"),
    pytest.param("P99999999Y", "longer than the maximum of ten years", id="huge"),
    pytest.param("P11Y", "longer than the maximum of ten years", id="eleven-years"),
    pytest.param("PT30S", "shorter than the minimum of PT1M", id="thirty-seconds"),
    pytest.param("P" + "1" * 5000 + "D", "longer than 40 characters", id="5000-digits"),
    pytest.param("monthly", "not an ISO 8601 duration", id="words"),
]


def plan(key: str, cadence: str) -> catalog_pb2.Plan:
    return catalog_pb2.Plan(
        key=key,
        display_name=key,
        currency="USD",
        billing_cadence=cadence,
        rate_cards=[
            catalog_pb2.RateCard(
                key="platform",
                price=catalog_pb2.Price(type=catalog_pb2.PRICE_TYPE_FLAT, amount="10"),
            )
        ],
    )


def document(cadence: str) -> str:
    return f"""\
_format_version: "3.0"
billing:
  plans:
    - key: pro
      name: Pro
      currency: USD
      billing_cadence: "{cadence}"
      rate_cards:
        - {{key: platform, price: {{type: flat, amount: "10"}}}}
"""


@pytest.mark.parametrize(("cadence", "message"), BAD_CADENCES)
async def test_create_plan_refuses_a_cadence_the_invoicer_cannot_handle(
    harness: Harness, cadence: str, message: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await harness.catalog.CreatePlan(catalog_pb2.CreatePlanRequest(plan=plan("pro", cadence)))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "plan.billing_cadence" in (error.value.details() or "")
    assert message in (error.value.details() or "")
    listed = await harness.catalog.ListPlans(catalog_pb2.ListPlansRequest())
    assert list(listed.plans) == []


@pytest.mark.parametrize(("cadence", "message"), BAD_CADENCES)
async def test_update_plan_refuses_a_bad_cadence_and_keeps_the_draft(
    harness: Harness, cadence: str, message: str
) -> None:
    created = await harness.catalog.CreatePlan(
        catalog_pb2.CreatePlanRequest(plan=plan("pro", "P1M"))
    )
    wanted = catalog_pb2.Plan(name=created.name, billing_cadence=cadence)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await harness.catalog.UpdatePlan(
            catalog_pb2.UpdatePlanRequest(
                plan=wanted, update_mask=field_mask_pb2.FieldMask(paths=["billing_cadence"])
            )
        )
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (error.value.details() or "")
    stored = await harness.catalog.GetPlan(catalog_pb2.GetPlanRequest(name=created.name))
    assert stored.billing_cadence == "P1M"


@pytest.mark.parametrize(("cadence", "message"), BAD_CADENCES)
async def test_yaml_refuses_the_same_cadences_with_the_same_words(
    harness: Harness, cadence: str, message: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await harness.gateway.ApplyConfig(
            gateway_pb2.ApplyConfigRequest(document=document(cadence))
        )
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (error.value.details() or "")
    listed = await harness.catalog.ListPlans(catalog_pb2.ListPlansRequest())
    assert list(listed.plans) == []


@pytest.mark.parametrize("cadence", ["PT1M", "P1D", "P1M", "P10Y", "P3653D"])
async def test_cadences_within_the_limits_are_accepted(harness: Harness, cadence: str) -> None:
    created = await harness.catalog.CreatePlan(
        catalog_pb2.CreatePlanRequest(plan=plan("pro", cadence))
    )
    assert created.billing_cadence == cadence


JOB_DOCUMENT = f"""\
_format_version: "3.0"
billing:
  plans:
    - key: broken
      name: Broken
      currency: USD
      billing_cadence: P1M
      rate_cards:
        - {{key: platform, price: {{type: flat, amount: "10"}}}}
    - key: pro
      name: Pro
      currency: USD
      billing_cadence: P1M
      rate_cards:
        - {{key: platform, price: {{type: flat, amount: "10"}}}}
  customers:
    - {{key: a-first, name: First, subjects: [s-a]}}
    - {{key: b-broken, name: Broken, subjects: [s-b]}}
    - {{key: c-last, name: Last, subjects: [s-c]}}
  subscriptions:
    - {{customer: a-first, plan: pro, start: "{T0.isoformat()}"}}
    - {{customer: b-broken, plan: broken, start: "{T0.isoformat()}"}}
    - {{customer: c-last, plan: pro, start: "{T0.isoformat()}"}}
  notifications:
    channels:
      - key: ops
        url: "https://hooks.example.com/meterline"
        signing_secret: "whsec-0123456789abcdef"
    rules:
      - {{key: invoicing, type: invoice, channel: ops, events: [invoice.job_failed]}}
"""


@pytest.mark.parametrize("stored", ["P0D", "-P1M", "P99999999Y"])
async def test_one_bad_subscription_does_not_stop_the_job_for_later_customers(
    harness: Harness, stored: str
) -> None:
    # Given: three customers; the middle one's plan holds a cadence stored before it was
    # validated (an older version, or a hand-edited row)
    await harness.gateway.ApplyConfig(gateway_pb2.ApplyConfigRequest(document=JOB_DOCUMENT))
    with harness.cp.db.begin() as conn:
        conn.execute(
            update(s.plans).where(s.plans.c.key == "broken").values(billing_cadence=stored)
        )
    harness.clock.set(T0 + timedelta(days=45))

    # When: the invoicing job runs, twice (as it does every minute)
    first = await harness.billing.CloseInvoices(billing_pb2.CloseInvoicesRequest())
    second = await harness.billing.CloseInvoices(billing_pb2.CloseInvoicesRequest())

    # Then: the customers before and after the bad one are invoiced (two months each)
    invoices = await harness.billing.ListInvoices(billing_pb2.ListInvoicesRequest())
    by_customer = sorted((i.customer, i.state) for i in invoices.invoices)
    assert [c for c, _ in by_customer] == ["customers/a-first"] * 2 + ["customers/c-last"] * 2
    assert len(first.created_invoices) == 4 and len(first.drafted_invoices) == 2
    assert list(second.created_invoices) == []
    # And the failure is an alert (once, though the job ran twice), naming customer and cause
    async with grpc.aio.insecure_channel(harness.address) as channel:
        notifications = notifications_pb2_grpc.NotificationServiceStub(channel)
        events = await notifications.ListEvents(notifications_pb2.ListEventsRequest())
    failed = [e for e in events.events if e.type == "invoice.job_failed"]
    assert len(failed) == 1
    data = json.loads(failed[0].payload)["data"]
    assert data["customer"] == "b-broken"
    assert stored in data["reason"]
