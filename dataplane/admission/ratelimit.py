"""Rate limits at the data plane: Kong's rate-limiting-advanced and ai-rate-limiting-advanced.

Each plugin is compiled once per snapshot (:func:`compile_route_limits`) into immutable
:class:`Limit` objects per route (and per consumer where consumer-scoped plugins apply); the
counters live in one :class:`RateLimiter` per gateway, which outlives snapshots, so a new
snapshot with the same plugin keeps its windows.

Counting. Every (limit, window_size) pair is a window; all windows of a plugin are enforced at
once. A window is a fixed, clock-aligned bucket (``now // size``); ``sliding`` weighs the
previous bucket by the part of it still inside the sliding window (Kong's estimate:
``previous * (size - elapsed) / size + current``). Requests are counted when admitted (refused
requests are not counted). Tokens and cost are known only after the response: a request is
refused when the window is already spent, and its tokens are counted when its usage is
recorded. Cost is counted in integer pico-units of the currency (10^-12), priced at the route's
ai-proxy ``input_cost``/``output_cost`` (per million tokens, Kong's), so no float touches money.

Stores. ``local`` (default): in-process dicts, per data plane. ``redis``: one round trip per
check (a Lua script that reads, decides and increments atomically) and one per count (a
pipeline); keys expire after two windows. Redis unreachable: with ``fault_tolerant`` (default)
the request goes through and a warning is logged (once per outage); without it, 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal, InvalidOperation
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

from dataplane.errors import DataPlaneError, Rejection
from dataplane.http.asgi import Headers, Scope
from meterline.dataplane.v1 import usage_pb2

if TYPE_CHECKING:
    from dataplane.config.model import Consumer
    from meterline.dataplane.v1 import snapshot_pb2

logger = logging.getLogger(__name__)

RATE_LIMITING: Final = "rate-limiting-advanced"
AI_RATE_LIMITING: Final = "ai-rate-limiting-advanced"
PLUGIN_NAMES: Final = (RATE_LIMITING, AI_RATE_LIMITING)

REQUESTS: Final = "requests"
TOKEN_STRATEGIES: Final = ("total_tokens", "prompt_tokens", "completion_tokens", "cost")
WINDOW_TYPES: Final = ("sliding", "fixed")
IDENTIFIERS: Final = ("consumer", "ip", "service", "header")
STRATEGIES: Final = ("local", "redis")
# Header suffixes of Kong's windows; other sizes use their number of seconds.
WINDOW_NAMES: Final = {
    1: "Second",
    60: "Minute",
    3600: "Hour",
    86400: "Day",
    2592000: "Month",
    31536000: "Year",
}
# Money is counted in integer pico-units of the currency.
PICO: Final = Decimal(10) ** 12
_PER_MILLION_TO_PICO: Final = PICO / Decimal(1_000_000)
# Local counters kept before stale ones are swept.
_SWEEP_AT: Final = 50_000
# How long a Redis outage skips Redis entirely (fail fast instead of a timeout per request).
_REDIS_RETRY_S: Final = 1.0

_PROMPT_TYPES: Final = frozenset(
    {
        usage_pb2.TOKEN_TYPE_INPUT,
        usage_pb2.TOKEN_TYPE_CACHED_INPUT,
        usage_pb2.TOKEN_TYPE_CACHE_WRITE,
    }
)
_COMPLETION_TYPES: Final = frozenset({usage_pb2.TOKEN_TYPE_OUTPUT, usage_pb2.TOKEN_TYPE_REASONING})


# -- compiled, immutable ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RedisSettings:
    """Where a plugin's shared counters live; one client (and pool) per distinct value."""

    host: str
    port: int
    database: int
    username: str
    password: str = field(repr=False)
    timeout_s: float


@dataclass(frozen=True, slots=True)
class Window:
    """One (limit, window_size) pair, with its header names rendered once."""

    limit: int  # in counting units: requests, tokens, or pico-units of money
    size: int  # seconds
    limit_text: bytes  # the limit as the client reads it ("10", "0.50")
    limit_header: bytes
    remaining_header: bytes


@dataclass(frozen=True, slots=True)
class Match:
    """One match entry of a policy (Kong 3.14): its type, header name and values."""

    type: str
    key: bytes  # header name (type "header"), lower-case
    values: frozenset[str]
    # type "ip": values as networks (an address is a /32 or /128).
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    partition_by: bool


