"""The catalog's console forms and the credit-alert form, in process (httpx's ASGI transport).

Each form is checked on the server through the gRPC API after it posts: what it made, that a
bad form changed nothing and says why beside the form, that a read token and a POST without
the CSRF token are refused. The browser walk is tests/e2e/test_console_forms.py.
"""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from datetime import UTC, timedelta

import grpc
import httpx
import pytest

from controlplane.api.auth import Scope, TokenEntry, hash_token
from controlplane.console.app import Console
from meterline.admin.v1 import (
    catalog_pb2,
    credits_pb2,
    credits_pb2_grpc,
    gateway_pb2,
    notifications_pb2,
    notifications_pb2_grpc,
)

ADMIN = "mlt_admin-token-for-catalog-tests"
READ = "mlt_read-token-for-catalog-tests"
TOKENS = [
    TokenEntry(name="ops", scope=Scope.ADMIN, hash=hash_token(ADMIN)),
    TokenEntry(name="viewer", scope=Scope.READ, hash=hash_token(READ)),
]
JSON = {"Accept": "application/json"}


class Client:
    """A signed-in browser-like client: cookie session and the page's CSRF token."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self.csrf = ""

    async def sign_in(self, token: str) -> None:
        form = await self.http.get("/signin")
        nonce = re.search(r'name="nonce" value="([^"]+)"', form.text)
        assert nonce
        signed = await self.http.post("/signin", data={"nonce": nonce.group(1), "token": token})
        assert signed.status_code == 303
        page = await self.http.get("/catalog")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf
        self.csrf = csrf.group(1)

    async def post(self, path: str, **form: str) -> httpx.Response:
        return await self.http.post(path, data={"csrf": self.csrf, **form})


@pytest.fixture
async def console(harness) -> AsyncIterator[tuple[Client, Client]]:
    app = Console(
        servicers=harness.cp.servicers, db=harness.cp.db, clock=harness.clock, tokens=TOKENS
    )
    transport = httpx.ASGITransport(app=app)
    async with (
        httpx.AsyncClient(transport=transport, base_url="http://console.test") as admin_http,
        httpx.AsyncClient(transport=transport, base_url="http://console.test") as read_http,
    ):
        admin, viewer = Client(admin_http), Client(read_http)
        await admin.sign_in(ADMIN)
        await viewer.sign_in(READ)
        yield admin, viewer


async def _features(harness) -> dict[str, catalog_pb2.Feature]:
    listed = await harness.catalog.ListFeatures(catalog_pb2.ListFeaturesRequest())
    return {f.key: f for f in listed.features}


async def _plans(harness) -> dict[tuple[str, int], catalog_pb2.Plan]:
    listed = await harness.catalog.ListPlans(catalog_pb2.ListPlansRequest())
    return {(p.key, p.version): p for p in listed.plans}


async def test_feature_form_creates_the_feature_and_refuses_bad_input(console, harness):
    admin, viewer = console
    made = await admin.post(
        "/catalog/features",
        key="ai-input",
        display_name="AI input tokens",
        meter="llm_tokens",
        filters="provider=openai, type=input",
    )
    assert made.status_code == 303 and made.headers["location"].startswith("/catalog?done=")
    feature = (await _features(harness))["ai-input"]
    assert (feature.meter, dict(feature.filters)) == (
        "llm_tokens",
        {"provider": "openai", "type": "input"},
    )
    assert feature.display_name == "AI input tokens"
    # The page and its twin show it.
    twin = (await admin.http.get("/catalog.json")).json()
    assert [(f["key"], f["filters"]) for f in twin["features"]] == [
        ("ai-input", {"provider": "openai", "type": "input"})
    ]
    # A filter on a dimension the meter lacks: the servicer's message beside the form, the
    # typed values kept, nothing stored.
    bad = await admin.post(
        "/catalog/features", key="ai-color", meter="llm_tokens", filters="color=blue"
    )
    assert bad.status_code == 400
    error = re.search(r'<p class="error" role="alert" id="error-feature">([^<]+)</p>', bad.text)
    assert error and "'color' is not a dimension of meter llm_tokens" in html.unescape(
        error.group(1)
    )
    assert 'value="color=blue"' in bad.text and 'value="ai-color"' in bad.text
    malformed = await admin.post("/catalog/features", key="x", meter="llm_tokens", filters="type")
    assert malformed.status_code == 400 and "DIMENSION=VALUE" in malformed.text
    duplicate = await admin.post("/catalog/features", key="ai-input", meter="llm_tokens")
    assert duplicate.status_code == 409
    assert list(await _features(harness)) == ["ai-input"]
    # JSON answers to scripts.
    as_json = await admin.http.post(
        "/catalog/features",
        data={"csrf": admin.csrf, "key": "y", "meter": "nope"},
        headers=JSON,
    )
    assert as_json.status_code == 400 and "is not a meter" in as_json.json()["error"]
    # A read token and a POST without CSRF change nothing.
    refused = await viewer.post("/catalog/features", key="r", meter="llm_tokens")
    assert refused.status_code == 403
    bearer = await viewer.http.post(
        "/catalog/features",
        data={"key": "r", "meter": "llm_tokens"},
        headers={"Authorization": f"Bearer {READ}", **JSON},
    )
    assert bearer.status_code == 403 and "scope read" in bearer.json()["error"]
    no_csrf = await admin.http.post("/catalog/features", data={"key": "r", "meter": "llm_tokens"})
    assert no_csrf.status_code == 403
    assert list(await _features(harness)) == ["ai-input"]
    # The read token's page has no forms.
    page = (await viewer.http.get("/catalog")).text
    assert 'id="new-feature"' not in page and 'id="new-plan"' not in page


async def test_plan_forms_rate_cards_of_every_type_and_the_version_lifecycle(console, harness):
    admin, viewer = console
    await admin.post("/catalog/features", key="tokens", meter="llm_tokens", filters="type=input")
    await admin.post(
        "/catalog/price-lists",
        key="openai",
        currency="USD",
        model="gpt-4o-mini",
        input="0.00000015",
        output="0.0000006",
    )
    made = await admin.post(
        "/catalog/plans",
        key="pro",
        display_name="Pro",
        currency="usd",
        billing_cadence="P1M",
        feature="tokens",
        price_type="tiered",
        tier_mode="graduated",
        tiers="1000 0.002 5\n- 0.001",
    )
    assert made.status_code == 303, made.text
    plan = (await _plans(harness))[("pro", 1)]
    assert (plan.state, plan.currency, plan.display_name) == (
        catalog_pb2.PLAN_STATE_DRAFT,
        "USD",
        "Pro",
    )
    (card,) = plan.rate_cards
    assert card.feature == "tokens" and card.price.tier_mode == catalog_pb2.TIER_MODE_GRADUATED
    assert [
        (t.up_to if t.HasField("up_to") else None, t.unit_price, t.flat_price)
        for t in card.price.tiers
    ] == [
        ("1000", "0.002", "5"),
        (None, "0.001", "0"),
    ]
    # More rate cards on the draft: flat (in arrears), package and model list.
    for form in (
        {
            "rate_card_key": "base",
            "price_type": "flat",
            "amount": "49",
            "payment_term": "in_arrears",
        },
        {
            "rate_card_key": "batch",
            "feature": "tokens",
            "price_type": "package",
            "amount": "3",
            "quantity_per_package": "1000000",
        },
        {
            "rate_card_key": "models",
            "feature": "tokens",
            "price_type": "model_list",
            "price_list": "openai",
            "markup_percent": "20",
        },
    ):
        added = await admin.post("/plans/pro/versions/1/rate-cards", **form)
        assert added.status_code == 303, added.text
    cards = {c.key: c.price for c in (await _plans(harness))[("pro", 1)].rate_cards}
    assert cards["base"].type == catalog_pb2.PRICE_TYPE_FLAT
    assert cards["base"].payment_term == catalog_pb2.PAYMENT_TERM_IN_ARREARS
    assert (cards["batch"].amount, cards["batch"].quantity_per_package) == ("3", "1000000")
    assert (cards["models"].price_list, cards["models"].markup_percent) == ("openai", "20")
    # A bad tier (bounds not increasing) is refused beside the draft's form; nothing changes.
    bad = await admin.post(
        "/plans/pro/versions/1/rate-cards",
        rate_card_key="worse",
        feature="tokens",
        price_type="tiered",
        tier_mode="volume",
        tiers="1000 0.1\n500 0.2\n- 0.3",
    )
    assert bad.status_code == 400
    assert 'id="error-rate-card-pro-1"' in bad.text and "up_to" in bad.text
    assert len((await _plans(harness))[("pro", 1)].rate_cards) == 4
    # A plan naming an unknown feature, a bad currency or a negative price: refused beside
    # the form, no plan stored.
    ghost = {"key": "ghost", "currency": "USD", "billing_cadence": "P1M"}
    for form, status, says in (
        ({"feature": "nope", "price_type": "unit", "amount": "1"}, 404, "nope"),
        ({"currency": "dollars"}, 400, "ISO 4217"),
        ({"feature": "tokens", "price_type": "unit", "amount": "-1"}, 400, "amount"),
        (
            {"feature": "tokens", "price_type": "tiered", "tier_mode": "volume", "tiers": "10"},
            400,
            "UP_TO UNIT_PRICE",
        ),
    ):
        refused = await admin.post("/catalog/plans", **{**ghost, **form})
        assert refused.status_code == status, (form, refused.text)
        error = re.search(r'id="error-plan">([^<]+)<', refused.text)
        assert error and says in html.unescape(error.group(1)), form
    assert ("ghost", 1) not in await _plans(harness)
    # Remove a rate card from the draft, publish it, make version 2 from it, archive v1.
    assert (await admin.post("/plans/pro/versions/1/rate-cards/batch/delete")).status_code == 303
    assert "batch" not in {c.key for c in (await _plans(harness))[("pro", 1)].rate_cards}
    assert (await viewer.post("/plans/pro/versions/1/publish")).status_code == 403
    assert (await admin.http.post("/plans/pro/versions/1/publish", data={})).status_code == 403
    assert (await _plans(harness))[("pro", 1)].state == catalog_pb2.PLAN_STATE_DRAFT
    assert (await admin.post("/plans/pro/versions/1/publish")).status_code == 303
    # A published version never changes: its rate cards are refused with the reason.
    frozen = await admin.post(
        "/plans/pro/versions/1/rate-cards", rate_card_key="late", price_type="flat", amount="1"
    )
    assert frozen.status_code == 409 and "never changes" in frozen.text
    new = await admin.post("/plans/pro/versions/1/new-version")
    assert new.status_code == 303 and "v2" in new.headers["location"]
    plans = await _plans(harness)
    assert plans[("pro", 2)].state == catalog_pb2.PLAN_STATE_DRAFT
    assert [c.key for c in plans[("pro", 2)].rate_cards] == [
        c.key for c in plans[("pro", 1)].rate_cards
    ]
    assert (await admin.post("/plans/pro/versions/1/archive")).status_code == 303
    assert (await _plans(harness))[("pro", 1)].state == catalog_pb2.PLAN_STATE_ARCHIVED
    twin = (await admin.http.get("/catalog.json")).json()
    assert [(p["key"], p["version"], p["state"]) for p in twin["plans"]] == [
        ("pro", 1, "PLAN_STATE_ARCHIVED"),
        ("pro", 2, "PLAN_STATE_DRAFT"),
    ]


async def test_price_list_forms_create_and_set_a_models_price(console, harness):
    admin, viewer = console
    made = await admin.post(
        "/catalog/price-lists", key="anthropic", display_name="Anthropic", currency="USD"
    )
    assert made.status_code == 303
    first = harness.clock.now()
    priced = await admin.post(
        "/catalog/price-lists/anthropic/prices",
        model="claude-x",
        input="0.000003",
        output="0.000015",
        cached_input="0.0000003",
    )
    assert priced.status_code == 303, priced.text
    # A price change an hour later is a new entry from then; the old price stays for the past.
    harness.clock.set(first + timedelta(hours=1, seconds=5))
    assert (
        await admin.post(
            "/catalog/price-lists/anthropic/prices",
            model="claude-x",
            input="0.0000025",
            output="0.000015",
        )
    ).status_code == 303
    listed = await harness.catalog.GetPriceList(
        catalog_pb2.GetPriceListRequest(name="priceLists/anthropic")
    )
    # Each from the next whole minute: a new price never takes effect in the past.
    assert [(p.model, p.input, p.effective_from_time.ToDatetime(UTC)) for p in listed.prices] == [
        ("claude-x", "0.000003", first + timedelta(minutes=1)),
        ("claude-x", "0.0000025", first + timedelta(hours=1, minutes=1)),
    ]
    # Bad prices and times are refused beside the list's form; nothing is added.
    for form in (
        {"model": "claude-x", "input": "cheap"},
        {"model": "claude-x", "input": "-0.1"},
        {"model": "claude-x", "input": "0.1", "effective_from": "tomorrow"},
        {"model": "", "input": "0.1"},
    ):
        refused = await admin.post("/catalog/price-lists/anthropic/prices", **form)
        assert refused.status_code == 400 and 'id="error-prices-anthropic"' in refused.text, form
    assert (
        await admin.post("/catalog/price-lists/nope/prices", model="m", input="1")
    ).status_code == 404
    assert (
        await viewer.post("/catalog/price-lists/anthropic/prices", model="m", input="1")
    ).status_code == 403
    duplicate = await admin.post("/catalog/price-lists", key="anthropic", currency="USD")
    assert duplicate.status_code == 409
    listed = await harness.catalog.GetPriceList(
        catalog_pb2.GetPriceListRequest(name="priceLists/anthropic")
    )
    assert len(listed.prices) == 2
    page = (await admin.http.get("/catalog")).text
    assert 'id="price-list-anthropic"' in page and "0.0000025" in page


async def test_credit_alert_form(console, harness, walkthrough):
    admin, viewer = console
    # The walkthrough's acme, subscribed to a plan (credits are in its currency).
    await harness.gateway.ApplyConfig(gateway_pb2.ApplyConfigRequest(document=walkthrough))
    channel = grpc.aio.insecure_channel(harness.address)
    notifications = notifications_pb2_grpc.NotificationServiceStub(channel)
    credits = credits_pb2_grpc.CreditServiceStub(channel)
    # No channel yet: the page says where to add one instead of a form.
    page = (await admin.http.get("/customers/acme/credits")).text
    assert 'id="no-channels"' in page and 'id="new-credit-alert"' not in page
    await notifications.CreateChannel(
        notifications_pb2.CreateChannelRequest(
            channel=notifications_pb2.NotificationChannel(
                key="ops",
                url="https://hooks.example.com/x",
                signing_secret="a-signing-secret-of-32-characters!!",
            )
        )
    )

    async def alerts() -> list[tuple[str, list[str], list[str]]]:
        listed = await credits.ListCreditAlerts(
            credits_pb2.ListCreditAlertsRequest(parent="customers/acme")
        )
        return [(a.key, list(a.percents), list(a.amounts)) for a in listed.credit_alerts]

    made = await admin.post(
        "/customers/acme/credits/alerts",
        alert_key="low",
        channel="ops",
        percents="50, 20",
        amounts="10",
    )
    assert made.status_code == 303, made.text
    assert made.headers["location"].endswith("done=credit-alert-created")
    assert await alerts() == [("low", ["50", "20"], ["10"])]
    twin = (await admin.http.get("/customers/acme/credits.json")).json()
    assert [(a["key"], a["channel"]) for a in twin["credit_alerts"]] == [("low", "ops")]
    for form in (
        {"alert_key": "bad", "channel": "ops", "percents": "150"},
        {"alert_key": "bad", "channel": "nowhere", "percents": "10"},
        {"alert_key": "bad", "channel": "ops"},
    ):
        refused = await admin.post("/customers/acme/credits/alerts", **form)
        assert refused.status_code in (400, 404) and "error" in refused.text, form
    assert (
        await viewer.post(
            "/customers/acme/credits/alerts", alert_key="r", channel="ops", percents="5"
        )
    ).status_code == 403
    assert (await viewer.post("/customers/acme/credits/alerts/low/delete")).status_code == 403
    assert await alerts() == [("low", ["50", "20"], ["10"])]
    assert (await admin.post("/customers/acme/credits/alerts/low/delete")).status_code == 303
    assert await alerts() == []
    await channel.close()
