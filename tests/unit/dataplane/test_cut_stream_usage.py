"""What a stream that ended early is metered as (translate.base): the provider's counts where
they cover what was streamed, else its prompt-side counts and the streamed text estimated; and
the statuses of in-stream errors."""

from __future__ import annotations

import orjson
import pytest

from dataplane.http import eventstream
from dataplane.translate.anthropic_anthropic import AnthropicNativeTranslator
from dataplane.translate.base import (
    Prepared,
    cut_stream_usage,
    stream_error_status,
    usage_settled,
)
from dataplane.translate.bedrock_bedrock import BedrockNativeTranslator
from dataplane.translate.bedrock_format import exception_status
from dataplane.translate.gemini_gemini import GeminiNativeTranslator
from dataplane.translate.ollama_ollama import OllamaNativeTranslator
from dataplane.translate.openai_gemini import OpenAIToGeminiTranslator
from dataplane.translate.openai_ollama import _OllamaToChatRelay
from dataplane.translate.openai_openai import OpenAIResponsesTranslator, OpenAITranslator
from dataplane.usage.estimate import estimate_tokens
from dataplane.usage.tokens import TokenUsage

DOCUMENT = {"messages": [{"role": "user", "content": "what is the weather like"}]}
PREPARED = Prepared(body=b"", model="m", stream=True, url="http://x.invalid", document=DOCUMENT)


def _sse(kind: str, data: dict) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def test_nothing_reported_estimates_prompt_and_streamed_text() -> None:
    usage = cut_stream_usage(None, document=DOCUMENT, produced="it is sunny")
    assert usage == TokenUsage(
        input_tokens=estimate_tokens("what is the weather like"),
        output_tokens=estimate_tokens("it is sunny"),
    )


def test_reported_prompt_counts_are_kept_exactly_and_output_never_below_the_report() -> None:
    reported = TokenUsage(
        input_tokens=5, output_tokens=1, cached_input_tokens=40, cache_write_tokens=7
    )
    usage = cut_stream_usage(reported, document=DOCUMENT, produced="a b c d e f g h i j k l")
    assert (usage.input_tokens, usage.cached_input_tokens, usage.cache_write_tokens) == (5, 40, 7)
    assert usage.output_tokens == estimate_tokens("a b c d e f g h i j k l")
    # A reported output above the estimate of the text stands.
    usage = cut_stream_usage(
        TokenUsage(input_tokens=5, output_tokens=50), document=DOCUMENT, produced="hi"
    )
    assert usage.output_tokens == 50


def test_reasoning_reported_is_kept_apart_from_output() -> None:
    reported = TokenUsage(input_tokens=3, output_tokens=0, reasoning_tokens=30)
    usage = cut_stream_usage(reported, document=DOCUMENT, produced="short")
    assert (usage.output_tokens, usage.reasoning_tokens) == (0, 30)


def test_anthropic_usage_is_settled_only_by_message_delta() -> None:
    relay = AnthropicNativeTranslator().stream(PREPARED)
    start = {"type": "message_start", "message": {"model": "c", "usage": {"input_tokens": 5}}}
    relay.feed(_sse("message_start", start))
    assert relay.usage is not None and not usage_settled(relay)
    relay.feed(_sse("message_delta", {"type": "message_delta", "usage": {"output_tokens": 9}}))
    assert usage_settled(relay) and relay.usage.output_tokens == 9
    assert stream_error_status(relay) is None


def test_anthropic_error_event_gives_its_status() -> None:
    relay = AnthropicNativeTranslator().stream(PREPARED)
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    relay.feed(_sse("error", error))
    assert stream_error_status(relay) == 529


def test_openai_usage_is_settled_once_it_comes_and_has_no_error_status() -> None:
    relay = OpenAITranslator().stream(PREPARED)
    assert not usage_settled(relay) and stream_error_status(relay) is None


@pytest.mark.parametrize(
    ("exception", "status"),
    [
        ("throttlingException", 429),
        ("modelStreamErrorException", 424),
        ("validationException", 400),
        ("internalServerException", 500),
        ("serviceUnavailableException", 503),
        ("modelTimeoutException", 408),
        ("somethingNewException", 500),
    ],
)
def test_bedrock_exception_frames_give_their_status(exception, status) -> None:
    assert exception_status(exception) == status
    relay = BedrockNativeTranslator().stream(PREPARED)
    relay.feed(eventstream.exception(exception, orjson.dumps({"message": "no"})))
    assert stream_error_status(relay) == status


