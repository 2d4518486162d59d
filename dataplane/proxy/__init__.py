"""The request path: one straight line from route match to recorded usage.

Modules: ``gateway`` (the ASGI app: route -> authenticate -> admit -> translate -> call the
provider -> respond -> record; refusals rendered once), ``balancer`` (ai-proxy-advanced: which
target, failover, circuit breaking), ``compiler`` (a wire snapshot into the runtime the path
serves), ``runtime`` (that runtime: routes with their translator, balancer and limits),
``estimate`` (the cost-estimate endpoints, on the same route and auth steps), ``models``
(``GET /models``), ``compatible`` (the OpenAI-compatible providers' endpoints and quirks),
``kong_options`` (Kong's ai-proxy request and response options: sampling defaults,
response_streaming, body limit, X-Kong-LLM-Model, allow_override, upstream_path).

May import: ``dataplane.admission`` and below.
"""
