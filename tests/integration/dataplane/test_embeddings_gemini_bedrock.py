"""Embeddings (route_type llm/v1/embeddings) on Gemini, Vertex AI and Bedrock through the real
proxy, with the openai SDK (translated), google-genai (native batchEmbedContents; Vertex AI's
predict and embedContent) and boto3 (native InvokeModel) as clients: billed by input tokens,
exactly where the provider reports them (Titan's inputTextTokenCount, Bedrock's
X-Amzn-Bedrock-Input-Token-Count for Cohere Embed, Vertex AI's statistics.token_count and
usageMetadata), estimated and marked where it does not (the Gemini API); errors translated,
recorded with their status and not billed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import google.oauth2.credentials
import httpx
import openai
import pytest
from botocore.config import Config
from google import genai
from google.genai import types as genai_types

from dataplane.config.keys import hash_key
from dataplane.http.server import serve_http
from dataplane.proxy.compiler import compile_snapshot
from dataplane.proxy.gateway import Gateway
from dataplane.testing.fake_bedrock import (
    TEST_ACCESS_KEY_ID,
    TEST_SECRET_ACCESS_KEY,
    FakeBedrock,
)
from dataplane.testing.fake_gemini import FakeGemini, embedding
from dataplane.usage.estimate import estimate_tokens
from meterline.dataplane.v1 import snapshot_pb2, usage_pb2

KEY = "sk-meterline-acme-0001"
GEMINI_KEY = "gemini-provider-key"
INPUT = usage_pb2.TOKEN_TYPE_INPUT
OUTPUT = usage_pb2.TOKEN_TYPE_OUTPUT
EMBEDDINGS = "llm/v1/embeddings"
GEMINI_MODEL = "gemini-embedding-001"
TITAN = "amazon.titan-embed-text-v2:0"
COHERE = "cohere.embed-english-v3"
VERTEX_MODEL = "text-embedding-005"
PROJECT = "proj"
VERTEX_PATH = f"/v1/projects/{PROJECT}/locations/us-central1/publishers/google/models"


def _gemini(
    url: str, llm_format: str, *, project: str = "", account: dict[str, str] | None = None
) -> snapshot_pb2.AiProxyConfig:
    auth = snapshot_pb2.AiProxyAuth(header_name="x-goog-api-key", header_value=GEMINI_KEY)
    if account is not None:
        auth = snapshot_pb2.AiProxyAuth(
            gcp_use_service_account=True, gcp_service_account_json=json.dumps(account)
        )
    return snapshot_pb2.AiProxyConfig(
        route_type=EMBEDDINGS,
        llm_format=llm_format,
        auth=auth,
        model=snapshot_pb2.AiProxyModel(
            provider="gemini",
            options=snapshot_pb2.AiProxyModelOptions(
                upstream_url=url,
                gemini=snapshot_pb2.GeminiOptions(
                    project_id=project, location_id="us-central1" if project else ""
                ),
            ),
        ),
    )


def _bedrock(url: str, llm_format: str, model: str = "") -> snapshot_pb2.AiProxyConfig:
    return snapshot_pb2.AiProxyConfig(
        route_type=EMBEDDINGS,
        llm_format=llm_format,
        auth=snapshot_pb2.AiProxyAuth(
            aws_access_key_id=TEST_ACCESS_KEY_ID, aws_secret_access_key=TEST_SECRET_ACCESS_KEY
        ),
        model=snapshot_pb2.AiProxyModel(
            provider="bedrock",
            name=model,
            options=snapshot_pb2.AiProxyModelOptions(
                upstream_url=url,
                bedrock=snapshot_pb2.AiProxyBedrockOptions(aws_region="us-east-1"),
            ),
        ),
    )


def build_snapshot(routes: dict[str, snapshot_pb2.AiProxyConfig]) -> snapshot_pb2.Snapshot:
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
                key_auth=snapshot_pb2.KeyAuthConfig(
                    key_names=["apikey", "x-goog-api-key"], key_in_bearer=True
                ),
            )
        ],
    )
    for name, config in routes.items():
        snapshot.routes.add(id=f"r-{name}", name=name, service_id="svc", paths=[f"/{name}"])
        snapshot.plugins.add(id=f"p-{name}", name="ai-proxy", route_id=f"r-{name}", enabled=True)
        snapshot.plugins[-1].ai_proxy.CopyFrom(config)
    return snapshot


@dataclass
class Stack:
    url: str
    gemini: FakeGemini
    bedrock: FakeBedrock
    http: httpx.AsyncClient
    events: list[usage_pb2.UsageEvent] = field(default_factory=list)

    def take(self) -> list[tuple[str, int, int, int, bool]]:
        """(provider, status, token type, tokens, estimated) of the events, then forget them."""
        taken = sorted(
            (t.provider, t.status_code, t.token_type, t.tokens, t.estimated)
            for t in (event.llm_tokens for event in self.events)
        )
        self.events.clear()
        return taken

    def oai(self, route: str) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=f"{self.url}/{route}", api_key=KEY, max_retries=0)

    def runtime(self, route: str) -> Any:
        client = boto3.session.Session().client(
            "bedrock-runtime",
            endpoint_url=f"{self.url}/{route}",
            region_name="us-east-1",
            aws_access_key_id="AKIACLIENTJUNK000000",
            aws_secret_access_key="client-junk",
            config=Config(retries={"total_max_attempts": 1}),
        )
        client.meta.events.register(
            "before-sign.bedrock-runtime.*",
            lambda request, **_: request.headers.__setitem__("apikey", KEY),
        )
        return client


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    gemini, bedrock = FakeGemini(api_key=GEMINI_KEY), FakeBedrock()
    events: list[usage_pb2.UsageEvent] = []
    gateway = Gateway(node_id="dp-test", usage_sink=events.append)
    async with serve_http(gemini) as gm, serve_http(bedrock) as br, httpx.AsyncClient() as http:
        account = gemini.oauth.service_account(f"{gm.url}/token")
        routes = {
            "gem-oa": _gemini(gm.url, "openai"),
            "gem": _gemini(gm.url, "gemini"),
            "vx-oa": _gemini(gm.url, "openai", project=PROJECT, account=account),
            "vx": _gemini(gm.url, "gemini", project=PROJECT, account=account),
            "titan-oa": _bedrock(br.url, "openai", TITAN),
            "cohere-oa": _bedrock(br.url, "openai", COHERE),
            "br": _bedrock(br.url, "bedrock"),
        }
        gateway.apply(compile_snapshot(build_snapshot(routes), version="v1"))
        try:
            async with serve_http(gateway) as address:
                yield Stack(address.url, gemini, bedrock, http, events)
        finally:
            await gateway.aclose()


TEXTS = ["the quick brown fox", "jumps over the lazy dog"]


async def test_openai_sdk_embeddings_on_gemini_are_translated_and_estimated(stack) -> None:
    async with stack.oai("gem-oa") as client:
        answer = await client.embeddings.create(model=GEMINI_MODEL, input=TEXTS, dimensions=4)
    assert [d.embedding for d in answer.data] == [embedding(t, 4) for t in TEXTS]
    assert [d.index for d in answer.data] == [0, 1]
    sent = stack.gemini.requests[-1]
    assert sent.path == f"/v1beta/models/{GEMINI_MODEL}:batchEmbedContents"
    assert sent.body == {
        "requests": [
            {
                "model": f"models/{GEMINI_MODEL}",
                "content": {"parts": [{"text": text}]},
                "outputDimensionality": 4,
            }
            for text in TEXTS
        ]
    }
    # The Gemini API reports no usage for embeddings: the inputs are estimated, marked.
    assert stack.take() == [
        ("gemini", 200, INPUT, estimate_tokens("".join(TEXTS)), True),
        ("gemini", 200, OUTPUT, 0, True),
    ]


async def test_google_genai_embed_content_native(stack) -> None:
    client = genai.Client(
        api_key=KEY,
        http_options=genai_types.HttpOptions(
            base_url=f"{stack.url}/gem", httpx_async_client=stack.http
        ),
    )
    answer = await client.aio.models.embed_content(model=GEMINI_MODEL, contents=TEXTS)
    assert [e.values for e in answer.embeddings] == [embedding(t) for t in TEXTS]
    assert stack.gemini.requests[-1].path.endswith(f"{GEMINI_MODEL}:batchEmbedContents")
    events = stack.take()
    assert [(p, s, kind, estimated) for p, s, kind, _, estimated in events] == [
        ("gemini", 200, INPUT, True),
        ("gemini", 200, OUTPUT, True),
    ]
    assert events[0][3] == estimate_tokens("".join(TEXTS))


async def test_openai_sdk_on_titan_is_billed_exactly(stack) -> None:
    async with stack.oai("titan-oa") as client:
        answer = await client.embeddings.create(model="any", input="one two three", dimensions=4)
    assert len(answer.data[0].embedding) == 4
    assert answer.usage.prompt_tokens == 3
    sent = stack.bedrock.requests[-1]
    assert sent.path == f"/model/{TITAN}/invoke"
    assert sent.body == {"inputText": "one two three", "dimensions": 4}
    # Titan's inputTextTokenCount: exact.
    assert stack.take() == [("bedrock", 200, INPUT, 3, False), ("bedrock", 200, OUTPUT, 0, False)]
    # Titan embeds one text per call: a list is refused before Bedrock is called.
    before = len(stack.bedrock.requests)
    async with stack.oai("titan-oa") as client:
        with pytest.raises(openai.BadRequestError) as refused:
            await client.embeddings.create(model="any", input=TEXTS)
    assert refused.value.body["param"] == "input"
    assert len(stack.bedrock.requests) == before and stack.events == []


async def test_openai_sdk_on_cohere_embed_is_billed_from_bedrocks_header(stack) -> None:
    async with stack.oai("cohere-oa") as client:
        answer = await client.embeddings.create(model="any", input=TEXTS)
    assert len(answer.data) == 2
    sent = stack.bedrock.requests[-1]
    assert sent.path == f"/model/{COHERE}/invoke"
    assert sent.body == {"texts": TEXTS, "input_type": "search_document"}
    # Cohere Embed's body has no count: X-Amzn-Bedrock-Input-Token-Count's is billed, exactly,
    # and shown to the OpenAI client as its usage.
    words = sum(len(text.split()) for text in TEXTS)
    assert answer.usage.prompt_tokens == words
    assert stack.take() == [
        ("bedrock", 200, INPUT, words, False),
        ("bedrock", 200, OUTPUT, 0, False),
    ]


async def test_boto3_invoke_model_titan_native_is_billed_exactly(stack) -> None:
    def run() -> dict[str, Any]:
        answer = stack.runtime("br").invoke_model(
            modelId=TITAN, body=json.dumps({"inputText": "a b c d e"})
        )
        return json.loads(answer["body"].read())

    document = await asyncio.to_thread(run)
    assert document["inputTextTokenCount"] == 5
    assert stack.take() == [("bedrock", 200, INPUT, 5, False), ("bedrock", 200, OUTPUT, 0, False)]


async def test_errors_are_openai_shaped_recorded_and_not_billed(stack) -> None:
    async with stack.oai("gem-oa") as client:
        with pytest.raises(openai.RateLimitError):
            await client.embeddings.create(
                model=GEMINI_MODEL, input="x", extra_headers={"x-fake-status": "429"}
            )
    assert stack.take() == [("gemini", 429, INPUT, 0, False), ("gemini", 429, OUTPUT, 0, False)]
    async with stack.oai("titan-oa") as client:
        with pytest.raises(openai.BadRequestError) as refused:
            await client.embeddings.create(
                model="any", input="x", extra_headers={"x-fake-status": "400"}
            )
    assert refused.value.body["code"] == "ValidationException"
    assert stack.take() == [("bedrock", 400, INPUT, 0, False), ("bedrock", 400, OUTPUT, 0, False)]


def _vertex_tokens(text: str) -> int:
    """Vertex AI's token_count of a text, as the fake reports it (3 + its words)."""
    return 3 + len(text.split())


