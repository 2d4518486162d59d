"""HTTP/1.1 plumbing with no LLM knowledge: the server, the pooled upstream client, SSE, ASGI types.

Modules: ``server`` (asyncio protocol + httptools serving a raw ASGI app), ``client`` (pooled
keep-alive connections per origin, timeouts), ``sse`` (splitting an event stream),
``eventstream`` (AWS's binary event-stream framing, split and CRC-checked with botocore's
decoder), ``asgi`` (scope/receive/send types, reading a body, sending a response), ``paths``
(RFC 3986 normalisation before routing), ``ndjson`` (Ollama's stream framing).

May import: ``dataplane.errors`` only (and botocore, for the event-stream decoder).
"""
