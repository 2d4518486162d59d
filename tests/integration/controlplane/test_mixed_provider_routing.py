"""ai-proxy-advanced across mixed providers, end to end (issue 16 item 6): an OpenAI-SDK client
on one route whose targets are OpenAI, Gemini and Bedrock (the last two translated), declared
in YAML -> control plane -> snapshot over the config stream -> data plane -> fakes -> usage
stream -> stored events and the invoice.

Failover OpenAI (429) -> Gemini (503) -> Bedrock answers, streamed and not: the failed
attempts are stored with their status and no tokens, the answer's usage is attributed to
Bedrock and its model, and the invoice bills exactly what Bedrock reported. Every balancer
algorithm picks among the three providers; each answer is billed to the provider that gave it,
as that provider counted it; ``cost`` picks the cheapest target by its own prices.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal

import openai
import pytest

from dataplane.http.server import serve_http
from dataplane.proxy.compiler import compile_snapshot
from dataplane.proxy.gateway import Gateway
from dataplane.testing.fake_bedrock import TEST_ACCESS_KEY_ID, TEST_SECRET_ACCESS_KEY, FakeBedrock
from dataplane.testing.fake_gemini import FakeGemini
from dataplane.testing.fake_openai import FakeProvider
from meterline.admin.v1 import billing_pb2, gateway_pb2, usage_pb2
from meterline.dataplane.v1 import config_pb2
from meterline.dataplane.v1 import usage_pb2 as dp_usage_pb2

KEY = "acme-secret-key"
GEMINI_KEY = "gemini-provider-key"
OPENAI_MODEL = "gpt-4o-mini"
GEMINI_MODEL = "gemini-2.5-flash"
BEDROCK_MODEL = "amazon.nova-micro-v1:0"
PROVIDERS = ("openai", "gemini", "bedrock")

DOCUMENT = """\
_format_version: "3.0"
services:
  - name: ai-service
    url: http://127.0.0.1:9/
    routes:
      - name: mixed
        paths: [/mixed]
    plugins:
      - name: ai-proxy-advanced
        config:
          balancer: {BALANCER, failover_criteria: [error, timeout, http_429, http_503], retries: 2}
          targets:
            - model:
                provider: openai
                name: OPENAI_MODEL
                model_alias: chat
                options:
                  upstream_url: "OPENAI/v1/chat/completions"
                  input_cost: "0.15"
                  output_cost: "0.60"
              auth: {header_name: Authorization, header_value: Bearer sk-openai-provider}
              priority: 1
              description: openai
            - model:
                provider: gemini
                name: GEMINI_MODEL
                model_alias: chat
                options: {upstream_url: "GEMINI", input_cost: "0.30", output_cost: "2.50"}
              auth: {header_name: x-goog-api-key, header_value: GEMINI_KEY}
              priority: 2
              description: gemini
            - model:
                provider: bedrock
                name: BEDROCK_MODEL
                model_alias: chat
                options:
                  upstream_url: "BEDROCK"
                  input_cost: "0.035"
                  output_cost: "0.14"
                  bedrock: {aws_region: us-east-1}
              auth: {aws_access_key_id: KEY_ID, aws_secret_access_key: "SECRET"}
              priority: 3
              description: bedrock
consumers:
  - username: acme-corp
    keyauth_credentials: [{key: acme-secret-key}]
plugins:
  - name: key-auth
billing:
  features:
    - {key: openai-tokens, meter: llm_tokens, filters: {provider: openai}}
    - {key: gemini-tokens, meter: llm_tokens, filters: {provider: gemini}}
    - key: bedrock-in
      meter: llm_tokens
      filters: {provider: bedrock, model: "BEDROCK_MODEL", type: input}
    - key: bedrock-out
      meter: llm_tokens
      filters: {provider: bedrock, model: "BEDROCK_MODEL", type: output}
  plans:
    - key: starter
      name: Starter
      currency: USD
      billing_cadence: P1M
      rate_cards:
        - {feature: openai-tokens, price: {type: unit, amount: "1"}, entitlement: {type: boolean}}
        - {feature: gemini-tokens, price: {type: unit, amount: "1"}, entitlement: {type: boolean}}
        - {feature: bedrock-in, price: {type: unit, amount: "1"}, entitlement: {type: boolean}}
        - {feature: bedrock-out, price: {type: unit, amount: "2"}, entitlement: {type: boolean}}
  customers:
    - {key: acme, name: Acme Corp, subjects: [acme-corp]}
  subscriptions:
    - {customer: acme, plan: starter, start: now}
