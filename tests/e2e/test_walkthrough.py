"""The walkthrough end to end: requests through a data plane become a line on an invoice.

Whole processes (control plane, data plane, fake OpenAI provider), the official openai SDK as
the client and the meterline CLI as the operator, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import json
from decimal import Decimal

import grpc
import httpx
import openai
import pytest

from dataplane.testing.fake_openai import prompt_tokens
from meterline.admin.v1 import gateway_pb2, gateway_pb2_grpc, usage_pb2, usage_pb2_grpc
from support.processes import free_port, http_ready, meterline, wait_until

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
            options: {{upstream_url: "{upstream}/v1/chat/completions"}}
  - name: raw-service
    url: {upstream}
    routes:
      - name: raw
        paths: [/raw]
    plugins:
      - name: ai-proxy
        config:
          route_type: llm/v1/chat
          auth: {{header_name: Authorization, header_value: Bearer sk-upstream-secret}}
          model:
            provider: openai
            options: {{upstream_url: "{upstream}/v1/chat/completions"}}
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
"""

SUBSCRIPTION = """\
  subscriptions:
    - {customer: acme, plan: starter, start: now}
"""


def _messages(text: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": "You are a terse assistant."},
        {"role": "user", "content": text},
    ]


@pytest.fixture
def stack(processes, db_url, tmp_path):
    """Given a fake provider, a control plane with the gateway config, and a data plane."""
    upstream_port, cp_port, dp_port = free_port(), free_port(), free_port()
    upstream = f"http://127.0.0.1:{upstream_port}"
    processes.start(
        "fake", "-m", "dataplane.testing.fake_openai", "--listen", f"127.0.0.1:{upstream_port}"
    )
    cp = f"127.0.0.1:{cp_port}"
    processes.start("cp", "-m", "controlplane", "controlplane", "--db", db_url, "--listen", cp)
    wait_until(lambda: http_ready(f"{upstream}/_fake/requests", {200}), what="fake provider")

    gateway_file = tmp_path / "gateway.yaml"
    gateway_file.write_text(GATEWAY.format(upstream=upstream, key=KEY))
    applied = meterline("apply", str(gateway_file), "--cp", cp)
    assert applied.returncode == 0, applied.stderr + processes.logs()

    processes.start(
        "dp", "-m", "controlplane", "dataplane", "--cp", cp, "--listen", f"127.0.0.1:{dp_port}"
    )
    dp = f"http://127.0.0.1:{dp_port}"
    wait_until(lambda: http_ready(f"{dp}/nothing-here", {404}), what="data plane config")
    return {"cp": cp, "dp": dp, "upstream": upstream, "gateway_file": gateway_file}


def _usage_events(cp: str, expected: int) -> list[usage_pb2.UsageEvent]:
    with grpc.insecure_channel(cp) as channel:
        stub = usage_pb2_grpc.UsageServiceStub(channel)

        def fetch() -> list[usage_pb2.UsageEvent]:
            request = usage_pb2.ListUsageEventsRequest(page_size=1000)
            return list(stub.ListUsageEvents(request).usage_events)

        wait_until(lambda: len(fetch()) >= expected, what=f"{expected} usage events")
        return fetch()


def test_walkthrough_requests_become_an_invoice_line(stack, processes) -> None:
    dp, cp = stack["dp"], stack["cp"]
    client = openai.OpenAI(base_url=f"{dp}/chat", api_key=KEY, max_retries=0)

    # Given two requests before the subscription exists (one streamed)...
    client.chat.completions.create(model="gpt-4o-mini", messages=_messages("early bird one"))
    for _ in client.chat.completions.create(
        model="gpt-4o-mini", messages=_messages("early bird two streamed"), stream=True
    ):
        pass

    # ...when the subscription starts (the same file plus a subscriptions section)...
    full_file = stack["gateway_file"]
    full_file.write_text(full_file.read_text() + SUBSCRIPTION)
    applied = meterline("apply", str(full_file), "--cp", cp)
    assert applied.returncode == 0, applied.stderr
    assert "created subscription" in applied.stdout
    assert "created consumer" not in applied.stdout  # the rest was already there

    # ...and six requests go through the gateway, streamed and not...
    reported_input = 0
    reported_output = 0
    texts = ["one two three", "four five", "six seven eight nine", "ten", "eleven twelve", "x y z"]
    for text in texts[:2]:
        response = client.chat.completions.create(model="gpt-4o-mini", messages=_messages(text))
        assert response.object == "chat.completion"
        reported_input += response.usage.prompt_tokens
        reported_output += response.usage.completion_tokens
    # The apikey header works as well as the SDK's bearer token.
    header_client = openai.OpenAI(
        base_url=f"{dp}/chat", api_key="unused", default_headers={"apikey": KEY}, max_retries=0
    )
    response = header_client.chat.completions.create(
        model="gpt-4o-mini", messages=_messages(texts[2])
    )
    reported_input += response.usage.prompt_tokens
    reported_output += response.usage.completion_tokens

    # A stream that asks for usage sees the usage chunk.
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=_messages(texts[3]),
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].usage is not None and chunks[-1].choices == []
    reported_input += chunks[-1].usage.prompt_tokens
    reported_output += chunks[-1].usage.completion_tokens
    # Streams that did not ask never see a usage chunk; the fake's counts are recomputed from
    # the requests it received, with its documented rule.
    for text in texts[4:]:
        chunks = list(
            client.chat.completions.create(
                model="gpt-4o-mini", messages=_messages(text), stream=True
            )
        )
        assert all(chunk.usage is None for chunk in chunks)
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    received = httpx.get(f"{stack['upstream']}/_fake/requests").json()
    for request in received[-2:]:
        assert request["body"]["stream_options"] == {"include_usage": True}
        reported_input += prompt_tokens(request["body"]["messages"])
    # The gateway sent the configured key and model upstream, never the client's key.
    for request in received:
        assert request["headers"]["authorization"] == "Bearer sk-upstream-secret"
        assert "apikey" not in request["headers"]
        assert request["body"]["model"] == "gpt-4o-mini"

    # Then the preview bills exactly the input tokens of the six requests, at 1 USD each.
    events = _usage_events(cp, expected=2 * 8)
    preview = meterline("invoice", "preview", "acme", "--json", "--cp", cp)
    assert preview.returncode == 0, preview.stderr
    invoice = json.loads(preview.stdout)
    (line,) = invoice["lines"]
    assert line["feature"] == "ai-token"
    assert Decimal(line["quantity"]) == reported_input
    assert Decimal(line["unit_price"]) == 1
    assert Decimal(line["amount"]) == Decimal(reported_input).quantize(Decimal("0.01"))
    assert invoice["total"] == line["amount"]

    # Output tokens are metered (with the provider's exact counts) but not on this line.
    in_sub = [e for e in events if e.data["status_code"] == "200"]
    outputs = [e for e in in_sub if e.data["type"] == "output"]
    assert len(outputs) == 8
    assert sum(e.value for e in outputs) > reported_output  # includes the unseen streams
    # The early requests were metered too, yet are not on the invoice.
    assert sum(e.value for e in in_sub if e.data["type"] == "input") > reported_input

    table = meterline("invoice", "preview", "acme", "--cp", cp)
    assert "ai-token" in table.stdout and line["amount"] in table.stdout


