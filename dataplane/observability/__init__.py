"""Seeing the data plane: Prometheus metrics, /healthz /readyz /metrics, logs, traces.

Modules: ``metrics`` (the collector and the app wrapper serving the reserved paths),
``logs`` (text or JSON lines, the request id of each line), ``tracing`` (OpenTelemetry GenAI
spans and metrics: what the request path notes, as plain values, off unless OTEL_* ask),
``otel_process`` (the exporter process tracing starts, and the pipe to it), ``otel_export``
(that process's side: records to OTLP spans, the GenAI histograms, the exports) and
``payloads`` (request and response bodies in the JSON log for log_payloads routes).

May import: ``dataplane.usage``, ``dataplane.http`` and below.
"""
