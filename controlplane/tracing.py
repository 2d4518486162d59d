"""OpenTelemetry spans of the control plane: every gRPC call (``controlplane.api.tracing``), usage
batch ingestion, snapshot builds and pushes, the invoicing job and each Stripe call.

Instrumented code opens spans with ``span(name, ...)`` (a no-op tracer's until configured).
``configure_from_environment``, called by the server's composition root, installs an SDK
provider exporting over OTLP (gRPC or HTTP) only when the standard OTEL_* variables ask for it
(an endpoint, or OTEL_TRACES_EXPORTER); otherwise the SDK is not imported and no exporter
thread starts. The provider is this module's, not OpenTelemetry's process-wide one (which can
be set only once): ``shutdown`` flushes it and turns tracing off again. The data plane has its own
(``dataplane.observability.tracing``): the planes share no code but the contract.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Final

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

DEFAULT_SERVICE_NAME: Final = "meterline-controlplane"
_SCOPE: Final = "meterline.controlplane"
_NOOP: Final = trace.NoOpTracer()
# The installed provider and its tracer (None / the no-op one while tracing is off).
_installed: dict[str, Any] = {"provider": None, "tracer": _NOOP}


def span(name: str, **options: Any) -> Any:
    """``start_as_current_span`` of the control plane's tracer (a no-op one when off)."""
    return _installed["tracer"].start_as_current_span(name, **options)


def enabled() -> bool:
    return _installed["provider"] is not None


def shutdown() -> None:
    """Flush and stop the installed provider, if any; spans are no-ops again."""
    provider = _installed["provider"]
    _installed.update(provider=None, tracer=_NOOP)
    if provider is not None:
        provider.shutdown()


def traces_configured() -> bool:
    """Whether the OTEL_* variables ask for traces (an OTLP endpoint, or an exporter)."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return any(
        os.environ.get(name, "").strip()
        for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def configure_from_environment() -> TracerProvider | None:
    """Install the SDK provider the OTEL_* variables describe (None: nothing configured).

    The caller shuts it down on exit (it flushes what is pending)."""
    if not traces_configured():
        return None
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    # Sampler from OTEL_TRACES_SAMPLER(_ARG), read by the provider itself.
    provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    exporter: Any
    kind = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() or "otlp"
    protocol = (
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    if kind == "console":
        exporter = ConsoleSpanExporter()
    elif protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    elif protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter as HttpSpanExporter,
        )

        exporter = HttpSpanExporter()
    else:
        raise ValueError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: only grpc or http/protobuf are supported"
        )
    provider.add_span_processor(BatchSpanProcessor(exporter))
    _installed.update(provider=provider, tracer=provider.get_tracer(_SCOPE))
    return provider


def traced_stripe_http_client() -> Any:
    """A Stripe SDK HTTP client that wraps each Stripe call in a CLIENT span
    (``stripe {METHOD} {path}``), or None (the SDK's default) when tracing is off."""
    if not enabled():
        return None
    import stripe

    class TracedStripeClient(stripe.RequestsClient):
        def request(
            self, method: str, url: str, headers: Any, post_data: Any = None, **options: Any
        ) -> Any:
            from urllib.parse import urlsplit

            parts = urlsplit(url)
            with span(
                f"stripe {method.upper()} {parts.path}",
                kind=SpanKind.CLIENT,
                attributes={
                    "http.request.method": method.upper(),
                    "server.address": parts.hostname or "",
                    "url.path": parts.path,
                },
            ) as current:
                content, status, response_headers = super().request(method, url, headers, post_data)
                current.set_attribute("http.response.status_code", status)
                if status >= 400:
                    current.set_status(Status(StatusCode.ERROR, f"HTTP {status}"))
                return content, status, response_headers

    return TracedStripeClient()
