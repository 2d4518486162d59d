"""OpenTelemetry GenAI spans and metrics of proxied LLM requests, kept off the request path.

The request path only notes what it already measures (perf-counter instants, the status, the
usage the provider reported) on a ``RequestTrace``; when the exchange records its last attempt
(or the gateway refuses the request itself) the request becomes one tuple of plain values
appended to a bounded deque: a sampled request's record (``otel_export.TracedRequest``'s
fields), or another's GenAI measurements (``otel_export.Measure``'s). Every
``_DRAIN_INTERVAL_S`` a timer on the data plane's event loop (``Tracing.start``; no thread)
completes the records (``_complete``: the cost priced, a stream's ends read) and writes them,
``marshal``led, a chunk per message, to the exporter
process (``otel_process``), which reads the response ids, encodes the spans straight to OTLP
protobuf, counts the histograms and exports spans and metrics through the SDK's OTLP
exporters.

Spans (OpenTelemetry GenAI semantic conventions, Development status, semconv 1.37+):

- ``{gen_ai.operation.name} {gen_ai.request.model}``, kind CLIENT, the request: its parent is
  the client's ``traceparent`` when it sent a valid one (same trace id), else a new trace.
- one child per upstream attempt, kind CLIENT, named for the target's model: failover and
  retries show as siblings. The provider receives a ``traceparent`` naming the attempt span
  (its ids are drawn before the call, the span is built later).
- time to first token is an event (``gen_ai.first_token``) on the request and answering attempt.

Off unless configured (``Tracing.from_environment``): with no OTEL_* variable set nothing of
the OpenTelemetry SDK is imported and no thread or process starts.
"""

from __future__ import annotations

import asyncio
import logging
import marshal
import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from decimal import Decimal
from itertools import repeat
from operator import call, itemgetter
from random import getrandbits
from time import perf_counter_ns
from typing import TYPE_CHECKING, Any, Final, Protocol

import orjson

from dataplane.observability.otel_export import check_environment, signals_configured
from dataplane.observability.otel_process import BATCH, ExporterProcess, frame
from dataplane.usage.tokens import TokenUsage

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.sampling import Sampler

logger = logging.getLogger(__name__)

Headers = list[tuple[bytes, bytes]]

# Records waiting for a drain; beyond this (the exporter far behind a traffic burst)
# the oldest are dropped rather than the data plane's memory growing.
MAX_PENDING_RECORDS: Final = 65_536
_DRAIN_INTERVAL_S: Final = 0.2
# The most records (and measurements) one step of a drain completes and ships: a busy
# interval's are shipped in several steps, the loop serving its requests in between.
_DRAIN_CHUNK: Final = 256
# How often the loop writes to the exporter's pipe what it did not take yet.
_PUMP_INTERVAL_S: Final = 0.005
# The opt-in for prompt content on spans (OpenTelemetry's own variable for GenAI content).
# Either one opts in; the route's log_payloads must be on as well.
CAPTURE_CONTENT_ENV: Final = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
METERLINE_CAPTURE_ENV: Final = "METERLINE_OTEL_CAPTURE_CONTENT"


# Meterline route types -> gen_ai.operation.name.
_OPERATIONS: Final = {
    "llm/v1/chat": "chat",
    "llm/v1/completions": "text_completion",
    "llm/v1/embeddings": "embeddings",
    "llm/v1/responses": "chat",
    "preserve": "chat",
}
# Request body fields -> gen_ai.request.* attributes.
_PARAMS: Final = (
    ("max_tokens", "gen_ai.request.max_tokens"),
    ("max_completion_tokens", "gen_ai.request.max_tokens"),
    ("max_output_tokens", "gen_ai.request.max_tokens"),
    ("temperature", "gen_ai.request.temperature"),
    ("top_p", "gen_ai.request.top_p"),
)
_SAMPLED_TRACEPARENT: Final = b"00-%032x-%016x-01"
_TRACEPARENT: Final = b"00-%032x-%016x-00"
_PARAM_KEYS: Final = frozenset(key for key, _ in _PARAMS)
_HEX: Final = frozenset("0123456789abcdef")
_TRACE_HEADERS: Final = frozenset((b"traceparent", b"tracestate"))
_NAME: Final = itemgetter(0)
_new_object: Final = object.__new__


