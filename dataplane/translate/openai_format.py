"""OpenAI's chat-completions wire format: request rewriting, usage in bodies and streams, errors.

Token counters keep "absent" (None) apart from zero: a provider that reports no usage is not
the same as one that reports 0 tokens.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import orjson

from dataplane.errors import DataPlaneError, Rejection
from dataplane.http.sse import event_data
from dataplane.usage.tokens import TokenUsage, count, malformed, minus

if TYPE_CHECKING:
    from dataplane.config.model import AiProxyPolicy

__all__ = [
    "ChatRequest",
    "ChatStreamScanner",
    "InvalidRequest",
    "TokenUsage",
    "error_body",
    "prepare_chat_request",
    "read_body_usage",
    "usage_from_openai",
]


class InvalidRequest(DataPlaneError):
    """A client request the gateway refuses with 400 before calling the provider."""

    def __init__(self, message: str, *, code: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """A chat-completions request ready to go upstream."""

    body: bytes
    model: str
    stream: bool
    # True when the gateway asked for stream usage itself, so the usage chunk is not the
    # client's to see.
    hide_usage_chunk: bool
    # The parsed body, kept to estimate the prompt when the provider reports no usage.
    document: Any = None
    # The client's model after aliasing (before a route's fixed model replaces it).
    requested_model: str | None = None


def error_body(message: str, *, type: str, code: str | None, param: str | None = None) -> bytes:
    """Return an OpenAI-shaped error document."""
    return orjson.dumps({"error": {"message": message, "type": type, "param": param, "code": code}})


def rejection_body(rejection: Rejection) -> bytes:
    """A refused request as OpenAI's error document (every OpenAI-client translator's reject)."""
    return error_body(
        rejection.message, type=rejection.type, code=rejection.code, param=rejection.param
    )


def function_calls(tool_calls: Any) -> list[tuple[str, str, Any]]:
    """(id, name, parsed arguments) of an assistant message's ``tool_calls``, for providers
    that want the arguments as JSON values; InvalidRequest when arguments are not JSON."""
    calls: list[tuple[str, str, Any]] = []
    for call in tool_calls if isinstance(tool_calls, list) else ():
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            continue
        arguments = function.get("arguments") or "{}"
        try:
            parsed = orjson.loads(arguments) if isinstance(arguments, str) else arguments
        except orjson.JSONDecodeError:
            raise InvalidRequest(
                "Tool call arguments must be a JSON object.", code="invalid_type", param="messages"
            ) from None
        calls.append((call.get("id", ""), function.get("name", ""), parsed))
    return calls


# The field each OpenAI-format route type requires, and whether it may stream.
_REQUIRED_FIELD: dict[str, tuple[str, type | tuple[type, ...], str, bool]] = {
    "llm/v1/chat": ("messages", list, "an array", True),
    "llm/v1/completions": ("prompt", (str, list), "a string or an array", True),
    "llm/v1/embeddings": ("input", (str, list), "a string or an array", False),
    "llm/v1/responses": ("input", (str, list), "a string or an array", True),
}
_RESPONSES = "llm/v1/responses"


# Top-level fields the gateway reads and checks: one of them twice and the gateway (orjson keeps
# the last) and a provider (some keep the first) could read different values.
_CHECKED_KEYS: Final = (
    b'"model"',
    b'"stream',  # "stream", "stream_options"
    b'"max_',  # "max_tokens", "max_completion_tokens", "max_output_tokens"
)


def _top_level_duplicate(raw: bytes) -> str | None:
    """The first top-level key ``raw`` holds twice, if any (``raw`` parses as an object)."""
    found: list[str | None] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: set[str] = set()
        duplicate = None
        for key, _ in items:
            if key in seen and duplicate is None:
                duplicate = key
            seen.add(key)
        found.append(duplicate)  # the top-level object is the last one closed
        return dict(items)

    json.loads(raw, object_pairs_hook=pairs)
    return found[-1] if found else None


def refuse_duplicate_keys(raw: bytes) -> None:
    """InvalidRequest if a checked top-level field appears twice in the body.

    Refused rather than re-serialised: the check costs a few memchr scans on the hot path (the
    slow parse runs only when a checked name occurs twice anywhere, e.g. a tool's schema with
    a "model" property), the client's bytes go on untouched, and a client sending one field
    twice learns it instead of having one of its values silently dropped.
    """
    model, stream, maxima = _CHECKED_KEYS
    if raw.count(model) > 1 or raw.count(stream) > 1 or raw.count(maxima) > 1:
        duplicate = _top_level_duplicate(raw)
        if duplicate is not None:
            raise InvalidRequest(
                f"The request body has the field '{duplicate}' more than once.",
                code="duplicate_field",
                param=duplicate,
            )


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or InvalidRequest."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(
            f"We could not parse the JSON body of your request: {exc}", code="invalid_json"
        ) from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    refuse_duplicate_keys(raw)
    return body


def check_stream_flag(body: dict[str, Any]) -> bool:
    """The body's ``stream`` flag (default false), or InvalidRequest if it is not a boolean."""
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise InvalidRequest(
            "Invalid type for 'stream': expected a boolean.", code="invalid_type", param="stream"
        )
    return stream


