"""Per-resource forms and the alerts page in a real browser (Debian's Chromium, Playwright).

From an empty database to a previewed invoice without the CLI: the service, route and ai-proxy
plugin come from the apply page; the feature, the plans with their rate cards (published from
a draft), the consumer and its key (shown once), the customer, its subscription, a plugin edit
(YAML, diff before apply) and the alerts come from their forms.
Requests with the key shown once go through a data plane and land on the preview. Every change
is checked on the server, and refused to a read token and without the CSRF token.
One control plane, data plane and browser for the module.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import grpc
import httpx
import openai
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from meterline.admin.v1 import (
    customers_pb2,
    customers_pb2_grpc,
    gateway_pb2,
    gateway_pb2_grpc,
    notifications_pb2,
    notifications_pb2_grpc,
)
from support.browser import operator_tokens, sign_in
from support.processes import Processes, free_port, http_ready, wait_until

SECRET = re.compile(r'\$\{\{ env "DECK_[A-Z0-9_]+" \}\}')

# No feature, plan, consumer, customer or subscription: those come from the forms.
GATEWAY = """\
_format_version: "3.0"
services:
  - name: ai-service
    url: {upstream}
    routes:
      - name: chat
        paths: [/chat]
    plugins:
      - name: ai-proxy
        config:
          route_type: llm/v1/chat
          auth: {{header_name: Authorization, header_value: Bearer sk-upstream-secret}}
          model:
            provider: openai
            name: gpt-4o-mini
            options:
              upstream_url: "{upstream}/v1/chat/completions"
              input_cost: 150
              output_cost: 600
plugins:
  - name: key-auth
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("console-forms")
    processes = Processes(tmp=tmp)
    tokens_file = tmp / "tokens.yaml"
    created = operator_tokens(tokens_file)
    upstream_port, cp_port, dp_port, console_port = (free_port() for _ in range(4))
    upstream = f"http://127.0.0.1:{upstream_port}"
    cp = f"127.0.0.1:{cp_port}"
    console = f"http://127.0.0.1:{console_port}"
    try:
        processes.start(
            "fake", "-m", "dataplane.testing.fake_openai", "--listen", f"127.0.0.1:{upstream_port}"
        )
        processes.start(
            "cp",
            "-m",
            "controlplane",
            "controlplane",
            "--db",
            f"sqlite:///{tmp / 'meterline.db'}",
            "--listen",
            cp,
            "--console-listen",
            f"127.0.0.1:{console_port}",
            "--tokens-file",
            str(tokens_file),
            "--invoice-job-interval",
            "0",
            "--allow-private-webhook-urls",
        )
        wait_until(lambda: http_ready(f"{upstream}/_fake/requests", {200}), what="fake provider")
        wait_until(lambda: http_ready(f"{console}/signin", {200}), what="console")
        processes.start(
            "dp", "-m", "controlplane", "dataplane", "--cp", cp, "--listen", f"127.0.0.1:{dp_port}"
        )
        yield {
            "cp": cp,
            "dp": f"http://127.0.0.1:{dp_port}",
            "console": console,
            "upstream": upstream,
            "admin": created["admin"],
            "read": created["read"],
        }
    finally:
        processes.stop_all()


def _csrf(page: Page) -> str:
    return page.locator("input[name=csrf]").first.input_value()


def _gateway(stack: dict[str, Any]) -> gateway_pb2_grpc.GatewayServiceStub:
    return gateway_pb2_grpc.GatewayServiceStub(grpc.insecure_channel(stack["cp"]))


