"""Issue #20's "done when", as processes: a customer on a credit_only plan buys 20.00 of credits
through a Stripe invoice, spends them through the gateway with the openai SDK, is recharged
automatically by a threshold rule (the top-up invoice paid in the Stripe stand-in, its webhook,
the grant), and the ledger, the invoice lines and Stripe agree to the cent; and, without a rule,
is refused at zero (402 insufficient_credits, before the provider) until it buys more.

Control plane (Stripe from the environment, webhooks), data plane, fake OpenAI provider, the
Stripe stand-in over HTTP, the official openai SDK and the meterline CLI; SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import grpc
import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from meterline.admin.v1 import (
    billing_pb2,
    billing_pb2_grpc,
    credits_pb2,
    credits_pb2_grpc,
    usage_pb2,
    usage_pb2_grpc,
)
from support.processes import Processes, free_port, http_ready, meterline, wait_until
from support.stripe_emulator import StripeEmulator, running_stripe_emulator

API_KEY = "sk_test_e2e_credits"
WEBHOOK_SECRET = "whsec_e2e_credits"
KEY = "acme-secret-key"
PRICE = Decimal("0.25")  # per token, input and output alike
D = Decimal

DOCUMENT = """\
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
            options: {{upstream_url: "{upstream}/v1/chat/completions"}}
consumers:
  - username: acme-corp
    keyauth_credentials: [{{key: {key}}}]
plugins:
  - name: key-auth
billing:
  features:
    - {{key: tokens-in, meter: llm_tokens, filters: {{type: input}}}}
    - {{key: tokens-out, meter: llm_tokens, filters: {{type: output}}}}
  plans:
    - key: prepaid
      name: Prepaid
      currency: USD
      billing_cadence: P1M
      rate_cards:
        - feature: tokens-in
          price: {{type: unit, amount: "{price}"}}
          settlement_mode: credit_only
        - feature: tokens-out
          price: {{type: unit, amount: "{price}"}}
          settlement_mode: credit_only
  customers:
    - {{key: acme, name: Acme Corp, subjects: [acme-corp]}}
  subscriptions:
    - {{customer: acme, plan: prepaid, start: now}}
