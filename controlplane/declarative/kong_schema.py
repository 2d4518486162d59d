"""Kong's published plugin schema, read once from ``kong_fields.tsv``, and what Meterline does
with each field.

``kong_fields.tsv`` is a copy of the flattened schema (dotted path, type, default, enum) of
every plugin Meterline reads; it drives which config fields a decK file may set, so no
documented field is forgotten and a misspelt one is refused with the closest documented name.
Each plugin also names the fields Meterline **honours** (the rest are accepted and reported,
never silently dropped: see :func:`check_plugin_config`) and Meterline's own extra fields.

Paths here are relative to ``config`` and use ``[]`` for "every element of a list"
(``targets.[].model.name``), as the TSV does.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from functools import cache
from importlib import resources
from typing import Any

from controlplane.declarative.entry import Entry, closest, describe, quoted

ELEMENT = "[]"
# TSV section name -> plugin name. meteringandbilling is Kong's, not one Meterline reads.
_SECTIONS = {
    "aiproxy": "ai-proxy",
    "aiproxyadvanced": "ai-proxy-advanced",
    "airatelimitingadvanced": "ai-rate-limiting-advanced",
    "keyauth": "key-auth",
    "ratelimiting": "rate-limiting",
    "ratelimitingadvanced": "rate-limiting-advanced",
}


@dataclass(frozen=True)
class FieldSpec:
    """One documented field: Kong's type (string, integer, number, boolean, array, object),
    default (None when Kong has none) and allowed values (empty: any)."""

    path: str
    type: str
    default: Any = None
    enum: tuple[str, ...] = ()
    # Meterline's own field (not Kong's).
    meterline: bool = False


@dataclass
class Node:
    """A place in a plugin's config: a mapping (``children``), a list (``element`` is what each
    item is) or a scalar leaf (``spec`` only)."""

    spec: FieldSpec | None = None
    children: dict[str, Node] = field(default_factory=dict)
    element: Node | None = None

    def is_mapping(self) -> bool:
        return bool(self.children) or (self.spec is not None and self.spec.type == "object")


def _parse_default(text: str) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def _insert(root: Node, spec: FieldSpec) -> None:
    node = root
    parts = spec.path.split(".")
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        if part == ELEMENT:
            if node.element is None:
                node.element = Node()
            node = node.element
        else:
            node = node.children.setdefault(part, Node())
        if last:
            node.spec = spec
    return None


@cache
def kong_fields() -> Mapping[str, tuple[FieldSpec, ...]]:
    """Every documented config field of each plugin, in TSV order (read once)."""
    text = resources.files("controlplane.declarative").joinpath("kong_fields.tsv").read_text()
    fields: dict[str, list[FieldSpec]] = {}
    plugin: str | None = None
    for line in text.splitlines():
        if line.startswith("## "):
            plugin = _SECTIONS.get(line[3:].strip())
            if plugin is not None:
                fields.setdefault(plugin, [])
            continue
        if not line.strip() or line.startswith("#") or plugin is None:
            continue
        path, kind, default, enum = [*line.split("\t"), "", "", ""][:4]
        path = path.removeprefix("config.")
        if any(spec.path == path for spec in fields[plugin]):
            continue  # the TSV repeats a section; the first copy wins
        fields[plugin].append(
            FieldSpec(
                path=path,
                type=kind,
                default=_parse_default(default),
                enum=tuple(enum.removeprefix("enum=").split("|")) if enum else (),
            )
        )
    return {name: tuple(specs) for name, specs in fields.items()}


# -- what Meterline does with each plugin's fields ---------------------------------------------

_AUTH = (
    "header_name",
    "header_value",
    "param_name",
    "param_value",
    "param_location",
    "allow_override",
)
_OPTIONS = (
    "upstream_url",
    "anthropic_version",
    "max_tokens",
    "input_cost",
    "output_cost",
    "azure_instance",
    "azure_deployment_id",
    "azure_api_version",
    "temperature",
    "top_p",
    "top_k",
    "upstream_path",
)
_GEMINI = ("api_endpoint", "project_id", "location_id", "endpoint_id")
# Kong's model.options.bedrock that Meterline honours (provider bedrock: region, STS role).
_BEDROCK = ("aws_region", "aws_assume_role_arn", "aws_role_session_name", "aws_sts_endpoint_url")
# Options of the OpenAI-compatible and Ollama-served providers (dataplane/proxy/compatible.py).
_PROVIDER_OPTIONS = (
    "mistral_format",
    "llama2_format",
    "dashscope.international",
    "databricks.workspace_instance_id",
)
_MODEL = (
    "provider",
    "name",
    "model_alias",
    *(f"options.{o}" for o in _OPTIONS),
    *(f"options.gemini.{g}" for g in _GEMINI),
    *(f"options.bedrock.{b}" for b in _BEDROCK),
    *(f"options.{o}" for o in _PROVIDER_OPTIONS),
)
# Google Cloud service-account auth (provider gemini on Vertex AI).
_GCP = ("gcp_use_service_account", "gcp_service_account_json", "gcp_oauth_token_url")
# AWS keys SigV4-signing Bedrock requests (provider bedrock).
_AWS = ("aws_access_key_id", "aws_secret_access_key")
_REDIS = ("host", "port", "database", "username", "password")
_RATE_COMMON = (
    "window_type",
    "identifier",
    "header_name",
    "strategy",
    "namespace",
    "hide_client_headers",
    *(f"redis.{r}" for r in _REDIS),
)


# Kong's request and response handling fields of both ai-proxy plugins.
_PROXY = ("response_streaming", "max_request_body_size", "model_name_header")
# A refusal's status and message (every rate-limiting plugin).
_ERROR = ("error_code", "error_message")
# Kong 3.14's ai-rate-limiting-advanced policies[] (controlplane/declarative/rate_limits.py).
_POLICY = (
    "id",
    "window_type",
    "match.[].type",
    "match.[].key",
    "match.[].values",
    "match.[].partition_by",
    "limits.[].limit",
    "limits.[].window_size",
    "limits.[].tokens_count_strategy",
)


def _target(prefix: str) -> tuple[str, ...]:
    return (
        *(f"{prefix}auth.{a}" for a in (*_AUTH, *_GCP, *_AWS)),
        *(f"{prefix}model.{m}" for m in _MODEL),
    )


HONOURED: Mapping[str, frozenset[str]] = {
    "key-auth": frozenset(
        {
            "key_names",
            "hide_credentials",
            "key_in_query",
            "key_in_body",
            "anonymous",
            "run_on_preflight",
            "realm",
        }
    ),
    "ai-proxy": frozenset(
        {"route_type", "llm_format", "logging.log_payloads", *_PROXY, *_target("")}
    ),
    "ai-proxy-advanced": frozenset(
        {
            "llm_format",
            *_PROXY,
            "targets.[].route_type",
            "targets.[].weight",
            "targets.[].description",
            # The name the cost algorithm matches the requested model against.
            "targets.[].model.model_alias",
            "targets.[].logging.log_payloads",
            *_target("targets.[]."),
            *(
                f"balancer.{b}"
                for b in (
                    "algorithm",
                    "hash_on_header",
                    "retries",
                    "failover_criteria",
                    "connect_timeout",
                    "read_timeout",
                    "write_timeout",
                    "tokens_count_strategy",
                    "latency_strategy",
                    "max_fails",
                    "fail_timeout",
                )
            ),
        }
    ),
    "rate-limiting-advanced": frozenset({"limit", "window_size", *_RATE_COMMON, *_ERROR}),
    "ai-rate-limiting-advanced": frozenset(
        {
            "llm_providers.[].name",
            "llm_providers.[].limit",
            "llm_providers.[].window_size",
            "tokens_count_strategy",
            *_RATE_COMMON,
            *_ERROR,
            *(f"policies.[].{p}" for p in _POLICY),
        }
    ),
    "rate-limiting": frozenset(
        {
            "second",
            "minute",
            "hour",
            "day",
            "month",
            "year",
            "limit_by",
            "header_name",
            "policy",
            "fault_tolerant",
            "hide_client_headers",
            "redis.timeout",
            *(f"redis.{r}" for r in _REDIS),
            *_ERROR,
        }
    ),
}

# Meterline's own fields (honoured; not in Kong's schema).
_TIMEOUTS = (
    FieldSpec("connect_timeout", "integer", meterline=True),
    FieldSpec("read_timeout", "integer", meterline=True),
    FieldSpec("write_timeout", "integer", meterline=True),
)
_MODEL_POLICY = (
    FieldSpec("model_allow_list", "array", meterline=True),
    FieldSpec("model_aliases", "object", meterline=True),
)
_RATE_EXTRAS = (
    FieldSpec("fault_tolerant", "boolean", True, meterline=True),
    FieldSpec("redis.timeout", "integer", 2000, meterline=True),
)
EXTRAS: Mapping[str, tuple[FieldSpec, ...]] = {
    "key-auth": (FieldSpec("key_in_bearer", "boolean", True, meterline=True),),
    "ai-proxy": (*_MODEL_POLICY, *_TIMEOUTS),
    "ai-proxy-advanced": (
        *_MODEL_POLICY,
        FieldSpec("targets.[].priority", "integer", meterline=True),
        FieldSpec("targets.[].connect_timeout", "integer", meterline=True),
        FieldSpec("targets.[].read_timeout", "integer", meterline=True),
    ),
    "rate-limiting-advanced": _RATE_EXTRAS,
    "ai-rate-limiting-advanced": _RATE_EXTRAS,
    "rate-limiting": (),
}
# Values Meterline adds to Kong's enums.
_ENUM_EXTRAS: Mapping[str, tuple[str, ...]] = {
    "model.provider": ("openai_compatible",),
    # Native Ollama clients (/api/chat), Meterline's addition to Kong's formats.
    "llm_format": ("ollama",),
    "targets.[].model.provider": ("openai_compatible",),
    "balancer.algorithm": ("cost",),
    "balancer.failover_criteria": ("http_5xx",),
}

# Fields honoured for some values only (Meterline's behaviour is Kong's for those values).
_LOGGING = {"logging.log_statistics": (True,)}
# Kong's genai_category: Meterline serves text generation and embeddings (the category
# follows route_type); the audio, image, realtime and video categories are noted.
_CATEGORY = {"genai_category": ("text/generation", "text/embeddings")}
HONOURED_VALUES: Mapping[str, Mapping[str, tuple[Any, ...]]] = {
    "key-auth": {"key_in_header": (True,)},
    "ai-proxy": {**_LOGGING, **_CATEGORY},
    "ai-proxy-advanced": {
        **{f"targets.[].{key}": values for key, values in _LOGGING.items()},
        **_CATEGORY,
    },
    "rate-limiting-advanced": {"sync_rate": (0,), "disable_penalty": (True,)},
    "ai-rate-limiting-advanced": {"sync_rate": (0,), "disable_penalty": (True,)},
    "rate-limiting": {"sync_rate": (-1, 0)},
}

_REASONS: tuple[tuple[str, str], ...] = (
    ("logging.log_statistics", "Meterline meters every request for billing"),
    ("model.options.cohere", "Cohere's embedding options (Cohere embeddings are not served)"),
    ("model.options.huggingface", "Hugging Face's serverless options (the router needs none)"),
    (
        "model.options.bedrock.",
        "Bedrock options Meterline does not use (batch jobs, embeddings, latency tier, video)",
    ),
    ("metadata", "target metadata is not used"),
    ("vectordb", "semantic routing and caching are not supported"),
    ("embeddings", "semantic routing and caching are not supported"),
    ("balancer.slots", "the balancer needs no hash ring slots"),
    ("auth.aws_", "cloud identity auth is not supported: use auth.header_name/header_value"),
    ("auth.azure_", "cloud identity auth is not supported: use auth.header_name/header_value"),
    ("auth.gcp_", "cloud identity auth is not supported: use auth.header_name/header_value"),
    (
        "genai_category",
        "only text generation and embeddings are served (audio, image, realtime and video "
        "categories are not); the category follows route_type",
    ),
    ("redis.", "only host, port, database, username, password and timeout are used"),
    ("sync_rate", "counters are synchronised on every request"),
    ("key_in_header", "the key is always read from the key_names headers"),
    ("identity_realms", "Konnect identity realms are not supported"),
    ("compound_identifier", "use identifier (one key per counter)"),
    ("consumer_groups", "consumer groups are not supported"),
    ("enforce_consumer_groups", "consumer groups are not supported"),
    ("dictionary_name", "counters live in the data plane or in Redis"),
    ("lock_dictionary_name", "counters live in the data plane or in Redis"),
    ("disable_penalty", "refused requests are never counted (as disable_penalty: true)"),
    ("throttling", "requests over the limit are refused, never queued"),
    ("retry_after_jitter_max", "Retry-After carries no jitter"),
    ("path", "limiting by path is not supported"),
    ("decrease_by_fractions_in_redis", "counters are whole tokens"),
    ("custom_cost_count_function", "custom Lua cost functions are not supported"),
    ("request_prompt_count_function", "custom Lua count functions are not supported"),
    ("error_hide_providers", "refusals name no provider"),
    ("acls", "model and provider access lists are not supported: use model_allow_list"),
    ("llm_format", "the format follows the targets' provider"),
)
DEFAULT_REASON = "Meterline has no such behaviour"


def reason_for(path: str) -> str:
    """Why a field is not enforced, by the most specific known prefix of its path."""
    bare = path.replace(ELEMENT + ".", "")
    for prefix, reason in _REASONS:
        if bare.startswith(prefix) or f".{prefix}" in f".{bare}":
            return reason
    return DEFAULT_REASON


@cache
def schema(plugin: str) -> Node:
    """The tree of every field ``plugin`` accepts (Kong's and Meterline's)."""
    root = Node()
    for spec in (*kong_fields().get(plugin, ()), *EXTRAS.get(plugin, ())):
        extra = _ENUM_EXTRAS.get(spec.path)
        if extra and spec.enum:
            spec = FieldSpec(spec.path, spec.type, spec.default, (*spec.enum, *extra))
        _insert(root, spec)
    return root


def is_honoured(plugin: str, path: str) -> bool:
    honoured = HONOURED.get(plugin, frozenset())
    return path in honoured or any(spec.path == path for spec in EXTRAS.get(plugin, ()))


@cache
def _has_honoured(plugin: str, prefix: str) -> bool:
    """Whether some honoured (or conditionally honoured) field lies at or under ``prefix``."""
    paths = (
        *HONOURED.get(plugin, ()),
        *(spec.path for spec in EXTRAS.get(plugin, ())),
        *HONOURED_VALUES.get(plugin, {}),
    )
    return any(path == prefix or path.startswith(prefix + ".") for path in paths)


# -- checking a config against the schema --------------------------------------------------------


@dataclass(frozen=True)
class Unenforced:
    """A field set in a file that Meterline accepts and does not enforce."""

    path: str  # as written: "targets[0].logging.log_payloads" (relative to config)
    schema_path: str  # "targets.[].logging.log_payloads"
    value: Any
    reason: str


def check_plugin_config(plugin: str, config: Entry) -> tuple[dict[str, Any], list[Unenforced]]:
    """Check ``config`` against the schema of ``plugin``.

    Returns the honoured part of the config (nulls dropped: null means "unset", as in Kong)
    for the plugin's own validation, and the fields set to something Meterline does not do.
    Problems (unknown fields with the closest documented name, wrong types, values outside
    Kong's enums) go to ``config.problems``.
    """
    unenforced: list[Unenforced] = []
    honoured = _walk_mapping(
        plugin,
        schema(plugin),
        config.data,
        config=config,
        path="",
        schema_path="",
        unenforced=unenforced,
    )
    return honoured, unenforced


def _join(base: str, key: str) -> str:
    return f"{base}.{key}" if base else key


def _walk_mapping(
    plugin: str,
    node: Node,
    data: Mapping[str, Any],
    *,
    config: Entry,
    path: str,
    schema_path: str,
    unenforced: list[Unenforced],
) -> dict[str, Any]:
    kept: dict[str, Any] = {}
    for key, value in data.items():
        key_text = str(key)
        child = node.children.get(key_text)
        here, here_schema = _join(path, key_text), _join(schema_path, key_text)
        if child is None:
            _fail_unknown(plugin, node, config=config, key=key_text, path=here, schema=here_schema)
            continue
        if value is None:
            continue  # null: unset, Kong's default applies
        conditional = HONOURED_VALUES.get(plugin, {}).get(here_schema)
        honoured = is_honoured(plugin, here_schema)
        if conditional is None and (
            honoured
            or (_has_honoured(plugin, here_schema) and not isinstance(value, Mapping | list))
        ):
            # The plugin's own validation checks what it honours, with what data planes serve.
            kept[key_text] = value
            continue
        if not _type_ok(child, value, config=config, path=here):
            continue
        if conditional is not None:
            if value not in conditional:
                unenforced.append(Unenforced(here, here_schema, value, reason_for(here_schema)))
            continue
        if not _has_honoured(plugin, here_schema):
            _validate(child, value, config=config, path=here)
            if _is_set(child, value):
                unenforced.append(Unenforced(here, here_schema, value, reason_for(here_schema)))
            continue
        if isinstance(value, Mapping):
            sub = _walk_mapping(
                plugin,
                child,
                value,
                config=config,
                path=here,
                schema_path=here_schema,
                unenforced=unenforced,
            )
            if sub or not value:
                kept[key_text] = sub
        elif isinstance(value, list) and child.element is not None:
            items: list[Any] = []
            for index, item in enumerate(value):
                where = f"{here}[{index}]"
                if not isinstance(item, Mapping):
                    config.fail_field(where, f"must be a mapping, got {describe(item)}")
                    continue
                items.append(
                    _walk_mapping(
                        plugin,
                        child.element,
                        item,
                        config=config,
                        path=where,
                        schema_path=f"{here_schema}.{ELEMENT}",
                        unenforced=unenforced,
                    )
                )
            kept[key_text] = items
        else:
            kept[key_text] = value
    return kept


def _validate(node: Node, value: Any, *, config: Entry, path: str) -> None:
    """Check a subtree Meterline keeps whole: documented names, types and values only."""
    if isinstance(value, Mapping) and not (node.spec is not None and node.spec.type == "object"):
        for key, item in value.items():
            child = node.children.get(str(key))
            here = f"{path}.{key}"
            if child is None:
                config.fail(f'unknown field "{config.prefix}{here}" ({_unknown(str(key), node)})')
            elif item is not None and _type_ok(child, item, config=config, path=here):
                _validate(child, item, config=config, path=here)
    elif isinstance(value, list) and node.element is not None:
        for index, item in enumerate(value):
            where = f"{path}[{index}]"
            if not isinstance(item, Mapping):
                config.fail_field(where, f"must be a mapping, got {describe(item)}")
            else:
                _validate(node.element, item, config=config, path=where)


# Fields of Kong releases newer than kong_fields.tsv that Kong's documented examples use:
# refused by name (as unsupported), never reported as typos.
NEWER_KONG_FIELDS: dict[str, dict[str, str]] = {
    "key-auth": {"principals": "keys of a Konnect directory's principals"},
    "rate-limiting-advanced": {"counter_key": "Kong 3.14's counter key"},
    "ai-proxy": {
        "model.options.seconds": "video generation",
        "model.options.size": "image and video generation",
    },
    "ai-proxy-advanced": {
        "targets.[].model.options.seconds": "video generation",
        "targets.[].model.options.size": "image and video generation",
        "targets.[].genai_category": "Kong's generative-AI categories (image, audio, video)",
    },
}


def _fail_unknown(
    plugin: str, node: Node, *, config: Entry, key: str, path: str, schema: str
) -> None:
    """A field the schema lacks: a newer Kong feature by name, else a typo with a hint."""
    newer = NEWER_KONG_FIELDS.get(plugin, {}).get(schema)
    if newer is not None:
        config.fail(
            f'field "{config.prefix}{path}" ({newer}) is not supported yet by data planes of '
            "this version"
        )
    else:
        config.fail(f'unknown field "{config.prefix}{path}" ({_unknown(key, node)})')


def _unknown(key: str, node: Node) -> str:
    names = sorted(node.children)
    close = closest(key, names)
    if close:
        return f'did you mean "{close}"?'
    if len(names) <= 12:
        return f"expected one of: {quoted(names)}"
    return "not a documented field: see docs/declarative.md"


def _is_set(node: Node, value: Any) -> bool:
    """Whether ``value`` asks for something other than Kong's default."""
    if value is None:
        return False
    if isinstance(value, Mapping):
        return any(_is_set(node.children.get(str(k), Node()), v) for k, v in value.items())
    if isinstance(value, list) and not value:
        return node.spec is not None and node.spec.default not in (None, [])
    default = node.spec.default if node.spec is not None else None
    return bool(value != default)


_TYPES: Mapping[str, str] = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "array": "a list",
    "object": "a mapping",
}