def _catalog_from_forms(page: Page, console: str) -> None:
    """The feature and two plans from the catalog's forms, each published from its draft."""
    page.goto(f"{console}/catalog")
    page.fill("#feature-key", "ai-token")
    page.select_option("#feature-meter", "llm_tokens")
    # A dimension the meter lacks: the servicer's error beside the form, the input kept.
    page.fill("#feature-filters", "provider=openai, colour=blue")
    page.click("#new-feature button[type=submit]")
    assert "'colour' is not a dimension" in page.inner_text("#error-feature")
    assert page.input_value("#feature-key") == "ai-token"
    page.fill("#feature-filters", "provider=openai, type=input")
    page.click("#new-feature button[type=submit]")
    page.wait_for_url(re.compile(r"/catalog\?done=feature"))
    row = page.locator("#feature-table tr[data-feature=ai-token] .filters")
    assert row.inner_text() == "provider=openai, type=input"
    for key, name, amount in (("starter", "Starter", "1"), ("scale", "Scale", "2")):
        page.fill("#plan-key", key)
        page.fill("#plan-name", name)
        page.select_option("#plan-feature", "ai-token")
        page.select_option("#plan-price-type", "unit")
        page.fill("#plan-amount", amount)
        page.click("#new-plan button[type=submit]")
        page.wait_for_url(re.compile(rf"/catalog\?done=plan\+{key}\+v1\+created"))
        row = page.locator(f"#plan-table tr[data-plan={key}-1]")
        assert row.locator(".state").inner_text() == "draft"
        assert row.locator(".rate-cards [data-rate-card=ai-token]").inner_text() == (
            f"ai-token: unit {amount}"
        )
        row.locator("button:text('Publish')").click()
        page.wait_for_url(re.compile(r"/catalog\?done=publish"))
        assert page.locator(f"tr[data-plan={key}-1] .state").inner_text() == "active"
    twin = page.request.get(f"{console}/catalog.json").json()
    assert sorted((p["key"], p["state"]) for p in twin["plans"]) == [
        ("scale", "PLAN_STATE_ACTIVE"),
        ("starter", "PLAN_STATE_ACTIVE"),
    ]


