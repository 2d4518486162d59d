"""Anthropic Messages clients (the anthropic SDK, Claude Code) to Claude on Bedrock (InvokeModel).

Kong's "Claude Code with AWS Bedrock" setup: the client speaks the Messages API to the gateway;
the body goes to ``/model/{modelId}/invoke`` (or ``/invoke-with-response-stream``) without its
``model`` and ``stream`` fields and with ``anthropic_version: bedrock-2023-05-31`` (the route's
``model.options.anthropic_version`` if set). A whole answer is already a Messages object and is
relayed as is; a stream's ``chunk`` frames each carry one Messages event (base64 JSON), which
goes back to the client as that SSE event. Usage is Anthropic's, read as on a native route.
``/v1/messages/count_tokens`` becomes Bedrock's CountTokens of the same body (not metered).
"""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING, Any, Final

import orjson

from dataplane.config.providers import (
    BEDROCK_COUNT_TOKENS,
    BEDROCK_INVOKE,
    BEDROCK_INVOKE_STREAM,
)
from dataplane.errors import Rejection
from dataplane.http.eventstream import decode_frame
from dataplane.translate.anthropic_anthropic import messages_body
from dataplane.translate.anthropic_format import (
    MessageStreamScanner,
    anthropic_rejection_body,
    error_type_of_status,
    read_message_usage,
)
from dataplane.translate.base import Prepared, StreamRelay
from dataplane.translate.bedrock_bedrock import upstream_url
from dataplane.translate.bedrock_format import exception_status
from dataplane.usage.tokens import TokenUsage

if TYPE_CHECKING:
    from dataplane.config.model import AiProxyPolicy

BEDROCK_ANTHROPIC_VERSION: Final = "bedrock-2023-05-31"


def bedrock_error_to_anthropic(body: bytes, status: int) -> bytes:
    """A Bedrock error (``{"message": ...}``) in Anthropic's error shape."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        document = None
    message = document.get("message") if isinstance(document, dict) else None
    if not isinstance(message, str) or not message:
        message = f"Amazon Bedrock answered status {status}."
    return anthropic_rejection_body(Rejection(status, message, type="api_error"))


def _count_tokens_answer(body: bytes) -> bytes:
    """Bedrock's ``{"inputTokens": N}`` as Anthropic's ``{"input_tokens": N}``."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body
    tokens = document.get("inputTokens") if isinstance(document, dict) else None
    return orjson.dumps({"input_tokens": tokens}) if isinstance(tokens, int) else body


class _ChunksToMessagesRelay:
    """Unwraps each ``chunk`` frame into the Messages SSE event it carries."""

    __slots__ = ("exception_status", "scanner")

    def __init__(self) -> None:
        self.scanner = MessageStreamScanner()
        # The status of an exception frame (throttlingException: 429), if one came.
        self.exception_status: int | None = None

    @property
    def error_status(self) -> int | None:
        return self.exception_status or self.scanner.error_status

    @property
    def usage_settled(self) -> bool:
        return self.scanner.settled

    @property
    def usage(self) -> TokenUsage | None:
        return self.scanner.usage

    @property
    def model(self) -> str | None:
        return None  # the model of a Bedrock stream is the route's, not the upstream's name

    def feed(self, event: bytes) -> bytes:
        frame = decode_frame(event)
        if frame.message_type == "exception":
            try:
                document = orjson.loads(frame.payload)
            except orjson.JSONDecodeError:
                document = {}
            message = document.get("message", "") if isinstance(document, dict) else ""
            self.exception_status = exception_status(frame.event_type)
            error = {
                "type": "error",
                "error": {"type": error_type_of_status(self.exception_status), "message": message},
            }
            return b"event: error\ndata: " + orjson.dumps(error) + b"\n\n"
        if frame.event_type != "chunk":
            return b""
        try:
            data = orjson.loads(frame.payload).get("bytes")
            raw = base64.b64decode(data) if isinstance(data, str) else b""
            kind = orjson.loads(raw).get("type") if raw else None
        except (AttributeError, binascii.Error, orjson.JSONDecodeError):
            return b""
        if not isinstance(kind, str):
            return b""
        sse = b"event: " + kind.encode() + b"\ndata: " + raw + b"\n\n"
        self.scanner.accept(sse)
        return sse

    def produced_text(self) -> str:
        return "".join(self.scanner.texts)


class AnthropicToBedrockTranslator:
    """Anthropic Messages clients to Claude on Bedrock; errors in Anthropic's shape."""

    def reject(self, rejection: Rejection) -> bytes:
        return anthropic_rejection_body(rejection)

    def prepare(
        self, raw: bytes, policy: AiProxyPolicy, *, subpath: str, query: bytes, method: str
    ) -> Prepared:
        body, model, stream, _, requested = messages_body(raw, policy)
        invoke: dict[str, Any] = {
            key: value for key, value in body.items() if key not in ("model", "stream")
        }
        invoke["anthropic_version"] = policy.anthropic_version or BEDROCK_ANTHROPIC_VERSION
        if subpath.rstrip("/").endswith("/count_tokens"):
            # Bedrock's CountTokens of the same InvokeModel body: free, never metered.
            encoded = base64.b64encode(orjson.dumps(invoke)).decode()
            wrapped = {"input": {"invokeModel": {"body": encoded}}}
            return Prepared(
                body=orjson.dumps(wrapped),
                model=model,
                stream=False,
                url=upstream_url(policy, model, BEDROCK_COUNT_TOKENS),
                metered=False,
            )
        operation = BEDROCK_INVOKE_STREAM if stream else BEDROCK_INVOKE
        return Prepared(
            body=orjson.dumps(invoke),
            model=model,
            stream=stream,
            url=upstream_url(policy, model, operation),
            document=body,
            requested_model=requested,
        )

    def whole(
        self, body: bytes, status: int, prepared: Prepared
    ) -> tuple[bytes, TokenUsage | None, str | None]:
        if not 200 <= status < 300:
            return bedrock_error_to_anthropic(body, status), None, None
        if not prepared.metered:
            return _count_tokens_answer(body), None, None
        usage, _ = read_message_usage(body)
        return body, usage, None

    def stream(self, prepared: Prepared) -> StreamRelay:
        return _ChunksToMessagesRelay()
