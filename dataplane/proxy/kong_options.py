"""Kong's ai-proxy request and response options, compiled once per route and applied per request.

- ``model.options.temperature`` / ``top_p`` / ``top_k``: defaults put into the client's body
  where the client set none (Kong: "the values in the request take precedence"), in the
  client's own format (``generationConfig.topP`` for Gemini clients, ``options.top_k`` for
  Ollama's, ``p``/``k`` for Cohere's...). An OpenAI-format body gets ``top_k`` only where the
  provider reads it (Anthropic); Kong drops it for the others.
- ``response_streaming``: ``deny`` refuses a request that asks for a stream (400, as Kong:
  "response streaming is not enabled for this LLM"); ``always`` sets ``"stream": true`` on
  chat, completions and responses bodies.
- ``max_request_body_size``: a body over it is refused with 413 (below the data plane's own
  limit).
- ``model_name_header``: ``X-Kong-LLM-Model: <provider>/<model>`` on every relayed response.
- ``auth.allow_override``: a client's own header (or body / query parameter) of the configured
  auth name wins (unless it carries the consumer's gateway key).
- ``model.options.upstream_path``: the path of the upstream URL.

The body is parsed only on routes where the compiler found something to put into it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson

from dataplane.config.model import AiProxyPolicy, KeyAuthPolicy, RequestDefaults
from dataplane.config.providers import (
    LLM_FORMAT_ANTHROPIC,
    LLM_FORMAT_BEDROCK,
    LLM_FORMAT_COHERE,
    LLM_FORMAT_GEMINI,
    LLM_FORMAT_OLLAMA,
    LLM_FORMAT_OPENAI,
    ROUTE_TYPE_CHAT,
)
from dataplane.errors import CompileError, Rejection
from dataplane.translate.base import Prepared, Translator
from meterline.dataplane.v1 import snapshot_pb2

MODEL_HEADER = b"x-kong-llm-model"
STREAMING_ALLOW, STREAMING_DENY, STREAMING_ALWAYS = "allow", "deny", "always"
STREAMING_VALUES = ("", STREAMING_ALLOW, STREAMING_DENY, STREAMING_ALWAYS)
# Route types whose bodies have a "stream" flag (Kong forces it on these).
_STREAMED_ROUTE_TYPES = frozenset({ROUTE_TYPE_CHAT, "llm/v1/completions", "llm/v1/responses"})
# Client formats whose stream is chosen by the URL, not by the body: "always" cannot apply.
_PATH_STREAMED_FORMATS = frozenset({LLM_FORMAT_GEMINI, LLM_FORMAT_BEDROCK})
# Where each client format keeps temperature, top_p and top_k (None: not in that format).
_SAMPLING_PATHS: dict[str, tuple[tuple[str, ...] | None, ...]] = {
    LLM_FORMAT_OPENAI: (("temperature",), ("top_p",), ("top_k",)),
    LLM_FORMAT_ANTHROPIC: (("temperature",), ("top_p",), ("top_k",)),
    LLM_FORMAT_GEMINI: (
        ("generationConfig", "temperature"),
        ("generationConfig", "topP"),
        ("generationConfig", "topK"),
    ),
    LLM_FORMAT_COHERE: (("temperature",), ("p",), ("k",)),
    LLM_FORMAT_OLLAMA: (
        ("options", "temperature"),
        ("options", "top_p"),
        ("options", "top_k"),
    ),
    # Bedrock clients send the model's own body (Converse or InvokeModel): not rewritten.
    LLM_FORMAT_BEDROCK: (None, None, None),
}
# OpenAI-format requests reach these providers with top_k carried over (openai_anthropic).
_TOP_K_PROVIDERS = frozenset({"anthropic"})
_DENIED = "response streaming is not enabled for this LLM"


def check(label: str, config: snapshot_pb2.AiProxyConfig) -> None:
    """CompileError if the route's Kong options cannot be served."""
    streaming = config.response_streaming
    if streaming not in STREAMING_VALUES:
        raise CompileError(f'{label}: unknown response_streaming "{streaming}"')
    if streaming == STREAMING_ALWAYS and (config.llm_format or "openai") in _PATH_STREAMED_FORMATS:
        raise CompileError(
            f'{label}: response_streaming "always" cannot apply to llm_format '
            f'"{config.llm_format}" (its clients choose streaming by the URL)'
        )
    if config.max_request_body_size < 0:
        raise CompileError(f"{label}: max_request_body_size is negative")


def check_target(label: str, options: snapshot_pb2.AiProxyModelOptions, provider: str) -> None:
    """CompileError if a target's sampling options or upstream_path cannot be served."""
    path = options.upstream_path
    if path:
        if provider in ("gemini", "bedrock"):
            raise CompileError(f'{label}: upstream_path is not supported for provider "{provider}"')
        if not path.startswith("/") or any(c in path for c in "?# \r\n"):
            raise CompileError(f'{label}: upstream_path "{path}" is not a path')
    for name in ("temperature", "top_p"):
        if options.HasField(name) and not 0 <= getattr(options, name) <= 5:
            raise CompileError(f"{label}: model.options.{name} is out of range")
    if options.HasField("top_k") and options.top_k < 0:
        raise CompileError(f"{label}: model.options.top_k is negative")


