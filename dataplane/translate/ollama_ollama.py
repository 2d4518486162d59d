"""Ollama clients to Ollama (``llm_format: ollama``): ``/api/chat`` relayed unchanged.

A native client (the ``ollama`` Python client with ``host`` at the route) posts to
``<route>/api/chat``; the route's model policy applies to the body's ``model`` and its
``max_tokens`` fills ``options.num_predict`` when the client set none. Streams (Ollama's
default) are NDJSON, relayed line by line; usage comes from the final ``done`` object.
Refusals are Ollama-shaped (``{"error": "..."}``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from dataplane.errors import Rejection
from dataplane.http.ndjson import NDJSON_CONTENT_TYPE
from dataplane.translate.base import Prepared, StreamRelay
from dataplane.translate.ollama_format import (
    OLLAMA_CHAT_PATH,
    OllamaStreamScanner,
    ollama_error,
    parse_line,
    usage_from_ollama,
)
from dataplane.translate.openai_format import (
    InvalidRequest,
    parse_json_object,
    requested_model,
    resolve_model,
)
from dataplane.usage.tokens import TokenUsage

if TYPE_CHECKING:
    from dataplane.config.model import AiProxyPolicy


class OllamaRelay:
    """An Ollama NDJSON stream passed through, its usage read from the ``done`` line."""

    __slots__ = ("scanner",)

    def __init__(self) -> None:
        self.scanner = OllamaStreamScanner()

    @property
    def usage(self) -> TokenUsage | None:
        return self.scanner.usage

    @property
    def model(self) -> str | None:
        return self.scanner.model

    def feed(self, event: bytes) -> bytes:
        self.scanner.accept(event)
        return event

    def produced_text(self) -> str:
        return "".join(self.scanner.texts)

    @property
    def error_status(self) -> int | None:
        return self.scanner.error_status


def check_ollama_body(body: dict[str, Any]) -> bool:
    """Validate an ``/api/chat`` body; return its stream flag (Ollama's default: true)."""
    if not isinstance(body.get("messages"), list):
        raise InvalidRequest("messages must be an array", code="invalid_request", param="messages")
    stream = body.get("stream", True)
    if not isinstance(stream, bool):
        raise InvalidRequest("stream must be a boolean", code="invalid_type", param="stream")
    return stream


class OllamaNativeTranslator:
    """Ollama ``/api/chat`` clients to an Ollama server."""

    def reject(self, rejection: Rejection) -> bytes:
        return ollama_error(rejection.message)

    def prepare(
        self, raw: bytes, policy: AiProxyPolicy, *, subpath: str, query: bytes, method: str
    ) -> Prepared:
        if subpath.rstrip("/") not in ("", OLLAMA_CHAT_PATH):
            raise Rejection(
                404,
                f"This route serves Ollama's {OLLAMA_CHAT_PATH} only.",
                type="invalid_request_error",
                code="not_found",
            )
        body = parse_json_object(raw)
        stream = check_ollama_body(body)
        requested = requested_model(body, policy)
        model, changed = resolve_model(body, policy)
        options = body.get("options")
        if policy.max_tokens and not (isinstance(options, dict) and "num_predict" in options):
            body["options"] = {
                **(options if isinstance(options, dict) else {}),
                "num_predict": policy.max_tokens,
            }
            changed = True
        return Prepared(
            body=orjson.dumps(body) if changed else raw,
            model=model,
            stream=stream,
            url=policy.target.url,
            document=body,
            requested_model=requested,
            upstream_framing="ndjson",
            stream_content_type=NDJSON_CONTENT_TYPE,
        )

    def whole(
        self, body: bytes, status: int, prepared: Prepared
    ) -> tuple[bytes, TokenUsage | None, str | None]:
        if not 200 <= status < 300:
            return body, None, None
        document = parse_line(body)
        model = document.get("model") if isinstance(document, dict) else None
        return body, usage_from_ollama(document), model if isinstance(model, str) else None

    def stream(self, prepared: Prepared) -> StreamRelay:
        return OllamaRelay()
