"""Amazon Bedrock Runtime's wire format: URLs, usage, errors, and its event-stream scanner.

Usage maps onto Meterline's disjoint token kinds so that their sum is every token once:
Converse's ``usage.inputTokens`` (the prompt tokens not read from or written to a cache) is
``input``, ``cacheReadInputTokens`` is ``cached_input``, ``cacheWriteInputTokens`` is
``cache_write``, ``outputTokens`` is ``output`` (``totalTokens`` is their sum). Anthropic
models called through InvokeModel report Anthropic's ``usage`` inside the body (or the stream's
``message_start``/``message_delta`` events), read as the Anthropic translators do. Where an
InvokeModel body has no usage (Mistral, Cohere Embed, ...), the counts Bedrock puts in every
InvokeModel answer's headers are read: ``X-Amzn-Bedrock-Input-Token-Count`` and
``X-Amzn-Bedrock-Output-Token-Count``; in an InvokeModelWithResponseStream, the last chunk's
``amazon-bedrock-invocationMetrics`` (``inputTokenCount``, ``outputTokenCount``, and
``cacheReadInputTokenCount``/``cacheWriteInputTokenCount``) when the chunks reported no usage
of their own (Anthropic's message_delta settles first and is kept).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Final
from urllib.parse import quote, unquote

import orjson

from dataplane.config.providers import BEDROCK_OPERATIONS
from dataplane.http.eventstream import decode_frame
from dataplane.translate.anthropic_format import merge_usage, usage_from_anthropic
from dataplane.translate.openai_format import InvalidRequest
from dataplane.usage.tokens import TokenUsage, count

# Bedrock's error names (x-amzn-ErrorType) of the statuses a gateway refuses with.
_ERROR_TYPES: Final = {
    400: "ValidationException",
    401: "AccessDeniedException",
    403: "AccessDeniedException",
    404: "ResourceNotFoundException",
    405: "ValidationException",
    413: "ValidationException",
    429: "ThrottlingException",
    500: "InternalServerException",
    501: "ValidationException",
    502: "ServiceUnavailableException",
    503: "ServiceUnavailableException",
    504: "ModelTimeoutException",
}
# OpenAI error types of Bedrock's statuses (OpenAI clients of a translated route).
_OPENAI_TYPES: Final = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
}


def model_url(base: str, model: str, operation: str) -> str:
    """``{base}/model/{modelId}/{operation}``, the model id percent-encoded as one segment."""
    return f"{base.rstrip('/')}/model/{quote(model, safe='')}/{operation}"


def split_model_path(subpath: str) -> tuple[str, str]:
    """The model id and operation of ``/model/{modelId}/{operation}``; InvalidRequest if not.

    The path arrives as sent (an SDK percent-encodes the model id: ``%3A``, an ARN's ``%2F``);
    the operation is the last segment and the rest, decoded, is the model id (so an ARN sent
    with bare ``/`` works too).
    """
    rest = subpath.lstrip("/")
    if rest.startswith("model/"):
        model, _, operation = rest[len("model/") :].rpartition("/")
        if model and operation in BEDROCK_OPERATIONS:
            return unquote(model), operation
    raise InvalidRequest(
        "Unknown operation: this route serves POST /model/{modelId}/converse, /converse-stream, "
        "/invoke, /invoke-with-response-stream and /count-tokens.",
        code="unknown_operation",
    )


# The exceptions a Bedrock stream may carry (ConverseStream's and
# InvokeModelWithResponseStream's ResponseStream members) -> their HTTP statuses.
_EXCEPTION_STATUSES: Final = {
    "internalserverexception": 500,
    "modelstreamerrorexception": 424,
    "validationexception": 400,
    "throttlingexception": 429,
    "serviceunavailableexception": 503,
    "modeltimeoutexception": 408,
}


def openai_error_type(status: int) -> str:
    """OpenAI's error ``type`` for a status (``api_error`` by default)."""
    return _OPENAI_TYPES.get(status, "api_error")


def exception_status(exception_type: str) -> int:
    """The HTTP status of an in-stream exception (``throttlingException`` -> 429); 500 for
    one Bedrock does not document."""
    return _EXCEPTION_STATUSES.get(exception_type.lower(), 500)


def error_type(status: int) -> str:
    """The Bedrock error name of an HTTP status."""
    if status in _ERROR_TYPES:
        return _ERROR_TYPES[status]
    return "InternalServerException" if status >= 500 else "ValidationException"


def bedrock_error_body(message: str, status: int) -> bytes:
    """A Bedrock error document. ``__type`` names the error for botocore, which reads it when
    the ``x-amzn-ErrorType`` header is absent (the gateway's own refusals)."""
    return orjson.dumps({"message": message, "__type": error_type(status)})


def bedrock_error_to_openai(body: bytes, status: int) -> bytes:
    """A Bedrock error (``{"message": ...}``) in OpenAI's error shape."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        document = None
    message = ""
    if isinstance(document, dict):
        found = document.get("message", document.get("Message"))
        message = found if isinstance(found, str) else ""
    return orjson.dumps(
        {
            "error": {
                "message": message or f"Amazon Bedrock answered status {status}.",
                "type": _OPENAI_TYPES.get(status, "api_error"),
                "param": None,
                "code": error_type(status),
            }
        }
    )


def usage_from_converse(usage: Any) -> TokenUsage | None:
    """The disjoint token kinds of a Converse ``usage`` object."""
    if not isinstance(usage, dict):
        return None
    return TokenUsage(
        input_tokens=count(usage.get("inputTokens")),
        output_tokens=count(usage.get("outputTokens")),
        cached_input_tokens=count(usage.get("cacheReadInputTokens")),
        cache_write_tokens=count(usage.get("cacheWriteInputTokens")),
    )


def read_whole_usage(body: bytes) -> tuple[TokenUsage | None, dict[str, Any] | None]:
    """The usage of a whole Converse or InvokeModel (Anthropic) answer, and its document."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None, None
    if not isinstance(document, dict):
        return None, None
    usage = document.get("usage")
    if isinstance(usage, dict) and "inputTokens" in usage:
        return usage_from_converse(usage), document
    if usage is None:
        # An embedding model's InvokeModel answer (Titan's inputTextTokenCount).
        return read_embedding_usage(document), document
    return usage_from_anthropic(usage), document


_INPUT_HEADER: Final = b"x-amzn-bedrock-input-token-count"
_OUTPUT_HEADER: Final = b"x-amzn-bedrock-output-token-count"


def usage_from_headers(headers: list[tuple[bytes, bytes]]) -> TokenUsage | None:
    """The usage an InvokeModel answer's headers report (names in any case), or None when
    there is no valid input count; an absent output count (embeddings) is 0."""
    found: dict[bytes, int | None] = {}
    for name, value in headers:
        lowered = name.lower()
        if lowered in (_INPUT_HEADER, _OUTPUT_HEADER):
            text = value.strip()
            found[lowered] = count(int(text)) if text.isdigit() else None
    tokens = found.get(_INPUT_HEADER)
    if tokens is None or (_OUTPUT_HEADER in found and found[_OUTPUT_HEADER] is None):
        return None
    return TokenUsage(input_tokens=tokens, output_tokens=found.get(_OUTPUT_HEADER) or 0)


def usage_from_invocation_metrics(metrics: Any) -> TokenUsage | None:
    """The usage of a stream's ``amazon-bedrock-invocationMetrics`` (None without counts)."""
    if not isinstance(metrics, dict):
        return None
    tokens = count(metrics.get("inputTokenCount"))
    output = count(metrics.get("outputTokenCount"))
    if tokens is None or output is None:
        return None
    return TokenUsage(
        input_tokens=tokens,
        output_tokens=output,
        cached_input_tokens=count(metrics.get("cacheReadInputTokenCount")),
        cache_write_tokens=count(metrics.get("cacheWriteInputTokenCount")),
    )


def invoke_texts(document: dict[str, Any]) -> list[str]:
    """The generated text of a non-Anthropic InvokeModel answer or stream chunk (Mistral's
    ``outputs[].text``, Llama's ``generation``, Titan's ``outputText``), for an estimate."""
    texts: list[str] = []
    for key in ("generation", "outputText", "completion"):
        if isinstance(document.get(key), str):
            texts.append(document[key])
    outputs = document.get("outputs")
    for output in outputs if isinstance(outputs, list) else ():
        if isinstance(output, dict) and isinstance(output.get("text"), str):
            texts.append(output["text"])
    return texts


def read_embedding_usage(document: dict[str, Any]) -> TokenUsage | None:
    """The input tokens of a Bedrock embedding answer: Titan's ``inputTextTokenCount``, or a
    Cohere ``meta.billed_units.input_tokens``; None when the body has neither."""
    tokens = count(document.get("inputTextTokenCount"))
    if tokens is None:
        meta = document.get("meta")
        billed = meta.get("billed_units") if isinstance(meta, dict) else None
        tokens = count(billed.get("input_tokens")) if isinstance(billed, dict) else None
    return None if tokens is None else TokenUsage(input_tokens=tokens, output_tokens=0)


class EventStreamScanner:
    """Reads usage and text from Bedrock's event-stream frames (ConverseStream events, or
    InvokeModelWithResponseStream ``chunk`` events wrapping Anthropic's)."""

    __slots__ = ("exception", "settled", "texts", "usage")

    def __init__(self) -> None:
        self.usage: TokenUsage | None = None
        # Text produced so far, to estimate a stream that ends without usage.
        self.texts: list[str] = []
        # An in-stream exception frame: (its type, its message).
        self.exception: tuple[str, str] | None = None
        # True once the usage counts the whole stream (metadata, or an invoke stream's
        # message_delta); an invoke stream's message_start counts the prompt only.
        self.settled = False

    @property
    def error_status(self) -> int | None:
        """The HTTP status of the stream's exception frame, if one came."""
        return None if self.exception is None else exception_status(self.exception[0])

    def accept(self, frame: bytes) -> tuple[str, dict[str, Any]] | None:
        """Decode one whole frame (EventStreamCorrupt on a bad CRC); return its event type and
        JSON payload (a chunk's decoded Anthropic event), or None."""
        decoded = decode_frame(frame)
        try:
            document = orjson.loads(decoded.payload) if decoded.payload else {}
        except orjson.JSONDecodeError:
            return None
        if not isinstance(document, dict):
            return None
        kind = decoded.event_type
        if decoded.message_type == "exception":
            message = document.get("message", document.get("Message", ""))
            self.exception = (kind, message if isinstance(message, str) else "")
            return kind, document
        if kind == "chunk":
            return self._chunk(document)
        if kind == "contentBlockDelta":
            delta = document.get("delta")
            if isinstance(delta, dict):
                text = delta.get("text")
                tool = delta.get("toolUse")
                if isinstance(text, str):
                    self.texts.append(text)
                elif isinstance(tool, dict) and isinstance(tool.get("input"), str):
                    self.texts.append(tool["input"])
        elif kind == "metadata":
            self.usage = usage_from_converse(document.get("usage")) or self.usage
            self.settled = self.usage is not None
        return kind, document

    def _chunk(self, document: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
        data = document.get("bytes")
        try:
            event = orjson.loads(base64.b64decode(data)) if isinstance(data, str) else None
        except (binascii.Error, orjson.JSONDecodeError):
            return None
        if not isinstance(event, dict):
            return None
        metrics = event.get("amazon-bedrock-invocationMetrics")
        if metrics is not None and not self.settled:
            # The last chunk of a model that streams no usage of its own (Mistral, Llama...).
            usage = usage_from_invocation_metrics(metrics)
            if usage is not None:
                self.usage, self.settled = usage, True
        kind = event.get("type")
        if kind is None:
            self.texts.extend(invoke_texts(event))
        elif kind == "message_start":
            message = event.get("message")
            if isinstance(message, dict):
                self.usage = merge_usage(self.usage, usage_from_anthropic(message.get("usage")))
        elif kind == "message_delta":
            self.usage = merge_usage(self.usage, usage_from_anthropic(event.get("usage")))
            self.settled = self.usage is not None
        elif kind == "content_block_delta":
            delta = event.get("delta")
            if isinstance(delta, dict):
                text = delta.get("text", delta.get("partial_json"))
                if isinstance(text, str):
                    self.texts.append(text)
        return "chunk", event
