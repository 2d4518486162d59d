"""The runtime a data plane serves from: a compiled snapshot, swapped in whole, never mutated.

Each route carries the data of its plugins (``dataplane.config.model``) and the objects built
from them once per snapshot: its translator, its balancer, its rate limits.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from dataplane.admission.entitlements import EMPTY_TABLE, EnforcementTable
from dataplane.admission.ratelimit import RouteRateLimits
from dataplane.config.gcp_tokens import ServiceAccountTokens
from dataplane.config.model import AiProxyPolicy, Consumer, KeyAuthPolicy
from dataplane.config.providers import ROUTE_TYPE_PRESERVE
from dataplane.config.routing import RouteTable
from dataplane.proxy.balancer import Balancer
from dataplane.translate.base import Translator
from dataplane.translate.select import OPENAI


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
    # Chosen once per snapshot from (llm_format, provider, route_type) of the route's ai-proxy.
    translator: Translator = field(default=OPENAI, compare=False)
    # ai-proxy-advanced: every target (``ai_proxy`` is the first one's policy).
    balancer: Balancer | None = field(default=None, compare=False)
    # Kong's strip_path: the matched part of the path is not forwarded (preserve routes).
    strip_path: bool = True
    # Kong's preserve_host: the client's Host header goes upstream instead of the target's.
    preserve_host: bool = False
    # A route for https only: the status a plain http request is answered with (426, or a
    # redirect 301/302/307/308); 0 serves http.
    https_redirect: int = 0
    # Not empty: this data plane does not serve the route (its plugins did not compile); it
    # answers 503 with this message.
    refused: str = ""
    # Some target of the route has logging.log_payloads (observability.payloads).
    logs_payloads: bool = False
    # Derived once (__post_init__), read per request: GET .../models is answered by the
    # gateway (an ai-proxy route that is not preserve), and the whole path goes upstream
    # (Kong's strip_path false on a preserve route).
    answers_models: bool = field(init=False, compare=False, default=False)
    forwards_whole_path: bool = field(init=False, compare=False, default=False)
    # Kong's key_in_body: the body is read before authenticating.
    key_in_body: bool = field(init=False, compare=False, default=False)

    def __post_init__(self) -> None:
        preserve = self.ai_proxy is not None and self.ai_proxy.route_type == ROUTE_TYPE_PRESERVE
        object.__setattr__(self, "answers_models", self.ai_proxy is not None and not preserve)
        object.__setattr__(self, "forwards_whole_path", preserve and not self.strip_path)
        key_in_body = self.key_auth is not None and self.key_auth.key_in_body
        object.__setattr__(self, "key_in_body", key_in_body)


@dataclass(frozen=True, slots=True)
class RuntimeConfig:
    """A compiled snapshot. Swapped in whole; never mutated."""

    version: str
    routes: RouteTable[CompiledRoute]
    consumers_by_key_hash: Mapping[str, Consumer]
    # Entitlements, budgets and prices per consumer (dataplane.admission.entitlements).
    enforcement: EnforcementTable = field(default=EMPTY_TABLE, compare=False)
    # What this data plane refused of the snapshot (routes not served, plugins not applied).
    refused: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return (
            f"RuntimeConfig(version={self.version!r}, routes={len(self.routes)}, "
            f"consumers={len(set(self.consumers_by_key_hash.values()))})"
        )


def carry_state(previous: RuntimeConfig, config: RuntimeConfig) -> int:
    """Let ``config``'s balancers keep the counters of ``previous``'s unchanged ones (and its
    access-token sources their cached tokens).

    Routes match by id; a balancer keeps its state only if its config is byte-identical.
    Returns how many balancers kept their state. Call before ``config`` goes live.
    """
    _carry_tokens(previous, config)
    old = {route.id: route.balancer for route in previous.routes if route.balancer is not None}
    kept = 0
    if not old:
        return kept
    for route in config.routes:
        balancer = route.balancer
        before = old.get(route.id)
        if balancer is not None and before is not None and balancer.adopt(before):
            kept += 1
    return kept


def _token_sources(config: RuntimeConfig) -> list[ServiceAccountTokens]:
    sources: list[ServiceAccountTokens] = []
    for route in config.routes:
        policies = [target.policy for target in route.balancer.targets] if route.balancer else []
        if route.ai_proxy is not None:
            policies.append(route.ai_proxy)
        for policy in policies:
            credentials = policy.target.credentials
            if isinstance(credentials, ServiceAccountTokens):
                sources.append(credentials)
    return sources


def _carry_tokens(previous: RuntimeConfig, config: RuntimeConfig) -> None:
    """Let ``config``'s access-token sources keep ``previous``'s cached tokens (same service
    account, same token endpoint): a new snapshot does not cost a token fetch."""
    old = {source.fingerprint: source for source in _token_sources(previous)}
    if not old:
        return
    for source in _token_sources(config):
        before = old.get(source.fingerprint)
        if before is not None and before is not source:
            source.adopt(before)
