"""NdjsonSplitter: network chunks cut into whole lines, byte for byte."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from dataplane.http.ndjson import NdjsonSplitter

LINES = [b'{"a":1}\n', b'{"message":{"content":"x y"}}\n', b'{"done":true}\n']


@given(st.lists(st.integers(min_value=1, max_value=40), max_size=10))
def test_any_chunking_gives_the_same_lines(cuts) -> None:
    data = b"".join(LINES)
    splitter = NdjsonSplitter()
    lines: list[bytes] = []
    start = 0
    for size in cuts:
        lines += splitter.feed(data[start : start + size])
        start += size
    lines += splitter.feed(data[start:])
    assert lines == LINES
    assert splitter.flush() == b""


def test_an_unterminated_last_line_is_flushed() -> None:
    splitter = NdjsonSplitter()
    assert splitter.feed(b'{"a":1}\n{"b"') == [b'{"a":1}\n']
    assert splitter.feed(b":2}") == []
    assert splitter.flush() == b'{"b":2}'
