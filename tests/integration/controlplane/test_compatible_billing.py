"""The OpenAI-compatible providers end to end: Kong's decK config (provider names and their
options: mistral_format, dashscope.international, databricks.workspace_instance_id) -> control
plane -> snapshot over the config stream -> data plane -> openai and mistralai SDKs -> usage
stream -> invoice. Billed tokens equal the tokens the (fake) providers reported, per kind.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import cohere
import grpc
import httpx
import ollama
import openai
import pytest
from mistralai.client import Mistral

from dataplane.http.server import serve_http
from dataplane.proxy.compiler import compile_snapshot
from dataplane.proxy.gateway import Gateway
from dataplane.testing.fake_cohere import FakeCohere
from dataplane.testing.fake_ollama import FakeOllama
from dataplane.testing.fake_openai import FakeProvider
from meterline.admin.v1 import billing_pb2, gateway_pb2, usage_pb2
from meterline.dataplane.v1 import config_pb2
from meterline.dataplane.v1 import usage_pb2 as dp_usage_pb2

KEY = "acme-secret-key"
MESSAGES = [{"role": "user", "content": "how is the weather"}]
# Long enough for the fake's prompt cache: DeepSeek's second call reads it from the cache.
CACHED_MESSAGES = [
    {"role": "system", "content": " ".join(f"rule{i}" for i in range(40))},
    *MESSAGES,
]


def _route(name: str, provider: str, options: str) -> str:
    return f"""\
      - name: {name}
        paths: [/{name}]
        plugins:
          - name: ai-proxy
            config:
              route_type: llm/v1/chat
              auth: {{header_name: Authorization, header_value: Bearer sk-provider}}
              model:
                provider: {provider}
                options: {options}
"""


DOCUMENT = (
    """\
_format_version: "3.0"
services:
  - name: llms
    url: http://127.0.0.1:9/
    routes:
"""
    + _route("deepseek", "deepseek", '{upstream_url: "DEEPSEEK/chat/completions"}')
    + _route(
        "mistral",
        "mistral",
        '{mistral_format: openai, upstream_url: "MISTRAL/v1/chat/completions"}',
    )
    + _route(
        "qwen",
        "dashscope",
        "{dashscope: {international: false},"
        ' upstream_url: "PLAIN/compatible-mode/v1/chat/completions"}',
    )
    + _route(
        "dbx",
        "databricks",
        "{databricks: {workspace_instance_id: dbc-a1b2},"
        ' upstream_url: "PLAIN/serving-endpoints/chat/completions"}',
    )
    + _route("grok", "xai", '{upstream_url: "PLAIN/v1/chat/completions"}')
    + _route("co", "cohere", '{upstream_url: "COHERE"}').replace(
        "route_type: llm/v1/chat", "route_type: llm/v1/chat\n              llm_format: cohere"
    )
    + _route("llama", "ollama", '{upstream_url: "OLLAMA"}').replace(
        "route_type: llm/v1/chat", "route_type: llm/v1/chat\n              llm_format: ollama"
    )
    + """\
consumers:
  - username: acme-corp
    keyauth_credentials: [{key: acme-secret-key}]
plugins:
  - name: key-auth
    config: {key_names: [apikey]}
billing:
  features:
    - {key: input, meter: llm_tokens, filters: {type: input}}
    - {key: cached, meter: llm_tokens, filters: {type: cached_input}}
    - {key: output, meter: llm_tokens, filters: {type: output}}
    - {key: reasoning, meter: llm_tokens, filters: {type: reasoning}}
  plans:
    - key: starter
      name: Starter
      currency: USD
      billing_cadence: P1M
      rate_cards:
        - {feature: input, price: {type: unit, amount: "1"}, entitlement: {type: boolean}}
        - {feature: cached, price: {type: unit, amount: "1"}, entitlement: {type: boolean}}
        - {feature: output, price: {type: unit, amount: "1"}, entitlement: {type: boolean}}
        - {feature: reasoning, price: {type: unit, amount: "1"}, entitlement: {type: boolean}}
  customers:
    - {key: acme, name: Acme Corp, subjects: [acme-corp]}
  subscriptions:
    - {customer: acme, plan: starter, start: now}
