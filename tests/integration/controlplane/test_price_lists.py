"""Per-model price lists and model_list rate cards, through the YAML, the admin API and the
CLI, invoiced to the cent on SQLite and PostgreSQL, with a price change mid-period."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from controlplane.api.convert import to_timestamp
from controlplane.cli.main import main
from controlplane.usage import storage as usage_storage
from controlplane.usage.types import TokenType, UsageEvent
from meterline.admin.v1 import billing_pb2, catalog_pb2, gateway_pb2

from .conftest import T0, Harness

NOV_15 = datetime(2026, 11, 15, 12, 0, tzinfo=UTC)
NOV_END = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
_ids = itertools.count()

LIST = """\
    - key: openai-list
      currency: USD
      prices:
        - {model: gpt-4o, input: "0.0000025", output: "0.00001", cached_input: "0.00000125",
           reasoning: "0.00001", effective_from: "2026-01-01T00:00:00Z"}
        - {model: gpt-4o-mini, input: "0.00000015", output: "0.0000006",
           effective_from: "2026-01-01T00:00:00Z"}
"""
# From 15 Nov 12:00 gpt-4o input costs 0.000002 instead of 0.0000025.
CHANGE = """\
        - {model: gpt-4o, input: "0.000002", output: "0.00001", cached_input: "0.00000125",
           reasoning: "0.00001", effective_from: "2026-11-15T12:00:00Z"}
"""


def document(price_list: str = LIST) -> str:
    return f"""\
_format_version: "3.0"
billing:
  features:
    - {{key: openai-tokens, name: OpenAI tokens, meter: llm_tokens, filters: {{provider: openai}}}}
  price_lists:
{price_list}
  plans:
    - key: resale
      name: Resale
      currency: USD
      billing_cadence: P1M
      rate_cards:
        - feature: openai-tokens
          price: {{type: model_list, price_list: openai-list, markup_percent: "20"}}
  customers:
    - {{key: acme, name: Acme, subjects: [acme-corp]}}
  subscriptions:
    - {{customer: acme, plan: resale, start: "2026-11-01T12:00:00Z"}}
