"""SSE splitting and usage extraction from chat-completions streams."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dataplane.http.sse import SseSplitter, event_data
from dataplane.translate.openai_format import ChatStreamScanner, TokenUsage, read_body_usage


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


def _reference_split(data: bytes) -> tuple[list[bytes], bytes]:
    """The splitter's contract, written the slow and obvious way."""
    events: list[bytes] = []
    start = 0
    while True:
        found = [(data.find(sep, start), sep) for sep in (b"\n\n", b"\r\n\r\n")]
        found = [(index, sep) for index, sep in found if index != -1]
        if not found:
            return events, data[start:]
        index, sep = min(found)
        events.append(data[start : index + len(sep)])
        start = index + len(sep)


def _reference_event_data(event: bytes) -> bytes | None:
    parts = [
        line[6:] if line.startswith(b"data: ") else line[5:]
        for line in event.splitlines()
        if line.startswith(b"data:")
    ]
    return b"\n".join(parts) if parts else None


_SSE_PIECES = st.sampled_from(
    [b"data: ", b"data:", b"x", b"{}", b"\n", b"\r", b"\r\n", b"\n\n", b"\r\n\r\n", b": c", b"e"]
)


@given(
    pieces=st.lists(_SSE_PIECES, max_size=40),
    cuts=st.lists(st.integers(0, 200), max_size=6),
)
def test_splitter_matches_the_reference_on_any_bytes_and_chunking(
    pieces: list[bytes], cuts: list[int]
) -> None:
    data = b"".join(pieces)
    splitter = SseSplitter()
    events: list[bytes] = []
    previous = 0
    for cut in [*sorted({min(cut, len(data)) for cut in cuts}), len(data)]:
        events.extend(splitter.feed(data[previous:cut]))
        previous = cut
    expected_events, expected_rest = _reference_split(data)
    assert events == expected_events
    assert splitter.flush() == expected_rest
    for event in [*events, expected_rest]:
        assert event_data(event) == _reference_event_data(event)
