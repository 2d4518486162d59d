"""The data a compiled snapshot is made of: consumers, key-auth and ai-proxy policies, targets.

Plain frozen values, no behaviour: the translators, balancers and limits built from them live in
the layers above (``dataplane.proxy.runtime`` assembles them per route).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from dataplane.http.client import Timeouts

_NO_ALIASES: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Consumer:
    """An API caller as the hot path needs it."""

    id: str
    username: str


@dataclass(frozen=True, slots=True)
class KeyAuthPolicy:
    """Where the key-auth plugin looks for a key (header names are lower-case bytes)."""

    header_names: frozenset[bytes]
    query_names: frozenset[str]
    key_in_query: bool
    key_in_bearer: bool


@dataclass(frozen=True, slots=True)
class ProviderTarget:
    """One upstream endpoint of a provider, with its secret auth already resolved."""

    provider: str
    url: str
    # scheme://host:port: requests to one origin share one pooled HTTP client.
    origin: str
    # Provider secrets: never logged, never sent to a client.
    auth_headers: tuple[tuple[bytes, bytes], ...]
    auth_body_params: tuple[tuple[str, str], ...]

    def __repr__(self) -> str:
        # The default repr would print the provider key into any log or traceback.
        return f"ProviderTarget(provider={self.provider!r}, url={self.url!r})"


@dataclass(frozen=True, slots=True)
class AiProxyPolicy:
    """The ai-proxy plugin of a route."""

    route_type: str
    target: ProviderTarget
    # Replaces the client's model when set.
    model: str
    # Default max_tokens when the client sets none; 0 means none.
    max_tokens: int
    # "openai" or "anthropic": the format the route speaks to its clients.
    llm_format: str = "openai"
    # Client model names replaced first ("fast" -> "gpt-4o-mini").
    model_aliases: Mapping[str, str] = field(default_factory=lambda: _NO_ALIASES, compare=False)
    # When not empty, the client's model (after aliasing) must be one of these.
    model_allow_list: frozenset[str] = frozenset()
    # Upstream timeouts of this target; None means the pooled session's defaults.
    timeout: Timeouts | None = None
