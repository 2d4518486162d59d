"""Seeing the data plane: Prometheus metrics, /healthz /readyz /metrics, logs, traces.

Modules: ``metrics`` (the collector and the app wrapper serving the reserved paths),
``logs`` (text or JSON lines, the request id of each line), ``tracing`` (OpenTelemetry GenAI
spans and metrics, built from records after the response, off unless OTEL_* ask) and
``otel_export`` (the exporter process that turns those records into OTLP).

May import: ``dataplane.usage``, ``dataplane.http`` and below.
"""