@pytest.mark.parametrize(
    ("data", "status"),
    [
        pytest.param(
            b'{"error":{"message":"The server had an error while processing your request.",'
            b'"type":"server_error","param":null,"code":null}}',
            500,
            id="openai-server-error",
        ),
        pytest.param(
            b'{"error":{"message":"slow down","type":"requests","code":"rate_limit_exceeded"}}',
            429,
            id="openai-rate-limit",
        ),
        pytest.param(
            b'{"error":{"message":"bad","type":"BadRequestError","code":400}}',
            400,
            id="vllm-numeric-code",
        ),
        pytest.param(b'{"error":"model runner crashed"}', 500, id="bare-string"),
        pytest.param(b'{"error":{"message":"?","type":"unheard_of"}}', 500, id="unknown-type"),
    ],
)
def test_openai_error_event_mid_stream_gives_its_status(data, status) -> None:
    relay = OpenAITranslator().stream(PREPARED)
    relay.feed(b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n')
    assert stream_error_status(relay) is None
    out = relay.feed(b"data: " + data + b"\n\n")
    assert out == b"data: " + data + b"\n\n"  # relayed as it came: the SDK raises on it
    assert stream_error_status(relay) == status


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b'{"choices":[{"index":0,"delta":{"content":"\\"error\\": no"}}]}', id="text"),
        pytest.param(b'{"choices":[{"index":0,"finish_reason":"error"}]}', id="finish-reason"),
        pytest.param(b'{"error":null,"choices":[]}', id="null-error"),
    ],
)
def test_chunks_that_mention_error_are_not_errors(data) -> None:
    relay = OpenAITranslator().stream(PREPARED)
    relay.feed(b"data: " + data + b"\n\n")
    assert stream_error_status(relay) is None


@pytest.mark.parametrize(
    ("error", "status"),
    [
        ({"code": 500, "message": "An internal error has occurred.", "status": "INTERNAL"}, 500),
        ({"code": 429, "message": "Quota", "status": "RESOURCE_EXHAUSTED"}, 429),
        ({"message": "no code", "status": "UNAVAILABLE"}, 503),
        ({"message": "nothing"}, 500),
    ],
)
def test_gemini_error_frame_gives_its_status_native_and_translated(error, status) -> None:
    frame = b"data: " + orjson.dumps({"error": error}) + b"\r\n\r\n"
    native = GeminiNativeTranslator().stream(PREPARED)
    assert native.feed(frame) == frame
    assert stream_error_status(native) == status
    translated = OpenAIToGeminiTranslator().stream(PREPARED)
    out = translated.feed(frame)
    assert out.startswith(b'data: {"error":')
    assert stream_error_status(translated) == status


def test_ollama_error_line_is_a_500_native_and_translated() -> None:
    line = b'{"error":"an error was encountered while running the model"}'
    native = OllamaNativeTranslator().stream(PREPARED)
    native.feed(b'{"model":"m","message":{"role":"assistant","content":"hi"},"done":false}')
    assert stream_error_status(native) is None
    assert native.feed(line) == line
    assert stream_error_status(native) == 500
    translated = _OllamaToChatRelay(include_usage=False, model="m")
    assert b"an error was encountered" in translated.feed(line)
    assert stream_error_status(translated) == 500


@pytest.mark.parametrize(
    ("event", "status"),
    [
        pytest.param(
            b'event: error\ndata: {"type":"error","code":"rate_limit_exceeded",'
            b'"message":"slow down","param":null,"sequence_number":3}\n\n',
            429,
            id="error-event",
        ),
        pytest.param(
            b'event: response.failed\ndata: {"type":"response.failed","response":{"status":'
            b'"failed","error":{"code":"server_error","message":"x"},"usage":null}}\n\n',
            500,
            id="response-failed",
        ),
        pytest.param(
            b'event: response.created\ndata: {"type":"response.created","response":'
            b'{"status":"in_progress","error":null}}\n\n',
            None,
            id="created-with-null-error",
        ),
    ],
)
def test_responses_failures_give_their_status(event, status) -> None:
    relay = OpenAIResponsesTranslator().stream(PREPARED)
    assert relay.feed(event) == event
    assert stream_error_status(relay) == status