def requested_model(body: dict[str, Any], policy: AiProxyPolicy) -> str | None:
    """The client's model after the route's aliases, checked against its allow list."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        model = None
    elif policy.model_aliases:
        model = policy.model_aliases.get(model, model)
    if policy.model_allow_list and model not in policy.model_allow_list:
        allowed = ", ".join(sorted(policy.model_allow_list))
        if model is None:
            raise InvalidRequest(
                f"Missing required parameter: 'model' (this route serves: {allowed}).",
                code="missing_required_parameter",
                param="model",
            )
        raise InvalidRequest(
            f"The model '{body.get('model')}' is not available on this route "
            f"(it serves: {allowed}).",
            code="model_not_found",
            param="model",
        )
    return model


def resolve_model(body: dict[str, Any], policy: AiProxyPolicy) -> tuple[str, bool]:
    """Apply the route's model policy to ``body``; return the model and whether it changed.

    Aliases first, then the allow list, then the route's fixed model (if any) replaces the
    client's choice.
    """
    requested = requested_model(body, policy)
    model = policy.model or requested
    if not model:
        raise InvalidRequest(
            "Missing required parameter: 'model'.", code="missing_required_parameter", param="model"
        )
    if body.get("model") != model:
        body["model"] = model
        return model, True
    return model, False


# Providers whose streams always end with the usage (on the last chunk, with its choices): the
# gateway adds no stream_options, which their APIs do not define.
_USAGE_ALWAYS_STREAMED = frozenset({"mistral"})


def prepare_chat_request(raw: bytes, policy: AiProxyPolicy) -> ChatRequest:
    """Validate a client's OpenAI-format body and apply the route's model, stream usage and auth.

    Chat, legacy completions and embeddings bodies are accepted, per the route type. The
    client's bytes are forwarded untouched unless something had to change.
    """
    body = parse_json_object(raw)
    field, types, expected, may_stream = _REQUIRED_FIELD.get(
        policy.route_type, _REQUIRED_FIELD["llm/v1/chat"]
    )
    value = body.get(field)
    if value is None:
        raise InvalidRequest(
            f"Missing required parameter: '{field}'.",
            code="missing_required_parameter",
            param=field,
        )
    if not isinstance(value, types):
        raise InvalidRequest(
            f"Invalid type for '{field}': expected {expected}.", code="invalid_type", param=field
        )
    stream = check_stream_flag(body) if may_stream else False
    requested = requested_model(body, policy)
    model, changed = resolve_model(body, policy)
    hide_usage_chunk = False
    responses = policy.route_type == _RESPONSES
    if responses:
        # The Responses API always reports usage (in response.completed); nothing to ask for.
        if policy.max_tokens and "max_output_tokens" not in body:
            body["max_output_tokens"] = policy.max_tokens
            changed = True
    elif stream and policy.target.provider not in _USAGE_ALWAYS_STREAMED:
        options = body.get("stream_options")
        if options is not None and not isinstance(options, dict):
            raise InvalidRequest(
                "Invalid type for 'stream_options': expected an object.",
                code="invalid_type",
                param="stream_options",
            )
        if not (isinstance(options, dict) and options.get("include_usage") is True):
            # Usage in a stream comes only on request; ask for it and keep it from the client.
            body["stream_options"] = {**(options or {}), "include_usage": True}
            hide_usage_chunk = changed = True
    if (
        may_stream
        and not responses
        and policy.max_tokens
        and "max_tokens" not in body
        and "max_completion_tokens" not in body
    ):
        body["max_tokens"] = policy.max_tokens
        changed = True
    for name, param_value in policy.target.auth_body_params:
        if policy.target.allow_override and body.get(name) is not None:
            continue  # Kong's allow_override: the client's own value is kept
        body[name] = param_value
        changed = True
    return ChatRequest(
        body=orjson.dumps(body) if changed else raw,
        model=model,
        stream=stream,
        hide_usage_chunk=hide_usage_chunk,
        document=body,
        requested_model=requested,
    )


def _detail(usage: dict[str, Any], details_key: str, key: str) -> int | None:
    details = usage.get(details_key)
    return count(details.get(key)) if isinstance(details, dict) else None


_COUNT_KEYS = ("prompt_tokens", "completion_tokens", "input_tokens", "output_tokens")
_DETAILS = (
    "prompt_tokens_details",
    "completion_tokens_details",
    "input_tokens_details",
    "output_tokens_details",
)
_DETAIL_KEYS = ("cached_tokens", "reasoning_tokens")


def usage_from_openai(usage: Any) -> TokenUsage | None:
    """The disjoint token kinds of an OpenAI ``usage`` object.

    Chat and legacy completions and embeddings report ``prompt_tokens``/``completion_tokens``
    (cache reads in ``prompt_tokens_details.cached_tokens``, reasoning in
    ``completion_tokens_details.reasoning_tokens``, both included in the totals); the Responses
    API reports ``input_tokens``/``output_tokens`` with ``input_tokens_details`` and
    ``output_tokens_details``. The details are subtracted so each token is counted once.
    DeepSeek reports its cache reads as ``prompt_cache_hit_tokens`` (inside ``prompt_tokens``,
    beside ``prompt_cache_miss_tokens``) instead of ``prompt_tokens_details``.
    """
    if not isinstance(usage, dict):
        return None
    if malformed(usage, _COUNT_KEYS):
        return None  # not trusted: estimated and marked instead (usage.tokens.malformed)
    for key in _DETAILS:  # a loop, not any(<generator>): this runs on every response
        details = usage.get(key)
        if isinstance(details, dict) and malformed(details, _DETAIL_KEYS):
            return None
    if "prompt_tokens" in usage or "completion_tokens" in usage:
        prompt = count(usage.get("prompt_tokens"))
        completion = count(usage.get("completion_tokens"))
        cached = _detail(usage, "prompt_tokens_details", "cached_tokens")
        if cached is None:
            # DeepSeek: prompt_tokens = prompt_cache_hit_tokens + prompt_cache_miss_tokens.
            cached = count(usage.get("prompt_cache_hit_tokens"))
        reasoning = _detail(usage, "completion_tokens_details", "reasoning_tokens")
    elif "input_tokens" in usage or "output_tokens" in usage:
        prompt = count(usage.get("input_tokens"))
        completion = count(usage.get("output_tokens"))
        cached = _detail(usage, "input_tokens_details", "cached_tokens")
        reasoning = _detail(usage, "output_tokens_details", "reasoning_tokens")
    else:
        return None
    if prompt is None and completion is None:
        return None
    # A detail larger than its total is malformed; capping keeps the sum equal to the totals.
    cached = min(cached, prompt) if cached is not None and prompt is not None else cached
    if reasoning is not None and completion is not None:
        reasoning = min(reasoning, completion)
    return TokenUsage(
        input_tokens=minus(prompt, cached),
        output_tokens=minus(completion, reasoning),
        cached_input_tokens=cached,
        reasoning_tokens=reasoning,
    )


def _usage_of(document: Any) -> TokenUsage | None:
    if not isinstance(document, dict):
        return None
    return usage_from_openai(document.get("usage"))


def _model_of(document: Any) -> str | None:
    if isinstance(document, dict):
        model = document.get("model")
        if isinstance(model, str) and model:
            return model
    return None


def read_body_usage(body: bytes) -> tuple[TokenUsage | None, str | None]:
    """Return the usage and model a whole (non-streamed) response body reports."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None, None
    return _usage_of(document), _model_of(document)