@dataclass(frozen=True, slots=True)
class Policy:
    """The match entries of an ai-rate-limiting-advanced policy: all must admit a request."""

    id: str
    matches: tuple[Match, ...]

    def key(
        self,
        consumer: Consumer | None,
        scope: Scope,
        *,
        model: str,
        provider: str,
    ) -> str | None:
        """The counter key of a request this policy applies to; None if it does not."""
        parts = [self.id]
        for match in self.matches:
            value = _match_value(match, consumer, scope, model=model, provider=provider)
            if value is None:
                return None
            if match.partition_by:
                parts.append(f"{match.type}={value}")
        return "p:" + "|".join(parts)


def _match_value(
    match: Match, consumer: Consumer | None, scope: Scope, *, model: str, provider: str
) -> str | None:
    """The request's value for ``match`` if the match admits it, else None."""
    kind = match.type
    if kind == "consumer":
        if consumer is None:
            return None
        if match.values and not match.values & {consumer.username, consumer.id}:
            return None
        return consumer.id
    if kind == "ip":
        client = scope.get("client")
        address = client[0] if client else ""
        if not match.networks:
            return address or None
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return None
        return next((str(net) for net in match.networks if ip in net), None)
    if kind == "header":
        headers: Headers = scope["headers"]
        found = next((v for n, v in headers if n == match.key), None)
        if found is None:
            return None
        text = found.decode("latin-1")
        return text if not match.values or text in match.values else None
    if kind == "path":
        path: str = scope.get("raw_path", b"").decode("latin-1")
        if not match.values:
            return path
        return next((v for v in sorted(match.values) if path.startswith(v)), None)
    value = model if kind == "model" else provider
    if not value:
        return None
    return value if not match.values or value in match.values else None


@dataclass(frozen=True, slots=True)
class Limit:
    """One rate-limiting plugin as it applies to one route."""

    plugin_id: str
    # Prefix of the counter keys: the plugin's namespace, or its id.
    namespace: str
    # "requests", or a tokens_count_strategy.
    measure: str
    windows: tuple[Window, ...]
    sliding: bool
    identifier: str
    header_name: bytes
    redis: RedisSettings | None
    fault_tolerant: bool
    hide_client_headers: bool
    # Cost: pico-units per token of input (prompt) and output (completion).
    input_pico: Decimal = Decimal(0)
    output_pico: Decimal = Decimal(0)
    # Kong's error_code / error_message of a refusal (0 / empty: 429, Meterline's message).
    error_status: int = 0
    error_message: str = ""
    # Kong 3.14's policies[]: which requests count in this limit, and their counter key
    # (None: every request, keyed by ``identifier``).
    policy: Policy | None = None

    def amount(self, token_type: int, tokens: int) -> int:
        """What ``tokens`` of ``token_type`` count in this limit's windows."""
        measure = self.measure
        if measure == "total_tokens":
            return tokens
        prompt = token_type in _PROMPT_TYPES
        if measure == "prompt_tokens":
            return tokens if prompt else 0
        if measure == "completion_tokens":
            return tokens if token_type in _COMPLETION_TYPES else 0
        price = self.input_pico if prompt else self.output_pico
        return int((price * tokens).to_integral_value(rounding=ROUND_CEILING))


@dataclass(frozen=True, slots=True)
class RouteRateLimits:
    """The limits of one route: for consumers without consumer-scoped plugins, and per consumer."""

    default: tuple[Limit, ...]
    by_consumer: Mapping[str, tuple[Limit, ...]]

    def for_consumer(self, consumer_id: str | None) -> tuple[Limit, ...]:
        if consumer_id is None or not self.by_consumer:
            return self.default
        return self.by_consumer.get(consumer_id, self.default)


def _window_label(size: int) -> str:
    return WINDOW_NAMES.get(size, str(size))


def check_config(config: snapshot_pb2.RateLimitingConfig, *, plugin: str) -> str | None:
    """What is wrong with a wire rate-limiting config, or None (the first problem found)."""
    return (
        _check_plugin_fields(config, plugin=plugin)
        or _check_policies(config)
        or _check_windows(config)
        or _check_counting(config)
        or _check_tokens_strategy(config, plugin=plugin)
    )


def _check_plugin_fields(config: snapshot_pb2.RateLimitingConfig, *, plugin: str) -> str | None:
    """Something to limit, a well-formed refusal, and policies only where they apply."""
    if not config.windows and not any(policy.limits for policy in config.policies):
        return "has no windows (limit and window_size)"
    if config.error_code and not 400 <= config.error_code <= 599:
        return f"error_code {config.error_code} is not an HTTP error status"
    if any(c in config.error_message for c in "\r\n\0"):
        return "error_message must be one line"
    if config.policies and plugin != AI_RATE_LIMITING:
        return f"policies are for {AI_RATE_LIMITING} only"
    return None


def _check_policies(config: snapshot_pb2.RateLimitingConfig) -> str | None:
    for index, policy in enumerate(config.policies):
        problem = _check_policy(policy)
        if problem is not None:
            return f"policies[{index}]: {problem}"
    return None


