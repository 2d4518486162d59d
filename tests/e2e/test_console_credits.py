"""The console's credit pages and the portal's credits in a real browser (Debian's Chromium).

Grants, voids, top-ups and the recharge rule come from the credits page's forms; every figure
the page shows is checked against the CreditService's own answer over gRPC. A read token's
POST is refused (from its session and sent directly) and changes nothing; the portal shows the
customer's own balance and 404s another customer's. One control plane and browser for the module.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import grpc
import httpx
import pytest
from playwright.sync_api import BrowserContext, expect

from meterline.admin.v1 import (
    billing_pb2,
    billing_pb2_grpc,
    credits_pb2,
    credits_pb2_grpc,
    customers_pb2,
    customers_pb2_grpc,
    gateway_pb2,
    gateway_pb2_grpc,
    notifications_pb2,
    notifications_pb2_grpc,
)
from support.browser import operator_tokens, sign_in
from support.processes import Processes, free_port, http_ready, wait_until

CONFIG = """\
_format_version: "3.0"
billing:
  features:
    - {key: ai-token, meter: llm_tokens, filters: {provider: openai, type: input}}
  plans:
    - key: starter
      name: Starter
      currency: USD
      billing_cadence: P1M
      rate_cards:
        - {feature: ai-token, price: {type: unit, amount: "1"}}
  customers:
    - {key: acme, name: Acme Corp, subjects: [acme-corp]}
    - {key: beta, name: Beta Labs, subjects: [beta-app]}
  subscriptions:
    - {customer: acme, plan: starter, start: now}
    - {customer: beta, plan: starter, start: now}
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("console-credits")
    processes = Processes(tmp=tmp)
    tokens_file = tmp / "tokens.yaml"
    created = operator_tokens(tokens_file)
    cp_port, console_port = free_port(), free_port()
    cp = f"127.0.0.1:{cp_port}"
    console = f"http://127.0.0.1:{console_port}"
    try:
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
        )
        wait_until(lambda: http_ready(f"{console}/signin", {200}), what="console")
        channel = grpc.insecure_channel(cp)
        gateway_pb2_grpc.GatewayServiceStub(channel).ApplyConfig(
            gateway_pb2.ApplyConfigRequest(document=CONFIG)
        )
        yield {
            "cp": cp,
            "channel": channel,
            "console": console,
            "admin": created["admin"],
            "read": created["read"],
        }
        channel.close()
    finally:
        processes.stop_all()


def _credits(stack: dict[str, Any]) -> credits_pb2_grpc.CreditServiceStub:
    return credits_pb2_grpc.CreditServiceStub(stack["channel"])


def _balance(stack: dict[str, Any], customer: str = "acme") -> credits_pb2.CreditBalance:
    return _credits(stack).GetCreditBalance(
        credits_pb2.GetCreditBalanceRequest(customer=f"customers/{customer}")
    )


def _grants(stack: dict[str, Any], customer: str = "acme") -> list[credits_pb2.CreditGrant]:
    return list(
        _credits(stack)
        .ListCreditGrants(credits_pb2.ListCreditGrantsRequest(parent=f"customers/{customer}"))
        .credit_grants
    )


def _money(text: str) -> Decimal:
    return Decimal(text.split()[0].replace(",", ""))


