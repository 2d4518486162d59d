"""Token counts of one request, split into the contract's disjoint kinds.

Counters keep "absent" (None) apart from zero: a provider that reports no usage is not the same
as one that reports 0 tokens. The kinds are disjoint, so their sum is every token of the request
exactly once (see ``TokenType`` in usage.proto).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """Token counts a provider reported (or the gateway estimated); None where none."""

    # Prompt tokens not read from a cache.
    input_tokens: int | None
    # Completion tokens other than reasoning.
    output_tokens: int | None
    # Prompt tokens read from a cache.
    cached_input_tokens: int | None = None
    # Reasoning tokens (OpenAI reports them inside completion_tokens).
    reasoning_tokens: int | None = None
    # Prompt tokens written to a cache (Anthropic cache_creation_input_tokens).
    cache_write_tokens: int | None = None

    @property
    def total(self) -> int:
        """Every counted token, each once."""
        return sum(
            count or 0
            for count in (
                self.input_tokens,
                self.output_tokens,
                self.cached_input_tokens,
                self.reasoning_tokens,
                self.cache_write_tokens,
            )
        )


# The most tokens one count of one request may hold: far above any model's context, far below
# int64 (a sum of every kind of a request, and of many requests, stays exact).
MAX_COUNT = 10**12


def count(value: Any) -> int | None:
    """``value`` if it is a token count (an int in [0, MAX_COUNT], not a bool), else None."""
    if type(value) is int:  # the common case (JSON's ints), without two isinstance calls
        return value if 0 <= value <= MAX_COUNT else None
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_COUNT:
        return value
    return None


def malformed(usage: dict[str, Any], keys: tuple[str, ...]) -> bool:
    """True if one of ``keys`` holds something other than null or a valid count.

    A provider's usage with such a field (a string, a negative, a fraction, ``1e30``, 2^63) is
    not trusted at all: the caller treats the whole usage as absent, so the request is
    estimated and marked estimated instead of billed as 0 or as a wrong figure.
    """
    # map(usage.get, ...) and count()'s common case inline: this runs on every response.
    for value in map(usage.get, keys):
        if (
            value is not None
            and not (type(value) is int and 0 <= value <= MAX_COUNT)
            and count(value) is None
        ):
            return True
    return False


def minus(whole: int | None, part: int | None) -> int | None:
    """``whole - part``, never below zero; None if ``whole`` is absent."""
    if whole is None:
        return None
    return max(whole - (part or 0), 0)
