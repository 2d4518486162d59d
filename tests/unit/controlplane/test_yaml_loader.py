"""The strict YAML loader: duplicate keys refused (also beside merges), merges may override."""

from __future__ import annotations

import pytest

from controlplane.declarative.load import load_text
from controlplane.errors import InvalidArgument


def test_a_merged_key_may_be_overridden() -> None:
    text = "base: &b {a: 1, b: 2}\nchild:\n  <<: *b\n  b: 3\n"
    assert load_text(text) == {"base": {"a": 1, "b": 2}, "child": {"a": 1, "b": 3}}


@pytest.mark.parametrize(
    "text",
    [
        "a: 1\nb: 2\na: 3\n",
        "base: &b {x: 1}\nchild:\n  <<: *b\n  y: 1\n  y: 2\n",
        "outer:\n  - {k: 1, k: 1}\n",
    ],
    ids=["top-level", "beside-a-merge", "nested-same-value"],
)
def test_a_repeated_key_is_refused_with_its_line(text: str) -> None:
    with pytest.raises(
        InvalidArgument, match=r"invalid YAML at line \d+, column \d+: .*duplicate key"
    ):
        load_text(text)


def test_timestamps_stay_strings() -> None:
    assert load_text("start: 2026-01-01T00:00:00Z\n") == {"start": "2026-01-01T00:00:00Z"}