def test_grant_void_top_up_and_recharge_rule_from_the_forms(
    stack: dict[str, Any], context: BrowserContext
) -> None:
    console = stack["console"]
    page = context.new_page()
    sign_in(page, stack["console"], stack["admin"])
    page.goto(f"{console}/customers/acme")
    page.click("#credits-link")
    page.wait_for_url(re.compile(r"/customers/acme/credits$"))
    assert page.locator("#credit-grants tbody").inner_text().strip() == "No grants."

    # Grant 20 USD (promotional, with a key and an expiry), then 5 USD external.
    page.fill("#grant-amount", "20")
    page.fill("#grant-key", "welcome")
    page.fill("#grant-expire", "2099-01-01T00:00:00")
    page.click("#new-grant button[type=submit]")
    page.wait_for_url(re.compile(r"/customers/acme/credits\?done=granted$"))
    page.fill("#grant-amount", "5.50")
    page.select_option("#grant-funding", "external")
    page.fill("#grant-priority", "3")
    page.click("#new-grant button[type=submit]")
    page.wait_for_url(re.compile(r"/customers/acme/credits\?done=granted$"))
    api = _balance(stack)
    assert Decimal(api.live) == Decimal("25.50") == Decimal(api.settled)
    assert _money(page.inner_text("#credit-live")) == Decimal(api.live)
    assert _money(page.inner_text("#credit-settled")) == Decimal(api.settled)
    assert page.inner_text("#credit-live") == "25.50 USD"
    assert _money(page.inner_text("#credit-pending")) == Decimal(api.pending) == 0
    grants = {g.key: g for g in _grants(stack)}
    welcome = grants["welcome"]
    assert welcome.funding == credits_pb2.CREDIT_FUNDING_PROMOTIONAL
    assert welcome.expire_time.ToDatetime().year == 2099
    row = page.locator(f"#credit-grants tr[data-grant='{welcome.id}']")
    assert row.locator(".remaining").inner_text() == "20.00 USD"
    assert "2099-01-01 00:00:00 UTC" in row.inner_text()
    # The JSON twin is the API's answer.
    twin = page.request.get(f"{console}/customers/acme/credits.json").json()
    assert Decimal(twin["balance"]["live"]) == Decimal(api.live)
    assert {g["key"] for g in twin["grants"]} == set(grants)
    assert [e["type"] for e in twin["ledger"]] == ["CREDIT_TRANSACTION_TYPE_FUNDED"] * 2
    assert "title" not in twin and twin["recharge_rule"] is None

    # Bad input: the servicer's error, nothing granted.
    page.fill("#grant-amount", "-3")
    page.click("#new-grant button[type=submit]")
    assert "must be above zero" in page.inner_text("main")
    assert len(_grants(stack)) == 2

    # Void the external grant: its remainder leaves the balance, ledgered.
    page.goto(f"{console}/customers/acme/credits")
    external = next(g for g in _grants(stack) if g.key != "welcome")
    page.click(f"#credit-grants tr[data-grant='{external.id}'] button")
    page.wait_for_url(re.compile(r"\?done=voided$"))
    assert Decimal(_balance(stack).live) == Decimal("20")
    assert page.inner_text("#credit-live") == "20.00 USD"
    assert page.locator("#credit-ledger tr[data-type=voided]").count() == 1
    assert page.locator(f"#credit-grants tr[data-grant='{external.id}'] button").count() == 0

    # A top-up issues the one-off invoice through the existing path (no credits before paid).
    page.fill("#top-up-amount", "50")
    page.click("#new-top-up button[type=submit]")
    page.wait_for_url(re.compile(r"/invoices/[^/?]+\?done=top-up$"))
    invoice_id = page.url.split("/invoices/")[1].split("?")[0]
    invoice = billing_pb2_grpc.BillingServiceStub(stack["channel"]).GetInvoice(
        billing_pb2.GetInvoiceRequest(name=f"invoices/{invoice_id}")
    )
    assert invoice.customer == "customers/acme"
    assert invoice.state == billing_pb2.INVOICE_STATE_ISSUED
    assert Decimal(invoice.total) == Decimal("50")
    assert Decimal(_balance(stack).live) == Decimal("20")
    # A second top-up while the first awaits payment: the servicer's refusal, no invoice.
    page.goto(f"{console}/customers/acme/credits")
    page.fill("#top-up-amount", "10")
    page.click("#new-top-up button[type=submit]")
    assert "awaits payment" in page.inner_text("main")
    listed = billing_pb2_grpc.BillingServiceStub(stack["channel"]).ListInvoices(
        billing_pb2.ListInvoicesRequest(parent="customers/acme")
    )
    assert sum(Decimal(i.total) == Decimal("10") for i in listed.invoices) == 0

    # The recharge rule: set, shown, then deleted.
    page.goto(f"{console}/customers/acme/credits")
    page.select_option("#rule-mode", "threshold")
    page.fill("#rule-threshold", "5")
    page.fill("#rule-amount", "25")
    page.click("#recharge-rule-form button[type=submit]")
    page.wait_for_url(re.compile(r"\?done=recharge-rule-set$"))
    rule = _credits(stack).GetCreditRechargeRule(
        credits_pb2.GetCreditRechargeRuleRequest(name="customers/acme/creditRechargeRule")
    )
    assert rule.mode == credits_pb2.CREDIT_RECHARGE_MODE_THRESHOLD
    assert Decimal(rule.threshold) == 5 and Decimal(rule.amount) == 25
    assert page.inner_text("#recharge-rule .mode") == "threshold"
    assert Decimal(page.inner_text("#recharge-rule .threshold")) == 5
    # A target rule without a target: the servicer's error, the threshold rule unchanged.
    page.select_option("#rule-mode", "target")
    page.click("#recharge-rule-form button[type=submit]")
    assert page.url.endswith("/customers/acme/credits/recharge-rule")
    again = _credits(stack).GetCreditRechargeRule(
        credits_pb2.GetCreditRechargeRuleRequest(name="customers/acme/creditRechargeRule")
    )
    assert again == rule
    page.goto(f"{console}/customers/acme/credits")
    page.click("#delete-recharge-rule button")
    page.wait_for_url(re.compile(r"\?done=recharge-rule-deleted$"))
    assert page.locator("#no-recharge-rule").count() == 1

    # A credit alert, from its form once a notification channel exists; a bad one refused.
    assert page.locator("#no-channels a[href='/alerts']").count() == 1
    notifications_pb2_grpc.NotificationServiceStub(stack["channel"]).CreateChannel(
        notifications_pb2.CreateChannelRequest(
            channel=notifications_pb2.NotificationChannel(
                key="ops",
                url="https://hooks.example.com/credits",
                signing_secret="a-signing-secret-of-32-characters!!",
            )
        )
    )
    page.goto(f"{console}/customers/acme/credits")
    page.fill("#alert-key", "low")
    page.select_option("#alert-channel", "ops")
    page.fill("#alert-percents", "50, 10")
    page.fill("#alert-amounts", "5")
    page.click("#new-credit-alert button[type=submit]")
    page.wait_for_url(re.compile(r"\?done=credit-alert-created$"))
    row = page.locator("#credit-alerts tr[data-credit-alert=low]")
    assert (row.locator(".percents").inner_text(), row.locator(".amounts").inner_text()) == (
        "50, 10",
        "5",
    )
    page.fill("#alert-key", "too-much")
    page.fill("#alert-percents", "150")
    page.click("#new-credit-alert button[type=submit]")
    expect(page.locator("p.error")).to_have_count(1)
    alerts = _credits(stack).ListCreditAlerts(
        credits_pb2.ListCreditAlertsRequest(parent="customers/acme")
    )
    assert [(a.key, list(a.percents), list(a.amounts)) for a in alerts.credit_alerts] == [
        ("low", ["50", "10"], ["5"])
    ]
    page.goto(f"{console}/customers/acme/credits")
    row.locator("button").click()
    page.wait_for_url(re.compile(r"\?done=credit-alert-deleted$"))
    assert page.locator("#credit-alerts tr[data-credit-alert]").count() == 0

    # The ledger pages by 50: 2 funded + 1 voided + 50 funded = 53 transactions.
    for i in range(50):
        _credits(stack).CreateCreditGrant(
            credits_pb2.CreateCreditGrantRequest(
                parent="customers/acme",
                credit_grant=credits_pb2.CreditGrant(amount="1", key=f"bulk-{i}"),
            )
        )
    page.goto(f"{console}/customers/acme/credits")
    assert page.locator("#credit-ledger tbody tr").count() == 50
    assert page.inner_text("#credit-live") == "70.00 USD"
    page.click("#ledger-next")
    expect(page.locator("#credit-ledger tbody tr")).to_have_count(3)
    expect(page.locator("#ledger-next")).to_have_count(0)


