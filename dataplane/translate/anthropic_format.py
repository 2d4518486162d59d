"""Anthropic's Messages API wire format: usage in bodies and streams, errors.

Usage lives in ``usage`` of a message: ``input_tokens`` (prompt tokens not read from or written
to a cache), ``cache_read_input_tokens``, ``cache_creation_input_tokens`` and ``output_tokens``
(thinking included: Anthropic does not report reasoning tokens apart). In a stream,
``message_start`` carries the message with its input and cache counts, and each
``message_delta`` carries cumulative counts (always ``output_tokens``; newer API versions repeat
the input counts too), so the last value of each field wins.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

from dataplane.errors import Rejection
from dataplane.http.sse import event_data
from dataplane.usage.tokens import TokenUsage, count, malformed

DEFAULT_ANTHROPIC_VERSION: Final = "2023-06-01"
# Anthropic requires max_tokens; used when neither the client nor the route sets one.
DEFAULT_MAX_TOKENS: Final = 1024

# Gateway error types (OpenAI vocabulary) -> Anthropic's error types.
_ERROR_TYPES: Final = {
    "invalid_request_error": "invalid_request_error",
    "api_error": "api_error",
    "authentication_error": "authentication_error",
    "not_found_error": "not_found_error",
    "request_too_large": "request_too_large",
    "timeout_error": "timeout_error",
    "rate_limit_error": "rate_limit_error",
}


def anthropic_error_body(message: str, *, type: str) -> bytes:
    """Return an Anthropic-shaped error document."""
    return orjson.dumps(
        {
            "type": "error",
            "error": {"type": _ERROR_TYPES.get(type, "api_error"), "message": message},
        }
    )


# A refusal's status -> Anthropic's error type (docs.anthropic.com, "Errors").
_TYPES_BY_STATUS: Final = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}
# Anthropic's error types -> their HTTP statuses (an ``error`` event inside a stream).
_STATUS_BY_TYPE: Final = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


def error_type_of_status(status: int) -> str:
    """Anthropic's error type of an HTTP status (``api_error`` for one it does not name)."""
    return _TYPES_BY_STATUS.get(status, "api_error")


def error_status(error_type: object) -> int:
    """The HTTP status of an Anthropic error type (500 for one it does not document)."""
    return _STATUS_BY_TYPE.get(error_type, 500) if isinstance(error_type, str) else 500


# Meterline's own billing refusals, which Anthropic's API does not have: their type and code
# are kept, so a client can tell an exhausted entitlement from a budget.
_BILLING_CODES: Final = frozenset({"invalid_task_budget"})


def anthropic_rejection_body(rejection: Rejection) -> bytes:
    """A refused request as Anthropic's error document (type from the status)."""
    if rejection.type == "insufficient_quota" or rejection.code in _BILLING_CODES:
        return orjson.dumps(
            {
                "type": "error",
                "error": {
                    # 402 (credits spent) is Anthropic's own billing_error; the code stays.
                    "type": "billing_error" if rejection.status == 402 else rejection.type,
                    "code": rejection.code,
                    "message": rejection.message,
                },
            }
        )
    error_type = _TYPES_BY_STATUS.get(rejection.status, "api_error")
    return orjson.dumps(
        {"type": "error", "error": {"type": error_type, "message": rejection.message}}
    )


_ANTHROPIC_COUNT_KEYS = (
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
)


def usage_from_anthropic(usage: Any) -> TokenUsage | None:
    """The disjoint token kinds of an Anthropic ``usage`` object."""
    if not isinstance(usage, dict) or malformed(usage, _ANTHROPIC_COUNT_KEYS):
        return None  # not trusted: estimated and marked instead (usage.tokens.malformed)
    if all(usage.get(key) is None for key in _ANTHROPIC_COUNT_KEYS):
        return None
    return TokenUsage(
        input_tokens=count(usage.get("input_tokens")),
        output_tokens=count(usage.get("output_tokens")),
        cached_input_tokens=count(usage.get("cache_read_input_tokens")),
        cache_write_tokens=count(usage.get("cache_creation_input_tokens")),
    )


def merge_usage(old: TokenUsage | None, new: TokenUsage | None) -> TokenUsage | None:
    """``new``'s counts where present, ``old``'s elsewhere (stream counts are cumulative)."""
    if old is None or new is None:
        return new or old
    return TokenUsage(
        input_tokens=new.input_tokens if new.input_tokens is not None else old.input_tokens,
        output_tokens=new.output_tokens if new.output_tokens is not None else old.output_tokens,
        cached_input_tokens=(
            new.cached_input_tokens
            if new.cached_input_tokens is not None
            else old.cached_input_tokens
        ),
        reasoning_tokens=None,
        cache_write_tokens=(
            new.cache_write_tokens if new.cache_write_tokens is not None else old.cache_write_tokens
        ),
    )


def read_message_usage(body: bytes) -> tuple[TokenUsage | None, str | None]:
    """Return the usage and model of a whole (non-streamed) Messages response."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None, None
    if not isinstance(document, dict):
        return None, None
    model = document.get("model")
    return usage_from_anthropic(document.get("usage")), model if isinstance(model, str) else None


class MessageStreamScanner:
    """Reads usage and model from a Messages SSE stream, relaying every event unchanged."""

    __slots__ = ("error_status", "model", "settled", "texts", "usage")

    def __init__(self) -> None:
        self.usage: TokenUsage | None = None
        self.model: str | None = None
        # Text produced so far, kept only to estimate a stream that ends without usage.
        self.texts: list[str] = []
        # True once message_delta's usage came: message_start's counts the prompt only.
        self.settled = False
        # The status of an ``error`` event inside the stream (e.g. 529 overloaded_error).
        self.error_status: int | None = None

    def accept(self, event: bytes) -> dict[str, Any] | None:
        """Inspect one whole event; return its parsed data (None if it has no JSON data)."""
        data = event_data(event)
        if data is None:
            return None
        try:
            document = orjson.loads(data)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(document, dict):
            return None
        kind = document.get("type")
        if kind == "content_block_delta":
            delta = document.get("delta")
            if isinstance(delta, dict):
                text = delta.get("text", delta.get("partial_json", delta.get("thinking")))
                if isinstance(text, str):
                    self.texts.append(text)
        elif kind == "message_start":
            message = document.get("message")
            if isinstance(message, dict):
                model = message.get("model")
                if isinstance(model, str) and model:
                    self.model = model
                self.usage = merge_usage(self.usage, usage_from_anthropic(message.get("usage")))
        elif kind == "message_delta":
            self.usage = merge_usage(self.usage, usage_from_anthropic(document.get("usage")))
            self.settled = self.usage is not None
        elif kind == "error":
            error = document.get("error")
            self.error_status = error_status(error.get("type") if isinstance(error, dict) else None)
        return document
