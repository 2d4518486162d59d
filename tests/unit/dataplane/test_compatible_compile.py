"""Compiling the OpenAI-compatible providers: Kong's default URLs, their options, refusals."""

from __future__ import annotations

import pytest

from dataplane.proxy.compiler import CompileError, compile_snapshot
from dataplane.translate.ollama_ollama import OllamaNativeTranslator
from dataplane.translate.openai_format import usage_from_openai
from dataplane.translate.openai_ollama import OpenAIToOllamaTranslator
from dataplane.translate.openai_openai import OpenAITranslator
from dataplane.usage.tokens import TokenUsage
from meterline.dataplane.v1 import snapshot_pb2


def _ai(snapshot: snapshot_pb2.Snapshot) -> snapshot_pb2.AiProxyConfig:
    return next(p for p in snapshot.plugins if p.id == "ai").ai_proxy


def _configure(
    snapshot: snapshot_pb2.Snapshot, provider: str, **options: object
) -> snapshot_pb2.AiProxyConfig:
    ai = _ai(snapshot)
    ai.model.provider = provider
    ai.model.options.CopyFrom(snapshot_pb2.AiProxyModelOptions(**options))  # type: ignore[arg-type]
    ai.auth.CopyFrom(snapshot_pb2.AiProxyAuth(header_name="Authorization", header_value="Bearer k"))
    return ai


def _url(snapshot: snapshot_pb2.Snapshot) -> str:
    route = compile_snapshot(snapshot, version="v1").routes.match("/chat", "POST")
    assert route is not None and route.ai_proxy is not None
    assert isinstance(route.translator, OpenAITranslator)
    return route.ai_proxy.target.url


@pytest.mark.parametrize(
    ("provider", "options", "url"),
    [
        ("mistral", {}, "https://api.mistral.ai/v1/chat/completions"),
        (
            "mistral",
            {"mistral_format": "openai"},
            "https://api.mistral.ai/v1/chat/completions",
        ),
        ("deepseek", {}, "https://api.deepseek.com/chat/completions"),
        ("xai", {}, "https://api.x.ai/v1/chat/completions"),
        ("cerebras", {}, "https://api.cerebras.ai/v1/chat/completions"),
        ("huggingface", {}, "https://router.huggingface.co/v1/chat/completions"),
        (
            "dashscope",
            {},
            "https://dashscope-intl.aliyuncs.com/compatible-mode/v1/chat/completions",
        ),
        (
            "dashscope",
            {"dashscope": snapshot_pb2.DashscopeOptions(international=True)},
            "https://dashscope-intl.aliyuncs.com/compatible-mode/v1/chat/completions",
        ),
        (
            "dashscope",
            {"dashscope": snapshot_pb2.DashscopeOptions(international=False)},
            "https://dashscope.aliyuncs.com/compatible-mode/v1/chat/completions",
        ),
        (
            "databricks",
            {"databricks": snapshot_pb2.DatabricksOptions(workspace_instance_id="dbc-a1b2")},
            "https://dbc-a1b2.cloud.databricks.com/serving-endpoints/chat/completions",
        ),
        (
            "vllm",
            {"upstream_url": "http://vllm.local:8000/v1/chat/completions"},
            "http://vllm.local:8000/v1/chat/completions",
        ),
        (
            "llama2",
            {"upstream_url": "http://llama.local/v1/chat/completions", "llama2_format": "openai"},
            "http://llama.local/v1/chat/completions",
        ),
        (
            "xai",
            {"upstream_url": "http://127.0.0.1:9/v1/chat/completions"},
            "http://127.0.0.1:9/v1/chat/completions",
        ),
    ],
)
def test_kong_default_urls_and_overrides(valid_snapshot, provider, options, url) -> None:
    _configure(valid_snapshot, provider, **options)
    assert _url(valid_snapshot) == url


