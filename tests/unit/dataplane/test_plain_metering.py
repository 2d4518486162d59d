"""The plain Metering (no policy, no route cost, no task): the same figures as the full path."""

from __future__ import annotations

from decimal import Decimal

import pytest

from dataplane.admission.cost import admit
from dataplane.admission.entitlements import Enforcer, compile_enforcement
from dataplane.usage.events import llm_token_events
from dataplane.usage.tokens import TokenUsage
from meterline.dataplane.v1 import snapshot_pb2

JSON = [(b"content-type", b"application/json")]
SSE = [(b"content-type", b"text/event-stream")]


def events(consumer: str = "c-1"):
    return llm_token_events(
        request_id="r-1",
        source="dp",
        subject=consumer,
        time_ns=1,
        provider="openai",
        model="gpt-4o-mini",
        status_code=200,
        route="v1",
        usage=TokenUsage(
            input_tokens=7, output_tokens=5, cached_input_tokens=3, reasoning_tokens=2
        ),
        estimated=False,
    )


def metered(enforcer: Enforcer, consumer: str | None, headers=(), stream_figures=False):
    return admit(
        enforcer,
        consumer_id=consumer,
        route_id="r",
        provider="openai",
        model="gpt-4o-mini",
        headers=list(headers),
        stream_figures=stream_figures,
    )


def with_policy(consumer: str) -> snapshot_pb2.Snapshot:
    entry = snapshot_pb2.ConsumerEntitlements(
        consumer_id=consumer, username=consumer, customer="acme", has_access=True, currency="USD"
    )
    entry.metered.add(balance_id="b-1", feature="tokens", balance=100, limit=100)
    return snapshot_pb2.Snapshot(consumer_entitlements=[entry])


@pytest.mark.parametrize(
    ("consumer", "headers", "plain"),
    [
        pytest.param(None, (), True, id="no-consumer"),
        pytest.param("c-9", (), True, id="consumer-without-policy"),
        pytest.param("c-1", (), False, id="consumer-with-policy"),
        pytest.param(
            "c-9",
            [(b"x-meterline-task", b"t"), (b"x-meterline-task-budget", b"1")],
            False,
            id="task-budget",
        ),
    ],
)
def test_only_requests_nothing_counts_are_plain(consumer, headers, plain) -> None:
    enforcer = Enforcer()
    enforcer.apply(compile_enforcement(with_policy("c-1")))
    assert metered(enforcer, consumer, headers).plain is plain


def test_a_plain_request_has_the_headers_of_the_full_path() -> None:
    enforcer = Enforcer()
    plain, full = metered(enforcer, "c-9"), metered(enforcer, "c-9")
    full.plain = False  # the enforcer's own accounting, for comparison
    for event in events():
        plain.record(event)
        full.record(event)
    expected = [(b"x-meterline-input-tokens", b"10"), (b"x-meterline-output-tokens", b"7")]
    assert plain.head(JSON) == full.head(JSON) == expected
    assert enforcer.appended == 8  # four events each, counted for the usage ACKs


def test_a_plain_stream_ends_with_the_figures_of_the_full_path() -> None:
    enforcer = Enforcer()
    plain = metered(enforcer, "c-9", stream_figures=True)
    full = metered(enforcer, "c-9", stream_figures=True)
    full.plain = False
    assert plain.head(SSE) == full.head(SSE) == []
    for event in events():
        plain.record(event)
        full.record(event)
    ending = plain.body(b"", more=False)
    assert ending == full.body(b"", more=False)
    assert ending is not None and b'"input_tokens":10,"output_tokens":7' in ending


def test_a_snapshot_applied_mid_request_counts_it_by_its_policy() -> None:
    enforcer = Enforcer()
    metering = metered(enforcer, "c-1")
    assert metering.plain
    # Given a snapshot that gives the consumer a balance, applied while the request runs
    enforcer.apply(compile_enforcement(with_policy("c-1")))
    for event in events():
        metering.record(event)
    # Then its usage is counted against that balance, as on the full path
    headers = dict(metering.head(JSON))
    assert headers[b"x-meterline-remaining"] == b"83"
    assert enforcer.remaining("c-1", provider="openai", model="m", task=None)[0] == 83


def priced_route(input_cost: str, output_cost: str) -> snapshot_pb2.Snapshot:
    return snapshot_pb2.Snapshot(
        routes=[snapshot_pb2.Route(id="r", name="v1", service_id="s")],
        plugins=[
            snapshot_pb2.Plugin(
                id="ai",
                name="ai-proxy",
                route_id="r",
                enabled=True,
                ai_proxy=snapshot_pb2.AiProxyConfig(
                    model=snapshot_pb2.AiProxyModel(
                        provider="openai",
                        name="gpt-4o-mini",
                        options=snapshot_pb2.AiProxyModelOptions(
                            input_cost=input_cost, output_cost=output_cost
                        ),
                    )
                ),
            )
        ],
    )


def test_a_traced_requests_cost_is_the_one_its_figures_counted() -> None:
    # Given a priced route and a request whose usage was counted for its headers
    enforcer = Enforcer()
    enforcer.apply(compile_enforcement(priced_route("2", "8")))
    metering = metered(enforcer, "c-9")
    assert not metering.plain
    usage_events = events()
    for event in usage_events:
        metering.record(event)
    priced_before = metering.cost()  # not counted yet: priced from the events
    headers = dict(metering.head(JSON))
    # When the prices change before the tracing thread reads the cost
    enforcer.apply(compile_enforcement(priced_route("100", "100")))
    # Then the span's cost is the one the headers gave, not the usage priced again
    assert metering.cost() == priced_before == Decimal(headers[b"x-meterline-cost"].decode())
    repriced = metered(enforcer, "c-9")
    for event in usage_events:
        repriced.record(event)
    assert repriced.cost() != priced_before  # what pricing it again would have said