"""


def record(harness: Harness, *, model: str, kind: TokenType, tokens: int, at: datetime) -> None:
    event = UsageEvent(
        id=f"m-{next(_ids)}",
        source="test",
        type="llm.tokens",
        subject="acme-corp",
        time=at,
        provider="openai",
        model=model,
        token_type=kind,
        tokens=tokens,
        status_code=200,
    )
    with harness.cp.db.begin() as conn:
        usage_storage.insert_events(conn, [event], ingest_time=at)


async def apply(harness: Harness, text: str) -> list[str]:
    response = await harness.gateway.ApplyConfig(gateway_pb2.ApplyConfigRequest(document=text))
    return list(response.changes)


def lines(invoice: billing_pb2.Invoice) -> list[tuple[str, str, str, str, str]]:
    return [(x.model, x.token_type, x.quantity, x.unit_price, x.amount) for x in invoice.lines]


async def test_a_month_at_list_prices_plus_markup_with_a_price_change(
    harness: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given the YAML: OpenAI list prices, a plan billing them +20%, acme subscribed
    changes = await apply(harness, document())
    assert "created price list openai-list" in changes
    hour = timedelta(hours=1)
    record(harness, model="gpt-4o", kind=TokenType.INPUT, tokens=1_000_000, at=T0 + hour)
    record(harness, model="gpt-4o", kind=TokenType.OUTPUT, tokens=200_000, at=T0 + hour)
    record(harness, model="gpt-4o-mini", kind=TokenType.INPUT, tokens=2_000_000, at=T0 + hour)
    record(harness, model="o9-preview", kind=TokenType.INPUT, tokens=1000, at=T0 + hour)

    # When, on 5 Nov, a cheaper gpt-4o input price is added from 15 Nov 12:00
    harness.clock.set(T0 + timedelta(days=4))
    assert await apply(harness, document(LIST + CHANGE)) == ["updated price list openai-list"]
    assert await apply(harness, document(LIST + CHANGE)) == []
    # (500k input tokens after the change, one exactly at it: the new price applies)
    record(harness, model="gpt-4o", kind=TokenType.INPUT, tokens=499_000, at=NOV_15 + 5 * hour)
    record(harness, model="gpt-4o", kind=TokenType.INPUT, tokens=1000, at=NOV_15)

    # Then the preview has a line per model, token type and price period:
    # 1M x 0.0000025 x 1.2 = 3.00; 500k x 0.000002 x 1.2 = 1.20; 200k x 0.00001 x 1.2 = 2.40;
    # mini 2M x 0.00000015 x 1.2 = 0.36; o9-preview has no list price: a visible 0.00 line
    harness.clock.set(datetime(2026, 11, 25, tzinfo=UTC))
    preview = await harness.billing.PreviewInvoice(
        billing_pb2.PreviewInvoiceRequest(customer="customers/acme")
    )
    expected = [
        ("gpt-4o", "input", "1000000", "0.0000030", "3.00"),
        ("gpt-4o", "input", "500000", "0.0000024", "1.20"),
        ("gpt-4o", "output", "200000", "0.000012", "2.40"),
        ("gpt-4o-mini", "input", "2000000", "0.00000018", "0.36"),
        ("o9-preview", "input", "1000", "", "0.00"),
    ]
    assert lines(preview) == expected
    assert preview.total == "6.96"
    assert "list price from 2026-11-15T12:00:00Z" in preview.lines[1].description
    assert "no price in list openai-list" in preview.lines[4].description
    assert preview.lines[0].price_type == catalog_pb2.PRICE_TYPE_MODEL_LIST

    # And the issued invoice is exactly the preview
    harness.clock.set(NOV_END + 2 * hour)
    await harness.billing.CloseInvoices(billing_pb2.CloseInvoicesRequest())
    listed = await harness.billing.ListInvoices(billing_pb2.ListInvoicesRequest())
    issued = await harness.billing.IssueInvoice(
        billing_pb2.IssueInvoiceRequest(name=listed.invoices[0].name)
    )
    assert lines(issued) == expected and issued.total == "6.96"

    # And a late gpt-4o output event of November becomes one late line on December's invoice
    record(harness, model="gpt-4o", kind=TokenType.OUTPUT, tokens=100_000, at=NOV_15)
    harness.clock.set(datetime(2027, 1, 1, 14, tzinfo=UTC))
    await harness.billing.CloseInvoices(billing_pb2.CloseInvoicesRequest())
    listed = await harness.billing.ListInvoices(billing_pb2.ListInvoicesRequest())
    december = listed.invoices[1]
    assert [(x.quantity, x.amount, x.late_usage) for x in december.lines] == [
        ("100000", "1.20", True)
    ]

    # The CLI shows the invoice's model lines and the price list
    code = await asyncio.to_thread(
        main, ["invoice", "show", listed.invoices[0].id, "--cp", harness.address]
    )
    out, _ = capsys.readouterr()
    assert code == 0
    rows = [row.split() for row in out.splitlines()]
    assert ["openai-tokens", "gpt-4o", "input", "usage", "500000", "0.0000024", "1.20"] in rows
    assert ["openai-tokens", "o9-preview", "input", "usage", "1000", "0.00"] in rows
    code = await asyncio.to_thread(
        main, ["price-lists", "show", "openai-list", "--cp", harness.address]
    )
    out, _ = capsys.readouterr()
    assert code == 0
    assert out.splitlines()[0] == "openai-list  USD  3 prices"
    assert "gpt-4o" in out and "from 2026-11-15T12:00:00Z  input=0.000002" in out


async def expect(call, code: grpc.StatusCode, needle: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == code, info.value.details()
    assert needle in (info.value.details() or ""), info.value.details()


def model_price(model: str, at: datetime, **prices: str) -> catalog_pb2.ModelPrice:
    message = catalog_pb2.ModelPrice(model=model, **prices)
    message.effective_from_time.CopyFrom(to_timestamp(at))
    return message


async def test_price_lists_over_the_admin_api_and_their_bad_inputs(harness: Harness) -> None:
    jan = datetime(2026, 1, 1, tzinfo=UTC)
    created = await harness.catalog.CreatePriceList(
        catalog_pb2.CreatePriceListRequest(
            price_list=catalog_pb2.PriceList(
                key="anthropic-list",
                currency="USD",
                prices=[model_price("claude-sonnet", jan, input="0.000003", output="0.000015")],
            )
        )
    )
    assert created.name == "priceLists/anthropic-list"
    assert (created.prices[0].input, created.prices[0].reasoning) == ("0.000003", "")
    INVALID, FAILED = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION

    def create(**fields):  # type: ignore[no-untyped-def]
        fields.setdefault("key", "bad")
        fields.setdefault("currency", "USD")
        fields.setdefault("prices", [model_price("m", jan, input="0.1")])
        return harness.catalog.CreatePriceList(
            catalog_pb2.CreatePriceListRequest(price_list=catalog_pb2.PriceList(**fields))
        )

    await expect(
        create(prices=[model_price("m", jan, input="-0.1")]), INVALID, "must not be negative"
    )
    await expect(create(currency="XYZ"), INVALID, "unknown currency 'XYZ'")
    await expect(create(prices=[model_price("m", jan)]), INVALID, "needs at least one of input")
    await expect(
        create(prices=[model_price("m", jan, input="1"), model_price("m", jan, input="2")]),
        INVALID,
        "one entry per model and effective_from",
    )
    await expect(create(key="anthropic-list"), grpc.StatusCode.ALREADY_EXISTS, "already exists")
    # a price that took effect (or would, in the past) never changes: usage keeps its price
    add = catalog_pb2.AddModelPricesRequest(
        name="priceLists/anthropic-list", prices=[model_price("claude-sonnet", T0, input="0.1")]
    )
    await expect(harness.catalog.AddModelPrices(add), FAILED, "cannot take effect in the past")

    # rate cards: the list must exist, be in the plan's currency; no amount, no free units
    await harness.catalog.CreateFeature(
        catalog_pb2.CreateFeatureRequest(feature=catalog_pb2.Feature(key="tok", meter="llm_tokens"))
    )

    def plan(currency: str = "USD", **price: object) -> catalog_pb2.CreatePlanRequest:
        fields = {"type": catalog_pb2.PRICE_TYPE_MODEL_LIST, "price_list": "anthropic-list"}
        fields.update(price)
        return catalog_pb2.CreatePlanRequest(
            plan=catalog_pb2.Plan(
                key="resale",
                currency=currency,
                billing_cadence="P1M",
                rate_cards=[catalog_pb2.RateCard(feature="tok", price=catalog_pb2.Price(**fields))],
            )
        )

    await expect(
        harness.catalog.CreatePlan(plan(price_list="nope")), INVALID, "'nope' does not exist"
    )
    await expect(harness.catalog.CreatePlan(plan("EUR")), INVALID, "is in USD, the plan in EUR")
    await expect(harness.catalog.CreatePlan(plan(amount="1")), INVALID, "price.amount is not used")
    await expect(harness.catalog.CreatePlan(plan(price_list="")), INVALID, "price_list is required")
    await expect(
        harness.catalog.CreatePlan(plan(markup_percent="-5")), INVALID, "must not be negative"
    )
    # nothing of the above was stored
    lists = await harness.catalog.ListPriceLists(catalog_pb2.ListPriceListsRequest())
    assert [p.key for p in lists.price_lists] == ["anthropic-list"]
    assert len(lists.price_lists[0].prices) == 1
    assert list((await harness.catalog.ListPlans(catalog_pb2.ListPlansRequest())).plans) == []

    # a later price is added
    later = T0 + timedelta(days=3)
    add = catalog_pb2.AddModelPricesRequest(
        name="priceLists/anthropic-list",
        prices=[model_price("claude-sonnet", later, input="0.000002")],
    )
    updated = await harness.catalog.AddModelPrices(add)
    assert [p.input for p in updated.prices] == ["0.000003", "0.000002"]
    good = await harness.catalog.CreatePlan(plan(markup_percent="15"))
    assert good.rate_cards[0].price.markup_percent == "15"
    assert good.rate_cards[0].price.price_list == "anthropic-list"


async def test_bad_price_lists_in_yaml_change_nothing(harness: Harness) -> None:
    await apply(harness, document())
    harness.clock.set(T0 + timedelta(days=1))
    # changing a price that is in effect is refused, all or nothing
    changed = document(LIST.replace('input: "0.0000025"', 'input: "0.000003"'))
    await expect(
        harness.gateway.ApplyConfig(gateway_pb2.ApplyConfigRequest(document=changed)),
        grpc.StatusCode.FAILED_PRECONDITION,
        "is in effect; it cannot change or go",
    )
    negative = document(LIST.replace('output: "0.0000006"', 'output: "-0.0000006"'))
    await expect(
        harness.gateway.ApplyConfig(gateway_pb2.ApplyConfigRequest(document=negative)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "output",
    )
    stored = await harness.catalog.GetPriceList(
        catalog_pb2.GetPriceListRequest(name="priceLists/openai-list")
    )
    assert [p.input for p in stored.prices] == ["0.0000025", "0.00000015"]
