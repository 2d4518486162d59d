"""Placing the ``meterline`` figures beside the usage chunk of a relayed stream."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dataplane.admission.cost import _USAGE_MARKERS, _beside_usage

FIGURES = {"cost": "0.01", "currency": "USD"}
DELTA = b'data: {"choices":[{"delta":{"content":"hi"}}],"usage":null}\n\n'
USAGE = b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}\n\n'
DONE = b"data: [DONE]\n\n"


def _by_lines(events: bytes, figures: dict[str, object]) -> tuple[bytes, bool]:
    """The reference: every line looked at, the first usage chunk rewritten."""
    out: list[bytes] = []
    placed = False
    for line in events.split(b"\n"):
        if not placed and line.startswith(b"data:") and any(m in line for m in _USAGE_MARKERS):
            try:
                chunk = orjson.loads(line[5:])
            except orjson.JSONDecodeError:
                chunk = None
            if isinstance(chunk, dict) and isinstance(chunk.get("usage"), dict):
                chunk["meterline"] = figures
                line = b"data: " + orjson.dumps(chunk)
                placed = True
        out.append(line)
    return b"\n".join(out), placed


@pytest.mark.parametrize(
    ("events", "placed"),
    [
        pytest.param(DELTA * 3 + USAGE + DONE, True, id="usage-before-done"),
        pytest.param(USAGE, True, id="usage-alone"),
        pytest.param(DELTA + DONE, False, id="no-usage"),
        pytest.param(b"", False, id="empty"),
        pytest.param(
            DELTA + USAGE.replace(b"\n\n", b"\r\n\r\n") + DONE, True, id="crlf-line-endings"
        ),
        pytest.param(
            b'data: {"usage": {"prompt_tokens":1,"completion_tokens":1}}\n\n', True, id="spaced"
        ),
        pytest.param(b': "usage":{"x":1}\n\n' + USAGE, True, id="marker-in-a-comment-first"),
        pytest.param(b'data: {"usage":{broken\n\n' + USAGE, True, id="unparsable-line-first"),
        pytest.param(b'data: ["usage":{]\n\n', False, id="not-an-object"),
        pytest.param(USAGE + USAGE, True, id="only-the-first-of-two"),
        pytest.param(USAGE[:-2], True, id="no-trailing-newline"),
    ],
)
def test_figures_go_beside_the_first_usage_chunk(events: bytes, placed: bool) -> None:
    out, was_placed = _beside_usage(events, FIGURES)
    assert was_placed is placed
    assert (out, was_placed) == _by_lines(events, FIGURES)
    if placed:
        lines = [line for line in out.split(b"\n") if b'"meterline"' in line]
        assert len(lines) == 1
        chunk = orjson.loads(lines[0][5:].strip())
        assert chunk["meterline"] == FIGURES and isinstance(chunk["usage"], dict)
    else:
        assert out == events


@given(st.lists(st.sampled_from([DELTA, USAGE, DONE, b": keep-alive\n\n", b"\r\n"]), max_size=8))
def test_same_bytes_as_the_line_by_line_reference(parts: list[bytes]) -> None:
    events = b"".join(parts)
    assert _beside_usage(events, FIGURES) == _by_lines(events, FIGURES)
