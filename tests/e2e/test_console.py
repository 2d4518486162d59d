"""The console and the portal in a real browser (Debian's Chromium through Playwright).

One stack for the module (fake OpenAI provider, a control plane serving the console, a data
plane) and one browser for the session, so the browser tests stay few and fast. Requests go
through the data plane with the openai SDK; the pages are read back from the browser, and
every refusal is checked on the server too (direct POSTs and JSON fetches, not hidden buttons).
Screenshots land in the test run's artifacts directory (pytest's tmp dir).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
import httpx
import openai
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from dataplane.testing.fake_openai import prompt_tokens
from meterline.admin.v1 import (
    billing_pb2,
    billing_pb2_grpc,
    customers_pb2,
    customers_pb2_grpc,
    usage_pb2,
    usage_pb2_grpc,
)
from support.browser import operator_tokens
from support.processes import Processes, free_port, http_ready, meterline, wait_until

KEY = "acme-secret-key"

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
consumers:
  - username: acme-corp
    keyauth_credentials: [{{key: {key}}}]
plugins:
  - name: key-auth
billing:
  features:
    - {{key: ai-token, meter: llm_tokens, filters: {{provider: openai, type: input}}}}
  plans:
    - key: starter
      name: Starter
      currency: USD
      billing_cadence: P1M
      rate_cards:
        - {{feature: ai-token, price: {{type: unit, amount: "1"}}, entitlement: {{type: boolean}}}}
  customers:
    - {{key: acme, name: Acme Corp, subjects: [acme-corp]}}
    - {{key: beta, name: Beta Labs, subjects: [beta-app]}}
  subscriptions:
    - {{customer: acme, plan: starter, start: now}}
    - {{customer: beta, plan: starter, start: now}}
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A fake provider, a control plane with the console and the walkthrough, a data plane."""
    tmp = tmp_path_factory.mktemp("console")
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
            "--portal-frame-ancestor",
            "https://app.example.com",
        )
        wait_until(lambda: http_ready(f"{upstream}/_fake/requests", {200}), what="fake provider")
        wait_until(lambda: http_ready(f"{console}/signin", {200}), what="console")
        # An empty database: the walkthrough is applied in the browser (see `walkthrough`).
        processes.start(
            "dp", "-m", "controlplane", "dataplane", "--cp", cp, "--listen", f"127.0.0.1:{dp_port}"
        )
        dp = f"http://127.0.0.1:{dp_port}"
        yield {
            "cp": cp,
            "dp": dp,
            "console": console,
            "upstream": upstream,
            "admin": created["admin"],
            "read": created["read"],
            "processes": processes,
            # CI may collect them from $METERLINE_TEST_ARTIFACTS; pytest's tmp dir otherwise.
            "artifacts": Path(os.environ.get("METERLINE_TEST_ARTIFACTS") or tmp)
            / "console-screenshots",
        }
    finally:
        processes.stop_all()


def _shot(page: Page, stack: dict[str, Any], name: str) -> None:
    folder: Path = stack["artifacts"]
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)
    assert (folder / f"{name}.png").stat().st_size > 1000


# The README's pictures: the browser's 1280x800 viewport, committed under docs/images. A test
# run writes them beside the other screenshots; METERLINE_UPDATE_README_IMAGES=1 rewrites the
# committed ones (so an ordinary run leaves the tree as it was).
README_IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"


def _readme_shot(page: Page, stack: dict[str, Any], name: str) -> None:
    page.set_viewport_size({"width": 1280, "height": 800})
    update = os.environ.get("METERLINE_UPDATE_README_IMAGES")
    folder = README_IMAGES if update else stack["artifacts"] / "readme"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    page.screenshot(path=str(path))
    assert path.stat().st_size > 10_000
    assert (README_IMAGES / f"{name}.png").is_file()  # the README's picture exists


def _sign_in(page: Page, stack: dict[str, Any], token: str) -> None:
    page.goto(f"{stack['console']}/overview")
    assert page.url.endswith("/signin")  # no session: sent to sign in
    page.fill("#token", token)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/overview$"))