class Exchange(Protocol):
    """What ``RequestTrace.ended`` reads of the proxy's exchange (dataplane.proxy.gateway)."""

    @property
    def policy(self) -> Any: ...  # AiProxyPolicy: target (provider, origin), route_type
    @property
    def prepared(self) -> Any: ...  # translate.base.Prepared (immutable)
    @property
    def attempt(self) -> int: ...
    @property
    def upstream_ns(self) -> int | None: ...
    @property
    def first_byte_ns(self) -> int | None: ...
    @property
    def output_text(self) -> str | None: ...


def operation_name(route_type: str) -> str:
    return _OPERATIONS.get(route_type, "chat")


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


class RequestTrace:
    """The trace context of one request on the request path: ids drawn up front, attempts noted
    as they end. ``Tracing.begin`` makes one; the exchange calls ``upstream_headers`` before each
    upstream call and ``ended`` from its record step."""

    __slots__ = (
        "_attempt_span_id",
        "_attempt_start",
        "_attempts",
        "_client_headers",
        "_tracing",
        "consumer",
        "cost",
        "parent_span_id",
        "recorded",
        "request_id",
        "response",
        "route",
        "sampled",
        "start_ns",
        "start_perf_ns",
        "trace_id",
        "tracestate",
    )

    # Set by ``new`` (no ``__init__``: calling a class with one costs more than the stores).
    _tracing: Tracing
    trace_id: int
    parent_span_id: int | None
    tracestate: str
    sampled: bool
    request_id: str
    route: str
    consumer: str
    start_ns: int
    start_perf_ns: int
    cost: Callable[[], Decimal | None] | None
    _attempts: tuple[tuple[Any, ...], ...]
    _attempt_span_id: int
    _attempt_start: int
    _client_headers: bool
    response: Any
    recorded: bool

    @staticmethod
    def new(
        tracing: Tracing,
        trace_id: int,
        sampled: bool,
        request_id: str,
        route: str,
        consumer: str,
        start_ns: int,
        start_perf_ns: int,
        /,
    ) -> RequestTrace:
        """A new trace (``Tracing.begin`` sets the client's parent, if any, afterwards)."""
        self = _new_object(RequestTrace)
        self._tracing = tracing
        self.trace_id = trace_id
        self.parent_span_id = None
        self.tracestate = ""
        self.sampled = sampled
        self.request_id = request_id
        self.route = route
        self.consumer = consumer
        self.start_ns = start_ns
        self.start_perf_ns = start_perf_ns
        self.cost = None
        self._attempts = ()
        self._attempt_span_id = 0
        self._attempt_start = start_perf_ns
        # Whether the client sent trace headers (they are replaced, never forwarded).
        self._client_headers = False
        # What the client got (a whole body, or a stream's StreamEnds): read by the
        # exporter for gen_ai.response.id and finish_reasons, for sampled requests only.
        self.response = None
        self.recorded = False
        return self

    @property
    def wants_content(self) -> bool:
        """Whether this request's span takes prompts and completions (when its route logs
        payloads): sampled, and the content opt-in set."""
        return self.sampled and self._tracing.capture_content

    def stream_ends(self) -> StreamEnds | None:
        """Where the gateway's stream pump notes a sampled stream's first and last outputs
        (its response id and finish reasons); None when this request is not sampled."""
        if not self.sampled:
            return None
        self.response = ends = StreamEnds()
        return ends

    def failed(
        self, *, status: int, error_type: str, operation: str, model: str, provider: str
    ) -> None:
        """The request ended with an error the gateway answered (no usage recorded): its span,
        with the attempts so far, error status and ``error.type``."""
        if self.recorded:
            return
        self.recorded = True
        now = time.perf_counter_ns()
        tracing = self._tracing
        if not self.sampled:
            if tracing.metrics:
                tracing._measured.append(
                    (  # Measure's fields
                        operation,
                        provider,
                        model,
                        "",
                        self.route,
                        error_type,
                        status,
                        now - self.start_perf_ns,
                        None,
                        None,
                        False,
                    )
                )
            return
        # A sampled request's metrics are read off its record by the exporter process.
        tracing._sampled.append(
            (
                (  # TracedRequest's fields
                    self.trace_id,
                    0,
                    self.parent_span_id,
                    self.tracestate,
                    self.sampled,
                    self.request_id,
                    self.route,
                    self.consumer,
                    operation,
                    model,
                    "",
                    provider,
                    self.start_ns,
                    self.start_perf_ns,
                    now,
                    status,
                    None,
                    False,
                    False,
                    None,
                    self._attempts,
                    (),
                    "",
                    (),
                    error_type,
                    None,
                    None,
                ),
                "",
                None,
            )
        )

    def upstream_headers(self, headers: Headers) -> None:
        """Replace the client's trace headers in ``headers`` (the upstream request's) with ones
        naming the next attempt span as parent; that attempt's clock starts now."""
        if self._client_headers:
            headers[:] = [h for h in headers if h[0] not in (b"traceparent", b"tracestate")]
        self._attempt_span_id = span_id = getrandbits(64) or 1
        self._attempt_start = perf_counter_ns()
        headers.append(
            (
                b"traceparent",
                (_SAMPLED_TRACEPARENT if self.sampled else _TRACEPARENT) % (self.trace_id, span_id),
            )
        )
        if self.tracestate:
            headers.append((b"tracestate", self.tracestate.encode()))

    def ended(
        self,
        exchange: Exchange,
        now: int,
        status: int,
        usage: TokenUsage | None,
        response_model: str,
        estimated: bool,
        failed_over: bool,
        /,
    ) -> None:
        """One attempt of ``exchange`` ended at perf-counter instant ``now`` (the exchange's
        record step); the last one ends the request. Positional: this runs for every request,
        and binding keywords costs more than the rest of an unsampled request's call; the
        exchange's fields are read here, the ones only a span needs by a drain."""
        policy = exchange.policy
        prepared = exchange.prepared
        target = policy.target
        provider = target.provider
        sampled = self.sampled
        if sampled:
            self._attempts += (
                (  # TracedAttempt's fields
                    exchange.attempt,
                    self._attempt_span_id or _span_id(),
                    provider,
                    prepared.model,
                    target.origin,
                    self._attempt_start,
                    now,
                    status,
                    failed_over,
                    exchange.upstream_ns,
                    None if failed_over else exchange.first_byte_ns,
                ),
            )
        if failed_over:
            self._attempt_span_id = 0
            self._attempt_start = now
            return
        self.recorded = True
        tracing = self._tracing
        if not (sampled or tracing.metrics):
            return
        # What a sampled request's record and another's measurements both carry.
        operation = _OPERATIONS.get(policy.route_type, "chat")
        request_model = prepared.requested_model or prepared.model
        counts = (
            None
            if usage is None
            else (
                usage.input_tokens,
                usage.output_tokens,
                usage.cached_input_tokens,
                usage.reasoning_tokens,
                usage.cache_write_tokens,
            )
        )
        if sampled:
            # The record, plain values already (tuples of plain values leave the garbage
            # collector's sight: a record holding the exchange's objects was walked by every
            # collection while it waited) but for two read by a drain
            # (``_complete``): the cost, priced once the metering is done with the request,
            # and a stream's last outputs.
            document = prepared.document
            params: tuple[tuple[str, int | float], ...] = ()
            content = None
            if type(document) is dict:
                # Most requests set none of them: one C-level check first.
                if not _PARAM_KEYS.isdisjoint(document):
                    params = _params(document)
                if policy.log_payloads and tracing.capture_content:
                    found = document.get("messages", document.get("input"))
                    content = (
                        None if found is None else orjson.dumps(found).decode(),
                        exchange.output_text,
                    )
            tracing._sampled.append(
                (
                    (  # TracedRequest's fields
                        self.trace_id,
                        0,  # the request span's id: drawn by the exporter
                        self.parent_span_id,
                        self.tracestate,
                        True,
                        self.request_id,
                        self.route,
                        self.consumer,
                        operation,
                        request_model,
                        response_model,
                        provider,
                        self.start_ns,
                        self.start_perf_ns,
                        now,
                        status,
                        counts,
                        estimated,
                        prepared.stream,
                        exchange.first_byte_ns,
                        self._attempts,
                        params,
                        None,  # the response: beside the record
                        (),
                        "",
                        content,
                        None,  # the cost: beside the record
                    ),
                    # Completed by a drain (_complete): bytes, or a stream's StreamEnds; the
                    # metering's cost thunk.
                    self.response,
                    self.cost,
                )
            )
        else:
            # The GenAI metrics' measurements, as plain values (the exporter process counts
            # them): one tuple, appended; durations, not instants (smaller ints to ship).
            start = self.start_perf_ns
            first_byte = exchange.first_byte_ns
            tracing._measured.append(
                (  # Measure's fields
                    operation,
                    provider,
                    request_model,
                    response_model,
                    self.route,
                    "",
                    status,
                    now - start,
                    None if first_byte is None else first_byte - start,
                    counts,
                    prepared.stream,
                )
            )


