"""Amazon Bedrock through a real data plane: boto3 ``bedrock-runtime`` on a native route, the
openai SDK on a route translated to Converse; the fake checks every SigV4 signature.

Meterline's events must equal what the (fake) provider reported, token for token; errors are
passed through (native) or translated (OpenAI), recorded with their status and never billed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anthropic
import boto3
import httpx
import openai
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, EventStreamError

from dataplane.config.keys import hash_key
from dataplane.http.server import serve_http
from dataplane.proxy.compiler import compile_snapshot
from dataplane.proxy.gateway import Gateway
from dataplane.testing.fake_bedrock import (
    TEST_ACCESS_KEY_ID,
    TEST_SECRET_ACCESS_KEY,
    FakeBedrock,
)
from dataplane.usage.estimate import estimate_tokens
from meterline.dataplane.v1 import snapshot_pb2, usage_pb2

KEY = "sk-meterline-acme-0001"
MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
ROLE = "arn:aws:iam::123456789012:role/meterline-bedrock"
INPUT = usage_pb2.TOKEN_TYPE_INPUT
OUTPUT = usage_pb2.TOKEN_TYPE_OUTPUT
CACHED = usage_pb2.TOKEN_TYPE_CACHED_INPUT
CACHE_WRITE = usage_pb2.TOKEN_TYPE_CACHE_WRITE
MESSAGES = [{"role": "user", "content": [{"text": "what is the weather like"}]}]


def _bedrock(
    fake_url: str,
    *,
    llm_format: str = "bedrock",
    model: str = "",
    secret: str = TEST_SECRET_ACCESS_KEY,
    key_id: str = TEST_ACCESS_KEY_ID,
    role: str = "",
) -> snapshot_pb2.AiProxyConfig:
    return snapshot_pb2.AiProxyConfig(
        route_type="llm/v1/chat",
        llm_format=llm_format,
        auth=snapshot_pb2.AiProxyAuth(aws_access_key_id=key_id, aws_secret_access_key=secret),
        model=snapshot_pb2.AiProxyModel(
            provider="bedrock",
            name=model,
            options=snapshot_pb2.AiProxyModelOptions(
                upstream_url=fake_url,
                bedrock=snapshot_pb2.AiProxyBedrockOptions(
                    aws_region="us-east-1",
                    aws_assume_role_arn=role,
                    aws_role_session_name="meterline-test" if role else "",
                    aws_sts_endpoint_url=fake_url if role else "",
                ),
            ),
        ),
    )


def build_snapshot(fake_url: str) -> snapshot_pb2.Snapshot:
    routes = {
        "native": _bedrock(fake_url),
        "pinned": _bedrock(fake_url, model="amazon.nova-micro-v1:0"),
        "oa": _bedrock(fake_url, llm_format="openai", model=MODEL),
        "wrong-secret": _bedrock(fake_url, secret="not-the-secret"),
        "role": _bedrock(fake_url, role=ROLE),
        "chain": _bedrock(fake_url, key_id="", secret=""),
    }
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
    for name, config in routes.items():
        snapshot.routes.add(id=f"r-{name}", name=name, service_id="svc", paths=[f"/{name}"])
        snapshot.plugins.add(id=f"p-{name}", name="ai-proxy", route_id=f"r-{name}", enabled=True)
        snapshot.plugins[-1].ai_proxy.CopyFrom(config)
    # Kong's "Claude Code with AWS Bedrock" example: ai-proxy-advanced, llm_format anthropic.
    claude = _bedrock(fake_url, llm_format="anthropic", model=MODEL)
    claude.model.options.anthropic_version = "bedrock-2023-05-31"
    claude.model.options.max_tokens = 8192
    snapshot.routes.add(id="r-claude", name="claude", service_id="svc", paths=["/claude"])
    snapshot.plugins.add(id="p-claude", name="ai-proxy-advanced", route_id="r-claude", enabled=True)
    advanced = snapshot.plugins[-1].ai_proxy
    advanced.llm_format = "anthropic"
    advanced.targets.add(route_type="llm/v1/chat", auth=claude.auth, model=claude.model, weight=100)
    # Failover: a target whose credentials Bedrock refuses, then a good one (http_403).
    bad, good = _bedrock(fake_url, secret="not-the-secret"), _bedrock(fake_url)
    snapshot.routes.add(id="r-failover", name="failover", service_id="svc", paths=["/failover"])
    snapshot.plugins.add(
        id="p-failover", name="ai-proxy-advanced", route_id="r-failover", enabled=True
    )
    failover = snapshot.plugins[-1].ai_proxy
    failover.llm_format = "bedrock"
    failover.balancer.algorithm = "priority"
    failover.balancer.failover_criteria.extend(["error", "http_403"])
    for priority, config in enumerate((bad, good), start=1):
        failover.targets.add(
            route_type="llm/v1/chat",
            auth=config.auth,
            model=config.model,
            weight=100,
            priority=priority,
            description="bad" if priority == 1 else "good",
        )
    return snapshot


@dataclass
class Stack:
    url: str
    fake: FakeBedrock
    events: list[usage_pb2.UsageEvent] = field(default_factory=list)

    def take(self) -> list[tuple[int, int, int, bool]]:
        """(status, token type, tokens, estimated) of the events so far, then forget them."""
        taken = sorted(
            (
                e.llm_tokens.status_code,
                e.llm_tokens.token_type,
                e.llm_tokens.tokens,
                e.llm_tokens.estimated,
            )
            for e in self.events
        )
        self.events.clear()
        return taken

    def runtime(self, route: str, **headers: str) -> Any:
        """A boto3 bedrock-runtime client pointed at the gateway (its own AWS keys are junk:
        the gateway signs again); the Meterline key goes in the ``apikey`` header."""
        client = _SESSION.client(
            "bedrock-runtime",
            endpoint_url=f"{self.url}/{route}",
            region_name="us-east-1",
            aws_access_key_id="AKIACLIENTJUNK000000",
            aws_secret_access_key="client-junk",
            config=Config(retries={"total_max_attempts": 1}),
        )

        def add_headers(request: Any, **_: object) -> None:
            request.headers["apikey"] = KEY
            for name, value in headers.items():
                request.headers[name.replace("_", "-")] = value

        client.meta.events.register("before-sign.bedrock-runtime.*", add_headers)
        return client

    def oai(self, route: str = "oa") -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=f"{self.url}/{route}", api_key=KEY, max_retries=0)


# One session: its loader parses the service models once for every client of the module.
_SESSION = boto3.session.Session()


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    fake = FakeBedrock()
    events: list[usage_pb2.UsageEvent] = []
    gateway = Gateway(node_id="dp-test", usage_sink=events.append)
    async with serve_http(fake) as upstream:
        gateway.apply(compile_snapshot(build_snapshot(upstream.url), version="v1"))
        try:
            async with serve_http(gateway) as address:
                yield Stack(address.url, fake, events)
        finally:
            await gateway.aclose()


def billed(usage: dict[str, int]) -> list[tuple[int, int, int, bool]]:
    """The events of a Converse ``usage`` object: 200, each non-zero kind, not estimated."""
    kinds = [(INPUT, usage["inputTokens"]), (OUTPUT, usage["outputTokens"])]
    for key, kind in (("cacheReadInputTokens", CACHED), ("cacheWriteInputTokens", CACHE_WRITE)):
        if usage.get(key):
            kinds.append((kind, usage[key]))
    return sorted((200, kind, tokens, False) for kind, tokens in kinds)


async def test_boto3_converse_native_bills_what_bedrock_reported(stack) -> None:
    runtime = stack.runtime("native")
    system = [{"text": "answer in one line"}, {"cachePoint": {"type": "default"}}]
    for expected_cache in ("cacheWriteInputTokens", "cacheReadInputTokens"):
        answer = await asyncio.to_thread(
            runtime.converse, modelId=MODEL, messages=MESSAGES, system=system
        )
        assert answer["output"]["message"]["content"] == [
            {"text": "fake reply: what is the weather like"}
        ]
        assert answer["usage"][expected_cache] == 7
        assert stack.take() == billed(answer["usage"])
    # The fake saw the gateway's signature (verified), on the client's model path.
    request = stack.fake.requests[-1]
    assert request.path == f"/model/{MODEL}/converse"
    assert request.headers["authorization"].startswith(
        f"AWS4-HMAC-SHA256 Credential={TEST_ACCESS_KEY_ID}/"
    )
    assert "apikey" not in request.headers


async def test_boto3_converse_stream_native_frames_relayed_and_metered(stack) -> None:
    def run() -> list[dict[str, Any]]:
        answer = stack.runtime("native").converse_stream(modelId=MODEL, messages=MESSAGES)
        return list(answer["stream"])

    events = await asyncio.to_thread(run)
    text = "".join(
        e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e
    )
    assert text == "fake reply: what is the weather like"
    usage = events[-1]["metadata"]["usage"]
    assert usage == {"inputTokens": 8, "outputTokens": 6, "totalTokens": 14}
    assert stack.take() == billed(usage)


async def test_route_model_replaces_the_path_model(stack) -> None:
    await asyncio.to_thread(stack.runtime("pinned").converse, modelId=MODEL, messages=MESSAGES)
    assert stack.fake.requests[-1].path == "/model/amazon.nova-micro-v1:0/converse"
    assert {e.llm_tokens.model for e in stack.events} == {"amazon.nova-micro-v1:0"}


async def test_boto3_invoke_model_anthropic_whole_and_stream(stack) -> None:
    runtime = stack.runtime("native")
    body = json.dumps(
        {
            "anthropic_version": "bedrock-2023-05-31",
            "max_tokens": 50,
            "messages": [{"role": "user", "content": "hello there"}],
        }
    )
    whole = await asyncio.to_thread(runtime.invoke_model, modelId=MODEL, body=body)
    usage = json.loads(whole["body"].read())["usage"]
    assert stack.take() == sorted(
        [(200, INPUT, usage["input_tokens"], False), (200, OUTPUT, usage["output_tokens"], False)]
    )

    def stream() -> list[dict[str, Any]]:
        answer = runtime.invoke_model_with_response_stream(modelId=MODEL, body=body)
        return [json.loads(event["chunk"]["bytes"]) for event in answer["body"]]

    events = await asyncio.to_thread(stream)
    metrics = events[-1]["amazon-bedrock-invocationMetrics"]
    assert stack.take() == sorted(
        [
            (200, INPUT, metrics["inputTokenCount"], False),
            (200, OUTPUT, metrics["outputTokenCount"], False),
        ]
    )


MISTRAL = "mistral.mistral-large-2407-v1:0"
MISTRAL_BODY = json.dumps(
    {"prompt": "<s>[INST] what is the weather like [/INST]", "max_tokens": 50}
)


async def test_boto3_invoke_model_without_body_usage_is_billed_from_bedrocks_headers(
    stack,
) -> None:
    # Given a model whose InvokeModel body carries no usage (Mistral on Bedrock).
    def run() -> tuple[dict[str, Any], dict[str, str]]:
        answer = stack.runtime("native").invoke_model(modelId=MISTRAL, body=MISTRAL_BODY)
        return json.loads(answer["body"].read()), answer["ResponseMetadata"]["HTTPHeaders"]

    document, headers = await asyncio.to_thread(run)
    assert "usage" not in document
    assert document["outputs"][0]["text"] == "fake reply: what is the weather like"
    # Then the counts Bedrock put in the headers are billed exactly (not estimated).
    prompt = int(headers["x-amzn-bedrock-input-token-count"])
    output = int(headers["x-amzn-bedrock-output-token-count"])
    assert (prompt, output) == (3 + 5, 6)
    assert stack.take() == [(200, INPUT, prompt, False), (200, OUTPUT, output, False)]


async def test_boto3_invoke_stream_without_usage_events_is_billed_from_invocation_metrics(
    stack,
) -> None:
    def run() -> list[dict[str, Any]]:
        answer = stack.runtime("native").invoke_model_with_response_stream(
            modelId=MISTRAL, body=MISTRAL_BODY
        )
        return [json.loads(event["chunk"]["bytes"]) for event in answer["body"]]

    chunks = await asyncio.to_thread(run)
    text = "".join(chunk["outputs"][0]["text"] for chunk in chunks)
    assert text == "fake reply: what is the weather like"
    metrics = chunks[-1]["amazon-bedrock-invocationMetrics"]
    assert stack.take() == [
        (200, INPUT, metrics["inputTokenCount"], False),
        (200, OUTPUT, metrics["outputTokenCount"], False),
    ]


async def test_invoke_stream_cut_before_its_metrics_is_estimated_from_its_text(stack) -> None:
    def run() -> list[dict[str, Any]]:
        chunks: list[dict[str, Any]] = []
        answer = stack.runtime("native", x_fake_cut="3").invoke_model_with_response_stream(
            modelId=MISTRAL, body=MISTRAL_BODY
        )
        try:
            for event in answer["body"]:
                chunks.append(json.loads(event["chunk"]["bytes"]))
        except Exception:  # botocore's error for the connection cut mid-stream
            pass
        return chunks

    chunks = await asyncio.to_thread(run)
    text = "".join(chunk["outputs"][0]["text"] for chunk in chunks)
    assert text == "fake reply: what is"
    # No invocationMetrics came: the prompt and the text streamed are estimated.
    assert stack.take() == [
        (502, INPUT, estimate_tokens(json.loads(MISTRAL_BODY)["prompt"]), True),
        (502, OUTPUT, estimate_tokens(text), True),
    ]


@pytest.mark.parametrize("include_usage", [False, True], ids=["plain", "include_usage"])
async def test_openai_sdk_translated_stream(stack, include_usage) -> None:
    async with stack.oai() as client:
        stream = await client.chat.completions.create(
            model="any",
            messages=[
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "what is the weather like"},
            ],
            stream=True,
            stream_options={"include_usage": True} if include_usage else None,
        )
        chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "fake reply: what is the weather like"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    # System "be brief" (3 + 2) and the message (3 + 5) are 13 input tokens; 6 output.
    expected = [(200, INPUT, 13, False), (200, OUTPUT, 6, False)]
    assert stack.take() == expected
    usage = chunks[-1].usage
    if include_usage:
        assert (usage.prompt_tokens, usage.completion_tokens) == (13, 6)
    else:
        assert usage is None
    request = stack.fake.requests[-1]
    assert request.path == f"/model/{MODEL}/converse-stream"
    assert request.body["system"] == [{"text": "be brief"}]


async def test_openai_sdk_translated_whole_with_tools(stack) -> None:
    async with stack.oai() as client:
        completion = await client.chat.completions.create(
            model="any",
            messages=[{"role": "user", "content": "one two"}],
            max_tokens=2,
            tools=[{"type": "function", "function": {"name": "look", "parameters": {}}}],
        )
    assert completion.choices[0].message.content == "fake reply: one"
    assert completion.choices[0].finish_reason == "length"
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (5, 2)
    assert stack.take() == [(200, INPUT, 5, False), (200, OUTPUT, 2, False)]
    sent = stack.fake.requests[-1].body
    assert sent["inferenceConfig"] == {"maxTokens": 2}
    assert sent["toolConfig"]["tools"][0]["toolSpec"]["name"] == "look"


async def test_bedrock_error_passed_through_native_and_translated(stack) -> None:
    with pytest.raises(ClientError) as caught:
        await asyncio.to_thread(
            stack.runtime("native", x_fake_status="429").converse,
            modelId=MODEL,
            messages=MESSAGES,
        )
    assert caught.value.response["Error"]["Code"] == "ThrottlingException"
    assert stack.take() == [(429, INPUT, 0, False), (429, OUTPUT, 0, False)]
    async with stack.oai() as client:
        with pytest.raises(openai.BadRequestError) as refused:
            await client.chat.completions.create(
                model="x",
                messages=[{"role": "user", "content": "hi"}],
                extra_headers={"x-fake-status": "400"},
            )
    assert refused.value.body["code"] == "ValidationException"
    assert refused.value.body["type"] == "invalid_request_error"
    assert stack.take() == [(400, INPUT, 0, False), (400, OUTPUT, 0, False)]


@pytest.mark.parametrize("knob", ["x_fake_cut", "x_fake_corrupt"])
async def test_stream_cut_or_corrupt_is_metered_as_far_as_it_went(stack, knob) -> None:
    def run() -> list[dict[str, Any]]:
        answer = stack.runtime("native", **{knob: "2"}).converse_stream(
            modelId=MODEL, messages=MESSAGES
        )
        return list(answer["stream"])

    events = await asyncio.to_thread(run)
    # messageStart and the two deltas before the break reached the client, nothing after.
    assert [next(iter(e)) for e in events] == [
        "messageStart",
        "contentBlockDelta",
        "contentBlockDelta",
    ]
    streamed = "".join(e["contentBlockDelta"]["delta"]["text"] for e in events[1:])
    # No metadata event came: the prompt and the streamed text are estimated (marked), and
    # recorded with the failure's status (not billed by default).
    assert stack.take() == [
        (502, INPUT, estimate_tokens("what is the weather like"), True),
        (502, OUTPUT, estimate_tokens(streamed), True),
    ]


async def test_invoke_stream_cut_keeps_the_prompt_count_and_estimates_the_rest(stack) -> None:
    body = json.dumps(
        {
            "anthropic_version": "bedrock-2023-05-31",
            "max_tokens": 50,
            "messages": [{"role": "user", "content": "hello there"}],
        }
    )

    def run() -> list[dict[str, Any]]:
        runtime = stack.runtime("native", x_fake_cut="1")
        answer = runtime.invoke_model_with_response_stream(modelId=MODEL, body=body)
        return [json.loads(e["chunk"]["bytes"]) for e in answer["body"]]

    events = await asyncio.to_thread(run)
    assert [e["type"] for e in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
    ]
    streamed = events[2]["delta"]["text"]
    # message_start said 5 input tokens (exact); its output count (1) did not cover the
    # streamed text, which is estimated: the whole record is marked estimated.
    assert stack.take() == [
        (502, INPUT, 5, True),
        (502, OUTPUT, max(1, estimate_tokens(streamed)), True),
    ]


@pytest.mark.parametrize(
    ("exception", "status"),
    [("throttlingException", 429), ("modelStreamErrorException", 424)],
)
async def test_in_stream_exception_native_is_relayed_and_recorded_with_its_status(
    stack, exception, status
) -> None:
    seen: list[str] = []

    def run() -> None:
        answer = stack.runtime("native", x_fake_stream_error=f"2:{exception}").converse_stream(
            modelId=MODEL, messages=MESSAGES
        )
        try:
            for event in answer["stream"]:
                seen.append(event["contentBlockDelta"]["delta"]["text"] if len(seen) else "start")
        finally:
            answer["stream"].close()  # the raised exception leaves the connection to boto3

    with pytest.raises(EventStreamError) as raised:
        await asyncio.to_thread(run)
    # boto3 raises the modelled exception from the relayed frame.
    assert raised.value.response["Error"]["Code"] == exception
    streamed = "".join(seen[1:])
    assert len(seen) == 3
    # Recorded with the exception's status (never 200), as far as it streamed (estimated).
    assert stack.take() == [
        (status, INPUT, estimate_tokens("what is the weather like"), True),
        (status, OUTPUT, estimate_tokens(streamed), True),
    ]


async def test_in_stream_exception_translated_for_openai_and_anthropic_clients(stack) -> None:
    text = ""
    async with stack.oai() as client:
        stream = await client.chat.completions.create(
            model="x",
            messages=[{"role": "user", "content": "what is the weather like"}],
            stream=True,
            extra_headers={"x-fake-stream-error": "2:throttlingException"},
        )
        async with stream:
            with pytest.raises(openai.APIError) as raised:
                async for chunk in stream:
                    if chunk.choices:
                        text += chunk.choices[0].delta.content or ""
    # The exception reaches the OpenAI client as an error event in its stream.
    assert "throttlingException" in str(raised.value)
    assert raised.value.body["type"] == "rate_limit_error"
    assert raised.value.body["code"] == "throttlingException"
    assert text == "fake reply: what"
    # The Converse request the gateway sent: one message (3 + 5 words), estimated from text.
    assert stack.take() == [
        (429, INPUT, estimate_tokens("what is the weather like"), True),
        (429, OUTPUT, estimate_tokens(text), True),
    ]
    async with claude(stack) as anthropic_client:
        with pytest.raises(anthropic.APIStatusError) as refused:
            async with anthropic_client.messages.stream(
                model="claude-haiku-4-5",
                max_tokens=50,
                messages=[{"role": "user", "content": "hello there"}],
                extra_headers={"x-fake-stream-error": "1:throttlingException"},
            ) as answer:
                async for _ in answer:
                    pass
    assert refused.value.body["error"]["type"] == "rate_limit_error"
    events = stack.take()
    # message_start's prompt count (5) is exact; the output is estimated; status 429.
    assert [(s, kind, estimated) for s, kind, _, estimated in events] == [
        (429, INPUT, True),
        (429, OUTPUT, True),
    ]
    assert events[0][2] == 5


async def test_wrong_secret_is_a_clear_502_after_one_retry(stack) -> None:
    with pytest.raises(ClientError) as caught:
        await asyncio.to_thread(
            stack.runtime("wrong-secret").converse, modelId=MODEL, messages=MESSAGES
        )
    error = caught.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 502
    assert (
        "refused the gateway's AWS credentials (InvalidSignatureException)"
        in error["Error"]["Message"]
    )
    assert stack.fake.refused_signatures == 2  # the first try and one retry
    assert stack.take() == [(502, INPUT, 0, False), (502, OUTPUT, 0, False)]


async def test_assume_role_through_sts_then_cached(stack) -> None:
    runtime = stack.runtime("role")
    for _ in range(2):
        await asyncio.to_thread(runtime.converse, modelId=MODEL, messages=MESSAGES)
    assert stack.fake.assumed_roles == [(ROLE, "meterline-test")]
    # The Bedrock calls were signed with the role's temporary keys and session token.
    request = stack.fake.requests[-1]
    assert not request.headers["authorization"].startswith(
        f"AWS4-HMAC-SHA256 Credential={TEST_ACCESS_KEY_ID}/"
    )
    assert request.headers["x-amz-security-token"].startswith("FwoG")
    assert len(stack.take()) == 4


async def test_key_auth_refusal_in_bedrock_shape(stack) -> None:
    client = _SESSION.client(
        "bedrock-runtime",
        endpoint_url=f"{stack.url}/native",
        region_name="us-east-1",
        aws_access_key_id="AKIACLIENTJUNK000000",
        aws_secret_access_key="client-junk",
        config=Config(retries={"total_max_attempts": 1}),
    )
    with pytest.raises(ClientError) as caught:
        await asyncio.to_thread(client.converse, modelId=MODEL, messages=MESSAGES)
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 401
    assert caught.value.response["Error"]["Code"] == "AccessDeniedException"
    assert stack.fake.requests == []


def claude(stack: Stack) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=f"{stack.url}/claude", api_key=KEY, max_retries=0)


async def test_anthropic_sdk_to_claude_on_bedrock_whole_and_stream(stack) -> None:
    async with claude(stack) as client:
        message = await client.messages.create(
            model="claude-haiku-4-5",
            max_tokens=100,
            system="be brief",
            messages=[{"role": "user", "content": "what is the weather like"}],
        )
        assert message.content[0].text == "fake reply: what is the weather like"
        # System (3 + 2) and message (3 + 5) tokens in; 6 words out.
        assert (message.usage.input_tokens, message.usage.output_tokens) == (13, 6)
        assert stack.take() == [(200, INPUT, 13, False), (200, OUTPUT, 6, False)]
        sent = stack.fake.requests[-1]
        assert sent.path == f"/model/{MODEL}/invoke"
        assert sent.body["anthropic_version"] == "bedrock-2023-05-31"
        assert "model" not in sent.body and "stream" not in sent.body

        async with client.messages.stream(
            model="claude-haiku-4-5",
            max_tokens=100,
            messages=[{"role": "user", "content": "hello there"}],
        ) as stream:
            text = "".join([piece async for piece in stream.text_stream])
            final = await stream.get_final_message()
    assert text == "fake reply: hello there"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (5, 3)
    assert stack.take() == [(200, INPUT, 5, False), (200, OUTPUT, 3, False)]
    assert stack.fake.requests[-1].path == f"/model/{MODEL}/invoke-with-response-stream"


async def test_bedrock_error_in_anthropic_shape(stack) -> None:
    async with claude(stack) as client:
        with pytest.raises(anthropic.RateLimitError) as refused:
            await client.messages.create(
                model="x",
                max_tokens=10,
                messages=[{"role": "user", "content": "hi"}],
                extra_headers={"x-fake-status": "429"},
            )
    assert refused.value.body == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "Forced"},
    }
    assert stack.take() == [(429, INPUT, 0, False), (429, OUTPUT, 0, False)]


async def test_credential_chain_signs_or_fails_clearly(stack, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    # No credentials anywhere: a clear 502, recorded, nothing sent upstream.
    with pytest.raises(ClientError) as refused:
        await asyncio.to_thread(stack.runtime("chain").converse, modelId=MODEL, messages=MESSAGES)
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 502
    assert refused.value.response["Error"]["Message"].startswith(
        "The gateway could not sign the upstream request: no AWS credentials"
    )
    assert stack.fake.requests == []
    assert stack.take() == [(502, INPUT, 0, False), (502, OUTPUT, 0, False)]
    # The environment's keys (the chain's first link) once they are there.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", TEST_ACCESS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", TEST_SECRET_ACCESS_KEY)
    answer = await asyncio.to_thread(
        stack.runtime("chain").converse, modelId=MODEL, messages=MESSAGES
    )
    assert stack.take() == billed(answer["usage"])


async def test_count_tokens_is_answered_and_never_metered(stack) -> None:
    async with claude(stack) as client:
        counted = await client.messages.count_tokens(
            model="claude-haiku-4-5",
            system="be brief",
            messages=[{"role": "user", "content": "what is the weather like"}],
        )
    # The same 13 prompt tokens a message with this prompt is billed for.
    assert counted.input_tokens == 13
    assert stack.fake.requests[-1].path == f"/model/{MODEL}/count-tokens"
    body = json.dumps(
        {
            "anthropic_version": "bedrock-2023-05-31",
            "max_tokens": 5,
            "messages": [{"role": "user", "content": "hello there"}],
        }
    )
    answer = await asyncio.to_thread(
        stack.runtime("native").count_tokens,
        modelId=MODEL,
        input={"invokeModel": {"body": body.encode()}},
    )
    assert answer["inputTokens"] == 5
    assert stack.events == []


async def test_refused_credentials_fail_over_to_the_next_target(stack) -> None:
    answer = await asyncio.to_thread(
        stack.runtime("failover").converse, modelId=MODEL, messages=MESSAGES
    )
    assert answer["usage"]["inputTokens"] == 8
    # The bad target was tried and retried once (both refused), then the good one answered.
    assert stack.fake.refused_signatures == 2
    attempts = sorted({(e.llm_tokens.attempt, e.llm_tokens.status_code) for e in stack.events})
    assert attempts == [(1, 502), (2, 200)]
    billed_now = [t for t in stack.take() if t[0] == 200]
    assert billed_now == billed(answer["usage"])


async def test_an_expired_session_is_refreshed_once_and_the_request_succeeds(stack) -> None:
    runtime = stack.runtime("role")
    await asyncio.to_thread(runtime.converse, modelId=MODEL, messages=MESSAGES)
    stack.take()
    # Given the role's session expires at AWS before the gateway's clock says so...
    stack.fake.expire_sessions()
    # ...the next request is refused once, the role assumed again, and the retry answers.
    answer = await asyncio.to_thread(runtime.converse, modelId=MODEL, messages=MESSAGES)
    assert stack.fake.refused_signatures == 1
    assert len(stack.fake.assumed_roles) == 2
    assert stack.take() == billed(answer["usage"])


async def test_openai_sdk_translated_stream_cut_is_estimated(stack) -> None:
    text = ""
    async with stack.oai() as client:
        try:
            stream = await client.chat.completions.create(
                model="x",
                messages=[{"role": "user", "content": "what is the weather like"}],
                stream=True,
                extra_headers={"x-fake-cut": "2"},
            )
            async for chunk in stream:
                if chunk.choices:
                    text += chunk.choices[0].delta.content or ""
        except (openai.APIError, httpx.HTTPError):
            pass  # the client may see the cut as an error: it keeps what it got
    assert text == "fake reply: what"
    assert stack.take() == [
        (502, INPUT, estimate_tokens("what is the weather like"), True),
        (502, OUTPUT, estimate_tokens(text), True),
    ]
