"""ai-proxy-advanced end to end: declarative YAML -> control plane -> snapshot over the config
stream -> data plane -> failover -> usage stream -> stored events and the invoice.

One request whose primary answers 500: the invoice bills the secondary's tokens only; the
failed attempt is stored with its status and no tokens; both carry their latency.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import grpc
import openai
import pytest

from dataplane.http.server import serve_http
from dataplane.proxy.compiler import compile_snapshot
from dataplane.proxy.gateway import Gateway
from dataplane.testing.fake_openai import FakeProvider
from meterline.admin.v1 import billing_pb2, gateway_pb2, usage_pb2
from meterline.dataplane.v1 import config_pb2
from meterline.dataplane.v1 import usage_pb2 as dp_usage_pb2

KEY = "acme-secret-key"

DOCUMENT = """\
_format_version: "3.0"
services:
  - name: ai-service
    url: http://127.0.0.1:9/
    routes:
      - name: lb
        paths: [/lb]
    plugins:
      - name: ai-proxy-advanced
        config:
          model_allow_list: [gpt-4o-mini]
          model_aliases: {fast: gpt-4o-mini}
          balancer:
            algorithm: priority
            failover_criteria: [error, timeout, http_500]
            retries: 1
            max_fails: 3
            fail_timeout: 5000
            read_timeout: 2000
          targets:
            - model:
                provider: openai
                name: gpt-4o-mini
                options: {upstream_url: "PRIMARY/v1/chat/completions"}
              auth: {header_name: Authorization, header_value: Bearer sk-primary}
              priority: 1
              description: primary
            - model:
                provider: openai_compatible
                name: gpt-4o-mini
                options: {upstream_url: "SECONDARY/v1/chat/completions"}
              auth: {header_name: Authorization, header_value: Bearer sk-secondary}
              priority: 2
              description: secondary
consumers:
  - username: acme-corp
    keyauth_credentials: [{key: acme-secret-key}]
plugins:
  - name: key-auth
billing:
  features:
    - {key: ai-token, meter: llm_tokens, filters: {type: input}}
  plans:
    - key: starter
      name: Starter
      currency: USD
      billing_cadence: P1M
      rate_cards:
        - {feature: ai-token, price: {type: unit, amount: "1"}, entitlement: {type: boolean}}
  customers:
    - {key: acme, name: Acme Corp, subjects: [acme-corp]}
  subscriptions:
    - {customer: acme, plan: starter, start: now}
"""


async def test_failover_usage_is_billed_for_the_secondary_only(harness) -> None:
    primary, secondary = FakeProvider(status=500), FakeProvider()
    async with serve_http(primary) as p, serve_http(secondary) as s:
        # Given the YAML applied and the snapshot a data plane receives from the control plane.
        document = DOCUMENT.replace("PRIMARY", p.url).replace("SECONDARY", s.url)
        await harness.gateway.ApplyConfig(gateway_pb2.ApplyConfigRequest(document=document))
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
                    base_url=f"{address.url}/lb", api_key=KEY, max_retries=0
                )
                async with client:
                    # When a client asks for the "fast" alias...
                    completion = await client.chat.completions.create(
                        model="fast", messages=[{"role": "user", "content": "one two three"}]
                    )
                    # ...and for a model the route does not allow.
                    with pytest.raises(openai.BadRequestError):
                        await client.chat.completions.create(
                            model="gpt-4o", messages=[{"role": "user", "content": "no"}]
                        )
        finally:
            await gateway.aclose()
    assert len(primary.requests) == 1 and len(secondary.requests) == 1

    # Then the usage reaches the control plane over the usage stream (stamped inside the
    # subscription, whose clock is frozen).
    at = harness.clock.now() + timedelta(minutes=5)
    for event in events:
        event.time.FromDatetime(at)
    stream = harness.usage_stream.StreamUsage()
    await stream.write(dp_usage_pb2.UsageBatch(batch_id="b1", events=events))
    ack = await stream.read()
    await stream.done_writing()
    assert (ack.accepted_count, ack.duplicate_count) == (4, 0)
    harness.clock.set(at + timedelta(minutes=1))

    stored = await harness.usage.ListUsageEvents(usage_pb2.ListUsageEventsRequest())
    by_status: dict[str, list] = {}
    for event in stored.usage_events:
        by_status.setdefault(event.data["status_code"], []).append(event)
    assert set(by_status) == {"200", "500"}
    assert sum(e.value for e in by_status["500"]) == 0
    assert {e.data["provider"] for e in by_status["500"]} == {"openai"}
    assert {e.data["provider"] for e in by_status["200"]} == {"openai_compatible"}
    assert all("time_to_first_token_ms" not in e.data for e in by_status["500"])
    for event in by_status["200"]:
        assert int(event.data["time_to_first_token_ms"]) <= int(event.data["latency_ms"])

    # And the invoice bills the secondary's input tokens, once.
    invoice = await harness.billing.PreviewInvoice(
        billing_pb2.PreviewInvoiceRequest(customer="customers/acme")
    )
    prompt = completion.usage.prompt_tokens
    assert [(ln.feature, ln.quantity) for ln in invoice.lines] == [("ai-token", str(prompt))]


@pytest.mark.parametrize(
    ("balancer", "message"),
    [
        pytest.param("{algorithm: fastest}", "balancer.algorithm must be one of", id="algorithm"),
        pytest.param(
            "{algorithm: consistent-hashing}", "hash_on_header is required", id="no-hash-header"
        ),
        pytest.param("{algorithm: priority}", "at least two priority groups", id="no-priorities"),
        pytest.param("{algorithm: cost}", "needs targets[0].model.options.input_cost", id="cost"),
        pytest.param("{failover_criteria: [http_418]}", '"http_418"', id="criterion"),
        pytest.param("{max_fails: -1}", "max_fails must be at least 0", id="max-fails"),
    ],
)
async def test_bad_balancer_configs_are_refused_and_change_nothing(
    harness, balancer, message
) -> None:
    document = (
        DOCUMENT.replace("PRIMARY", "http://127.0.0.1:9")
        .replace("SECONDARY", "http://127.0.0.1:9")
        .replace(
            """          balancer:
            algorithm: priority
            failover_criteria: [error, timeout, http_500]
            retries: 1
            max_fails: 3
            fail_timeout: 5000
            read_timeout: 2000
""",
            f"          balancer: {balancer}\n",
        )
        .replace("              priority: 1\n", "")
        .replace("              priority: 2\n", "")
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await harness.gateway.ApplyConfig(gateway_pb2.ApplyConfigRequest(document=document))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in caught.value.details()
    routes = await harness.gateway.ListRoutes(gateway_pb2.ListRoutesRequest())
    assert list(routes.routes) == []


async def test_bad_target_weight_and_alias_are_refused(harness) -> None:
    document = (
        DOCUMENT.replace("PRIMARY", "http://127.0.0.1:9")
        .replace("SECONDARY", "http://127.0.0.1:9")
        .replace(
            "              priority: 1\n",
            "              priority: 1\n              weight: 0\n              read_timeout: -5\n",
        )
        .replace("{fast: gpt-4o-mini}", "{fast: gpt-4o}")
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await harness.gateway.ApplyConfig(gateway_pb2.ApplyConfigRequest(document=document))
    details = caught.value.details()
    assert "targets[0].weight must be at least 1, got 0" in details
    assert "targets[0].read_timeout must be at least 1, got -5" in details
    assert 'model_aliases.fast maps to "gpt-4o", which model_allow_list lacks' in details
