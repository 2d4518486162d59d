"""Gemini end to end: Kong's decK config for Gemini and Vertex AI -> control plane -> snapshot
over the config stream -> data plane -> google-genai and openai SDKs -> usage stream -> invoice.

Billed tokens equal the tokens the (fake) provider reported, per kind, on the invoice; an
upstream error is stored with its status and not billed.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import grpc
import httpx
import openai
import orjson
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from dataplane.http.server import serve_http
from dataplane.proxy.compiler import compile_snapshot
from dataplane.proxy.gateway import Gateway
from dataplane.testing.fake_gemini import FakeGemini, FakeGoogleOAuth
from meterline.admin.v1 import billing_pb2, gateway_pb2, usage_pb2
from meterline.dataplane.v1 import config_pb2
from meterline.dataplane.v1 import usage_pb2 as dp_usage_pb2

KEY = "acme-secret-key"
MODEL = "gemini-2.5-flash"

# Kong's documented Gemini setup (the key as the "key" query parameter), a Vertex AI route with
# a service account, and an OpenAI-format route to Gemini.
DOCUMENT = """\
_format_version: "3.0"
services:
  - name: gemini-service
    url: http://127.0.0.1:9/
    routes:
      - name: gemini
        paths: [/gemini]
        plugins:
          - name: ai-proxy
            config:
              route_type: llm/v1/chat
              llm_format: gemini
              auth:
                param_name: key
                param_value: AIza-provider-secret
                param_location: query
              model:
                provider: gemini
                name: gemini-2.5-flash
                options: {upstream_url: "UPSTREAM"}
      - name: vertex-chat
        paths: [/vertex-chat]
        plugins:
          - name: ai-proxy
            config:
              route_type: llm/v1/chat
              auth:
                gcp_use_service_account: true
                gcp_service_account_json: 'ACCOUNT'
              model:
                provider: gemini
                name: gemini-2.5-flash
                options:
                  upstream_url: "UPSTREAM"
                  gemini: {api_endpoint: unused.test, project_id: proj, location_id: us-central1}
consumers:
  - username: acme-corp
    keyauth_credentials: [{key: acme-secret-key}]
plugins:
  - name: key-auth
    config: {key_names: [apikey, x-goog-api-key]}
billing:
  features:
    - {key: gemini-input, meter: llm_tokens, filters: {provider: gemini, type: input}}
    - {key: gemini-output, meter: llm_tokens, filters: {provider: gemini, type: output}}
    - {key: gemini-reasoning, meter: llm_tokens, filters: {provider: gemini, type: reasoning}}
  plans:
    - key: starter
      name: Starter
      currency: USD
      billing_cadence: P1M
      rate_cards:
        - {feature: gemini-input, price: {type: unit, amount: "1"}, entitlement: {type: boolean}}
        - {feature: gemini-output, price: {type: unit, amount: "1"}, entitlement: {type: boolean}}
        - {feature: gemini-reasoning, price: {type: unit, amount: "1"},
           entitlement: {type: boolean}}
  customers:
    - {key: acme, name: Acme Corp, subjects: [acme-corp]}
  subscriptions:
    - {customer: acme, plan: starter, start: now}
