"""The OpenTelemetry SDK side of data-plane tracing, in a child process of its own.

``dataplane.observability.tracing`` (the request path) hands finished requests, as plain
tuples, to a ``python -m dataplane.observability.otel_export`` child through its stdin; this
process turns them into GenAI spans with explicit start/end times (fed to the SDK's
BatchSpanProcessor) and records the gen_ai.* metrics, then exports both with the SDK's OTLP
exporters (gRPC or HTTP) as the inherited OTEL_* variables configure them. Building and
encoding spans costs more CPU than the request it describes; here it runs beside the data
plane (on another core when there is one) instead of holding its interpreter.

Frames on stdin: one kind byte, a 4-byte big-endian length, the payload. ``B`` a pickled list
of ``TracedRequest``; ``F`` flush (answered with one ``K`` byte on stdout once exported);
``Q`` flush, shut down, answer ``K`` and exit. End of input also shuts down.
"""

from __future__ import annotations

import logging
import os
import pickle
import sys
from typing import TYPE_CHECKING, Any, BinaryIO, Final

from dataplane.observability.tracing import (
    DEFAULT_SERVICE_NAME,
    SCOPE_NAME,
    TracedAttempt,
    TracedRequest,
    provider_name,
    signals_configured,
)

if TYPE_CHECKING:
    from opentelemetry.metrics import Histogram
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import SpanProcessor

logger = logging.getLogger(__name__)

FRAME_BATCH: Final = b"B"
FRAME_FLUSH: Final = b"F"
FRAME_QUIT: Final = b"Q"
ACK: Final = b"K"

# The conventions' advised histogram boundaries.
_TOKEN_BUCKETS: Final = tuple(float(4**n) for n in range(14))
_DURATION_BUCKETS: Final = tuple(0.01 * 2**n for n in range(14))
_TTFT_BUCKETS: Final = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip
_TPOT_BUCKETS: Final = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
)  # fmt: skip
_USAGE_NAMES: Final = (
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.cache_read.input_tokens",
    "gen_ai.usage.cache_creation.input_tokens",
    "gen_ai.usage.reasoning.output_tokens",
)


def gen_ai_tokens(usage: tuple[int | None, ...] | None) -> tuple[int | None, int | None]:
    """(input, output) as the conventions count them, from a record's usage tuple (input,
    output, cached input, reasoning, cache write as Meterline's events keep them apart): input
    includes the tokens read from and written to a cache, output includes reasoning."""
    if usage is None:
        return None, None
    input_tokens, output_tokens, cached, reasoning, cache_write = usage
    if input_tokens is not None:
        input_tokens += (cached or 0) + (cache_write or 0)
    if output_tokens is not None:
        output_tokens += reasoning or 0
    return input_tokens, output_tokens


def _protocol(signal: str) -> str:
    """The OTLP protocol of a signal: grpc or http/protobuf (the spec's default)."""
    value = (
        os.environ.get(f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    if value not in ("grpc", "http/protobuf"):
        raise ValueError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL={value!r}: only grpc or http/protobuf are supported"
        )
    return value


def otel_resource(default_service_name: str) -> Resource:
    """The SDK's resource from OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES, named
    ``default_service_name`` when neither names the service."""
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource

    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: default_service_name}))
    return resource


def _exporter_kind(signal: str) -> str:
    """``otlp`` or ``console`` for a signal (OTEL_<SIGNAL>_EXPORTER, default otlp)."""
    kinds = os.environ.get(f"OTEL_{signal}_EXPORTER", "otlp").strip().lower() or "otlp"
    kind = kinds.split(",")[0].strip()
    if kind not in ("otlp", "console"):
        raise ValueError(f"OTEL_{signal}_EXPORTER={kinds!r}: only otlp, console or none")
    return kind


def span_exporter() -> Any:
    """The span exporter the OTEL_* variables name (the SDK reads endpoint, headers, TLS,
    compression and timeout from them itself)."""
    if _exporter_kind("TRACES") == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if _protocol("TRACES") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpSpanExporter,
    )

    return HttpSpanExporter()


def metric_exporter() -> Any:
    if _exporter_kind("METRICS") == "console":
        from opentelemetry.sdk.metrics.export import ConsoleMetricExporter

        return ConsoleMetricExporter()
    if _protocol("METRICS") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        return OTLPMetricExporter()
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
        OTLPMetricExporter as HttpMetricExporter,
    )

    return HttpMetricExporter()