def _check_windows(config: snapshot_pb2.RateLimitingConfig) -> str | None:
    for index, window in enumerate(config.windows):
        if window.window_size <= 0:
            return f"windows[{index}].window_size must be positive, got {window.window_size}"
        problem = _check_limit(window.limit, config.tokens_count_strategy)
        if problem is not None:
            return f"windows[{index}].{problem}"
    return None


def _check_limit(text: str, tokens_count_strategy: str) -> str | None:
    """A limit is a non-negative number, and an integer unless it counts cost."""
    try:
        limit = Decimal(text)
    except InvalidOperation:
        return f'limit is not a number: "{text}"'
    if not limit.is_finite() or limit < 0:
        return f'limit must be a non-negative number, got "{text}"'
    if tokens_count_strategy != "cost" and limit != limit.to_integral_value():
        return f'limit must be an integer, got "{text}"'
    return None


def _check_counting(config: snapshot_pb2.RateLimitingConfig) -> str | None:
    """Window type, identifier and the counters' store."""
    if config.window_type and config.window_type not in WINDOW_TYPES:
        return f'unknown window_type "{config.window_type}" (expected sliding or fixed)'
    if config.identifier and config.identifier not in IDENTIFIERS:
        return f'unknown identifier "{config.identifier}"'
    if config.identifier == "header" and not config.header_name:
        return 'identifier "header" needs header_name'
    if config.strategy and config.strategy not in STRATEGIES:
        return f'unknown strategy "{config.strategy}" (expected local or redis)'
    if config.strategy == "redis" and not config.redis.host:
        return 'strategy "redis" needs redis.host'
    if not 0 <= config.redis.port <= 65535:
        return f"redis.port {config.redis.port} is out of range"
    return None


def _check_tokens_strategy(config: snapshot_pb2.RateLimitingConfig, *, plugin: str) -> str | None:
    if plugin == AI_RATE_LIMITING:
        if config.tokens_count_strategy not in TOKEN_STRATEGIES:
            return f'unknown tokens_count_strategy "{config.tokens_count_strategy}"'
    elif config.tokens_count_strategy:
        return f"tokens_count_strategy is for {AI_RATE_LIMITING} only"
    return None


MATCH_TYPES: Final = ("consumer", "ip", "header", "model", "provider", "path")


def _check_policy(policy: snapshot_pb2.RateLimitPolicy) -> str | None:
    if policy.window_type and policy.window_type not in WINDOW_TYPES:
        return f'unknown window_type "{policy.window_type}"'
    for match in policy.matches:
        if match.type not in MATCH_TYPES:
            return f'unknown match type "{match.type}"'
        if match.type == "header" and not match.key:
            return 'a "header" match needs key (the header name)'
        if match.type == "ip":
            for value in match.values:
                try:
                    ipaddress.ip_network(value, strict=False)
                except ValueError:
                    return f'"{value}" is not an IP address or network'
    for limit in policy.limits:
        if limit.window_size <= 0:
            return f"window_size must be positive, got {limit.window_size}"
        if limit.tokens_count_strategy and limit.tokens_count_strategy not in TOKEN_STRATEGIES:
            return f'unknown tokens_count_strategy "{limit.tokens_count_strategy}"'
        problem = _check_limit(limit.limit, limit.tokens_count_strategy)
        if problem is not None:
            return problem
    return None


def _compile_policy(policy: snapshot_pb2.RateLimitPolicy) -> Policy:
    matches = tuple(
        Match(
            type=match.type,
            key=match.key.lower().encode("latin-1"),
            values=frozenset(match.values),
            networks=tuple(ipaddress.ip_network(v, strict=False) for v in match.values)
            if match.type == "ip"
            else (),
            partition_by=match.partition_by,
        )
        for match in policy.matches
    )
    return Policy(id=policy.id, matches=matches)


def _window(limit: Decimal, size: int, measure: str) -> Window:
    kind = {REQUESTS: "", "cost": "Cost-"}.get(measure, "Tokens-")
    label = _window_label(size)
    return Window(
        limit=int(limit * PICO) if measure == "cost" else int(limit),
        size=size,
        limit_text=str(limit).encode(),
        limit_header=f"x-ratelimit-limit-{kind}{label}".lower().encode(),
        remaining_header=f"x-ratelimit-remaining-{kind}{label}".lower().encode(),
    )


def _decimal(text: str) -> Decimal:
    try:
        value = Decimal(text) if text else Decimal(0)
    except InvalidOperation:
        return Decimal(0)
    return value if value.is_finite() and value >= 0 else Decimal(0)


