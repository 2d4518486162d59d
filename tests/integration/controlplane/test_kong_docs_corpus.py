"""Kong's own documented decK files (tests/fixtures/deck/kong-docs, rendered from
developer.konghq.com's plugin examples and AI Gateway how-to guides, never edited): each one
applies to a real control plane with only "accepted, not enforced" notes, or is refused with
an error naming by value the feature data planes of this version do not serve; what applies
compiles with the data plane's own compiler, and a subset per provider is served through the
provider's SDK against its fake, billing exactly the tokens the fake reported."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import anthropic
import boto3
import cohere
import grpc
import httpx
import openai
import pytest
from botocore.config import Config
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google import genai
from google.genai import types as genai_types

from controlplane.configsync.snapshot import build_snapshot
from controlplane.declarative import parse_document
from controlplane.declarative.envsubst import resolve
from controlplane.declarative.load import load_text
from dataplane.http.server import serve_http
from dataplane.proxy.compiler import compile_snapshot
from dataplane.proxy.gateway import Gateway
from dataplane.testing.fake_anthropic import FakeAnthropic
from dataplane.testing.fake_bedrock import (
    TEST_ACCESS_KEY_ID,
    TEST_SECRET_ACCESS_KEY,
    FakeBedrock,
)
from dataplane.testing.fake_cohere import FakeCohere
from dataplane.testing.fake_gemini import FakeGemini, FakeGoogleOAuth
from dataplane.testing.fake_ollama import FakeOllama
from dataplane.testing.fake_openai import FakeProvider
from meterline.admin.v1 import gateway_pb2

KONG_DOCS = Path(__file__).resolve().parents[2] / "fixtures" / "deck" / "kong-docs"
FILES = sorted(KONG_DOCS.glob("*.yaml"))


def _service_account() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    account = {
        "type": "service_account",
        "client_email": "kong@my-project.iam.gserviceaccount.com",
        "private_key": pem,
        "token_uri": "https://oauth2.googleapis.com/token",
    }
    return json.dumps(account)


# The values a user exports before `deck gateway sync` (names as Kong's docs spell them);
# any other DECK_ variable gets "test-<name>".
SPECIAL_ENV = {
    "DECK_AZURE_INSTANCE": "my-openai-instance",
    "DECK_AZURE_INSTANCE_NAME": "my-openai-instance",
    "DECK_AZURE_DEPLOYMENT": "gpt-4o",
    "DECK_AZURE_DEPLOYMENT_ID": "gpt-4o",
    "DECK_DATABRICKS_WORKSPACE_INSTANCE_ID": "dbc-a1b2c3d4-e5f6",
    "DECK_OLLAMA_UPSTREAM_URL": "http://127.0.0.1:11434/api/chat",
    "DECK_VLLM_UPSTREAM_URL": "http://127.0.0.1:8000/v1/chat/completions",
    "DECK_AWS_REGION": "us-east-1",
    "DECK_REGION": "us-east-1",
    "DECK_GCP_PROJECT_ID": "my-project",
    "DECK_GCP_LOCATION_ID": "us-central1",
    "DECK_GCP_API_ENDPOINT": "us-central1-aiplatform.googleapis.com",
    "DECK_VERTEX_API_ENDPOINT": "us-central1-aiplatform.googleapis.com",
    "DECK_GEMINI_API_ENDPOINT": "generativelanguage.googleapis.com",
    "DECK_CLUSTER_ADDRESS": "10.0.0.1",
    "DECK_INSTANCE_ADDRESS": "redis.example.com",
    "DECK_REDIS_HOST": "127.0.0.1",
}


def env_for(text: str, **overrides: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for name in re.findall(r'env "(DECK_\w+)"', text):
        if name == "DECK_GCP_SERVICE_ACCOUNT_JSON":
            env[name] = _service_account()
        else:
            env[name] = SPECIAL_ENV.get(name, f"test-{name.lower()}")
    env.update(overrides)
    return env


# What data planes of this version do not serve, named by value in the refusal.
ROUTE_TYPE = 'route_type "{}" is not supported yet by data planes of this version'
ANTHROPIC_FORMAT = 'llm_format "anthropic"'
TEMPLATES = (
    'model.name "{}": Kong\'s template values ($(uri_captures...), $(headers...), '
    "$(query_params...)) are not supported yet by data planes of this version"
)
REFUSED = {
    "howto--authenticate-openai-sdk-clients-with-key-auth": (
        'name "pre-function" is not a plugin Meterline serves'
    ),
    "howto--strip-model-from-open-ai-sdk-requests": (
        'name "pre-function" is not a plugin Meterline serves'
    ),
    "howto--meter-llm-traffic": 'name "metering-and-billing" is not a plugin Meterline serves',
    "howto--use-semantic-load-balancing": (
        'config.balancer.algorithm "semantic" is not supported yet by data planes'
    ),
    "plugin-ai-proxy--assistants-route-type": ROUTE_TYPE.format("llm/v1/assistants"),
    "plugin-ai-proxy--audio-speech-openai": ROUTE_TYPE.format("audio/v1/audio/speech"),
    "plugin-ai-proxy--audio-transcription-openai": ROUTE_TYPE.format(
        "audio/v1/audio/transcriptions"
    ),
    "plugin-ai-proxy--audio-translation-openai": ROUTE_TYPE.format("audio/v1/audio/translations"),
    "plugin-ai-proxy--azure-batches-route": ROUTE_TYPE.format("llm/v1/files"),
    "plugin-ai-proxy--azure-files-route": ROUTE_TYPE.format("llm/v1/batches"),
    "plugin-ai-proxy--batches-route-type": ROUTE_TYPE.format("llm/v1/batches"),
    "plugin-ai-proxy--files-route-type": ROUTE_TYPE.format("llm/v1/files"),
    "plugin-ai-proxy--image-edits-openai": ROUTE_TYPE.format("image/v1/images/edits"),
    "plugin-ai-proxy--image-generation-openai": ROUTE_TYPE.format("image/v1/images/generations"),
    "plugin-ai-proxy--xai-image-generation": ROUTE_TYPE.format("image/v1/images/generations"),
    "plugin-ai-proxy--video-generation-openai": (
        'field "config.model.options.seconds" (video generation) is not supported yet'
    ),
    "plugin-ai-proxy--claude-code-azure": ANTHROPIC_FORMAT,
    "plugin-ai-proxy--claude-code-dashscope": ANTHROPIC_FORMAT,
    "plugin-ai-proxy--claude-code-gemini": ANTHROPIC_FORMAT,
    "plugin-ai-proxy--claude-code-huggingface": ANTHROPIC_FORMAT,
    "plugin-ai-proxy--claude-code-openai": ANTHROPIC_FORMAT,
    "plugin-ai-proxy--claude-code-vertex": ANTHROPIC_FORMAT,
    "plugin-ai-proxy--hugging-face-native-routes": (
        'config.llm_format "huggingface" is not supported yet by data planes'
    ),
    # Kong's own schema refuses these three too: a typo (model.model) and pages that list
    # several plugin configs (one per route) under a single `config`.
    "plugin-ai-proxy--sdk-azure-deployment": 'unknown field "config.model.model"',
    "plugin-ai-proxy--sdk-multiple-azure-deployments": "config must be a mapping, got a list",
    "plugin-ai-proxy--sdk-two-routes": "config must be a mapping, got a list",
    "plugin-ai-proxy-advanced--sdk-multiple-azure-deployments": (
        "config must be a mapping, got a list"
    ),
    "plugin-ai-proxy-advanced--sdk-two-routes": 'unknown field "config.targets[0].targets"',
    "plugin-ai-proxy-advanced--assistants-route-type": ROUTE_TYPE.format("llm/v1/assistants"),
    "plugin-ai-proxy-advanced--audio-speech-openai": ROUTE_TYPE.format("audio/v1/audio/speech"),
    "plugin-ai-proxy-advanced--audio-transcription-openai": ROUTE_TYPE.format(
        "audio/v1/audio/transcriptions"
    ),
    "plugin-ai-proxy-advanced--audio-translation-openai": ROUTE_TYPE.format(
        "audio/v1/audio/translations"
    ),
    "plugin-ai-proxy-advanced--azure-batches-route": ROUTE_TYPE.format("llm/v1/batches"),
    "plugin-ai-proxy-advanced--azure-files-route": ROUTE_TYPE.format("llm/v1/files"),
    "plugin-ai-proxy-advanced--batches-route-type": ROUTE_TYPE.format("llm/v1/batches"),
    "plugin-ai-proxy-advanced--files-route-type": ROUTE_TYPE.format("llm/v1/files"),
    "plugin-ai-proxy-advanced--image-edits-openai": ROUTE_TYPE.format("image/v1/images/edits"),
    "plugin-ai-proxy-advanced--image-generation-openai": ROUTE_TYPE.format(
        "image/v1/images/generations"
    ),
    "plugin-ai-proxy-advanced--realtime-route-openai": ROUTE_TYPE.format("realtime/v1/realtime"),
    "plugin-ai-proxy-advanced--video-generation-openai": (
        'field "config.targets[0].model.options.seconds" (video generation) is not supported yet'
    ),
    "plugin-ai-proxy-advanced--xai-image-generation": (
        'field "config.targets[0].genai_category" (Kong\'s generative-AI categories'
    ),
    "plugin-ai-proxy-advanced--claude-code-azure": ANTHROPIC_FORMAT,
    "plugin-ai-proxy-advanced--claude-code-dashscope": ANTHROPIC_FORMAT,
    "plugin-ai-proxy-advanced--claude-code-gemini": ANTHROPIC_FORMAT,
    "plugin-ai-proxy-advanced--claude-code-huggingface": ANTHROPIC_FORMAT,
    "plugin-ai-proxy-advanced--claude-code-openai": ANTHROPIC_FORMAT,
    "plugin-ai-proxy-advanced--claude-code-vertex": ANTHROPIC_FORMAT,
    "plugin-ai-proxy-advanced--hugging-face-native-routes": (
        'config.llm_format "huggingface" is not supported yet by data planes'
    ),
    "plugin-ai-proxy-advanced--least-connections": (
        'config.balancer.algorithm "least-connections" is not supported yet by data planes'
    ),
    "plugin-ai-proxy-advanced--semantic": 'config.balancer.algorithm "semantic" is not supported',
    "plugin-ai-proxy-advanced--semantic-valkey": (
        'config.balancer.algorithm "semantic" is not supported'
    ),
    "plugin-ai-proxy-advanced--semantic-with-fallback": (
        'config.balancer.algorithm "semantic" is not supported'
    ),
    # Kong fills $(uri_captures.model), $(headers.x-...) per request from regex routes.
    "plugin-ai-proxy--sdk-dynamic-model-selection": TEMPLATES.format("$(uri_captures.model)"),
    "plugin-ai-proxy-advanced--sdk-dynamic-model-selection": TEMPLATES.format(
        "$(uri_captures.model)"
    ),
    "plugin-ai-proxy--sdk-multiple-providers": TEMPLATES.format("$(uri_captures.azure_instance)"),
    "plugin-ai-proxy-advanced--sdk-azure-one-route": TEMPLATES.format(
        "$(uri_captures.azure_instance)"
    ),
    "plugin-ai-rate-limiting-advanced--request-prompt-count-aws-cluster": (
        "Redis Cluster, redis.cluster_nodes, and Redis Sentinel, redis.sentinel_nodes, are not "
        "supported yet"
    ),
    "plugin-ai-rate-limiting-advanced--request-prompt-count-azure-cluster": (
        "Redis Cluster, redis.cluster_nodes, and Redis Sentinel, redis.sentinel_nodes, are not "
        "supported yet"
    ),
    "plugin-ai-rate-limiting-advanced--request-prompt-count-gcp-cluster": (
        "Redis Cluster, redis.cluster_nodes, and Redis Sentinel, redis.sentinel_nodes, are not "
        "supported yet"
    ),
    "plugin-key-auth--principals": (
        'field "config.principals" (keys of a Konnect directory\'s principals) is not supported'
    ),
    "plugin-rate-limiting-advanced--rate-limit-counter-key": (
        'field "config.counter_key" (Kong 3.14\'s counter key) is not supported yet'
    ),
}


def _document(path: Path) -> dict[str, Any]:
    text = path.read_text()
    return resolve(load_text(text), env_for(text))


def test_the_files_are_kongs_with_their_source_named() -> None:
    assert len(FILES) >= 150
    for path in FILES:
        head = path.read_text().splitlines()[1]
        assert head.startswith("# Source: https://developer.konghq.com/"), path.name
    assert set(REFUSED) <= {p.stem for p in FILES}
    text = "\n".join(p.read_text() for p in FILES)
    for provider in (
        "openai", "azure", "anthropic", "cohere", "mistral", "llama2", "gemini", "bedrock",
        "huggingface", "dashscope", "databricks", "xai", "cerebras", "vllm", "ollama",
    ):  # fmt: skip
        assert f"provider: {provider}\n" in text, provider
    for algorithm in ("round-robin", "lowest-latency", "lowest-usage", "priority",
                      "consistent-hashing", "semantic", "least-connections"):  # fmt: skip
        assert f"algorithm: {algorithm}\n" in text, algorithm


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_each_kong_file_compiles_with_only_unenforced_notes_or_is_refused_by_name(
    path: Path,
) -> None:
    document = json.dumps(_document(path))
    refusal = REFUSED.get(path.stem)
    if refusal is not None:
        with pytest.raises(Exception) as caught:
            parse_document(document)
        assert refusal in str(caught.value)
        return
    config = parse_document(document)
    assert all(": accepted, not enforced: " in note for note in config.notes), config.notes
    built = build_snapshot(config.gateway)
    assert compile_snapshot(built.snapshot, version=built.version) is not None


async def test_each_kong_file_applies_to_a_control_plane_or_is_refused_and_changes_nothing(
    harness,
) -> None:
    applied = refused = 0
    for path in FILES:
        text = json.dumps(_document(path))
        request = gateway_pb2.ApplyConfigRequest(document=text, sync=True)
        refusal = REFUSED.get(path.stem)
        if refusal is not None:
            before = await harness.gateway.ListRoutes(gateway_pb2.ListRoutesRequest())
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await harness.gateway.ApplyConfig(request)
            assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT, path.name
            assert refusal in (caught.value.details() or ""), path.name
            after = await harness.gateway.ListRoutes(gateway_pb2.ListRoutesRequest())
            assert after == before, path.name
            refused += 1
            continue
        first = await harness.gateway.ApplyConfig(request)
        assert first.changes, path.name
        assert all(": accepted, not enforced: " in n for n in first.notes), path.name
        again = await harness.gateway.ApplyConfig(request)
        assert list(again.changes) == [], path.name
        applied += 1
    assert (applied, refused) == (len(FILES) - len(REFUSED), len(REFUSED))


# --- Served through the provider's SDK -------------------------------------------------------
# Each case: a Kong file as documented, the DECK_ values a user exports, and only the upstream
# host replaced by the fake's (model.options.upstream_url, which Kong documents for this);
# a plugin example (a global plugin) gets the how-to guides' example-service/example-route.

MESSAGES = [{"role": "user", "content": "What is the theory of relativity?"}]
OPENAI_KEY = "sk-client-key"  # what the client sends; the files' own credential replaces it
PROVIDER_KEY = "sk-kong-docs-provider"  # every DECK_..._KEY / _TOKEN a served file names


def _targets(plugin: dict[str, Any]) -> list[dict[str, Any]]:
    config = plugin["config"]
    return config["targets"] if plugin["name"] == "ai-proxy-advanced" else [config]


def served_document(stem: str, upstream: str, **env: str) -> dict[str, Any]:
    text = (KONG_DOCS / f"{stem}.yaml").read_text()
    names = env_for(text)
    keys = {n: PROVIDER_KEY for n in names if n.endswith(("_KEY", "_TOKEN"))}
    env = {n: v for n, v in env.items() if n in names}
    document = resolve(load_text(text), env_for(text, **{**keys, **env}))
    for plugin in document["plugins"]:
        for target in _targets(plugin):
            options = target["model"].setdefault("options", {})
            options["upstream_url"] = upstream
    if "routes" not in document and "services" not in document:
        document["services"] = [
            {"name": "example-service", "url": "http://httpbin.konghq.com/anything"}
        ]
        document["routes"] = [
            {
                "name": "example-route",
                "paths": ["/anything"],
                "service": {"name": "example-service"},
            }
        ]
    return document


class Served:
    """A data plane in process, serving one Kong file's snapshot, recording usage."""

    def __init__(self, document: dict[str, Any]) -> None:
        config = parse_document(json.dumps(document))
        assert all(": accepted, not enforced: " in note for note in config.notes)
        built = build_snapshot(config.gateway)
        self.events: list[Any] = []
        self.gateway = Gateway(node_id="dp-kong-docs", usage_sink=self.events.append)
        self.gateway.apply(compile_snapshot(built.snapshot, version=built.version))

    def billed(self) -> int:
        tokens = [e.llm_tokens for e in self.events if e.HasField("llm_tokens")]
        assert tokens and all(t.status_code == 200 and not t.estimated for t in tokens)
        return sum(t.tokens for t in tokens)


