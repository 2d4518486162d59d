"""Bedrock end to end: boto3 and the openai SDK through a data plane in front of the fake
Bedrock become exact lines on an invoice.

Whole processes (control plane on SQLite, data plane, fake Bedrock), the config applied with
the meterline CLI from a decK file in Kong's field names.
"""

from __future__ import annotations

import json
from decimal import Decimal

import boto3
import openai
from botocore.config import Config

from dataplane.testing.fake_bedrock import TEST_ACCESS_KEY_ID, TEST_SECRET_ACCESS_KEY
from support.processes import free_port, http_ready, meterline, wait_until

KEY = "acme-secret-key"
MODEL = "anthropic.claude-3-haiku-20240307-v1:0"

GATEWAY = """\
_format_version: "3.0"
services:
  - name: bedrock
    url: {upstream}
    routes:
      - {{name: native, paths: [/bedrock]}}
      - {{name: translated, paths: [/openai]}}
consumers:
  - username: acme-corp
    keyauth_credentials: [{{key: {key}}}]
plugins:
  - name: key-auth
  - name: ai-proxy
    route: native
    config:
      route_type: llm/v1/chat
      llm_format: bedrock
      auth: {{aws_access_key_id: {key_id}, aws_secret_access_key: "{secret}"}}
      model:
        provider: bedrock
        options: {{upstream_url: "{upstream}", bedrock: {{aws_region: us-east-1}}}}
  - name: ai-proxy
    route: translated
    config:
      route_type: llm/v1/chat
      auth: {{aws_access_key_id: {key_id}, aws_secret_access_key: "{secret}"}}
      model:
        provider: bedrock
        name: {model}
        options: {{upstream_url: "{upstream}", bedrock: {{aws_region: us-east-1}}}}
billing:
  features:
    - {{key: bedrock-in, meter: llm_tokens, filters: {{provider: bedrock, type: input}}}}
    - {{key: bedrock-out, meter: llm_tokens, filters: {{provider: bedrock, type: output}}}}
  plans:
    - key: starter
      name: Starter
      currency: USD
      billing_cadence: P1M
      rate_cards:
        - feature: bedrock-in
          price: {{type: unit, amount: "1"}}
          entitlement: {{type: boolean}}
        - feature: bedrock-out
          price: {{type: unit, amount: "2"}}
          entitlement: {{type: boolean}}
  customers:
    - {{key: acme, name: Acme Corp, subjects: [acme-corp]}}
  subscriptions:
    - {{customer: acme, plan: starter, start: "2020-01-01T00:00:00Z"}}
"""


def test_bedrock_usage_is_invoiced_exactly(processes, tmp_path) -> None:
    # Given a fake Bedrock, a control plane with the config, and a data plane...
    upstream_port, cp_port, dp_port = free_port(), free_port(), free_port()
    upstream = f"http://127.0.0.1:{upstream_port}"
    processes.start(
        "fake", "-m", "dataplane.testing.fake_bedrock", "--listen", f"127.0.0.1:{upstream_port}"
    )
    cp = f"127.0.0.1:{cp_port}"
    db = f"sqlite:///{tmp_path / 'meterline.db'}"
    processes.start("cp", "-m", "controlplane", "controlplane", "--db", db, "--listen", cp)
    wait_until(lambda: http_ready(f"{upstream}/_fake/requests", {200}), what="fake bedrock")
    gateway_file = tmp_path / "gateway.yaml"
    gateway_file.write_text(
        GATEWAY.format(
            upstream=upstream,
            key=KEY,
            key_id=TEST_ACCESS_KEY_ID,
            secret=TEST_SECRET_ACCESS_KEY,
            model=MODEL,
        )
    )
    applied = meterline("apply", str(gateway_file), "--cp", cp)
    assert applied.returncode == 0, applied.stderr + processes.logs()
    processes.start(
        "dp", "-m", "controlplane", "dataplane", "--cp", cp, "--listen", f"127.0.0.1:{dp_port}"
    )
    dp = f"http://127.0.0.1:{dp_port}"
    wait_until(lambda: http_ready(f"{dp}/nothing-here", {404}), what="data plane config")

    # ...when boto3 calls Converse and ConverseStream on the native route...
    runtime = boto3.client(
        "bedrock-runtime",
        endpoint_url=f"{dp}/bedrock",
        region_name="us-east-1",
        aws_access_key_id="AKIACLIENTJUNK000000",
        aws_secret_access_key="client-junk",
        config=Config(retries={"total_max_attempts": 1}),
    )
    runtime.meta.events.register(
        "before-sign.bedrock-runtime.*",
        lambda request, **_: request.headers.__setitem__("apikey", KEY),
    )
    messages = [{"role": "user", "content": [{"text": "one two three"}]}]
    answer = runtime.converse(modelId=MODEL, messages=messages)
    reported = [answer["usage"]]
    events = list(runtime.converse_stream(modelId=MODEL, messages=messages)["stream"])
    reported.append(events[-1]["metadata"]["usage"])

    # ...and the openai SDK on the translated route, streamed and not...
    client = openai.OpenAI(base_url=f"{dp}/openai", api_key=KEY, max_retries=0)
    chat = [{"role": "user", "content": "four five six seven"}]
    completion = client.chat.completions.create(model="any", messages=chat)
    reported.append(
        {
            "inputTokens": completion.usage.prompt_tokens,
            "outputTokens": completion.usage.completion_tokens,
        }
    )
    chunks = list(
        client.chat.completions.create(
            model="any", messages=chat, stream=True, stream_options={"include_usage": True}
        )
    )
    reported.append(
        {
            "inputTokens": chunks[-1].usage.prompt_tokens,
            "outputTokens": chunks[-1].usage.completion_tokens,
        }
    )
    # ...and one request Bedrock refuses (recorded, never billed).
    refused = openai.OpenAI(
        base_url=f"{dp}/openai",
        api_key=KEY,
        max_retries=0,
        default_headers={"x-fake-status": "429"},
    )
    try:
        refused.chat.completions.create(model="any", messages=chat)
    except openai.RateLimitError:
        pass
    else:  # pragma: no cover - the fake must refuse
        raise AssertionError("the fake did not refuse")

    # Then the invoice bills exactly the tokens Bedrock reported.
    expected_in = sum(usage["inputTokens"] for usage in reported)
    expected_out = sum(usage["outputTokens"] for usage in reported)
    invoices: list[dict] = []

    def invoiced() -> bool:
        invoices.append(_preview(cp))
        return (_quantity(invoices[-1], "bedrock-in"), _quantity(invoices[-1], "bedrock-out")) == (
            expected_in,
            expected_out,
        )

    wait_until(invoiced, what="every request on the invoice")
    invoice = invoices[-1]
    assert Decimal(invoice["total"]) == Decimal(expected_in + 2 * expected_out).quantize(
        Decimal("0.01")
    )


def _preview(cp: str) -> dict:
    preview = meterline("invoice", "preview", "acme", "--json", "--cp", cp)
    assert preview.returncode == 0, preview.stderr
    return json.loads(preview.stdout)


def _quantity(invoice: dict, feature: str) -> Decimal:
    return sum(
        (Decimal(line["quantity"]) for line in invoice["lines"] if line["feature"] == feature),
        Decimal(0),
    )