def _send_six_requests(stack: dict[str, Any]) -> int:
    """Six chat requests through the data plane with the openai SDK; the reported input."""
    client = openai.OpenAI(base_url=f"{stack['dp']}/chat", api_key=KEY, max_retries=0)
    messages = [{"role": "user", "content": f"walkthrough request {i}"} for i in range(6)]
    reported = 0
    for i, message in enumerate(messages):
        if i % 2 == 0:
            response = client.chat.completions.create(model="gpt-4o-mini", messages=[message])
            reported += response.usage.prompt_tokens
        else:
            chunks = list(
                client.chat.completions.create(
                    model="gpt-4o-mini",
                    messages=[message],
                    stream=True,
                    stream_options={"include_usage": True},
                )
            )
            reported += chunks[-1].usage.prompt_tokens
            assert reported and prompt_tokens([message]) == chunks[-1].usage.prompt_tokens
    with grpc.insecure_channel(stack["cp"]) as channel:
        stub = usage_pb2_grpc.UsageServiceStub(channel)

        def stored() -> int:
            request = usage_pb2.ListUsageEventsRequest(subject="acme-corp", page_size=1000)
            return len(stub.ListUsageEvents(request).usage_events)

        wait_until(lambda: stored() >= 12, what="12 usage events at the control plane")
    return reported