OPENAI_COMPATIBLE = [
    ("howto--set-up-ai-proxy-with-openai", "/v1/chat/completions", {}),
    ("howto--set-up-ai-proxy-advanced-with-openai", "/v1/chat/completions", {}),
    ("plugin-ai-proxy--openai-chat-route", "/v1/chat/completions", {}),
    ("plugin-ai-proxy--mistral-chat-route", "/v1/chat/completions", {}),
    ("plugin-ai-proxy--deepseek-chat-route", "/chat/completions", {}),
    ("howto--set-up-ai-proxy-with-dashscope", "/compatible-mode/v1/chat/completions", {}),
    ("howto--set-up-ai-proxy-with-cerebras", "/v1/chat/completions", {}),
    ("howto--set-up-ai-proxy-with-databricks", "/serving-endpoints/chat/completions", {}),
    ("howto--set-up-ai-proxy-with-huggingface", "/v1/chat/completions", {}),
    ("plugin-ai-proxy--xai-chat-route", "/v1/chat/completions", {}),
    # No auth in the file: the client's own key goes to the self-hosted server.
    ("plugin-ai-proxy--vllm-chat-route", "/v1/chat/completions", {"key": OPENAI_KEY}),
    # llama2_format ollama: the upstream speaks Ollama's /api/chat.
    ("plugin-ai-proxy--llama2-chat-route", "/api/chat", {"fake": "ollama"}),
    ("plugin-ai-proxy--azure-chat-route", "/v1/chat/completions", {}),
    ("plugin-ai-proxy-advanced--round-robin", "/v1/chat/completions", {}),
    ("plugin-ai-proxy-advanced--priority", "/v1/chat/completions", {}),
    ("plugin-ai-proxy-advanced--lowest-usage", "/v1/chat/completions", {}),
    ("plugin-ai-proxy-advanced--lowest-latency", "/v1/chat/completions", {}),
    ("plugin-ai-proxy-advanced--consistent-hashing", "/v1/chat/completions", {}),
    # OpenAI clients, providers with their own wire formats (the gateway translates).
    ("howto--set-up-ai-proxy-with-anthropic", "/v1/messages", {"fake": "anthropic"}),
    ("howto--set-up-ai-proxy-advanced-with-anthropic", "/v1/messages", {"fake": "anthropic"}),
    ("howto--set-up-ai-proxy-with-gemini", "", {"fake": "gemini"}),
    ("howto--set-up-ai-proxy-with-cohere", "", {"fake": "cohere"}),
    ("howto--set-up-ai-proxy-with-aws-bedrock", "", {"fake": "bedrock"}),
    ("howto--set-up-ai-proxy-advanced-with-aws-bedrock", "", {"fake": "bedrock"}),
    ("howto--set-up-ai-proxy-with-ollama", "/api/chat", {"fake": "ollama"}),
    ("howto--set-up-ai-proxy-advanced-with-ollama", "/api/chat", {"fake": "ollama"}),
    ("howto--set-up-ai-proxy-advanced-with-gemini", "", {"fake": "gemini"}),
    ("howto--set-up-ai-proxy-advanced-with-cohere", "", {"fake": "cohere"}),
    ("howto--set-up-ai-proxy-advanced-with-dashscope", "/v1/chat/completions", {}),
    ("howto--set-up-ai-proxy-advanced-with-deepseek", "/chat/completions", {}),
    ("howto--set-up-ai-proxy-advanced-with-cerebras", "/v1/chat/completions", {}),
    ("howto--set-up-ai-proxy-advanced-with-databricks", "/v1/chat/completions", {}),
    ("howto--set-up-ai-proxy-advanced-with-huggingface", "/v1/chat/completions", {}),
    ("howto--set-up-ai-proxy-with-deepseek", "/chat/completions", {}),
    ("plugin-ai-proxy-advanced--model-alias-routing", "/v1/chat/completions", {}),
    # Kong's "get started" guide: no auth in the file, the client sends its OpenAI key.
    (
        "howto--get-started-with-ai-gateway",
        "/v1/chat/completions",
        {"key": OPENAI_KEY, "prefix": "/chat"},
    ),
]
BEDROCK_ENV = {
    "DECK_AWS_ACCESS_KEY_ID": TEST_ACCESS_KEY_ID,
    "DECK_AWS_SECRET_ACCESS_KEY": TEST_SECRET_ACCESS_KEY,
}