def _compile_limit(
    plugin: snapshot_pb2.Plugin,
    *,
    provider: str | None,
    ai_proxy: snapshot_pb2.AiProxyConfig | None,
) -> list[Limit]:
    """The plugin's limit (its windows for the route's provider), then one per policy and
    tokens_count_strategy of its Kong 3.14 policies."""
    config = plugin.rate_limiting
    measure = config.tokens_count_strategy or REQUESTS
    windows: list[Window] = []
    for wire in config.windows:
        if wire.provider and provider is not None and wire.provider != provider:
            continue
        windows.append(_window(Decimal(wire.limit), int(wire.window_size), measure))
    limits: list[Limit] = []
    if windows:
        limits.append(_limit(plugin, ai_proxy, measure=measure, windows=windows))
    for policy in config.policies:
        by_measure: dict[str, list[Window]] = {}
        for wire_limit in policy.limits:
            strategy = wire_limit.tokens_count_strategy or "total_tokens"
            by_measure.setdefault(strategy, []).append(
                _window(Decimal(wire_limit.limit), int(wire_limit.window_size), strategy)
            )
        compiled = _compile_policy(policy)
        for strategy, policy_windows in by_measure.items():
            limits.append(
                _limit(
                    plugin,
                    ai_proxy,
                    measure=strategy,
                    windows=policy_windows,
                    policy=compiled,
                    window_type=policy.window_type,
                )
            )
    return limits


def _limit(
    plugin: snapshot_pb2.Plugin,
    ai_proxy: snapshot_pb2.AiProxyConfig | None,
    *,
    measure: str,
    windows: list[Window],
    policy: Policy | None = None,
    window_type: str = "",
) -> Limit:
    config = plugin.rate_limiting
    redis: RedisSettings | None = None
    if config.strategy == "redis":
        wire_redis = config.redis
        redis = RedisSettings(
            host=wire_redis.host,
            port=wire_redis.port or 6379,
            database=wire_redis.database,
            username=wire_redis.username,
            password=wire_redis.password,
            timeout_s=(wire_redis.timeout or 2000) / 1000,
        )
    input_pico = output_pico = Decimal(0)
    if measure == "cost" and ai_proxy is not None:
        input_pico = _decimal(ai_proxy.model.options.input_cost) * _PER_MILLION_TO_PICO
        output_pico = _decimal(ai_proxy.model.options.output_cost) * _PER_MILLION_TO_PICO
    namespace = config.namespace or plugin.id
    if policy is not None:
        # Each policy (and counted measure) has counters of its own.
        namespace = f"{namespace}:policy:{policy.id}:{measure}"
    return Limit(
        plugin_id=plugin.id,
        namespace=namespace,
        measure=measure,
        windows=tuple(windows),
        sliding=(window_type or config.window_type) != "fixed",
        identifier=config.identifier or "consumer",
        header_name=config.header_name.lower().encode("latin-1"),
        redis=redis,
        fault_tolerant=config.fault_tolerant,
        hide_client_headers=config.hide_client_headers,
        input_pico=input_pico,
        output_pico=output_pico,
        error_status=config.error_code,
        error_message=config.error_message,
        policy=policy,
    )


def _rank(plugin: snapshot_pb2.Plugin, route: snapshot_pb2.Route) -> int | None:
    """Kong's precedence of a plugin for ``route`` (higher wins); None if it does not apply."""
    if plugin.route_id and plugin.route_id != route.id:
        return None
    if plugin.service_id and plugin.service_id != route.service_id:
        return None
    consumer, on_route, on_service = (
        bool(plugin.consumer_id),
        bool(plugin.route_id),
        bool(plugin.service_id),
    )
    if consumer:
        if on_route and on_service:
            return 9
        if on_route:
            return 8
        if on_service:
            return 7
        return 5
    if on_route and on_service:
        return 6
    if on_route:
        return 4
    if on_service:
        return 3
    return 0