"""


def cli(*args: str, cp: str) -> Any:
    done = meterline(*args, "--cp", cp)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout) if done.stdout.strip() else None


def usage_events(cp: str) -> list[usage_pb2.UsageEvent]:
    with grpc.insecure_channel(cp) as channel:
        stub = usage_pb2_grpc.UsageServiceStub(channel)
        events = stub.ListUsageEvents(usage_pb2.ListUsageEventsRequest(page_size=1000))
        return list(events.usage_events)


def live_balance(cp: str) -> Decimal:
    """The live balance over gRPC (the loop polls it; the CLI is checked at the key steps)."""
    with grpc.insecure_channel(cp) as channel:
        stub = credits_pb2_grpc.CreditServiceStub(channel)
        found = stub.GetCreditBalance(
            credits_pb2.GetCreditBalanceRequest(customer="customers/acme")
        )
        return Decimal(found.live)


def grpc_invoice(cp: str, id: str) -> billing_pb2.Invoice:
    with grpc.insecure_channel(cp) as channel:
        stub = billing_pb2_grpc.BillingServiceStub(channel)
        return stub.GetInvoice(billing_pb2.GetInvoiceRequest(name=f"invoices/{id}"))


def synced(cp: str, id: str) -> bool:
    return grpc_invoice(cp, id).sync_state == billing_pb2.INVOICE_SYNC_STATE_SYNCED


def top_up_ids(cp: str) -> list[str]:
    """Top-up invoices are one-off: their period is [issue, issue)."""
    with grpc.insecure_channel(cp) as channel:
        stub = billing_pb2_grpc.BillingServiceStub(channel)
        found = stub.ListInvoices(
            billing_pb2.ListInvoicesRequest(parent="customers/acme", page_size=1000)
        )
    return [i.id for i in found.invoices if i.period_start_time == i.period_end_time]


@dataclass
class Stack:
    """The processes of one test and the steps every credit scenario takes."""

    cp: str
    dp: str
    upstream: str
    emulator: StripeEmulator

    def show(self) -> dict[str, Any]:
        return dict(cli("credits", "show", "acme", "-o", "json", cp=self.cp))

    def invoice(self, id: str) -> dict[str, Any]:
        return dict(cli("invoice", "show", id, "--json", cp=self.cp))

    def pay_in_stripe(self, id: str) -> str:
        """Wait for the invoice at Stripe, pay it there; its webhook makes it paid here."""
        wait_until(lambda: synced(self.cp, id), what="synced")
        stripe_id = grpc_invoice(self.cp, id).stripe_invoice_id
        self.emulator.client().v1.invoices.pay(stripe_id, {"paid_out_of_band": True})
        paid = billing_pb2.INVOICE_STATE_PAID
        wait_until(lambda: grpc_invoice(self.cp, id).state == paid, what="paid by webhook")
        assert self.invoice(id)["state"] == "paid"
        return stripe_id

    def served_version(self) -> str | None:
        """The config version the data plane serves (its /metrics)."""
        text = httpx.get(f"{self.dp}/metrics", timeout=5).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "meterline_dataplane_config_info" and sample.value == 1:
                    return str(sample.labels["version"])
        return None

    def buy(self, amount: str) -> tuple[str, str]:
        """A top-up of ``amount`` paid at Stripe and granted, the grant at the data plane too:
        (invoice id, Stripe id)."""
        before, served = live_balance(self.cp), self.served_version()
        bought = cli("credits", "top-up", "acme", "--amount", amount, "-o", "json", cp=self.cp)
        assert live_balance(self.cp) == before  # nothing before Stripe says paid
        stripe_id = self.pay_in_stripe(bought["invoice"])
        wait_until(lambda: live_balance(self.cp) > before, what="the top-up grant")
        # The data plane learns of the grant in a new snapshot, a moment later.
        wait_until(lambda: self.served_version() != served, what="the grant at the data plane")
        return str(bought["invoice"]), stripe_id


@pytest.fixture
def stack(processes: Processes, db_url: str) -> Iterator[Stack]:
    """Given a fake provider, a control plane with Stripe, the file, and a data plane."""
    upstream_port, cp_port, dp_port, webhook_port = (free_port() for _ in range(4))
    upstream = f"http://127.0.0.1:{upstream_port}"
    cp = f"127.0.0.1:{cp_port}"
    with running_stripe_emulator(
        api_key=API_KEY,
        webhook_secret=WEBHOOK_SECRET,
        webhook_url=f"http://127.0.0.1:{webhook_port}/stripe/webhook",
    ) as emulator:
        processes.start(
            "fake", "-m", "dataplane.testing.fake_openai", "--listen", f"127.0.0.1:{upstream_port}"
        )
        processes.start(
            "cp",
            "-m",
            "controlplane",
            "controlplane",
            "--db",
            db_url,
            "--listen",
            cp,
            "--webhook-listen",
            f"127.0.0.1:{webhook_port}",
            "--invoice-job-interval",
            "0.5",
            env={
                "METERLINE_STRIPE_API_KEY": API_KEY,
                "METERLINE_STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
                "METERLINE_STRIPE_API_BASE": emulator.url,
            },
        )
        wait_until(lambda: http_ready(f"{upstream}/_fake/requests", {200}), what="fake provider")
        document = DOCUMENT.format(upstream=upstream, key=KEY, price=PRICE)
        applied = meterline("apply", "-", "--cp", cp, input=document)
        assert applied.returncode == 0, applied.stderr + processes.logs()
        processes.start(
            "dp", "-m", "controlplane", "dataplane", "--cp", cp, "--listen", f"127.0.0.1:{dp_port}"
        )
        dp = f"http://127.0.0.1:{dp_port}"
        wait_until(lambda: http_ready(f"{dp}/nothing-here", {404}), what="data plane config")
        yield Stack(cp=cp, dp=dp, upstream=upstream, emulator=emulator)


@pytest.fixture
def client(stack: Stack) -> Iterator[openai.OpenAI]:
    """The openai SDK pointed at the data plane's route, as an application uses it."""
    with openai.OpenAI(base_url=f"{stack.dp}/chat", api_key=KEY, max_retries=0) as found:
        yield found


