"""Price types through the admin API on SQLite and PostgreSQL: plans in, invoice lines out."""

from __future__ import annotations

from datetime import timedelta

import grpc
import pytest

from controlplane.api.convert import to_timestamp
from controlplane.usage import storage as usage_storage
from controlplane.usage.types import TokenType, UsageEvent
from meterline.admin.v1 import billing_pb2, catalog_pb2, customers_pb2, gateway_pb2

from .conftest import T0, Harness

FEATURES = {"tokens-in": "input", "tokens-out": "output", "cached": "cached_input"}


def pro_plan() -> catalog_pb2.Plan:
    tier = catalog_pb2.PriceTier
    return catalog_pb2.Plan(
        key="pro",
        currency="USD",
        billing_cadence="P1M",
        rate_cards=[
            catalog_pb2.RateCard(
                key="platform",
                price=catalog_pb2.Price(type=catalog_pb2.PRICE_TYPE_FLAT, amount="49"),
            ),
            catalog_pb2.RateCard(
                feature="tokens-in",
                price=catalog_pb2.Price(
                    type=catalog_pb2.PRICE_TYPE_TIERED,
                    tier_mode=catalog_pb2.TIER_MODE_GRADUATED,
                    tiers=[tier(up_to="1000", unit_price="0.01"), tier(unit_price="0.005")],
                ),
                discounts=catalog_pb2.Discounts(usage="100"),
                commitments=catalog_pb2.Commitments(minimum_amount="5", maximum_amount="500"),
            ),
            catalog_pb2.RateCard(
                feature="tokens-out",
                price=catalog_pb2.Price(
                    type=catalog_pb2.PRICE_TYPE_PACKAGE, amount="2", quantity_per_package="1000"
                ),
            ),
            catalog_pb2.RateCard(
                feature="cached",
                price=catalog_pb2.Price(
                    type=catalog_pb2.PRICE_TYPE_TIERED,
                    tier_mode=catalog_pb2.TIER_MODE_VOLUME,
                    tiers=[
                        tier(up_to="1000", unit_price="0.002", flat_price="1"),
                        tier(unit_price="0.001", flat_price="1"),
                    ],
                ),
                discounts=catalog_pb2.Discounts(percentage="10"),
            ),
        ],
    )