def _type_ok(node: Node, value: Any, *, config: Entry, path: str) -> bool:
    spec = node.spec
    if spec is None:
        if node.children and not isinstance(value, Mapping):
            config.fail_field(path, f"must be a mapping, got {describe(value)}")
            return False
        if node.element is not None and not isinstance(value, list):
            config.fail_field(path, f"must be a list, got {describe(value)}")
            return False
        return True
    kind = spec.type
    ok = {
        "string": isinstance(value, str),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "number": _is_number(value),
        "boolean": isinstance(value, bool),
        "array": isinstance(value, list),
        "object": isinstance(value, Mapping),
    }.get(kind, True)
    if not ok:
        config.fail_field(path, f"must be {_TYPES.get(kind, kind)}, got {describe(value)}")
        return False
    if spec.enum:
        values = value if isinstance(value, list) else [value]
        for index, item in enumerate(values):
            if str(item) not in spec.enum or isinstance(item, bool):
                where = f"{path}[{index}]" if isinstance(value, list) else path
                config.fail_field(where, f"must be one of {quoted(spec.enum)}, got {_show(item)}")
                return False
    return True


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return True
    if isinstance(value, str):  # Meterline's exact decimal strings ("0.5")
        try:
            return Decimal(value).is_finite()
        except InvalidOperation:
            return False
    return False


