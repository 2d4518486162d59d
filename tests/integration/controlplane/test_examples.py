"""Every file in examples/ applies, with the CLI, against a real control plane, and does what
its comments say; applying it again changes nothing."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import openai
import pytest
import yaml

from controlplane.cli.main import main
from dataplane.http.server import serve_http
from dataplane.proxy.compiler import compile_snapshot
from dataplane.proxy.gateway import Gateway
from dataplane.testing.fake_anthropic import FakeAnthropic
from dataplane.testing.fake_openai import FakeProvider
from meterline.admin.v1 import billing_pb2, gateway_pb2
from meterline.dataplane.v1 import config_pb2
from meterline.dataplane.v1 import usage_pb2 as dp_usage_pb2

EXAMPLES = Path(__file__).parents[3] / "examples"


@pytest.fixture
def cli(harness, capsys: pytest.CaptureFixture[str]):
    async def run(*args: str) -> tuple[int, str, str]:
        code = await asyncio.to_thread(main, [*args, "--cp", harness.address])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def test_every_example_is_tested() -> None:
    # openai.yaml (README, "Your own gateway") and meters.yaml (docs/billing.md) are applied by
    # the commands of those pages, run in tests/e2e/test_doc_commands.py.
    assert sorted(p.name for p in EXAMPLES.glob("*.yaml")) == [
        "budgets-alerts.yaml",
        "failover.yaml",
        "meters.yaml",
        "openai.yaml",
        "tiered-pricing.yaml",
        "walkthrough.yaml",
    ]


async def _apply_twice(cli, name: str) -> str:
    code, out, err = await cli("apply", str(EXAMPLES / name))
    assert code == 0, err
    code, again, err = await cli("apply", str(EXAMPLES / name))
    assert code == 0 and again.startswith("nothing to change"), again + err
    return out


async def test_walkthrough(harness, cli) -> None:
    out = await _apply_twice(cli, "walkthrough.yaml")
    assert "created route chat" in out and "created subscription" in out
    _, out, _ = await cli("routes", "get", "chat", "-o", "json")
    assert json.loads(out)["paths"] == ["/chat"]
    _, out, _ = await cli("plugins", "list", "-o", "yaml")
    proxy = next(p for p in yaml.safe_load(out) if p["plugin_name"] == "ai-proxy")
    upstream = proxy["config"]["model"]["options"]["upstream_url"]
    assert upstream == "http://127.0.0.1:8900/v1/chat/completions"  # meterline fake-provider
    _code, out, _ = await cli("entitlements", "list", "acme", "-o", "json")
    (metered,) = json.loads(out)
    assert (metered["feature"], metered["limit"], metered["has_access"]) == (
        "input-tokens",
        500000,
        True,
    )


async def test_tiered_pricing(harness, cli) -> None:
    await _apply_twice(cli, "tiered-pricing.yaml")
    _code, out, _ = await cli("plans", "get", "growth", "-o", "json")
    cards = {c.get("feature") or c["key"]: c for c in json.loads(out)["rate_cards"]}
    assert set(cards) == {"platform", "input-tokens", "output-tokens"}
    # The flat fee is invoiced in advance: the preview of a fresh subscription shows it.
    preview = await harness.billing.PreviewInvoice(
        billing_pb2.PreviewInvoiceRequest(customer="customers/acme")
    )
    assert Decimal(preview.total) == Decimal("49.00")


async def test_budgets_and_alerts(harness, cli) -> None:
    await _apply_twice(cli, "budgets-alerts.yaml")
    code, out, _ = await cli("entitlements", "list", "-o", "json")
    assert sorted((v["customer"], v["feature"], v["limit"]) for v in json.loads(out)) == [
        ("acme", "all-tokens", 1000000),
        ("globex", "all-tokens", 1000000),
    ]
    code, out, _ = await cli("budgets", "list", "acme", "--json")
    assert code == 0
    (budget,) = json.loads(out)
    assert (budget["amount"], budget["mode"]) == ("100", "hard")
    code, out, _ = await cli("notifications", "rules", "list", "--json")
    assert code == 0
    assert sorted(r["key"] for r in json.loads(out)) == ["invoices", "money", "tokens"]


async def test_failover_bills_the_provider_that_answered(harness, cli) -> None:
    # Given the example applied with the fakes at its addresses replaced by in-process ones,
    # OpenAI failing with 500
    openai_fake, anthropic_fake = FakeProvider(status=500), FakeAnthropic()
    async with serve_http(openai_fake) as primary, serve_http(anthropic_fake) as secondary:
        text = (
            (EXAMPLES / "failover.yaml")
            .read_text()
            .replace("http://127.0.0.1:8900", primary.url)
            .replace("http://127.0.0.1:8901", secondary.url)
        )
        applied = await harness.gateway.ApplyConfig(gateway_pb2.ApplyConfigRequest(document=text))
        assert "created plugin ai-proxy-advanced (llm)" in applied.changes
        call = harness.config_stream.StreamConfig()
        await call.write(config_pb2.ConfigRequest(node=config_pb2.Node(id="dp-1", hostname="h")))
        pushed = await asyncio.wait_for(call.read(), 5)
        call.cancel()
        events: list[dp_usage_pb2.UsageEvent] = []
        gateway = Gateway(node_id="dp-1", usage_sink=events.append)
        gateway.apply(compile_snapshot(pushed.snapshot, version=pushed.version_info))
        try:
            async with serve_http(gateway) as address:
                client = openai.AsyncOpenAI(
                    base_url=f"{address.url}/smart", api_key="acme-secret-key", max_retries=0
                )
                async with client:
                    # When a client asks for the alias "smart"
                    completion = await client.chat.completions.create(
                        model="smart", messages=[{"role": "user", "content": "one two three"}]
                    )
        finally:
            await gateway.aclose()
    # Then Anthropic answered, in OpenAI's shape, after OpenAI's 500
    assert completion.choices[0].message.content.startswith("fake reply:")
    assert len(openai_fake.requests) == 1 and len(anthropic_fake.requests) == 1

    # And only Anthropic's tokens are billed
    at = harness.clock.now() + timedelta(minutes=5)
    for event in events:
        event.time.FromDatetime(at)
    stream = harness.usage_stream.StreamUsage()
    await stream.write(dp_usage_pb2.UsageBatch(batch_id="b1", events=events))
    assert (await stream.read()).accepted_count == len(events)
    await stream.done_writing()
    harness.clock.set(at + timedelta(minutes=1))
    invoice = await harness.billing.PreviewInvoice(
        billing_pb2.PreviewInvoiceRequest(customer="customers/acme")
    )
    usage = completion.usage
    assert usage is not None
    billed = {line.feature: Decimal(line.quantity) for line in invoice.lines}
    assert billed == {
        "openai-tokens": Decimal(0),
        "anthropic-tokens": Decimal(usage.prompt_tokens + usage.completion_tokens),
    }
