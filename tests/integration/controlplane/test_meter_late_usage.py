"""Operator-meter usage that arrives after its period's invoice was issued: billed once, on the
next invoice, as its own line priced by the difference it makes to its own period."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest

from controlplane.api.convert import to_timestamp
from meterline.admin.v1 import billing_pb2, catalog_pb2, customers_pb2, usage_pb2

from .conftest import T0, Harness
from .test_invoice_lifecycle import DEC_END, NOV_END, close, invoices, state

JAN_END = datetime(2027, 2, 1, 12, 0, tzinfo=T0.tzinfo)


def event(id: str, *, at: datetime, type: str = "api.request", **data: object) -> str:
    return json.dumps(
        {
            "id": id,
            "source": "billing-app",
            "type": type,
            "subject": "acme",
            "time": at.isoformat().replace("+00:00", "Z"),
            "data": data,
        }
    )


def lines(invoice: billing_pb2.Invoice) -> list[tuple[str, ...]]:
    return [
        (x.rate_card, x.description, x.quantity, x.amount, str(x.late_usage)) for x in invoice.lines
    ]


async def ingest(harness: Harness, *events: str) -> usage_pb2.IngestEventsResponse:
    return await harness.usage.IngestEvents(usage_pb2.IngestEventsRequest(events_json=events))


async def preview(harness: Harness) -> billing_pb2.Invoice:
    return await harness.billing.PreviewInvoice(
        billing_pb2.PreviewInvoiceRequest(customer="customers/acme")
    )


async def issue(harness: Harness, at: datetime) -> billing_pb2.Invoice:
    """Close the period ending before ``at`` and issue its draft; returns the issued invoice."""
    await close(harness, at)
    (draft,) = [i for i in await invoices(harness) if state(i) == "DRAFT"]
    return await harness.billing.IssueInvoice(billing_pb2.IssueInvoiceRequest(name=draft.name))


async def subscribe(
    harness: Harness,
    meter: usage_pb2.UsageMeter,
    rate_card: catalog_pb2.RateCard,
    filters: dict[str, str] | None = None,
) -> str:
    """Create the meter, a feature "calls" on it, a plan with the rate card; subscribe acme."""
    await harness.usage.CreateMeter(usage_pb2.CreateMeterRequest(meter=meter))
    await harness.catalog.CreateFeature(
        catalog_pb2.CreateFeatureRequest(
            feature=catalog_pb2.Feature(key="calls", meter=meter.key, filters=filters or {})
        )
    )
    plan = await harness.catalog.CreatePlan(
        catalog_pb2.CreatePlanRequest(
            plan=catalog_pb2.Plan(
                key="metered", currency="USD", billing_cadence="P1M", rate_cards=[rate_card]
            )
        )
    )
    await harness.catalog.PublishPlan(catalog_pb2.PublishPlanRequest(name=plan.name))
    await harness.customers.CreateCustomer(
        customers_pb2.CreateCustomerRequest(
            customer=customers_pb2.Customer(key="acme", subjects=["acme"])
        )
    )
    created = await harness.customers.CreateSubscription(
        customers_pb2.CreateSubscriptionRequest(
            subscription=customers_pb2.Subscription(customer="customers/acme", plan="plans/metered")
        )
    )
    return created.name


async def test_late_sum_usage_is_billed_once_on_the_next_invoice_through_its_periods_tiers(
    harness: Harness,
) -> None:
    # Given a SUM meter by region, a feature on eu, graduated tiers (10 units at 1.00, then
    # 0.25) after 2 free units a period
    tier = catalog_pb2.PriceTier
    await subscribe(
        harness,
        usage_pb2.UsageMeter(
            key="api_calls",
            event_type="api.request",
            aggregation=usage_pb2.USAGE_METER_AGGREGATION_SUM,
            value_property="$.units",
            group_by={"region": "$.region"},
        ),
        catalog_pb2.RateCard(
            key="calls",
            feature="calls",
            price=catalog_pb2.Price(
                type=catalog_pb2.PRICE_TYPE_TIERED,
                tier_mode=catalog_pb2.TIER_MODE_GRADUATED,
                tiers=[tier(up_to="10", unit_price="1.00"), tier(unit_price="0.25")],
            ),
            discounts=catalog_pb2.Discounts(usage="2"),
        ),
        filters={"region": "eu"},
    )
    nov = T0 + timedelta(days=2)
    await ingest(
        harness,
        event("n1", at=nov, units=3, region="eu"),
        event("n2", at=nov + timedelta(hours=5), units="4.5", region="eu"),
        event("n3", at=nov, units=10, region="us"),
    )
    # When November (7.5 eu units: 5.5 after the free 2, at 1.00) is issued
    november = await issue(harness, NOV_END + timedelta(hours=1))
    assert [(x[0], x[2], x[3], x[4]) for x in lines(november)] == [
        ("calls", "7.5", "5.50", "False")
    ]
    assert november.total == "5.50"

    # And November events arrive after that, with a December one; one (us) the feature ignores
    late = [
        event("n4", at=nov + timedelta(days=10), units=6, region="eu"),
        event("n5", at=nov + timedelta(days=20, minutes=7), units="0.25", region="eu"),
        event("n6", at=nov + timedelta(days=20), units=50, region="us"),
    ]
    harness.clock.set(NOV_END + timedelta(days=2))
    assert (await ingest(harness, *late)).accepted == 3
    await ingest(harness, event("d1", at=NOV_END + timedelta(days=3), units=4, region="eu"))

    # Then December's preview carries them as a late line: November becomes 13.75 units,
    # 11.75 after the free ones = 10 x 1.00 + 1.75 x 0.25 = 10.4375, less the 5.50 billed:
    # 4.9375 -> 4.94 (the late line is rounded once, half-up); December's own 4 units: 2.00
    harness.clock.set(NOV_END + timedelta(days=4))
    shown = await preview(harness)
    assert [(x[0], x[2], x[3], x[4]) for x in lines(shown)] == [
        ("calls", "4", "2.00", "False"),
        ("calls", "6.25", "4.94", "True"),
    ]
    assert "late usage for 2026-11-01T12:00Z..2026-12-01T12:00Z" in lines(shown)[1][1]
    assert shown.total == "6.94"

    # And re-ingesting the same late events (same source and id) changes nothing
    again = await ingest(harness, *late)
    assert (again.accepted, again.duplicates) == (0, 3)
    assert lines(await preview(harness)) == lines(shown)

    # When December is issued, it is exactly the preview
    december = await issue(harness, DEC_END + timedelta(hours=1))
    assert lines(december) == lines(shown) and december.total == "6.94"

    # Then nothing is billed twice: the late events, re-sent, give January no late line, and
    # the issued invoices did not change
    await ingest(harness, *late)
    harness.clock.set(DEC_END + timedelta(days=1))
    assert [(x[0], x[2], x[3], x[4]) for x in lines(await preview(harness))] == [
        ("calls", "0", "0.00", "False")
    ]
    stored = {i.name: i for i in await invoices(harness)}
    assert stored[november.name].total == "5.50" and lines(stored[november.name]) == lines(november)
    assert lines(stored[december.name]) == lines(december)

    # And a late event for November after December's issue lands on January (one unit in the
    # second tier: 0.25), November's period priced with everything billed before it
    await ingest(harness, event("n7", at=nov + timedelta(days=1), units=1, region="eu"))
    january = await issue(harness, JAN_END + timedelta(hours=1))
    assert [(x[0], x[2], x[3], x[4]) for x in lines(january)] == [
        ("calls", "0", "0.00", "False"),
        ("calls", "1", "0.25", "True"),
    ]


@pytest.mark.parametrize(
    ("aggregation", "late", "quantity", "amount"),
    [
        # The period's MAX was 5 seats; late readings of 4 and 8 raise it to 8: 3 x 10.00.
        pytest.param(usage_pb2.USAGE_METER_AGGREGATION_MAX, [4, 8], "3", "30.00", id="max"),
        # The period's LATEST was 5 (at +6 min); a late reading at +4 min is older (no change),
        # one at +10 min is newer and lowers it to 2: a credit of 3 x 10.00.
        pytest.param(usage_pb2.USAGE_METER_AGGREGATION_LATEST, [9, 2], "-3", "-30.00", id="latest"),
        # 2 distinct seats billed; late "b" is known, "c" is new: 1 x 10.00.
        pytest.param(
            usage_pb2.USAGE_METER_AGGREGATION_UNIQUE_COUNT, ["b", "c"], "1", "10.00", id="unique"
        ),
    ],
)
async def test_late_usage_of_non_additive_meters_is_the_change_to_the_periods_quantity(
    harness: Harness, aggregation: int, late: list[object], quantity: str, amount: str
) -> None:
    # Given a seats meter at 10.00 a unit
    await subscribe(
        harness,
        usage_pb2.UsageMeter(
            key="seats", event_type="seats", aggregation=aggregation, value_property="$.seats"
        ),
        catalog_pb2.RateCard(
            key="calls",
            feature="calls",
            price=catalog_pb2.Price(type=catalog_pb2.PRICE_TYPE_UNIT, amount="10"),
        ),
    )
    unique = aggregation == usage_pb2.USAGE_METER_AGGREGATION_UNIQUE_COUNT
    first = ["a", "b"] if unique else [3, 5]
    nov = T0 + timedelta(days=2)
    await ingest(
        harness,
        *(
            event(f"n{i}", at=nov + timedelta(minutes=5 + i), type="seats", seats=v)
            for i, v in enumerate(first)
        ),
    )
    november = await issue(harness, NOV_END + timedelta(hours=1))
    assert november.total == ("20.00" if unique else "50.00")

    # When readings for November arrive after its issue (at +4 min and +10 min)
    await ingest(
        harness,
        *(
            event(f"l{i}", at=nov + timedelta(minutes=minutes), type="seats", seats=v)
            for i, (minutes, v) in enumerate(zip((4, 10), late, strict=True))
        ),
    )

    # Then December bills exactly the change they make to November, once
    harness.clock.set(NOV_END + timedelta(days=1))
    shown = await preview(harness)
    assert [(x[2], x[3], x[4]) for x in lines(shown)] == [
        ("0", "0.00", "False"),  # December's own usage
        (quantity, amount, "True"),
    ]
    december = await issue(harness, DEC_END + timedelta(hours=1))
    assert lines(december) == lines(shown) and december.total == amount
    harness.clock.set(DEC_END + timedelta(days=1))
    assert [(x[2], x[3], x[4]) for x in lines(await preview(harness))] == [("0", "0.00", "False")]


async def test_late_usage_of_an_ended_subscription_gets_its_own_draft_once(
    harness: Harness,
) -> None:
    # Given a COUNT meter at 0.50 an event, on a subscription cancelled on 15 Nov, invoiced
    name = await subscribe(
        harness,
        usage_pb2.UsageMeter(
            key="requests",
            event_type="api.request",
            aggregation=usage_pb2.USAGE_METER_AGGREGATION_COUNT,
        ),
        catalog_pb2.RateCard(
            key="calls",
            feature="calls",
            price=catalog_pb2.Price(type=catalog_pb2.PRICE_TYPE_UNIT, amount="0.5"),
        ),
    )
    await ingest(harness, *(event(f"r{i}", at=T0 + timedelta(days=i)) for i in range(3)))
    await harness.customers.CancelSubscription(
        customers_pb2.CancelSubscriptionRequest(
            name=name, end_time=to_timestamp(T0 + timedelta(days=14))
        )
    )
    final = await issue(harness, T0 + timedelta(days=14, hours=1))
    assert [(x[2], x[3], x[4]) for x in lines(final)] == [("3", "1.50", "False")]

    # When two events from before the cancellation (and one after it) arrive much later
    late = [
        event("r10", at=T0 + timedelta(days=10)),
        event("r11", at=T0 + timedelta(days=11)),
        event("r20", at=T0 + timedelta(days=20)),
    ]
    await ingest(harness, *late)
    closed = await close(harness, DEC_END + timedelta(days=41))

    # Then a draft carries the two as late usage (2 x 0.50), and nothing more comes of them
    assert len(closed.created_invoices) == 1 and closed.drafted_invoices == closed.created_invoices
    carried = await harness.billing.IssueInvoice(
        billing_pb2.IssueInvoiceRequest(name=closed.created_invoices[0])
    )
    assert [(x[2], x[3], x[4]) for x in lines(carried)] == [("2", "1.00", "True")]
    await ingest(harness, *late)
    closed = await close(harness, DEC_END + timedelta(days=42))
    assert not closed.created_invoices and len(await invoices(harness)) == 2
