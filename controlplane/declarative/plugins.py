"""Validation and normalisation of plugin configs, in Kong's field names.

The result is JSON-shaped (strings, bools, ints, lists, dicts) so storage can keep it as JSON;
decimal costs stay decimal strings.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from controlplane.declarative import kong_schema, rate_limits
from controlplane.declarative.entry import Entry, closest, quoted, suggestion
from controlplane.gateway.types import PluginName

# Kong's key-auth defaults, plus ``key_in_bearer``: Kong's key-auth does not read
# "Authorization: Bearer <key>", but that header is the only one the openai and anthropic SDKs
# send for an api_key, so Meterline accepts it by default.
KEY_AUTH_DEFAULTS: Mapping[str, Any] = {
    "key_names": ["apikey"],
    "hide_credentials": False,
    "key_in_query": True,
    "key_in_bearer": True,
    "key_in_body": False,
    "run_on_preflight": True,
}
# Optional key-auth fields (absent unless set): the anonymous consumer, the 401's realm.
_KEY_AUTH_OPTIONAL = ("anonymous", "realm")

# What data planes of this version serve, mirrored from dataplane/config/providers.py (the control
# plane does not import the data plane; tests/unit/controlplane/test_kong_schema.py checks the
# two agree). A provider or route type outside these is refused at apply, naming the entry,
# rather than stored and then NACKed by every data plane.
SERVED_ROUTE_TYPES: Mapping[str, frozenset[str]] = {
    "openai": frozenset(
        {
            "llm/v1/chat",
            "llm/v1/completions",
            "llm/v1/embeddings",
            "llm/v1/responses",
            "preserve",
        }
    ),
    "azure": frozenset({"llm/v1/chat", "llm/v1/completions", "llm/v1/embeddings", "preserve"}),
    "openai_compatible": frozenset(
        {
            "llm/v1/chat",
            "llm/v1/completions",
            "llm/v1/embeddings",
            "llm/v1/responses",
            "preserve",
        }
    ),
    "anthropic": frozenset({"llm/v1/chat", "preserve"}),
    "gemini": frozenset({"llm/v1/chat", "llm/v1/embeddings"}),
    "bedrock": frozenset({"llm/v1/chat", "llm/v1/embeddings"}),
    "mistral": frozenset({"llm/v1/chat", "llm/v1/embeddings"}),
    "deepseek": frozenset({"llm/v1/chat"}),
    "xai": frozenset({"llm/v1/chat"}),
    "cerebras": frozenset({"llm/v1/chat"}),
    "huggingface": frozenset({"llm/v1/chat"}),
    "dashscope": frozenset({"llm/v1/chat", "llm/v1/embeddings"}),
    "databricks": frozenset({"llm/v1/chat"}),
    "vllm": frozenset({"llm/v1/chat", "llm/v1/completions", "llm/v1/embeddings"}),
    "llama2": frozenset({"llm/v1/chat", "llm/v1/completions"}),
    "ollama": frozenset({"llm/v1/chat"}),
    "cohere": frozenset({"llm/v1/chat"}),
}
# Kong providers data planes of this version refuse as "not supported yet"
# (dataplane/config/providers.py NOT_YET_SUPPORTED_PROVIDERS).
NOT_YET_SUPPORTED_PROVIDERS: frozenset[str] = frozenset()
ROUTE_TYPES = tuple(sorted(set().union(*SERVED_ROUTE_TYPES.values())))
LLM_FORMATS = ("openai", "anthropic", "gemini", "bedrock", "ollama", "cohere")
# Every provider name a file may write (Kong's enum plus Meterline's openai_compatible); only
# SERVED_ROUTE_TYPES' are accepted by apply. ai-rate-limiting-advanced may name any of them.
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
    "dashscope",
    "databricks",
    "deepseek",
    "xai",
    "cerebras",
    "vllm",
    "ollama",
)
# Providers without one public endpoint: the operator must say where they are. Azure may
# instead name its instance and deployment (azure_instance, azure_deployment_id).
PROVIDERS_NEEDING_URL = frozenset({"openai_compatible", "llama2", "azure", "vllm", "ollama"})
# Kong's per-provider model options: the wire format of mistral and llama2 upstreams, dashscope's
# region, the databricks workspace ({workspace_instance_id}.cloud.databricks.com).
_FORMAT_OPTIONS = {
    "mistral_format": ("mistral", ("openai", "ollama")),
    "llama2_format": ("llama2", ("openai", "raw", "ollama")),
}
_PROVIDER_OPTIONS = {"dashscope": ("international",), "databricks": ("workspace_instance_id",)}
PARAM_LOCATIONS = ("query", "body")
# Providers whose upstream URL is built per request (model and operation in the path): Kong's
# upstream_path cannot replace it (dataplane/proxy/compiler.py refuses the same).
_URL_TEMPLATE_PROVIDERS = frozenset({"gemini", "bedrock"})

_AUTH_FIELDS = (
    "header_name",
    "header_value",
    "param_name",
    "param_value",
    "param_location",
    "aws_access_key_id",
    "aws_secret_access_key",
)
# Google Cloud service-account auth (provider gemini on Vertex AI).
_GCP_AUTH_FIELDS = ("gcp_use_service_account", "gcp_service_account_json", "gcp_oauth_token_url")
# Kong's model.options.gemini (Vertex AI when project_id and location_id are set).
_GEMINI_OPTIONS = ("api_endpoint", "project_id", "location_id", "endpoint_id")
_MODEL_FIELDS = ("provider", "name", "options", "model_alias")
_OPTION_FIELDS = (
    "upstream_url",
    "anthropic_version",
    "max_tokens",
    "input_cost",
    "output_cost",
    "azure_instance",
    "azure_deployment_id",
    "azure_api_version",
    "gemini",
    "bedrock",
    *_FORMAT_OPTIONS,
    *_PROVIDER_OPTIONS,
    "temperature",
    "top_p",
    "top_k",
    "upstream_path",
)
# model.options.bedrock (Kong's names): the region signs every request; the role is assumed
# through STS.
_BEDROCK_OPTIONS = (
    "aws_region",
    "aws_assume_role_arn",
    "aws_role_session_name",
    "aws_sts_endpoint_url",
)
_AZURE_OPTIONS = ("azure_instance", "azure_deployment_id", "azure_api_version")
# An Azure resource name is a DNS label: it becomes {instance}.openai.azure.com.
_DNS_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
# RFC 9110 token characters, which is what an HTTP header name may contain.
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


def normalise_plugin_config(
    name: PluginName, config: Entry, *, has_policies: bool = False
) -> dict[str, Any]:
    """The validated config of plugin ``name`` with defaults filled in.

    ``has_policies``: an ai-rate-limiting-advanced sets Kong 3.14's ``policies`` (then
    ``llm_providers`` is optional).
    """
    if name is PluginName.KEY_AUTH:
        return _key_auth(config)
    if name is PluginName.RATE_LIMITING_ADVANCED:
        return rate_limits.rate_limiting(config)
    if name is PluginName.RATE_LIMITING:
        return rate_limits.oss_rate_limiting(config)
    if name is PluginName.AI_RATE_LIMITING_ADVANCED:
        return rate_limits.ai_rate_limiting(
            config, providers=PROVIDERS, require_providers=not has_policies
        )
    if name is PluginName.AI_PROXY_ADVANCED:
        return _ai_proxy_advanced(config)
    return _ai_proxy(config)


def kong_enum(path: str, plugin: str = "ai-proxy") -> tuple[str, ...]:
    """The values Kong documents for ``path`` of ``plugin`` (and Meterline adds)."""
    node = kong_schema.schema(plugin)
    for part in path.split("."):
        node = node.children[part]
    return node.spec.enum if node.spec is not None else ()


def _served_choice(
    config: Entry,
    key: str,
    served: tuple[str, ...],
    default: str,
    *,
    kong_path: str | None = None,
    plugin: str = "ai-proxy",
) -> str | None:
    """A value Kong documents for ``key`` that data planes of this version also serve."""
    value = config.string(key, default=default)
    if value is None or value in served:
        return value
    known = kong_enum(kong_path or key, plugin)
    if value in known:
        config.fail_field(
            key,
            f'"{value}" is not supported yet by data planes of this version '
            f"(supported: {', '.join(served)})",
        )
        return None
    hint = suggestion(value, (*served, *known))
    config.fail_field(key, f'must be one of {quoted(served)}, got "{value}"{hint}')
    return None


def _route_type(config: Entry) -> str | None:
    return _served_choice(config, "route_type", ROUTE_TYPES, "llm/v1/chat")


def _llm_format(config: Entry) -> str | None:
    return _served_choice(config, "llm_format", LLM_FORMATS, "openai")


def _key_auth(config: Entry) -> dict[str, Any]:
    config.check_keys((*KEY_AUTH_DEFAULTS.keys(), *_KEY_AUTH_OPTIONAL))
    # A fresh list each time: callers may mutate the config they get.
    result = {**KEY_AUTH_DEFAULTS, "key_names": list(KEY_AUTH_DEFAULTS["key_names"])}
    if config.has("key_names"):
        names = config.string_list("key_names", required=True)
        for index, key_name in enumerate(names or ()):
            if not _HEADER_NAME.match(key_name):
                config.fail_field(f"key_names[{index}]", f'"{key_name}" is not a valid header name')
        result["key_names"] = list(names or ())
    for flag in ("hide_credentials", "key_in_query", "key_in_bearer", "key_in_body"):
        result[flag] = config.boolean(flag, default=bool(KEY_AUTH_DEFAULTS[flag]))
    result["run_on_preflight"] = config.boolean("run_on_preflight", default=True)
    # anonymous names a consumer (username or id): checked against the file's consumers when
    # the snapshot is built, so a dangling one is refused at apply.
    for key in _KEY_AUTH_OPTIONAL:
        if config.has(key):
            result[key] = config.string(key, required=True)
    realm = result.get("realm")
    if isinstance(realm, str) and any(c in realm for c in '"\\\r\n\0'):
        config.fail_field("realm", "must not contain quotes, backslashes or line breaks")
    return result


_MODEL_POLICY_FIELDS = ("model_allow_list", "model_aliases")
# Kong's request and response handling fields of both ai-proxy plugins.
_PROXY_FIELDS = ("response_streaming", "max_request_body_size", "model_name_header")
RESPONSE_STREAMING = ("allow", "deny", "always")
_TIMEOUT_FIELDS = ("connect_timeout", "read_timeout", "write_timeout")
# Kong's ai-proxy-advanced balancer (timeouts in milliseconds; Kong's defaults).
BALANCER_ALGORITHMS = (
    "round-robin",
    "lowest-latency",
    "lowest-usage",
    "priority",
    "consistent-hashing",
    "cost",
)
FAILOVER_CRITERIA = (
    "error",
    "timeout",
    "invalid_header",
    "http_403",
    "http_404",
    "http_429",
    "http_500",
    "http_502",
    "http_503",
    "http_504",
    "http_5xx",
    "non_idempotent",
)
_BALANCER_FIELDS = (
    "algorithm",
    "hash_on_header",
    "retries",
    "failover_criteria",
    *_TIMEOUT_FIELDS,
    "tokens_count_strategy",
    "latency_strategy",
    "max_fails",
    "fail_timeout",
)
_TARGET_FIELDS = (
    "route_type",
    "auth",
    "model",
    "weight",
    "description",
    "priority",
    # Per-target timeouts (Meterline's; override the balancer's for this target).
    "connect_timeout",
    "read_timeout",
    "logging",
)


def _model_policy(config: Entry, result: dict[str, Any]) -> None:
    """``model_allow_list`` and ``model_aliases`` (Meterline's), shared by both plugins."""
    allow = config.string_list("model_allow_list")
    if allow:
        result["model_allow_list"] = list(allow)
    aliases = config.sub("model_aliases")
    if aliases is not None:
        mapping: dict[str, str] = {}
        for alias in aliases.data:
            target = aliases.string(str(alias), required=True)
            if target is not None:
                mapping[str(alias)] = target
        if allow:
            for alias, target in mapping.items():
                if target not in allow:
                    aliases.fail_field(alias, f'maps to "{target}", which model_allow_list lacks')
        result["model_aliases"] = mapping


def _proxy_fields(config: Entry, result: dict[str, Any]) -> None:
    """``response_streaming``, ``max_request_body_size``, ``model_name_header`` (set ones)."""
    if config.has("response_streaming"):
        result["response_streaming"] = config.choice("response_streaming", RESPONSE_STREAMING)
        if result["response_streaming"] == "always" and result.get("llm_format") in (
            "gemini",
            "bedrock",
        ):
            # Their clients choose streaming by the URL (dataplane/proxy/kong_options.py).
            config.fail_field(
                "response_streaming",
                f'"always" cannot apply to llm_format "{result["llm_format"]}" '
                "(its clients choose streaming by the URL)",
            )
    if config.has("max_request_body_size"):
        # 0: Kong's "no limit of its own" (the data plane's limit still applies).
        result["max_request_body_size"] = config.integer("max_request_body_size", minimum=0)
    if config.has("model_name_header"):
        result["model_name_header"] = config.boolean("model_name_header", default=True)


def _logging(config: Entry, result: dict[str, Any]) -> None:
    """Kong's ``logging.log_payloads`` (the other logging field is checked by the schema)."""
    logging = config.sub("logging")
    if logging is not None and logging.has("log_payloads"):
        value = logging.data.get("log_payloads")
        if not isinstance(value, bool):
            logging.fail_field("log_payloads", "must be true or false")
        elif value:
            result["logging"] = {"log_payloads": True}


def _timeouts(config: Entry, result: dict[str, Any]) -> None:
    for key in _TIMEOUT_FIELDS:
        if config.has(key):
            result[key] = config.integer(key, minimum=1)


def _ai_proxy_advanced(config: Entry) -> dict[str, Any]:
    config.check_keys(("llm_format", "targets", "balancer", *_MODEL_POLICY_FIELDS, *_PROXY_FIELDS))
    result: dict[str, Any] = {
        "llm_format": _llm_format(config),
        "targets": [],
        "balancer": {},
    }
    _model_policy(config, result)
    _proxy_fields(config, result)
    targets = config.data.get("targets")
    if not isinstance(targets, list) or not targets:
        config.fail_field("targets", "must be a non-empty list of targets")
        targets = []
    for index, item in enumerate(targets):
        if not isinstance(item, Mapping):
            config.fail_field(f"targets[{index}]", "must be a mapping")
            continue
        target = Entry(
            config.where, item, config.problems, prefix=f"{config.prefix}targets[{index}]."
        )
        result["targets"].append(_target(target, llm_format=result["llm_format"]))
    route_types = {t.get("route_type") for t in result["targets"]}
    if len(route_types) > 1:
        config.fail_field("targets", "must all have the same route_type")
    balancer = config.sub("balancer")
    if balancer is not None:
        result["balancer"] = _balancer(balancer, targets=result["targets"])
    elif result["targets"]:
        result["balancer"] = _balancer(
            Entry(config.where, {}, config.problems, prefix="config.balancer."),
            targets=result["targets"],
        )
    return result


def _target(target: Entry, *, llm_format: str | None) -> dict[str, Any]:
    target.check_keys(_TARGET_FIELDS)
    result: dict[str, Any] = {
        "route_type": _route_type(target),
        "auth": {},
        "weight": 100,
        "description": target.string("description", default=""),
    }
    if target.has("weight"):
        result["weight"] = target.integer("weight", minimum=1)
    if target.has("priority"):
        result["priority"] = target.integer("priority", minimum=0)
    for key in ("connect_timeout", "read_timeout"):
        if target.has(key):
            result[key] = target.integer(key, minimum=1)
    _logging(target, result)
    auth = target.sub("auth")
    if auth is not None:
        result["auth"] = _auth(auth)
    model = target.sub("model", required=True)
    if model is not None:
        result["model"] = _model(model, route_type=result["route_type"])
        provider = result["model"]["provider"]
        wanted = _allowed_providers(llm_format, provider)
        if wanted is not None:
            target.fail_field(
                "model.provider",
                f'must be {wanted} with llm_format "{llm_format}", got "{provider}"',
            )
        _check_gemini(target, result)
        _check_ollama_format(target, llm_format, result["model"])
    return result


def _balancer(balancer: Entry, *, targets: list[dict[str, Any]]) -> dict[str, Any]:
    balancer.check_keys(_BALANCER_FIELDS)
    algorithm = _served_choice(
        balancer,
        "algorithm",
        BALANCER_ALGORITHMS,
        "round-robin",
        kong_path="balancer.algorithm",
        plugin="ai-proxy-advanced",
    )
    result: dict[str, Any] = {"algorithm": algorithm}
    if balancer.has("hash_on_header"):
        header = balancer.string("hash_on_header", required=True)
        if header is not None and not _HEADER_NAME.match(header):
            balancer.fail_field("hash_on_header", f'"{header}" is not a valid header name')
        result["hash_on_header"] = header
    elif algorithm == "consistent-hashing":
        balancer.fail_field("hash_on_header", "is required with algorithm consistent-hashing")
    if balancer.has("retries"):
        result["retries"] = balancer.integer("retries", minimum=0)
    criteria = balancer.string_list("failover_criteria")
    for index, criterion in enumerate(criteria or ()):
        if criterion not in FAILOVER_CRITERIA:
            balancer.fail_field(
                f"failover_criteria[{index}]",
                f'must be one of {", ".join(FAILOVER_CRITERIA)}, got "{criterion}"',
            )
    if criteria:
        result["failover_criteria"] = list(criteria)
    _timeouts(balancer, result)
    if balancer.has("tokens_count_strategy"):
        result["tokens_count_strategy"] = _served_choice(
            balancer,
            "tokens_count_strategy",
            ("total-tokens", "prompt-tokens", "completion-tokens"),
            "total-tokens",
            kong_path="balancer.tokens_count_strategy",
            plugin="ai-proxy-advanced",
        )
    if balancer.has("latency_strategy"):
        result["latency_strategy"] = balancer.choice("latency_strategy", ("e2e", "tpot"))
    if balancer.has("max_fails"):
        result["max_fails"] = balancer.integer("max_fails", minimum=0)
    if balancer.has("fail_timeout"):
        result["fail_timeout"] = balancer.integer("fail_timeout", minimum=1)
    _algorithm_targets(balancer, algorithm, targets)
    return result


def _algorithm_targets(
    balancer: Entry, algorithm: str | None, targets: list[dict[str, Any]]
) -> None:
    """What the priority and cost algorithms need of the targets (Kong's priority groups
    become the targets' priority)."""
    if algorithm == "priority" and not any("priority" in t for t in targets):
        # Kong's own form: priority groups are the targets' weights, the highest tried first
        # (Kong's "Load balancing: Priority" example); Meterline's targets[].priority overrides.
        weights = sorted({t["weight"] for t in targets}, reverse=True)
        for target in targets:
            target["priority"] = weights.index(target["weight"])
    if algorithm == "priority" and len({t.get("priority", 0) for t in targets}) < 2:
        balancer.fail(
            "algorithm priority needs targets in at least two priority groups "
            "(Kong's: different weights, the highest tried first; or Meterline's "
            "targets[].priority, lower tried first)"
        )
    if algorithm == "cost":
        for index, target in enumerate(targets):
            options = (target.get("model") or {}).get("options") or {}
            if options.get("input_cost") is None or options.get("output_cost") is None:
                balancer.fail(
                    f"algorithm cost needs targets[{index}].model.options.input_cost and "
                    "output_cost"
                )


def _ai_proxy(config: Entry) -> dict[str, Any]:
    config.check_keys(
        (
            "route_type",
            "llm_format",
            "auth",
            "model",
            "logging",
            *_MODEL_POLICY_FIELDS,
            *_TIMEOUT_FIELDS,
            *_PROXY_FIELDS,
        )
    )
    result: dict[str, Any] = {
        "route_type": _route_type(config),
        "llm_format": _llm_format(config),
        "auth": {},
    }
    _model_policy(config, result)
    _proxy_fields(config, result)
    _timeouts(config, result)
    _logging(config, result)
    auth = config.sub("auth")
    if auth is not None:
        result["auth"] = _auth(auth)
    model = config.sub("model", required=True)
    if model is not None:
        result["model"] = _model(model, route_type=result["route_type"])
        provider = result["model"]["provider"]
        llm_format = result["llm_format"]
        wanted = _allowed_providers(llm_format, provider)
        if wanted is not None:
            config.fail_field(
                "llm_format", f'"{llm_format}" needs model.provider {wanted}, got "{provider}"'
            )
        _check_gemini(config, result)
        _check_ollama_format(config, llm_format, result["model"])
    return result


def _check_ollama_format(entry: Entry, llm_format: str | None, model: Mapping[str, Any]) -> None:
    """llm_format "ollama" on provider mistral or llama2 needs their ollama wire format."""
    provider, options = model.get("provider"), model.get("options") or {}
    if llm_format != "ollama" or provider not in ("mistral", "llama2"):
        return
    if options.get(f"{provider}_format") != "ollama":
        entry.fail_field(
            f"model.options.{provider}_format",
            f'must be "ollama" with llm_format "ollama" on provider "{provider}"',
        )


# The providers a client format can reach: Anthropic's Messages API also serves Claude on
# Bedrock (InvokeModel), as Kong's "Claude Code with AWS Bedrock" example does.
_FORMAT_PROVIDERS = {
    "anthropic": ("anthropic", "bedrock"),
    "gemini": ("gemini",),
    "bedrock": ("bedrock",),
    "cohere": ("cohere",),
    # Native /api/chat clients: provider ollama, or mistral / llama2 with an ollama format.
    "ollama": ("ollama", "mistral", "llama2"),
}


def _allowed_providers(llm_format: str | None, provider: str | None) -> str | None:
    """The providers ``llm_format`` can reach, quoted, if ``provider`` is not one of them."""
    allowed = _FORMAT_PROVIDERS.get(llm_format or "")
    if allowed is None or provider is None or provider in allowed:
        return None
    return " or ".join(f'"{name}"' for name in allowed)


def _check_gemini(entry: Entry, result: Mapping[str, Any]) -> None:
    """Gemini's options and Google Cloud auth: only on provider gemini, and consistent (the
    data plane's compiler checks the same, so nothing applied here is NACKed there)."""
    model = result.get("model") or {}
    auth = result.get("auth") or {}
    gemini = (model.get("options") or {}).get("gemini")
    gcp = [key for key in _GCP_AUTH_FIELDS if key in auth]
    if model.get("provider") != "gemini":
        if gemini is not None:
            entry.fail_field("model.options.gemini", 'is only for provider "gemini"')
        if gcp:
            entry.fail_field(f"auth.{gcp[0]}", 'is only for provider "gemini"')
        return
    gemini = gemini or {}
    if bool(gemini.get("project_id")) != bool(gemini.get("location_id")):
        entry.fail_field(
            "model.options.gemini", "needs both project_id and location_id (Vertex AI)"
        )
    elif (gemini.get("api_endpoint") or gemini.get("endpoint_id")) and not gemini.get("project_id"):
        entry.fail_field(
            "model.options.gemini", "api_endpoint and endpoint_id need project_id and location_id"
        )
    if auth.get("param_name") and auth.get("param_location") != "query":
        entry.fail_field(
            "auth.param_location",
            'must be "query" for provider "gemini" (or use header_name: x-goog-api-key)',
        )
    if auth.get("gcp_service_account_json") and not auth.get("gcp_use_service_account"):
        entry.fail_field("auth.gcp_service_account_json", "needs gcp_use_service_account: true")
    if auth.get("gcp_use_service_account") and (auth.get("header_name") or auth.get("param_name")):
        entry.fail_field(
            "auth.gcp_use_service_account", "replaces header_name/param_name auth; set one"
        )
    account = auth.get("gcp_service_account_json")
    if auth.get("gcp_use_service_account") and isinstance(account, str):
        try:
            info = json.loads(account)
        except ValueError:
            info = None
        if not isinstance(info, dict) or not all(
            isinstance(info.get(key), str) and info[key] for key in ("client_email", "private_key")
        ):
            # The message never quotes the value: it holds a private key.
            entry.fail_field(
                "auth.gcp_service_account_json",
                "must be a service account's JSON key (with client_email and private_key)",
            )


def _auth(auth: Entry) -> dict[str, Any]:
    auth.check_keys((*_AUTH_FIELDS, *_GCP_AUTH_FIELDS, "allow_override"))
    result: dict[str, Any] = {}
    if auth.has("allow_override"):
        result["allow_override"] = auth.boolean("allow_override", default=False)
    if auth.has("gcp_use_service_account"):
        result["gcp_use_service_account"] = auth.boolean("gcp_use_service_account", default=False)
    for key in ("gcp_service_account_json", "gcp_oauth_token_url"):
        if auth.has(key):
            result[key] = auth.string(key, required=True)
    token_url = result.get("gcp_oauth_token_url")
    if isinstance(token_url, str) and not is_http_url(token_url):
        auth.fail_field("gcp_oauth_token_url", "must be an http(s) URL")
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
    if auth.has("aws_access_key_id") != auth.has("aws_secret_access_key"):
        missing = "aws_secret_access_key" if auth.has("aws_access_key_id") else "aws_access_key_id"
        auth.fail_field(
            missing, "is required together with aws_access_key_id/aws_secret_access_key"
        )
    return result


def quoted_choices() -> str:
    return " or ".join(f'"{location}"' for location in PARAM_LOCATIONS)


def _templates(model: Entry) -> None:
    """Kong's template values (``$(uri_captures.model)``, ``$(headers.x-model)``...): filled
    per request by Kong from the route's regex captures, headers or query; refused by name."""

    def walk(value: Any, path: str) -> None:
        if isinstance(value, str) and "$(" in value:
            model.fail_field(
                path,
                f'"{value}": Kong\'s template values ($(uri_captures...), $(headers...), '
                "$(query_params...)) are not supported yet by data planes of this version",
            )
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{path}.{key}")

    for key in ("name", "options"):
        walk(model.data.get(key), key)


def _model(model: Entry, *, route_type: str | None) -> dict[str, Any]:
    model.check_keys(_MODEL_FIELDS)
    _templates(model)
    provider = model.string("provider", required=True)
    if provider is not None and provider not in SERVED_ROUTE_TYPES:
        known = kong_enum("model.provider")
        close = closest(provider, known)
        if provider in known:
            why = "is not supported yet by data planes of this version"
        elif close:
            why = f'is not a provider (did you mean "{close}"?)'
        else:
            why = "is not a provider"
        model.fail_field(
            "provider",
            f'"{provider}" {why} (supported: {", ".join(sorted(SERVED_ROUTE_TYPES))})',
        )
        provider = None
    elif (
        provider is not None
        and route_type is not None
        and route_type not in SERVED_ROUTE_TYPES[provider]
    ):
        model.fail_field(
            "provider",
            f'"{provider}" does not serve route_type "{route_type}" (it serves: '
            f"{', '.join(sorted(SERVED_ROUTE_TYPES[provider]))})",
        )
        provider = None
    result: dict[str, Any] = {
        "provider": provider,
        "name": model.string("name", default=""),
        "options": {},
    }
    if model.has("model_alias"):
        result["model_alias"] = model.string("model_alias", required=True)
    options = model.sub("options")
    if options is not None:
        result["options"] = _options(options)
    options_set = result["options"]
    azure_set = [key for key in _AZURE_OPTIONS if key in options_set]
    if azure_set and provider is not None and provider != "azure":
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
    if "upstream_path" in options_set and provider in _URL_TEMPLATE_PROVIDERS:
        # Their URL names the model and operation per request; the path is not one value.
        model.fail_field("options.upstream_path", f'is not supported for provider "{provider}"')
    bedrock = options_set.get("bedrock")
    if bedrock is not None and provider != "bedrock":
        model.fail_field("options.bedrock", 'is only for provider "bedrock"')
    if provider == "bedrock" and not (bedrock or {}).get("aws_region"):
        model.fail_field("options.bedrock.aws_region", 'is required for provider "bedrock"')
    _check_provider_options(model, provider, options_set)
    return result


def _check_provider_options(model: Entry, provider: str | None, options: dict[str, Any]) -> None:
    """Provider-specific options only on their provider; a databricks route names a workspace."""
    for key, (owner, _) in _FORMAT_OPTIONS.items():
        if key in options and provider != owner:
            model.fail_field(f"options.{key}", f'is only for provider "{owner}"')
    for owner in _PROVIDER_OPTIONS:
        if owner in options and provider != owner:
            model.fail_field(f"options.{owner}", f'is only for provider "{owner}"')
    if (
        provider == "databricks"
        and "upstream_url" not in options
        and not (options.get("databricks") or {}).get("workspace_instance_id")
    ):
        model.fail_field(
            "options.databricks.workspace_instance_id",
            'is required for provider "databricks" (or options.upstream_url)',
        )


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
    _provider_sections(options, result)
    if options.has("max_tokens"):
        result["max_tokens"] = options.integer("max_tokens", minimum=1)
    _sampling_defaults(options, result)
    if options.has("top_k"):
        result["top_k"] = options.integer("top_k", minimum=0)
    if options.has("upstream_path"):
        path = options.string("upstream_path", required=True)
        if path is not None and (not path.startswith("/") or any(c in path for c in "?# \r\n")):
            options.fail_field("upstream_path", f'must be a path starting with "/", got "{path}"')
        result["upstream_path"] = path
    for cost in ("input_cost", "output_cost"):
        if options.has(cost):
            amount = options.decimal(cost, kong_number=True)
            result[cost] = None if amount is None else str(amount)
    return result


def _provider_sections(options: Entry, result: dict[str, Any]) -> None:
    """The options of one provider each (gemini, bedrock, the *_format choices, dashscope,
    databricks) into ``result``; _check_provider_options checks they match the provider."""
    gemini = options.sub("gemini")
    if gemini is not None:
        gemini.check_keys(_GEMINI_OPTIONS)
        result["gemini"] = {
            key: gemini.string(key, required=True) for key in _GEMINI_OPTIONS if gemini.has(key)
        }
    bedrock = options.sub("bedrock")
    if bedrock is not None:
        bedrock.check_keys(_BEDROCK_OPTIONS)
        result["bedrock"] = {
            key: bedrock.string(key, required=True) for key in _BEDROCK_OPTIONS if bedrock.has(key)
        }
        sts = result["bedrock"].get("aws_sts_endpoint_url")
        if isinstance(sts, str) and not is_http_url(sts):
            bedrock.fail_field("aws_sts_endpoint_url", f'must be an http(s) URL, got "{sts}"')
    for key, (_, formats) in _FORMAT_OPTIONS.items():
        if options.has(key):
            result[key] = options.choice(key, formats)
    dashscope = options.sub("dashscope")
    if dashscope is not None:
        dashscope.check_keys(_PROVIDER_OPTIONS["dashscope"])
        result["dashscope"] = {"international": dashscope.boolean("international", default=True)}
    databricks = options.sub("databricks")
    if databricks is not None:
        databricks.check_keys(_PROVIDER_OPTIONS["databricks"])
        instance = databricks.string("workspace_instance_id", required=True)
        if instance is not None and not _DNS_LABEL.match(instance):
            databricks.fail_field("workspace_instance_id", f'"{instance}" is not a host name label')
        result["databricks"] = {"workspace_instance_id": instance}


def _sampling_defaults(options: Entry, result: dict[str, Any]) -> None:
    """Kong's sampling defaults (the client's own values win): numbers, kept as JSON numbers."""
    for key, top in (("temperature", 5), ("top_p", 1)):
        value = options.data.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= top:
            options.fail_field(key, f"must be a number from 0 to {top}, got {value!r}")
        else:
            result[key] = value


def is_http_url(url: str) -> bool:
    """Whether ``url`` is an absolute http(s) URL with a host and a valid port."""
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError on a malformed port
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)
