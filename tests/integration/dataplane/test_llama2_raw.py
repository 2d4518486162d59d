"""llama2 ``llama2_format: raw`` (Kong's text-generation format) through the real proxy with
the openai SDK: the exact wire format upstream, the answer translated back, billed exactly when
the server reports usage and estimated (marked) when it does not; errors OpenAI-shaped,
recorded with their status, not billed; streams refused."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import openai
import pytest

from dataplane.config.keys import hash_key
from dataplane.http.server import serve_http
from dataplane.proxy.compiler import compile_snapshot
from dataplane.proxy.gateway import Gateway
from dataplane.testing.fake_llama2 import FakeLlama2Raw, prompt_tokens, reply_words
from dataplane.usage.estimate import estimate_tokens
from meterline.dataplane.v1 import snapshot_pb2, usage_pb2

KEY = "sk-meterline-acme-0001"
PROVIDER_KEY = "hf-provider-secret"
INPUT = usage_pb2.TOKEN_TYPE_INPUT
OUTPUT = usage_pb2.TOKEN_TYPE_OUTPUT
MESSAGES = [
    {"role": "system", "content": "You are a mathematician."},
    {"role": "user", "content": "What is 1 + 1?"},
]
INPUTS = "<s>[INST] <<SYS>> You are a mathematician. <</SYS>> What is 1 + 1? [/INST]"


def build_snapshot(url: str) -> snapshot_pb2.Snapshot:
    snapshot = snapshot_pb2.Snapshot(
        services=[snapshot_pb2.Service(id="svc", name="ai", url="http://ai.invalid")],
        consumers=[
            snapshot_pb2.Consumer(id="c1", username="acme-corp", key_hashes=[hash_key(KEY)])
        ],
        plugins=[
            snapshot_pb2.Plugin(
                id="ka",
                name="key-auth",
                enabled=True,
                key_auth=snapshot_pb2.KeyAuthConfig(key_names=["apikey"], key_in_bearer=True),
            )
        ],
    )
    for name, route_type in (("chat", "llm/v1/chat"), ("completions", "llm/v1/completions")):
        snapshot.routes.add(id=f"r-{name}", service_id="svc", paths=[f"/{name}"])
        snapshot.plugins.add(id=f"p-{name}", name="ai-proxy", route_id=f"r-{name}", enabled=True)
        snapshot.plugins[-1].ai_proxy.CopyFrom(
            snapshot_pb2.AiProxyConfig(
                route_type=route_type,
                auth=snapshot_pb2.AiProxyAuth(
                    header_name="Authorization", header_value=f"Bearer {PROVIDER_KEY}"
                ),
                model=snapshot_pb2.AiProxyModel(
                    provider="llama2",
                    name="llama-2-7b-chat",
                    options=snapshot_pb2.AiProxyModelOptions(
                        upstream_url=f"{url}/generate", llama2_format="raw", max_tokens=64
                    ),
                ),
            )
        )
    return snapshot


@dataclass
class Stack:
    url: str
    fake: FakeLlama2Raw
    events: list[usage_pb2.UsageEvent] = field(default_factory=list)

    def take(self) -> list[tuple[int, int, int, bool]]:
        taken = sorted(
            (t.status_code, t.token_type, t.tokens, t.estimated)
            for t in (event.llm_tokens for event in self.events)
        )
        self.events.clear()
        return taken

    def client(self, route: str = "chat") -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=f"{self.url}/{route}", api_key=KEY, max_retries=0)


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    fake = FakeLlama2Raw(api_key=PROVIDER_KEY)
    events: list[usage_pb2.UsageEvent] = []
    gateway = Gateway(node_id="dp-test", usage_sink=events.append)
    async with serve_http(fake) as upstream:
        gateway.apply(compile_snapshot(build_snapshot(upstream.url), version="v1"))
        try:
            async with serve_http(gateway) as address:
                yield Stack(address.url, fake, events)
        finally:
            await gateway.aclose()


async def test_chat_is_sent_in_kongs_raw_format_and_billed_exactly(stack) -> None:
    async with stack.client() as client:
        completion = await client.chat.completions.create(
            model="llama-2-7b-chat", messages=MESSAGES, temperature=0.5
        )
    assert completion.choices[0].message.content == "fake reply: What is 1 + 1?"
    assert completion.choices[0].finish_reason == "stop"
    # Upstream: Kong's body, at the full upstream_url, with the route's key.
    received = stack.fake.requests[-1]
    assert received.path == "/generate"
    assert received.headers["authorization"] == f"Bearer {PROVIDER_KEY}"
    assert received.body == {
        "inputs": INPUTS,
        "parameters": {"max_new_tokens": 64, "top_p": 1.0, "top_k": 40, "temperature": 0.5},
    }
    prompt, output = prompt_tokens(INPUTS), len(reply_words(INPUTS))
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (
        prompt,
        output,
    )
    assert stack.take() == [(200, INPUT, prompt, False), (200, OUTPUT, output, False)]


async def test_a_conversation_follows_llama2s_template(stack) -> None:
    messages = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "count to three"},
    ]
    async with stack.client() as client:
        completion = await client.chat.completions.create(
            model="llama-2-7b-chat", messages=messages, max_tokens=3
        )
    inputs = "<s>[INST] hi [/INST] hello </s><s>[INST] count to three [/INST]"
    assert stack.fake.requests[-1].body["inputs"] == inputs
    assert stack.fake.requests[-1].body["parameters"]["max_new_tokens"] == 3
    assert completion.choices[0].message.content == "fake reply: count to"
    assert stack.take() == [(200, INPUT, prompt_tokens(inputs), False), (200, OUTPUT, 3, False)]


async def test_without_usage_the_answer_is_estimated_and_marked(stack) -> None:
    stack.fake.report_usage = False
    async with stack.client() as client:
        completion = await client.chat.completions.create(
            model="llama-2-7b-chat", messages=MESSAGES
        )
    reply = completion.choices[0].message.content
    assert reply == "fake reply: What is 1 + 1?"
    assert completion.usage is None  # nothing reported, nothing invented for the client
    assert stack.take() == [
        (200, INPUT, estimate_tokens(INPUTS), True),
        (200, OUTPUT, estimate_tokens(reply), True),
    ]


async def test_legacy_completions_use_kongs_prompt_wrapper(stack) -> None:
    async with stack.client("completions") as client:
        completion = await client.completions.create(model="llama-2-7b-chat", prompt="two plus two")
    inputs = "<s> [INST] <<SYS>> You are a helpful assistant. <<SYS>> two plus two [/INST]"
    assert stack.fake.requests[-1].body["inputs"] == inputs
    assert completion.object == "text_completion"
    assert completion.choices[0].text == "fake reply: two plus two"
    assert stack.take() == [
        (200, INPUT, prompt_tokens(inputs), False),
        (200, OUTPUT, len(reply_words(inputs)), False),
    ]


async def test_upstream_error_is_openai_shaped_recorded_and_not_billed(stack) -> None:
    async with stack.client() as client:
        with pytest.raises(openai.APIStatusError) as raised:
            await client.chat.completions.create(
                model="llama-2-7b-chat",
                messages=MESSAGES,
                extra_headers={"x-fake-status": "503"},
            )
    assert raised.value.status_code == 503
    assert raised.value.body["message"] == "forced status 503"
    assert raised.value.body["code"] == "overloaded"
    assert stack.take() == [(503, INPUT, 0, False), (503, OUTPUT, 0, False)]
    stack.fake.api_key = "another-key"
    async with stack.client() as client:
        with pytest.raises(openai.AuthenticationError) as refused:
            await client.chat.completions.create(model="llama-2-7b-chat", messages=MESSAGES)
    assert refused.value.body["type"] == "authentication_error"
    assert stack.take() == [(401, INPUT, 0, False), (401, OUTPUT, 0, False)]


async def test_a_stream_is_refused_before_the_provider_is_called(stack) -> None:
    async with stack.client() as client:
        with pytest.raises(openai.BadRequestError) as raised:
            await client.chat.completions.create(
                model="llama-2-7b-chat", messages=MESSAGES, stream=True
            )
    assert raised.value.body["param"] == "stream"
    assert "does not stream" in raised.value.body["message"]
    assert stack.fake.requests == [] and stack.events == []