@pytest.mark.parametrize(
    ("provider", "options", "message"),
    [
        ("vllm", {}, 'provider "vllm" needs model.options.upstream_url'),
        ("llama2", {}, 'provider "llama2" needs model.options.upstream_url'),
        ("databricks", {}, "needs model.options.databricks.workspace_instance_id"),
        (
            "databricks",
            {"databricks": snapshot_pb2.DatabricksOptions(workspace_instance_id="a.b/c")},
            "is not a host name label",
        ),
        ("mistral", {"mistral_format": "cohere"}, 'unknown model.options.mistral_format "cohere"'),
        (
            "mistral",
            {"mistral_format": "ollama"},
            'provider "mistral" needs model.options.upstream_url',
        ),
        ("ollama", {}, 'provider "ollama" needs model.options.upstream_url'),
        (
            "llama2",
            {"upstream_url": "http://l.local/x", "llama2_format": "tgi"},
            'unknown model.options.llama2_format "tgi"',
        ),
        ("openai", {"mistral_format": "openai"}, 'is only for provider "mistral"'),
        (
            "xai",
            {"dashscope": snapshot_pb2.DashscopeOptions(international=False)},
            'model.options.dashscope is only for provider "dashscope"',
        ),
    ],
)
def test_bad_options_are_refused(valid_snapshot, provider, options, message) -> None:
    _configure(valid_snapshot, provider, **options)
    with pytest.raises(CompileError, match=message.replace("(", r"\(").replace(".", r"\.")):
        compile_snapshot(valid_snapshot, version="v1")


def test_deepseek_cache_hits_and_reasoning_are_split_out() -> None:
    usage = usage_from_openai(
        {
            "prompt_tokens": 50,
            "completion_tokens": 30,
            "total_tokens": 80,
            "prompt_cache_hit_tokens": 20,
            "prompt_cache_miss_tokens": 30,
            "completion_tokens_details": {"reasoning_tokens": 12},
        }
    )
    assert usage == TokenUsage(
        input_tokens=30, output_tokens=18, cached_input_tokens=20, reasoning_tokens=12
    )
    assert usage.total == 80


@pytest.mark.parametrize(
    ("provider", "llm_format", "options", "url", "translator"),
    [
        (
            "ollama",
            "ollama",
            {"upstream_url": "http://ol:11434"},
            "http://ol:11434/api/chat",
            OllamaNativeTranslator,
        ),
        (
            "ollama",
            "openai",
            {"upstream_url": "http://ol:11434/"},
            "http://ol:11434/api/chat",
            OpenAIToOllamaTranslator,
        ),
        (
            "ollama",
            "openai",
            {"upstream_url": "http://ol/v1/chat/completions"},
            "http://ol/v1/chat/completions",
            OpenAIToOllamaTranslator,
        ),
        (
            "mistral",
            "ollama",
            {"upstream_url": "http://ol:11434", "mistral_format": "ollama"},
            "http://ol:11434/api/chat",
            OllamaNativeTranslator,
        ),
        (
            "llama2",
            "openai",
            {"upstream_url": "http://ol/api/chat", "llama2_format": "ollama"},
            "http://ol/api/chat",
            OpenAIToOllamaTranslator,
        ),
    ],
)
def test_ollama_urls_and_translators(
    valid_snapshot, provider, llm_format, options, url, translator
) -> None:
    _configure(valid_snapshot, provider, **options).llm_format = llm_format
    route = compile_snapshot(valid_snapshot, version="v1").routes.match("/chat", "POST")
    assert route is not None and route.ai_proxy is not None
    assert route.ai_proxy.target.url == url
    assert isinstance(route.translator, translator)


def test_ollama_format_needs_an_ollama_upstream(valid_snapshot) -> None:
    _configure(valid_snapshot, "mistral").llm_format = "ollama"
    with pytest.raises(CompileError, match='llm_format "ollama" needs provider "ollama"'):
        compile_snapshot(valid_snapshot, version="v1")
