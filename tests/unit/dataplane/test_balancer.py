"""The ai-proxy-advanced balancer: each algorithm picks what it promises; the circuit breaker.

The balancer is deterministic (smooth weighted round-robin, rendezvous hashing), so the
"statistical" checks count exact shares over many requests; time is a hand-driven clock.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from decimal import Decimal

import pytest

from dataplane.config.model import AiProxyPolicy, ProviderTarget
from dataplane.proxy.balancer import Balancer, BalancerTarget, NoTargetForModel
from dataplane.usage.tokens import TokenUsage


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _target(name: str, *, model: str = "", weight: int = 1, priority: int = 0, cost: str = ""):
    policy = AiProxyPolicy(
        route_type="llm/v1/chat",
        target=ProviderTarget(
            provider="openai",
            url=f"http://{name}.invalid/v1/chat/completions",
            origin=f"http://{name}.invalid:80",
            auth_headers=(),
            auth_body_params=(),
        ),
        model=model,
        max_tokens=0,
    )
    return BalancerTarget(
        policy=policy,
        weight=weight,
        priority=priority,
        cost=Decimal(cost) if cost else None,
        description=name,
    )


def _picks(balancer: Balancer, n: int, **kwargs) -> Counter[int]:
    counts: Counter[int] = Counter()
    for _ in range(n):
        plan = balancer.plan(model=kwargs.get("model"), headers=kwargs.get("headers", []))
        counts[plan[0]] += 1
    return counts


def test_round_robin_gives_each_target_exactly_its_weight_share() -> None:
    balancer = Balancer(
        targets=[_target("a", weight=70), _target("b", weight=25), _target("c", weight=5)],
        algorithm="round-robin",
    )
    assert _picks(balancer, 1000) == {0: 700, 1: 250, 2: 50}


def test_round_robin_is_smooth_not_bursty() -> None:
    balancer = Balancer(targets=[_target("a", weight=2), _target("b", weight=1)])
    picks = [balancer.plan(model=None, headers=[])[0] for _ in range(6)]
    assert picks == [0, 1, 0, 0, 1, 0]


def test_plan_lists_failover_targets_after_the_pick_and_honours_retries() -> None:
    targets = [_target("a"), _target("b"), _target("c")]
    assert Balancer(targets=targets, retries=5).plan(model=None, headers=[]) == [0, 1, 2]
    assert Balancer(targets=targets, retries=1).plan(model=None, headers=[]) == [0, 1]
    assert Balancer(targets=targets, retries=0).plan(model=None, headers=[]) == [0]


def test_priority_sends_everything_to_the_first_group_and_falls_back_in_order() -> None:
    clock = Clock()
    balancer = Balancer(
        targets=[
            _target("backup", priority=2),
            _target("main-1", priority=1),
            _target("main-2", priority=1),
            _target("last", priority=3),
        ],
        algorithm="priority",
        max_fails=1,
        clock=clock,
    )
    assert _picks(balancer, 100) == {1: 50, 2: 50}
    assert balancer.plan(model=None, headers=[])[2:] == [0, 3]
    # Given the whole first group ejected, the next priority takes the traffic.
    balancer.failed(1)
    balancer.failed(2)
    assert balancer.plan(model=None, headers=[]) == [0, 3]
    balancer.failed(0)
    assert balancer.plan(model=None, headers=[]) == [3]


def test_lowest_latency_measures_each_target_then_prefers_the_fastest() -> None:
    balancer = Balancer(targets=[_target("slow"), _target("fast")], algorithm="lowest-latency")
    latencies = {0: 400.0, 1: 20.0}
    picks = []
    for _ in range(50):
        pick = balancer.plan(model=None, headers=[])[0]
        picks.append(pick)
        balancer.succeeded(pick, latency_ms=latencies[pick], usage=None)
    assert picks[:2] == [0, 1]
    assert set(picks[2:]) == {1}


def test_lowest_latency_tpot_divides_by_output_tokens() -> None:
    balancer = Balancer(
        targets=[_target("long"), _target("short")],
        algorithm="lowest-latency",
        latency_strategy="tpot",
    )
    # 1000 ms for 100 tokens (10 ms/token) beats 100 ms for 2 tokens (50 ms/token).
    balancer.succeeded(0, latency_ms=1000, usage=TokenUsage(input_tokens=5, output_tokens=100))
    balancer.succeeded(1, latency_ms=100, usage=TokenUsage(input_tokens=5, output_tokens=2))
    assert balancer.plan(model=None, headers=[])[0] == 0


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        pytest.param("total-tokens", 1, id="total"),
        pytest.param("prompt-tokens", 0, id="prompt"),
        pytest.param("completion-tokens", 1, id="completion"),
    ],
)
def test_lowest_usage_picks_the_target_with_fewest_counted_tokens(strategy, expected) -> None:
    balancer = Balancer(
        targets=[_target("a"), _target("b")],
        algorithm="lowest-usage",
        tokens_count_strategy=strategy,
    )
    balancer.succeeded(0, latency_ms=1, usage=TokenUsage(input_tokens=10, output_tokens=500))
    balancer.succeeded(1, latency_ms=1, usage=TokenUsage(input_tokens=100, output_tokens=5))
    assert balancer.plan(model=None, headers=[])[0] == expected


def test_lowest_usage_balances_tokens_by_weight() -> None:
    balancer = Balancer(
        targets=[_target("big", weight=3), _target("small", weight=1)], algorithm="lowest-usage"
    )
    counts = Counter()
    for _ in range(400):
        pick = balancer.plan(model=None, headers=[])[0]
        counts[pick] += 1
        balancer.succeeded(pick, latency_ms=1, usage=TokenUsage(input_tokens=7, output_tokens=3))
    assert counts == {0: 300, 1: 100}


def test_consistent_hashing_is_stable_per_header_value_and_spreads_values() -> None:
    balancer = Balancer(
        targets=[_target("a"), _target("b"), _target("c")],
        algorithm="consistent-hashing",
        hash_on_header="X-User",
    )
    owners = {}
    for user in range(300):
        headers = [(b"x-user", f"user-{user}".encode())]
        first = balancer.plan(model=None, headers=headers)
        for _ in range(3):
            assert balancer.plan(model=None, headers=headers) == first
        owners[user] = first[0]
    shares = Counter(owners.values())
    assert set(shares) == {0, 1, 2}
    assert all(60 <= share <= 140 for share in shares.values()), shares


def test_consistent_hashing_moves_only_the_values_of_an_ejected_target() -> None:
    clock = Clock()
    balancer = Balancer(
        targets=[_target("a"), _target("b"), _target("c")],
        algorithm="consistent-hashing",
        hash_on_header="x-user",
        max_fails=1,
        clock=clock,
    )
    before = {
        user: balancer.plan(model=None, headers=[(b"x-user", user.encode())])[0]
        for user in (f"u{i}" for i in range(100))
    }
    balancer.failed(2)
    after = {
        user: balancer.plan(model=None, headers=[(b"x-user", user.encode())])[0] for user in before
    }
    assert all(after[user] == owner for user, owner in before.items() if owner != 2)
    assert 2 not in after.values()


def test_consistent_hashing_without_the_header_spreads_round_robin() -> None:
    balancer = Balancer(
        targets=[_target("a"), _target("b")], algorithm="consistent-hashing", hash_on_header="x-u"
    )
    assert _picks(balancer, 10) == {0: 5, 1: 5}


def test_cost_picks_the_cheapest_target_serving_the_model() -> None:
    balancer = Balancer(
        targets=[
            _target("mini-dear", model="gpt-4o-mini", cost="0.90"),
            _target("big", model="gpt-4o", cost="12.50"),
            _target("mini-cheap", model="gpt-4o-mini", cost="0.75"),
            _target("any", cost="5"),
        ],
        algorithm="cost",
    )
    assert balancer.plan(model="gpt-4o-mini", headers=[]) == [2, 0, 3]
    assert balancer.plan(model="gpt-4o", headers=[]) == [3, 1]
    # A model only the wildcard target serves.
    assert balancer.plan(model="o3-mini", headers=[]) == [3]


def test_cost_matches_the_model_alias_across_models_and_providers() -> None:
    # Kong's model.model_alias: three targets with their own models answer to "chat".
    targets = [
        _target("openai", model="gpt-4o-mini", cost="0.75"),
        _target("gemini", model="gemini-2.5-flash", cost="0.40"),
        _target("bedrock", model="amazon.nova-micro-v1:0", cost="0.175"),
    ]
    aliased = [
        dataclasses.replace(t, policy=dataclasses.replace(t.policy, model_alias="chat"))
        for t in targets
    ]
    balancer = Balancer(targets=aliased, algorithm="cost")
    assert balancer.plan(model="chat", headers=[]) == [2, 1, 0]
    # A target with an alias answers to it only, not to its model's own name.
    with pytest.raises(NoTargetForModel) as caught:
        balancer.plan(model="gpt-4o-mini", headers=[])
    assert caught.value.served == ("chat",)


def test_cost_refuses_a_model_no_target_serves() -> None:
    balancer = Balancer(
        targets=[
            _target("a", model="gpt-4o", cost="1"),
            _target("b", model="gpt-4o-mini", cost="2"),
        ],
        algorithm="cost",
    )
    with pytest.raises(NoTargetForModel) as caught:
        balancer.plan(model="claude-3", headers=[])
    assert caught.value.served == ("gpt-4o", "gpt-4o-mini")


def test_circuit_breaker_opens_after_max_fails_then_half_opens_for_one_probe() -> None:
    clock = Clock()
    balancer = Balancer(
        targets=[_target("flaky"), _target("steady")],
        max_fails=3,
        fail_timeout_ms=10_000,
        clock=clock,
    )
    # Two failures: still in rotation.
    balancer.failed(0)
    balancer.failed(0)
    assert 0 in balancer.plan(model=None, headers=[])
    # The third consecutive failure ejects it.
    balancer.failed(0)
    assert balancer.circuit_open(0)
    assert all(balancer.plan(model=None, headers=[]) == [1] for _ in range(5))
    # After fail_timeout: half-open, exactly one request may probe it.
    clock.now += 10.0
    assert not balancer.circuit_open(0)
    assert balancer.acquire(0)
    assert not balancer.acquire(0)
    assert 0 not in balancer.plan(model=None, headers=[])
    # A failed probe ejects it again at once.
    balancer.failed(0)
    assert balancer.circuit_open(0)
    clock.now += 10.0
    assert balancer.acquire(0)
    balancer.succeeded(0, latency_ms=5, usage=None)
    # Closed: it takes its share again, and a single new failure does not eject it.
    assert _picks(balancer, 10) == {0: 5, 1: 5}
    balancer.failed(0)
    assert not balancer.circuit_open(0)


def test_a_success_resets_the_consecutive_failure_count() -> None:
    balancer = Balancer(targets=[_target("a"), _target("b")], max_fails=2, clock=Clock())
    balancer.failed(0)
    balancer.succeeded(0, latency_ms=1, usage=None)
    balancer.failed(0)
    assert not balancer.circuit_open(0)


def test_every_target_ejected_leaves_an_empty_plan() -> None:
    balancer = Balancer(targets=[_target("a"), _target("b")], max_fails=1, clock=Clock())
    balancer.failed(0)
    balancer.failed(1)
    assert balancer.plan(model=None, headers=[]) == []


@pytest.mark.parametrize(
    ("criteria", "status", "fails_over"),
    [
        pytest.param(("http_429",), 429, True, id="429"),
        pytest.param(("http_429",), 500, False, id="500-not-listed"),
        pytest.param(("http_5xx",), 503, True, id="5xx"),
        pytest.param(("http_500", "http_502"), 502, True, id="502"),
        pytest.param(("error", "timeout"), 500, False, id="default-no-status"),
        pytest.param(("http_5xx",), 400, False, id="client-error"),
    ],
)
def test_failover_criteria_by_status(criteria, status, fails_over) -> None:
    balancer = Balancer(targets=[_target("a")], failover_criteria=criteria)
    assert balancer.fails_over_on_status(status) is fails_over


def test_failover_criteria_for_errors_and_timeouts() -> None:
    both = Balancer(targets=[_target("a")])
    assert both.fails_over_on_error(timed_out=True) and both.fails_over_on_error(timed_out=False)
    only_timeout = Balancer(targets=[_target("a")], failover_criteria=("timeout",))
    assert only_timeout.fails_over_on_error(timed_out=True)
    assert not only_timeout.fails_over_on_error(timed_out=False)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"algorithm": "random"}, 'unknown algorithm "random"', id="algorithm"),
        pytest.param({"failover_criteria": ("http_418",)}, '"http_418"', id="criterion"),
        pytest.param({"targets": []}, "at least one target", id="no-targets"),
    ],
)
def test_bad_balancer_arguments(kwargs, message) -> None:
    arguments = {"targets": [_target("a")], **kwargs}
    with pytest.raises(ValueError, match=message):
        Balancer(**arguments)


def test_a_probe_that_ends_without_a_verdict_frees_the_half_open_target() -> None:
    clock = Clock()
    balancer = Balancer(targets=[_target("a"), _target("b")], max_fails=1, clock=clock)
    balancer.failed(0)
    clock.now += 10.0
    assert balancer.acquire(0)
    # The probe ended with an error outside failover_criteria (or was cancelled).
    balancer.settle(0)
    assert 0 in balancer.plan(model=None, headers=[])
    assert balancer.acquire(0)