"""

MODELS = {"openai": OPENAI_MODEL, "gemini": GEMINI_MODEL, "bedrock": BEDROCK_MODEL}


@dataclass
class Mixed:
    """The three fakes, the data plane in front of them, and what it recorded."""

    url: str
    fakes: dict[str, FakeProvider | FakeGemini | FakeBedrock]
    events: list[dp_usage_pb2.UsageEvent] = field(default_factory=list)

    def client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=f"{self.url}/mixed", api_key=KEY, max_retries=0)

    def received(self) -> dict[str, int]:
        return {name: len(fake.requests) for name, fake in self.fakes.items()}


@contextlib.asynccontextmanager
async def mixed_route(
    harness, balancer: str, *, openai_status: int | None = None, gemini_status: int | None = None
) -> AsyncIterator[Mixed]:
    fakes: dict[str, FakeProvider | FakeGemini | FakeBedrock] = {
        "openai": FakeProvider(api_key="sk-openai-provider", status=openai_status),
        "gemini": FakeGemini(api_key=GEMINI_KEY, status=gemini_status),
        "bedrock": FakeBedrock(),
    }
    async with (
        serve_http(fakes["openai"]) as oa,
        serve_http(fakes["gemini"]) as gm,
        serve_http(fakes["bedrock"]) as br,
    ):
        document = DOCUMENT
        for placeholder, value in (
            ("BALANCER", balancer),
            ("OPENAI_MODEL", OPENAI_MODEL),
            ("GEMINI_MODEL", GEMINI_MODEL),
            ("BEDROCK_MODEL", BEDROCK_MODEL),
            ("GEMINI_KEY", GEMINI_KEY),
            ("OPENAI", oa.url),
            ("GEMINI", gm.url),
            ("BEDROCK", br.url),
            ("KEY_ID", TEST_ACCESS_KEY_ID),
            ("SECRET", TEST_SECRET_ACCESS_KEY),
        ):
            document = document.replace(placeholder, value)
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
                yield Mixed(address.url, fakes, events)
        finally:
            await gateway.aclose()


async def deliver(harness, events: list[dp_usage_pb2.UsageEvent]) -> None:
    """Send the data plane's events over the usage stream, stamped inside the subscription."""
    at = harness.clock.now() + timedelta(minutes=5)
    for event in events:
        event.time.FromDatetime(at)
    stream = harness.usage_stream.StreamUsage()
    await stream.write(dp_usage_pb2.UsageBatch(batch_id="b1", events=events))
    ack = await stream.read()
    await stream.done_writing()
    assert (ack.accepted_count, ack.duplicate_count) == (len(events), 0)
    harness.clock.set(at + timedelta(minutes=1))


async def invoice_quantities(harness) -> dict[str, Decimal]:
    invoice = await harness.billing.PreviewInvoice(
        billing_pb2.PreviewInvoiceRequest(customer="customers/acme")
    )
    return {line.feature: Decimal(line.quantity) for line in invoice.lines}


async def ask(
    client: openai.AsyncOpenAI, text: str, *, stream: bool, **extra
) -> tuple[str, int, int]:
    """One chat request for model "chat": (reply, prompt tokens, completion tokens) as the
    provider reported them to the client (translated for Gemini and Bedrock)."""
    messages = [{"role": "user", "content": text}]
    if not stream:
        completion = await client.chat.completions.create(model="chat", messages=messages, **extra)
        usage = completion.usage
        assert usage is not None
        return (
            completion.choices[0].message.content or "",
            usage.prompt_tokens,
            usage.completion_tokens,
        )
    chunks = [
        chunk
        async for chunk in await client.chat.completions.create(
            model="chat",
            messages=messages,
            stream=True,
            stream_options={"include_usage": True},
            **extra,
        )
    ]
    reply = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    usage = chunks[-1].usage
    assert usage is not None
    return reply, usage.prompt_tokens, usage.completion_tokens


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_failover_openai_to_gemini_to_bedrock_bills_bedrock_only(harness, stream) -> None:
    async with mixed_route(
        harness, "algorithm: priority", openai_status=429, gemini_status=503
    ) as mixed:
        async with mixed.client() as client:
            reply, prompt, completion = await ask(client, "one two three", stream=stream)
        # Each target was tried once, in priority order; Bedrock answered (translated).
        assert mixed.received() == {"openai": 1, "gemini": 1, "bedrock": 1}
        assert reply == "fake reply: one two three"
        sent = mixed.fakes["bedrock"].requests[-1]
        operation = "converse-stream" if stream else "converse"
        assert sent.path == f"/model/{BEDROCK_MODEL}/{operation}"
        # The Gemini attempt went to its own model's path, with its own key.
        gemini_sent = mixed.fakes["gemini"].requests[-1]
        assert GEMINI_MODEL in gemini_sent.path
        assert gemini_sent.headers["x-goog-api-key"] == GEMINI_KEY
        events = list(mixed.events)

    # What the data plane recorded: two failed attempts (their status, no tokens), then the
    # answer attributed to Bedrock and its model, as Bedrock counted it.
    attempts = sorted(
        {(e.llm_tokens.attempt, e.llm_tokens.provider, e.llm_tokens.status_code) for e in events}
    )
    assert attempts == [(1, "openai", 429), (2, "gemini", 503), (3, "bedrock", 200)]
    for event in events:
        if event.llm_tokens.status_code != 200:
            assert event.llm_tokens.tokens == 0
    answered = {
        (e.llm_tokens.token_type, e.llm_tokens.tokens)
        for e in events
        if e.llm_tokens.status_code == 200
    }
    assert answered == {
        (dp_usage_pb2.TOKEN_TYPE_INPUT, prompt),
        (dp_usage_pb2.TOKEN_TYPE_OUTPUT, completion),
    }
    assert {e.llm_tokens.model for e in events if e.llm_tokens.provider == "bedrock"} == {
        BEDROCK_MODEL
    }
    # The fake Bedrock's own count: 3 + words of the message in, the reply's words out.
    assert (prompt, completion) == (3 + 3, len(reply.split()) - 1)
    assert not any(e.llm_tokens.estimated for e in events)

    await deliver(harness, events)
    stored = await harness.usage.ListUsageEvents(usage_pb2.ListUsageEventsRequest())
    by_provider: dict[str, set[tuple[str, str]]] = {}
    for event in stored.usage_events:
        by_provider.setdefault(event.data["provider"], set()).add(
            (event.data["status_code"], event.data["model"])
        )
    assert by_provider == {
        "openai": {("429", OPENAI_MODEL)},
        "gemini": {("503", GEMINI_MODEL)},
        "bedrock": {("200", BEDROCK_MODEL)},
    }
    # The invoice bills what Bedrock reported, on the lines of Bedrock's model only.
    quantities = await invoice_quantities(harness)
    assert quantities["bedrock-in"] == prompt
    assert quantities["bedrock-out"] == completion
    assert quantities.get("openai-tokens", Decimal(0)) == 0
    assert quantities.get("gemini-tokens", Decimal(0)) == 0


