"""Gemini clients to Gemini (``llm_format: gemini``): relayed unchanged, usage from the response.

A Gemini client (the google-genai SDK with ``http_options.base_url`` at the route) names the
model and the operation in its path: ``.../models/{model}:generateContent``,
``:streamGenerateContent?alt=sse`` or ``:countTokens`` (free, not metered); on embeddings
routes ``:embedContent``, ``:batchEmbedContents`` and Vertex AI's ``:predict`` (its
text-embedding models, billed by ``predictions[].embeddings.statistics.token_count``). The
route's model policy applies to that model; the upstream URL is the target's (Gemini API or
Vertex AI) with the resolved model and operation. Refusals are Google-shaped errors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from dataplane.config.providers import ROUTE_TYPE_EMBEDDINGS
from dataplane.errors import Rejection
from dataplane.translate.base import Prepared, StreamRelay
from dataplane.translate.gemini_format import (
    COUNT_TOKENS,
    EMBED_OPERATIONS,
    GENERATE,
    OPERATIONS,
    PREDICT,
    STREAM_GENERATE,
    GeminiStreamScanner,
    google_rejection_body,
    operation_url,
    parse_model_operation,
    predict_texts,
    read_response,
    usage_from_predict,
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


class _GeminiRelay:
    __slots__ = ("scanner",)

    def __init__(self) -> None:
        self.scanner = GeminiStreamScanner()

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


def _model_and_operation(subpath: str, route_type: str) -> tuple[str, str]:
    served = EMBED_OPERATIONS if route_type == ROUTE_TYPE_EMBEDDINGS else OPERATIONS
    names = ", ".join(sorted(served))
    found = parse_model_operation(subpath)
    if found is None:
        raise Rejection(
            404,
            f"This route serves Gemini's models/{{model}}:{{operation}} for {names}; the path "
            "names none of them.",
            type="invalid_request_error",
            code="not_found",
        )
    model, operation = found
    if operation not in served:
        raise Rejection(
            404,
            f"The operation '{operation}' is not served by this route (it serves {names}).",
            type="invalid_request_error",
            code="not_found",
        )
    return model, operation


def _apply_max_tokens(body: dict[str, Any], default: int) -> bool:
    """Set the route's default maxOutputTokens where the client set none; True if changed."""
    if not default:
        return False
    # Google's JSON accepts lowerCamel and proto field names alike (the SDK sends both kinds).
    config = body.get("generationConfig", body.get("generation_config"))
    if config is None:
        body["generationConfig"] = {"maxOutputTokens": default}
        return True
    if isinstance(config, dict) and not {"maxOutputTokens", "max_output_tokens"} & set(config):
        config["maxOutputTokens"] = default
        return True
    return False


class GeminiNativeTranslator:
    """Gemini API clients (google-genai SDK) to Gemini or Vertex AI, unchanged."""

    def reject(self, rejection: Rejection) -> bytes:
        return google_rejection_body(rejection)

    def prepare(
        self, raw: bytes, policy: AiProxyPolicy, *, subpath: str, query: bytes, method: str
    ) -> Prepared:
        path_model, operation = _model_and_operation(subpath, policy.route_type)
        stream = operation == STREAM_GENERATE
        if stream and b"alt=sse" not in query:
            # Without alt=sse Gemini streams one JSON array, which the gateway does not relay.
            raise InvalidRequest(
                "streamGenerateContent needs the query parameter alt=sse on this gateway.",
                code="invalid_value",
                param="alt",
            )
        body = parse_json_object(raw)
        # The model is in the path: the route's aliases, allow list and fixed model apply to it.
        named = {"model": path_model}
        requested = requested_model(named, policy)
        model, _ = resolve_model(named, policy)
        if operation == COUNT_TOKENS:
            # Token counting is free and carries no usage: forwarded, not metered.
            return Prepared(
                body=raw,
                model=model,
                stream=False,
                url=operation_url(policy.target, model=model, operation=operation, stream=False),
                metered=False,
                requested_model=requested,
            )
        if operation != GENERATE and operation != STREAM_GENERATE:
            # embedContent / batchEmbedContents / Vertex AI's predict: forwarded as sent,
            # metered by the input (usageMetadata or predict's token counts if the answer has
            # them, else estimated from the texts).
            texts = predict_texts(body) if operation == PREDICT else None
            return Prepared(
                body=raw,
                model=model,
                stream=False,
                url=operation_url(policy.target, model=model, operation=operation, stream=False),
                document=body if texts is None else {"input": texts},
                requested_model=requested,
            )
        contents = body.get("contents")
        if not isinstance(contents, list) or not contents:
            raise InvalidRequest(
                "* GenerateContentRequest.contents: contents is not specified",
                code="invalid_value",
                param="contents",
            )
        changed = _apply_max_tokens(body, policy.max_tokens)
        return Prepared(
            body=orjson.dumps(body) if changed else raw,
            model=model,
            stream=stream,
            url=operation_url(
                policy.target,
                model=model,
                operation=STREAM_GENERATE if stream else GENERATE,
                stream=stream,
            ),
            document=body,
            requested_model=requested,
        )

    def whole(
        self, body: bytes, status: int, prepared: Prepared
    ) -> tuple[bytes, TokenUsage | None, str | None]:
        if not 200 <= status < 300:
            return body, None, None
        document, usage, model = read_response(body)
        if usage is None and document is not None and "predictions" in document:
            usage = usage_from_predict(document)
        return body, usage, model

    def stream(self, prepared: Prepared) -> StreamRelay:
        return _GeminiRelay()