def _params(document: dict[str, Any]) -> tuple[tuple[str, int | float], ...]:
    """The gen_ai.request.* parameters a request body sets."""
    found = []
    for field, name in _PARAMS:
        value = document.get(field)
        if value is not None and type(value) in (int, float):
            found.append((name, value))
    return tuple(found)


def _complete(item: tuple[Any, ...]) -> tuple[Any, ...]:
    """A queued (record, response, cost) as plain values only (a drain): the cost
    priced now, as a decimal string (the exporter process writes it without an exponent), a
    stream's ends as (first output, last outputs). The exporter process puts the two in their
    places in the record (otel_process.records)."""
    record, response, cost = item
    if type(response) is StreamEnds:
        first = response.first
        response = (first, tuple(response.last)) if first else None
    elif isinstance(response, (bytearray, memoryview)):
        response = bytes(response)
    if cost is not None:
        try:
            priced = cost()
        except Exception:
            logger.exception("request %s: could not price it", record[5])
            priced = None
        cost = None if priced is None else str(priced)
    return record, response, cost


class StreamEnds:
    """The first and the last three non-empty outputs a sampled stream gave the client, as the
    gateway's stream pump sent them (a network chunk's events together): its response id is in
    the first, its finish reasons near the end. Noted per chunk sent, not per event: no call
    per event of the stream."""

    __slots__ = ("first", "last")

    def __init__(self) -> None:
        self.first = b""
        self.last: deque[bytes] = deque(maxlen=3)

    def note(self, out: bytes) -> None:
        """One non-empty output sent to the client."""
        if self.first:
            self.last.append(out)
        else:
            self.first = out