ALGORITHMS = {
    "round-robin": "algorithm: round-robin",
    "consistent-hashing": "algorithm: consistent-hashing, hash_on_header: x-user",
    "lowest-latency": "algorithm: lowest-latency",
    "lowest-usage": "algorithm: lowest-usage",
    "priority": "algorithm: priority",
    "cost": "algorithm: cost",
}


@pytest.mark.parametrize("algorithm", list(ALGORITHMS))
async def test_every_algorithm_bills_each_answer_to_the_provider_that_gave_it(
    harness, algorithm
) -> None:
    reported: Counter[str] = Counter()
    bedrock_split = Counter[str]()
    picks: list[str] = []
    async with mixed_route(harness, ALGORITHMS[algorithm]) as mixed:
        async with mixed.client() as client:
            for number in range(6):
                before = mixed.received()
                extra = {}
                if algorithm == "consistent-hashing":
                    # Two users: each always lands on the same target.
                    extra = {"extra_headers": {"x-user": f"user-{number % 2}"}}
                _, prompt, completion = await ask(
                    client, f"request number {number}", stream=number % 2 == 1, **extra
                )
                after = mixed.received()
                (served,) = [name for name in PROVIDERS if after[name] != before[name]]
                assert after[served] == before[served] + 1  # no failover: one attempt
                picks.append(served)
                reported[served] += prompt + completion
                if served == "bedrock":
                    bedrock_split["in"] += prompt
                    bedrock_split["out"] += completion
        events = list(mixed.events)

    if algorithm == "round-robin":
        assert Counter(picks) == {"openai": 2, "gemini": 2, "bedrock": 2}
    elif algorithm == "consistent-hashing":
        assert picks[0::2] == [picks[0]] * 3 and picks[1::2] == [picks[1]] * 3
    elif algorithm in ("lowest-latency", "lowest-usage"):
        # Each target is measured once before the measurements decide.
        assert set(picks[:3]) == set(PROVIDERS)
    elif algorithm == "priority":
        assert picks == ["openai"] * 6
    else:
        # cost: the cheapest target by its own prices (0.035 + 0.14 per million).
        assert picks == ["bedrock"] * 6

    # Every event names the provider and model of the target that answered.
    for event in events:
        tokens = event.llm_tokens
        assert tokens.status_code == 200 and not tokens.estimated
        assert tokens.model == MODELS[tokens.provider]
    recorded: Counter[str] = Counter()
    for event in events:
        recorded[event.llm_tokens.provider] += event.llm_tokens.tokens
    assert recorded == reported

    await deliver(harness, events)
    quantities = await invoice_quantities(harness)
    assert quantities.get("openai-tokens", Decimal(0)) == reported["openai"]
    assert quantities.get("gemini-tokens", Decimal(0)) == reported["gemini"]
    assert quantities.get("bedrock-in", Decimal(0)) == bedrock_split["in"]
    assert quantities.get("bedrock-out", Decimal(0)) == bedrock_split["out"]
