"""The control plane's Prometheus metrics, served on ``--metrics-listen`` (off unless set).

Each ControlPlane owns one ControlPlaneMetrics (its own registry, so several control planes in
one test process do not collide). The gRPC interceptor counts every RPC of both listeners by
service, method and status code; the data-plane servicers, the invoicing job and the Stripe
app count what they do.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

BATCH_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
RPC_BUCKETS: Final = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ControlPlaneMetrics:
    """Every metric of one control plane."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.dataplane_streams = Gauge(
            "meterline_controlplane_dataplane_streams",
            "Data planes connected now (open config streams).",
            registry=registry,
        )
        self.snapshot_pushes = Counter(
            "meterline_controlplane_snapshot_pushes_total",
            "Config snapshots sent to data planes.",
            registry=registry,
        )
        self.snapshot_answers = Counter(
            "meterline_controlplane_snapshot_answers_total",
            "Data planes' answers to snapshots: ack (applied) or nack (rejected).",
            ["result"],
            registry=registry,
        )
        self.usage_events = Counter(
            "meterline_controlplane_usage_events_ingested_total",
            "Usage events stored (new event ids).",
            registry=registry,
        )
        self.usage_duplicates = Counter(
            "meterline_controlplane_usage_events_duplicate_total",
            "Usage events received again (an event id already stored) and not stored twice.",
            registry=registry,
        )
        self.ingest_batch = Histogram(
            "meterline_controlplane_usage_ingest_batch_seconds",
            "Time to store one usage batch (one transaction) before it is acknowledged.",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.invoice_transitions = Counter(
            "meterline_controlplane_invoice_transitions_total",
            "Invoices moved by the invoicing job, by the state they entered.",
            ["state"],
            registry=registry,
        )
        self.invoice_job_failures = Counter(
            "meterline_controlplane_invoice_job_failures_total",
            "Customers the invoicing job could not advance (rolled back, alerted, retried).",
            registry=registry,
        )
        self.stripe_sync_failures = Counter(
            "meterline_controlplane_stripe_sync_failures_total",
            "Invoice syncs to Stripe that failed (left failed until retried).",
            registry=registry,
        )
        self.grpc_requests = Counter(
            "meterline_controlplane_grpc_requests_total",
            "gRPC calls finished, by service, method and status code.",
            ["service", "method", "code"],
            registry=registry,
        )
        self.grpc_duration = Histogram(
            "meterline_controlplane_grpc_request_duration_seconds",
            "Duration of unary gRPC calls, by service and method.",
            ["service", "method"],
            buckets=RPC_BUCKETS,
            registry=registry,
        )
        for result in ("ack", "nack"):
            self.snapshot_answers.labels(result)
        for state in ("gathering", "draft", "issued"):
            self.invoice_transitions.labels(state)
        self.interceptor = MetricsInterceptor(self)

    def serve(self, listen: str) -> MetricsServer:
        """Serve GET /metrics on ``listen`` (HOST:PORT; port 0 picks one) in a thread."""
        host, _, port = listen.rpartition(":")
        if not port.isdigit():
            raise OSError(f"--metrics-listen: expected HOST:PORT, got {listen!r}")
        try:
            server, thread = start_http_server(
                int(port), addr=host.strip("[]") or "127.0.0.1", registry=self.registry
            )
        except OSError as exc:
            raise OSError(f"cannot serve metrics on {listen}: {exc.strerror or exc}") from None
        return MetricsServer(server=server, thread=thread)


class MetricsServer:
    """The running /metrics HTTP server."""

    def __init__(self, *, server: Any, thread: Any) -> None:
        self._server = server
        self._thread = thread
        self.port: int = server.server_address[1]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def _split(method: str) -> tuple[str, str]:
    # "/meterline.admin.v1.GatewayService/ApplyConfig" -> service, method
    service, _, name = method.lstrip("/").rpartition("/")
    return service, name


_CODES_BY_VALUE: Final = {code.value[0]: code for code in grpc.StatusCode}


def _code(context: Any, exc: BaseException | None) -> str:
    """The call's final status: what it set or aborted with, else OK / CANCELLED / UNKNOWN."""
    code = context.code()
    if isinstance(code, int):
        code = _CODES_BY_VALUE.get(code)
    if isinstance(code, grpc.StatusCode):
        return code.name
    if exc is None:
        return "OK"
    return "CANCELLED" if isinstance(exc, asyncio.CancelledError) else "UNKNOWN"


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    """Counts every RPC by service, method and final status code; times unary calls."""

    def __init__(self, metrics: ControlPlaneMetrics) -> None:
        self._metrics = metrics

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        service, method = _split(handler_call_details.method)
        requests = self._metrics.grpc_requests
        duration = self._metrics.grpc_duration.labels(service, method)

        def done(context: Any, exc: BaseException | None) -> None:
            requests.labels(service, method, _code(context, exc)).inc()

        if handler.unary_unary:
            inner_uu = handler.unary_unary

            async def unary_unary(request: Any, context: Any) -> Any:
                start = time.perf_counter()
                try:
                    response = await inner_uu(request, context)
                except BaseException as exc:
                    done(context, exc)
                    raise
                finally:
                    duration.observe(time.perf_counter() - start)
                done(context, None)
                return response

            return grpc.unary_unary_rpc_method_handler(
                unary_unary,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_stream:
            return grpc.stream_stream_rpc_method_handler(
                _streaming(handler.stream_stream, done),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                _streaming(handler.unary_stream, done),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler


def _streaming(
    inner: Callable[..., Any], done: Callable[[Any, BaseException | None], None]
) -> Callable[..., Any]:
    """Wrap a response-streaming handler: an async generator, or a coroutine that writes
    with context.write (grpc's health Watch)."""
    if inspect.isasyncgenfunction(inner):

        async def generator(request: Any, context: Any) -> AsyncIterator[Any]:
            try:
                async for response in inner(request, context):
                    yield response
            except BaseException as exc:
                done(context, exc)
                raise
            done(context, None)

        return generator

    async def coroutine(request: Any, context: Any) -> Any:
        try:
            result = await inner(request, context)
        except BaseException as exc:
            done(context, exc)
            raise
        done(context, None)
        return result

    return coroutine
