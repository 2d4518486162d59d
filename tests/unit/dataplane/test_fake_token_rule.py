"""The fake provider's documented, deterministic token rule."""

from __future__ import annotations

import pytest

from dataplane.testing.fake_openai import prompt_tokens, reply_words


@pytest.mark.parametrize(
    ("messages", "expected"),
    [
        pytest.param([], 0, id="none"),
        pytest.param([{"role": "user", "content": "hello there"}], 5, id="one"),
        pytest.param(
            [{"role": "system", "content": "be brief"}, {"role": "user", "content": "a  b\nc"}],
            11,
            id="two-whitespace-split",
        ),
        pytest.param(
            [{"role": "user", "content": [{"type": "text", "text": "x y"}, {"type": "image_url"}]}],
            5,
            id="content-parts",
        ),
    ],
)
def test_prompt_tokens(messages, expected: int) -> None:
    assert prompt_tokens(messages) == expected


def test_reply_echoes_the_last_message_and_honours_max_tokens() -> None:
    messages = [{"role": "user", "content": "one two three"}]
    assert reply_words(messages) == (["fake", "reply:", "one", "two", "three"], "stop")
    assert reply_words(messages, 2) == (["fake", "reply:"], "length")