async def test_openai_sdk_embeddings_on_vertex_predict_are_billed_exactly(stack) -> None:
    # Given an OpenAI client on an embeddings route whose target is Vertex AI.
    async with stack.oai("vx-oa") as client:
        answer = await client.embeddings.create(model=VERTEX_MODEL, input=TEXTS, dimensions=4)
    # Then the gateway called Vertex AI's predict with one instance per input.
    sent = stack.gemini.requests[-1]
    assert sent.path == f"{VERTEX_PATH}/{VERTEX_MODEL}:predict"
    assert sent.body == {
        "instances": [{"content": text} for text in TEXTS],
        "parameters": {"outputDimensionality": 4},
    }
    assert sent.headers["authorization"].startswith("Bearer ya29.fake-")
    # And the vectors came back in OpenAI's shape, billed exactly by Vertex AI's token counts.
    assert [d.embedding for d in answer.data] == [embedding(t, 4) for t in TEXTS]
    reported = sum(_vertex_tokens(t) for t in TEXTS)
    assert answer.usage.prompt_tokens == reported
    assert stack.take() == [
        ("gemini", 200, INPUT, reported, False),
        ("gemini", 200, OUTPUT, 0, False),
    ]


def vertex_client(stack: Stack) -> genai.Client:
    """google-genai in Vertex AI mode pointed at the native route, the gateway's key as its
    bearer token (the gateway puts its own service account's token upstream)."""
    return genai.Client(
        vertexai=True,
        project=PROJECT,
        location="us-central1",
        credentials=google.oauth2.credentials.Credentials(token=KEY),
        http_options=genai_types.HttpOptions(
            base_url=f"{stack.url}/vx", api_version="v1", httpx_async_client=stack.http
        ),
    )