def test_read_token_sees_credits_and_changes_nothing(
    stack: dict[str, Any], context: BrowserContext
) -> None:
    console = stack["console"]
    page = context.new_page()
    sign_in(page, stack["console"], stack["read"])
    page.goto(f"{console}/customers/beta/credits")
    assert page.inner_text("#credit-live") == "0.00 USD"
    assert page.locator("form[action*='/credits/']").count() == 0  # no forms for a reader
    csrf = page.locator("input[name=csrf]").first.input_value()  # the sign-out form's
    before = len(_grants(stack, "beta"))
    # The reader's own session, with its CSRF token: refused on the server.
    refused = page.request.post(
        f"{console}/customers/beta/credits/grants",
        form={"csrf": csrf, "amount": "10", "funding": "promotional"},
        max_redirects=0,
    )
    assert refused.status == 403
    assert "scope read" in refused.text()
    bearer = {"Authorization": f"Bearer {stack['read']}", "Accept": "application/json"}
    for path, form in (
        ("/customers/beta/credits/grants", {"amount": "10"}),
        ("/customers/beta/credits/top-ups", {"amount": "10"}),
        ("/customers/beta/credits/recharge-rule", {"mode": "threshold", "threshold": "1"}),
        ("/customers/beta/credits/alerts", {"alert_key": "x", "channel": "ops", "percents": "5"}),
    ):
        answer = httpx.post(f"{console}{path}", data=form, headers=bearer)
        assert answer.status_code == 403, (path, answer.text)
    assert len(_grants(stack, "beta")) == before == 0
    listed = billing_pb2_grpc.BillingServiceStub(stack["channel"]).ListInvoices(
        billing_pb2.ListInvoicesRequest(parent="customers/beta")
    )
    assert len(listed.invoices) == 0 or all(
        i.state == billing_pb2.INVOICE_STATE_GATHERING for i in listed.invoices
    )
    # The admin token sent directly (no cookie, no CSRF needed) works: the refusal was scope.
    admin = {"Authorization": f"Bearer {stack['admin']}", "Accept": "application/json"}
    ok = httpx.post(
        f"{console}/customers/beta/credits/grants",
        data={"amount": "7", "grant_key": "direct"},
        headers=admin,
    )
    assert ok.status_code == 200, ok.text
    assert [g.key for g in _grants(stack, "beta")] == ["direct"]
    # A cookie session's POST without the CSRF token: refused.
    admin_page = context.new_page()
    sign_in(admin_page, stack["console"], stack["admin"])
    no_csrf = admin_page.request.post(
        f"{console}/customers/beta/credits/grants", form={"amount": "1"}, max_redirects=0
    )
    assert no_csrf.status == 403
    assert len(_grants(stack, "beta")) == 1