def compile_route_limits(
    route: snapshot_pb2.Route,
    plugins: Sequence[snapshot_pb2.Plugin],
    *,
    ai_proxy: snapshot_pb2.AiProxyConfig | None,
) -> RouteRateLimits | None:
    """The rate limits of ``route`` from the snapshot's enabled plugins; None when there are none.

    Per plugin name, the most specific plugin wins (Kong's precedence: consumer+route+service >
    consumer+route > consumer+service > route+service > consumer > route > service > global).
    """
    # Unknown (no ai-proxy, or ai-proxy-advanced with several targets): every window applies.
    provider = (ai_proxy.model.provider or None) if ai_proxy is not None else None
    general: dict[str, tuple[int, snapshot_pb2.Plugin]] = {}
    scoped: dict[str, dict[str, tuple[int, snapshot_pb2.Plugin]]] = {}
    for plugin in plugins:
        if plugin.name not in PLUGIN_NAMES:
            continue
        rank = _rank(plugin, route)
        if rank is None:
            continue
        best = scoped.setdefault(plugin.consumer_id, {}) if plugin.consumer_id else general
        current = best.get(plugin.name)
        if current is None or rank > current[0]:
            best[plugin.name] = (rank, plugin)
    if not general and not scoped:
        return None

    def limits(chosen: Mapping[str, tuple[int, snapshot_pb2.Plugin]]) -> tuple[Limit, ...]:
        # Token/cost limits first: they only read, so a refusal there consumes no request.
        return tuple(
            limit
            for name in (AI_RATE_LIMITING, RATE_LIMITING)
            if name in chosen
            for limit in _compile_limit(chosen[name][1], provider=provider, ai_proxy=ai_proxy)
        )

    default = limits(general)
    by_consumer: dict[str, tuple[Limit, ...]] = {}
    for consumer_id, own in scoped.items():
        merged = dict(general)
        for name, (rank, plugin) in own.items():
            if name not in merged or rank > merged[name][0]:
                merged[name] = (rank, plugin)
        by_consumer[consumer_id] = limits(merged)
    if not default and not any(by_consumer.values()):
        return None
    return RouteRateLimits(default=default, by_consumer=MappingProxyType(by_consumer))


# -- decisions --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WindowState:
    """A window as seen by one check: its estimate before this request, and what is left."""

    window: Window
    used: int  # the estimate (sliding) or count (fixed), this request included when counted
    reset_s: int  # seconds until the current bucket ends
    retry_after_s: int  # 0 when not exhausted


def _estimate(window: Window, *, sliding: bool, current: int, previous: int, now_ms: int) -> int:
    size_ms = window.size * 1000
    if not sliding or not previous:
        return current
    elapsed = now_ms % size_ms
    return current + previous * (size_ms - elapsed) // size_ms