@pytest.fixture(scope="module")
def built(stack: dict[str, Any], browser: Browser) -> dict[str, Any]:
    """The walk from an empty database, in the browser; what it made."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    console = stack["console"]
    try:
        sign_in(page, stack["console"], stack["admin"])
        page.goto(f"{console}/gateway/apply")
        page.fill("#document", GATEWAY.format(upstream=stack["upstream"]))
        page.click("#preview-changes")
        page.click("#apply-changes")
        assert page.inner_text("#config-version").startswith("sha256:")
        _catalog_from_forms(page, console)
        # A consumer and its key: the key is on this answer's page once, never in a URL.
        page.goto(f"{console}/gateway")
        page.fill("#consumer-username", "acme-app")
        page.click("#new-consumer button[type=submit]")
        key = page.inner_text("#new-key")
        assert len(key) >= 20 and key not in page.url
        page.goto(f"{console}/gateway")
        assert page.locator("#new-key").count() == 0  # shown once
        assert key not in page.content()
        # The customer, from the customers page; its subscription, from its page.
        page.goto(f"{console}/customers")
        page.fill("#customer-key", "acme")
        page.fill("#customer-name", "Acme Corp")
        page.fill("#customer-subjects", "acme-app")
        page.click("#new-customer button[type=submit]")
        page.wait_for_url(re.compile(r"/customers/acme\?done=created$"))
        page.select_option("#sub-plan", "starter")
        page.click("#new-subscription button[type=submit]")
        page.wait_for_url(re.compile(r"/customers/acme\?done=subscribed$"))
        assert "plans/starter/versions/1" in page.inner_text("main")
    finally:
        context.close()

    # Requests with the key shown once, through the data plane.
    def served() -> bool:
        try:
            answer = httpx.post(
                f"{stack['dp']}/chat/v1/chat/completions",
                headers={"Authorization": f"Bearer {key}"},
                json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
            )
        except httpx.HTTPError:
            return False
        return answer.status_code == 200

    wait_until(served, what="the data plane serving the new consumer's key")
    client = openai.OpenAI(base_url=f"{stack['dp']}/chat", api_key=key, max_retries=0)
    reported = 0
    for i in range(3):
        response = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": f"forms request {i}"}]
        )
        reported += response.usage.prompt_tokens
    return {"key": key, "reported": reported}


def _preview_quantity(page: Page, stack: dict[str, Any]) -> Decimal:
    twin = page.request.get(f"{stack['console']}/customers/acme/preview.json").json()
    return sum((Decimal(line["quantity"]) for line in twin["invoice"]["lines"]), Decimal(0))


def test_empty_database_to_previewed_invoice_with_forms(
    stack: dict[str, Any], context: BrowserContext, built: dict[str, Any]
) -> None:
    page = context.new_page()
    sign_in(page, stack["console"], stack["admin"])

    # The first (warm-up) request counts too: 4 requests in all, billed at 1 USD per token.
    def billed() -> bool:
        return _preview_quantity(page, stack) > built["reported"]

    wait_until(billed, what="the requests on the preview")
    page.goto(f"{stack['console']}/customers/acme/preview")
    line = page.locator("#invoice-lines tr[data-feature=ai-token]")
    quantity = Decimal(line.locator(".quantity").inner_text())
    assert quantity == _preview_quantity(page, stack)
    assert line.locator(".amount").inner_text() == f"{quantity:,}.00 USD"
    # The overview's billed figure is that preview (the only customer).
    overview = page.request.get(f"{stack['console']}/overview.json").json()
    assert Decimal(overview["billed"]["USD"]) == quantity
    # Margin over time: this month's billed is that preview; the chart drew its three series
    # (billed, provider cost, margin) for each of the 6 months.
    page.goto(f"{stack['console']}/overview")
    page.click("#margin-over-time")
    page.wait_for_url(re.compile(r"/margin$"))
    twin = page.request.get(f"{stack['console']}/margin.json").json()
    this_month = twin["months"][-1]
    assert Decimal(this_month["billed"]["USD"]) == quantity
    assert Decimal(this_month["margin"]) == quantity - Decimal(this_month["provider_cost"])
    assert Decimal(this_month["provider_cost"]) > 0
    page.wait_for_selector("#chart-margin[data-points='18']")
    drawn = page.evaluate("window.meterlineCharts['chart-margin'].data[1]")
    assert drawn == twin["chart"]["series"]["billed (USD)"] and drawn[-1] == float(quantity)


def test_plugin_yaml_edit_shows_a_diff_then_applies(
    stack: dict[str, Any], context: BrowserContext, built: dict[str, Any]
) -> None:
    page = context.new_page()
    sign_in(page, stack["console"], stack["admin"])
    page.goto(f"{stack['console']}/gateway")
    page.click("a[data-edit=ai-proxy]")
    page.wait_for_url(re.compile(r"/gateway/plugins/[^/]+/edit$"))
    document = page.input_value("#document")
    # The provider key is an env reference, as `meterline dump` writes it; never the key.
    assert SECRET.search(document) and "sk-upstream-secret" not in page.content()
    # Redacted secrets are refused: they are never shown, so they must be typed again.
    # Prices are exact decimal strings, as apply stored them.
    assert re.search(r"^ +output_cost: '600'$", document, re.M), document
    edited = document.replace("output_cost: '600'", "output_cost: '700.5'")
    page.fill("#document", edited)
    page.click("#preview-changes")
    assert "redacted" in page.inner_text("#apply-error")
    # Moving the plugin elsewhere is refused: the form edits this one plugin.
    page.fill(
        "#document",
        SECRET.sub("Bearer sk-new", edited).replace("service: ai-service", "service: other"),
    )
    page.click("#preview-changes")
    assert "must stay" in page.inner_text("#apply-error")
    # A bad value gets apply's own validation error, and nothing changes.
    page.fill(
        "#document",
        SECRET.sub("Bearer sk-new", edited).replace(
            "route_type: llm/v1/chat", "route_type: llm/v9/nothing"
        ),
    )
    page.click("#preview-changes")
    expect(page.locator("#apply-error")).to_be_visible()
    # The preview shows the diff and the change; nothing is stored until applied.
    page.fill("#document", SECRET.sub("Bearer sk-new", edited))
    page.click("#preview-changes")
    diff = page.inner_text("#diff")
    assert re.search(r"^- +output_cost: '600'$", diff, re.M), diff
    assert re.search(r"^\+ +output_cost: '700.5'$", diff, re.M), diff
    changes = page.locator("#changes li").all_inner_texts()
    assert any("plugin ai-proxy" in c for c in changes), changes
    plugins = _gateway(stack).ListPlugins(gateway_pb2.ListPluginsRequest()).plugins
    (proxy,) = [p for p in plugins if p.plugin_name == "ai-proxy"]
    assert proxy.config["model"]["options"]["output_cost"] == "600"
    page.click("#apply-changes")
    assert page.inner_text("#config-version").startswith("sha256:")
    plugins = _gateway(stack).ListPlugins(gateway_pb2.ListPluginsRequest()).plugins
    (proxy,) = [p for p in plugins if p.plugin_name == "ai-proxy"]
    assert proxy.config["model"]["options"]["output_cost"] == "700.5"
    # Back to the original key for the other tests.
    page.fill(
        "#document",
        page.input_value("#document").replace("Bearer sk-new", "Bearer sk-upstream-secret"),
    )
    page.click("#preview-changes")
    page.click("#apply-changes")


def _subscriptions(stack: dict[str, Any]) -> list[customers_pb2.Subscription]:
    stub = customers_pb2_grpc.CustomerServiceStub(grpc.insecure_channel(stack["cp"]))
    request = customers_pb2.ListSubscriptionsRequest(parent="customers/acme")
    return list(stub.ListSubscriptions(request).subscriptions)


def test_subscription_change_plan_and_cancel(
    stack: dict[str, Any], context: BrowserContext, built: dict[str, Any]
) -> None:
    console = stack["console"]
    page = context.new_page()
    sign_in(page, stack["console"], stack["read"])
    page.goto(f"{console}/customers/acme")
    assert page.locator("#new-subscription").count() == 0  # no forms for a read token
    (running,) = [s for s in _subscriptions(stack) if not s.HasField("end_time")]
    refused = page.request.post(
        f"{console}/subscriptions/{running.id}/cancel",
        form={"csrf": _csrf(page), "timing": "now"},
        headers={"Accept": "application/json"},
    )
    assert refused.status == 403
    admin = context.browser.new_context(viewport={"width": 1280, "height": 800})
    page = admin.new_page()
    sign_in(page, stack["console"], stack["admin"])
    no_csrf = page.request.post(
        f"{console}/subscriptions/{running.id}/cancel",
        form={"timing": "now"},
        headers={"Accept": "application/json"},
    )
    assert no_csrf.status == 403
    assert [s.id for s in _subscriptions(stack) if not s.HasField("end_time")] == [running.id]
    # Change plan: the old subscription ends, a new one on scale runs.
    page.goto(f"{console}/customers/acme")
    row = page.locator(f"tr[data-subscription='{running.id}']")
    row.locator("select[name=plan]").select_option("scale")
    row.locator("text=Change plan now").click()
    page.wait_for_url(re.compile(r"\?done=change-plan$"))
    now_running = [s for s in _subscriptions(stack) if not s.HasField("end_time")]
    assert [s.plan for s in now_running] == ["plans/scale/versions/1"]
    # Cancel at the period's end: the end is a whole period after the billing anchor.
    row = page.locator(f"tr[data-subscription='{now_running[0].id}']")
    row.locator("select[name=timing]").select_option("period_end")
    row.locator("button:text('Cancel')").click()
    page.wait_for_url(re.compile(r"\?done=cancel$"))
    (ended,) = [s for s in _subscriptions(stack) if s.id == now_running[0].id]
    anchor = ended.billing_anchor_time.ToDatetime()
    end = ended.end_time.ToDatetime()
    assert ended.HasField("end_time") and end > anchor
    assert (end.day, end.time()) == (anchor.day, anchor.time())
    assert (end.year * 12 + end.month) - (anchor.year * 12 + anchor.month) == 1
    admin.close()


def test_alerts_page_forms_and_read_only(
    stack: dict[str, Any], context: BrowserContext, built: dict[str, Any]
) -> None:
    console = stack["console"]
    page = context.new_page()
    sign_in(page, stack["console"], stack["admin"])
    page.click("nav >> text=Alerts")
    page.wait_for_url(re.compile(r"/alerts$"))
    page.fill("#channel-key", "ops-hook")
    page.fill("#channel-url", f"{stack['upstream']}/_fake/hook")
    page.fill("#channel-secret", "a-signing-secret-of-32-characters!!")
    page.click("#new-channel button[type=submit]")
    page.wait_for_url(re.compile(r"/alerts\?done="))
    page.fill("#rule-key", "invoices")
    page.select_option("#rule-type", "invoice")
    page.select_option("#rule-channel", "ops-hook")
    page.fill("#rule-events", "invoice.issued")
    page.click("#new-rule button[type=submit]")
    page.wait_for_url(re.compile(r"/alerts\?done="))
    # A bad rule is refused with the service's own error.
    page.fill("#rule-key", "bad")
    page.select_option("#rule-type", "budget_threshold")
    page.fill("#rule-thresholds", "-5")
    page.click("#new-rule button[type=submit]")
    assert "threshold" in page.inner_text("main").lower()
    stub = notifications_pb2_grpc.NotificationServiceStub(grpc.insecure_channel(stack["cp"]))
    rules = stub.ListRules(notifications_pb2.ListRulesRequest()).rules
    assert [r.key for r in rules] == ["invoices"]
    (channel,) = stub.ListChannels(notifications_pb2.ListChannelsRequest()).channels
    assert channel.has_signing_secret and not channel.signing_secret
    # The JSON twin lists the same, without the secret.
    twin = page.request.get(f"{console}/alerts.json").json()
    assert [c["key"] for c in twin["channels"]] == ["ops-hook"]
    assert [r["key"] for r in twin["rules"]] == ["invoices"]
    assert "a-signing-secret" not in str(twin)
    assert twin["events"] == [] and twin["deliveries"] == []
    # A read token sees the page, no forms, and its POSTs are refused.
    viewer = context.browser.new_context()
    read_page = viewer.new_page()
    sign_in(read_page, stack["console"], stack["read"])
    read_page.goto(f"{console}/alerts")
    assert "ops-hook" in read_page.inner_text("#channels")
    assert read_page.locator("#new-channel, #new-rule, #evaluate-now").count() == 0
    for path in ("/alerts/rules/invoices/delete", "/alerts/evaluate"):
        refused = read_page.request.post(
            f"{console}{path}",
            form={"csrf": _csrf(read_page)},
            headers={"Accept": "application/json"},
        )
        assert refused.status == 403
    viewer.close()
    # The admin deletes the rule through its button.
    page.goto(f"{console}/alerts")
    page.locator("tr[data-rule=invoices] button").click()
    page.wait_for_url(re.compile(r"/alerts\?done="))
    assert stub.ListRules(notifications_pb2.ListRulesRequest()).rules == []


def test_price_list_and_draft_rate_card_forms(
    stack: dict[str, Any], context: BrowserContext, built: dict[str, Any]
) -> None:
    console = stack["console"]
    page = context.new_page()
    sign_in(page, stack["console"], stack["admin"])
    page.goto(f"{console}/catalog")
    # A price list with its first model, then a later price for it from the list's own form.
    page.fill("#price-list-key", "openai")
    page.fill("#price-list-model", "gpt-4o-mini")
    page.fill("#price-list-input", "0.00000015")
    page.fill("#price-list-output", "0.0000006")
    page.click("#new-price-list button[type=submit]")
    page.wait_for_url(re.compile(r"/catalog\?done=price\+list"))
    page.fill("#prices-openai-model", "gpt-4o-mini")
    page.fill("#prices-openai-input", "0.0000002")
    page.fill("#prices-openai-output", "0.0000008")
    page.fill("#prices-openai-from", "2099-01-01T00:00:00")
    page.click("#price-list-openai ~ form.set-price button[type=submit]")
    page.wait_for_url(re.compile(r"/catalog\?done=price\+of"))
    rows = page.locator("#price-list-openai tbody tr")
    assert rows.locator(".input").all_inner_texts() == ["0.00000015", "0.0000002"]
    assert "2099-01-01 00:00:00 UTC" in rows.nth(1).inner_text()
    # A price in the past is refused beside that form; nothing is added.
    page.fill("#prices-openai-model", "gpt-4o-mini")
    page.fill("#prices-openai-input", "0.1")
    page.fill("#prices-openai-from", "2001-01-01T00:00:00")
    page.click("#price-list-openai ~ form.set-price button[type=submit]")
    assert "past" in page.inner_text("#error-prices-openai")
    assert page.locator("#price-list-openai tbody tr").count() == 2
    # A new draft version of starter; a model-list rate card added to it, then removed.
    page.goto(f"{console}/catalog")
    page.locator("tr[data-plan=starter-1] button:text('New version from this')").click()
    page.wait_for_url(re.compile(r"done=new-version\+starter\+v2"))
    draft = page.locator("tr[data-plan=starter-2]")
    assert draft.locator(".state").inner_text() == "draft"
    draft.locator("summary").click()
    draft.locator("select[name=feature]").select_option("ai-token")
    draft.locator("input[name=rate_card_key]").fill("by-model")
    draft.locator("select[name=price_type]").select_option("model_list")
    draft.locator("select[name=price_list]").select_option("openai")
    draft.locator("input[name=markup_percent]").fill("25")
    draft.locator("form.add-rate-card button[type=submit]").click()
    page.wait_for_url(re.compile(r"done=rate\+card\+added"))
    card = page.locator("tr[data-plan=starter-2] [data-rate-card=by-model]")
    assert card.inner_text() == "ai-token: model_list (openai +25%)"
    twin = page.request.get(f"{console}/catalog.json").json()
    (v2,) = [p for p in twin["plans"] if (p["key"], p["version"]) == ("starter", 2)]
    assert [(c["key"], c["price"]["type"]) for c in v2["rate_cards"]] == [
        ("ai-token", "PRICE_TYPE_UNIT"),
        ("by-model", "PRICE_TYPE_MODEL_LIST"),
    ]
    page.locator("tr[data-plan=starter-2] button[aria-label='Remove rate card by-model']").click()
    page.wait_for_url(re.compile(r"done=rate\+card\+removed"))
    assert page.locator("tr[data-plan=starter-2] [data-rate-card=by-model]").count() == 0