def make_fake(kind: str, key: str = PROVIDER_KEY) -> Any:
    """The provider's fake, refusing any credential other than the file's own."""
    if kind == "anthropic":
        return FakeAnthropic(api_key=key)
    if kind == "gemini":
        return FakeGemini(api_key=key)
    if kind == "cohere":
        return FakeCohere(api_key=key)
    if kind == "bedrock":
        return FakeBedrock()
    if kind == "ollama":
        return FakeOllama()
    return FakeProvider(api_key=key)


@pytest.mark.parametrize(
    ("stem", "path", "how"), OPENAI_COMPATIBLE, ids=[c[0] for c in OPENAI_COMPATIBLE]
)
async def test_openai_format_kong_files_serve_the_openai_sdk_and_bill_what_was_reported(
    stem: str, path: str, how: dict[str, str]
) -> None:
    # The fake refuses any other key than the file's own (resolved from DECK_).
    fake = make_fake(how.get("fake", "openai"), how.get("key", PROVIDER_KEY))
    async with serve_http(fake) as upstream:
        served = Served(served_document(stem, f"{upstream.url}{path}", **BEDROCK_ENV))
        try:
            async with (
                serve_http(served.gateway) as address,
                openai.AsyncOpenAI(
                    base_url=f"{address.url}{how.get('prefix', '/anything')}",
                    api_key=OPENAI_KEY,
                    max_retries=0,
                ) as client,
            ):
                reply = await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
                chunks = [
                    c
                    async for c in await client.chat.completions.create(
                        model="gpt-4o",
                        messages=MESSAGES,
                        stream=True,
                        stream_options={"include_usage": True},
                    )
                ]
        finally:
            await served.gateway.aclose()
    assert reply.choices[0].message.content
    reported = reply.usage.total_tokens + chunks[-1].usage.total_tokens
    assert served.billed() == reported
    assert len(fake.requests) == 2