# One backend for this whole-process test (it is the slowest of the suite): PostgreSQL, where
# concurrent burn and the recharge's locks matter; the same paths run on SQLite in
# tests/integration (test_credits_gateway.py, test_credit_recharge.py).
@pytest.mark.parametrize(
    "db_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_credit_only_customer_buys_spends_and_is_recharged(
    stack: Stack, client: openai.OpenAI
) -> None:
    cp, emulator, show, invoice = stack.cp, stack.emulator, stack.show, stack.invoice
    # When the customer buys 20.00 of credits: a top-up invoice, paid at Stripe
    bought, first_stripe = stack.buy("20")
    assert show()["settled"] == "20.00"

    # And a threshold rule: below 5.00, buy 20.00 (one top-up per period at most)
    rule = cli(
        "credits", "recharge", "set", "acme", "--threshold", "5", "--amount", "20",
        "--max-count", "1", "-o", "json", cp=cp,
    )  # fmt: skip
    assert (rule["mode"], rule["threshold"], rule["amount"]) == ("threshold", "5", "20")

    # And spends through the gateway until the live balance falls below 5.00
    sent = 0
    while live_balance(cp) >= 5:
        assert sent < 40, "the balance never fell below the threshold"
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": f"tell me about credits, part {sent}"}],
        )
        sent += 1
        # Each request's usage (input and output) is stored before the balance is judged.
        expected = 2 * sent
        wait_until(lambda: len(usage_events(cp)) == expected, what="usage stored")  # noqa: B023

    # Then auto-recharge issues one 20.00 top-up invoice, synced to Stripe, not yet granted
    def top_ups() -> list[dict[str, Any]]:
        listed = cli("invoice", "list", "--customer", "acme", "-o", "json", cp=cp)
        return [row for row in listed if row["period_start"] == row["period_end"]]

    wait_until(lambda: len(top_up_ids(cp)) == 2, what="the automatic top-up")
    [recharge] = [row for row in top_ups() if row["id"] != bought]
    assert recharge["total"] == "20.00"
    assert show()["settled"] == "20.00"

    # When Stripe collects it, the webhook grants it
    second_stripe = stack.pay_in_stripe(recharge["id"])
    wait_until(lambda: live_balance(cp) > 20, what="the recharge grant")
    assert show()["settled"] == "40.00"
    assert len(top_ups()) == 2  # the rule fired once

    # And the period's invoice is issued (forced: the month is not over)
    usage_cost = PRICE * sum(event.value for event in usage_events(cp))
    [period] = [
        row
        for row in cli("invoice", "list", "--customer", "acme", "-o", "json", cp=cp)
        if row["period_start"] != row["period_end"]
    ]
    issued = cli("invoice", "issue", period["id"], "--force", "--json", cp=cp)
    wait_until(lambda: synced(cp, period["id"]), what="synced")

    # Then the ledger, the invoice lines and Stripe agree to the cent
    lines = issued["lines"]
    usage_lines = [line for line in lines if line["type"] == "usage"]
    credit_lines = [line for line in lines if line["type"] == "credit"]
    assert sum(D(line["amount"]) for line in usage_lines) == usage_cost
    assert sum(D(line["amount"]) for line in credit_lines) == -usage_cost
    assert D(issued["total"]) == 0  # credit_only: never invoiced beyond credits

    ledger = cli("credits", "ledger", "acme", "-o", "json", cp=cp)
    funded = [entry for entry in ledger if entry["type"] == "funded"]
    consumed = [entry for entry in ledger if entry["type"] == "consumed"]
    assert [D(entry["amount"]) for entry in funded] == [D("20.00"), D("20.00")]
    assert sorted(D(e["amount"]) for e in consumed) == sorted(
        D(line["amount"]) for line in credit_lines
    )
    assert all(entry["invoice"] == period["id"] for entry in consumed)

    grants = {grant["key"]: grant for grant in show()["grants"]}
    assert set(grants) == {f"top-up-{bought}", f"top-up-{recharge['id']}"}
    balance = show()
    assert D(balance["settled"]) == D(40) - usage_cost
    assert D(balance["live"]) == D(balance["settled"])

    stripe_top_ups = [emulator.invoices[first_stripe], emulator.invoices[second_stripe]]
    assert [(i["status"], i["total"]) for i in stripe_top_ups] == [("paid", 2000)] * 2
    stripe_period = emulator.invoices[str(invoice(period["id"])["stripe_invoice_id"])]
    assert stripe_period["total"] == 0
    items = emulator.items_of(stripe_period["id"])
    cents = sorted(int(item["amount"]) for item in items)
    expected = sorted(int(D(line["amount"]) * 100) for line in lines if D(line["amount"]) != 0)
    assert cents == expected

    # And `credits show` gives the burn rate since the first spending sample (taken when the
    # credits were bought) and the run-out it projects, in JSON and in the table
    outlook = show()
    spent, since = D(outlook["spent_in_window"]), outlook["burn_window_start"]
    assert spent == usage_cost  # all the spending happened after the first sample
    assert D(outlook["burn_per_day"]) > 0 and outlook["run_out_time"] > since
    table = meterline("credits", "show", "acme", "--cp", cp)
    assert table.returncode == 0, table.stderr
    assert f"live      {balance['live']} USD" in table.stdout
    assert re.search(
        rf"burn      ~?\d+\.\d{{4}} USD/day over the last 7 days \(since {since}\)", table.stdout
    ), table.stdout
    assert re.search(r"run-out   \d{4}-\d\d-\d\dT", table.stdout), table.stdout


