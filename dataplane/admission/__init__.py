"""Admission: whether a request may go to the provider, and what it is charged.

Modules: ``stages`` (the named stages in order, returning what they decided), ``cost``
(entitlements, budgets and task budgets at the request, X-Meterline-* cost headers, the cost
estimate), ``entitlements`` (the per-snapshot enforcement table and local counters),
``ratelimit`` (rate-limiting-advanced, ai-rate-limiting-advanced), ``spool_guard`` (503 while a
full usage spool asks requests to wait).

May import: ``dataplane.translate`` and below.
"""
