"""Request and response bodies in the JSON log, for routes with Kong's ``logging.log_payloads``.

Off by default; the compiler sets ``AiProxyPolicy.log_payloads`` once per route (per target on
ai-proxy-advanced), so a route without it pays one attribute check per request. When on, one
INFO line per answered request goes to the ``meterline.payloads`` logger, with the fields

- ``payload.request``: the client's body as it arrived, with secrets redacted;
- ``payload.request_headers``: its headers, credentials redacted; ``payload.query`` likewise;
- ``payload.response``: the body the client got, or for a stream its events as sent
  (``payload.response_kind`` says ``body`` or ``stream``), and for a stream
  ``payload.response_text``, the text its events assembled (OpenAI, Anthropic, Gemini,
  Cohere, Ollama and Responses API events);
- ``payload.*_truncated``: true when a body was cut at ``MAX_PAYLOAD_BYTES``.

Redacted (the value becomes ``"[REDACTED]"``): the headers ``Authorization``,
``Proxy-Authorization``, ``x-api-key``, ``api-key``, ``x-goog-api-key``, ``Cookie`` and the
route's key-auth header names; the query parameter ``key`` and the route's key names; and any
JSON member whose name looks like a credential (``api_key``, ``apiKey``, ``key``,
``access_token``, ``secret``, ``password``, ``authorization``...) at any depth of the body.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, Final
from urllib.parse import parse_qsl, urlencode

import orjson

logger = logging.getLogger("meterline.payloads")

MAX_PAYLOAD_BYTES: Final = 64 * 1024
REDACTED: Final = "[REDACTED]"
_SECRET_HEADERS: Final = frozenset(
    {
        b"authorization",
        b"proxy-authorization",
        b"x-api-key",
        b"api-key",
        b"x-goog-api-key",
        b"cookie",
        b"set-cookie",
    }
)
_SECRET_QUERY: Final = frozenset({"key", "api_key", "apikey", "api-key", "access_token", "token"})
_SECRET_MEMBERS: Final = frozenset(
    {
        "apikey",
        "api_key",
        "api-key",
        "key",
        "x-api-key",
        "authorization",
        "access_token",
        "accesstoken",
        "refresh_token",
        "id_token",
        "secret",
        "client_secret",
        "password",
        "token",
        "aws_secret_access_key",
        "aws_session_token",
    }
)


def _redact_document(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            key: REDACTED
            if isinstance(key, str) and key.lower() in _SECRET_MEMBERS
            else _redact_document(inner)
            for key, inner in value.items()
        }
    if isinstance(value, list):
        return [_redact_document(inner) for inner in value]
    return value


def _capped(text: str) -> tuple[str, bool]:
    """``text`` cut to MAX_PAYLOAD_BYTES of UTF-8 (the cut marked), and whether it was cut."""
    data = text.encode()
    if len(data) <= MAX_PAYLOAD_BYTES:
        return text, False
    kept = data[:MAX_PAYLOAD_BYTES].decode(errors="ignore")
    return f"{kept}...[truncated {len(data) - MAX_PAYLOAD_BYTES} bytes]", True


def redact_body(body: bytes) -> str:
    """A JSON body with credential members redacted (re-encoded); anything else as text. A body
    beyond four times the cap is not parsed: only its capped head is kept, as text."""
    if len(body) <= 4 * MAX_PAYLOAD_BYTES:
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            pass
        else:
            return orjson.dumps(_redact_document(document)).decode()
    return body[: MAX_PAYLOAD_BYTES + 1024].decode(errors="replace")


def redact_headers(
    headers: Iterable[tuple[bytes, bytes]], secret_names: Iterable[bytes] = ()
) -> dict[str, str]:
    secret = _SECRET_HEADERS | {name.lower() for name in secret_names}
    return {
        name.decode("latin-1"): REDACTED if name.lower() in secret else value.decode("latin-1")
        for name, value in headers
    }


def redact_query(query: bytes, secret_names: Iterable[str] = ()) -> str:
    if not query:
        return ""
    secret = _SECRET_QUERY | {name.lower() for name in secret_names}
    pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
    return urlencode([(k, REDACTED if k.lower() in secret else v) for k, v in pairs])


class PayloadTap:
    """A stream relay that keeps what it gives the client, up to MAX_PAYLOAD_BYTES (and counts
    the rest); everything else is the wrapped relay's."""

    __slots__ = ("_relay", "dropped", "kept")

    def __init__(self, relay: Any) -> None:
        self._relay = relay
        self.kept = bytearray()
        self.dropped = 0

    @property
    def usage(self) -> Any:
        return self._relay.usage

    @property
    def model(self) -> Any:
        return self._relay.model

    def feed(self, event: bytes) -> bytes:
        out: bytes = self._relay.feed(event)
        room = MAX_PAYLOAD_BYTES - len(self.kept)
        if len(out) <= room:
            self.kept += out
        else:
            self.kept += out[: max(room, 0)]
            self.dropped += len(out) - max(room, 0)
        return out

    def produced_text(self) -> str:
        text: str = self._relay.produced_text()
        return text

    def __getattr__(self, name: str) -> Any:
        return getattr(self._relay, name)