async def test_without_key_auth_only_the_clients_own_provider_key_is_forwarded() -> None:
    """Regression: an ai-proxy without auth (Kong's vLLM example) forwards the client's
    Authorization; with key-auth on the route that header is the gateway key, never sent."""
    for with_key_auth in (False, True):
        fake = FakeProvider(api_key=OPENAI_KEY)
        async with serve_http(fake) as upstream:
            document = served_document(
                "plugin-ai-proxy--vllm-chat-route", f"{upstream.url}/v1/chat/completions"
            )
            if with_key_auth:
                document["plugins"].append({"name": "key-auth"})
                document["consumers"] = [
                    {"username": "acme", "keyauth_credentials": [{"key": OPENAI_KEY}]}
                ]
            served = Served(document)
            try:
                async with (
                    serve_http(served.gateway) as address,
                    openai.AsyncOpenAI(
                        base_url=f"{address.url}/anything", api_key=OPENAI_KEY, max_retries=0
                    ) as client,
                ):
                    if with_key_auth:
                        with pytest.raises(openai.AuthenticationError):
                            await client.chat.completions.create(model="m", messages=MESSAGES)
                    else:
                        await client.chat.completions.create(model="m", messages=MESSAGES)
            finally:
                await served.gateway.aclose()
        (request,) = fake.requests
        sent = request.headers.get("authorization")
        assert sent == (None if with_key_auth else f"Bearer {OPENAI_KEY}")


