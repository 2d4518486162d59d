"""The strict YAML loader: duplicate keys refused (also beside merges), merges may override."""

from __future__ import annotations

import time

import pytest

from controlplane.declarative import parse_document
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


def _laughs(levels: int) -> str:
    text = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    previous = "a"
    for name in "bcdefghijk"[: levels - 1]:
        text += f"{name}: &{name} [" + ", ".join([f"*{previous}"] * 9) + "]\n"
        previous = name
    return text


@pytest.mark.parametrize("levels", [7, 9], ids=["9^7", "9^9"])
def test_billion_laughs_is_refused_quickly_before_expanding(levels: int) -> None:
    started = time.perf_counter()
    with pytest.raises(InvalidArgument, match=r"aliases expand the document by more than"):
        load_text(_laughs(levels))
    assert time.perf_counter() - started < 0.5


def test_billion_laughs_under_a_static_entitlement_config_is_refused() -> None:
    # Defect 9 of issue 18: the one place aliases used to be expanded.
    text = (
        '_format_version: "3.0"\nbilling:\n  plans:\n    - key: p\n      rate_cards:\n'
        "        - entitlement:\n            type: static\n            config:\n"
        + "".join(f"              {line}\n" for line in _laughs(7).splitlines())
    )
    with pytest.raises(InvalidArgument, match="aliases expand the document"):
        parse_document(text)


def test_merges_count_as_aliases_and_are_bounded() -> None:
    many = "base: &b {a: 1}\nitems:\n" + "".join(f"  - {{<<: *b, i: {i}}}\n" for i in range(10_001))
    with pytest.raises(InvalidArgument, match="more than 10,000 aliases"):
        load_text(many)
    few = "base: &b {a: 1}\nitems:\n" + "".join(f"  - {{<<: *b, i: {i}}}\n" for i in range(100))
    assert load_text(few)["items"][99] == {"a": 1, "i": 99}


def test_a_recursive_alias_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="recursive alias"):
        load_text("a: &a\n  b: *a\n")


def test_a_big_scalar_repeated_by_aliases_is_bounded_by_its_size() -> None:
    text = f"big: &big {'x' * 100_000}\nmany: [" + ", ".join(["*big"] * 50) + "]\n"
    with pytest.raises(InvalidArgument, match="aliases expand the document"):
        load_text(text)