@pytest.fixture(scope="module")
def reported_input(stack: dict[str, Any], browser: Browser) -> int:
    """The walkthrough, from an empty database, in the browser; then six requests."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    try:
        _sign_in(page, stack, stack["admin"])
        page.click("nav >> text=Gateway")
        page.click("#apply-link")
        page.fill("#document", GATEWAY.format(upstream=stack["upstream"], key=KEY))
        # Preview first: the changes are listed, nothing is stored yet...
        page.click("#preview-changes")
        # (the click returns before the next page has loaded: wait for what it lists)
        page.locator("#changes li").first.wait_for()
        changes = page.locator("#changes li").all_inner_texts()
        for expected in (
            "created service ai-service",
            "created route chat",
            "created consumer acme-corp",
            "added a key credential to consumer acme-corp",
            "created plugin key-auth",
            "created plugin ai-proxy (ai-service)",
            "created feature ai-token",
            "created and published plan starter version 1",
            "created customer acme",
        ):
            assert any(c.startswith(expected) for c in changes), (expected, changes)
        assert any(c.startswith("created subscription") for c in changes)
        listed = page.request.get(f"{stack['console']}/gateway.json").json()
        assert listed["services"] == []
        _shot(page, stack, "apply-preview")
        # ...then applied, and the data plane picks the new config up.
        page.click("#apply-changes")
        version = page.inner_text("#config-version")
        assert version.startswith("sha256:")

        def data_plane_in_sync() -> bool:
            planes = page.request.get(f"{stack['console']}/gateway.json").json()["data_planes"]
            return any(
                p["config_version"] == version and p["sync_status"] == "SYNC_STATUS_IN_SYNC"
                for p in planes
            )

        wait_until(data_plane_in_sync, what="the data plane on the applied config")
        # A bad document is refused with its error and changes nothing.
        page.goto(f"{stack['console']}/gateway/apply")
        page.fill("#document", "services: [ {name: broken")
        page.click("#preview-changes")
        expect(page.locator("#apply-error")).to_be_visible()
    finally:
        context.close()
    return _send_six_requests(stack)


def test_walkthrough_preview_shows_exact_input_tokens(
    stack: dict[str, Any], context: BrowserContext, reported_input: int
) -> None:
    page = context.new_page()
    # Given an admin signed in...
    _sign_in(page, stack, stack["admin"])
    # ...the gateway page shows the walkthrough's service, route, consumer and plugins, and
    # the data plane in sync.
    page.click("nav >> text=Gateway")
    page.wait_for_url(re.compile(r"/gateway$"))
    body = page.inner_text("main")
    for expected in ("ai-service", "/chat", "acme-corp", "key-auth", "ai-proxy", "in_sync"):
        assert expected in body
    assert "sk-upstream-secret" not in page.content()  # provider keys stay redacted
    _shot(page, stack, "gateway")
    # When they search the customers and open acme's invoice preview...
    page.click("nav >> text=Customers")
    page.fill("#q", "acme")
    page.press("#q", "Enter")
    page.wait_for_url(re.compile(r"/customers\?q=acme"))
    assert page.locator("tbody tr").count() == 1
    _shot(page, stack, "customers")
    page.click("text=acme")
    page.wait_for_url(re.compile(r"/customers/acme$"))
    assert "plans/starter/versions/1" in page.inner_text("main")
    _shot(page, stack, "customer")
    page.click("#preview-link")
    page.wait_for_url(re.compile(r"/customers/acme/preview$"))
    _shot(page, stack, "invoice-preview")
    # Then the ai-token line bills exactly the provider-reported input tokens at 1 USD.
    line = page.locator("#invoice-lines tr[data-feature=ai-token]")
    assert Decimal(line.locator(".quantity").inner_text()) == reported_input
    assert line.locator(".amount").inner_text() == f"{reported_input:,}.00 USD"
    # And the JSON twin says the same.
    twin = page.request.get(f"{stack['console']}/customers/acme/preview.json").json()
    (json_line,) = twin["invoice"]["lines"]
    assert Decimal(json_line["quantity"]) == reported_input


def test_overview_chart_draws_its_points(
    stack: dict[str, Any], context: BrowserContext, reported_input: int
) -> None:
    page = context.new_page()
    _sign_in(page, stack, stack["read"])
    page.goto(f"{stack['console']}/overview?window=hour")
    page.wait_for_selector("#chart-models[data-points]")
    twin = page.request.get(f"{stack['console']}/overview.json?window=hour").json()
    # The JSON twin's figures: 6 requests, all tokens of the 12 events, cost at 150/600 per 1M.
    assert twin["requests"] == 6
    assert twin["tokens_by_type"]["input"] == reported_input
    output = twin["tokens_by_type"]["output"]
    assert Decimal(twin["provider_cost"]) == (
        Decimal(150) * reported_input + Decimal(600) * output
    ) / Decimal(1_000_000)
    assert Decimal(twin["billed"]["USD"]) == reported_input
    assert page.inner_text("#stat-requests") == "6"
    assert page.inner_text("#stat-tokens") == f"{reported_input + output:,}"
    # What the chart drew, read back from the page: its series equal the twin's...
    drawn = page.evaluate(
        """() => {
            const u = window.meterlineCharts["chart-models"];
            const canvas = document.querySelector("#chart-models canvas");
            const pixels = canvas.getContext("2d")
                .getImageData(0, 0, canvas.width, canvas.height).data;
            let inked = 0;
            for (let i = 3; i < pixels.length; i += 4) if (pixels[i] > 0) inked++;
            return {times: u.data[0], series: u.series.slice(1).map(s => s.label),
                    values: u.data.slice(1), inked: inked,
                    points: document.querySelector("#chart-models").dataset.points};
        }"""
    )
    chart = twin["chart"]
    assert drawn["times"] == chart["times"]
    assert drawn["series"] == list(chart["series"]) == ["gpt-4o-mini"]
    assert drawn["values"] == list(chart["series"].values())
    assert sum(drawn["values"][0]) == reported_input + output
    assert int(drawn["points"]) == len(chart["times"]) >= 1
    assert drawn["inked"] > 500  # axes, grid and the series' points are on the canvas
    # Beside the model chart: by token type and by customer (top N), same windows.
    assert twin["chart_by_type"]["times"] == chart["times"]
    assert set(twin["chart_by_type"]["series"]) == {"input", "output"}
    assert sum(twin["chart_by_type"]["series"]["input"]) == reported_input
    by_customer = twin["chart_by_customer"]
    assert list(by_customer["series"]) == ["acme"]
    assert sum(by_customer["series"]["acme"]) == reported_input + output
    for chart_id in ("chart-types", "chart-customers"):
        page.wait_for_selector(f"#{chart_id}[data-points]")
        assert int(page.get_attribute(f"#{chart_id}", "data-points")) >= 1
    # Margin: acme's billed is its preview; provider cost its tokens at the route's prices.
    preview = page.request.get(f"{stack['console']}/customers/acme/preview.json").json()
    (acme,) = [c for c in twin["margin_by_customer"] if c["customer"] == "acme"]
    assert Decimal(acme["billed"]) == Decimal(preview["invoice"]["total"])
    assert Decimal(acme["provider_cost"]) == Decimal(twin["provider_cost"])
    assert Decimal(acme["margin"]) == Decimal(acme["billed"]) - Decimal(acme["provider_cost"])
    (feature,) = [f for f in twin["margin_by_feature"] if f["feature"] == "ai-token"]
    # Every customer's ai-token line (beta has no usage: 0).
    assert Decimal(feature["billed"]) == reported_input
    assert Decimal(feature["provider_cost"]) == Decimal(150) * reported_input / 1_000_000
    (model,) = twin["margin_by_model"]
    assert (model["model"], Decimal(model["provider_cost"])) == (
        "gpt-4o-mini",
        Decimal(twin["provider_cost"]),
    )
    assert page.locator("#margin-customers tbody tr").count() == 1
    _shot(page, stack, "overview")
    _readme_shot(page, stack, "console-overview")
    # The feature's months on /margin: this month is the overview's row for it.
    page.click("#margin-features tr[data-feature=ai-token] a")
    page.wait_for_url(re.compile(r"/margin\?feature=ai-token$"))
    months = page.request.get(f"{stack['console']}/margin.json?feature=ai-token").json()
    this_month = months["months"][-1]
    assert Decimal(this_month["billed"]["USD"]) == Decimal(feature["billed"])
    assert Decimal(this_month["provider_cost"]) == Decimal(feature["provider_cost"])
    page.wait_for_selector("#chart-margin[data-points]")
    assert int(page.get_attribute("#chart-margin", "data-points")) == 3 * len(months["months"])
    _shot(page, stack, "margin")
    page.goto(f"{stack['console']}/overview")
    # A phone-width screen still shows the figures.
    page.set_viewport_size({"width": 390, "height": 844})
    page.reload()
    assert page.locator("#stat-requests").is_visible()
    _shot(page, stack, "overview-phone")


def _csrf(page: Page) -> str:
    return page.locator("input[name=csrf]").first.input_value()


def _portal_tokens(stack: dict[str, Any], customer: str) -> list[customers_pb2.PortalToken]:
    with grpc.insecure_channel(stack["cp"]) as channel:
        stub = customers_pb2_grpc.CustomerServiceStub(channel)
        request = customers_pb2.ListPortalTokensRequest(parent=f"customers/{customer}")
        return list(stub.ListPortalTokens(request).portal_tokens)


def test_read_token_changes_nothing_and_posts_need_csrf(
    stack: dict[str, Any], context: BrowserContext
) -> None:
    console = stack["console"]
    page = context.new_page()
    _sign_in(page, stack, stack["read"])
    page.goto(f"{console}/customers/beta")
    # The read operator sees no change form...
    assert page.locator("form[action$='/portal-tokens']").count() == 0
    before = len(_portal_tokens(stack, "beta"))
    # ...and a POST sent anyway, with its session and a valid CSRF token, is refused.
    refused = page.request.post(
        f"{console}/customers/beta/portal-tokens",
        form={"csrf": _csrf(page), "ttl_hours": "1"},
        headers={"Accept": "application/json"},
    )
    assert refused.status == 403
    assert "CreatePortalToken" in refused.json()["error"]
    # So is the same POST with the read token as a bearer header, outside any browser.
    direct = httpx.post(
        f"{console}/customers/beta/portal-tokens",
        data={"ttl_hours": "1"},
        headers={"Authorization": f"Bearer {stack['read']}", "Accept": "application/json"},
    )
    assert direct.status_code == 403
    assert len(_portal_tokens(stack, "beta")) == before

    # An admin's POST without the CSRF token (or with another one) is refused too...
    admin = context.browser.new_context()
    admin_page = admin.new_page()
    _sign_in(admin_page, stack, stack["admin"])
    for form in ({"ttl_hours": "1"}, {"ttl_hours": "1", "csrf": "forged"}):
        no_csrf = admin_page.request.post(
            f"{console}/customers/beta/portal-tokens",
            form=form,
            headers={"Accept": "application/json"},
        )
        assert no_csrf.status == 403
        assert "CSRF" in no_csrf.json()["error"]
    assert len(_portal_tokens(stack, "beta")) == before
    # ...and with it, through the page's own form, the change is made and shown once.
    admin_page.goto(f"{console}/customers/beta")
    admin_page.fill("#ttl_hours", "2")
    admin_page.click("text=Create a portal token")
    token = admin_page.inner_text("#new-portal-token")
    assert token.startswith("mlp_")
    assert token not in admin_page.url
    assert len(_portal_tokens(stack, "beta")) == before + 1
    admin.close()


def test_invoice_actions_admin_only(stack: dict[str, Any], context: BrowserContext) -> None:
    console = stack["console"]
    # Given beta's open-period invoice, created by the invoicing job...
    with grpc.insecure_channel(stack["cp"]) as channel:
        billing = billing_pb2_grpc.BillingServiceStub(channel)
        billing.CloseInvoices(billing_pb2.CloseInvoicesRequest())
        (invoice,) = billing.ListInvoices(
            billing_pb2.ListInvoicesRequest(parent="customers/beta")
        ).invoices
    assert invoice.state == billing_pb2.INVOICE_STATE_GATHERING
    # ...a read operator's issue is refused by the server.
    page = context.new_page()
    _sign_in(page, stack, stack["read"])
    page.goto(f"{console}/invoices?state=gathering")
    assert invoice.id in page.content()
    page.goto(f"{console}/invoices/{invoice.id}")
    assert page.locator("#action-issue").count() == 0
    refused = page.request.post(
        f"{console}/invoices/{invoice.id}/issue", form={"csrf": _csrf(page), "force": "1"}
    )
    assert refused.status == 403
    assert (
        page.request.get(f"{console}/invoices/{invoice.id}.json").json()["invoice"]["state"]
        == "INVOICE_STATE_GATHERING"
    )
    # An admin issues it, then voids it, with the page's buttons.
    admin = context.browser.new_context()
    admin_page = admin.new_page()
    _sign_in(admin_page, stack, stack["admin"])
    admin_page.goto(f"{console}/invoices/{invoice.id}")
    admin_page.click("#action-issue")
    admin_page.wait_for_url(re.compile(r"done=issue"))
    assert admin_page.inner_text("#invoice-state") == "issued"
    _shot(admin_page, stack, "invoice-issued")
    admin_page.click("#action-void")
    admin_page.wait_for_url(re.compile(r"done=void"))
    assert admin_page.inner_text("#invoice-state") == "void"
    admin.close()


def test_portal_token_sees_its_customer_only(
    stack: dict[str, Any], context: BrowserContext, reported_input: int
) -> None:
    console = stack["console"]
    created = meterline("portal-tokens", "create", "acme", "--ttl", "1h", "--cp", stack["cp"])
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    budget = meterline(
        "budgets", "create", "acme", "--amount", "1000", "--mode", "soft", "--cp", stack["cp"]
    )
    assert budget.returncode == 0, budget.stderr
    # The portal page in the browser: this period's usage, cost so far, the chart.
    page = context.new_page()
    page.goto(f"{console}/portal/signin")
    page.fill("#token", token)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/portal/customers/acme$"))
    page.wait_for_selector("#chart-portal[data-points]")
    assert page.inner_text("#stat-requests") == "6"
    assert page.inner_text("#stat-cost") == f"{reported_input:,}.00 USD"
    headers = page.request.get(f"{console}/portal/customers/acme").headers
    assert "frame-ancestors 'self' https://app.example.com" in headers["content-security-policy"]
    _shot(page, stack, "portal")
    _readme_shot(page, stack, "portal")
    twin = page.request.get(f"{console}/portal/customers/acme.json").json()
    assert twin["usage"]["tokens_by_type"]["input"] == reported_input
    assert "provider_cost" not in twin["usage"]
    (shown_budget,) = twin["budgets"]
    assert Decimal(shown_budget["amount"]) == 1000
    assert Decimal(shown_budget["spent"]) == reported_input  # 1 USD per input token
    assert page.locator("#budgets tbody tr").count() == 1
    # Another customer's page and JSON are 404; every operator page and change is refused.
    for path in ("/portal/customers/beta", "/portal/customers/beta.json"):
        assert page.request.get(f"{console}{path}").status == 404
    for path in (
        "/overview",
        "/overview.json",
        "/customers/acme.json",
        "/gateway",
        "/invoices",
        "/catalog",
        "/margin.json?customer=acme",
    ):
        assert page.request.get(f"{console}{path}", max_redirects=0).status == 403
    bearer = {"Authorization": f"Bearer {token}"}
    made = httpx.post(
        f"{console}/catalog/features",
        data={"key": "portal-made", "meter": "llm_tokens"},
        headers={**bearer, "Accept": "application/json"},
    )
    assert made.status_code == 403
    assert httpx.get(f"{console}/portal/customers/beta.json", headers=bearer).status_code == 404
    assert httpx.get(f"{console}/customers/acme.json", headers=bearer).status_code == 403
    assert httpx.get(f"{console}/portal/customers/acme.json", headers=bearer).status_code == 200
    # A revoked token stops working at once, in the open session too.
    (listed,) = [t for t in _portal_tokens(stack, "acme") if not t.HasField("revoke_time")]
    revoked = meterline("portal-tokens", "revoke", "acme", listed.id, "--cp", stack["cp"])
    assert revoked.returncode == 0, revoked.stderr
    assert httpx.get(f"{console}/portal/customers/acme.json", headers=bearer).status_code == 401
    assert page.request.get(f"{console}/portal/customers/acme.json").status == 401


def test_operator_pages_are_never_framed(stack: dict[str, Any]) -> None:
    headers = {"Authorization": f"Bearer {stack['read']}"}
    response = httpx.get(f"{stack['console']}/overview", headers=headers)
    assert response.status_code == 200
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert response.headers["x-frame-options"] == "DENY"


def test_usage_explorer_chart_and_csv(
    stack: dict[str, Any], context: BrowserContext, reported_input: int
) -> None:
    console = stack["console"]
    page = context.new_page()
    _sign_in(page, stack, stack["read"])
    query = "meter=llm_tokens&group_by=type&window=hour"
    page.goto(f"{console}/usage?{query}")
    page.wait_for_selector("#chart-explorer[data-points]")
    drawn = page.evaluate(
        """() => {
            const u = window.meterlineCharts["chart-explorer"];
            return {labels: u.series.slice(1).map(s => s.label), values: u.data.slice(1)};
        }"""
    )
    assert drawn["labels"] == ["input", "output"]
    assert sum(v or 0 for v in drawn["values"][0]) == reported_input
    _shot(page, stack, "usage-explorer")
    twin = page.request.get(f"{console}/usage.json?{query}").json()
    inputs = [r for r in twin["rows"] if r["group"]["type"] == "input"]
    assert sum(Decimal(r["value"]) for r in inputs) == reported_input
    assert sum(int(r["event_count"]) for r in inputs) == 6
    # The same query as CSV: a header, then one line per window and group.
    csv_text = page.request.get(f"{console}/usage.csv?{query}").text()
    header, *lines = csv_text.strip().splitlines()
    assert header == "window_start,window_end,type,value,events"
    input_lines = [line.split(",") for line in lines if line.split(",")[2] == "input"]
    assert sum(Decimal(cells[3]) for cells in input_lines) == reported_input
    # A bad query is a clear 400, not an empty chart.
    bad = page.request.get(f"{console}/usage.json?meter=llm_tokens&group_by=colour")
    assert bad.status == 400 and "colour" in bad.json()["error"]


def test_catalog_plan_versions_draft_publish(
    stack: dict[str, Any], context: BrowserContext, reported_input: int
) -> None:
    # Runs last: it adds a version of the walkthrough's plan (running subscriptions stay on 1).
    console = stack["console"]
    page = context.new_page()
    _sign_in(page, stack, stack["admin"])
    page.goto(f"{console}/catalog")
    assert "ai-token" in page.inner_text("main") and "provider=openai" in page.inner_text("main")
    page.click("tr[data-plan=starter-1] >> text=New version from this")
    page.wait_for_url(re.compile(r"done=new-version"))
    assert page.inner_text("tr[data-plan=starter-2] .state") == "draft"
    page.click("tr[data-plan=starter-2] >> text=Publish")
    page.wait_for_url(re.compile(r"done=publish"))
    assert page.inner_text("tr[data-plan=starter-2] .state") == "active"
    _shot(page, stack, "catalog")
    # The subscription stays on version 1, so the preview still bills the same tokens.
    preview = page.request.get(f"{console}/customers/acme/preview.json").json()
    assert Decimal(preview["invoice"]["lines"][0]["quantity"]) == reported_input