def test_bad_requests_get_provider_shaped_errors_and_are_not_billed(stack) -> None:
    dp, cp = stack["dp"], stack["cp"]
    messages = _messages("hello there")

    # No key, wrong key: 401 with OpenAI-shaped JSON.
    anonymous = httpx.post(f"{dp}/chat/chat/completions", json={"messages": messages})
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["message"]
    wrong = openai.OpenAI(base_url=f"{dp}/chat", api_key="not-a-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.chat.completions.create(model="gpt-4o-mini", messages=messages)

    # Malformed JSON: 400.
    malformed = httpx.post(
        f"{dp}/chat/chat/completions",
        content=b'{"messages": [',
        headers={"apikey": KEY, "content-type": "application/json"},
    )
    assert malformed.status_code == 400
    assert "error" in malformed.json()

    # Unknown route: 404.
    unknown = httpx.post(f"{dp}/nope/chat/completions", json={}, headers={"apikey": KEY})
    assert unknown.status_code == 404
    assert unknown.json()["error"]["message"]

    # Upstream 500: passed through, recorded with status 500, not billed.
    client = openai.OpenAI(base_url=f"{dp}/raw", api_key=KEY, max_retries=0)
    with pytest.raises(openai.InternalServerError) as err:
        client.chat.completions.create(model="fail-500", messages=messages)
    assert err.value.status_code == 500
    events = _usage_events(cp, expected=2)
    assert {e.data["status_code"] for e in events} == {"500"}
    assert {e.data["route"] for e in events} == {"raw"}

    # None of this is billable: the subscription starts now, and the preview is zero.
    full_file = stack["gateway_file"]
    full_file.write_text(full_file.read_text() + SUBSCRIPTION)
    assert meterline("apply", str(full_file), "--cp", cp).returncode == 0
    preview = meterline("invoice", "preview", "acme", "--json", "--cp", cp)
    invoice = json.loads(preview.stdout)
    assert [(ln["quantity"], ln["amount"]) for ln in invoice["lines"]] == [("0", "0.00")]


def test_invalid_yaml_entry_is_a_clear_error_and_applies_nothing(stack, tmp_path) -> None:
    # Given a file that adds a consumer and a subscription but has one bad route path...
    bad = tmp_path / "bad.yaml"
    text = GATEWAY.format(upstream=stack["upstream"], key=KEY) + SUBSCRIPTION
    text = text.replace("paths: [/raw]", "paths: [raw]").replace(
        "consumers:\n", "consumers:\n  - username: newcomer\n"
    )
    bad.write_text(text)
    # ...applying it fails with a message naming the entry...
    result = meterline("apply", str(bad), "--cp", stack["cp"])
    assert result.returncode == 1
    assert "INVALID_ARGUMENT" in result.stderr and "raw" in result.stderr
    # ...and changes nothing.
    with grpc.insecure_channel(stack["cp"]) as channel:
        consumers = gateway_pb2_grpc.GatewayServiceStub(channel).ListConsumers(
            gateway_pb2.ListConsumersRequest()
        )
    assert [c.username for c in consumers.consumers] == ["acme-corp"]
    preview = meterline("invoice", "preview", "acme", "--cp", stack["cp"])
    assert preview.returncode == 1 and "no running subscription" in preview.stderr
