"""Bedrock Runtime clients (boto3 ``bedrock-runtime``) to Bedrock: relayed, re-signed, metered.

The client calls ``{route}/model/{modelId}/{operation}`` (Converse, ConverseStream, InvokeModel,
InvokeModelWithResponseStream; CountTokens, never metered) as it would call AWS. The gateway
drops the client's signature, applies the route's model policy to the model id of the path, and
the proxy signs the request again with the route's AWS credentials. Answers and event-stream
frames go back unchanged; usage is read from the answer's ``usage`` (else InvokeModel's
``X-Amzn-Bedrock-*-Token-Count`` headers) or the stream's ``metadata`` (or Anthropic) events
(else the last chunk's ``amazon-bedrock-invocationMetrics``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson

from dataplane.config.providers import BEDROCK_COUNT_TOKENS, BEDROCK_STREAM_OPERATIONS
from dataplane.errors import Rejection
from dataplane.http.eventstream import CONTENT_TYPE as EVENT_STREAM
from dataplane.translate.base import Prepared, StreamRelay
from dataplane.translate.bedrock_format import (
    EventStreamScanner,
    bedrock_error_body,
    model_url,
    read_whole_usage,
    split_model_path,
    usage_from_headers,
)
from dataplane.translate.openai_format import InvalidRequest, requested_model
from dataplane.usage.tokens import TokenUsage

if TYPE_CHECKING:
    from dataplane.config.model import AiProxyPolicy


class _FrameRelay:
    """Relays frames unchanged; decodes each (CRCs checked) only to read usage."""

    __slots__ = ("scanner",)

    def __init__(self) -> None:
        self.scanner = EventStreamScanner()

    @property
    def usage(self) -> TokenUsage | None:
        return self.scanner.usage

    @property
    def model(self) -> str | None:
        return None

    def feed(self, event: bytes) -> bytes:
        self.scanner.accept(event)
        return event

    def produced_text(self) -> str:
        return "".join(self.scanner.texts)

    @property
    def error_status(self) -> int | None:
        return self.scanner.error_status

    @property
    def usage_settled(self) -> bool:
        return self.scanner.settled


def upstream_url(policy: AiProxyPolicy, model: str, operation: str) -> str:
    """Where one operation on ``model`` goes: the base URL's path for it, or a full
    ``upstream_url`` as configured (Kong's meaning of a URL with a path)."""
    target = policy.target
    return model_url(target.base_url, model, operation) if target.base_url else target.url


class BedrockNativeTranslator:
    """boto3 ``bedrock-runtime`` clients to Bedrock; errors in Bedrock's shape."""

    def reject(self, rejection: Rejection) -> bytes:
        return bedrock_error_body(rejection.message, rejection.status)

    def prepare(
        self, raw: bytes, policy: AiProxyPolicy, *, subpath: str, query: bytes, method: str
    ) -> Prepared:
        path_model, operation = split_model_path(subpath)
        try:
            document = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            document = None
        if not isinstance(document, dict):
            raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
        requested = requested_model({"model": path_model}, policy)
        model = policy.model or requested or path_model
        return Prepared(
            body=raw,
            model=model,
            stream=operation in BEDROCK_STREAM_OPERATIONS,
            url=upstream_url(policy, model, operation),
            document=document,
            requested_model=requested,
            stream_content_type=EVENT_STREAM,
            metered=operation != BEDROCK_COUNT_TOKENS,
        )

    def whole(
        self, body: bytes, status: int, prepared: Prepared
    ) -> tuple[bytes, TokenUsage | None, str | None]:
        if not 200 <= status < 300 or not prepared.metered:
            return body, None, None
        usage, _ = read_whole_usage(body)
        return body, usage, None

    def whole_with_headers(
        self,
        body: bytes,
        status: int,
        prepared: Prepared,
        headers: list[tuple[bytes, bytes]],
    ) -> tuple[bytes, TokenUsage | None, str | None]:
        """``whole``, with InvokeModel's token-count headers where the body has no usage."""
        out, usage, model = self.whole(body, status, prepared)
        if usage is None and prepared.metered and 200 <= status < 300:
            usage = usage_from_headers(headers)
        return out, usage, model

    def stream(self, prepared: Prepared) -> StreamRelay:
        return _FrameRelay()
