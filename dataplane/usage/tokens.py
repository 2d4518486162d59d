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


def count(value: Any) -> int | None:
    """``value`` if it is a token count (a non-negative int, not a bool), else None."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def minus(whole: int | None, part: int | None) -> int | None:
    """``whole - part``, never below zero; None if ``whole`` is absent."""
    if whole is None:
        return None
    return max(whole - (part or 0), 0)