async def test_google_genai_vertex_predict_native_is_billed_exactly(stack) -> None:
    client = vertex_client(stack)
    answer = await client.aio.models.embed_content(
        model=VERTEX_MODEL,
        contents=TEXTS,
        config=genai_types.EmbedContentConfig(output_dimensionality=4),
    )
    # google-genai called :predict (a text-embedding model on Vertex AI) through the gateway.
    sent = stack.gemini.requests[-1]
    assert sent.path == f"{VERTEX_PATH}/{VERTEX_MODEL}:predict"
    assert [e.values for e in answer.embeddings] == [embedding(t, 4) for t in TEXTS]
    # Billed exactly: the sum of the statistics.token_count the SDK also shows.
    counts = [int(e.statistics.token_count) for e in answer.embeddings]
    assert counts == [_vertex_tokens(t) for t in TEXTS]
    assert stack.take() == [
        ("gemini", 200, INPUT, sum(counts), False),
        ("gemini", 200, OUTPUT, 0, False),
    ]


async def test_google_genai_vertex_embed_content_native_reads_usage_metadata(stack) -> None:
    client = vertex_client(stack)
    answer = await client.aio.models.embed_content(
        model="gemini-embedding-001", contents="the quick brown fox"
    )
    assert stack.gemini.requests[-1].path.endswith("gemini-embedding-001:embedContent")
    assert answer.embeddings[0].statistics.token_count == _vertex_tokens("the quick brown fox")
    assert stack.take() == [
        ("gemini", 200, INPUT, _vertex_tokens("the quick brown fox"), False),
        ("gemini", 200, OUTPUT, 0, False),
    ]


async def test_vertex_predict_error_is_passed_through_recorded_and_not_billed(stack) -> None:
    # A gemini-embedding model takes one instance per predict: Vertex AI's 400, OpenAI-shaped.
    async with stack.oai("vx-oa") as client:
        with pytest.raises(openai.BadRequestError) as refused:
            await client.embeddings.create(model="gemini-embedding-001", input=TEXTS)
    assert refused.value.body["code"] == "INVALID_ARGUMENT"
    assert stack.take() == [("gemini", 400, INPUT, 0, False), ("gemini", 400, OUTPUT, 0, False)]