"""


async def test_gemini_and_vertex_usage_is_billed_as_reported(harness) -> None:
    oauth = FakeGoogleOAuth()
    fake = FakeGemini(api_key="AIza-provider-secret", oauth=oauth)
    events: list[dp_usage_pb2.UsageEvent] = []
    async with serve_http(fake) as upstream:
        account = orjson.dumps(oauth.service_account(f"{upstream.url}/token")).decode()
        document = DOCUMENT.replace("UPSTREAM", upstream.url).replace("ACCOUNT", account)
        # Given the decK document applied, and the snapshot a data plane receives.
        await harness.gateway.ApplyConfig(gateway_pb2.ApplyConfigRequest(document=document))
        listed = await harness.gateway.ListPlugins(gateway_pb2.ListPluginsRequest())
        assert "PRIVATE KEY" not in str(listed)  # the service account's key is a secret
        call = harness.config_stream.StreamConfig()
        await call.write(config_pb2.ConfigRequest(node=config_pb2.Node(id="dp-1", hostname="h")))
        pushed = await asyncio.wait_for(call.read(), 5)
        call.cancel()
        gateway = Gateway(node_id="dp-1", usage_sink=events.append)
        gateway.apply(compile_snapshot(pushed.snapshot, version=pushed.version_info))
        reported: dict[str, int] = {"input": 0, "output": 0, "reasoning": 0}

        def add(prompt: int, candidates: int, thoughts: int = 0) -> None:
            reported["input"] += prompt
            reported["output"] += candidates
            reported["reasoning"] += thoughts

        try:
            async with serve_http(gateway) as address, httpx.AsyncClient() as http:
                # When a google-genai client calls the native route, whole and streamed...
                client = genai.Client(
                    api_key=KEY,
                    http_options=genai_types.HttpOptions(
                        base_url=f"{address.url}/gemini", httpx_async_client=http
                    ),
                )
                whole = await client.aio.models.generate_content(
                    model=MODEL,
                    contents="how are you",
                    config=genai_types.GenerateContentConfig(
                        thinking_config=genai_types.ThinkingConfig(thinking_budget=64)
                    ),
                )
                usage = whole.usage_metadata
                add(
                    usage.prompt_token_count,
                    usage.candidates_token_count,
                    usage.thoughts_token_count,
                )
                chunks = [
                    chunk
                    async for chunk in await client.aio.models.generate_content_stream(
                        model=MODEL, contents="stream this please"
                    )
                ]
                usage = chunks[-1].usage_metadata
                add(usage.prompt_token_count, usage.candidates_token_count)
                # ...an upstream error (not billed)...
                with pytest.raises(genai_errors.ClientError):
                    await client.aio.models.generate_content(
                        model=MODEL,
                        contents="fail",
                        config=genai_types.GenerateContentConfig(
                            http_options={"headers": {"x-fake-status": "400"}}
                        ),
                    )
                # ...and an openai client calls the Vertex route, whole and streamed.
                async with openai.AsyncOpenAI(
                    base_url=f"{address.url}/vertex-chat", api_key=KEY, max_retries=0
                ) as oai:
                    completion = await oai.chat.completions.create(
                        model=MODEL, messages=[{"role": "user", "content": "vertex whole"}]
                    )
                    add(completion.usage.prompt_tokens, completion.usage.completion_tokens)
                    stream = await oai.chat.completions.create(
                        model=MODEL,
                        messages=[{"role": "user", "content": "vertex streamed answer"}],
                        stream=True,
                        stream_options={"include_usage": True},
                    )
                    last = [chunk async for chunk in stream][-1]
                    add(last.usage.prompt_tokens, last.usage.completion_tokens)
        finally:
            await gateway.aclose()
    assert len(oauth.issued) == 1  # one token for both Vertex calls
    assert fake.requests[-1].path.startswith("/v1/projects/proj/locations/us-central1/")

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
    failed = [e for e in stored.usage_events if e.data["status_code"] == "400"]
    assert failed and sum(e.value for e in failed) == 0

    # ...and the invoice bills exactly the tokens the provider reported, per kind.
    invoice = await harness.billing.PreviewInvoice(
        billing_pb2.PreviewInvoiceRequest(customer="customers/acme")
    )
    lines = {line.feature: int(line.quantity) for line in invoice.lines}
    assert lines == {
        "gemini-input": reported["input"],
        "gemini-output": reported["output"],
        "gemini-reasoning": reported["reasoning"],
    }
    assert reported["reasoning"] > 0


@pytest.mark.parametrize(
    ("replace", "message"),
    [
        pytest.param(
            ("param_location: query", "param_location: body"),
            'must be "query" for provider "gemini"',
            id="key-in-body",
        ),
        pytest.param(
            ("gcp_use_service_account: true", "gcp_use_service_account: false"),
            "needs gcp_use_service_account: true",
            id="json-without-flag",
        ),
        pytest.param(
            ("project_id: proj, ", ""),
            "needs both project_id and location_id",
            id="vertex-without-project",
        ),
        pytest.param(
            ("'ACCOUNT'", '\'{"client_email": "a@b"}\''),
            "must be a service account's JSON key",
            id="bad-account",
        ),
    ],
)
async def test_bad_gemini_configs_are_refused_and_change_nothing(harness, replace, message):
    document = (
        DOCUMENT.replace(*replace)
        .replace("UPSTREAM", "http://127.0.0.1:9")
        .replace("ACCOUNT", '{"client_email": "a@b", "private_key": "k"}')
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await harness.gateway.ApplyConfig(gateway_pb2.ApplyConfigRequest(document=document))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in caught.value.details()
    routes = await harness.gateway.ListRoutes(gateway_pb2.ListRoutesRequest())
    assert list(routes.routes) == []