def _retry_after_ms(
    window: Window, *, sliding: bool, current: int, previous: int, amount: int, now_ms: int
) -> int:
    """How long until ``amount`` more fits (``amount`` 0: until the window is not spent)."""
    size_ms = window.size * 1000
    elapsed = now_ms % size_ms
    to_end = size_ms - elapsed
    need = max(amount, 1)
    if not sliding:
        return to_end
    room = window.limit - current - need
    if room >= 0 and previous:
        # Wait until the previous bucket's weight drops to what is left.
        return max(size_ms - room * size_ms // previous - elapsed, 1)
    # The current bucket alone is too full: it becomes the previous one, then has to decay.
    room = window.limit - need
    if room < 0 or not current:
        return to_end if room >= 0 else to_end + size_ms
    return to_end + max(size_ms - room * size_ms // current, 0)


def decide(
    limit: Limit,
    counts: Sequence[tuple[int, int]],
    *,
    amount: int,
    now_ms: int,
) -> tuple[bool, list[WindowState]]:
    """Whether ``amount`` more fits every window, given each window's (current, previous).

    ``amount`` 0 is the check before a token/cost request: it fits while the window is not
    spent. Counts are read before this request; the states count it when it is admitted.
    """
    seen: list[tuple[Window, int, int, int]] = []
    allowed = True
    for window, (current, previous) in zip(limit.windows, counts, strict=True):
        used = _estimate(
            window, sliding=limit.sliding, current=current, previous=previous, now_ms=now_ms
        )
        retry = 0
        if not (used + amount <= window.limit if amount else used < window.limit):
            allowed = False
            retry = _retry_after_ms(
                window,
                sliding=limit.sliding,
                current=current,
                previous=previous,
                amount=amount,
                now_ms=now_ms,
            )
        seen.append((window, used, retry, (window.size * 1000 - now_ms % (window.size * 1000))))
    counted = amount if allowed else 0
    states = [
        WindowState(
            window=window,
            used=used + counted,
            reset_s=-(-to_end // 1000),
            retry_after_s=-(-retry // 1000),
        )
        for window, used, retry, to_end in seen
    ]
    return allowed, states


def _remaining_text(limit: Limit, window: Window, used: int) -> bytes:
    left = max(window.limit - used, 0)
    if limit.measure == "cost":
        return str((Decimal(left) / PICO).normalize()).encode()
    return str(left).encode()


def headers_for(limit: Limit, states: Iterable[WindowState], out: Headers) -> WindowState | None:
    """Append Kong's X-RateLimit-Limit/Remaining-<Window> headers; return the tightest window."""
    tightest: WindowState | None = None
    tightest_left = 0
    for state in states:
        window = state.window
        out.append((window.limit_header, window.limit_text))
        out.append((window.remaining_header, _remaining_text(limit, window, state.used)))
        left = window.limit - state.used
        # The window closest to exhaustion, relative to its size.
        if tightest is None or left * tightest.window.limit < tightest_left * window.limit:
            tightest, tightest_left = state, left
    return tightest


# -- stores -----------------------------------------------------------------------------------

# KEYS: per window, the current and the previous bucket. ARGV: now_ms, amount, then per window
# size_ms, limit, sliding (1/0). Decides like decide() and increments only when every window
# has room. Returns the counts read: current, previous per window.
_CHECK_SCRIPT: Final = """
local now = tonumber(ARGV[1])
local amount = tonumber(ARGV[2])
local counts = {}
local allowed = true
for i = 1, #KEYS / 2 do
  local size = tonumber(ARGV[3 * i])
  local limit = tonumber(ARGV[3 * i + 1])
  local sliding = ARGV[3 * i + 2] == "1"
  local current = tonumber(redis.call("GET", KEYS[2 * i - 1]) or "0")
  local previous = tonumber(redis.call("GET", KEYS[2 * i]) or "0")
  local used = current
  if sliding and previous > 0 then
    used = current + math.floor(previous * (size - now % size) / size)
  end
  if amount > 0 then
    if used + amount > limit then allowed = false end
  elseif used >= limit then
    allowed = false
  end
  counts[2 * i - 1] = current
  counts[2 * i] = previous
end
if allowed and amount > 0 then
  for i = 1, #KEYS / 2 do
    redis.call("INCRBY", KEYS[2 * i - 1], amount)
    redis.call("PEXPIRE", KEYS[2 * i - 1], 2 * tonumber(ARGV[3 * i]))
  end
end
return counts
"""


class StoreUnavailable(DataPlaneError):
    """The shared counter store cannot be reached."""


class _LocalStore:
    """In-process counters: bucket key -> count. Stale buckets are swept when the dict grows."""

    __slots__ = ("counts",)

    def __init__(self) -> None:
        # (namespace, measure, window size, identity, bucket) -> count
        self.counts: dict[tuple[str, str, int, str, int], int] = {}

    def read(self, limit: Limit, identity: str, now_ms: int) -> list[tuple[int, int]]:
        counts = self.counts
        result: list[tuple[int, int]] = []
        for window in limit.windows:
            bucket = now_ms // (window.size * 1000)
            key = (limit.namespace, limit.measure, window.size, identity, bucket)
            previous = (limit.namespace, limit.measure, window.size, identity, bucket - 1)
            result.append((counts.get(key, 0), counts.get(previous, 0)))
        return result

    def add(self, limit: Limit, identity: str, amount: int, now_ms: int) -> None:
        counts = self.counts
        if len(counts) > _SWEEP_AT:
            self._sweep(now_ms)
        for window in limit.windows:
            bucket = now_ms // (window.size * 1000)
            key = (limit.namespace, limit.measure, window.size, identity, bucket)
            counts[key] = counts.get(key, 0) + amount

    def _sweep(self, now_ms: int) -> None:
        self.counts = {
            key: count
            for key, count in self.counts.items()
            if key[4] >= now_ms // (key[2] * 1000) - 1
        }


def _redis_keys(limit: Limit, identity: str, now_ms: int) -> list[str]:
    keys: list[str] = []
    for window in limit.windows:
        bucket = now_ms // (window.size * 1000)
        base = f"meterline:ratelimit:{limit.namespace}:{limit.measure}:{window.size}:{identity}:"
        keys.append(f"{base}{bucket}")
        keys.append(f"{base}{bucket - 1}")
    return keys


class _RedisStore:
    """Counters in Redis (redis.asyncio), shared by every data plane using the same server."""

    def __init__(self, settings: RedisSettings) -> None:
        import redis.asyncio as aioredis

        self.settings = settings
        self.client = aioredis.Redis(
            host=settings.host,
            port=settings.port,
            db=settings.database,
            username=settings.username or None,
            password=settings.password or None,
            socket_timeout=settings.timeout_s,
            socket_connect_timeout=settings.timeout_s,
        )
        self.script = self.client.register_script(_CHECK_SCRIPT)
        self.down_until = 0.0

    def _failed(self, exc: BaseException) -> StoreUnavailable:
        if not self.down_until:
            logger.warning(
                "rate limits: Redis %s:%d unreachable (%s); counters there are skipped",
                self.settings.host,
                self.settings.port,
                type(exc).__name__,
            )
        self.down_until = time.monotonic() + _REDIS_RETRY_S
        return StoreUnavailable(f"{self.settings.host}:{self.settings.port}")

    def _check_up(self) -> None:
        if self.down_until and time.monotonic() < self.down_until:
            raise StoreUnavailable(f"{self.settings.host}:{self.settings.port}")

    def _recovered(self) -> None:
        if self.down_until:
            logger.warning(
                "rate limits: Redis %s:%d reachable again", self.settings.host, self.settings.port
            )
            self.down_until = 0.0

    async def check(
        self, limit: Limit, identity: str, amount: int, now_ms: int
    ) -> list[tuple[int, int]]:
        from redis.exceptions import RedisError

        self._check_up()
        args: list[int] = [now_ms, amount]
        for window in limit.windows:
            args.extend((window.size * 1000, window.limit, 1 if limit.sliding else 0))
        try:
            raw = await self.script(keys=_redis_keys(limit, identity, now_ms), args=args)
        except (RedisError, OSError) as exc:
            raise self._failed(exc) from exc
        self._recovered()
        values = [int(value) for value in raw]
        return [(values[i], values[i + 1]) for i in range(0, len(values), 2)]

    async def add(self, limit: Limit, identity: str, amount: int, now_ms: int) -> None:
        from redis.exceptions import RedisError

        self._check_up()
        keys = _redis_keys(limit, identity, now_ms)
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for index, window in enumerate(limit.windows):
                    pipe.incrby(keys[2 * index], amount)
                    pipe.pexpire(keys[2 * index], 2 * window.size * 1000)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise self._failed(exc) from exc
        self._recovered()

    async def aclose(self) -> None:
        await self.client.aclose()


# -- the per-request step ---------------------------------------------------------------------


def _identity(limit: Limit, consumer: Consumer | None, scope: Scope) -> str:
    identifier = limit.identifier
    if identifier == "service":
        return "*"
    if identifier == "consumer" and consumer is not None:
        return f"c:{consumer.id}"
    if identifier == "header":
        headers: Headers = scope["headers"]
        for name, value in headers:
            if name == limit.header_name:
                return "h:" + value.decode("latin-1")
        # Kong falls back to the client's address when the identifying header is missing.
    client = scope.get("client")
    return f"ip:{client[0] if client else ''}"


@dataclass(frozen=True, slots=True)
class RateLimitAdmission:
    """What the rate limits decided for an admitted request."""

    # RateLimit-* / X-RateLimit-* headers for the response (empty when hidden or unlimited).
    headers: tuple[tuple[bytes, bytes], ...] = ()
    # Counts the request's tokens and cost against its token/cost limits, once recorded.
    counter: Callable[[usage_pb2.UsageEvent], None] | None = None


_NOTHING: Final = RateLimitAdmission()


class _Counted:
    """The token/cost limits of one admitted request: counts its usage events once recorded."""

    __slots__ = ("amounts", "limiter", "limits", "now_ms", "pending")

    def __init__(
        self,
        limiter: RateLimiter,
        limits: list[tuple[Limit, str]],
        now_ms: int,
    ) -> None:
        self.limiter = limiter
        self.limits = limits
        self.now_ms = now_ms
        self.amounts = [0] * len(limits)
        self.pending = False

    def __call__(self, event: usage_pb2.UsageEvent) -> None:
        tokens = event.llm_tokens
        if not tokens.tokens or not 200 <= tokens.status_code < 300:
            return
        for index, (limit, _) in enumerate(self.limits):
            self.amounts[index] += limit.amount(tokens.token_type, tokens.tokens)
        if not self.pending:
            # The events of one request are recorded together: count them once, after.
            self.pending = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self.pending = False
        for index, (limit, identity) in enumerate(self.limits):
            amount, self.amounts[index] = self.amounts[index], 0
            if amount:
                self.limiter.count(limit, identity, amount, self.now_ms)


class RateLimiter:
    """The counters of one gateway (they outlive snapshots) and its Redis clients."""

    def __init__(self, *, clock_ms: Callable[[], int] | None = None) -> None:
        self._local = _LocalStore()
        self._redis: dict[RedisSettings, _RedisStore] = {}
        self._clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)
        self._background: set[asyncio.Task[None]] = set()

    def _store(self, settings: RedisSettings) -> _RedisStore:
        store = self._redis.get(settings)
        if store is None:
            store = self._redis[settings] = _RedisStore(settings)
        return store

    async def _check(
        self, limit: Limit, identity: str, amount: int, now_ms: int
    ) -> tuple[bool, list[WindowState]] | None:
        """The decision for one limit (counting ``amount`` if admitted); None: store down."""
        if limit.redis is None:
            counts = self._local.read(limit, identity, now_ms)
            allowed, states = decide(limit, counts, amount=amount, now_ms=now_ms)
            if allowed and amount:
                self._local.add(limit, identity, amount, now_ms)
            return allowed, states
        try:
            counts = await self._store(limit.redis).check(limit, identity, amount, now_ms)
        except StoreUnavailable:
            return None
        return decide(limit, counts, amount=amount, now_ms=now_ms)

    def count(self, limit: Limit, identity: str, amount: int, now_ms: int) -> None:
        """Add ``amount`` to every window of ``limit`` (tokens or cost known after a response)."""
        if limit.redis is None:
            self._local.add(limit, identity, amount, now_ms)
            return
        task = asyncio.ensure_future(self._count_redis(limit, identity, amount, now_ms))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _count_redis(self, limit: Limit, identity: str, amount: int, now_ms: int) -> None:
        assert limit.redis is not None
        # Logged by the store; failing open is all that can be done after the fact.
        with contextlib.suppress(StoreUnavailable):
            await self._store(limit.redis).add(limit, identity, amount, now_ms)

    async def admit(
        self,
        limits: RouteRateLimits,
        *,
        consumer: Consumer | None,
        scope: Scope,
        model: str = "",
        provider: str = "",
    ) -> RateLimitAdmission:
        """Check the request against its route's limits (a policy's limit only when its match
        entries admit the request: ``model`` and ``provider`` are the request's).

        Refused: raises Rejection (429, or 503 when the store is down and the limit is not
        fault tolerant), with the rate-limit headers. Admitted: the headers to add to the
        response and the counter of its tokens and cost.
        """
        applicable = limits.for_consumer(consumer.id if consumer is not None else None)
        if not applicable:
            return _NOTHING
        now_ms = self._clock_ms()
        headers: Headers = []
        tightest: WindowState | None = None
        retry_after = 0
        refused_measure = ""
        refused: Limit | None = None
        unavailable = False
        counted: list[tuple[Limit, str]] = []
        # Compiled token/cost limits first (see compile_route_limits).
        for limit in applicable:
            if limit.policy is None:
                identity = _identity(limit, consumer, scope)
            else:
                key = limit.policy.key(consumer, scope, model=model, provider=provider)
                if key is None:
                    continue  # the policy does not apply to this request
                identity = key
            amount = 1 if limit.measure == REQUESTS else 0
            decision = await self._check(limit, identity, amount, now_ms)
            if decision is None:
                if not limit.fault_tolerant:
                    unavailable = True
                    break
                continue
            allowed, states = decision
            if limit.measure != REQUESTS:
                counted.append((limit, identity))
            if not limit.hide_client_headers:
                state = headers_for(limit, states, headers)
                if state is not None and (
                    tightest is None
                    or (state.window.limit - state.used) * tightest.window.limit
                    < (tightest.window.limit - tightest.used) * state.window.limit
                ):
                    tightest = state
            if not allowed:
                retry_after = max(retry_after, *(state.retry_after_s for state in states))
                refused_measure = limit.measure
                refused = limit
                break
        if tightest is not None:
            limit_of = next(lim for lim in applicable if tightest.window in lim.windows)
            headers.append((b"ratelimit-limit", tightest.window.limit_text))
            headers.append(
                (b"ratelimit-remaining", _remaining_text(limit_of, tightest.window, tightest.used))
            )
            headers.append((b"ratelimit-reset", str(tightest.reset_s).encode()))
        if unavailable:
            raise Rejection(
                503,
                "The rate limit store is unavailable; retry shortly.",
                type="api_error",
                code="rate_limit_unavailable",
            )
        if refused_measure:
            what = (
                "requests"
                if refused_measure == REQUESTS
                else ("cost" if refused_measure == "cost" else "tokens")
            )
            headers.append((b"retry-after", str(retry_after).encode()))
            assert refused is not None
            raise Rejection(
                refused.error_status or 429,
                refused.error_message
                or f"API rate limit exceeded ({what}); retry in {retry_after} s.",
                type=what,
                code="rate_limit_exceeded",
                headers=headers,
            )
        return RateLimitAdmission(
            headers=tuple(headers),
            counter=_Counted(self, counted, now_ms) if counted else None,
        )

    async def flush(self) -> None:
        """Wait until the token/cost counts sent to Redis so far have landed."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    async def aclose(self) -> None:
        """Wait for pending Redis counts and close the clients."""
        await self.flush()
        for store in self._redis.values():
            await store.aclose()
        self._redis.clear()


__all__ = [
    "AI_RATE_LIMITING",
    "PLUGIN_NAMES",
    "RATE_LIMITING",
    "Limit",
    "RateLimitAdmission",
    "RateLimiter",
    "RouteRateLimits",
    "check_config",
    "compile_route_limits",
    "decide",
]