def test_credit_only_refused_at_zero_before_the_provider(
    stack: Stack, client: openai.OpenAI
) -> None:
    """The data plane refuses a credit_only customer once its credits are spent (402
    insufficient_credits, the provider never called), and serves it again after a top-up."""
    cp = stack.cp
    # Given 5.00 of credits bought through Stripe, and no recharge rule
    stack.buy("5")

    def provider_calls() -> int:
        return len(httpx.get(f"{stack.upstream}/_fake/requests").json())

    # When the customer spends until the gateway refuses
    sent, last_cost = 0, D(0)
    refused: openai.APIStatusError | None = None
    while refused is None:
        assert sent < 40, "the gateway never refused"
        calls = provider_calls()
        try:
            answer = client.chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": f"spend it all, part {sent}"}],
            )
        except openai.APIStatusError as exc:
            refused = exc
            # Then the refusal came before the provider was called
            assert provider_calls() == calls
            break
        assert answer.usage is not None
        last_cost = PRICE * answer.usage.total_tokens
        sent += 1
        expected = 2 * sent
        wait_until(lambda: len(usage_events(cp)) >= expected, what="usage stored")  # noqa: B023

    # Then it is a provider-shaped 402 insufficient_credits
    assert refused.status_code == 402
    assert refused.code == "insufficient_credits", refused.body
    # And the overshoot is at most the one request admitted last (1 data plane, 1 client)
    spent = PRICE * sum(event.value for event in usage_events(cp))
    assert D(5) <= spent <= D(5) + last_cost
    assert live_balance(cp) == 0

    # When 20.00 more is bought, the gateway serves the customer again
    stack.buy("20")
    wait_until(lambda: _served(client), what="served after the top-up")


def _served(client: openai.OpenAI) -> bool:
    try:
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "back in business"}]
        )
    except openai.APIStatusError as exc:
        assert exc.status_code == 402
        return False
    return True