def test_portal_shows_own_credits_only(stack: dict[str, Any], context: BrowserContext) -> None:
    console = stack["console"]
    _credits(stack).CreateCreditGrant(
        credits_pb2.CreateCreditGrantRequest(
            parent="customers/beta",
            credit_grant=credits_pb2.CreditGrant(amount="3", key="portal-test"),
        )
    )
    created = customers_pb2_grpc.CustomerServiceStub(stack["channel"]).CreatePortalToken(
        customers_pb2.CreatePortalTokenRequest(parent="customers/beta", ttl_seconds=3600)
    )
    page = context.new_page()
    page.goto(f"{console}/portal/signin")
    page.fill("#token", created.token)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/portal/customers/beta$"))
    api = _balance(stack, "beta")
    assert page.inner_text("#credit-live") == f"{Decimal(api.live):,.2f} USD"
    assert Decimal(api.live) == Decimal("10")  # 7 (direct) + 3
    assert page.locator("#portal-credit-grants tbody tr").count() == 2
    twin = page.request.get(f"{console}/portal/customers/beta.json").json()
    assert Decimal(twin["credits"]["balance"]["live"]) == Decimal(api.live)
    # No spending yet: no burn rate and no run-out date, on the page as in the API.
    assert not api.burn_per_day and not api.HasField("run_out_time")
    assert page.inner_text("#credit-burn") == page.inner_text("#credit-run-out") == "\u2013"
    assert sorted(Decimal(g["remaining"]) for g in twin["credits"]["grants"]) == [3, 7]
    assert all("key" not in g for g in twin["credits"]["grants"])
    # Another customer's portal, page or JSON, and the operator credits pages: refused.
    for path in ("/portal/customers/acme", "/portal/customers/acme.json"):
        assert page.request.get(f"{console}{path}").status == 404
    for path in ("/customers/acme/credits", "/customers/beta/credits.json"):
        assert page.request.get(f"{console}{path}", max_redirects=0).status == 403
    bearer = {"Authorization": f"Bearer {created.token}", "Accept": "application/json"}
    assert httpx.get(f"{console}/portal/customers/acme.json", headers=bearer).status_code == 404
    assert (
        httpx.post(
            f"{console}/customers/beta/credits/grants", data={"amount": "1"}, headers=bearer
        ).status_code
        == 403
    )
    assert len(_grants(stack, "beta")) == 2
