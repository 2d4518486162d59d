"""Options and endpoints of the OpenAI-compatible providers (mistral, deepseek, xai, cerebras,
huggingface, dashscope, databricks, vllm, llama2): checked and resolved at snapshot compile time.

They all speak OpenAI's chat format, so the OpenAI translator serves them; what differs is where
the request goes (Kong's default base URLs, dashscope's region, the databricks workspace) and
which wire format a self-hosted model speaks (``mistral_format``, ``llama2_format``).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from dataplane.config.providers import (
    DASHSCOPE_CHINA_URL,
    DASHSCOPE_INTERNATIONAL_URL,
    DASHSCOPE_PATHS,
    DATABRICKS_URL,
    DEFAULT_URLS,
    LLAMA2_FORMATS,
    LLAMA2_RAW,
    MISTRAL_FORMATS,
    OLLAMA_CHAT_PATH,
    OPENAI_COMPATIBLE_PROVIDERS,
    SPOKEN_MODEL_FORMATS,
)
from dataplane.errors import CompileError
from meterline.dataplane.v1 import snapshot_pb2

# A Databricks workspace instance becomes {instance}.cloud.databricks.com: a DNS label
# (workspace names such as "dbc-a1b2c3d4-e5f6").
_DNS_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
# Which option names a provider's wire format, and the formats it may name.
_FORMAT_OPTIONS = {
    "mistral": ("mistral_format", MISTRAL_FORMATS),
    "llama2": ("llama2_format", LLAMA2_FORMATS),
}


def check_compatible(label: str, config: snapshot_pb2.AiProxyConfig) -> None:
    """Raise CompileError unless the provider-specific options fit the provider."""
    provider, options = config.model.provider, config.model.options
    for owner, (name, formats) in _FORMAT_OPTIONS.items():
        value = getattr(options, name)
        if not value:
            continue
        if provider != owner:
            raise CompileError(f'{label}: model.options.{name} is only for provider "{owner}"')
        if value not in formats:
            choices = ", ".join(sorted(formats))
            raise CompileError(
                f'{label}: unknown model.options.{name} "{value}" (supported: {choices})'
            )
        if value not in SPOKEN_MODEL_FORMATS:
            raise CompileError(
                f'{label}: model.options.{name} "{value}" is not supported yet (use "openai")'
            )
    for name in ("dashscope", "databricks"):
        if options.HasField(name) and provider != name:
            raise CompileError(f'{label}: model.options.{name} is only for provider "{name}"')
    instance = options.databricks.workspace_instance_id
    if instance and not _DNS_LABEL.match(instance):
        raise CompileError(
            f'{label}: model.options.databricks.workspace_instance_id "{instance}" is not a '
            "host name label"
        )
    if wire_provider(config) == "ollama" and not options.upstream_url:
        # Kong's ollama formats and provider are self-hosted: no default server.
        raise CompileError(f'{label}: provider "{provider}" needs model.options.upstream_url')
    if (
        provider in OPENAI_COMPATIBLE_PROVIDERS
        and not options.upstream_url
        and compatible_url(config) is None
    ):
        if provider == "databricks":
            raise CompileError(
                f'{label}: provider "databricks" needs '
                "model.options.databricks.workspace_instance_id (or model.options.upstream_url)"
            )
        raise CompileError(f'{label}: provider "{provider}" needs model.options.upstream_url')


def compatible_url(config: snapshot_pb2.AiProxyConfig) -> str | None:
    """The default upstream URL of an OpenAI-compatible provider's route, None if it has none."""
    provider, route_type, options = (
        config.model.provider,
        config.route_type,
        config.model.options,
    )
    if provider == "dashscope":
        path = DASHSCOPE_PATHS.get(route_type)
        if path is None:
            return None
        dashscope = options.dashscope
        international = not dashscope.HasField("international") or dashscope.international
        return (DASHSCOPE_INTERNATIONAL_URL if international else DASHSCOPE_CHINA_URL) + path
    if provider == "databricks":
        instance = options.databricks.workspace_instance_id
        return DATABRICKS_URL.format(instance=instance) if instance else None
    return DEFAULT_URLS.get(provider, {}).get(route_type)


def wire_provider(config: snapshot_pb2.AiProxyConfig) -> str:
    """The provider whose wire format the upstream speaks: "ollama" for mistral or llama2
    models served by Ollama (``mistral_format`` / ``llama2_format: ollama``), "llama2_raw" for
    ``llama2_format: raw`` (Kong's ``inputs`` / ``generated_text``), else the route's."""
    provider, options = config.model.provider, config.model.options
    if (provider == "mistral" and options.mistral_format == "ollama") or (
        provider == "llama2" and options.llama2_format == "ollama"
    ):
        return "ollama"
    if provider == "llama2" and options.llama2_format == "raw":
        return LLAMA2_RAW
    return provider


def ollama_url(upstream_url: str) -> str:
    """Kong's upstream_url (the full URL) as is; without a path, Ollama's native chat path."""
    if urlsplit(upstream_url).path.strip("/"):
        return upstream_url
    return upstream_url.rstrip("/") + OLLAMA_CHAT_PATH


def cohere_url(upstream_url: str) -> str:
    """Kong's upstream_url (the full URL) as is; without a path, Cohere's v2 chat path."""
    if urlsplit(upstream_url).path.strip("/"):
        return upstream_url
    return upstream_url.rstrip("/") + "/v2/chat"