def _has_usage_object(data: bytes) -> bool:
    """Cheap pre-check so only the usage chunk of a stream is parsed, not every delta."""
    index = data.find(b'"usage"')
    if index == -1:
        return False
    rest = data[index + 7 :].lstrip()
    return rest.startswith(b":") and rest[1:].lstrip().startswith(b"{")


# OpenAI error types (and the ``code`` of a quota error) -> their HTTP statuses, for an error
# a provider reports inside a stream that began with 200.
_ERROR_TYPE_STATUSES: Final = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "rate_limit_error": 429,
    "insufficient_quota": 429,
    "rate_limit_exceeded": 429,
    "tokens": 429,
    "requests": 429,
    "server_error": 500,
    "api_error": 500,
    "overloaded_error": 529,
    "service_unavailable": 503,
    "invalid_prompt": 400,
}


def error_code_status(code: Any) -> int:
    """The HTTP status of an OpenAI error ``type`` or ``code`` (500 for others)."""
    if isinstance(code, int) and not isinstance(code, bool) and 400 <= code <= 599:
        return code
    return _ERROR_TYPE_STATUSES.get(code, 500) if isinstance(code, str) else 500


def responses_error_status(data: bytes) -> int | None:
    """The HTTP status of a Responses API stream event that reports a failure (None for any
    other): ``error`` (its ``code``) or ``response.failed`` (its ``response.error.code``)."""
    if b'"error"' not in data and b'"response.failed"' not in data:
        return None
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    kind = document.get("type") if isinstance(document, dict) else None
    if kind == "error":
        return error_code_status(document.get("code"))
    if kind == "response.failed":
        response = document.get("response")
        error = response.get("error") if isinstance(response, dict) else None
        return error_code_status(error.get("code") if isinstance(error, dict) else None)
    return None


