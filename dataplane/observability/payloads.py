"""Request and response bodies in the JSON log, for routes with Kong's ``logging.log_payloads``.

Off by default; the compiler sets ``AiProxyPolicy.log_payloads`` once per route (per target on
ai-proxy-advanced), so a route without it pays one attribute check per request. When on, one
INFO line per answered request goes to the ``meterline.payloads`` logger, with the fields

- ``payload.request``: the client's body as it arrived, with secrets redacted;
- ``payload.request_headers``: its headers, credentials redacted; ``payload.query`` likewise;
- ``payload.response``: the body the client got, or for a stream the text it assembled
  (``payload.response_kind`` says ``body`` or ``stream_text``);
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


def log_payloads(
    *,
    route: str,
    status: int,
    request: bytes,
    headers: Iterable[tuple[bytes, bytes]],
    query: bytes,
    response: bytes | str,
    stream: bool,
    secret_headers: Iterable[bytes] = (),
    secret_query: Iterable[str] = (),
) -> None:
    """One log line with a request's and its response's payloads (redacted, capped)."""
    request_text, request_cut = _capped(redact_body(request))
    if isinstance(response, bytes):
        response_text, response_cut = _capped(redact_body(response))
    else:
        response_text, response_cut = _capped(response)
    logger.info(
        "payloads of a request on route %s",
        route,
        extra={
            "route": route,
            "status": status,
            "payload.request": request_text,
            "payload.request_truncated": request_cut,
            "payload.request_headers": redact_headers(headers, secret_headers),
            "payload.query": redact_query(query, secret_query),
            "payload.response": response_text,
            "payload.response_truncated": response_cut,
            "payload.response_kind": "stream_text" if stream else "body",
        },
    )
