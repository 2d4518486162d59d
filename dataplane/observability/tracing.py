"""OpenTelemetry GenAI spans and metrics of proxied LLM requests, built off the request path.

The request path only notes what it already measures (perf-counter instants, the status, the
usage the provider reported) on a ``RequestTrace``; when the exchange records its last attempt
the trace becomes one immutable ``TracedRequest`` appended to a deque. A background thread
drains that deque every ``_DRAIN_INTERVAL_S`` and turns each record into spans with explicit
start/end times (handed to the SDK's BatchSpanProcessor, which exports them over OTLP) and into
the GenAI metrics. Nothing is priced, formatted or allocated for OpenTelemetry on the event
loop beyond the record itself.

Spans (OpenTelemetry GenAI semantic conventions, Development status, as of semconv 1.37+):

- ``{gen_ai.operation.name} {gen_ai.request.model}``, kind CLIENT, the request: its parent is
  the client's ``traceparent`` when it sent a valid one (same trace id), else a new trace.
- one child per upstream attempt, kind CLIENT, named for the target's model: failover and
  retries show as siblings. The provider receives a ``traceparent`` naming the attempt span
  (its ids are drawn before the call, the span is built later).
- time to first token is an event (``gen_ai.first_token``) on the request and answering attempt.

Off unless configured (``Tracing.from_environment``): with no OTEL_* variable set nothing of
the OpenTelemetry SDK is imported and no thread starts.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final

import orjson

from dataplane.usage.tokens import TokenUsage

if TYPE_CHECKING:
    from opentelemetry.metrics import Histogram
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import SpanProcessor
    from opentelemetry.sdk.trace.sampling import Sampler
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

logger = logging.getLogger(__name__)

Headers = list[tuple[bytes, bytes]]

# Records waiting for the builder thread; beyond this (an exporter far behind a traffic burst)
# the oldest are dropped rather than the data plane's memory growing.
MAX_PENDING_RECORDS: Final = 65_536
_DRAIN_INTERVAL_S: Final = 0.2
# The opt-in for prompt content on spans (OpenTelemetry's own variable for GenAI content).
CAPTURE_CONTENT_ENV: Final = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
DEFAULT_SERVICE_NAME: Final = "meterline-dataplane"
_SCOPE_NAME: Final = "meterline.dataplane"

# Meterline route types -> gen_ai.operation.name.
_OPERATIONS: Final = {
    "llm/v1/chat": "chat",
    "llm/v1/completions": "text_completion",
    "llm/v1/embeddings": "embeddings",
    "llm/v1/responses": "chat",
    "preserve": "chat",
}
# Meterline provider names -> gen_ai.provider.name's well-known values (others as they are).
_PROVIDERS: Final = {
    "openai": "openai",
    "azure": "azure.ai.openai",
    "anthropic": "anthropic",
    "gemini": "gcp.gemini",
    "vertex": "gcp.vertex_ai",
    "bedrock": "aws.bedrock",
    "mistral": "mistral_ai",
    "cohere": "cohere",
    "openai_compatible": "openai",
}
# The conventions' advised histogram boundaries.
_TOKEN_BUCKETS: Final = tuple(float(4**n) for n in range(14))
_DURATION_BUCKETS: Final = tuple(0.01 * 2**n for n in range(14))
_TTFT_BUCKETS: Final = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip
_TPOT_BUCKETS: Final = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
)  # fmt: skip

_HEX: Final = frozenset("0123456789abcdef")


def operation_name(route_type: str) -> str:
    return _OPERATIONS.get(route_type, "chat")


def provider_name(provider: str) -> str:
    return _PROVIDERS.get(provider, provider)


def parse_traceparent(value: str) -> tuple[int, int, int] | None:
    """(trace id, parent span id, flags) of a W3C ``traceparent``; None if it is not valid."""
    parts = value.strip().split("-")
    if len(parts) < 4 or parts[0] == "ff" or len(parts[0]) != 2:
        return None
    version, trace_hex, span_hex, flags_hex = parts[:4]
    if version == "00" and len(parts) != 4:
        return None
    if len(trace_hex) != 32 or len(span_hex) != 16 or len(flags_hex) != 2:
        return None
    if not _HEX.issuperset(trace_hex + span_hex + flags_hex + version):
        return None
    trace_id, span_id = int(trace_hex, 16), int(span_hex, 16)
    if not trace_id or not span_id:
        return None
    return trace_id, span_id, int(flags_hex, 16)


@dataclass(frozen=True, slots=True)
class TracedAttempt:
    """One upstream call, as the request path measured it (perf-counter nanoseconds)."""

    number: int
    span_id: int
    provider: str
    model: str
    origin: str
    start_perf_ns: int
    end_perf_ns: int
    status: int
    failed_over: bool
    upstream_perf_ns: int | None
    first_byte_perf_ns: int | None


@dataclass(frozen=True, slots=True)
class TracedRequest:
    """One proxied request, handed to the builder thread after its last attempt."""

    trace_id: int
    span_id: int
    parent_span_id: int | None
    tracestate: str
    sampled: bool
    request_id: str
    route: str
    consumer: str
    operation: str
    request_model: str
    response_model: str
    provider: str
    start_ns: int
    start_perf_ns: int
    end_perf_ns: int
    status: int
    usage: TokenUsage | None
    estimated: bool
    stream: bool
    first_byte_perf_ns: int | None
    attempts: tuple[TracedAttempt, ...]
    document: Any
    cost: Callable[[], Decimal | None] | None


class RequestTrace:
    """The trace context of one request on the request path: ids drawn up front, attempts noted
    as they end. ``Tracing.begin`` makes one; the exchange calls ``upstream_headers`` before each
    upstream call and ``ended`` from its record step."""

    __slots__ = (
        "_attempt_span_id",
        "_attempt_start",
        "_attempts",
        "_flags",
        "_tracing",
        "consumer",
        "cost",
        "parent_span_id",
        "request_id",
        "route",
        "sampled",
        "span_id",
        "start_ns",
        "start_perf_ns",
        "trace_id",
        "tracestate",
    )

    def __init__(
        self,
        tracing: Tracing,
        *,
        trace_id: int,
        parent_span_id: int | None,
        tracestate: str,
        sampled: bool,
        request_id: str,
        route: str,
        consumer: str,
        start_ns: int,
        start_perf_ns: int,
    ) -> None:
        self._tracing = tracing
        self.trace_id = trace_id
        self.span_id = _span_id()
        self.parent_span_id = parent_span_id
        self.tracestate = tracestate
        self.sampled = sampled
        self._flags = "01" if sampled else "00"
        self.request_id = request_id
        self.route = route
        self.consumer = consumer
        self.start_ns = start_ns
        self.start_perf_ns = start_perf_ns
        self.cost: Callable[[], Decimal | None] | None = None
        self._attempts: list[TracedAttempt] = []
        self._attempt_span_id = 0
        self._attempt_start = start_perf_ns

    def upstream_headers(self, headers: Headers) -> None:
        """Replace the client's trace headers in ``headers`` (the upstream request's) with ones
        naming the next attempt span as parent; that attempt's clock starts now."""
        headers[:] = [h for h in headers if h[0] not in (b"traceparent", b"tracestate")]
        self._attempt_span_id = span_id = _span_id()
        self._attempt_start = time.perf_counter_ns()
        headers.append(
            (b"traceparent", f"00-{self.trace_id:032x}-{span_id:016x}-{self._flags}".encode())
        )
        if self.tracestate:
            headers.append((b"tracestate", self.tracestate.encode()))

    def ended(
        self,
        *,
        attempt: int,
        provider: str,
        model: str,
        origin: str,
        status: int,
        failed_over: bool,
        now_perf_ns: int,
        upstream_perf_ns: int | None,
        first_byte_perf_ns: int | None,
        response_model: str,
        usage: TokenUsage | None,
        estimated: bool,
        stream: bool,
        operation: str,
        request_model: str,
        document: Any,
    ) -> None:
        """One attempt ended (the exchange's record step); the last one ends the request."""
        self._attempts.append(
            TracedAttempt(
                number=attempt,
                span_id=self._attempt_span_id or _span_id(),
                provider=provider,
                model=model,
                origin=origin,
                start_perf_ns=self._attempt_start,
                end_perf_ns=now_perf_ns,
                status=status,
                failed_over=failed_over,
                upstream_perf_ns=upstream_perf_ns,
                first_byte_perf_ns=None if failed_over else first_byte_perf_ns,
            )
        )
        self._attempt_span_id = 0
        self._attempt_start = now_perf_ns
        if failed_over:
            return
        self._tracing.submit(
            TracedRequest(
                trace_id=self.trace_id,
                span_id=self.span_id,
                parent_span_id=self.parent_span_id,
                tracestate=self.tracestate,
                sampled=self.sampled,
                request_id=self.request_id,
                route=self.route,
                consumer=self.consumer,
                operation=operation,
                request_model=request_model,
                response_model=response_model,
                provider=provider,
                start_ns=self.start_ns,
                start_perf_ns=self.start_perf_ns,
                end_perf_ns=now_perf_ns,
                status=status,
                usage=usage,
                estimated=estimated,
                stream=stream,
                first_byte_perf_ns=first_byte_perf_ns,
                attempts=tuple(self._attempts),
                document=document if self.sampled else None,
                cost=self.cost if self.sampled else None,
            )
        )


