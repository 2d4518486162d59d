"""gen_ai.response.id and finish_reasons read from what each provider's fake answers, in its
exact wire format (whole bodies and streams), as the exporter reads them for sampled spans."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from dataplane.observability.otel_export import response_meta
from dataplane.observability.tracing import StreamEnds
from dataplane.testing.fake_anthropic import FakeAnthropic
from dataplane.testing.fake_cohere import FakeCohere
from dataplane.testing.fake_gemini import FakeGemini
from dataplane.testing.fake_ollama import FakeOllama
from dataplane.testing.fake_openai import FakeProvider

MESSAGES = [{"role": "user", "content": "say something about spans"}]


async def _call(app: Any, path: str, body: dict[str, Any], query: bytes = b"") -> bytes:
    raw = orjson.dumps(body)
    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "headers": [
            (b"content-type", b"application/json"),
            (b"host", b"fake"),
            (b"authorization", b"Bearer sk-p"),
            (b"x-api-key", b"sk-ant-p"),
            (b"anthropic-version", b"2023-06-01"),
            (b"x-goog-api-key", b"AIza-test"),
        ],
        "client": ("127.0.0.1", 1),
    }
    sent = False
    chunks: list[bytes] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": raw, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            assert message["status"] == 200
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return b"".join(chunks)


def _tail(stream: bytes) -> StreamEnds:
    """The stream's ends as the gateway's pump notes them, here one event per chunk sent."""
    tail = StreamEnds()
    separator = b"\n\n" if b"data:" in stream else b"\n"
    for event in stream.split(separator):
        if event.strip():
            tail.note(event + separator)
    return tail


def test_a_stream_sent_in_few_chunks_gives_the_same_id_and_reasons() -> None:
    # The pump notes what it sends per network chunk: the first chunk may hold several events,
    # the last ones the end of the stream.
    events = [
        b'data: {"id":"chatcmpl-1","choices":[{"delta":{"role":"assistant"}}]}\n\n',
        b'data: {"id":"chatcmpl-1","choices":[{"delta":{"content":"a"}}]}\n\n',
        b'data: {"id":"chatcmpl-1","choices":[{"delta":{"content":"b"}}]}\n\n',
        b'data: {"id":"chatcmpl-1","choices":[{"delta":{},"finish_reason":"length"}]}\n\n',
        b'data: {"id":"chatcmpl-1","choices":[],"usage":{"prompt_tokens":3}}\n\n',
        b"data: [DONE]\n\n",
    ]
    ends = StreamEnds()
    ends.note(b"".join(events[:3]))
    for event in events[3:]:
        ends.note(event)
    assert response_meta(ends) == ("chatcmpl-1", ("length",))
    assert response_meta((ends.first, tuple(ends.last))) == ("chatcmpl-1", ("length",))
    assert response_meta(StreamEnds()) == ("", ())


CASES = [
    # app, path, body, query, (reason whole, reason streamed), id wanted
    (FakeProvider, "/v1/chat/completions", {"model": "gpt-4o", "messages": MESSAGES}, b"",
     "stop", True),
    (FakeAnthropic, "/v1/messages",
     {"model": "claude-sonnet-4", "max_tokens": 50, "messages": MESSAGES}, b"", "end_turn", True),
    (FakeGemini, "/v1beta/models/gemini-2.0-flash:generateContent",
     {"contents": [{"role": "user", "parts": [{"text": "say something"}]}]}, b"", "STOP", True),
    (FakeCohere, "/v2/chat", {"model": "command-r", "messages": MESSAGES}, b"", "COMPLETE", True),
    (FakeOllama, "/api/chat", {"model": "llama3", "messages": MESSAGES}, b"", "stop", False),
]  # fmt: skip


@pytest.mark.parametrize(
    ("app", "path", "body", "query", "reason", "has_id"),
    CASES,
    ids=lambda v: getattr(v, "__name__", None),
)
async def test_whole_and_streamed_answers_give_id_and_finish_reason(
    app: Any, path: str, body: dict[str, Any], query: bytes, reason: str, has_id: bool
) -> None:
    whole = await _call(app(), path, {**body, "stream": False} if app is not FakeGemini else body)
    document = orjson.loads(whole)
    response_id, reasons = response_meta(whole)
    assert reasons == (reason,)
    if has_id:
        assert response_id == document.get("id", document.get("responseId"))
        assert response_id
    else:
        assert response_id == ""

    if app is FakeGemini:
        stream = await _call(
            app(), path.replace(":generateContent", ":streamGenerateContent"), body, b"alt=sse"
        )
    elif app is FakeProvider:
        stream = await _call(
            app(), path, {**body, "stream": True, "stream_options": {"include_usage": True}}
        )
    else:
        stream = await _call(app(), path, {**body, "stream": True})
    streamed_id, streamed_reasons = response_meta(_tail(stream))
    assert streamed_reasons == (reason,)
    assert bool(streamed_id) is has_id


def test_bedrock_converse_stop_reason() -> None:
    # Converse answers carry no id; the stop reason is the finish reason.
    body = orjson.dumps(
        {
            "output": {"message": {"role": "assistant", "content": [{"text": "hi"}]}},
            "stopReason": "end_turn",
            "usage": {"inputTokens": 3, "outputTokens": 1, "totalTokens": 4},
        }
    )
    assert response_meta(body) == ("", ("end_turn",))


def test_nothing_readable_gives_nothing() -> None:
    assert response_meta(b"not json") == ("", ())
    assert response_meta(None) == ("", ())


def test_only_the_chunks_that_can_add_an_id_or_a_reason_are_parsed() -> None:
    # A chunk without a string-valued reason key adds nothing once the id is known, and an
    # OpenAI-format event gives its id without a parse; any reason, however spaced, is read.
    first = (
        b'data: {"id":"chatcmpl-9","choices":[{"delta":{"role":"assistant"},'
        b'"finish_reason":null}]}\n\n'
    )
    spaced = (
        b'data: {"id": "chatcmpl-9", "choices": [{"delta": {}, "finish_reason" : "length"}]}\n\n'
    )
    usage = b'data: {"id":"chatcmpl-9","choices":[],"usage":{"prompt_tokens":3}}\n\n'
    assert response_meta((first, (spaced, usage, b"data: [DONE]\n\n"))) == (
        "chatcmpl-9",
        ("length",),
    )
    # Not parsed: the usage chunk's id would be read, but the first one's came first.
    assert response_meta((first, (usage,))) == ("chatcmpl-9", ())
    # An id with an escape in it, or another format, is parsed as before.
    escaped = b'data: {"id":"chat\\"cmpl","choices":[{"delta":{},"finish_reason":null}]}\n\n'
    assert response_meta((escaped, ())) == ('chat"cmpl', ())
    anthropic = b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1"}}\n\n'
    delta = (
        b'event: message_delta\ndata: {"type":"message_delta",'
        b'"delta":{"stop_reason":"end_turn"}}\n\n'
    )
    assert response_meta((anthropic, (delta,))) == ("msg_1", ("end_turn",))