"""
)


async def test_compatible_providers_are_billed_as_reported(harness) -> None:
    plain = FakeProvider(api_key="sk-provider")
    deepseek = FakeProvider(api_key="sk-provider", usage_style="deepseek")
    mistral = FakeProvider(api_key="sk-provider", usage_style="mistral")
    events: list[dp_usage_pb2.UsageEvent] = []
    reported = {"input": 0, "cached": 0, "output": 0, "reasoning": 0}

    def add(usage: openai.types.CompletionUsage) -> None:
        extra = usage.model_extra or {}
        cached = extra.get("prompt_cache_hit_tokens") or 0
        details = usage.completion_tokens_details
        reasoning = (details.reasoning_tokens if details else 0) or 0
        reported["input"] += usage.prompt_tokens - cached
        reported["cached"] += cached
        reported["output"] += usage.completion_tokens - reasoning
        reported["reasoning"] += reasoning

    fake_ollama = FakeOllama(api_key="sk-provider")
    fake_cohere = FakeCohere(api_key="sk-provider")
    async with (
        serve_http(plain) as p,
        serve_http(deepseek) as d,
        serve_http(mistral) as m,
        serve_http(fake_ollama) as o,
        serve_http(fake_cohere) as c,
    ):
        document = (
            DOCUMENT.replace("PLAIN", p.url)
            .replace("DEEPSEEK", d.url)
            .replace("MISTRAL", m.url)
            .replace("OLLAMA", o.url)
            .replace("COHERE", c.url)
        )
        # Given the decK document applied, and the snapshot a data plane receives...
        await harness.gateway.ApplyConfig(gateway_pb2.ApplyConfigRequest(document=document))
        call = harness.config_stream.StreamConfig()
        await call.write(config_pb2.ConfigRequest(node=config_pb2.Node(id="dp-1", hostname="h")))
        pushed = await asyncio.wait_for(call.read(), 5)
        call.cancel()
        options = {
            plugin.ai_proxy.model.provider: plugin.ai_proxy.model.options
            for plugin in pushed.snapshot.plugins
            if plugin.name == "ai-proxy"
        }
        assert options["mistral"].mistral_format == "openai"
        assert options["dashscope"].dashscope.HasField("international")
        assert options["dashscope"].dashscope.international is False
        assert options["databricks"].databricks.workspace_instance_id == "dbc-a1b2"
        assert not options["xai"].HasField("dashscope")
        gateway = Gateway(node_id="dp-1", usage_sink=events.append)
        gateway.apply(compile_snapshot(pushed.snapshot, version=pushed.version_info))
        try:
            async with serve_http(gateway) as address:
                # ...when openai clients call each route, whole and streamed...
                for route in ("deepseek", "mistral", "qwen", "dbx", "grok"):
                    async with openai.AsyncOpenAI(
                        base_url=f"{address.url}/{route}", api_key=KEY, max_retries=0
                    ) as client:
                        model = "deepseek-reasoner" if route == "deepseek" else "m"
                        messages = CACHED_MESSAGES if route == "deepseek" else MESSAGES
                        whole = await client.chat.completions.create(model=model, messages=messages)
                        add(whole.usage)
                        chunks = [
                            c
                            async for c in await client.chat.completions.create(
                                model=model,
                                messages=messages,
                                stream=True,
                                stream_options={"include_usage": True},
                            )
                        ]
                        add(chunks[-1].usage)
                        # ...an upstream error (not billed)...
                        with pytest.raises(openai.InternalServerError):
                            await client.chat.completions.create(
                                model="fail-500", messages=MESSAGES
                            )
                # ...and the mistralai SDK calls the mistral route.
                async with Mistral(api_key=KEY, server_url=f"{address.url}/mistral") as sdk:
                    response = await sdk.chat.complete_async(model="m", messages=MESSAGES)
                    reported["input"] += response.usage.prompt_tokens
                    reported["output"] += response.usage.completion_tokens
                # ...and the ollama client calls the native Ollama route, whole and streamed.
                async with ollama.AsyncClient(
                    host=f"{address.url}/llama", headers={"Authorization": f"Bearer {KEY}"}
                ) as native:
                    answer = await native.chat(model="llama3.2", messages=MESSAGES)
                    reported["input"] += answer.prompt_eval_count
                    reported["output"] += answer.eval_count
                    stream = await native.chat(model="llama3.2", messages=MESSAGES, stream=True)
                    final = [part async for part in stream][-1]
                    reported["input"] += final.prompt_eval_count
                    reported["output"] += final.eval_count
                # ...and the cohere SDK calls the native Cohere route (billed units billed).
                async with httpx.AsyncClient() as http:
                    co = cohere.AsyncClientV2(
                        api_key=KEY, base_url=f"{address.url}/co", httpx_client=http, max_retries=0
                    )
                    reply = await co.chat(model="command-r", messages=MESSAGES)
                    reported["input"] += reply.usage.billed_units.input_tokens
                    reported["output"] += reply.usage.billed_units.output_tokens
                    typed = [e async for e in co.chat_stream(model="command-r", messages=MESSAGES)]
                    billed = typed[-1].delta.usage.billed_units
                    reported["input"] += billed.input_tokens
                    reported["output"] += billed.output_tokens
        finally:
            await gateway.aclose()
    assert {e.llm_tokens.provider for e in events} == {
        "deepseek",
        "mistral",
        "dashscope",
        "databricks",
        "xai",
        "ollama",
        "cohere",
    }

    # Then the usage reaches the control plane over the usage stream...
    at = harness.clock.now() + timedelta(minutes=5)
    for event in events:
        event.time.FromDatetime(at)
    stream = harness.usage_stream.StreamUsage()
    await stream.write(dp_usage_pb2.UsageBatch(batch_id="b1", events=events))
    ack = await stream.read()
    await stream.done_writing()
    assert ack.accepted_count == len(events)
    harness.clock.set(at + timedelta(minutes=1))
    stored = await harness.usage.ListUsageEvents(usage_pb2.ListUsageEventsRequest())
    failed = [e for e in stored.usage_events if e.data["status_code"] == "500"]
    assert len({e.data["provider"] for e in failed}) == 5
    assert sum(e.value for e in failed) == 0

    # ...and the invoice bills exactly the tokens the providers reported, per kind.
    invoice = await harness.billing.PreviewInvoice(
        billing_pb2.PreviewInvoiceRequest(customer="customers/acme")
    )
    lines = {line.feature: int(line.quantity) for line in invoice.lines}
    assert reported["reasoning"] > 0 and reported["cached"] > 0
    assert lines == reported


@pytest.mark.parametrize(
    ("replace", "message"),
    [
        pytest.param(
            ("mistral_format: openai", "mistral_format: raw"),
            "mistral_format must be one of",
            id="unknown-mistral-format",
        ),
        pytest.param(
            ("provider: xai", "provider: grok"),
            'provider "grok" is not a provider',
            id="unknown-provider",
        ),
        pytest.param(
            ("{databricks: {workspace_instance_id: dbc-a1b2},", "{"),
            "",
            id="databricks-url-only-is-fine",
        ),
        pytest.param(
            (
                "workspace_instance_id: dbc-a1b2},"
                ' upstream_url: "PLAIN/serving-endpoints/chat/completions"}',
                "workspace_instance_id: dbc.a1b2}}",
            ),
            "is not a host name label",
            id="databricks-bad-instance",
        ),
        pytest.param(
            (
                "{databricks: {workspace_instance_id: dbc-a1b2},"
                ' upstream_url: "PLAIN/serving-endpoints/chat/completions"}',
                "{}",
            ),
            "databricks.workspace_instance_id is required",
            id="databricks-without-workspace",
        ),
        pytest.param(
            ("{dashscope: {international: false},", "{dashscope: {international: 'no'},"),
            "international must be true or false",
            id="dashscope-not-bool",
        ),
        pytest.param(
            (
                '{upstream_url: "DEEPSEEK/chat/completions"}',
                '{upstream_url: "DEEPSEEK/chat/completions", llama2_format: tgi}',
            ),
            'llama2_format is only for provider "llama2"',
            id="llama2-format-on-deepseek",
        ),
        pytest.param(
            ('{upstream_url: "OLLAMA"}', "{}"),
            'options.upstream_url is required for provider "ollama"',
            id="ollama-without-url",
        ),
        pytest.param(
            ("provider: ollama", "provider: xai"),
            '"ollama" needs model.provider "ollama"',
            id="ollama-format-on-xai",
        ),
        pytest.param(
            ('{upstream_url: "PLAIN/v1/chat/completions"}', "{mistral_format: openai}"),
            'mistral_format is only for provider "mistral"',
            id="format-on-the-wrong-provider",
        ),
    ],
)
async def test_bad_configs_are_refused_and_change_nothing(harness, replace, message) -> None:
    document = DOCUMENT.replace(*replace)
    for name in ("PLAIN", "DEEPSEEK", "MISTRAL", "OLLAMA", "COHERE"):
        document = document.replace(name, "http://127.0.0.1:9")
    if not message:
        await harness.gateway.ApplyConfig(gateway_pb2.ApplyConfigRequest(document=document))
        return
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await harness.gateway.ApplyConfig(gateway_pb2.ApplyConfigRequest(document=document))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in caught.value.details()
    routes = await harness.gateway.ListRoutes(gateway_pb2.ListRoutesRequest())
    assert list(routes.routes) == []
