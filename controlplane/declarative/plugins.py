"""Validation and normalisation of plugin configs, in Kong's field names.

The result is JSON-shaped (strings, bools, ints, lists, dicts) so storage can keep it as JSON;
decimal costs stay decimal strings.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from controlplane.declarative.entry import Entry
from controlplane.gateway.types import PluginName

# Kong's key-auth defaults, plus ``key_in_bearer``: Kong's key-auth does not read
# "Authorization: Bearer <key>", but that header is the only one the openai and anthropic SDKs
# send for an api_key, so Meterline accepts it by default.
KEY_AUTH_DEFAULTS: Mapping[str, Any] = {
    "key_names": ["apikey"],
    "hide_credentials": False,
    "key_in_query": True,
    "key_in_bearer": True,
}

ROUTE_TYPES = ("llm/v1/chat", "llm/v1/completions", "llm/v1/embeddings", "preserve")
LLM_FORMATS = ("openai", "anthropic")
PROVIDERS = (
    "openai",
    "anthropic",
    "azure",
    "openai_compatible",
    "mistral",
    "llama2",
    "cohere",
    "gemini",
    "bedrock",
    "huggingface",
)
# Providers without one public endpoint: the operator must say where they are. Azure may
# instead name its instance and deployment (azure_instance, azure_deployment_id).
PROVIDERS_NEEDING_URL = frozenset({"openai_compatible", "llama2", "azure"})
PARAM_LOCATIONS = ("query", "body")

_AUTH_FIELDS = ("header_name", "header_value", "param_name", "param_value", "param_location")
_MODEL_FIELDS = ("provider", "name", "options")
_OPTION_FIELDS = (
    "upstream_url",
    "anthropic_version",
    "max_tokens",
    "input_cost",
    "output_cost",
    "azure_instance",
    "azure_deployment_id",
    "azure_api_version",
)
_AZURE_OPTIONS = ("azure_instance", "azure_deployment_id", "azure_api_version")
# An Azure resource name is a DNS label: it becomes {instance}.openai.azure.com.
_DNS_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
# RFC 9110 token characters, which is what an HTTP header name may contain.
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


def normalise_plugin_config(name: PluginName, config: Entry) -> dict[str, Any]:
    """The validated config of plugin ``name`` with defaults filled in."""
    if name is PluginName.KEY_AUTH:
        return _key_auth(config)
    return _ai_proxy(config)


def _key_auth(config: Entry) -> dict[str, Any]:
    config.check_keys(KEY_AUTH_DEFAULTS.keys())
    # A fresh list each time: callers may mutate the config they get.
    result = {**KEY_AUTH_DEFAULTS, "key_names": list(KEY_AUTH_DEFAULTS["key_names"])}
    if config.has("key_names"):
        names = config.string_list("key_names", required=True)
        for index, key_name in enumerate(names or ()):
            if not _HEADER_NAME.match(key_name):
                config.fail_field(f"key_names[{index}]", f'"{key_name}" is not a valid header name')
        result["key_names"] = list(names or ())
    for flag in ("hide_credentials", "key_in_query", "key_in_bearer"):
        result[flag] = config.boolean(flag, default=bool(KEY_AUTH_DEFAULTS[flag]))
    return result


def _ai_proxy(config: Entry) -> dict[str, Any]:
    config.check_keys(("route_type", "llm_format", "auth", "model"))
    result: dict[str, Any] = {
        "route_type": config.choice("route_type", ROUTE_TYPES, default="llm/v1/chat"),
        "llm_format": config.choice("llm_format", LLM_FORMATS, default="openai"),
        "auth": {},
    }
    auth = config.sub("auth")
    if auth is not None:
        result["auth"] = _auth(auth)
    model = config.sub("model", required=True)
    if model is not None:
        result["model"] = _model(model, route_type=result["route_type"])
        provider = result["model"]["provider"]
        if result["llm_format"] == "anthropic" and provider not in (None, "anthropic"):
            config.fail_field(
                "llm_format", f'"anthropic" needs model.provider "anthropic", got "{provider}"'
            )
    return result


def _auth(auth: Entry) -> dict[str, Any]:
    auth.check_keys(_AUTH_FIELDS)
    result: dict[str, Any] = {}
    for key in _AUTH_FIELDS:
        if auth.has(key):
            result[key] = (
                auth.choice(key, PARAM_LOCATIONS)
                if key == "param_location"
                else auth.string(key, required=True)
            )
    for name_key, value_key in (("header_name", "header_value"), ("param_name", "param_value")):
        if auth.has(name_key) != auth.has(value_key):
            missing = value_key if auth.has(name_key) else name_key
            auth.fail_field(missing, f"is required together with {name_key}/{value_key}")
    header = result.get("header_name")
    if isinstance(header, str) and not _HEADER_NAME.match(header):
        auth.fail_field("header_name", f'"{header}" is not a valid header name')
    if auth.has("param_name") and not auth.has("param_location"):
        auth.fail_field("param_location", f"is required with param_name ({quoted_choices()})")
    return result


def quoted_choices() -> str:
    return " or ".join(f'"{location}"' for location in PARAM_LOCATIONS)


def _model(model: Entry, *, route_type: str | None) -> dict[str, Any]:
    model.check_keys(_MODEL_FIELDS)
    provider = model.choice("provider", PROVIDERS)
    result: dict[str, Any] = {
        "provider": provider,
        "name": model.string("name", default=""),
        "options": {},
    }
    options = model.sub("options")
    if options is not None:
        result["options"] = _options(options)
    options_set = result["options"]
    azure_set = [key for key in _AZURE_OPTIONS if key in options_set]
    if azure_set and provider != "azure":
        model.fail_field(f"options.{azure_set[0]}", 'is only for provider "azure"')
    if provider == "azure" and "upstream_url" not in options_set:
        if "azure_instance" not in options_set:
            model.fail_field(
                "options.azure_instance",
                'is required for provider "azure" (or options.upstream_url)',
            )
        elif route_type != "preserve" and "azure_deployment_id" not in options_set:
            model.fail_field(
                "options.azure_deployment_id",
                'is required for provider "azure" (or options.upstream_url)',
            )
    elif provider in PROVIDERS_NEEDING_URL and "upstream_url" not in options_set:
        model.fail_field("options.upstream_url", f'is required for provider "{provider}"')
    return result


def _options(options: Entry) -> dict[str, Any]:
    options.check_keys(_OPTION_FIELDS)
    result: dict[str, Any] = {}
    if options.has("upstream_url"):
        url = options.string("upstream_url", required=True)
        if url is not None and not is_http_url(url):
            options.fail_field("upstream_url", f'must be an http(s) URL, got "{url}"')
        result["upstream_url"] = url
    if options.has("anthropic_version"):
        result["anthropic_version"] = options.string("anthropic_version", required=True)
    for key in _AZURE_OPTIONS:
        if options.has(key):
            value = options.string(key, required=True)
            if key == "azure_instance" and value is not None and not _DNS_LABEL.match(value):
                options.fail_field(key, f'"{value}" is not an Azure resource name')
            result[key] = value
    if options.has("max_tokens"):
        result["max_tokens"] = options.integer("max_tokens", minimum=1)
    for cost in ("input_cost", "output_cost"):
        if options.has(cost):
            amount = options.decimal(cost)
            result[cost] = None if amount is None else str(amount)
    return result


def is_http_url(url: str) -> bool:
    """Whether ``url`` is an absolute http(s) URL with a host and a valid port."""
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError on a malformed port
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)