class _Instruments:
    """The GenAI metric instruments (recorded by the builder thread, never the request path)."""

    def __init__(self, provider: MeterProvider) -> None:
        meter = provider.get_meter(SCOPE_NAME)
        self.tokens: Histogram = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Number of input and output tokens used.",
            explicit_bucket_boundaries_advisory=_TOKEN_BUCKETS,
        )
        self.duration: Histogram = meter.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            description="GenAI operation duration.",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
        )
        self.ttft: Histogram = meter.create_histogram(
            "gen_ai.server.time_to_first_token",
            unit="s",
            description="Time to generate first token for successful responses.",
            explicit_bucket_boundaries_advisory=_TTFT_BUCKETS,
        )
        self.tpot: Histogram = meter.create_histogram(
            "gen_ai.server.time_per_output_token",
            unit="s",
            description="Time per output token generated after the first token for successful "
            "responses.",
            explicit_bucket_boundaries_advisory=_TPOT_BUCKETS,
        )

    def record(self, request: TracedRequest) -> None:
        attributes: dict[str, str | int] = {
            "gen_ai.operation.name": request.operation,
            "gen_ai.provider.name": provider_name(request.provider),
            "gen_ai.request.model": request.request_model,
            "gen_ai.response.model": request.response_model,
            "meterline.route": request.route,
        }
        ok = 200 <= request.status < 400
        duration_s = (request.end_perf_ns - request.start_perf_ns) / 1e9
        if ok:
            self.duration.record(duration_s, attributes)
        else:
            self.duration.record(duration_s, {**attributes, "error.type": str(request.status)})
        input_tokens, output = gen_ai_tokens(request.usage)
        for kind, tokens in (("input", input_tokens), ("output", output)):
            if tokens is not None:
                self.tokens.record(tokens, {**attributes, "gen_ai.token.type": kind})
        if ok and request.first_byte_perf_ns is not None:
            ttft_s = (request.first_byte_perf_ns - request.start_perf_ns) / 1e9
            self.ttft.record(ttft_s, attributes)
            if request.stream and output is not None and output > 1:
                generating_s = (request.end_perf_ns - request.first_byte_perf_ns) / 1e9
                self.tpot.record(generating_s / (output - 1), attributes)


