"""The data plane's Prometheus metrics, and the reserved paths /healthz, /readyz, /metrics.

``Observability`` wraps the gateway app (outermost, in front of the spool guard) and answers
three paths itself, before any route matching — a route cannot use them:

- ``GET /healthz``: 200 while the process serves HTTP (liveness);
- ``GET /readyz``: 200 once the gateway holds a config (from the control plane or its cache)
  and accepts requests (a full spool under ``--spool-full block`` does not), 503 before;
- ``GET /metrics``: the Prometheus text format.

Every other response is counted by route and status as it passes. On the request path a
DataPlaneMetrics only adds to plain numbers (a few dictionary lookups, a bisect per histogram);
prometheus_client builds the metric families from them when /metrics is scraped.

With ``--workers N`` every worker is a process of its own behind one port, so a scrape reaches
whichever worker the kernel picks. The workers therefore write their numbers every second to
memory-mapped files in one directory (prometheus_client's multiprocess mode,
``PROMETHEUS_MULTIPROC_DIR`` set by the supervisor before it forks) and any of them answers
/metrics with the sum over all workers (SharedDataPlaneMetrics): counters and histograms add up
(a restarted worker's earlier counts included), the buffer and spool gauges are the sum over
live workers, and the config gauges carry a ``pid`` label per live worker. prometheus_client
reads that variable when it is first imported, so this module imports it only inside functions
(in each worker, after the fork).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import shutil
import sys
import tempfile
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Final, Literal

from dataplane.http.asgi import JSON_CONTENT_TYPE, Receive, Scope, Send, send_response
from dataplane.usage.tokens import TokenUsage

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from dataplane.http.server import AsgiApp

MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"
# The scope key under which the gateway leaves the name of the route it matched.
ROUTE_SCOPE_KEY: Final = "meterline.route"
UNMATCHED_ROUTE: Final = "(none)"
RESERVED_PATHS: Final = frozenset({"/healthz", "/readyz", "/metrics"})

# LLM calls take from milliseconds (cached, small) to minutes (long generations).
LATENCY_BUCKETS: Final = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
)  # fmt: skip
TTFT_BUCKETS: Final = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# How often a worker refreshes its gauges in multiprocess mode (another worker may answer).
GAUGE_REFRESH_S: Final = 1.0

_TEXT_PLAIN: Final = (b"content-type", b"text/plain; charset=utf-8")


def multiprocess_dir() -> str | None:
    """The shared metrics directory when workers share one port, else None."""
    return os.environ.get(MULTIPROC_ENV) or None


# Every metric: name, help, labels. Both implementations below expose exactly these.
REQUESTS: Final = (
    "meterline_dataplane_requests_total",
    "HTTP requests answered, by route ((none) before a route matched) and status.",
    ("route", "status"),
)
ERRORS: Final = (
    "meterline_dataplane_errors_total",
    "Requests answered with an error status (4xx/5xx), by status.",
    ("status",),
)
REQUEST_DURATION: Final = (
    "meterline_dataplane_request_duration_seconds",
    "Time from a request's arrival to the end of its response (streams included).",
    ("route",),
)
UPSTREAM_DURATION: Final = (
    "meterline_dataplane_upstream_duration_seconds",
    "Time from calling the provider until its response headers arrived.",
    ("route", "provider"),
)
TTFT: Final = (
    "meterline_dataplane_time_to_first_token_seconds",
    "Time from calling the provider to the first body bytes sent to the client.",
    ("route", "provider"),
)
TOKENS: Final = (
    "meterline_dataplane_tokens_total",
    "Tokens the providers reported (or the gateway estimated), by provider, model and type.",
    ("provider", "model", "type"),
)
SNAPSHOTS: Final = (
    "meterline_dataplane_config_snapshots_total",
    "Config snapshots received from the control plane, by answer (ack: applied; nack: "
    "rejected, the previous config kept).",
    ("result",),
)
OTEL_DROPPED: Final = (
    "meterline_dataplane_otel_dropped_total",
    "Requests whose OpenTelemetry spans and GenAI metrics were dropped: the exporter process "
    "behind (its buffer full) or gone. Only with OTEL_* tracing or metrics configured.",
    (),
)
PENDING: Final = (
    "meterline_dataplane_usage_pending_events",
    "Usage events not yet acknowledged by the control plane (buffered or in flight).",
    (),
)
SPOOL_BYTES: Final = (
    "meterline_dataplane_usage_spool_bytes",
    "Bytes of unacknowledged usage in the disk spool.",
    (),
)
CONFIG_INFO: Final = (
    "meterline_dataplane_config_info",
    "1 for the config version this data plane serves.",
    ("version",),
)
CONFIG_AGE: Final = (
    "meterline_dataplane_config_age_seconds",
    "Seconds since the config served was applied (received or loaded from the cache).",
    (),
)
TOKEN_TYPES: Final = ("input", "output", "cached_input", "reasoning", "cache_write")


def _token_counts(usage: TokenUsage) -> tuple[int | None, ...]:
    # In TOKEN_TYPES order.
    return (
        usage.input_tokens,
        usage.output_tokens,
        usage.cached_input_tokens,
        usage.reasoning_tokens,
        usage.cache_write_tokens,
    )


class _Histogram:
    """One histogram series as plain numbers: a count per bucket (not cumulative) and a sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one: above every bound (+Inf)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        # The first bound >= value: Prometheus buckets are "less than or equal".
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative buckets as Prometheus exposes them."""
        out: list[tuple[str, float]] = []
        total = 0
        for bound, count in zip((*self.bounds, math.inf), self.counts, strict=True):
            total += count
            out.append((_go_float(bound), total))
        return out


def _go_float(value: float) -> str:
    from prometheus_client.utils import floatToGoString

    return str(floatToGoString(value))


class _Route:
    """The series of one route: requests by status, latency histograms by provider."""

    __slots__ = ("duration", "statuses", "ttft", "upstream")

    def __init__(self) -> None:
        self.statuses: dict[int, int] = {}
        self.duration = _Histogram(LATENCY_BUCKETS)
        self.upstream: dict[str, _Histogram] = {}
        self.ttft: dict[str, _Histogram] = {}


class DataPlaneMetrics:
    """Every metric of one data plane process.

    The request path only adds to plain numbers (dictionaries, lists): no locks, no metric
    objects. A scrape turns them into Prometheus metric families (``exposition``). With
    ``--workers``, ``new_metrics`` returns a SharedDataPlaneMetrics instead.
    """

    multiprocess = False

    def __init__(self, *, usage_state: Callable[[], tuple[int, int]] | None = None) -> None:
        self._routes: dict[str, _Route] = {}
        self._errors: dict[int, int] = {}
        self._tokens: dict[tuple[str, str], list[int]] = {}
        self._snapshots = {"ack": 0, "nack": 0}
        self._config_version: str | None = None
        self._config_applied = 0.0
        # (pending usage events, spool bytes) of the usage reporter, read at each scrape.
        self.usage_state = usage_state
        # Requests whose spans and GenAI metrics were dropped so far (Tracing.dropped), read
        # at each scrape; None when OpenTelemetry is not configured.
        self.otel_dropped: Callable[[], int] | None = None
        self._registry: CollectorRegistry | None = None

    # -- the hot path ---------------------------------------------------------------------------

    def _route(self, name: str) -> _Route:
        route = self._routes.get(name)
        if route is None:
            route = self._routes[name] = _Route()
        return route

    def response(self, route: str, status: int, seconds: float) -> None:
        """Count one answered request."""
        series = self._routes.get(route) or self._route(route)
        statuses = series.statuses
        statuses[status] = statuses.get(status, 0) + 1
        series.duration.observe(seconds)
        if status >= 400:
            self._errors[status] = self._errors.get(status, 0) + 1

    def exchange(
        self,
        *,
        route: str,
        provider: str,
        model: str,
        usage: TokenUsage | None,
        ttft_s: float | None,
        upstream_s: float | None,
    ) -> None:
        """Record what a proxied request's exchange with its provider measured."""
        series = self._routes.get(route) or self._route(route)
        if upstream_s is not None:
            histogram = series.upstream.get(provider)
            if histogram is None:
                histogram = series.upstream[provider] = _Histogram(LATENCY_BUCKETS)
            histogram.observe(upstream_s)
        if ttft_s is not None:
            histogram = series.ttft.get(provider)
            if histogram is None:
                histogram = series.ttft[provider] = _Histogram(TTFT_BUCKETS)
            histogram.observe(ttft_s)
        if usage is not None:
            totals = self._tokens.get((provider, model))
            if totals is None:
                totals = self._tokens[(provider, model)] = [0] * len(TOKEN_TYPES)
            for index, count in enumerate(_token_counts(usage)):
                if count:
                    totals[index] += count

    # -- config sync ----------------------------------------------------------------------------

    def config_applied(self, version: str) -> None:
        """The config of ``version`` is served from now on."""
        self._config_version = version
        self._config_applied = time.monotonic()

    def snapshot_answered(self, acked: bool) -> None:
        """The data plane ACKed (applied) or NACKed (rejected) a snapshot."""
        self._snapshots["ack" if acked else "nack"] += 1

    # -- exposition -----------------------------------------------------------------------------

    def exposition(self) -> bytes:
        """The Prometheus text format of everything counted so far."""
        from prometheus_client import CollectorRegistry, generate_latest

        if self._registry is None:
            self._registry = CollectorRegistry(auto_describe=False)
            self._registry.register(self)
        return bytes(generate_latest(self._registry))

    def collect(self) -> Iterator[Any]:
        """Metric families for prometheus_client (this object is the registry's collector)."""
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        def family(kind: Any, spec: tuple[str, str, tuple[str, ...]]) -> Any:
            name, documentation, labels = spec
            return kind(name, documentation, labels=list(labels))

        requests = family(CounterMetricFamily, REQUESTS)
        duration = family(HistogramMetricFamily, REQUEST_DURATION)
        upstream = family(HistogramMetricFamily, UPSTREAM_DURATION)
        ttft = family(HistogramMetricFamily, TTFT)
        for name, route in sorted(self._routes.items()):
            for status, count in sorted(route.statuses.items()):
                requests.add_metric([name, str(status)], count)
            if route.statuses:
                duration.add_metric([name], route.duration.buckets(), route.duration.sum)
            for provider, histogram in sorted(route.upstream.items()):
                upstream.add_metric([name, provider], histogram.buckets(), histogram.sum)
            for provider, histogram in sorted(route.ttft.items()):
                ttft.add_metric([name, provider], histogram.buckets(), histogram.sum)
        errors = family(CounterMetricFamily, ERRORS)
        for status, count in sorted(self._errors.items()):
            errors.add_metric([str(status)], count)
        tokens = family(CounterMetricFamily, TOKENS)
        for (provider, model), totals in sorted(self._tokens.items()):
            for kind, total in zip(TOKEN_TYPES, totals, strict=True):
                tokens.add_metric([provider, model, kind], total)
        snapshots = family(CounterMetricFamily, SNAPSHOTS)
        for result, count in self._snapshots.items():
            snapshots.add_metric([result], count)
        yield from (requests, errors, duration, upstream, ttft, tokens, snapshots)
        if self.otel_dropped is not None:
            dropped = family(CounterMetricFamily, OTEL_DROPPED)
            dropped.add_metric([], self.otel_dropped())
            yield dropped
        if self.usage_state is not None:
            pending, spool_bytes = self.usage_state()
            yield GaugeMetricFamily(PENDING[0], PENDING[1], value=pending)
            yield GaugeMetricFamily(SPOOL_BYTES[0], SPOOL_BYTES[1], value=spool_bytes)
        if self._config_version is not None:
            info = family(GaugeMetricFamily, CONFIG_INFO)
            info.add_metric([self._config_version], 1)
            yield info
            age = time.monotonic() - self._config_applied
            yield GaugeMetricFamily(CONFIG_AGE[0], CONFIG_AGE[1], value=age)

    async def refresh_forever(self, interval: float = GAUGE_REFRESH_S) -> None:
        """Nothing to refresh here (gauges are read at scrape time); see the shared class."""
        await asyncio.Event().wait()