@pytest.mark.parametrize("plugin", ["ai-proxy", "ai-proxy-advanced"])
async def test_kongs_claude_code_file_serves_the_anthropic_sdk(plugin: str) -> None:
    fake = FakeAnthropic(api_key=PROVIDER_KEY)
    async with serve_http(fake) as upstream:
        served = Served(
            served_document(
                f"plugin-{plugin}--claude-code-anthropic", f"{upstream.url}/v1/messages"
            )
        )
        try:
            async with (
                serve_http(served.gateway) as address,
                anthropic.AsyncAnthropic(
                    base_url=f"{address.url}/anything", api_key="client-key", max_retries=0
                ) as client,
            ):
                reply = await client.messages.create(
                    model="claude-sonnet-4-5-20250929", max_tokens=64, messages=MESSAGES
                )
                async with client.messages.stream(
                    model="claude-sonnet-4-5-20250929", max_tokens=64, messages=MESSAGES
                ) as stream:
                    final = await stream.get_final_message()
        finally:
            await served.gateway.aclose()
    reported = sum(
        m.usage.input_tokens + m.usage.output_tokens + (m.usage.cache_read_input_tokens or 0)
        + (m.usage.cache_creation_input_tokens or 0)
        for m in (reply, final)
    )  # fmt: skip
    assert served.billed() == reported


