"""HTTP/1.1 plumbing with no LLM knowledge: the server, the pooled upstream client, SSE, ASGI types.

Modules: ``server`` (asyncio protocol + httptools serving a raw ASGI app), ``client`` (pooled
keep-alive connections per origin, timeouts), ``sse`` (splitting an event stream), ``asgi``
(scope/receive/send types, reading a body, sending a response).

May import: ``dataplane.errors`` only.
"""
