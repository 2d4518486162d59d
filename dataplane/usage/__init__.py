"""Usage: token counts, the usage events of a request, the disk spool and the reporter.

Modules: ``tokens`` (disjoint token kinds, "absent" kept apart from zero), ``estimate``
(tokens when a provider reports none), ``events`` (the usage events of one request), ``spool``
(write-ahead log of unacknowledged events), ``reporter`` (batches streamed to the control
plane, resent until ACKed), ``backoff`` (reconnect delays of the gRPC streams).

May import: ``dataplane.http``, ``dataplane.errors``, ``dataplane.statedir``, ``meterline.*``.
"""