def _event_text(document: Any, parts: list[str]) -> None:
    """The generated text one stream event carries, in any of the client formats."""
    if not isinstance(document, dict):
        return
    for choice in document.get("choices") or ():  # OpenAI chat / completions
        if isinstance(choice, dict):
            delta = choice.get("delta")
            if isinstance(delta, dict) and isinstance(delta.get("content"), str):
                parts.append(delta["content"])
            elif isinstance(choice.get("text"), str):
                parts.append(choice["text"])
    delta = document.get("delta")
    if isinstance(delta, str) and document.get("type") == "response.output_text.delta":
        parts.append(delta)  # OpenAI Responses
    elif isinstance(delta, dict):
        if isinstance(delta.get("text"), str):  # Anthropic
            parts.append(delta["text"])
        message = delta.get("message")  # Cohere v2
        if isinstance(message, dict):
            content = message.get("content")
            if isinstance(content, dict) and isinstance(content.get("text"), str):
                parts.append(content["text"])
    _candidates_text(document.get("candidates") or (), parts)  # Gemini
    message = document.get("message")  # Ollama
    if isinstance(message, dict) and isinstance(message.get("content"), str):
        parts.append(message["content"])


def _candidates_text(candidates: Any, parts: list[str]) -> None:
    """The text parts of a Gemini event's candidates."""
    for candidate in candidates:
        if isinstance(candidate, dict):
            content = candidate.get("content")
            for part in (content or {}).get("parts") or () if isinstance(content, dict) else ():
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    parts.append(part["text"])


def stream_text(events: bytes) -> str:
    """The text a stream's events (SSE ``data:`` lines or NDJSON) assembled."""
    parts: list[str] = []
    for line in events.splitlines():
        line = line.strip()
        if line.startswith(b"data:"):
            line = line[5:].strip()
        if line.startswith(b"{"):
            try:
                _event_text(orjson.loads(line), parts)
            except orjson.JSONDecodeError:
                continue
    return "".join(parts)


def log_payloads(
    *,
    route: str,
    status: int,
    request: bytes,
    headers: Iterable[tuple[bytes, bytes]],
    query: bytes,
    response: bytes,
    response_text: str | None = None,
    response_dropped: int = 0,
    secret_headers: Iterable[bytes] = (),
    secret_query: Iterable[str] = (),
) -> None:
    """One log line with a request's and its response's payloads (redacted, capped).
    ``response_text``: a stream's assembled text (None for a whole body)."""
    request_text, request_cut = _capped(redact_body(request))
    response_body, response_cut = _capped(redact_body(response))
    if response_dropped and not response_cut:
        response_body += f"...[truncated {response_dropped} bytes]"
        response_cut = True
    extra: dict[str, Any] = {
        "route": route,
        "status": status,
        "payload.request": request_text,
        "payload.request_truncated": request_cut,
        "payload.request_headers": redact_headers(headers, secret_headers),
        "payload.query": redact_query(query, secret_query),
        "payload.response": response_body,
        "payload.response_truncated": response_cut,
        "payload.response_kind": "body" if response_text is None else "stream",
    }
    if response_text is not None:
        extra["payload.response_text"], extra["payload.response_text_truncated"] = _capped(
            response_text
        )
    logger.info("payloads of a request on route %s", route, extra=extra)