class Builder:
    """Spans and metrics of finished requests (the child's one object)."""

    def __init__(
        self,
        *,
        span_processor: SpanProcessor | None,
        resource: Resource,
        meter_provider: MeterProvider | None,
    ) -> None:
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope

        from dataplane import __version__

        self._processor = span_processor
        self._resource = resource
        self._scope = InstrumentationScope(SCOPE_NAME, __version__)
        self._meter_provider = meter_provider
        self._instruments = None if meter_provider is None else _Instruments(meter_provider)

    @classmethod
    def from_environment(cls) -> Builder:
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        traces, metrics = signals_configured()
        resource = otel_resource(DEFAULT_SERVICE_NAME)
        processor = BatchSpanProcessor(span_exporter()) if traces else None
        meter_provider = None
        if metrics:
            from opentelemetry.sdk.metrics import MeterProvider
            from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

            reader = PeriodicExportingMetricReader(metric_exporter())
            meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
        return cls(span_processor=processor, resource=resource, meter_provider=meter_provider)

    def add(self, request: TracedRequest) -> None:
        if self._instruments is not None:
            self._instruments.record(request)
        if request.sampled and self._processor is not None:
            for span in self._spans(request):
                self._processor.on_end(span)

    def _spans(self, request: TracedRequest) -> list[Any]:
        from opentelemetry import trace as api
        from opentelemetry.sdk.trace import Event, ReadableSpan

        def wall(perf_ns: int) -> int:
            return request.start_ns + (perf_ns - request.start_perf_ns)

        state = api.TraceState.from_header([request.tracestate]) if request.tracestate else None
        flags = api.TraceFlags(api.TraceFlags.SAMPLED)

        def context(span_id: int) -> api.SpanContext:
            return api.SpanContext(
                request.trace_id, span_id, is_remote=False, trace_flags=flags, trace_state=state
            )

        parent = (
            None
            if request.parent_span_id is None
            else api.SpanContext(
                request.trace_id,
                request.parent_span_id,
                is_remote=True,
                trace_flags=flags,
                trace_state=state,
            )
        )
        request_context = context(request.span_id)
        attributes = self._request_attributes(request)
        events = []
        if request.first_byte_perf_ns is not None:
            ttft_s = (request.first_byte_perf_ns - request.start_perf_ns) / 1e9
            events.append(
                Event(
                    "gen_ai.first_token",
                    {"gen_ai.server.time_to_first_token": ttft_s},
                    wall(request.first_byte_perf_ns),
                )
            )
        spans = []
        for attempt in request.attempts:
            attempt_attributes: dict[str, Any] = {
                "gen_ai.operation.name": request.operation,
                "gen_ai.provider.name": provider_name(attempt.provider),
                "gen_ai.request.model": attempt.model,
                "server.address": attempt.origin,
                "http.response.status_code": attempt.status,
                "meterline.attempt": attempt.number,
                "meterline.failed_over": attempt.failed_over,
            }
            if not 200 <= attempt.status < 400:
                attempt_attributes["error.type"] = str(attempt.status)
            attempt_events = []
            if attempt.first_byte_perf_ns is not None:
                attempt_events.append(
                    Event(
                        "gen_ai.first_token",
                        {
                            "gen_ai.server.time_to_first_token": (
                                attempt.first_byte_perf_ns - attempt.start_perf_ns
                            )
                            / 1e9
                        },
                        wall(attempt.first_byte_perf_ns),
                    )
                )
            spans.append(
                ReadableSpan(
                    f"{request.operation} {attempt.model}",
                    context=context(attempt.span_id),
                    parent=request_context,
                    resource=self._resource,
                    attributes=attempt_attributes,
                    events=attempt_events,
                    kind=api.SpanKind.CLIENT,
                    status=_status(attempt.status),
                    start_time=wall(attempt.start_perf_ns),
                    end_time=wall(attempt.end_perf_ns),
                    instrumentation_scope=self._scope,
                )
            )
        spans.append(
            ReadableSpan(
                f"{request.operation} {request.request_model}",
                context=request_context,
                parent=parent,
                resource=self._resource,
                attributes=attributes,
                events=events,
                kind=api.SpanKind.CLIENT,
                status=_status(request.status),
                start_time=request.start_ns,
                end_time=wall(request.end_perf_ns),
                instrumentation_scope=self._scope,
            )
        )
        return spans

    def _request_attributes(self, request: TracedRequest) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": request.operation,
            "gen_ai.provider.name": provider_name(request.provider),
            "gen_ai.request.model": request.request_model,
            "gen_ai.request.stream": request.stream,
            "http.response.status_code": request.status,
            "meterline.route": request.route,
            "meterline.request_id": request.request_id,
            "meterline.usage.estimated": request.estimated,
            "meterline.attempts": len(request.attempts),
        }
        if request.consumer:
            attributes["meterline.consumer"] = request.consumer
        if request.response_model:
            attributes["gen_ai.response.model"] = request.response_model
        if not 200 <= request.status < 400:
            attributes["error.type"] = str(request.status)
        # The request's sampling parameters and (opted in) prompt, taken on the request path.
        attributes.update(request.params)
        if request.messages is not None:
            attributes["gen_ai.input.messages"] = request.messages
        usage = request.usage
        if usage is not None:
            input_tokens, output_tokens = gen_ai_tokens(usage)
            for value, name in zip(
                (input_tokens, output_tokens, usage[2], usage[4], usage[3]),
                _USAGE_NAMES,
                strict=True,
            ):
                if value is not None:
                    attributes[name] = value
        if request.cost is not None:
            # A decimal string (priced by the data plane): money is never a float here either.
            attributes["meterline.cost"] = request.cost
        return attributes

    def force_flush(self, timeout_millis: int = 10_000) -> None:
        if self._processor is not None:
            self._processor.force_flush(timeout_millis)
        if self._meter_provider is not None:
            self._meter_provider.force_flush(timeout_millis)

    def shutdown(self) -> None:
        if self._processor is not None:
            self._processor.shutdown()
        if self._meter_provider is not None:
            self._meter_provider.shutdown()


def _status(status: int) -> Any:
    from opentelemetry.trace import Status, StatusCode

    if 200 <= status < 400:
        return Status(StatusCode.UNSET)
    return Status(StatusCode.ERROR, f"HTTP {status}")


def _read_exactly(stream: BinaryIO, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = stream.read(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def main() -> int:
    # Acks go to the real stdout; anything else written to stdout (the console exporters)
    # goes to stderr, so it cannot corrupt the frames.
    acks = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    builder = Builder.from_environment()
    frames = sys.stdin.buffer
    try:
        while True:
            head = _read_exactly(frames, 5)
            if head is None:
                return 0
            kind, size = head[:1], int.from_bytes(head[1:], "big")
            payload = _read_exactly(frames, size) if size else b""
            if payload is None:
                return 0
            if kind == FRAME_BATCH:
                for raw in pickle.loads(payload):
                    request = TracedRequest(*raw)
                    request = request._replace(
                        attempts=tuple(TracedAttempt(*a) for a in request.attempts)
                    )
                    try:
                        builder.add(request)
                    except Exception:
                        logger.exception(
                            "request %s: could not build its spans", request.request_id
                        )
            elif kind == FRAME_FLUSH:
                builder.force_flush()
                acks.write(ACK)
            elif kind == FRAME_QUIT:
                builder.shutdown()
                builder = None  # type: ignore[assignment]
                acks.write(ACK)
                return 0
    finally:
        if builder is not None:
            builder.shutdown()


if __name__ == "__main__":
    sys.exit(main())