@pytest.mark.parametrize(
    "stem",
    [
        "plugin-ai-proxy--gemini-native-routes",
        "plugin-ai-proxy-advanced--gemini-native-routes",
        "howto--use-gemini-sdk-chat",
    ],
)
async def test_kongs_gemini_native_files_serve_the_google_genai_sdk(stem: str) -> None:
    fake = FakeGemini(api_key=PROVIDER_KEY)
    async with serve_http(fake) as upstream, httpx.AsyncClient() as http:
        document = served_document(stem, upstream.url)
        prefix = document["routes"][0]["paths"][0] if document.get("routes") else "/anything"
        served = Served(document)
        try:
            async with serve_http(served.gateway) as address:
                client = genai.Client(
                    api_key="client-key",
                    http_options=genai_types.HttpOptions(
                        base_url=f"{address.url}{prefix}", httpx_async_client=http
                    ),
                )
                reply = await client.aio.models.generate_content(
                    model="gemini-1.5-flash", contents="What is the theory of relativity?"
                )
                parts = [
                    p
                    async for p in await client.aio.models.generate_content_stream(
                        model="gemini-1.5-flash", contents="What is the theory of relativity?"
                    )
                ]
        finally:
            await served.gateway.aclose()
    assert reply.usage_metadata is not None and parts[-1].usage_metadata is not None
    reported = reply.usage_metadata.total_token_count + parts[-1].usage_metadata.total_token_count
    assert served.billed() == reported


