"""SSE splitting and usage extraction from chat-completions streams."""

from __future__ import annotations

import orjson
import pytest

from dataplane.openai_format import ChatStreamScanner, TokenUsage, read_body_usage
from dataplane.sse import SseSplitter, event_data


def chunk(document: dict) -> bytes:
    return b"data: " + orjson.dumps(document) + b"\n\n"


DELTA = chunk(
    {
        "model": "gpt-4o-2024-08-06",
        "choices": [{"index": 0, "delta": {"content": "hi"}}],
        "usage": None,
    }
)
USAGE = chunk(
    {
        "model": "gpt-4o-2024-08-06",
        "choices": [],
        "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19},
    }
)
DONE = b"data: [DONE]\n\n"
STREAM = DELTA + DELTA + USAGE + DONE


@pytest.mark.parametrize("size", [1, 2, 7, 64, len(STREAM)])
def test_splitter_yields_whole_events_whatever_the_chunking(size: int) -> None:
    splitter = SseSplitter()
    events: list[bytes] = []
    for start in range(0, len(STREAM), size):
        events.extend(splitter.feed(STREAM[start : start + size]))
    assert events == [DELTA, DELTA, USAGE, DONE]
    assert splitter.flush() == b""


def test_splitter_handles_crlf_and_keeps_a_trailing_partial_event() -> None:
    splitter = SseSplitter()
    assert splitter.feed(b"data: a\r\n\r\ndata: b\n\ndata: c") == [
        b"data: a\r\n\r\n",
        b"data: b\n\n",
    ]
    assert splitter.flush() == b"data: c"


def test_event_data_joins_data_lines() -> None:
    assert event_data(b": comment\nevent: x\ndata: one\ndata:two\n\n") == b"one\ntwo"
    assert event_data(b": keep-alive\n\n") is None


@pytest.mark.parametrize(
    ("hide", "forwarded"),
    [
        pytest.param(True, [DELTA, DELTA, DONE], id="hidden-when-the-gateway-asked"),
        pytest.param(False, [DELTA, DELTA, USAGE, DONE], id="kept-when-the-client-asked"),
    ],
)
def test_scanner_reads_usage_and_hides_the_usage_chunk(hide: bool, forwarded: list[bytes]) -> None:
    scanner = ChatStreamScanner(hide_usage_chunk=hide)
    assert [e for e in [DELTA, DELTA, USAGE, DONE] if scanner.accept(e)] == forwarded
    assert scanner.usage == TokenUsage(input_tokens=12, output_tokens=7)
    assert scanner.model == "gpt-4o-2024-08-06"


def test_scanner_without_usage_reports_none() -> None:
    scanner = ChatStreamScanner(hide_usage_chunk=True)
    assert all(scanner.accept(e) for e in [DELTA, DONE])
    assert scanner.usage is None


def test_usage_inside_a_content_chunk_is_read_but_not_hidden() -> None:
    both = chunk(
        {"choices": [{"delta": {}}], "usage": {"prompt_tokens": 1, "completion_tokens": 2}}
    )
    scanner = ChatStreamScanner(hide_usage_chunk=True)
    assert scanner.accept(both)
    assert scanner.usage == TokenUsage(1, 2)


def test_spaced_json_usage_is_found() -> None:
    spaced = b'data: {"choices": [], "usage" : {"prompt_tokens": 3, "completion_tokens": 4}}\n\n'
    scanner = ChatStreamScanner(hide_usage_chunk=True)
    assert not scanner.accept(spaced)
    assert scanner.usage == TokenUsage(3, 4)


@pytest.mark.parametrize(
    ("body", "usage", "model"),
    [
        pytest.param(
            b'{"model": "m1", "usage": {"prompt_tokens": 5, "completion_tokens": 0}}',
            TokenUsage(5, 0),
            "m1",
            id="zero-is-not-absent",
        ),
        pytest.param(b'{"model": "m1"}', None, "m1", id="no-usage"),
        pytest.param(b'{"usage": {"prompt_tokens": 5}}', TokenUsage(5, None), None, id="partial"),
        pytest.param(b"<html>bad gateway</html>", None, None, id="not-json"),
    ],
)
def test_read_body_usage(body: bytes, usage: TokenUsage | None, model: str | None) -> None:
    assert read_body_usage(body) == (usage, model)