async def setup_pro(harness: Harness) -> None:
    for key, token_type in FEATURES.items():
        await harness.catalog.CreateFeature(
            catalog_pb2.CreateFeatureRequest(
                feature=catalog_pb2.Feature(
                    key=key, meter="llm_tokens", filters={"type": token_type}
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
    await harness.customers.CreateSubscription(
        customers_pb2.CreateSubscriptionRequest(
            subscription=customers_pb2.Subscription(customer="customers/acme", plan="plans/pro")
        )
    )


def record(harness: Harness, tokens: dict[TokenType, int]) -> None:
    events = [
        UsageEvent(
            id=f"e-{token_type.value}",
            source="test",
            type="llm.tokens",
            subject="acme-corp",
            time=T0 + timedelta(hours=1),
            provider="openai",
            model="gpt-4o",
            token_type=token_type,
            tokens=count,
            status_code=200,
        )
        for token_type, count in tokens.items()
    ]
    with harness.cp.db.begin() as conn:
        usage_storage.insert_events(conn, events, ingest_time=T0 + timedelta(hours=1))


async def preview(harness: Harness) -> billing_pb2.Invoice:
    return await harness.billing.PreviewInvoice(
        billing_pb2.PreviewInvoiceRequest(
            customer="customers/acme", as_of_time=to_timestamp(T0 + timedelta(days=2))
        )
    )


def summary(invoice: billing_pb2.Invoice) -> list[tuple[str, str, str, str]]:
    return [
        (
            line.rate_card,
            billing_pb2.InvoiceLineType.Name(line.type).removeprefix("INVOICE_LINE_TYPE_"),
            line.quantity,
            line.amount,
        )
        for line in invoice.lines
    ]


async def test_every_price_type_previews_to_the_cent(harness: Harness) -> None:
    # Given the pro plan and a day of usage
    await setup_pro(harness)
    record(harness, {TokenType.INPUT: 1600, TokenType.OUTPUT: 2500, TokenType.CACHED_INPUT: 1500})

    # When the invoice is previewed
    invoice = await preview(harness)

    # Then each rate card explains itself and the total is the sum of the rounded lines
    assert summary(invoice) == [
        ("platform", "FLAT", "1", "49.00"),
        ("tokens-in", "USAGE", "1600", "12.50"),
        ("tokens-out", "USAGE", "2500", "6.00"),
        ("cached", "USAGE", "1500", "2.50"),
        ("cached", "DISCOUNT", "1", "-0.25"),
    ]
    assert invoice.total == "69.75"
    platform, tokens_in, tokens_out, cached, _ = invoice.lines
    assert platform.payment_term == catalog_pb2.PAYMENT_TERM_IN_ADVANCE
    assert platform.feature == ""
    assert tokens_in.free_quantity == "100"
    assert tokens_in.price_type == catalog_pb2.PRICE_TYPE_TIERED
    assert [(t.tier, t.up_to, t.quantity, t.amount) for t in tokens_in.tiers] == [
        (1, "1000", "1000", "10.00"),
        (2, "", "500", "2.500"),
    ]
    assert not tokens_in.tiers[1].HasField("up_to")
    assert (tokens_out.packages, tokens_out.unit_price) == ("3", "2")
    assert [(t.tier, t.quantity, t.flat_price) for t in cached.tiers] == [(2, "1500", "1")]


async def test_no_usage_tops_up_the_minimum_and_charges_first_tier_flat(harness: Harness) -> None:
    await setup_pro(harness)

    invoice = await preview(harness)

    assert summary(invoice) == [
        ("platform", "FLAT", "1", "49.00"),
        ("tokens-in", "USAGE", "0", "0.00"),
        ("tokens-in", "MINIMUM_COMMITMENT", "1", "5.00"),
        ("tokens-out", "USAGE", "0", "0.00"),
        ("cached", "USAGE", "0", "1.00"),
        ("cached", "DISCOUNT", "1", "-0.10"),
    ]
    assert invoice.total == "54.90"


async def test_prices_round_trip_through_the_api(harness: Harness) -> None:
    await setup_pro(harness)

    plan = await harness.catalog.GetPlan(catalog_pb2.GetPlanRequest(name="plans/pro"))

    sent = pro_plan()
    for got, want in zip(plan.rate_cards, sent.rate_cards, strict=True):
        assert got.price.type == want.price.type
        assert [t.up_to for t in got.price.tiers] == [t.up_to for t in want.price.tiers]
        assert [t.unit_price for t in got.price.tiers] == [t.unit_price for t in want.price.tiers]
        assert got.discounts == want.discounts
        assert got.commitments == want.commitments
    assert plan.rate_cards[0].price.payment_term == catalog_pb2.PAYMENT_TERM_IN_ADVANCE
    assert plan.rate_cards[0].feature == ""


def _bad(mutate) -> catalog_pb2.Plan:  # type: ignore[no-untyped-def]
    plan = pro_plan()
    mutate(plan)
    return plan


@pytest.mark.parametrize(
    ("plan", "needle"),
    [
        pytest.param(
            _bad(lambda p: setattr(p.rate_cards[0].price, "amount", "-1")),
            "plan.rate_cards[0] (platform): price.amount must not be negative",
            id="negative-price",
        ),
        pytest.param(
            _bad(lambda p: setattr(p.rate_cards[1].price.tiers[1], "up_to", "5000")),
            "plan.rate_cards[1] (tokens-in): price.tiers[1].up_to must be left out",
            id="last-tier-with-up-to",
        ),
        pytest.param(
            _bad(lambda p: p.rate_cards[1].price.tiers.insert(
                0, catalog_pb2.PriceTier(up_to="2000", unit_price="1")
            )),
            "price.tiers[1].up_to must be greater than the previous tier's 2000",
            id="tiers-out-of-order",
        ),
        pytest.param(
            _bad(lambda p: setattr(p.rate_cards[0].price, "type", catalog_pb2.PRICE_TYPE_UNIT)),
            'plan.rate_cards[0] (platform): a "unit" price needs a feature',
            id="usage-price-without-feature",
        ),
        pytest.param(
            _bad(lambda p: setattr(p, "currency", "XYZ")),
            "unknown currency 'XYZ'",
            id="unknown-currency",
        ),
        pytest.param(
            _bad(lambda p: setattr(p.rate_cards[2].price, "quantity_per_package", "")),
            "plan.rate_cards[2] (tokens-out): price.quantity_per_package is required",
            id="package-size-missing",
        ),
        pytest.param(
            _bad(lambda p: setattr(p.rate_cards[3].price, "tier_mode", 7)),
            "plan.rate_cards[3] (cached): price.tier_mode must be one of TIER_MODE_GRADUATED",
            id="unknown-tier-mode",
        ),
    ],
)  # fmt: skip
async def test_bad_plans_are_refused_and_nothing_is_stored(
    harness: Harness, plan: catalog_pb2.Plan, needle: str
) -> None:
    for key, token_type in FEATURES.items():
        await harness.catalog.CreateFeature(
            catalog_pb2.CreateFeatureRequest(
                feature=catalog_pb2.Feature(
                    key=key, meter="llm_tokens", filters={"type": token_type}
                )
            )
        )
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await harness.catalog.CreatePlan(catalog_pb2.CreatePlanRequest(plan=plan))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert needle in raised.value.details()
    listed = await harness.catalog.ListPlans(catalog_pb2.ListPlansRequest())
    assert list(listed.plans) == []


DOCUMENT = """\
_format_version: "3.0"
billing:
  features:
    - {key: calls, meter: llm_tokens, filters: {type: input}}
    - {key: tokens-out, meter: llm_tokens, filters: {type: output}}
  plans:
    - key: pro
      name: Pro
      currency: USD
      billing_cadence: P1M
      rate_cards:
        - {key: platform, price: {type: flat, amount: "49", payment_term: in_arrears}}
        - feature: calls
          price:
            type: tiered
            mode: graduated
            tiers:
              - {up_to: "1000", unit_price: "0.01", flat_price: "0"}
              - {unit_price: "0.005"}
          discounts: {usage: "100"}
          commitments: {minimum_amount: "5", maximum_amount: "500"}
        - {feature: tokens-out, price: {type: package, amount: "2", quantity_per_package: "1000"}}
  customers:
    - {key: acme, name: Acme, subjects: [acme-corp]}
  subscriptions:
    - {customer: acme, plan: pro, start: now}
"""


async def test_the_issue_yaml_applies_and_previews(harness: Harness) -> None:
    await harness.gateway.ApplyConfig(gateway_pb2.ApplyConfigRequest(document=DOCUMENT))
    record(harness, {TokenType.INPUT: 250_100, TokenType.OUTPUT: 1000})

    invoice = await preview(harness)

    # 250,000 billable calls: 1000 x 0.01 + 249,000 x 0.005 = 1255.00, capped at 500.
    assert summary(invoice) == [
        ("platform", "FLAT", "1", "49.00"),
        ("calls", "USAGE", "250100", "1255.00"),
        ("calls", "MAXIMUM_COMMITMENT", "1", "-755.00"),
        ("tokens-out", "USAGE", "1000", "2.00"),
    ]
    assert invoice.total == "551.00"
    assert invoice.lines[0].payment_term == catalog_pb2.PAYMENT_TERM_IN_ARREARS
    # Applying the same document again changes nothing.
    again = await harness.gateway.ApplyConfig(gateway_pb2.ApplyConfigRequest(document=DOCUMENT))
    assert list(again.changes) == []
