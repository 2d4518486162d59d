"""Seeing the data plane: Prometheus metrics, /healthz /readyz /metrics, logs, traces.

Modules: ``metrics`` (the collector and the app wrapper serving the reserved paths),
``logs`` (text or JSON lines, the request id of each line), ``tracing`` (OpenTelemetry GenAI
spans and metrics: the metrics noted and the spans built from records after the response, off
unless OTEL_* ask), ``otel_export`` (the tracing thread's side: records to OTLP spans, the
GenAI histograms) and ``payloads`` (request and response bodies in the JSON log for
log_payloads routes).

May import: ``dataplane.usage``, ``dataplane.http`` and below.
"""