def stream_error_of(data: bytes) -> int | None:
    """The HTTP status of an SSE ``data`` that is an error object (None if it is not one).

    OpenAI ends a stream that fails after its 200 with ``data: {"error": {"message", "type",
    "param", "code"}}`` (the openai SDK raises ``APIError`` on it); OpenAI-compatible servers
    send the same, some with a numeric ``code`` (vLLM, Gemini's OpenAI endpoint) or a bare
    string error (``{"error": "..."}``).
    """
    if b'"error"' not in data:
        return None
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return error_document_status(document)


def error_document_status(document: Any) -> int | None:
    """The HTTP status of a parsed stream event that is an error object, else None: its
    numeric ``code`` if it is one, else its type's (or code's) status, else 500."""
    error = document.get("error") if isinstance(document, dict) else None
    if not error or not isinstance(error, (dict, str)):
        return None
    if isinstance(error, str):
        return 500
    code = error.get("code")
    if isinstance(code, int) and not isinstance(code, bool) and 400 <= code <= 599:
        return code
    for key in (error.get("type"), code):
        if isinstance(key, str) and key in _ERROR_TYPE_STATUSES:
            return _ERROR_TYPE_STATUSES[key]
    return 500


class ChatStreamScanner:
    """Reads usage and model from a chat-completions SSE stream, event by event.

    Data of events is kept (by reference, not copied) until usage shows up, so a stream that
    ends without usage can still be estimated from its text; see ``produced_text``. An error
    event inside the stream (``data: {"error": {...}}``) is relayed as it came; it is the last
    event a failed stream has before ``[DONE]``, so ``error_status`` reads it from the events
    kept, once, when the stream is over (no cost on the deltas of a stream that succeeds).
    """

    __slots__ = ("_hide_usage_chunk", "_pending", "model", "usage")

    def __init__(self, *, hide_usage_chunk: bool) -> None:
        self._hide_usage_chunk = hide_usage_chunk
        self.usage: TokenUsage | None = None
        self.model: str | None = None
        self._pending: list[bytes] = []

    @property
    def error_status(self) -> int | None:
        """The status of the error event the stream ended with (None if it did not): only a
        stream without usage has one (usage comes last, after the content)."""
        return stream_error_of(self._pending[-1]) if self._pending else None

    def produced_text(self) -> str:
        """The text of the deltas seen (content, tool arguments, legacy ``text``)."""
        parts: list[str] = []
        for data in self._pending:
            try:
                chunk = orjson.loads(data)
            except orjson.JSONDecodeError:
                continue
            choices = chunk.get("choices") if isinstance(chunk, dict) else None
            for choice in choices if isinstance(choices, list) else ():
                if not isinstance(choice, dict):
                    continue
                delta = choice.get("delta")
                if isinstance(choice.get("text"), str):
                    parts.append(choice["text"])
                if not isinstance(delta, dict):
                    continue
                for key in ("content", "reasoning_content", "refusal"):
                    if isinstance(delta.get(key), str):
                        parts.append(delta[key])
                for call in delta.get("tool_calls") or ():
                    function = call.get("function") if isinstance(call, dict) else None
                    if isinstance(function, dict) and isinstance(function.get("arguments"), str):
                        parts.append(function["arguments"])
        return "".join(parts)

    def accept(self, event: bytes) -> bool:
        """Inspect one whole event; return False if the client must not see it."""
        data = event_data(event)
        if data is None or data == b"[DONE]":
            return True
        if self.usage is None:
            self._pending.append(data)
        has_usage = _has_usage_object(data)
        if self.model is None or has_usage:
            try:
                chunk = orjson.loads(data)
            except orjson.JSONDecodeError:
                return True
            self.model = self.model or _model_of(chunk)
            if has_usage:
                self.usage = _usage_of(chunk)
                if self.usage is not None:
                    self._pending = []
                # else: malformed usage, treated as absent: the text stays for an estimate
                if self._hide_usage_chunk and chunk.get("choices") == []:
                    return False
        return True
