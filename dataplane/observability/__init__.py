"""Seeing the data plane: Prometheus metrics, /healthz /readyz /metrics, log output.

Modules: ``metrics`` (the collector and the app wrapper serving the reserved paths),
``logs`` (text or JSON lines, the request id of each line).

May import: ``dataplane.usage``, ``dataplane.http`` and below.
"""
