"""The gateway's ASGI app: route -> key-auth -> ai-proxy -> respond -> enqueue usage.

Nothing here talks to the control plane; the app serves whatever RuntimeConfig was last
applied to it.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import Final
from urllib.parse import parse_qsl

import httpx

from dataplane.asgi import (
    JSON_CONTENT_TYPE,
    BodyTooLarge,
    Headers,
    Receive,
    Scope,
    Send,
    read_body,
    send_response,
)
from dataplane.keys import hash_key
from dataplane.openai_format import (
    ChatRequest,
    ChatStreamScanner,
    InvalidRequest,
    TokenUsage,
    error_body,
    prepare_chat_request,
    read_body_usage,
)
from dataplane.runtime import AiProxyPolicy, CompiledRoute, Consumer, KeyAuthPolicy, RuntimeConfig
from dataplane.sse import SseSplitter
from dataplane.upstream import UpstreamClients
from dataplane.usage_events import llm_token_events
from meterline.dataplane.v1 import usage_pb2

logger = logging.getLogger(__name__)

UsageSink = Callable[[usage_pb2.UsageEvent], None]

DEFAULT_MAX_BODY_BYTES: Final = 32 * 1024 * 1024

# Upstream response headers the gateway does not relay: hop-by-hop ones, lengths and encodings
# that no longer hold for the (decoded) body it sends, and headers it sets itself.
_DROPPED_RESPONSE_HEADERS: Final = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"transfer-encoding",
        b"content-length",
        b"content-encoding",
        b"date",
        b"server",
        b"x-request-id",
    }
)


class Gateway:
    """The data plane's HTTP app (raw ASGI), serving the last applied RuntimeConfig.

    Build one with a usage sink (the usage reporter's ``append``, or a list's ``append`` in
    tests) and call ``apply`` with each compiled config.
    """

    def __init__(
        self,
        *,
        node_id: str,
        usage_sink: UsageSink,
        clients: UpstreamClients | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        self.node_id = node_id
        self.config: RuntimeConfig | None = None
        self._usage_sink = usage_sink
        self._clients = clients or UpstreamClients()
        self._max_body_bytes = max_body_bytes

    def apply(self, config: RuntimeConfig) -> None:
        """Serve ``config`` from now on (one assignment: requests in flight keep theirs)."""
        self.config = config

    async def aclose(self) -> None:
        """Close the pooled upstream connections."""
        await self._clients.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        start_ns = time.time_ns()
        request_id = uuid.uuid4().hex
        id_header = (b"x-request-id", request_id.encode())
        config = self.config
        if config is None:
            body = error_body(
                "The gateway has not received its configuration yet; retry shortly.",
                type="api_error",
                code="config_unavailable",
            )
            await send_response(send, 503, body, [JSON_CONTENT_TYPE, id_header])
            return
        route = config.routes.match(scope["path"], scope["method"])
        if route is None:
            body = error_body(
                "no Route matched with those values",
                type="invalid_request_error",
                code="route_not_found",
            )
            await send_response(send, 404, body, [JSON_CONTENT_TYPE, id_header])
            return

        consumer: Consumer | None = None
        if route.key_auth is not None:
            key = _find_key(route.key_auth, scope)
            if key is None:
                body = error_body(
                    "No API key found in request",
                    type="invalid_request_error",
                    code="missing_api_key",
                )
                await send_response(send, 401, body, [JSON_CONTENT_TYPE, id_header])
                return
            consumer = config.consumers_by_key_hash.get(hash_key(key))
            if consumer is None:
                body = error_body(
                    "Invalid authentication credentials",
                    type="invalid_request_error",
                    code="invalid_api_key",
                )
                await send_response(send, 401, body, [JSON_CONTENT_TYPE, id_header])
                return

        policy = route.ai_proxy
        if policy is None:
            body = error_body(
                f'Route "{route.name}" has no ai-proxy plugin; this gateway only proxies LLM '
                "requests.",
                type="invalid_request_error",
                code="not_implemented",
            )
            await send_response(send, 501, body, [JSON_CONTENT_TYPE, id_header])
            return
        if scope["method"] != "POST":
            body = error_body(
                f"Method {scope['method']} is not allowed here; chat completions use POST.",
                type="invalid_request_error",
                code="method_not_allowed",
            )
            await send_response(send, 405, body, [JSON_CONTENT_TYPE, id_header])
            return
        try:
            raw = await read_body(receive, limit=self._max_body_bytes)
        except BodyTooLarge:
            body = error_body(
                f"The request body exceeds {self._max_body_bytes} bytes.",
                type="invalid_request_error",
                code="request_too_large",
            )
            await send_response(send, 413, body, [JSON_CONTENT_TYPE, id_header])
            return
        try:
            chat = prepare_chat_request(raw, policy)
        except InvalidRequest as exc:
            body = error_body(
                exc.message, type="invalid_request_error", code=exc.code, param=exc.param
            )
            await send_response(send, 400, body, [JSON_CONTENT_TYPE, id_header])
            return

        exchange = _Exchange(
            source=self.node_id,
            usage_sink=self._usage_sink,
            request_id=request_id,
            start_ns=start_ns,
            route=route,
            policy=policy,
            subject=consumer.username if consumer else "",
            chat=chat,
        )
        await exchange.run(scope, send, self._clients.get(policy.target.origin))


class _Exchange:
    """One proxied chat request: the upstream call, the relay, and its usage record."""

    __slots__ = (
        "chat",
        "policy",
        "request_id",
        "route",
        "source",
        "start_ns",
        "subject",
        "usage_sink",
    )

    def __init__(
        self,
        *,
        source: str,
        usage_sink: UsageSink,
        request_id: str,
        start_ns: int,
        route: CompiledRoute,
        policy: AiProxyPolicy,
        subject: str,
        chat: ChatRequest,
    ) -> None:
        self.source = source
        self.usage_sink = usage_sink
        self.request_id = request_id
        self.start_ns = start_ns
        self.route = route
        self.policy = policy
        self.subject = subject
        self.chat = chat

    def _record(
        self, *, status: int, usage: TokenUsage | None, model: str | None, estimated: bool
    ) -> None:
        for event in llm_token_events(
            request_id=self.request_id,
            source=self.source,
            subject=self.subject,
            time_ns=self.start_ns,
            provider=self.policy.target.provider,
            model=model or self.chat.model,
            status_code=status,
            route=self.route.name,
            usage=usage,
            estimated=estimated,
        ):
            self.usage_sink(event)

    async def run(self, scope: Scope, send: Send, client: httpx.AsyncClient) -> None:
        target = self.policy.target
        headers: Headers = [
            (name, value)
            for name, value in scope["headers"]
            if name not in self.route.dropped_headers
        ]
        headers.append(JSON_CONTENT_TYPE)
        headers.extend(target.auth_headers)
        request = client.build_request("POST", target.url, content=self.chat.body, headers=headers)
        id_header = (b"x-request-id", self.request_id.encode())
        try:
            response = await client.send(request, stream=True)
        except httpx.HTTPError as exc:
            await self._upstream_failed(send, exc, id_header)
            return
        try:
            status = response.status_code
            out_headers: Headers = [
                (name.lower(), value)
                for name, value in response.headers.raw
                if name.lower() not in _DROPPED_RESPONSE_HEADERS
            ]
            out_headers.append(id_header)
            content_type = response.headers.get("content-type", "")
            if self.chat.stream and 200 <= status < 300 and "text/event-stream" in content_type:
                await self._relay_stream(send, response, out_headers)
                return
            try:
                body = await response.aread()
            except httpx.HTTPError as exc:
                await self._upstream_failed(send, exc, id_header)
                return
            await send_response(send, status, body, out_headers)
            usage, model = read_body_usage(body)
            estimated = False
            if usage is None and 200 <= status < 300:
                logger.warning(
                    "request %s: provider %s reported no usage; recording 0 tokens as estimated",
                    self.request_id,
                    target.provider,
                )
                estimated = True
            self._record(status=status, usage=usage, model=model, estimated=estimated)
        finally:
            await response.aclose()

    async def _relay_stream(self, send: Send, response: httpx.Response, headers: Headers) -> None:
        """Relay SSE events as they arrive, reading usage and hiding the injected usage chunk."""
        await send(
            {"type": "http.response.start", "status": response.status_code, "headers": headers}
        )
        splitter = SseSplitter()
        scanner = ChatStreamScanner(hide_usage_chunk=self.chat.hide_usage_chunk)
        status = response.status_code
        try:
            async for chunk in response.aiter_bytes():
                events = splitter.feed(chunk)
                if not events:
                    continue
                out = [event for event in events if scanner.accept(event)]
                if out:
                    body = out[0] if len(out) == 1 else b"".join(out)
                    await send({"type": "http.response.body", "body": body, "more_body": True})
            rest = splitter.flush()
            if rest and scanner.accept(rest):
                await send({"type": "http.response.body", "body": rest, "more_body": True})
        except httpx.HTTPError as exc:
            # The status line is gone already; end the stream and record the failure.
            logger.warning(
                "request %s: stream from %s broke: %s",
                self.request_id,
                self.policy.target.origin,
                type(exc).__name__,
            )
            status = 502
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        estimated = False
        if scanner.usage is None and status < 300:
            logger.warning(
                "request %s: stream from provider %s ended without usage; recording 0 tokens as "
                "estimated",
                self.request_id,
                self.policy.target.provider,
            )
            estimated = True
        self._record(status=status, usage=scanner.usage, model=scanner.model, estimated=estimated)

    async def _upstream_failed(
        self, send: Send, exc: httpx.HTTPError, id_header: tuple[bytes, bytes]
    ) -> None:
        # Only the origin and error type are logged: the URL may carry a provider key.
        logger.warning(
            "request %s: upstream %s failed: %s",
            self.request_id,
            self.policy.target.origin,
            type(exc).__name__,
        )
        timed_out = isinstance(exc, httpx.TimeoutException)
        body = error_body(
            "The upstream provider timed out."
            if timed_out
            else "The upstream provider is unreachable.",
            type="api_error",
            code="upstream_timeout" if timed_out else "upstream_unavailable",
        )
        await send_response(send, 502, body, [JSON_CONTENT_TYPE, id_header])
        self._record(status=502, usage=None, model=None, estimated=False)


def _find_key(policy: KeyAuthPolicy, scope: Scope) -> str | None:
    """Return the API key a request presents, per the route's key-auth policy."""
    headers: list[tuple[bytes, bytes]] = scope["headers"]
    for name, value in headers:
        if name in policy.header_names and value:
            return value.decode(errors="replace")
    if policy.key_in_bearer:
        for name, value in headers:
            if name == b"authorization" and value[:7].lower() == b"bearer ":
                key = value[7:].strip()
                if key:
                    return key.decode(errors="replace")
    query: bytes = scope["query_string"]
    if policy.key_in_query and query:
        for param, param_value in parse_qsl(query.decode("latin-1")):
            if param in policy.query_names and param_value:
                return param_value
    return None
