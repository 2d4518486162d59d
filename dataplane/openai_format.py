"""OpenAI's chat-completions wire format: request rewriting, usage in bodies and streams, errors.

Token counters keep "absent" (None) apart from zero: a provider that reports no usage is not
the same as one that reports 0 tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from dataplane.runtime import AiProxyPolicy
from dataplane.sse import event_data


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """Token counts a provider reported; None where it reported nothing."""

    input_tokens: int | None
    output_tokens: int | None


class InvalidRequest(Exception):
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


def error_body(message: str, *, type: str, code: str | None, param: str | None = None) -> bytes:
    """Return an OpenAI-shaped error document."""
    return orjson.dumps({"error": {"message": message, "type": type, "param": param, "code": code}})


def prepare_chat_request(raw: bytes, policy: AiProxyPolicy) -> ChatRequest:
    """Validate a client's chat body and apply the route's model, stream usage and auth.

    The client's bytes are forwarded untouched unless something had to change.
    """
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(
            f"We could not parse the JSON body of your request: {exc}", code="invalid_json"
        ) from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    messages = body.get("messages")
    if messages is None:
        raise InvalidRequest(
            "Missing required parameter: 'messages'.",
            code="missing_required_parameter",
            param="messages",
        )
    if not isinstance(messages, list):
        raise InvalidRequest(
            "Invalid type for 'messages': expected an array.", code="invalid_type", param="messages"
        )
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise InvalidRequest(
            "Invalid type for 'stream': expected a boolean.", code="invalid_type", param="stream"
        )

    changed = False
    if policy.model and body.get("model") != policy.model:
        body["model"] = policy.model
        changed = True
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest(
            "Missing required parameter: 'model'.", code="missing_required_parameter", param="model"
        )
    hide_usage_chunk = False
    if stream:
        options = body.get("stream_options")
        if not (isinstance(options, dict) and options.get("include_usage") is True):
            # Usage in a stream comes only on request; ask for it and keep it from the client.
            body["stream_options"] = {**(options or {}), "include_usage": True}
            hide_usage_chunk = changed = True
    if policy.max_tokens and "max_tokens" not in body and "max_completion_tokens" not in body:
        body["max_tokens"] = policy.max_tokens
        changed = True
    for name, value in policy.target.auth_body_params:
        body[name] = value
        changed = True
    return ChatRequest(
        body=orjson.dumps(body) if changed else raw,
        model=model,
        stream=stream,
        hide_usage_chunk=hide_usage_chunk,
    )


def _usage_of(document: Any) -> TokenUsage | None:
    if not isinstance(document, dict):
        return None
    usage = document.get("usage")
    if not isinstance(usage, dict):
        return None
    prompt = usage.get("prompt_tokens")
    completion = usage.get("completion_tokens")
    return TokenUsage(
        input_tokens=prompt if isinstance(prompt, int) else None,
        output_tokens=completion if isinstance(completion, int) else None,
    )


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


class ChatStreamScanner:
    """Reads usage and model from a chat-completions SSE stream, event by event."""

    __slots__ = ("_hide_usage_chunk", "model", "usage")

    def __init__(self, *, hide_usage_chunk: bool) -> None:
        self._hide_usage_chunk = hide_usage_chunk
        self.usage: TokenUsage | None = None
        self.model: str | None = None

    def accept(self, event: bytes) -> bool:
        """Inspect one whole event; return False if the client must not see it."""
        data = event_data(event)
        if data is None or data == b"[DONE]":
            return True
        has_usage = _has_usage_object(data)
        if self.model is None or has_usage:
            try:
                chunk = orjson.loads(data)
            except orjson.JSONDecodeError:
                return True
            self.model = self.model or _model_of(chunk)
            if has_usage:
                self.usage = _usage_of(chunk)
                if self._hide_usage_chunk and chunk.get("choices") == []:
                    return False
        return True
