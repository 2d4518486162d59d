"""Cohere clients to Cohere (``llm_format: cohere``): ``/v2/chat`` relayed unchanged.

A native client (the cohere SDK's ``ClientV2`` with ``base_url`` at the route) posts to
``<route>/v2/chat``; the route's model policy applies to ``model`` and its ``max_tokens`` fills
``max_tokens`` when the client set none. Usage: ``usage.billed_units`` (stream: the
``message-end`` event). Refusals are Cohere-shaped (``{"message": "..."}``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson

from dataplane.errors import Rejection
from dataplane.translate.base import Prepared, StreamRelay
from dataplane.translate.cohere_format import (
    COHERE_CHAT_PATH,
    CohereStreamScanner,
    cohere_error,
    usage_from_cohere,
)
from dataplane.translate.openai_format import (
    InvalidRequest,
    check_stream_flag,
    parse_json_object,
    requested_model,
    resolve_model,
)
from dataplane.usage.tokens import TokenUsage

if TYPE_CHECKING:
    from dataplane.config.model import AiProxyPolicy


class _CohereRelay:
    __slots__ = ("scanner",)

    def __init__(self) -> None:
        self.scanner = CohereStreamScanner()

    @property
    def usage(self) -> TokenUsage | None:
        return self.scanner.usage

    @property
    def model(self) -> str | None:
        return None  # Cohere's answers do not name the model

    def feed(self, event: bytes) -> bytes:
        self.scanner.accept(event)
        return event

    def produced_text(self) -> str:
        return "".join(self.scanner.texts)


class CohereNativeTranslator:
    """Cohere v2 chat clients to Cohere."""

    def reject(self, rejection: Rejection) -> bytes:
        return cohere_error(rejection.message)

    def prepare(
        self, raw: bytes, policy: AiProxyPolicy, *, subpath: str, query: bytes, method: str
    ) -> Prepared:
        if subpath.rstrip("/") not in ("", COHERE_CHAT_PATH):
            raise Rejection(
                404,
                f"This route serves Cohere's {COHERE_CHAT_PATH} only.",
                type="invalid_request_error",
                code="not_found",
            )
        body = parse_json_object(raw)
        if not isinstance(body.get("messages"), list):
            raise InvalidRequest(
                "invalid request: messages must be a list", code="invalid_request", param="messages"
            )
        stream = check_stream_flag(body)
        requested = requested_model(body, policy)
        model, changed = resolve_model(body, policy)
        if policy.max_tokens and "max_tokens" not in body:
            body["max_tokens"] = policy.max_tokens
            changed = True
        return Prepared(
            body=orjson.dumps(body) if changed else raw,
            model=model,
            stream=stream,
            url=policy.target.url,
            document=body,
            requested_model=requested,
        )

    def whole(
        self, body: bytes, status: int, prepared: Prepared
    ) -> tuple[bytes, TokenUsage | None, str | None]:
        if not 200 <= status < 300:
            return body, None, None
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            return body, None, None
        usage = usage_from_cohere(document.get("usage")) if isinstance(document, dict) else None
        return body, usage, None

    def stream(self, prepared: Prepared) -> StreamRelay:
        return _CohereRelay()
