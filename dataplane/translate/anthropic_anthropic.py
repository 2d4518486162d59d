"""Anthropic Messages clients to Anthropic: relayed unchanged, usage from the message or stream."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from dataplane.errors import Rejection
from dataplane.translate.anthropic_format import (
    DEFAULT_MAX_TOKENS,
    MessageStreamScanner,
    anthropic_rejection_body,
    read_message_usage,
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


from dataplane.translate.base import Prepared, StreamRelay


class _AnthropicRelay:
    __slots__ = ("scanner",)

    def __init__(self) -> None:
        self.scanner = MessageStreamScanner()

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

    @property
    def usage_settled(self) -> bool:
        return self.scanner.settled


def messages_body(
    raw: bytes, policy: AiProxyPolicy
) -> tuple[dict[str, Any], str, bool, bool, str | None]:
    """A client's Messages body checked, with the route's model policy and max_tokens applied:
    (body, model, stream, whether it changed, the client's model after aliasing)."""
    body = parse_json_object(raw)
    messages = body.get("messages")
    if messages is None:
        raise InvalidRequest(
            "messages: Field required", code="missing_required_parameter", param="messages"
        )
    if not isinstance(messages, list):
        raise InvalidRequest(
            "messages: Input should be a valid list", code="invalid_type", param="messages"
        )
    stream = check_stream_flag(body)
    requested = requested_model(body, policy)
    model, changed = resolve_model(body, policy)
    if "max_tokens" not in body:
        body["max_tokens"] = policy.max_tokens or DEFAULT_MAX_TOKENS
        changed = True
    return body, model, stream, changed, requested


class AnthropicNativeTranslator:
    """Anthropic Messages clients (anthropic SDK, Claude Code) to Anthropic, unchanged."""

    def reject(self, rejection: Rejection) -> bytes:
        return anthropic_rejection_body(rejection)

    def prepare(
        self, raw: bytes, policy: AiProxyPolicy, *, subpath: str, query: bytes, method: str
    ) -> Prepared:
        if subpath.rstrip("/").endswith("/count_tokens"):
            # Token counting is free and carries no usage: forward it, meter nothing.
            return Prepared(
                body=raw,
                model="",
                stream=False,
                url=policy.target.url + "/count_tokens",
                metered=False,
            )
        body, model, stream, changed, requested = messages_body(raw, policy)
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
        usage, model = read_message_usage(body)
        return body, usage, model

    def stream(self, prepared: Prepared) -> StreamRelay:
        return _AnthropicRelay()