@pytest.mark.parametrize("plugin", ["ai-proxy", "ai-proxy-advanced"])
async def test_kongs_cohere_native_file_serves_the_cohere_sdk(plugin: str) -> None:
    fake = FakeCohere(api_key=PROVIDER_KEY)
    async with serve_http(fake) as upstream, httpx.AsyncClient() as http:
        served = Served(served_document(f"plugin-{plugin}--cohere-native-routes", upstream.url))
        try:
            async with serve_http(served.gateway) as address:
                client = cohere.AsyncClientV2(
                    api_key="client-key",
                    base_url=f"{address.url}/anything",
                    httpx_client=http,
                    max_retries=0,
                )
                reply = await client.chat(model="command-a-03-2025", messages=MESSAGES)
                events = [
                    e
                    async for e in client.chat_stream(model="command-a-03-2025", messages=MESSAGES)
                ]
        finally:
            await served.gateway.aclose()
    whole = reply.usage.billed_units
    last = events[-1].delta.usage.billed_units
    reported = whole.input_tokens + whole.output_tokens + last.input_tokens + last.output_tokens
    assert served.billed() == reported


@pytest.mark.parametrize("plugin", ["ai-proxy", "ai-proxy-advanced"])
async def test_kongs_bedrock_native_file_serves_boto3_bedrock_runtime(plugin: str) -> None:
    fake = FakeBedrock()
    async with serve_http(fake) as upstream:
        served = Served(
            served_document(f"plugin-{plugin}--bedrock-native-routes", upstream.url, **BEDROCK_ENV)
        )
        try:
            async with serve_http(served.gateway) as address:
                runtime = boto3.session.Session().client(
                    "bedrock-runtime",
                    endpoint_url=f"{address.url}/anything",
                    region_name="us-east-1",
                    aws_access_key_id="AKIACLIENTJUNK000000",
                    aws_secret_access_key="client-junk",
                    config=Config(retries={"total_max_attempts": 1}),
                )
                reply = await asyncio.to_thread(
                    runtime.converse,
                    modelId="meta.llama3-70b-instruct-v1:0",
                    messages=[{"role": "user", "content": [{"text": MESSAGES[0]["content"]}]}],
                )
        finally:
            await served.gateway.aclose()
    assert served.billed() == reply["usage"]["totalTokens"]


async def test_kongs_embeddings_and_responses_files_serve_the_openai_sdk() -> None:
    fake = FakeProvider(api_key=PROVIDER_KEY)
    async with serve_http(fake) as upstream:
        embeddings = Served(
            served_document(
                "plugin-ai-proxy--embeddings-route-type", f"{upstream.url}/v1/embeddings"
            )
        )
        responses = Served(
            served_document("plugin-ai-proxy--responses-route-type", f"{upstream.url}/v1/responses")
        )
        try:
            async with (
                serve_http(embeddings.gateway) as first,
                serve_http(responses.gateway) as second,
                openai.AsyncOpenAI(
                    base_url=f"{first.url}/anything", api_key=OPENAI_KEY, max_retries=0
                ) as one,
                openai.AsyncOpenAI(
                    base_url=f"{second.url}/anything", api_key=OPENAI_KEY, max_retries=0
                ) as two,
            ):
                vectors = await one.embeddings.create(
                    model="text-embedding-3-large", input="What is the theory of relativity?"
                )
                answer = await two.responses.create(
                    model="gpt-4", input="What is the theory of relativity?"
                )
        finally:
            await embeddings.gateway.aclose()
            await responses.gateway.aclose()
    assert vectors.data and answer.usage is not None
    assert embeddings.billed() == vectors.usage.total_tokens
    assert responses.billed() == answer.usage.total_tokens


@pytest.mark.parametrize(
    "stem",
    ["howto--set-up-ai-proxy-with-vertex-ai", "howto--set-up-ai-proxy-advanced-with-vertex-ai"],
)
async def test_kongs_vertex_guides_serve_the_openai_sdk_with_a_service_account(stem: str) -> None:
    oauth = FakeGoogleOAuth()
    fake = FakeGemini(oauth=oauth)
    async with serve_http(fake) as upstream:
        account = json.dumps(oauth.service_account(f"{upstream.url}/token"))
        served = Served(served_document(stem, upstream.url, DECK_GCP_SERVICE_ACCOUNT_JSON=account))
        try:
            async with (
                serve_http(served.gateway) as address,
                openai.AsyncOpenAI(
                    base_url=f"{address.url}/anything", api_key=OPENAI_KEY, max_retries=0
                ) as client,
            ):
                reply = await client.chat.completions.create(model="gemini", messages=MESSAGES)
        finally:
            await served.gateway.aclose()
    assert reply.usage is not None and len(oauth.issued) == 1
    assert served.billed() == reply.usage.total_tokens


