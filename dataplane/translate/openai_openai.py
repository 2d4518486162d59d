"""OpenAI clients to OpenAI-format providers (openai, azure, any OpenAI-compatible URL).

Chat completions, completions and embeddings relayed in OpenAI's format with usage read from the
body or the stream's usage chunk; the Responses API with usage from ``response.completed``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson

from dataplane.errors import Rejection
from dataplane.http.sse import event_data
from dataplane.translate.openai_format import (
    ChatStreamScanner,
    prepare_chat_request,
    read_body_usage,
    rejection_body,
    responses_error_status,
    usage_from_openai,
)
from dataplane.usage.tokens import TokenUsage

if TYPE_CHECKING:
    from dataplane.config.model import AiProxyPolicy


from dataplane.translate.base import Prepared, StreamRelay


class _OpenAIRelay:
    __slots__ = ("scanner",)

    def __init__(self, *, hide_usage_chunk: bool) -> None:
        self.scanner = ChatStreamScanner(hide_usage_chunk=hide_usage_chunk)

    @property
    def usage(self) -> TokenUsage | None:
        return self.scanner.usage

    @property
    def model(self) -> str | None:
        return self.scanner.model

    def feed(self, event: bytes) -> bytes:
        return event if self.scanner.accept(event) else b""

    def produced_text(self) -> str:
        return self.scanner.produced_text()

    @property
    def error_status(self) -> int | None:
        return self.scanner.error_status


class OpenAITranslator:
    """OpenAI-format clients to OpenAI-format providers (openai, azure, openai_compatible)."""

    def reject(self, rejection: Rejection) -> bytes:
        return rejection_body(rejection)

    def prepare(
        self, raw: bytes, policy: AiProxyPolicy, *, subpath: str, query: bytes, method: str
    ) -> Prepared:
        chat = prepare_chat_request(raw, policy)
        return Prepared(
            body=chat.body,
            model=chat.model,
            stream=chat.stream,
            url=policy.target.url,
            document=chat.document,
            hide_usage_chunk=chat.hide_usage_chunk,
            requested_model=chat.requested_model,
        )

    def whole(
        self, body: bytes, status: int, prepared: Prepared
    ) -> tuple[bytes, TokenUsage | None, str | None]:
        usage, model = read_body_usage(body)
        return body, usage, model

    def stream(self, prepared: Prepared) -> StreamRelay:
        return _OpenAIRelay(hide_usage_chunk=prepared.hide_usage_chunk)


class _ResponsesRelay:
    """A Responses API stream: usage and model in ``response.completed`` (or incomplete); a
    failure (an ``error`` event, or ``response.failed``) keeps its status in ``error_status``
    (the openai SDK yields both as events, relayed as they came)."""

    __slots__ = ("_texts", "error_status", "model", "usage")

    def __init__(self) -> None:
        self.usage: TokenUsage | None = None
        self.model: str | None = None
        self._texts: list[str] = []
        self.error_status: int | None = None

    def feed(self, event: bytes) -> bytes:
        data = event_data(event)
        if data is None:
            return event
        is_delta = data.find(b'"response.output_text.delta"') >= 0
        if self.error_status is None and not is_delta:
            self.error_status = responses_error_status(data)
        if is_delta:
            try:
                document = orjson.loads(data)
            except orjson.JSONDecodeError:
                return event
            delta = document.get("delta") if isinstance(document, dict) else None
            if isinstance(delta, str) and self.usage is None:
                self._texts.append(delta)
        elif self.model is None or data.find(b'"usage"') >= 0:
            try:
                document = orjson.loads(data)
            except orjson.JSONDecodeError:
                return event
            response = document.get("response") if isinstance(document, dict) else None
            if isinstance(response, dict):
                model = response.get("model")
                if isinstance(model, str) and model:
                    self.model = model
                usage = usage_from_openai(response.get("usage"))
                if usage is not None:
                    self.usage = usage
                    self._texts = []
        return event

    def produced_text(self) -> str:
        return "".join(self._texts)


class OpenAIResponsesTranslator(OpenAITranslator):
    """OpenAI Responses API clients (``client.responses.create``) to openai-format providers."""

    def stream(self, prepared: Prepared) -> StreamRelay:
        return _ResponsesRelay()
