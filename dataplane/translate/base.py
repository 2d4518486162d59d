"""What a translator is: the protocol every (client format, provider format) pair implements.

A translator prepares the upstream request from the client's body, reads usage from a whole
response or a stream, and rewrites the response when the formats differ:

- ``OpenAITranslator``: OpenAI chat/completions/embeddings to openai, azure, openai_compatible;
- ``OpenAIResponsesTranslator``: OpenAI's Responses API (``/v1/responses``), usage read from
  the response's ``usage`` and, in streams, from ``response.completed``;
- ``AnthropicNativeTranslator``: Anthropic Messages clients to Anthropic, relayed unchanged;
- ``OpenAIToAnthropicTranslator``: OpenAI chat clients to Anthropic, translated both ways;
- ``GeminiNativeTranslator``: Gemini API clients to Gemini / Vertex AI, relayed unchanged;
- ``OpenAIToGeminiTranslator``: OpenAI chat clients to Gemini / Vertex AI, translated both ways;
- ``BedrockNativeTranslator``: Bedrock Runtime clients (boto3) to Bedrock, frames relayed;
- ``OpenAIToBedrockTranslator``: OpenAI chat clients to Bedrock Converse, translated both ways;
- ``AnthropicToBedrockTranslator``: Anthropic Messages clients to Claude on Bedrock (InvokeModel);
- ``PreserveTranslator``: any path passed through, usage read where a body has one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from dataplane.errors import Rejection
from dataplane.usage.estimate import estimate_usage
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
    # The content type of the stream the client gets; empty: SSE (text/event-stream).
    stream_content_type: str = ""
    # How the upstream frames a stream: "sse" (text/event-stream) or "ndjson" (one JSON object
    # per line, application/x-ndjson: Ollama's native API); relays are fed whole events/lines.
    upstream_framing: str = "sse"


class StreamRelay(Protocol):
    """Reads (and maybe rewrites) a provider's stream event by event: whole SSE events, or
    whole frames of AWS's binary event stream (Bedrock).

    Two optional members, read with ``stream_error_status`` and ``usage_settled`` below (only
    the relays that need them define them):

    - ``error_status: int | None``: the HTTP status of an error the provider reported inside
      a stream that had started with 200 (Bedrock's exception frames, Anthropic's ``error``
      event), so the request is recorded with it;
    - ``usage_settled: bool``: whether ``usage`` covers everything streamed so far. Without
      it, any usage does (OpenAI, Ollama, Cohere and Converse report usage once, at the end;
      Gemini's is cumulative in every frame). Anthropic's ``message_start`` reports the prompt
      but not the output: not settled until ``message_delta``.
    """

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

    def reject(self, rejection: Rejection) -> bytes:
        """The error document of a refused request, in the client's format."""
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


def read_whole(
    translator: Translator,
    body: bytes,
    status: int,
    prepared: Prepared,
    headers: list[tuple[bytes, bytes]],
) -> tuple[bytes, TokenUsage | None, str | None]:
    """``translator.whole``, or its optional ``whole_with_headers`` when it has one: the
    translators of providers that report usage in response headers (Bedrock's InvokeModel:
    ``X-Amzn-Bedrock-Input-Token-Count``) define it, taking the raw response headers too."""
    with_headers = getattr(translator, "whole_with_headers", None)
    if with_headers is None:
        return translator.whole(body, status, prepared)
    result: tuple[bytes, TokenUsage | None, str | None] = with_headers(
        body, status, prepared, headers
    )
    return result


def stream_error_status(relay: StreamRelay) -> int | None:
    """The status of an error the provider reported inside its stream, or None."""
    status: int | None = getattr(relay, "error_status", None)
    return status


def usage_settled(relay: StreamRelay) -> bool:
    """Whether the relay's usage counts every token streamed so far (see StreamRelay)."""
    settled: bool | None = getattr(relay, "usage_settled", None)
    return relay.usage is not None if settled is None else settled


def cut_stream_usage(usage: TokenUsage | None, *, document: Any, produced: str) -> TokenUsage:
    """The (estimated) usage of a stream that ended early, broken or by an error event,
    before its usage counted everything streamed: the prompt-side counts the provider
    reported (exact), the prompt estimated if it reported none, and the output estimated from
    the text streamed (never below an output count it reported)."""
    guess = estimate_usage(document=document, produced=produced)
    if usage is None:
        return guess
    prompt_known = (
        usage.input_tokens is not None
        or usage.cached_input_tokens is not None
        or usage.cache_write_tokens is not None
    )
    reported_output = (usage.output_tokens or 0) + (usage.reasoning_tokens or 0)
    return TokenUsage(
        input_tokens=usage.input_tokens if prompt_known else guess.input_tokens,
        cached_input_tokens=usage.cached_input_tokens,
        cache_write_tokens=usage.cache_write_tokens,
        output_tokens=max(guess.output_tokens or 0, reported_output)
        - (usage.reasoning_tokens or 0),
        reasoning_tokens=usage.reasoning_tokens,
    )
