"""The immutable runtime config a data plane serves from: what a Snapshot compiles into."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

from dataplane.admission.entitlements import EMPTY_TABLE, EnforcementTable
from dataplane.config.routing import RouteTable
from dataplane.http.client import Timeouts

if TYPE_CHECKING:
    from dataplane.proxy.balancer import Balancer
    from dataplane.admission.ratelimit import RouteRateLimits
    from dataplane.translate.base import Translator

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
    # Chosen once per snapshot from (llm_format, provider, route_type); None means OpenAI.
    translator: Translator | None = field(default=None, compare=False)
    # Client model names replaced first ("fast" -> "gpt-4o-mini").
    model_aliases: Mapping[str, str] = field(default_factory=lambda: _NO_ALIASES, compare=False)
    # When not empty, the client's model (after aliasing) must be one of these.
    model_allow_list: frozenset[str] = frozenset()
    # Upstream timeouts of this target; None means the pooled session's defaults.
    timeout: Timeouts | None = None
    # ai-proxy-advanced: every target (this policy is the first one's, with the balancer).
    balancer: Balancer | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class CompiledRoute:
    """A route with its plugins resolved (route > service > global)."""

    id: str
    name: str
    service_id: str
    methods: frozenset[str]
    key_auth: KeyAuthPolicy | None
    ai_proxy: AiProxyPolicy | None
    # Client headers never forwarded upstream: credentials and hop-by-hop headers.
    dropped_headers: frozenset[bytes]
    # rate-limiting-advanced / ai-rate-limiting-advanced of the route (None: no limits).
    rate_limits: RouteRateLimits | None = None


@dataclass(frozen=True, slots=True)
class RuntimeConfig:
    """A compiled snapshot. Swapped in whole; never mutated."""

    version: str
    routes: RouteTable[CompiledRoute]
    consumers_by_key_hash: Mapping[str, Consumer]
    # Entitlements, budgets and prices per consumer (dataplane.admission.entitlements).
    enforcement: EnforcementTable = field(default=EMPTY_TABLE, compare=False)

    def __repr__(self) -> str:
        return (
            f"RuntimeConfig(version={self.version!r}, routes={len(self.routes)}, "
            f"consumers={len(set(self.consumers_by_key_hash.values()))})"
        )