def with_upstream_path(url: str, path: str) -> str:
    """``url`` with its path replaced by Kong's ``upstream_path`` (query kept)."""
    if not path:
        return url
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def request_defaults(
    config: snapshot_pb2.AiProxyConfig, *, provider: str, route_type: str
) -> RequestDefaults | None:
    """What the route puts into its clients' bodies, or None when nothing (the usual case)."""
    llm_format = config.llm_format or LLM_FORMAT_OPENAI
    force = config.response_streaming == STREAMING_ALWAYS and route_type in _STREAMED_ROUTE_TYPES
    fill: list[tuple[tuple[str, ...], Any]] = []
    if route_type in _STREAMED_ROUTE_TYPES:
        options = config.model.options
        paths = _SAMPLING_PATHS.get(llm_format, (None, None, None))
        values: list[Any] = [
            options.temperature if options.HasField("temperature") else None,
            options.top_p if options.HasField("top_p") else None,
            options.top_k if options.HasField("top_k") else None,
        ]
        if llm_format == LLM_FORMAT_OPENAI and provider not in _TOP_K_PROVIDERS:
            values[2] = None
        fill = [
            (path, value)
            for path, value in zip(paths, values, strict=True)
            if path is not None and value is not None
        ]
    if not fill and not force:
        return None
    return RequestDefaults(fill=tuple(fill), force_stream=force)


def apply_defaults(raw: bytes, defaults: RequestDefaults) -> bytes:
    """``raw`` with the route's defaults where the client set nothing (null counts as
    nothing, as in Kong); the same bytes when nothing changed or the body is not a JSON
    object (the translator then answers it)."""
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw
    if not isinstance(document, dict):
        return raw
    changed = False
    for path, value in defaults.fill:
        target: Any = document
        for key in path[:-1]:
            inner = target.get(key)
            if inner is None:
                inner = target[key] = {}
            if not isinstance(inner, dict):
                target = None
                break
            target = inner
        if target is None or target.get(path[-1]) is not None:
            continue
        target[path[-1]] = value
        changed = True
    if defaults.force_stream and document.get("stream") is not True:
        document["stream"] = True
        changed = True
    return orjson.dumps(document) if changed else raw


def prepare(
    translator: Translator,
    policy: AiProxyPolicy,
    raw: bytes,
    *,
    subpath: str,
    query: bytes,
    method: str,
) -> Prepared:
    """``translator.prepare`` with the route's defaults applied first and its streaming policy
    checked after (Rejection 400 for a stream on a ``deny`` route)."""
    if policy.defaults is not None and raw:
        raw = apply_defaults(raw, policy.defaults)
    prepared = translator.prepare(raw, policy, subpath=subpath, query=query, method=method)
    if policy.deny_streaming and prepared.stream:
        raise Rejection(
            400, _DENIED, type="invalid_request_error", code="stream_not_allowed", param="stream"
        )
    target = policy.target
    if target.allow_override and target.query_auth_name and query:
        # The client's own query credential (never a gateway key: key-auth removed those).
        own = next(
            (v for n, v in parse_qsl(query.decode("latin-1")) if n == target.query_auth_name and v),
            None,
        )
        if own is not None:
            url = _with_query_param(prepared.url, target.query_auth_name, own)
            prepared = dataclasses.replace(prepared, url=url)
    return prepared


def _with_query_param(url: str, name: str, value: str) -> str:
    parts = urlsplit(url)
    pairs = [
        (n, value if n == name else v) for n, v in parse_qsl(parts.query, keep_blank_values=True)
    ]
    return urlunsplit((*parts[:3], urlencode(pairs), parts.fragment))


def model_header(policy: AiProxyPolicy, model: str) -> tuple[bytes, bytes] | None:
    """Kong's ``X-Kong-LLM-Model: <provider>/<model>`` (None when off, or for a model name a
    header cannot carry)."""
    if not policy.model_name_header or not model:
        return None
    value = f"{policy.target.provider}/{model}"
    if not value.isprintable():
        return None
    return (MODEL_HEADER, value.encode())


def auth_headers(
    policy: AiProxyPolicy,
    client_headers: Sequence[tuple[bytes, bytes]],
    key_auth: KeyAuthPolicy | None,
) -> tuple[tuple[bytes, bytes], ...]:
    """The provider auth headers of one request: the configured ones, or (allow_override) the
    client's own header of the same name where it sent one that is not its gateway key."""
    configured = policy.target.auth_headers
    if not policy.target.allow_override or not configured:
        return configured
    out: list[tuple[bytes, bytes]] = []
    for name, value in configured:
        carries_key = key_auth is not None and (
            name in key_auth.header_names or (name == b"authorization" and key_auth.key_in_bearer)
        )
        own = None if carries_key else next((v for n, v in client_headers if n == name), None)
        out.append((name, own) if own else (name, value))
    return tuple(out)
