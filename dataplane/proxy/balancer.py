"""Kong's ai-proxy-advanced balancer: which target serves a request, and where to fail over.

One ``Balancer`` is compiled per snapshot and route; its counters (round-robin position,
latencies, token usage, circuit breaker) live in memory and are not shared between data
planes. A new snapshot whose route has the same ai-proxy-advanced config keeps them
(``carry_state``): snapshots also change for reasons of their own (balances, consumers).
Every method is O(number of targets) with no I/O, so the hot path stays cheap.

Algorithms:

- ``round-robin``: smooth weighted round-robin (nginx's): over any window of sum(weights)
  requests each target gets exactly its weight's share.
- ``priority``: the targets with the lowest ``priority`` value take all traffic (weighted
  round-robin among them); the next group only while the whole first group is ejected, and as
  failover targets.
- ``lowest-latency``: the target with the lowest moving average of its latency (``e2e``: whole
  request; ``tpot``: per output token); a target not measured yet counts as 0, so each target
  is measured once before the fastest takes the traffic.
- ``lowest-usage``: the target with the fewest tokens per unit of weight served so far
  (``tokens_count_strategy``: total, prompt or completion tokens).
- ``consistent-hashing``: weighted rendezvous hashing of a request header: a value always goes
  to the same target while it is healthy; requests without the header are spread round-robin.
- ``cost``: the cheapest target (``input_cost + output_cost``) that serves the requested model
  (its ``model.model_alias``, else its ``model.name``, equals it, or it has neither and keeps
  the client's): with aliases, one name served by targets of different providers and models.

Circuit breaker (Kong's ``max_fails``/``fail_timeout``): ``max_fails`` consecutive failures
(attempts matching ``failover_criteria``) eject a target for ``fail_timeout``; then it is
half-open: one request probes it, a success closes the circuit, a failure ejects it again.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Final

from dataplane.errors import DataPlaneError
from dataplane.translate.base import Translator
from dataplane.translate.select import OPENAI

if TYPE_CHECKING:
    from dataplane.config.model import AiProxyPolicy
    from dataplane.usage.tokens import TokenUsage

ROUND_ROBIN: Final = "round-robin"
LOWEST_LATENCY: Final = "lowest-latency"
LOWEST_USAGE: Final = "lowest-usage"
PRIORITY: Final = "priority"
CONSISTENT_HASHING: Final = "consistent-hashing"
COST: Final = "cost"
ALGORITHMS: Final = (ROUND_ROBIN, LOWEST_LATENCY, LOWEST_USAGE, PRIORITY, CONSISTENT_HASHING, COST)

# Kong's failover_criteria, plus "http_5xx" (any 5xx status).
FAILOVER_STATUSES: Final = {
    "http_403": 403,
    "http_404": 404,
    "http_429": 429,
    "http_500": 500,
    "http_502": 502,
    "http_503": 503,
    "http_504": 504,
}
FAILOVER_CRITERIA: Final = frozenset(
    {"error", "timeout", "invalid_header", "non_idempotent", "http_5xx", *FAILOVER_STATUSES}
)
DEFAULT_FAILOVER_CRITERIA: Final = ("error", "timeout")
DEFAULT_RETRIES: Final = 5
DEFAULT_FAIL_TIMEOUT_MS: Final = 10_000
TOKENS_COUNT_STRATEGIES: Final = ("total-tokens", "prompt-tokens", "completion-tokens")
LATENCY_STRATEGIES: Final = ("e2e", "tpot")

# Weight of the newest sample in the latency moving average.
_LATENCY_ALPHA: Final = 0.3


class NoTargetForModel(DataPlaneError):
    """The ``cost`` algorithm found no target that serves the requested model."""

    def __init__(self, model: str | None, served: Sequence[str]) -> None:
        super().__init__(model)
        self.model = model
        self.served = tuple(served)


@dataclass(frozen=True, slots=True)
class BalancerTarget:
    """A target as the balancer sees it; ``policy`` is its complete upstream."""

    policy: AiProxyPolicy
    # The translator between the route's clients and this target's provider.
    translator: Translator = field(default=OPENAI, compare=False)
    weight: int = 1
    priority: int = 0
    # input_cost + output_cost (per million tokens), None when the target names no price.
    cost: Decimal | None = None
    description: str = ""


class _State:
    __slots__ = ("current", "fails", "latency", "open_until", "probing", "tokens")

    def __init__(self) -> None:
        self.current = 0  # smooth weighted round-robin
        self.fails = 0
        self.open_until = 0.0  # 0: closed; else ejected until then, half-open after
        self.probing = False
        self.latency: float | None = None
        self.tokens = 0


class Balancer:
    """The targets of one ai-proxy-advanced route and the state that picks among them."""

    __slots__ = (
        "_by_alias",
        "_by_model",
        "_clock",
        "_fail_timeout_s",
        "_failover_5xx",
        "_failover_error",
        "_failover_statuses",
        "_failover_timeout",
        "_hash_header",
        "_latency_strategy",
        "_max_fails",
        "_served_models",
        "_states",
        "_tokens_strategy",
        "_wildcards",
        "algorithm",
        "fingerprint",
        "max_attempts",
        "targets",
    )

    def __init__(
        self,
        *,
        targets: Sequence[BalancerTarget],
        algorithm: str = ROUND_ROBIN,
        hash_on_header: str = "",
        retries: int = DEFAULT_RETRIES,
        failover_criteria: Sequence[str] = DEFAULT_FAILOVER_CRITERIA,
        tokens_count_strategy: str = "total-tokens",
        latency_strategy: str = "e2e",
        max_fails: int = 0,
        fail_timeout_ms: int = DEFAULT_FAIL_TIMEOUT_MS,
        clock: Callable[[], float] = time.monotonic,
        fingerprint: bytes = b"",
    ) -> None:
        if not targets:
            raise ValueError("a balancer needs at least one target")
        if algorithm not in ALGORITHMS:
            raise ValueError(f'unknown algorithm "{algorithm}"')
        unknown = [c for c in failover_criteria if c not in FAILOVER_CRITERIA]
        if unknown:
            raise ValueError(f'unknown failover criterion "{unknown[0]}"')
        self.targets = tuple(targets)
        self.algorithm = algorithm
        # Identifies the config this balancer was compiled from (see carry_state).
        self.fingerprint = fingerprint
        # Each target is tried at most once per request.
        self.max_attempts = min(max(retries, 0) + 1, len(self.targets))
        self._hash_header = hash_on_header.lower().encode("latin-1")
        self._failover_error = "error" in failover_criteria
        self._failover_timeout = "timeout" in failover_criteria
        self._failover_5xx = "http_5xx" in failover_criteria
        self._failover_statuses = frozenset(
            FAILOVER_STATUSES[c] for c in failover_criteria if c in FAILOVER_STATUSES
        )
        self._tokens_strategy = tokens_count_strategy
        self._latency_strategy = latency_strategy
        self._max_fails = max_fails
        self._fail_timeout_s = fail_timeout_ms / 1000
        self._clock = clock
        self._states = [_State() for _ in self.targets]
        # cost: per served model name (the alias, else the fixed name), its targets cheapest
        # first; targets with neither serve any model.
        by_model: dict[str, list[int]] = {}
        wildcards: list[int] = []
        for index, target in enumerate(self.targets):
            served = target.policy.model_alias or target.policy.model
            if served:
                by_model.setdefault(served, []).append(index)
            else:
                wildcards.append(index)
        self._wildcards = tuple(wildcards)
        self._by_model = {
            model: self._cheapest_first([*indices, *wildcards])
            for model, indices in by_model.items()
        }
        self._served_models = tuple(sorted(by_model))
        # Kong's model_alias: a request whose model is a target's alias goes to the targets
        # with that alias only (balanced among them); other models to any target.
        by_alias: dict[str, list[int]] = {}
        for index, target in enumerate(self.targets):
            if target.policy.model_alias:
                by_alias.setdefault(target.policy.model_alias, []).append(index)
        self._by_alias = {alias: frozenset(indices) for alias, indices in by_alias.items()}

    def _cheapest_first(self, indices: Sequence[int]) -> tuple[int, ...]:
        def key(index: int) -> tuple[Decimal, int]:
            cost = self.targets[index].cost
            return (cost if cost is not None else Decimal("Infinity"), index)

        return tuple(sorted(indices, key=key))

    # -- choosing ---------------------------------------------------------------------------

    def plan(self, *, model: str | None, headers: Sequence[tuple[bytes, bytes]]) -> list[int]:
        """The targets to try for one request, in order: the pick first, then failovers.

        Ejected targets (open circuit) are left out; a half-open one is included while no
        other request probes it. At most ``max_attempts`` entries; empty if every target is
        ejected. NoTargetForModel if ``cost`` finds no target for ``model``.
        """
        now = self._clock()
        aliased = self._by_alias.get(model or "") if self._by_alias else None
        available = [
            i
            for i in range(len(self.targets))
            if (aliased is None or i in aliased) and self._available(i, now)
        ]
        if not available:
            return []
        algorithm = self.algorithm
        if aliased is not None and algorithm == COST:
            return list(self._cheapest_first(available))[: self.max_attempts]
        if algorithm == ROUND_ROBIN:
            order = self._rotate(available)
        elif algorithm == PRIORITY:
            order = self._by_priority(available)
        elif algorithm == LOWEST_LATENCY:
            order = sorted(available, key=lambda i: (self._states[i].latency or 0.0, i))
        elif algorithm == LOWEST_USAGE:
            order = sorted(
                available, key=lambda i: (self._states[i].tokens / self.targets[i].weight, i)
            )
        elif algorithm == CONSISTENT_HASHING:
            value = self._header(headers)
            order = self._rotate(available) if value is None else self._rendezvous(available, value)
        else:  # COST
            candidates = self._by_model.get(model or "", self._wildcards)
            if not candidates:
                raise NoTargetForModel(model, self._served_models)
            allowed = set(available)
            order = [i for i in candidates if i in allowed]
        return order[: self.max_attempts]

    def _available(self, index: int, now: float) -> bool:
        state = self._states[index]
        if not state.open_until:
            return True
        return now >= state.open_until and not state.probing

    def _rotate(self, indices: Sequence[int]) -> list[int]:
        """Smooth weighted round-robin pick among ``indices``, then the others in order."""
        total = 0
        best = indices[0]
        best_current: int | None = None
        for index in indices:
            state = self._states[index]
            weight = self.targets[index].weight
            state.current += weight
            total += weight
            if best_current is None or state.current > best_current:
                best, best_current = index, state.current
        self._states[best].current -= total
        position = indices.index(best)
        return [*indices[position:], *indices[:position]]

    def _by_priority(self, available: Sequence[int]) -> list[int]:
        groups: dict[int, list[int]] = {}
        for index in available:
            groups.setdefault(self.targets[index].priority, []).append(index)
        order: list[int] = []
        for number, (_, group) in enumerate(sorted(groups.items())):
            order.extend(self._rotate(group) if number == 0 else group)
        return order

    def _header(self, headers: Sequence[tuple[bytes, bytes]]) -> bytes | None:
        for name, value in headers:
            if name == self._hash_header and value:
                return value
        return None

    def _rendezvous(self, available: Sequence[int], value: bytes) -> list[int]:
        """Weighted rendezvous (highest random weight) order of ``available`` for ``value``."""

        def score(index: int) -> float:
            digest = hashlib.blake2b(value, digest_size=8, salt=index.to_bytes(8, "big")).digest()
            # A uniform number in (0, 1); -weight / ln(u) is the weighted HRW score.
            uniform = (int.from_bytes(digest, "big") + 1) / (2**64 + 1)
            return -self.targets[index].weight / math.log(uniform)

        return sorted(available, key=score, reverse=True)

    # -- feedback ---------------------------------------------------------------------------

    def acquire(self, index: int) -> bool:
        """Claim ``index`` for an attempt; False if another request is probing it."""
        state = self._states[index]
        if not state.open_until:
            return True
        if state.probing or self._clock() < state.open_until:
            return False
        state.probing = True
        return True

    def settle(self, index: int) -> None:
        """End an attempt on ``index``: a probe still pending frees its half-open target."""
        self._states[index].probing = False

    def fails_over_on_status(self, status: int) -> bool:
        """Whether an upstream answer with ``status`` is a failure (failover_criteria)."""
        return status in self._failover_statuses or (self._failover_5xx and status >= 500)

    def fails_over_on_error(self, *, timed_out: bool) -> bool:
        """Whether a connection error or a timeout is a failure (failover_criteria)."""
        return self._failover_timeout if timed_out else self._failover_error

    def failed(self, index: int) -> None:
        """Record a failed attempt; may open the target's circuit."""
        state = self._states[index]
        state.fails += 1
        if state.probing or (self._max_fails and state.fails >= self._max_fails):
            state.open_until = self._clock() + self._fail_timeout_s
            state.probing = False

    def succeeded(self, index: int, *, latency_ms: float, usage: TokenUsage | None) -> None:
        """Record an answered attempt: closes the circuit, feeds latency and usage."""
        state = self._states[index]
        state.fails = 0
        state.open_until = 0.0
        state.probing = False
        output = (usage.output_tokens or 0) + (usage.reasoning_tokens or 0) if usage else 0
        if self._latency_strategy == "tpot":
            latency_ms /= max(output, 1)
        state.latency = (
            latency_ms
            if state.latency is None
            else state.latency + _LATENCY_ALPHA * (latency_ms - state.latency)
        )
        if usage is not None:
            prompt = (
                (usage.input_tokens or 0)
                + (usage.cached_input_tokens or 0)
                + (usage.cache_write_tokens or 0)
            )
            if self._tokens_strategy == "prompt-tokens":
                state.tokens += prompt
            elif self._tokens_strategy == "completion-tokens":
                state.tokens += output
            else:
                state.tokens += prompt + output

    def adopt(self, previous: Balancer) -> bool:
        """Share ``previous``'s counters if both come from the same config; True if so."""
        if not self.fingerprint or previous.fingerprint != self.fingerprint:
            return False
        if len(previous.targets) != len(self.targets):
            return False
        self._states = previous._states
        return True

    def circuit_open(self, index: int) -> bool:
        """Whether ``index`` is ejected now (open, not yet half-open)."""
        state = self._states[index]
        return bool(state.open_until) and self._clock() < state.open_until

    def __repr__(self) -> str:
        return f"Balancer(algorithm={self.algorithm!r}, targets={len(self.targets)})"
