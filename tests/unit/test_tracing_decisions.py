"""The data plane's request-path shortcuts for tracing agree with the OpenTelemetry SDK: its
sampling decisions (the SDK samplers' own should_sample) and W3C traceparent parsing."""

from __future__ import annotations

import random

import pytest
from opentelemetry import trace as api
from opentelemetry.context import Context
from opentelemetry.sdk.trace import sampling

from dataplane.observability.tracing import _fast_decision, parse_traceparent

SAMPLERS = [
    sampling.ALWAYS_ON,
    sampling.ALWAYS_OFF,
    sampling.TraceIdRatioBased(0.1),
    sampling.TraceIdRatioBased(0.5),
    sampling.ParentBased(sampling.ALWAYS_ON),
    sampling.ParentBased(sampling.ALWAYS_OFF),
    sampling.ParentBased(sampling.TraceIdRatioBased(0.25)),
]


@pytest.mark.parametrize("sampler", SAMPLERS, ids=lambda s: s.get_description())
def test_fast_decisions_equal_the_samplers_own(sampler: sampling.Sampler) -> None:
    decide = _fast_decision(sampler)
    assert decide is not None
    rng = random.Random(7)
    for _ in range(2000):
        trace_id = rng.getrandbits(128) or 1
        parent_flag = rng.choice([None, 0, 1])
        context = Context()
        if parent_flag is not None:
            remote = api.SpanContext(
                trace_id, 0x1234, is_remote=True, trace_flags=api.TraceFlags(parent_flag)
            )
            context = api.set_span_in_context(api.NonRecordingSpan(remote))
        expected = (
            sampler.should_sample(context, trace_id, "chat").decision
            == sampling.Decision.RECORD_AND_SAMPLE
        )
        assert decide(trace_id, parent_flag) is expected


def test_an_unknown_sampler_is_asked_itself() -> None:
    class Custom(sampling.Sampler):
        def should_sample(self, *args, **kwargs):  # pragma: no cover - never called here
            raise AssertionError

        def get_description(self) -> str:
            return "custom"

    assert _fast_decision(Custom()) is None
    assert _fast_decision(sampling.ParentBased(Custom())) is None


@pytest.mark.parametrize(
    ("header", "parsed"),
    [
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            (0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, 1),
        ),
        (
            " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00 ",
            (0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, 0),
        ),
        # A later version may carry more fields: the first four are read.
        (
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            (0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, 1),
        ),
        ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", None),  # zero trace id
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", None),  # zero span id
        ("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", None),  # invalid version
        ("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", None),  # upper case
        ("00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01", None),  # short trace id
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x", None),  # v00 has 4 fields
        ("garbage", None),
        ("", None),
    ],
)
def test_traceparent_parsing(header: str, parsed: tuple[int, int, int] | None) -> None:
    assert parse_traceparent(header) == parsed