def gen_ai_tokens(usage: TokenUsage | None) -> tuple[int | None, int | None]:
    """(input, output) as the conventions count them: input includes the tokens read from and
    written to a cache, output includes reasoning (Meterline's usage events keep them apart)."""
    if usage is None:
        return None, None
    input_tokens = usage.input_tokens
    if input_tokens is not None:
        input_tokens += (usage.cached_input_tokens or 0) + (usage.cache_write_tokens or 0)
    output_tokens = usage.output_tokens
    if output_tokens is not None:
        output_tokens += usage.reasoning_tokens or 0
    return input_tokens, output_tokens


def _span_id() -> int:
    return random.getrandbits(64) or 1


def _env_on(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def signals_configured(environ: Mapping[str, str] | None = None) -> tuple[bool, bool]:
    """(traces, metrics): whether the OTEL_* variables ask for each to be exported.

    An OTLP endpoint turns both on; OTEL_TRACES_EXPORTER / OTEL_METRICS_EXPORTER set to
    ``otlp`` or ``console`` turn one on and ``none`` turns it off; OTEL_SDK_DISABLED wins."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False, False
    endpoint = bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip())

    def wanted(signal: str) -> bool:
        exporter = env.get(f"OTEL_{signal}_EXPORTER", "").strip().lower()
        if exporter:
            return exporter != "none"
        return endpoint or bool(env.get(f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT", "").strip())

    return wanted("TRACES"), wanted("METRICS")


def _exporter_kind(signal: str) -> str:
    """``otlp`` or ``console`` for a signal (OTEL_<SIGNAL>_EXPORTER, default otlp)."""
    kinds = os.environ.get(f"OTEL_{signal}_EXPORTER", "otlp").strip().lower() or "otlp"
    kind = kinds.split(",")[0].strip()
    if kind not in ("otlp", "console"):
        raise ValueError(f"OTEL_{signal}_EXPORTER={kinds!r}: only otlp, console or none")
    return kind


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
        meter = provider.get_meter(_SCOPE_NAME)
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


class Tracing:
    """The OpenTelemetry side of a data plane: ``begin`` per request, spans and metrics built and
    exported in the background. Make one with ``from_environment`` (None when not configured);
    ``shutdown`` flushes and stops it."""

    def __init__(
        self,
        *,
        span_processor: SpanProcessor | None,
        sampler: Sampler | None,
        resource: Resource,
        meter_provider: MeterProvider | None,
        capture_content: bool = False,
    ) -> None:
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope

        from dataplane import __version__

        self._processor = span_processor
        self._sampler = sampler
        self._resource = resource
        self._scope: InstrumentationScope = InstrumentationScope(_SCOPE_NAME, __version__)
        self._meter_provider = meter_provider
        self._instruments = None if meter_provider is None else _Instruments(meter_provider)
        self.capture_content = capture_content
        self._pending: deque[TracedRequest] = deque(maxlen=MAX_PENDING_RECORDS)
        self._drain_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="meterline-otel", daemon=True)
        self._thread.start()

    @classmethod
    def from_environment(cls) -> Tracing | None:
        """Tracing and metrics as the OTEL_* variables configure them; None if they ask for
        neither (then nothing of the SDK is imported)."""
        traces, metrics = signals_configured()
        if not (traces or metrics):
            return None
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        resource = otel_resource(DEFAULT_SERVICE_NAME)
        processor = sampler = None
        if traces:
            processor = BatchSpanProcessor(span_exporter())
            # The provider only reads OTEL_TRACES_SAMPLER(_ARG) for us: spans are built here.
            sampler = TracerProvider(resource=resource).sampler
        meter_provider = None
        if metrics:
            from opentelemetry.sdk.metrics import MeterProvider
            from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

            reader = PeriodicExportingMetricReader(metric_exporter())
            meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
        return cls(
            span_processor=processor,
            sampler=sampler,
            resource=resource,
            meter_provider=meter_provider,
            capture_content=_env_on(CAPTURE_CONTENT_ENV),
        )

    # -- the request path --------------------------------------------------------------

    def begin(
        self,
        headers: Headers,
        *,
        request_id: str,
        route: str,
        consumer: str,
        name: str,
        start_ns: int,
        start_perf_ns: int,
    ) -> RequestTrace:
        """A request's trace context: the client's ``traceparent``/``tracestate`` continued
        if valid, and the sampling decision made now (the provider is told it)."""
        parent: tuple[int, int, int] | None = None
        tracestate = ""
        for key, value in headers:
            if key == b"traceparent":
                parent = parse_traceparent(value.decode("latin-1"))
            elif key == b"tracestate":
                tracestate = value.decode("latin-1")[:512]
        if parent is None:
            trace_id, parent_span_id, tracestate = random.getrandbits(128) or 1, None, ""
        else:
            trace_id, parent_span_id = parent[0], parent[1]
        return RequestTrace(
            self,
            trace_id=trace_id,
            parent_span_id=parent_span_id,
            tracestate=tracestate,
            sampled=self._sample(trace_id, parent, tracestate, name),
            request_id=request_id,
            route=route,
            consumer=consumer,
            start_ns=start_ns,
            start_perf_ns=start_perf_ns,
        )

    def _sample(
        self, trace_id: int, parent: tuple[int, int, int] | None, tracestate: str, name: str
    ) -> bool:
        sampler = self._sampler
        if sampler is None:
            return False
        from opentelemetry import trace as api
        from opentelemetry.sdk.trace.sampling import Decision

        context = None
        if parent is not None:
            remote = api.SpanContext(
                parent[0],
                parent[1],
                is_remote=True,
                trace_flags=api.TraceFlags(parent[2] & 1),
                trace_state=api.TraceState.from_header([tracestate]) if tracestate else None,
            )
            context = api.set_span_in_context(api.NonRecordingSpan(remote))
        result = sampler.should_sample(context, trace_id, name, api.SpanKind.CLIENT)
        return result.decision == Decision.RECORD_AND_SAMPLE

    def submit(self, request: TracedRequest) -> None:
        """Queue a finished request for the builder thread (one deque append)."""
        self._pending.append(request)

    # -- the builder thread ------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.wait(_DRAIN_INTERVAL_S):
            self._drain()

    def _drain(self) -> None:
        with self._drain_lock:
            pending = self._pending
            while pending:
                request = pending.popleft()
                try:
                    if self._instruments is not None:
                        self._instruments.record(request)
                    if request.sampled and self._processor is not None:
                        for span in self._spans(request):
                            self._processor.on_end(span)
                except Exception:
                    logger.exception("request %s: could not build its spans", request.request_id)

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
        document = request.document
        if isinstance(document, dict):
            for key, name in (
                ("max_tokens", "gen_ai.request.max_tokens"),
                ("max_completion_tokens", "gen_ai.request.max_tokens"),
                ("max_output_tokens", "gen_ai.request.max_tokens"),
                ("temperature", "gen_ai.request.temperature"),
                ("top_p", "gen_ai.request.top_p"),
            ):
                value = document.get(key)
                if isinstance(value, int | float) and not isinstance(value, bool):
                    attributes[name] = value
            if self.capture_content:
                # Opt-in (CAPTURE_CONTENT_ENV); the route's log_payloads condition is pending.
                messages = document.get("messages", document.get("input"))
                if messages is not None:
                    attributes["gen_ai.input.messages"] = orjson.dumps(messages).decode()
        usage = request.usage
        if usage is not None:
            input_tokens, output_tokens = gen_ai_tokens(usage)
            for value, name in (
                (input_tokens, "gen_ai.usage.input_tokens"),
                (output_tokens, "gen_ai.usage.output_tokens"),
                (usage.cached_input_tokens, "gen_ai.usage.cache_read.input_tokens"),
                (usage.cache_write_tokens, "gen_ai.usage.cache_creation.input_tokens"),
                (usage.reasoning_tokens, "gen_ai.usage.reasoning.output_tokens"),
            ):
                if value is not None:
                    attributes[name] = value
        if request.cost is not None:
            cost = request.cost()
            if cost is not None:
                # A decimal string: money is never a float here either.
                attributes["meterline.cost"] = f"{cost:f}"
        return attributes

    # -- lifecycle -----------------------------------------------------------------------

    def force_flush(self, timeout_millis: int = 10_000) -> None:
        """Build and export everything recorded so far (tests, shutdown)."""
        self._drain()
        if self._processor is not None:
            self._processor.force_flush(timeout_millis)
        if self._meter_provider is not None:
            self._meter_provider.force_flush(timeout_millis)

    def shutdown(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._drain()
        if self._processor is not None:
            self._processor.shutdown()
        if self._meter_provider is not None:
            self._meter_provider.shutdown()


def _status(status: int) -> Any:
    from opentelemetry.trace import Status, StatusCode

    if 200 <= status < 400:
        return Status(StatusCode.UNSET)
    return Status(StatusCode.ERROR, f"HTTP {status}")


__all__: Sequence[str] = (
    "RequestTrace",
    "TracedAttempt",
    "TracedRequest",
    "Tracing",
    "operation_name",
    "parse_traceparent",
    "provider_name",
    "signals_configured",
)