class SharedDataPlaneMetrics(DataPlaneMetrics):
    """The metrics of one worker among ``--workers N``: counted like DataPlaneMetrics (plain
    numbers on the request path), and written every ``GAUGE_REFRESH_S`` (and before this worker
    answers a scrape) to prometheus_client's multiprocess files, from which any worker's
    /metrics sums all of them.

    The files hold gauges: each worker's running totals (``sum`` mode, so a worker that
    exited still counts) and live values (summed, or one series per worker with a ``pid``
    label). ``exposition`` turns the totals back into counters and histograms. Another
    worker's counts show up to GAUGE_REFRESH_S late; a worker killed outright loses its last
    second from the sums.
    """

    multiprocess = True

    def __init__(self, *, usage_state: Callable[[], tuple[int, int]] | None = None) -> None:
        super().__init__(usage_state=usage_state)
        import prometheus_client as prom

        def gauge(
            name: str, labels: tuple[str, ...], mode: Literal["sum", "livesum", "liveall"]
        ) -> Any:
            # Not registered anywhere: the multiprocess collector reads their files.
            return prom.Gauge(name, name, list(labels), registry=None, multiprocess_mode=mode)

        self._counter_totals = {
            spec[0]: gauge(spec[0], spec[2], "sum")
            for spec in (REQUESTS, ERRORS, TOKENS, SNAPSHOTS)
        }
        # Made on the first flush with OpenTelemetry configured (a gauge without labels is in
        # the files, at 0, from its making on).
        self._gauge = gauge
        self._histogram_totals = {
            spec[0]: (
                gauge(f"{spec[0]}_bucket", (*spec[2], "le"), "sum"),
                gauge(f"{spec[0]}_sum", spec[2], "sum"),
            )
            for spec in (REQUEST_DURATION, UPSTREAM_DURATION, TTFT)
        }
        self._pending = gauge(PENDING[0], (), "livesum")
        self._spool_bytes = gauge(SPOOL_BYTES[0], (), "livesum")
        self._config_info = gauge(CONFIG_INFO[0], CONFIG_INFO[2], "liveall")
        self._config_age = gauge(CONFIG_AGE[0], (), "liveall")
        self._written_version: str | None = None

    def flush(self) -> None:
        """Write this worker's totals and live values to its files."""
        if self.otel_dropped is not None and OTEL_DROPPED[0] not in self._counter_totals:
            self._counter_totals[OTEL_DROPPED[0]] = self._gauge(OTEL_DROPPED[0], (), "sum")
        for family in self.collect():
            name = family.name
            if family.type == "counter":
                target = self._counter_totals[f"{name}_total"]
                for sample in family.samples:
                    if sample.name.endswith("_total"):
                        # A counter without labels is its gauge itself.
                        (target.labels(**sample.labels) if sample.labels else target).set(
                            sample.value
                        )
            elif family.type == "histogram":
                buckets, sums = self._histogram_totals[name]
                for sample in family.samples:
                    if sample.name.endswith("_bucket"):
                        buckets.labels(**sample.labels).set(sample.value)
                    elif sample.name.endswith("_sum"):
                        sums.labels(**sample.labels).set(sample.value)
        if self.usage_state is not None:
            pending, spool_bytes = self.usage_state()
            self._pending.set(pending)
            self._spool_bytes.set(spool_bytes)
        version = self._config_version
        if version is not None:
            if self._written_version not in (None, version):
                # Series cannot be removed in multiprocess mode: the old version shows 0.
                self._config_info.labels(self._written_version).set(0)
            self._config_info.labels(version).set(1)
            self._written_version = version
            self._config_age.set(time.monotonic() - self._config_applied)

    def exposition(self) -> bytes:
        """Every worker's metrics, summed."""
        from prometheus_client import CollectorRegistry, generate_latest
        from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
        from prometheus_client.multiprocess import MultiProcessCollector

        self.flush()
        stored = {family.name: family for family in MultiProcessCollector(None).collect()}
        families: list[Any] = []
        for name, documentation, labels in (REQUESTS, ERRORS, TOKENS, SNAPSHOTS, OTEL_DROPPED):
            if not labels and name not in stored:
                continue  # a gauge no worker wrote: tracing is not configured
            counter = CounterMetricFamily(name, documentation, labels=list(labels))
            for sample in getattr(stored.get(name), "samples", ()):
                counter.add_metric([sample.labels[label] for label in labels], sample.value)
            families.append(counter)
        for name, documentation, labels in (REQUEST_DURATION, UPSTREAM_DURATION, TTFT):
            buckets: dict[tuple[str, ...], list[tuple[float, str, float]]] = {}
            for sample in getattr(stored.get(f"{name}_bucket"), "samples", ()):
                key = tuple(sample.labels[label] for label in labels)
                le = sample.labels["le"]
                buckets.setdefault(key, []).append((float(le), le, sample.value))
            sums = {
                tuple(sample.labels[label] for label in labels): sample.value
                for sample in getattr(stored.get(f"{name}_sum"), "samples", ())
            }
            histogram = HistogramMetricFamily(name, documentation, labels=list(labels))
            for key, series in sorted(buckets.items()):
                cumulative = [(le, value) for _, le, value in sorted(series)]
                histogram.add_metric(list(key), cumulative, sums.get(key, 0.0))
            families.append(histogram)
        for spec in (PENDING, SPOOL_BYTES, CONFIG_INFO, CONFIG_AGE):
            if spec[0] in stored:
                stored[spec[0]].documentation = spec[1]
                families.append(stored[spec[0]])
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Families(families))
        return bytes(generate_latest(registry))

    async def refresh_forever(self, interval: float = GAUGE_REFRESH_S) -> None:
        """Write this worker's numbers every ``interval`` s, for scrapes another worker answers."""
        while True:
            await asyncio.sleep(interval)
            self.flush()