# Applies, but Kong's page names an undefined variable (`${openai_api_key}`, its variable is
# `key`), so the literal text is the provider key: the provider refuses it, as it would Kong's.
NOT_SERVED = {"plugin-ai-proxy--meter-openai-requests"}


def _openai_format_files() -> list[str]:
    """Every applying ai-proxy / ai-proxy-advanced file whose clients speak OpenAI's format
    to one provider."""
    stems = []
    for path in FILES:
        if path.stem in REFUSED or path.stem in NOT_SERVED:
            continue
        plugins = [
            p
            for p in load_text(path.read_text()).get("plugins", [])
            if p["name"] in ("ai-proxy", "ai-proxy-advanced")
        ]
        if len(plugins) != 1 or plugins[0]["config"].get("llm_format", "openai") != "openai":
            continue
        providers = {t["model"]["provider"] for t in _targets(plugins[0])}
        if len(providers) == 1:
            stems.append(path.stem)
    return stems


OPENAI_FORMAT_FILES = _openai_format_files()
FAKE_PATHS = {"anthropic": "/v1/messages", "ollama": "/api/chat"}


def _fake_kind(target: dict[str, Any]) -> str:
    provider = target["model"]["provider"]
    if provider == "llama2" and target["model"].get("options", {}).get("llama2_format") == "ollama":
        return "ollama"
    if provider in ("anthropic", "gemini", "cohere", "bedrock", "ollama"):
        return provider
    return "openai"


@pytest.mark.parametrize("stem", OPENAI_FORMAT_FILES)
async def test_every_openai_format_kong_file_serves_and_bills_what_was_reported(stem: str) -> None:
    text = (KONG_DOCS / f"{stem}.yaml").read_text()
    plugin = next(p for p in load_text(text)["plugins"] if p["name"].startswith("ai-proxy"))
    target = _targets(plugin)[0]
    kind = _fake_kind(target)
    credentialed = "auth" in target and "azure_use_managed_identity" not in str(target["auth"])
    oauth = FakeGoogleOAuth()
    fake = (
        FakeGemini(api_key=PROVIDER_KEY, oauth=oauth)
        if kind == "gemini"
        else make_fake(kind, PROVIDER_KEY if credentialed else OPENAI_KEY)
    )
    route_type = target["route_type"]
    async with serve_http(fake) as upstream:
        path = FAKE_PATHS.get(kind, "")
        if kind == "openai":
            path = {
                "llm/v1/embeddings": "/v1/embeddings",
                "llm/v1/responses": "/v1/responses",
            }.get(route_type, "/v1/chat/completions")
        account = json.dumps(oauth.service_account(f"{upstream.url}/token"))
        document = served_document(
            stem, f"{upstream.url}{path}", DECK_GCP_SERVICE_ACCOUNT_JSON=account, **BEDROCK_ENV
        )
        prefix = document["routes"][0]["paths"][0] if document.get("routes") else "/anything"
        served = Served(document)
        try:
            async with (
                serve_http(served.gateway) as address,
                openai.AsyncOpenAI(
                    base_url=f"{address.url}{prefix}", api_key=OPENAI_KEY, max_retries=0
                ) as client,
            ):
                if route_type == "llm/v1/embeddings":
                    vectors = await client.embeddings.create(model="m", input="relativity")
                    reported = vectors.usage.total_tokens
                elif route_type == "llm/v1/responses":
                    answer = await client.responses.create(model="gpt-4", input="relativity")
                    assert answer.usage is not None
                    reported = answer.usage.total_tokens
                else:
                    reply = await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
                    assert reply.usage is not None
                    reported = reply.usage.total_tokens
        finally:
            await served.gateway.aclose()
    assert served.billed() == reported


@pytest.mark.parametrize("plugin", ["ai-proxy", "ai-proxy-advanced"])
async def test_kongs_claude_code_bedrock_file_serves_the_anthropic_sdk(plugin: str) -> None:
    fake = FakeBedrock()
    async with serve_http(fake) as upstream:
        served = Served(
            served_document(f"plugin-{plugin}--claude-code-bedrock", upstream.url, **BEDROCK_ENV)
        )
        try:
            async with (
                serve_http(served.gateway) as address,
                anthropic.AsyncAnthropic(
                    base_url=f"{address.url}/anything", api_key="client-key", max_retries=0
                ) as client,
            ):
                reply = await client.messages.create(
                    model="claude-haiku-4-5", max_tokens=64, messages=MESSAGES
                )
        finally:
            await served.gateway.aclose()
    usage = reply.usage
    reported = (
        usage.input_tokens
        + usage.output_tokens
        + (usage.cache_read_input_tokens or 0)
        + (usage.cache_creation_input_tokens or 0)
    )
    assert served.billed() == reported
