"""Cohere's v2 chat API (``POST /v2/chat``): usage, errors and its stream of typed events.

Usage is billed as Cohere bills it, and as Kong counts it: ``usage.billed_units``
(``input_tokens`` -> input, ``output_tokens`` -> output). ``usage.tokens`` also counts the
prompt template Cohere adds, which it does not charge for, so it is not used. A stream's
usage comes in its last event, ``message-end`` (``delta.usage``). Errors are
``{"id", "message"}`` with the HTTP status.
"""

from __future__ import annotations

from typing import Any

import orjson

from dataplane.http.sse import event_data
from dataplane.usage.tokens import TokenUsage, count

COHERE_CHAT_PATH = "/v2/chat"


def usage_from_cohere(usage: Any) -> TokenUsage | None:
    """Meterline's kinds of a Cohere ``usage`` object: its billed units."""
    billed = usage.get("billed_units") if isinstance(usage, dict) else None
    if not isinstance(billed, dict):
        return None
    prompt, output = count(billed.get("input_tokens")), count(billed.get("output_tokens"))
    if prompt is None and output is None:
        return None
    return TokenUsage(input_tokens=prompt or 0, output_tokens=output or 0)


def cohere_error(message: str) -> bytes:
    return orjson.dumps({"message": message})


def error_message(body: bytes) -> str | None:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    message = document.get("message") if isinstance(document, dict) else None
    return message if isinstance(message, str) else None


class CohereStreamScanner:
    """Reads usage and text from the events of a Cohere v2 chat stream."""

    __slots__ = ("texts", "usage")

    def __init__(self) -> None:
        self.usage: TokenUsage | None = None
        self.texts: list[str] = []

    def accept(self, event: bytes) -> dict[str, Any] | None:
        """Read one SSE event; return its JSON document (None if it has none)."""
        data = event_data(event)
        if not data:
            return None
        try:
            document = orjson.loads(data)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(document, dict):
            return None
        kind = document.get("type")
        delta = document.get("delta") if isinstance(document.get("delta"), dict) else {}
        assert isinstance(delta, dict)
        if kind == "content-delta":
            message = delta.get("message") if isinstance(delta.get("message"), dict) else {}
            content = message.get("content") if isinstance(message, dict) else None
            text = content.get("text") if isinstance(content, dict) else None
            if isinstance(text, str):
                self.texts.append(text)
        elif kind == "message-end":
            usage = usage_from_cohere(delta.get("usage"))
            if usage is not None:
                self.usage = usage
        return document
