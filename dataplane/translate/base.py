"""One translator per (client format, provider format) pair, chosen once per snapshot.

A translator prepares the upstream request from the client's body, reads usage from a whole
response or a stream, and rewrites the response when the formats differ:

- ``OpenAITranslator``: OpenAI chat/completions/embeddings to openai, azure, openai_compatible;
- ``OpenAIResponsesTranslator``: OpenAI's Responses API (``/v1/responses``), usage read from
  the response's ``usage`` and, in streams, from ``response.completed``;
- ``AnthropicNativeTranslator``: Anthropic Messages clients to Anthropic, relayed unchanged;
- ``OpenAIToAnthropicTranslator``: OpenAI chat clients to Anthropic, translated both ways;
- ``PreserveTranslator``: any path passed through, usage read where a body has one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from dataplane.translate.anthropic_format import (
    DEFAULT_MAX_TOKENS,
    MessageStreamScanner,
    anthropic_error_body,
    merge_usage,
    read_message_usage,
    usage_from_anthropic,
)
from dataplane.translate.openai_anthropic import (
    MessagesToChatStream,
    anthropic_error_to_openai,
    chat_to_messages_request,
    message_to_chat_completion,
)
from dataplane.translate.openai_format import (
    ChatStreamScanner,
    InvalidRequest,
    check_stream_flag,
    error_body,
    parse_json_object,
    prepare_chat_request,
    read_body_usage,
    requested_model,
    resolve_model,
    usage_from_openai,
)
from dataplane.http.sse import event_data
from dataplane.usage.tokens import TokenUsage

if TYPE_CHECKING:
    from dataplane.config.model import AiProxyPolicy


@dataclass(frozen=True, slots=True)
class Prepared:
    """A client request ready to go upstream."""

    body: bytes
    model: str
    stream: bool
    url: str
    method: str = "POST"
    # The parsed client body, to estimate the prompt when the provider reports no usage.
    document: Any = None
    # True when the gateway asked for stream usage itself (the client must not see it).
    hide_usage_chunk: bool = False
    # True when the client asked for usage in its (translated) stream.
    include_usage: bool = False
    # False for calls that carry no tokens (count_tokens, preserve without usage).
    metered: bool = True
    # The client's model after aliasing, before a target's fixed model replaced it (the
    # ``cost`` balancer picks the cheapest target serving it).
    requested_model: str | None = None


class StreamRelay(Protocol):
    """Reads (and maybe rewrites) a provider's SSE stream event by event."""

    @property
    def usage(self) -> TokenUsage | None: ...

    @property
    def model(self) -> str | None: ...

    def feed(self, event: bytes) -> bytes:
        """Return what the client gets for one whole upstream event (maybe nothing)."""
        ...

    def produced_text(self) -> str:
        """The text produced so far, for an estimate."""
        ...


class Translator(Protocol):
    """The per-route strategy the proxy calls; stateless, shared by all requests."""

    def error_body(
        self, message: str, *, type: str, code: str | None, param: str | None = None
    ) -> bytes:
        """An error document in the client's format."""
        ...

    def prepare(
        self, raw: bytes, policy: AiProxyPolicy, *, subpath: str, query: bytes, method: str
    ) -> Prepared:
        """Validate the client's request and build the upstream one, or raise InvalidRequest."""
        ...

    def whole(
        self, body: bytes, status: int, prepared: Prepared
    ) -> tuple[bytes, TokenUsage | None, str | None]:
        """The client's body, the usage and the model of a whole upstream response."""
        ...

    def stream(self, prepared: Prepared) -> StreamRelay:
        """A relay for one upstream stream."""
        ...


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


class OpenAITranslator:
    """OpenAI-format clients to OpenAI-format providers (openai, azure, openai_compatible)."""

    def error_body(
        self, message: str, *, type: str, code: str | None, param: str | None = None
    ) -> bytes:
        return error_body(message, type=type, code=code, param=param)

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
    """A Responses API stream: usage and model in ``response.completed`` (or incomplete)."""

    __slots__ = ("_texts", "model", "usage")

    def __init__(self) -> None:
        self.usage: TokenUsage | None = None
        self.model: str | None = None
        self._texts: list[str] = []

    def feed(self, event: bytes) -> bytes:
        data = event_data(event)
        if data is None:
            return event
        if b'"response.output_text.delta"' in data:
            try:
                document = orjson.loads(data)
            except orjson.JSONDecodeError:
                return event
            delta = document.get("delta") if isinstance(document, dict) else None
            if isinstance(delta, str) and self.usage is None:
                self._texts.append(delta)
        elif self.model is None or b'"usage"' in data:
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


def _messages_body(
    raw: bytes, policy: AiProxyPolicy
) -> tuple[dict[str, Any], str, bool, bool, str | None]:
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

    def error_body(
        self, message: str, *, type: str, code: str | None, param: str | None = None
    ) -> bytes:
        return anthropic_error_body(message, type=type)

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
        body, model, stream, changed, requested = _messages_body(raw, policy)
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


class _MessagesToChatRelay:
    __slots__ = ("translator",)

    def __init__(self, *, include_usage: bool) -> None:
        self.translator = MessagesToChatStream(include_usage=include_usage)

    @property
    def usage(self) -> TokenUsage | None:
        return self.translator.usage

    @property
    def model(self) -> str | None:
        return self.translator.model

    def feed(self, event: bytes) -> bytes:
        return self.translator.feed(event)

    def produced_text(self) -> str:
        return "".join(self.translator.scanner.texts)


class OpenAIToAnthropicTranslator:
    """OpenAI chat clients to Anthropic: Messages upstream, chat completions back."""

    def error_body(
        self, message: str, *, type: str, code: str | None, param: str | None = None
    ) -> bytes:
        return error_body(message, type=type, code=code, param=param)

    def prepare(
        self, raw: bytes, policy: AiProxyPolicy, *, subpath: str, query: bytes, method: str
    ) -> Prepared:
        chat = prepare_chat_request(raw, policy)
        body: dict[str, Any] = chat.document
        options = body.get("stream_options")
        request = chat_to_messages_request(
            body, model=chat.model, default_max_tokens=policy.max_tokens or DEFAULT_MAX_TOKENS
        )
        return Prepared(
            body=orjson.dumps(request),
            model=chat.model,
            stream=chat.stream,
            url=policy.target.url,
            document=request,
            include_usage=chat.stream and not chat.hide_usage_chunk and isinstance(options, dict),
            requested_model=chat.requested_model,
        )

    def whole(
        self, body: bytes, status: int, prepared: Prepared
    ) -> tuple[bytes, TokenUsage | None, str | None]:
        if not 200 <= status < 300:
            return anthropic_error_to_openai(body), None, None
        try:
            message = orjson.loads(body)
        except orjson.JSONDecodeError:
            return body, None, None
        if not isinstance(message, dict):
            return body, None, None
        usage = usage_from_anthropic(message.get("usage"))
        model = message.get("model")
        return (
            message_to_chat_completion(message, usage),
            usage,
            model if isinstance(model, str) else None,
        )

    def stream(self, prepared: Prepared) -> StreamRelay:
        return _MessagesToChatRelay(include_usage=prepared.include_usage)


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
        if data is not None and (b'"usage"' in data or self.model is None):
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

    def error_body(
        self, message: str, *, type: str, code: str | None, param: str | None = None
    ) -> bytes:
        if self._anthropic_errors:
            return anthropic_error_body(message, type=type)
        return error_body(message, type=type, code=code, param=param)

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
