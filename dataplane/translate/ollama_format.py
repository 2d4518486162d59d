"""Ollama's native chat API (``POST /api/chat``): usage, errors and its NDJSON stream.

A whole answer is one JSON object; a stream (Ollama's default: ``stream`` absent means true) is
one JSON object per line, the last with ``"done": true`` and the counts: ``prompt_eval_count``
(prompt tokens evaluated) and ``eval_count`` (tokens generated, thinking included). Errors are
``{"error": "message"}`` with the HTTP status, or such a line inside a stream that began with
200 (Ollama's docs/api/errors: "the status code of the response will not be changed"); the
ollama client raises ``ResponseError`` on that line. Such a failure is the model runner's, so
it is recorded as 500 (``STREAM_ERROR_STATUS``).
"""

from __future__ import annotations

from typing import Any

import orjson

from dataplane.config.providers import OLLAMA_CHAT_PATH
from dataplane.usage.tokens import TokenUsage, count

__all__ = [
    "OLLAMA_CHAT_PATH",
    "STREAM_ERROR_STATUS",
    "OllamaStreamScanner",
    "ollama_error",
    "usage_from_ollama",
]

# The status an error line inside a stream is recorded with (Ollama sends none with it).
STREAM_ERROR_STATUS = 500


def usage_from_ollama(document: Any) -> TokenUsage | None:
    """The usage of a final (``done``) Ollama object: prompt = input, generated = output.

    Ollama leaves ``prompt_eval_count`` out when its prompt cache covered the whole prompt:
    then no prompt token was evaluated (0), as it reports.
    """
    if not isinstance(document, dict) or document.get("done") is not True:
        return None
    prompt = count(document.get("prompt_eval_count"))
    generated = count(document.get("eval_count"))
    if prompt is None and generated is None:
        return None
    return TokenUsage(input_tokens=prompt or 0, output_tokens=generated or 0)


def ollama_error(message: str) -> bytes:
    """An Ollama-shaped error document."""
    return orjson.dumps({"error": message})


def error_message(document: Any) -> str | None:
    """The message of an Ollama error object (None if ``document`` is not one)."""
    if isinstance(document, dict) and "error" in document and "message" not in document:
        error = document["error"]
        return error if isinstance(error, str) else orjson.dumps(error).decode()
    return None


def parse_line(line: bytes) -> Any:
    """One NDJSON line as JSON (None if it is blank or not JSON)."""
    line = line.strip()
    if not line:
        return None
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        return None


class OllamaStreamScanner:
    """Reads usage, model and text from the lines of an Ollama chat stream, and whether an
    error line came (``error_status``)."""

    __slots__ = ("error_status", "model", "texts", "usage")

    def __init__(self) -> None:
        self.usage: TokenUsage | None = None
        self.model: str | None = None
        self.texts: list[str] = []
        self.error_status: int | None = None

    def accept(self, line: bytes) -> Any:
        """Read one line; return its JSON document (None if it is not one)."""
        document = parse_line(line)
        if not isinstance(document, dict):
            return document
        if "error" in document and error_message(document) is not None:
            self.error_status = STREAM_ERROR_STATUS
            return document
        model = document.get("model")
        if isinstance(model, str) and model:
            self.model = model
        message = document.get("message")
        if isinstance(message, dict):
            content = message.get("content")
            if isinstance(content, str) and content:
                self.texts.append(content)
        usage = usage_from_ollama(document)
        if usage is not None:
            self.usage = usage
        return document