class _Families:
    """A collector of metric families built beforehand."""

    def __init__(self, families: list[Any]) -> None:
        self._families = families

    def collect(self) -> Iterator[Any]:
        return iter(self._families)


def new_metrics(*, usage_state: Callable[[], tuple[int, int]] | None = None) -> DataPlaneMetrics:
    """The metrics of this process: shared among workers when they share a port."""
    if multiprocess_dir() is not None:
        return SharedDataPlaneMetrics(usage_state=usage_state)
    return DataPlaneMetrics(usage_state=usage_state)


class Observability:
    """ASGI middleware: answers /healthz, /readyz and /metrics; counts every other response.

    ``ready`` says whether the app can serve requests now (it holds a config and accepts).
    """

    def __init__(
        self, app: AsgiApp, *, metrics: DataPlaneMetrics, ready: Callable[[], bool]
    ) -> None:
        self._app = app
        self.metrics = metrics
        self._ready = ready

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        if scope["path"] in RESERVED_PATHS:
            await self._reserved(scope, send)
            return
        start = time.perf_counter()
        status = 0

        async def send_and_watch(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self._app(scope, receive, send_and_watch)
        finally:
            # 0: the app failed before answering; uvicorn then answers 500.
            self.metrics.response(
                scope.get(ROUTE_SCOPE_KEY, UNMATCHED_ROUTE),
                status or 500,
                time.perf_counter() - start,
            )

    async def _reserved(self, scope: Scope, send: Send) -> None:
        path = scope["path"]
        if scope["method"] not in ("GET", "HEAD"):
            await send_response(
                send,
                405,
                b'{"error": {"message": "use GET", "type": "invalid_request_error", '
                b'"code": "method_not_allowed"}}',
                [JSON_CONTENT_TYPE, (b"allow", b"GET, HEAD")],
            )
        elif path == "/healthz":
            await send_response(send, 200, b"ok\n", [_TEXT_PLAIN])
        elif path == "/readyz":
            if self._ready():
                await send_response(send, 200, b"ready\n", [_TEXT_PLAIN])
            else:
                await send_response(
                    send, 503, b"not ready: no config yet, or not accepting\n", [_TEXT_PLAIN]
                )
        else:
            from prometheus_client import CONTENT_TYPE_LATEST

            body = self.metrics.exposition()
            await send_response(send, 200, body, [(b"content-type", CONTENT_TYPE_LATEST.encode())])


@contextlib.contextmanager
def shared_worker_metrics() -> Iterator[str]:
    """A fresh metrics directory for the workers about to be forked (multiprocess mode);
    removed when the block ends.

    Must run before prometheus_client is imported in this process: the library chooses its
    storage once, at import.
    """
    if "prometheus_client" in sys.modules and multiprocess_dir() is None:
        raise RuntimeError("prometheus_client was imported before the workers' metrics dir")
    directory = tempfile.mkdtemp(prefix="meterline-metrics-")
    os.environ[MULTIPROC_ENV] = directory
    try:
        yield directory
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(directory, ignore_errors=True)


def worker_exited(pid: int | None) -> None:
    """Drop a dead worker's live gauges (its counters stay in the sums)."""
    if pid is not None and multiprocess_dir() is not None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)