def _show(value: Any) -> str:
    return f'"{value}"' if isinstance(value, str) else describe(value)


def walk_specs(plugin: str) -> Iterator[FieldSpec]:
    """Every field ``plugin`` accepts, Kong's then Meterline's."""
    yield from kong_fields().get(plugin, ())
    yield from EXTRAS.get(plugin, ())


def example_value(spec: FieldSpec) -> Any:
    """A value of the right type for ``spec`` (the default where Kong documents one)."""
    if spec.default is not None:
        return spec.default
    if spec.enum:
        return [spec.enum[0]] if spec.type == "array" else spec.enum[0]
    return {
        "string": "x",
        "integer": 1,
        "number": 1,
        "boolean": False,
        "array": [],
        "object": {},
    }.get(spec.type, "x")


def set_path(target: dict[str, Any], path: Sequence[str], value: Any) -> None:
    """Set ``value`` at ``path`` (keys, or ``"[i]"`` list indexes) inside ``target``."""
    node: Any = target
    for index, part in enumerate(path):
        last = index == len(path) - 1
        if part.startswith("[") and part.endswith("]"):
            position = int(part[1:-1])
            while len(node) <= position:
                node.append({})
            if last:
                node[position] = value
            else:
                node = node[position]
            continue
        if last:
            node[part] = value
        else:
            nxt = path[index + 1]
            default: Any = [] if nxt.startswith("[") else {}
            if not isinstance(node.get(part), list | dict):
                node[part] = default
            node = node[part]


def split_path(path: str) -> list[str]:
    """``"targets[0].logging.log_payloads"`` -> ``["targets", "[0]", "logging", ...]``."""
    parts: list[str] = []
    for piece in path.split("."):
        while "[" in piece:
            head, _, rest = piece.partition("[")
            if head:
                parts.append(head)
            index, _, piece = rest.partition("]")
            parts.append(f"[{index}]")
        if piece:
            parts.append(piece)
    return parts
