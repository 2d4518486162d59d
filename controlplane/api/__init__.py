"""The control plane's gRPC edge: servicers that translate messages to domain calls and back.

Two audiences, two subpackages, kept apart by an import-linter contract (pyproject.toml):

- ``operator/``: what operators and their generated clients call (``meterline.admin.v1``):
  gateway, catalog, customers, billing, usage admin, data-plane registry, entitlements, credits,
  notifications, and List paging (``operator/paging.py``).
- ``cluster/``: what data planes call (``meterline.dataplane.v1``): the config stream and usage
  ingestion (``cluster/dataplane.py``), and the gRPC health service (``cluster/health.py``).

Shared by both: ``convert*.py`` (all conversion between domain types and messages),
``tokens.py`` (the operator tokens file), ``auth.py`` (checking tokens, data-plane
certificates), ``errors.py`` (domain errors to status codes), ``tracing.py`` (a span per call).
``stripe_webhook.py`` serves Stripe's callbacks.
"""
