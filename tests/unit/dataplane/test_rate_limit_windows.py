"""The window arithmetic of dataplane.admission.ratelimit: fixed and sliding estimates."""

from __future__ import annotations

import pytest

from dataplane.admission.ratelimit import Limit, Window, decide

MINUTE = 60_000


def limit(size: int, allowed: int, *, sliding: bool, measure: str = "requests") -> Limit:
    window = Window(
        limit=allowed, size=size, limit_text=b"", limit_header=b"", remaining_header=b""
    )
    return Limit(
        plugin_id="p",
        namespace="p",
        measure=measure,
        windows=(window,),
        sliding=sliding,
        identifier="consumer",
        header_name=b"",
        redis=None,
        fault_tolerant=True,
        hide_client_headers=False,
    )


CASES = [
    # (sliding, current, previous, elapsed ms, amount) -> (allowed, used after, retry_after_s)
    # sliding-waits-for-decay: used 4 + 12 * 45/60 = 13; one more fits once 12 * (60 - e)/60
    # <= 10 - 4 - 1, at e = 35 s: 20 s from now.
    pytest.param(False, 9, 100, 5_000, 1, (True, 10, 0), id="fixed-last-one-fits"),
    pytest.param(False, 10, 0, 5_000, 1, (False, 10, 55), id="fixed-full-waits-for-the-end"),
    pytest.param(True, 0, 12, 30_000, 1, (True, 7, 0), id="sliding-half-of-previous"),
    pytest.param(True, 4, 12, 15_000, 1, (False, 13, 20), id="sliding-waits-for-decay"),
    pytest.param(True, 10, 0, 0, 1, (False, 10, 66), id="sliding-current-full"),
    pytest.param(True, 9, 9, 59_999, 1, (True, 10, 0), id="sliding-previous-almost-gone"),
    pytest.param(False, 9, 0, 0, 0, (True, 9, 0), id="check-only-not-spent"),
    pytest.param(False, 10, 0, 0, 0, (False, 10, 60), id="check-only-spent"),
]


@pytest.mark.parametrize(("sliding", "current", "previous", "elapsed", "amount", "expected"), CASES)
def test_decide(sliding, current, previous, elapsed, amount, expected) -> None:
    allowed, (state,) = decide(
        limit(60, 10, sliding=sliding),
        [(current, previous)],
        amount=amount,
        now_ms=1_700_000_040_000 + elapsed,
    )
    assert (allowed, state.used, state.retry_after_s) == expected
    assert state.reset_s == -(-(MINUTE - elapsed) // 1000)


def test_cost_is_counted_in_exact_pico_units() -> None:
    from decimal import Decimal

    from dataplane.admission.ratelimit import PICO
    from meterline.dataplane.v1 import usage_pb2

    priced = Limit(
        plugin_id="p",
        namespace="p",
        measure="cost",
        windows=(),
        sliding=False,
        identifier="consumer",
        header_name=b"",
        redis=None,
        fault_tolerant=True,
        hide_client_headers=False,
        input_pico=Decimal("0.15") * PICO / 1_000_000,
        output_pico=Decimal("0.6") * PICO / 1_000_000,
    )
    # 0.15 $ per million input tokens: 150_000 pico-dollars per token, exactly
    assert priced.amount(usage_pb2.TOKEN_TYPE_INPUT, 7) == 7 * 150_000
    assert priced.amount(usage_pb2.TOKEN_TYPE_CACHED_INPUT, 1) == 150_000
    assert priced.amount(usage_pb2.TOKEN_TYPE_REASONING, 3) == 3 * 600_000


def test_llm_provider_windows_apply_to_their_provider_only() -> None:
    from dataplane.admission.ratelimit import compile_route_limits
    from meterline.dataplane.v1 import snapshot_pb2

    route = snapshot_pb2.Route(id="r", service_id="s", paths=["/chat"])
    plugin = snapshot_pb2.Plugin(
        id="p",
        name="ai-rate-limiting-advanced",
        enabled=True,
        rate_limiting=snapshot_pb2.RateLimitingConfig(
            tokens_count_strategy="total_tokens",
            windows=[
                snapshot_pb2.RateLimitWindow(limit="100", window_size=60, provider="openai"),
                snapshot_pb2.RateLimitWindow(limit="50", window_size=60, provider="anthropic"),
            ],
        ),
    )

    def sizes(provider: str) -> list[int] | None:
        proxy = snapshot_pb2.AiProxyConfig(model=snapshot_pb2.AiProxyModel(provider=provider))
        limits = compile_route_limits(route, [plugin], ai_proxy=proxy)
        return None if limits is None else [w.limit for w in limits.default[0].windows]

    assert sizes("openai") == [100]
    assert sizes("anthropic") == [50]
    assert sizes("azure") is None
    # No single provider (ai-proxy-advanced): every window applies
    assert sizes("") == [100, 50]