def _span_id() -> int:
    return random.getrandbits(64) or 1


def _env_on(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _fast_decision(sampler: Any) -> Callable[[int, int | None], bool] | None:
    """``decide(trace_id, parent sampled flag or None)`` for the SDK's built-in samplers
    (always_on/off, traceidratio, parentbased_* of those); None for any other (then the
    sampler itself is asked). Same decisions as their ``should_sample`` for a remote parent."""
    from opentelemetry.sdk.trace import sampling

    if isinstance(sampler, sampling.StaticSampler):
        on = sampler._decision == sampling.Decision.RECORD_AND_SAMPLE
        return lambda trace_id, parent: on
    if isinstance(sampler, sampling.TraceIdRatioBased):
        bound, limit = sampler.bound, sampler.TRACE_ID_LIMIT
        return lambda trace_id, parent: trace_id & limit < bound
    if isinstance(sampler, sampling.ParentBased):
        root = _fast_decision(sampler._root)
        sampled = _fast_decision(sampler._remote_parent_sampled)
        not_sampled = _fast_decision(sampler._remote_parent_not_sampled)
        if root is None or sampled is None or not_sampled is None:
            return None

        def parent_based(trace_id: int, parent: int | None) -> bool:
            if parent is None:
                return root(trace_id, None)
            return (sampled if parent else not_sampled)(trace_id, parent)

        return parent_based
    return None


def _root_static(sampler: Any) -> bool | None:
    """The decision of ``sampler`` for a root span when it does not depend on the trace id
    (metrics only: no sampler, never sampled), else None."""
    if sampler is None:
        return False
    from opentelemetry.sdk.trace import sampling

    if isinstance(sampler, sampling.ParentBased):
        sampler = sampler._root
    if isinstance(sampler, sampling.StaticSampler):
        return bool(sampler._decision == sampling.Decision.RECORD_AND_SAMPLE)
    return None


class Tracing:
    """The OpenTelemetry side of a data plane: ``begin`` per request, ``refused`` for a request
    the gateway answered itself; spans and metrics are built and exported by an exporter
    process the drains (``start``, on the event loop) feed. Make one with
    ``from_environment`` (None when not configured); ``shutdown`` flushes and stops it."""

    def __init__(
        self,
        *,
        sampler: Sampler | None,
        capture_content: bool = False,
        metrics: bool = True,
        process: ExporterProcess | None = None,
    ) -> None:
        """``process``: the exporter process the background thread feeds (None: no thread,
        and nothing leaves the queues but ``force_flush``, which then discards them)."""
        from opentelemetry import trace as api
        from opentelemetry.context import Context
        from opentelemetry.sdk.trace.sampling import Decision

        self._api = api
        # An empty context for requests without a parent: the sampler would look up the
        # current one (contextvars) otherwise, and the request path has none.
        self._root = Context()
        self._sample_decision = Decision.RECORD_AND_SAMPLE
        self._sampler = sampler
        # The SDK's standard samplers decided without their per-call objects (a Context, a
        # SamplingResult): a quarter of tracing's cost on the request path otherwise.
        self._decide = None if sampler is None else _fast_decision(sampler)
        # The decision for a request without a parent when it is always the same (always_on,
        # always_off, and parentbased_* of those: the default sampler), else None.
        self._root_static: bool | None = _root_static(sampler)
        # Prompts and completions on spans: this opt-in, and the route's log_payloads.
        self.capture_content = capture_content
        # Whether every request's GenAI measurements are queued (OTLP metrics exported).
        self.metrics = metrics
        # What the request path queues for the drains: the sampled requests'
        # records (completed by a drain) and the others' measurements (plain already).
        # Bounded: beyond this (the drains far behind a burst) the oldest are dropped.
        self._sampled: deque[tuple[Any, ...]] = deque(maxlen=MAX_PENDING_RECORDS)
        self._measured: deque[tuple[Any, ...]] = deque(maxlen=MAX_PENDING_RECORDS)
        self._process = process
        # time.time_ns() - time.perf_counter_ns(), refreshed every drain (a wall clock step
        # or slew moves it by microseconds in that time).
        self.clock_offset = time.time_ns() - perf_counter_ns()
        # Held by a drain, force_flush and shutdown (the exporter process is used by one at a
        # time; the last two may run in another thread than the loop).
        self._lock = threading.Lock()
        self._stop = threading.Event()
        # The event loop driving the drains (``start``), its next step, the next drain's time.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._due = 0.0

    @classmethod
    def from_environment(cls) -> Tracing | None:
        """Tracing and metrics as the OTEL_* variables configure them; None if they ask for
        neither (then nothing of the SDK is imported)."""
        traces, metrics = signals_configured()
        if not (traces or metrics):
            return None
        sampler = None
        if traces:
            from opentelemetry.sdk.trace import TracerProvider

            # Only read for its sampler (OTEL_TRACES_SAMPLER / _ARG): spans are built elsewhere.
            sampler = TracerProvider(shutdown_on_exit=False).sampler
        check_environment(traces=traces, metrics=metrics)  # fails here, not in the child
        return cls(
            sampler=sampler,
            capture_content=_env_on(CAPTURE_CONTENT_ENV) or _env_on(METERLINE_CAPTURE_ENV),
            metrics=metrics,
            process=ExporterProcess(),
        )

    # -- the request path --------------------------------------------------------------

    def _parent(self, headers: Headers) -> tuple[tuple[int, int, int] | None, str]:
        parent: tuple[int, int, int] | None = None
        tracestate = ""
        for key, value in headers:
            if key == b"traceparent":
                parent = parse_traceparent(value.decode("latin-1"))
            elif key == b"tracestate":
                tracestate = value.decode("latin-1")[:512]
        return parent, tracestate

    def begin(
        self,
        headers: Headers,
        request_id: str,
        route: str,
        consumer: str,
        route_type: str,
        start_ns: int,
        /,
    ) -> RequestTrace:
        """A request's trace context: the client's ``traceparent``/``tracestate`` continued
        if valid, and the sampling decision made now (the provider is told it). Positional:
        this runs for every traced request. ``start_ns``: its arrival (``time.time_ns``)."""
        trace_id = getrandbits(128) or 1
        # The perf-counter instant of the arrival, by the clocks' offset (refreshed by each
        # drain): two clock reads fewer per request.
        start_perf_ns = start_ns - self.clock_offset
        # Most clients send no trace headers: looked for in C (a dozen headers from an SDK).
        if _TRACE_HEADERS.isdisjoint(map(_NAME, headers)):
            static = self._root_static
            return RequestTrace.new(
                self,
                trace_id,
                static
                if static is not None
                else self._sample(trace_id, None, "", _OPERATIONS.get(route_type, "chat")),
                request_id,
                route,
                consumer,
                start_ns,
                start_perf_ns,
            )
        parent, tracestate = self._parent(headers)
        name = _OPERATIONS.get(route_type, "chat")
        if parent is None:
            sampled = self._sample(trace_id, None, "", name)
        else:
            trace_id = parent[0]
            sampled = self._sample(trace_id, parent, tracestate, name)
        trace = RequestTrace.new(
            self, trace_id, sampled, request_id, route, consumer, start_ns, start_perf_ns
        )
        trace._client_headers = True  # replaced upstream, never forwarded
        if parent is not None:
            trace.parent_span_id, trace.tracestate = parent[1], tracestate
        return trace

    def refused(
        self,
        headers: Headers,
        *,
        request_id: str,
        route: str,
        consumer: str,
        operation: str,
        model: str,
        provider: str,
        status: int,
        error_type: str,
        start_ns: int,
    ) -> None:
        """A request the gateway answered itself with an error (401, 402, 429...): one span
        with the error status and ``error.type``, no attempt child."""
        now_ns = time.time_ns()
        parent, tracestate = self._parent(headers)
        if parent is None:
            trace_id, parent_span_id, tracestate = random.getrandbits(128) or 1, None, ""
        else:
            trace_id, parent_span_id = parent[0], parent[1]
        name = f"{operation} {model}" if model else operation
        if not self._sample(trace_id, parent, tracestate, name):
            if self.metrics:
                self._measured.append(
                    (  # Measure's fields
                        operation,
                        provider,
                        model,
                        "",
                        route,
                        error_type,
                        status,
                        now_ns - start_ns,
                        None,
                        None,
                        False,
                    )
                )
            return
        # Its metrics are read off the record by the exporter process.
        self._sampled.append(
            (
                (  # TracedRequest's fields
                    trace_id,
                    _span_id(),
                    parent_span_id,
                    tracestate,
                    True,
                    request_id,
                    route,
                    consumer,
                    operation,
                    model,
                    "",
                    provider,
                    start_ns,
                    start_ns,  # perf instants as Unix nanoseconds: no perf clock was read
                    now_ns,
                    status,
                    None,
                    False,
                    False,
                    None,
                    (),
                    (),
                    "",
                    (),
                    error_type,
                    None,
                    None,
                ),
                "",
                None,
            )
        )

    def _sample(
        self, trace_id: int, parent: tuple[int, int, int] | None, tracestate: str, name: str
    ) -> bool:
        sampler = self._sampler
        if sampler is None:
            return False
        if self._decide is not None:
            return self._decide(trace_id, None if parent is None else parent[2] & 1)
        api = self._api
        context = self._root
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
        return bool(result.decision == self._sample_decision)

    # -- the drains, on the event loop -------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Drive the drains from ``loop`` (the running one by default): the data plane's own
        event loop, between its requests. Idempotent; without it nothing leaves the queues
        but ``force_flush`` and ``shutdown``.

        Not a thread of its own: the drain's work (completing and ``marshal``ling records)
        needs the GIL anyway, and a thread holding it for a busy interval's records made the
        request path wait for it at any instant, where the loop runs it in chunks between
        requests. No lock is contended on the request path either way."""
        if self._process is None or self._loop is not None or self._stop.is_set():
            return
        self._loop = loop or asyncio.get_running_loop()
        self._due = time.monotonic() + _DRAIN_INTERVAL_S
        self._timer = self._loop.call_later(_DRAIN_INTERVAL_S, self._tick)

    def _tick(self) -> None:
        """One step on the loop: a chunk of the queues when a drain is due (the next chunk
        right after, once the loop has served what is ready), else what the pipe did not take
        yet (a busy interval's records outgrow a pipe: waiting for the next drain to write
        more would hold the exporter to one pipeful per interval, however fast it is)."""
        loop, process = self._loop, self._process
        if loop is None or process is None or self._stop.is_set():
            return
        now = time.monotonic()
        more = False
        # force_flush or shutdown may hold it (another thread): this step waits for the next.
        if self._lock.acquire(blocking=False):
            try:
                if now >= self._due:
                    more = self._drain(_DRAIN_CHUNK)
                    if not more:
                        self._due = max(self._due + _DRAIN_INTERVAL_S, now + _DRAIN_INTERVAL_S / 2)
                elif process.pending:
                    process.pump()
            except Exception:
                logger.exception("tracing: could not hand the records to the exporter process")
            finally:
                self._lock.release()
        if more:
            delay = 0.0
        elif process.pending:
            delay = min(_PUMP_INTERVAL_S, max(self._due - now, 0.0))
        else:
            delay = max(self._due - now, 0.0)
        self._timer = loop.call_later(delay, self._tick)

    def _drain(self, limit: int | None = None) -> bool:
        """What is queued (at most ``limit`` of each queue), as plain values in one message to
        the exporter process; True if more is left."""
        self.clock_offset = time.time_ns() - perf_counter_ns()
        measured, sampled = self._measured, self._sampled
        taken_measured, taken_sampled = len(measured), len(sampled)
        if limit is not None:
            taken_measured, taken_sampled = min(taken_measured, limit), min(taken_sampled, limit)
        # popleft as many times as taken, in C (a thread may append meanwhile: the tests').
        measures = list(map(call, repeat(measured.popleft, taken_measured)))
        records = list(map(_complete, map(call, repeat(sampled.popleft, taken_sampled))))
        more = len(measured) > 0 or len(sampled) > 0
        process = self._process
        if process is None:
            return more
        if not (measures or records):
            process.pump()  # what the pipe did not take yet; notices a child that died
            return more
        try:
            message = frame((BATCH, measures, records))
        except ValueError:
            message = self._plain_only(measures, records)
        process.send(message, len(measures) + len(records))
        return more

    def _plain_only(self, measures: list[Any], records: list[Any]) -> bytes:
        """The batch without the records ``marshal`` refuses (a value of another type than
        the plain ones: a bug, logged; the others go on)."""
        kept: tuple[list[Any], list[Any]] = ([], [])
        for index, items in enumerate((measures, records)):
            for item in items:
                try:
                    marshal.dumps(item)
                except ValueError:
                    logger.exception("tracing: a record that is not plain data: %r", item)
                    continue
                kept[index].append(item)
        return frame((BATCH, *kept))

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def exporter_pid(self) -> int | None:
        """The exporter process's id (None when there is none)."""
        return None if self._process is None else self._process.pid

    @property
    def dropped(self) -> int:
        """Requests whose spans and metrics were dropped (the exporter process behind or
        gone)."""
        return 0 if self._process is None else self._process.dropped

    def force_flush(self, timeout: float = 30.0) -> bool:
        """Export everything recorded so far: handed to the exporter process, which answers
        once it exported it all (tests, benchmarks, shutdown); False if it did not in time.
        Blocks: from the loop's thread only in tests and benchmarks."""
        with self._lock:
            while self._drain():
                pass
            return self._process is not None and self._process.flush(timeout)

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop: what is queued goes to the exporter process, which exports it and exits
        (killed after ``timeout`` seconds). Blocks (``aclose`` from the loop)."""
        self._stop.set()
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        with self._lock:
            while self._drain():
                pass
            if self._process is not None:
                self._process.close(timeout)

    async def aclose(self, timeout: float = 10.0) -> None:
        """``shutdown`` from the event loop driving the drains (in a worker thread: it waits
        for the exporter process)."""
        self._stop.set()
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        await asyncio.to_thread(self.shutdown, timeout)
