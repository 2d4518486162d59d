"""Usage events: immutable, idempotent by id."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class TokenType(StrEnum):
    """Disjoint kinds of tokens (see TokenType in meterline/dataplane/v1/usage.proto)."""

    INPUT = "input"
    OUTPUT = "output"
    CACHED_INPUT = "cached_input"
    REASONING = "reasoning"
    CACHE_WRITE = "cache_write"


@dataclass(frozen=True)
class UsageEvent:
    """One LLM usage record: the tokens of one type of one request."""

    id: str
    source: str
    type: str
    subject: str
    time: datetime
    provider: str
    model: str
    token_type: TokenType
    tokens: int
    status_code: int
    route: str = ""
    request_id: str = ""
    estimated: bool = False
    # Milliseconds from the request's arrival to its first byte to the client / to its end;
    # None when unknown (a failed attempt has no first token).
    time_to_first_token_ms: int | None = None
    latency_ms: int | None = None

    @property
    def billable(self) -> bool:
        """Failed upstream requests are recorded but not billed."""
        return 200 <= self.status_code < 300
