"""The exporter's hand-written OTLP bytes, read back with opentelemetry-proto's own classes, and
the byte search that reads an OpenAI body's response id, checked against a parse of it."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from dataplane.observability.otel_export import (
    SpanEncoder,
    TracedAttempt,
    TracedRequest,
    _meta_of,
    _openai_meta,
    otel_resource,
    response_meta,
)
from support.otlp_receiver import attributes

TRACE = 0x4BF92F3577B34DA6A3CE929D0E0E4736
CLIENT_SPAN = 0x00F067AA0BA902B7
START_NS = 1_796_667_467_000_000_000
PERF = 5_000_000_000  # the perf-counter instant of START_NS


def _attempt(number: int, span_id: int, *, status: int, failed_over: bool) -> TracedAttempt:
    start = PERF + number * 1_000_000
    return TracedAttempt(
        number=number,
        span_id=span_id,
        provider="openai",
        model=f"gpt-4o-{number}",
        origin="http://127.0.0.1:8080",
        start_perf_ns=start,
        end_perf_ns=start + 900_000,
        status=status,
        failed_over=failed_over,
        upstream_perf_ns=start + 100_000,
        first_byte_perf_ns=None if failed_over else start + 400_000,
    )


def _request(**changes: object) -> TracedRequest:
    record = TracedRequest(
        trace_id=TRACE,
        span_id=0x1111_2222_3333_4444,
        parent_span_id=None,
        tracestate="",
        sampled=True,
        request_id="01a251b9e7929fb48954fb1a1d75744b",
        route="chat",
        consumer="acme",
        operation="chat",
        request_model="gpt-4o-mini",
        response_model="gpt-4o-2",
        provider="openai",
        start_ns=START_NS,
        start_perf_ns=PERF,
        end_perf_ns=PERF + 3_000_000,
        status=200,
        usage=(5, 4, 0, 0, None),
        estimated=False,
        stream=False,
        first_byte_perf_ns=PERF + 2_400_000,
        attempts=(
            _attempt(1, 0xAAAA, status=503, failed_over=True),
            _attempt(2, 0xBBBB, status=200, failed_over=False),
        ),
        params=(("gen_ai.request.temperature", 0.5), ("gen_ai.request.max_tokens", 50)),
        response_id="chatcmpl-1",
        finish_reasons=("stop",),
        error_type="",
        content=None,
        cost="0.000042",
    )
    return record._replace(**changes)


def _spans(record: TracedRequest) -> list[Span]:
    encoder = SpanEncoder(otel_resource("dp-test"), "1.2.3")
    # Twice: the second time from the blocks cached by the first.
    encoder.request(record)
    message = ExportTraceServiceRequest.FromString(
        encoder.export_request([encoder.request(record), encoder.request(record)])
    )
    (resource_spans,) = message.resource_spans
    assert attributes(resource_spans.resource.attributes)["service.name"] == "dp-test"
    (scope_spans,) = resource_spans.scope_spans
    assert scope_spans.scope.version == "1.2.3"
    spans = list(scope_spans.spans)
    half = len(spans) // 2
    assert spans[:half] == spans[half:]
    return spans[:half]


def test_a_failed_over_request_is_three_spans_with_their_ids_times_and_attributes() -> None:
    first, second, request = _spans(_request())
    # Ids as the traceparent's hex reads them; the attempts are children of the request span.
    assert request.trace_id.hex() == f"{TRACE:032x}"
    assert request.span_id.hex() == "1111222233334444"
    assert request.parent_span_id == b""
    assert request.flags == 0x101
    for attempt, span_id in ((first, 0xAAAA), (second, 0xBBBB)):
        assert attempt.trace_id == request.trace_id
        assert attempt.span_id == span_id.to_bytes(8, "big")
        assert attempt.parent_span_id == request.span_id
        assert attempt.flags == 0x101
        assert attempt.kind == Span.SPAN_KIND_CLIENT
    # Perf-counter instants become Unix nanoseconds.
    assert (request.start_time_unix_nano, request.end_time_unix_nano) == (
        START_NS,
        START_NS + 3_000_000,
    )
    assert (second.start_time_unix_nano, second.end_time_unix_nano) == (
        START_NS + 2_000_000,
        START_NS + 2_900_000,
    )
    (event,) = request.events
    assert event.name == "gen_ai.first_token"
    assert event.time_unix_nano == START_NS + 2_400_000
    assert attributes(event.attributes) == {"gen_ai.server.time_to_first_token": 0.0024}
    assert first.events == [] and len(second.events) == 1
    assert first.status.code == first.status.STATUS_CODE_ERROR
    assert attributes(first.attributes)["error.type"] == "503"
    assert attributes(second.attributes)["meterline.failed_over"] is False
    assert request.name == "chat gpt-4o-mini" and second.name == "chat gpt-4o-2"
    assert attributes(request.attributes) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.stream": False,
        "http.response.status_code": 200,
        "meterline.route": "chat",
        "meterline.usage.estimated": False,
        "meterline.attempts": 2,
        "gen_ai.request.model": "gpt-4o-mini",
        "meterline.consumer": "acme",
        "gen_ai.response.model": "gpt-4o-2",
        "gen_ai.response.finish_reasons": ["stop"],
        "gen_ai.request.temperature": 0.5,
        "gen_ai.request.max_tokens": 50,
        "meterline.request_id": "01a251b9e7929fb48954fb1a1d75744b",
        "gen_ai.response.id": "chatcmpl-1",
        "gen_ai.usage.input_tokens": 5,
        "gen_ai.usage.output_tokens": 4,
        "gen_ai.usage.cache_read.input_tokens": 0,
        "gen_ai.usage.reasoning.output_tokens": 0,
        "meterline.cost": "0.000042",
    }


@pytest.mark.parametrize(
    "usage",
    [
        pytest.param((127, 0, None, None, None), id="one-byte-counts"),
        pytest.param((128, 16_383, 1, 2, 3), id="two-byte-counts"),
        pytest.param((16_384, 2**40, 127, 128, 16_384), id="longer-counts"),
        pytest.param((None, 7, None, None, None), id="absent-input"),
        pytest.param(None, id="no-usage"),
    ],
)
def test_token_counts_of_every_size_read_back(
    usage: tuple[int | None, ...] | None,
) -> None:
    (*_, request) = _spans(_request(usage=usage))
    attrs = attributes(request.attributes)
    names = (
        "gen_ai.usage.input_tokens",
        "gen_ai.usage.output_tokens",
        "gen_ai.usage.cache_read.input_tokens",
        "gen_ai.usage.cache_creation.input_tokens",
        "gen_ai.usage.reasoning.output_tokens",
    )
    got = tuple(attrs.get(name) for name in names)
    if usage is None:
        assert got == (None,) * 5
        return
    value, output, cached, reasoning, written = usage
    assert got == (
        None if value is None else value + (cached or 0) + (written or 0),
        None if output is None else output + (reasoning or 0),
        cached,
        written,
        reasoning,
    )


def test_a_remote_parent_tracestate_and_long_strings_read_back() -> None:
    long_id = "r" * 300  # past the precomputed heads
    (*_, request) = _spans(
        _request(
            parent_span_id=CLIENT_SPAN,
            tracestate="vendor=abc",
            request_id=long_id,
            response_id="é" * 70,
            content=('[{"role":"user","content":"hi"}]', "hello"),
            first_byte_perf_ns=None,
            attempts=(),
        )
    )
    assert request.parent_span_id == CLIENT_SPAN.to_bytes(8, "big")
    assert request.flags == 0x301
    assert request.trace_state == "vendor=abc"
    assert request.events == []
    attrs = attributes(request.attributes)
    assert attrs["meterline.request_id"] == long_id
    assert attrs["gen_ai.response.id"] == "é" * 70
    assert attrs["gen_ai.input.messages"] == '[{"role":"user","content":"hi"}]'
    assert attrs["gen_ai.output.messages"] == "hello"


def test_an_unpriced_thunk_and_an_error_status() -> None:
    (*_, request) = _spans(_request(status=429, error_type="rate_limited", cost=lambda: None))
    attrs = attributes(request.attributes)
    assert "meterline.cost" not in attrs
    assert attrs["error.type"] == "rate_limited"
    assert request.status.code == request.status.STATUS_CODE_ERROR


def _parsed(body: bytes) -> tuple[str, tuple[str, ...]]:
    found: list[object] = [""]
    _meta_of(orjson.loads(body), found)
    return str(found[0]), tuple(dict.fromkeys(str(reason) for reason in found[1:]))


_TEXT = st.text(alphabet=st.sampled_from('ab"\\é_:{}, reason"stop'), max_size=12)


@given(
    ident=_TEXT,
    reasons=st.lists(st.one_of(st.none(), _TEXT), min_size=1, max_size=3),
    content=_TEXT,
    vllm=st.booleans(),
)
def test_the_byte_search_agrees_with_a_parse(
    ident: str, reasons: list[str | None], content: str, vllm: bool
) -> None:
    choices = []
    for index, reason in enumerate(reasons):
        choice: dict[str, object] = {
            "index": index,
            "message": {"role": "assistant", "content": content},
            "finish_reason": reason,
        }
        if vllm:
            choice["stop_reason"] = None
        choices.append(choice)
    body = orjson.dumps({"id": ident, "object": "chat.completion", "choices": choices})
    found = _openai_meta(body)
    if found is not None:  # None: read by the parse instead
        assert found == _parsed(body)
    assert response_meta(body) == _parsed(body)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b'{"id": "x", "choices": [{"finish_reason": "stop"}]}', id="spaced"),
        pytest.param(b'{"id":"x","choices":[{"finish_reason":7}]}', id="not-a-string"),
        pytest.param(b'{"id":"x","stop_reason":"end_turn"}', id="anthropic-key"),
        pytest.param(b'{"id":"x","choices":[{"finishReason":"STOP"}]}', id="camel-case"),
        pytest.param(b'{"id":"a\\"b","choices":[]}', id="escaped-id"),
    ],
)
def test_anything_unusual_is_left_to_the_parse(body: bytes) -> None:
    assert _openai_meta(body) is None
    assert response_meta(body) == _parsed(body)
