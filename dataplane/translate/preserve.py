"""Preserve routes: any path under the route passed through, usage read where a body has one."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from dataplane.errors import Rejection
from dataplane.http.sse import event_data
from dataplane.translate.anthropic_format import (
    anthropic_rejection_body,
    merge_usage,
    usage_from_anthropic,
)
from dataplane.translate.openai_format import (
    refuse_duplicate_keys,
    rejection_body,
    usage_from_openai,
)
from dataplane.usage.tokens import TokenUsage

if TYPE_CHECKING:
    from dataplane.config.model import AiProxyPolicy


from dataplane.translate.base import Prepared, StreamRelay


def _usage_in_document(document: Any) -> TokenUsage | None:
    """Usage of any known body: OpenAI (chat, completions, embeddings, responses), Anthropic."""
    if not isinstance(document, dict):
        return None
    usage = document.get("usage")
    if isinstance(usage, dict):
        # Anthropic's usage names input_tokens/output_tokens like the Responses API, which
        # alone adds *_tokens_details.
        openai_shaped = (
            "prompt_tokens" in usage
            or "input_tokens_details" in usage
            or "output_tokens_details" in usage
        )
        return usage_from_openai(usage) if openai_shaped else usage_from_anthropic(usage)
    for key in ("response", "message"):  # responses.completed, message_start
        inner = document.get(key)
        if isinstance(inner, dict) and isinstance(inner.get("usage"), dict):
            return _usage_in_document(inner)
    return None


def _model_in_document(document: Any) -> str | None:
    if not isinstance(document, dict):
        return None
    model = document.get("model")
    if isinstance(model, str) and model:
        return model
    for key in ("response", "message"):
        inner = document.get(key)
        if isinstance(inner, dict) and isinstance(inner.get("model"), str):
            return str(inner["model"])
    return None


class _PreserveRelay:
    __slots__ = ("model", "usage")

    def __init__(self) -> None:
        self.usage: TokenUsage | None = None
        self.model: str | None = None

    def feed(self, event: bytes) -> bytes:
        data = event_data(event)
        if data is not None and (data.find(b'"usage"') >= 0 or self.model is None):
            try:
                document = orjson.loads(data)
            except orjson.JSONDecodeError:
                return event
            self.model = self.model or _model_in_document(document)
            usage = _usage_in_document(document)
            if usage is not None:
                # Anthropic's message_delta repeats counts cumulatively; keep what it omits.
                self.usage = merge_usage(self.usage, usage)
        return event

    def produced_text(self) -> str:
        return ""


class PreserveTranslator:
    """Any path under the route, passed through to the provider's base URL.

    Usage is metered where a response (or stream event) carries an OpenAI or Anthropic usage
    block; responses without one are not metered.
    """

    def __init__(self, *, anthropic_errors: bool) -> None:
        self._anthropic_errors = anthropic_errors

    def reject(self, rejection: Rejection) -> bytes:
        if self._anthropic_errors:
            return anthropic_rejection_body(rejection)
        return rejection_body(rejection)

    def prepare(
        self, raw: bytes, policy: AiProxyPolicy, *, subpath: str, query: bytes, method: str
    ) -> Prepared:
        base = policy.target.url.rstrip("/")
        url = base + (subpath if subpath.startswith("/") else "/" + subpath)
        if query:
            url += "?" + query.decode("latin-1")
        document: Any = None
        if raw:
            try:
                document = orjson.loads(raw)
            except orjson.JSONDecodeError:
                document = None
            if isinstance(document, dict):
                # The model billed must be the model the provider reads.
                refuse_duplicate_keys(raw)
        stream = isinstance(document, dict) and document.get("stream") is True
        model = _model_in_document(document) or policy.model
        return Prepared(
            body=raw, model=model, stream=stream, url=url, method=method, document=document
        )

    def whole(
        self, body: bytes, status: int, prepared: Prepared
    ) -> tuple[bytes, TokenUsage | None, str | None]:
        try:
            document = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            return body, None, None
        return body, _usage_in_document(document), _model_in_document(document)

    def stream(self, prepared: Prepared) -> StreamRelay:
        return _PreserveRelay()
