"""The gateway's ASGI app: route -> key-auth -> ai-proxy -> respond -> enqueue usage.

Nothing here talks to the control plane; the app serves whatever RuntimeConfig was last
applied to it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Coroutine
from typing import Any, Final
from urllib.parse import unquote

import orjson

from dataplane.admission.cost import ESTIMATE_SUFFIX
from dataplane.admission.entitlements import Enforcer
from dataplane.admission.ratelimit import RateLimiter
from dataplane.admission.stages import Admitted, admit_request
from dataplane.config.aws import AwsCredentialsError, AwsSigner
from dataplane.config.gcp_tokens import UpstreamCredentialsError
from dataplane.config.keys import authenticate, key_in_body, upstream_query
from dataplane.config.model import AccessTokens, AiProxyPolicy, Consumer
from dataplane.config.providers import ROUTE_TYPE_PRESERVE
from dataplane.errors import DataPlaneError, Rejection
from dataplane.http import eventstream
from dataplane.http.asgi import (
    DISCONNECTED,
    JSON_CONTENT_TYPE,
    ON_DISCONNECT,
    BodyTooLarge,
    ClientDisconnected,
    Headers,
    Receive,
    Scope,
    Send,
    read_body,
    send_response,
)
from dataplane.http.client import (
    UPSTREAM_ERRORS,
    Pool,
    UpstreamClients,
    UpstreamError,
    UpstreamResponse,
    UpstreamTooLarge,
)
from dataplane.http.ndjson import NdjsonSplitter
from dataplane.http.sse import SseSplitter
from dataplane.observability.logs import REQUEST_ID
from dataplane.observability.metrics import ROUTE_SCOPE_KEY, DataPlaneMetrics
from dataplane.observability.payloads import PayloadTap, log_payloads, stream_text
from dataplane.observability.tracing import (
    RequestTrace,
    Tracing,
    operation_name,
)
from dataplane.proxy import kong_options
from dataplane.proxy.balancer import Balancer, NoTargetForModel
from dataplane.proxy.estimate import RESERVED_ESTIMATE_PATH, estimate_for_model, estimate_on_route
from dataplane.proxy.models import (
    RESERVED_MODELS_PATH,
    answer_for_key,
    answer_on_route,
    models_request,
)
from dataplane.proxy.runtime import CompiledRoute, RuntimeConfig, carry_state
from dataplane.translate.base import (
    Prepared,
    StreamRelay,
    Translator,
    cut_stream_usage,
    read_whole,
    stream_error_status,
    usage_settled,
)
from dataplane.translate.gemini_format import candidate_texts
from dataplane.translate.openai_format import InvalidRequest
from dataplane.translate.select import OPENAI as _OPENAI
from dataplane.usage.estimate import estimate_usage
from dataplane.usage.events import llm_token_events
from dataplane.usage.tokens import TokenUsage
from meterline.dataplane.v1 import usage_pb2

logger = logging.getLogger(__name__)

UsageSink = Callable[[usage_pb2.UsageEvent], None]

_SSE_CONTENT_TYPE: Final = (b"content-type", b"text/event-stream; charset=utf-8")
DEFAULT_MAX_BODY_BYTES: Final = 32 * 1024 * 1024
# How long a stream is still read after its client went away, to meter its real usage.
DEFAULT_DRAIN_TIMEOUT_S: Final = 60.0

# Providers whose streams reach OpenAI clients translated (figures only on the usage chunk the
# client asked for) or native clients unchanged (no figures: their SDKs read every line, and
# Bedrock's binary frames have no place for them).
_OWN_STREAM_FORMATS: Final = frozenset({"anthropic", "gemini", "bedrock"})
# AWS's answers to a signature or credentials it does not accept (x-amzn-ErrorType): the
# gateway resolves its credentials again and retries once.
_SIGNATURE_REFUSALS: Final = frozenset(
    {
        b"InvalidSignatureException",
        b"SignatureDoesNotMatch",
        b"UnrecognizedClientException",
        b"ExpiredTokenException",
        b"IncompleteSignatureException",
        b"MissingAuthenticationTokenException",
    }
)

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
        drain_timeout_s: float = DEFAULT_DRAIN_TIMEOUT_S,
        rate_limiter: RateLimiter | None = None,
        metrics: DataPlaneMetrics | None = None,
        enforcer: Enforcer | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.node_id = node_id
        # OpenTelemetry spans and metrics (observability.tracing); None when not configured.
        self.tracing = tracing
        self.metrics = metrics or DataPlaneMetrics()
        self._drain_timeout_s = drain_timeout_s
        self.config: RuntimeConfig | None = None
        self._usage_sink = usage_sink
        # Rate-limit counters (and Redis clients): they outlive snapshots.
        self.rate_limiter = rate_limiter or RateLimiter()
        # Entitlements, budgets, task budgets: local counters that outlive snapshots.
        self.enforcer = enforcer or Enforcer()
        self._clients = clients or UpstreamClients()
        self._max_body_bytes = max_body_bytes

    def apply(self, config: RuntimeConfig) -> None:
        """Serve ``config`` from now on (one assignment: requests in flight keep theirs)."""
        self.enforcer.apply(config.enforcement)
        if self.config is not None:
            # Unchanged ai-proxy-advanced routes keep their balancer state (circuit breaker...).
            carry_state(self.config, config)
        self.config = config

    async def aclose(self) -> None:
        """Close the pooled upstream connections."""
        await self._clients.aclose()
        await self.rate_limiter.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """One request, top to bottom: route -> authenticate -> read -> prepare -> admit ->
        call the provider (balancer, failover) -> respond -> record. Every refusal on the way
        is a Rejection, rendered once below by the route's translator."""
        if scope["type"] != "http":
            return
        start_ns = time.time_ns()
        # 32 hex digits, time-ordered like a UUIDv7: 48 bits of Unix milliseconds, then 80
        # random bits. Event ids start with it, so the control plane's primary-key index takes
        # new events near its right edge instead of at random pages (SQLite wrote ~2x fewer
        # WAL pages per batch; bench/README.md).
        request_id = f"{start_ns // 1_000_000:012x}{os.urandom(10).hex()}"
        REQUEST_ID.set(request_id)  # for log lines (observability.logs); this task only
        id_header = (b"x-request-id", request_id.encode())
        translator: Translator = _OPENAI
        # What admission decided: its headers go on every answer after it, refusals included.
        admitted: Admitted | None = None
        # For the span of a refused request (tracing only).
        trace: RequestTrace | None = None
        consumer = policy = None
        try:
            config = self._config()
            # The normalised path as sent (the server removed dot segments and decoded only
            # unreserved escapes): matched, and its rest forwarded, with %2F still %2F.
            path = scope["raw_path"].decode("latin-1")
            matched = config.routes.find(path, scope["method"], scope["headers"], scope["scheme"])
            if matched is None:
                await self._unrouted(config, path, scope, receive, send, id_header)
                return
            route, end = matched
            scope[ROUTE_SCOPE_KEY] = route.name  # for the metrics (observability.metrics)
            translator = route.translator
            if route.refused or route.https_redirect:
                _check_served(route, scope)
            # Kong's key_in_body: the body is read before authenticating.
            raw = await _read_body(receive, self._body_limit(route)) if route.key_in_body else None
            consumer, raw = _authenticate(route, config, scope, raw)
            subpath = path[end:]
            if route.answers_models and scope["method"] == "GET":
                # Answered here, not forwarded: the model id is read decoded.
                wants_models, model = models_request(unquote(subpath))
                if wants_models:
                    await _send_body(send, answer_on_route(route, model), id_header)
                    return
            if route.forwards_whole_path:
                subpath = path  # Kong's strip_path false: the whole path goes upstream
            policy = _ai_proxy(route, scope["method"])
            if raw is None:
                raw = await _read_body(receive, self._body_limit(route))
            if scope["method"] == "POST" and path.endswith(ESTIMATE_SUFFIX):
                answer = estimate_on_route(self.enforcer, route, policy, consumer, raw, scope)
                await _send_json(send, answer, id_header)
                return
            prepared = _prepare(translator, policy, raw, subpath, scope)
            admitted = await self._admit(route, policy, consumer, prepared, scope)
            if self.tracing is not None:
                trace = self._trace(scope, request_id, route, consumer, policy, start_ns)
                if trace.sampled:
                    trace.cost = admitted.metering.cost
            exchange = _Exchange(
                source=self.node_id,
                usage_sink=self._usage_sink,
                admitted=admitted,
                request_id=request_id,
                start_ns=start_ns,
                route=route,
                policy=policy,
                translator=translator,
                subject=consumer.username if consumer else "",
                prepared=prepared,
                metrics=self.metrics,
                drain_timeout_s=self._drain_timeout_s,
                raw=raw,
                subpath=subpath,
                trace=trace,
            )
            await exchange.run(scope, receive, send, self._clients)
        except Rejection as rejection:
            if self.tracing is not None:
                self._trace_refusal(scope, rejection, request_id, start_ns, trace, consumer, policy)
            headers = [JSON_CONTENT_TYPE, id_header, *rejection.headers]
            await _respond(send, rejection.status, translator.reject(rejection), headers, admitted)
        except (_Gone, ClientDisconnected):
            # _Gone: the client left before its answer (recorded by the exchange).
            # ClientDisconnected: the body never arrived whole: nothing went upstream, nothing
            # is billed, and there is nobody to answer.
            return

    async def _unrouted(
        self,
        config: RuntimeConfig,
        path: str,
        scope: Scope,
        receive: Receive,
        send: Send,
        id_header: tuple[bytes, bytes],
    ) -> None:
        """A request no route matched: the gateway's own /v1/models and /v1/cost/estimate,
        else Rejection 404."""
        if path == RESERVED_MODELS_PATH and scope["method"] == "GET":
            await _send_body(send, answer_for_key(config, scope), id_header)
            return
        if path == RESERVED_ESTIMATE_PATH and scope["method"] == "POST":
            answer = await estimate_for_model(
                self.enforcer, config, scope, receive, max_body_bytes=self._max_body_bytes
            )
            await _send_json(send, answer, id_header)
            return
        raise Rejection(
            404,
            "no Route matched with those values",
            type="invalid_request_error",
            code="route_not_found",
        )

    def _admit(
        self,
        route: CompiledRoute,
        policy: AiProxyPolicy,
        consumer: Consumer | None,
        prepared: Prepared,
        scope: Scope,
    ) -> Coroutine[Any, Any, Admitted]:
        """The admission stages (dataplane.admission.stages), to await; Rejection if refused."""
        provider = policy.target.provider
        return admit_request(
            enforcer=self.enforcer,
            rate_limiter=self.rate_limiter,
            rate_limits=route.rate_limits,
            consumer=consumer,
            route_id=route.id,
            provider=provider,
            model=prepared.model,
            scope=scope,
            # The figures close the stream where the client asked for the usage chunk.
            stream_figures=prepared.include_usage
            or (provider not in _OWN_STREAM_FORMATS and not prepared.hide_usage_chunk),
        )

    def _trace(
        self,
        scope: Scope,
        request_id: str,
        route: CompiledRoute,
        consumer: Consumer | None,
        policy: AiProxyPolicy,
        start_ns: int,
    ) -> RequestTrace:
        assert self.tracing is not None
        return self.tracing.begin(
            scope["headers"],
            request_id,
            route.name,
            consumer.username if consumer else "",
            policy.route_type,
            start_ns,
        )

    def _body_limit(self, route: CompiledRoute) -> int:
        """The data plane's body limit, or the route's (Kong's max_request_body_size) below it."""
        policy = route.ai_proxy
        if policy is not None and 0 < policy.max_body_bytes < self._max_body_bytes:
            return policy.max_body_bytes
        return self._max_body_bytes

    def _trace_refusal(
        self,
        scope: Scope,
        rejection: Rejection,
        request_id: str,
        start_ns: int,
        trace: RequestTrace | None,
        consumer: Consumer | None,
        policy: AiProxyPolicy | None,
    ) -> None:
        """The span of a request the gateway answered with an error itself (no usage)."""
        assert self.tracing is not None
        operation = operation_name(policy.route_type) if policy is not None else "chat"
        model = policy.model if policy is not None else ""
        provider = policy.target.provider if policy is not None else ""
        error_type = rejection.code or rejection.type
        if trace is not None:
            trace.failed(
                status=rejection.status,
                error_type=error_type,
                operation=operation,
                model=model,
                provider=provider,
            )
            return
        self.tracing.refused(
            scope["headers"],
            request_id=request_id,
            route=scope.get(ROUTE_SCOPE_KEY, ""),
            consumer=consumer.username if consumer is not None else "",
            operation=operation,
            model=model,
            provider=provider,
            status=rejection.status,
            error_type=error_type,
            start_ns=start_ns,
        )

    def _config(self) -> RuntimeConfig:
        config = self.config
        if config is None:
            raise Rejection(
                503,
                "The gateway has not received its configuration yet; retry shortly.",
                type="api_error",
                code="config_unavailable",
            )
        return config


def _authenticate(
    route: CompiledRoute, config: RuntimeConfig, scope: Scope, raw: bytes | None
) -> tuple[Consumer | None, bytes | None]:
    """The route's key-auth: the consumer (None on a route without key-auth) and the body,
    if read already (``raw``: Kong's key_in_body, the key removed); Rejection 401.
    From here on the query is what may go upstream: never the consumer's key."""
    key_auth = route.key_auth
    if key_auth is None:
        return None, raw
    body_key = None
    if raw is not None:
        body_key, raw = key_in_body(key_auth, scope, raw)
    consumer = authenticate(key_auth, config.consumers_by_key_hash, scope, body_key=body_key)
    if scope["query_string"]:
        # Translators and balancer re-prepares read the query: never with the key.
        scope["query_string"] = upstream_query(key_auth, scope["query_string"])
    return consumer, raw


def _check_served(route: CompiledRoute, scope: Scope) -> None:
    """Rejection if ``route`` is not served here (503), or needs https the request lacks
    (Kong's 426, or the route's redirect to the https URL)."""
    if route.refused:
        raise Rejection(503, route.refused, type="api_error", code="route_not_served")
    if scope["scheme"] == "https":
        return
    status = route.https_redirect
    if status == 426:
        raise Rejection(
            426,
            "Please use HTTPS protocol",
            type="invalid_request_error",
            code="https_required",
            headers=[(b"upgrade", b"TLS/1.2, HTTP/1.1")],
        )
    location = b"https://" + _client_host(scope) + scope["raw_path"]
    if scope["query_string"]:
        location += b"?" + scope["query_string"]
    raise Rejection(
        status,
        "Please use HTTPS protocol",
        type="invalid_request_error",
        code="https_required",
        headers=[(b"location", location)],
    )


def _ai_proxy(route: CompiledRoute, method: str) -> AiProxyPolicy:
    """The route's ai-proxy policy, if it serves ``method``; Rejection 501 / 405 if not."""
    policy = route.ai_proxy
    if policy is None:
        raise Rejection(
            501,
            f'Route "{route.name}" has no ai-proxy plugin; this gateway only proxies LLM requests.',
            type="invalid_request_error",
            code="not_implemented",
        )
    if method != "POST" and policy.route_type != ROUTE_TYPE_PRESERVE:
        raise Rejection(
            405,
            f"Method {method} is not allowed here; LLM requests use POST.",
            type="invalid_request_error",
            code="method_not_allowed",
        )
    return policy


async def _read_body(receive: Receive, limit: int) -> bytes:
    try:
        return await read_body(receive, limit=limit)
    except BodyTooLarge:
        raise Rejection(
            413,
            f"The request body exceeds {limit} bytes.",
            type="invalid_request_error",
            code="request_too_large",
        ) from None


def _prepare(
    translator: Translator, policy: AiProxyPolicy, raw: bytes, subpath: str, scope: Scope
) -> Prepared:
    """The upstream request of the client's body; Rejection 400 if the body is unusable."""
    try:
        return kong_options.prepare(
            translator,
            policy,
            raw,
            subpath=subpath,
            query=scope["query_string"],
            method=scope["method"],
        )
    except InvalidRequest as exc:
        raise Rejection(
            400, exc.message, type="invalid_request_error", code=exc.code, param=exc.param
        ) from None


async def _respond(
    send: Send, status: int, body: bytes, headers: Headers, admitted: Admitted | None
) -> None:
    """Send a whole response: ``headers``, its length, then what admission adds (rate-limit
    and cost headers, dataplane.admission.stages.Admitted.head)."""
    headers.append((b"content-length", str(len(body)).encode()))
    if admitted is not None:
        headers += admitted.head(headers)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _send_json(send: Send, answer: dict[str, object], id_header: tuple[bytes, bytes]) -> None:
    await _send_body(send, orjson.dumps(answer), id_header)


async def _send_body(send: Send, body: bytes, id_header: tuple[bytes, bytes]) -> None:
    await send_response(send, 200, body, [JSON_CONTENT_TYPE, id_header])


def _client_host(scope: Scope) -> bytes:
    """The client's Host header, sent upstream by a preserve_host route (b"" if none: the
    target's host). AWS targets always get their own: SigV4 signs the host."""
    return next((value for name, value in scope["headers"] if name.lower() == b"host"), b"")


class _Exchange:
    """One proxied LLM request: the upstream call(s), the relay, and its usage record.

    On an ai-proxy-advanced route the balancer plans the targets to try; an attempt that fails
    by the route's failover_criteria before anything reached the client is recorded (its
    status, no tokens: never billed) and the next target is tried. Usage is attributed to the
    target that answered.
    """

    __slots__ = (
        "admitted",
        "attempt",
        "cancelling",
        "cut",
        "drain",
        "drain_timeout_s",
        "draining",
        "first_byte_ns",
        "left",
        "metrics",
        "output_text",
        "policy",
        "prepared",
        "raw",
        "request_id",
        "route",
        "scope",
        "source",
        "start_ns",
        "start_perf_ns",
        "subject",
        "subpath",
        "target_index",
        "task",
        "trace",
        "translator",
        "upstream_ns",
        "usage_sink",
        "waiting",
    )

    def __init__(
        self,
        *,
        source: str,
        usage_sink: UsageSink,
        admitted: Admitted,
        request_id: str,
        start_ns: int,
        route: CompiledRoute,
        policy: AiProxyPolicy,
        translator: Translator,
        subject: str,
        prepared: Prepared,
        metrics: DataPlaneMetrics,
        drain_timeout_s: float,
        raw: bytes = b"",
        subpath: str = "",
        trace: RequestTrace | None = None,
    ) -> None:
        self.source = source
        self.trace = trace
        self.usage_sink = usage_sink
        self.admitted = admitted
        self.request_id = request_id
        self.start_ns = start_ns
        self.start_perf_ns = time.perf_counter_ns()
        self.first_byte_ns: int | None = None
        # When the provider's response headers arrived (upstream latency).
        self.upstream_ns: int | None = None
        self.metrics = metrics
        self.route = route
        self.policy = policy
        self.translator = translator
        self.subject = subject
        self.prepared = prepared
        self.drain_timeout_s = drain_timeout_s
        self.raw = raw
        self.subpath = subpath
        # 1-based upstream attempt, and the balancer's index of its target.
        self.attempt = 1
        self.target_index = 0
        # log_payloads routes only: the request's scope, and the text answered (for spans).
        self.scope: Scope | None = None
        self.output_text: str | None = None
        # The client leaving (the server's ON_DISCONNECT hook, _client_left): ``left`` once
        # it did; ``waiting`` while the upstream call or body is awaited (the hook cancels
        # the request's ``task``, and ``cut`` tells that cancellation from any other);
        # ``draining`` while a stream is relayed (the hook starts the ``drain`` clock: at its
        # end the task is cancelled, ``cancelling`` being its count of cancellations before).
        self.task: asyncio.Task[None] | None = None
        self.left = self.waiting = self.cut = self.draining = False
        self.drain: asyncio.TimerHandle | None = None
        self.cancelling = -1

    def _log_payloads(self, status: int, response: bytes | PayloadTap) -> None:
        """The request's and the answer's bodies to the JSON log (log_payloads routes)."""
        scope = self.scope
        if scope is None:
            return
        key_auth = self.route.key_auth
        if isinstance(response, PayloadTap):
            body, dropped = bytes(response.kept), response.dropped
            text: str | None = stream_text(body) or response.produced_text()
        else:
            body, dropped, text = response, 0, None
        log_payloads(
            route=self.route.name,
            status=status,
            request=self.raw,
            headers=scope["headers"],
            query=scope["query_string"],
            response=body,
            response_text=text,
            response_dropped=dropped,
            secret_headers=key_auth.header_names if key_auth is not None else (),
            secret_query=key_auth.query_names if key_auth is not None else (),
        )
        if self.trace is not None and self.trace.wants_content:
            self.output_text = text if text is not None else _completion_text(body)

    def _record(
        self,
        *,
        status: int,
        usage: TokenUsage | None,
        model: str | None,
        estimated: bool,
        failed_attempt: bool = False,
    ) -> None:
        now = time.perf_counter_ns()
        model = model or self.prepared.model
        ttft = (
            None if self.first_byte_ns is None else (self.first_byte_ns - self.start_perf_ns) / 1e6
        )
        total_ms = (now - self.start_perf_ns) / 1e6
        if self.trace is not None:
            # Notes only: spans are built off the request path (observability.tracing).
            self.trace.ended(self, now, status, usage, model, estimated, failed_attempt)
        if not failed_attempt:
            self.metrics.exchange(
                route=self.route.name,
                provider=self.policy.target.provider,
                model=model,
                usage=usage,
                ttft_s=None if ttft is None else ttft / 1e3,
                upstream_s=None
                if self.upstream_ns is None
                else (self.upstream_ns - self.start_perf_ns) / 1e9,
            )
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "request %s attempt %d: status=%d ttft_ms=%s total_ms=%.1f",
                self.request_id,
                self.attempt,
                status,
                "-" if ttft is None else f"{ttft:.1f}",
                total_ms,
            )
        if not self.prepared.metered or (
            usage is None and 200 <= status < 300 and self.policy.route_type == ROUTE_TYPE_PRESERVE
        ):
            # Nothing to bill: a call without tokens, or a passed-through body without usage.
            return
        for event in llm_token_events(
            request_id=self.request_id,
            source=self.source,
            subject=self.subject,
            time_ns=self.start_ns,
            provider=self.policy.target.provider,
            model=model,
            status_code=status,
            route=self.route.name,
            usage=usage,
            estimated=estimated,
            time_to_first_token_ms=None if ttft is None else round(ttft),
            latency_ms=round(total_ms),
            attempt=self.attempt,
            failed_attempt=failed_attempt,
        ):
            self.usage_sink(event)
            self.admitted.count(event)

    def _estimate(self, produced: str, what: str) -> TokenUsage:
        logger.warning(
            "request %s: %s from provider %s without usage; recording an estimate "
            "(ceil(chars/4)) marked estimated",
            self.request_id,
            what,
            self.policy.target.provider,
        )
        return estimate_usage(document=self.prepared.document, produced=produced)

    async def run(
        self, scope: Scope, receive: Receive, send: Send, clients: UpstreamClients
    ) -> None:
        if self.route.logs_payloads:
            self.scope = scope
        self.task = asyncio.current_task()
        scope[ON_DISCONNECT] = self._client_left
        if DISCONNECTED in scope:
            self.left = True  # before the hook was set
        balancer = self.route.balancer
        if balancer is None:
            session = clients.get(self.policy.target.origin)
            await self._attempt(scope, send, session, None, final=True)
            return
        try:
            plan = balancer.plan(model=self.prepared.requested_model, headers=scope["headers"])
        except NoTargetForModel as exc:
            served = ", ".join(exc.served) or "none"
            model = exc.model or ""
            raise Rejection(
                400,
                f"The model '{model}' is not served by this route (it serves: {served}).",
                type="invalid_request_error",
                code="model_not_found",
                param="model",
            ) from None
        # The Gateway prepared the request for the first target; others re-prepare it.
        prepared_for = self.policy.target
        last = len(plan) - 1
        for number, index in enumerate(plan):
            if not balancer.acquire(index):
                continue  # another request is probing this half-open target
            target, translator = balancer.targets[index].policy, balancer.targets[index].translator
            if target.target is not prepared_for:
                try:
                    self.prepared = kong_options.prepare(
                        translator,
                        target,
                        self.raw,
                        subpath=self.subpath,
                        query=scope["query_string"],
                        method=scope["method"],
                    )
                except InvalidRequest as exc:
                    balancer.settle(index)
                    raise Rejection(
                        400,
                        exc.message,
                        type="invalid_request_error",
                        code=exc.code,
                        param=exc.param,
                    ) from None
                prepared_for = target.target
            self.policy, self.translator = target, translator
            self.target_index = index
            session = clients.get(target.target.origin)
            try:
                final = number == last
                if await self._attempt(scope, send, session, balancer, final=final):
                    return
            finally:
                # A probe that ended neither failed nor answered (an error outside the
                # criteria, a cancelled request) must not hold the half-open target forever.
                balancer.settle(index)
            self.attempt += 1
        raise Rejection(
            503,
            "Every target of this route is unavailable (circuit breaker open); retry shortly.",
            type="api_error",
            code="no_healthy_upstream",
        )

    def _client_left(self) -> None:
        """The server's ON_DISCONNECT hook (called once): the client left before its answer.

        Awaiting the provider, the request's task is cancelled (closing the upstream
        connection: the provider stops generating an answer nobody will read); relaying a
        stream, the drain clock starts (_relay_stream)."""
        self.left = True
        if self.waiting:
            self.cut = True
            assert self.task is not None
            self.task.cancel()
        elif self.draining:
            self._start_drain()

    def _start_drain(self) -> None:
        """The stream is read on for its usage, ``drain_timeout_s`` at most."""
        loop = asyncio.get_running_loop()
        self.drain = loop.call_later(self.drain_timeout_s, self._drain_over)

    def _drain_over(self) -> None:
        task = self.task
        assert task is not None
        self.cancelling = task.cancelling()
        task.cancel()

    def _abandoned(self, task: asyncio.Task[None] | None) -> bool:
        """In an ``except CancelledError`` around an upstream await: True if the client
        leaving cancelled it (the cancellation withdrawn), else False (the caller re-raises)."""
        if not self.cut:
            return False
        self.cut = False
        assert task is not None
        task.uncancel()
        return True

    async def _attempt(
        self,
        scope: Scope,
        send: Send,
        session: Pool,
        balancer: Balancer | None,
        *,
        final: bool,
    ) -> bool:
        """Call the current target; False if it failed over (nothing sent to the client)."""
        try:
            response = await self._call(scope, session, balancer, final=final)
        except Abandoned:
            self._record_abandoned()
            return True
        if response is None:
            return False
        try:
            status = response.status
            if balancer is not None and balancer.fails_over_on_status(status):
                balancer.failed(self.target_index)
                if not final:
                    self._failed_over(None, status)
                    # Closed, not drained: a failed target's connection is not worth keeping.
                    response.close()
                    return False
            headers = self._response_headers(response)
            if 200 <= status < 300 and _is_stream(response.content_type, self.prepared):
                # A stream, asked for or not (a provider may stream a non-streamed request):
                # relayed as one, its usage read from its events; never a whole body whose
                # length the stream's metering would change.
                await self._relay_stream(send, response, headers, balancer)
            else:
                await self._answer_whole(send, response, headers, balancer)
            return True
        finally:
            # Back to the pool if the body was read to its end; closed otherwise.
            response.release()

    async def _call(
        self, scope: Scope, session: Pool, balancer: Balancer | None, *, final: bool
    ) -> UpstreamResponse | None:
        """The current target's response (its head); None if it failed before answering and
        the balancer fails over; Abandoned if the client left meanwhile; else Rejection."""
        target = self.policy.target
        headers = self._upstream_headers(scope)
        try:
            if target.credentials is not None:
                host = _client_host(scope) if self.route.preserve_host else b""
                call = self._send_with_token(session, headers, target.credentials, host)
            elif target.signer is not None:
                call = self._send_signed(session, headers, target.signer)
            else:
                prepared = self.prepared
                # Redirects are the client's business: they are relayed, not followed.
                call = session.request(
                    prepared.method,
                    prepared.url,
                    body=prepared.body or b"",
                    headers=headers,
                    timeout=self.policy.timeout,
                    host=_client_host(scope) if self.route.preserve_host else b"",
                )
            self.waiting = True
            try:
                response = await call
            except asyncio.CancelledError:
                if self._abandoned(self.task):
                    raise Abandoned from None
                raise
            finally:
                self.waiting = False
            self.upstream_ns = time.perf_counter_ns()
            return response
        except _SignatureRefused as refused:
            # A refused signature is the provider's 403 (criterion http_403); no credentials to
            # sign with is an error before the request (criterion error).
            if self._fails_over(
                balancer,
                final,
                balancer is not None
                and (
                    balancer.fails_over_on_error(timed_out=False)
                    if refused.unavailable
                    else balancer.fails_over_on_status(403)
                ),
                refused,
                502,
            ):
                return None
            raise self._credentials_failed(refused) from None
        except UPSTREAM_ERRORS as exc:
            timed_out = isinstance(exc, TimeoutError)
            if self._fails_over(
                balancer,
                final,
                balancer is not None and balancer.fails_over_on_error(timed_out=timed_out),
                exc,
                504 if timed_out else 502,
            ):
                return None
            raise self._upstream_failed(exc) from None

    def _fails_over(
        self,
        balancer: Balancer | None,
        final: bool,
        criterion: bool,
        exc: BaseException,
        status: int,
    ) -> bool:
        """A call that failed by the route's failover ``criterion``: the target marked failed;
        True (recorded as a failed attempt) if another target is left to try."""
        if balancer is None or not criterion:
            return False
        balancer.failed(self.target_index)
        if final:
            return False
        self._failed_over(exc, status)
        return True

    def _upstream_headers(self, scope: Scope) -> Headers:
        """The client's headers go on byte for byte, but for credentials and hop-by-hop ones;
        then the body's type and the provider's auth."""
        dropped = self.route.dropped_headers
        headers = [(name, value) for name, value in scope["headers"] if name not in dropped]
        if self.prepared.body:
            headers.append(JSON_CONTENT_TYPE)
        headers += kong_options.auth_headers(self.policy, scope["headers"], self.route.key_auth)
        if self.trace is not None:
            self.trace.upstream_headers(headers)  # traceparent: this attempt's span
        return headers

    def _response_headers(self, response: UpstreamResponse) -> Headers:
        """The provider's response headers the client gets, with the request id and Kong's
        model header."""
        headers: Headers = [
            (lowered, value)
            for name, value in response.raw_headers
            if (lowered := name.lower()) not in _DROPPED_RESPONSE_HEADERS
        ]
        headers.append((b"x-request-id", self.request_id.encode()))
        model_header = kong_options.model_header(self.policy, self.prepared.model)
        if model_header is not None:
            headers.append(model_header)
        return headers

    async def _answer_whole(
        self,
        send: Send,
        response: UpstreamResponse,
        headers: Headers,
        balancer: Balancer | None,
    ) -> None:
        """Read the whole response, translate it, meter it, record it, answer it."""
        status = response.status
        prepared = self.prepared
        try:
            body = await self._read_whole(response)
        except UPSTREAM_ERRORS as exc:
            raise self._upstream_failed(exc) from None
        out, usage, model = read_whole(
            self.translator, body, status, prepared, response.raw_headers
        )
        if out is not body:
            headers = [(name, value) for name, value in headers if name != b"content-type"]
            headers.append(JSON_CONTENT_TYPE)
        estimated = False
        if (
            usage is None
            and 200 <= status < 300
            and prepared.metered
            # A preserve route meters only bodies that carry usage; one whose usage block
            # is there but unusable (malformed counts) is estimated, never left unbilled.
            and (self.policy.route_type != ROUTE_TYPE_PRESERVE or b'"usage"' in body)
        ):
            usage, estimated = self._estimate(_completion_text(out), "response"), True
        self.first_byte_ns = time.perf_counter_ns()
        if self.trace is not None:
            self.trace.response = out  # its id and finish reasons, read off the path
        if self.policy.log_payloads:
            self._log_payloads(status, out)
        # Usage is recorded (spooled) before the response completes: a response its
        # client received is never lost with a killed data plane.
        self._record(status=status, usage=usage, model=model, estimated=estimated)
        if balancer is not None and not balancer.fails_over_on_status(status):
            self._answered(balancer, usage)
        await _respond(send, status, out, headers, self.admitted)

    async def _send_with_token(
        self,
        session: Pool,
        headers: list[tuple[bytes, bytes]],
        credentials: AccessTokens,
        host: bytes,
    ) -> UpstreamResponse:
        """The upstream call with a run-time access token, retried once on a 401 with a fresh
        one (UpstreamCredentialsError if none can be had or the provider refuses it again)."""
        prepared = self.prepared
        auth = await credentials.header()
        for retry in (False, True):
            response = await session.request(
                prepared.method,
                prepared.url,
                body=prepared.body or b"",
                headers=[*headers, auth],
                timeout=self.policy.timeout,
                host=host,
            )
            if response.status != 401:
                return response
            response.close()
            if retry:
                break
            logger.info("request %s: access token refused; refreshing it", self.request_id)
            auth = await credentials.rejected(auth)
        raise UpstreamCredentialsError(
            "the provider refused the gateway's access token (HTTP 401), also after a refresh"
        )

    async def _send_signed(
        self, session: Pool, headers: list[tuple[bytes, bytes]], signer: AwsSigner
    ) -> UpstreamResponse:
        """The upstream call SigV4-signed for an AWS target; when AWS refuses the signature or
        the credentials, resolved again and retried once (_SignatureRefused if refused again,
        or if no credentials can be had)."""
        prepared = self.prepared
        for retry in (False, True):
            response = await session.request(
                prepared.method,
                prepared.url,
                body=prepared.body or b"",
                headers=[*headers, *await self._sign(signer)],
                timeout=self.policy.timeout,
            )
            reason = _signature_refusal(response)
            if reason is None:
                return response
            # Rotated keys or an expired session: resolve the credentials again, retry once.
            response.close()
            if retry:
                raise _SignatureRefused(reason)
            logger.warning(
                "request %s: %s refused the signature (%s); resolving credentials again",
                self.request_id,
                self.policy.target.origin,
                reason,
            )
            signer.invalidate()
        raise AssertionError("unreachable")  # pragma: no cover

    async def _sign(self, signer: AwsSigner) -> list[tuple[bytes, bytes]]:
        prepared = self.prepared
        try:
            return await signer.sign(prepared.method, prepared.url, prepared.body or b"")
        except AwsCredentialsError as exc:
            raise _SignatureRefused(str(exc), unavailable=True) from None

    def _credentials_failed(self, refused: _SignatureRefused) -> Rejection:
        """Record a request that could not be signed, or whose signature the provider refused
        twice; the 502 Rejection to answer with."""
        logger.warning(
            "request %s: no accepted credentials for upstream %s: %s",
            self.request_id,
            self.policy.target.origin,
            refused.reason,
        )
        self._record(status=502, usage=None, model=None, estimated=False)
        if refused.unavailable:
            message = f"The gateway could not sign the upstream request: {refused.reason}."
        else:
            message = (
                f"The upstream provider refused the gateway's AWS credentials ({refused.reason}), "
                "also after they were resolved again; the route's AWS auth needs fixing."
            )
        return Rejection(502, message, type="api_error", code="upstream_auth_failed")

    async def _read_whole(self, response: UpstreamResponse) -> bytes:
        self.waiting = True
        try:
            return await response.read()
        except asyncio.CancelledError:
            if not self._abandoned(self.task):
                raise
        finally:
            self.waiting = False
        response.close()  # the provider stops generating for nobody
        self._record_abandoned()
        raise _Gone

    def _record_abandoned(self) -> None:
        """The client left before its (non-streamed) answer: the upstream call was cut."""
        logger.info(
            "request %s: client left before the answer; upstream call to %s cancelled",
            self.request_id,
            self.policy.target.origin,
        )
        # Recorded (499, nginx's "client closed request") and never billed: no usage is known.
        self._record(status=499, usage=None, model=None, estimated=False)

    def _answered(self, balancer: Balancer, usage: TokenUsage | None) -> None:
        latency_ms = (time.perf_counter_ns() - self.start_perf_ns) / 1e6
        balancer.succeeded(self.target_index, latency_ms=latency_ms, usage=usage)

    def _failed_over(self, exc: BaseException | None, status: int) -> None:
        logger.warning(
            "request %s attempt %d: upstream %s failed (%s); failing over",
            self.request_id,
            self.attempt,
            self.policy.target.origin,
            type(exc).__name__ if exc is not None else f"status {status}",
        )
        self._record(status=status, usage=None, model=None, estimated=False, failed_attempt=True)

    async def _relay_stream(
        self,
        send: Send,
        response: UpstreamResponse,
        headers: Headers,
        balancer: Balancer | None = None,
    ) -> None:
        """Relay SSE events as they arrive, reading usage (and translating if needed).

        If the client goes away, the upstream stream is still read to its end (at most
        ``drain_timeout_s`` more) so the tokens it produced are metered from its own usage.
        """
        headers = [(name, value) for name, value in headers if name != b"content-type"]
        client_type = self.prepared.stream_content_type
        headers.append(
            (b"content-type", client_type.encode()) if client_type else _SSE_CONTENT_TYPE
        )
        headers += self.admitted.head(headers)
        relay = self._relay()
        # The client leaving starts the drain clock (_client_left), or has already.
        self.draining = True
        if self.left:
            self._start_drain()
        try:
            start = {"type": "http.response.start", "status": response.status, "headers": headers}
            await send(start)
            status, cut_short = await self._pump(send, response, relay)
        finally:
            self.draining = False
            if self.drain is not None:
                self.drain.cancel()
        usage, estimated, status = self._stream_usage(relay, status, cut_short)
        if isinstance(relay, PayloadTap):
            self._log_payloads(status, relay)
        # Recorded before the stream's end reaches the client (see the whole-response path).
        self._record(status=status, usage=usage, model=relay.model, estimated=estimated)
        if balancer is not None:
            if status < 300:
                self._answered(balancer, usage)
            elif balancer.fails_over_on_error(timed_out=False):
                balancer.failed(self.target_index)
        await self._send_chunk(send, b"", more=False)

    def _relay(self) -> StreamRelay:
        """The translator's relay of the stream (with the trace's and the payload log's taps)."""
        relay: StreamRelay = self.translator.stream(self.prepared)
        if self.policy.log_payloads:
            relay = PayloadTap(relay)  # what the client gets, capped, for the log
        return relay

    def _splitter(
        self, response: UpstreamResponse
    ) -> SseSplitter | eventstream.EventStreamSplitter | NdjsonSplitter:
        if eventstream.CONTENT_TYPE in response.content_type:
            return eventstream.EventStreamSplitter()
        if self.prepared.upstream_framing == "ndjson":
            return NdjsonSplitter()
        return SseSplitter()

    async def _pump(
        self, send: Send, response: UpstreamResponse, relay: StreamRelay
    ) -> tuple[int, bool]:
        """The stream's events, upstream to client; its status (502 if it broke) and whether
        the drain clock cut it short."""
        splitter = self._splitter(response)
        feed = relay.feed
        task = self.task
        # A sampled request's span reads its response id and finish reasons off the stream's
        # first and last outputs: noted per chunk sent (None otherwise).
        ends = None if self.trace is None else self.trace.stream_ends()
        try:
            async for chunk in response.iter_chunks():
                events = splitter.feed(chunk)
                if not events:
                    continue
                # One event per network chunk is the common case: no list, no join.
                out = (
                    feed(events[0])
                    if len(events) == 1
                    else b"".join([feed(event) for event in events])
                )
                if out:
                    if self.first_byte_ns is None:
                        self.first_byte_ns = time.perf_counter_ns()
                    if ends is not None:
                        ends.note(out)
                    await self._send_chunk(send, out)
            rest = splitter.flush()
            if rest:
                out = feed(rest)
                if out:
                    if ends is not None:
                        ends.note(out)
                    await self._send_chunk(send, out)
        except (UpstreamError, eventstream.EventStreamCorrupt) as exc:
            # The status line is gone already; end the stream and record the failure.
            logger.warning(
                "request %s: stream from %s broke: %s",
                self.request_id,
                self.policy.target.origin,
                type(exc).__name__,
            )
            return 502, False
        except asyncio.CancelledError:
            # The drain clock ran out (_drain_over), unless something else cancels too.
            if self.cancelling < 0 or task is None or task.uncancel() > self.cancelling:
                raise
            logger.warning(
                "request %s: client left; upstream %s did not finish within %.0f s",
                self.request_id,
                self.policy.target.origin,
                self.drain_timeout_s,
            )
            return response.status, True
        return response.status, False

    async def _send_chunk(self, send: Send, body: bytes, *, more: bool = True) -> None:
        """A chunk of the stream to the client; a stream's cost figures go beside its usage
        chunk (dataplane.admission.cost.Metering.body)."""
        metering = self.admitted.metering
        if metering.stream and metering.stream_figures:
            before = metering.body(body, more=more)
            if before is None:
                return  # held back
            if before:
                await send({"type": "http.response.body", "body": before, "more_body": True})
        await send({"type": "http.response.body", "body": body, "more_body": more})

    def _stream_usage(
        self, relay: StreamRelay, status: int, cut_short: bool
    ) -> tuple[TokenUsage | None, bool, int]:
        """What a relayed stream used (estimated: True when not all of it is the provider's
        count), and its status (an error inside the stream has its own)."""
        usage = relay.usage
        if status < 300:
            # An error inside the stream (Bedrock's exception frame, Anthropic's error event).
            status = stream_error_status(relay) or status
        if self.policy.route_type == ROUTE_TYPE_PRESERVE:
            return usage, False, status
        if status < 300 and usage is None:
            what = "stream cut short" if cut_short else "stream ended"
            return self._estimate(relay.produced_text(), what), True, status
        if (status >= 300 or cut_short) and not usage_settled(relay):
            # Broken, failed or abandoned mid-way: metered as far as it went, the part the
            # provider did not count estimated (translate.base.cut_stream_usage).
            produced = relay.produced_text()
            usage = cut_stream_usage(usage, document=self.prepared.document, produced=produced)
            return usage, True, status
        return usage, False, status

    def _upstream_failed(self, exc: BaseException) -> Rejection:
        """Record a failed upstream call; the Rejection (502 or 504) to answer with."""
        # Only the origin and error type are logged: the URL may carry a provider key.
        logger.warning(
            "request %s: upstream %s failed: %s",
            self.request_id,
            self.policy.target.origin,
            type(exc).__name__,
        )
        timed_out = isinstance(exc, TimeoutError)
        status = 504 if timed_out else 502
        self._record(status=status, usage=None, model=None, estimated=False)
        if isinstance(exc, UpstreamCredentialsError):
            return Rejection(
                502,
                f"The gateway could not authenticate to the upstream provider: {exc}",
                type="api_error",
                code="upstream_auth_failed",
            )
        if isinstance(exc, UpstreamTooLarge):
            return Rejection(
                502,
                f"The upstream provider's response is too large ({exc}).",
                type="api_error",
                code="upstream_response_too_large",
            )
        return Rejection(
            status,
            "The upstream provider timed out."
            if timed_out
            else "The upstream provider is unreachable.",
            type="api_error",
            code="upstream_timeout" if timed_out else "upstream_unavailable",
        )


class Abandoned(Exception):
    """The client left while the gateway waited for the provider (internal signal)."""


class _Gone(Exception):
    """The exchange ended without an answer: its client is gone (internal signal)."""


class _SignatureRefused(DataPlaneError):
    """AWS refused the gateway's signature twice, or (``unavailable``) no credentials could be
    resolved to sign with."""

    def __init__(self, reason: str, *, unavailable: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.unavailable = unavailable


def _signature_refusal(response: UpstreamResponse) -> str | None:
    """The AWS error name of a 403 that refuses the signature or credentials, else None."""
    if response.status != 403:
        return None
    for name, value in response.raw_headers:
        if name.lower() == b"x-amzn-errortype":
            error = value.split(b":", 1)[0]
            return error.decode("latin-1") if error in _SIGNATURE_REFUSALS else None
    return None


def _is_stream(content_type: str, prepared: Prepared) -> bool:
    if prepared.upstream_framing == "ndjson":
        # Ollama's native API streams newline-delimited JSON.
        return "ndjson" in content_type
    return "text/event-stream" in content_type or eventstream.CONTENT_TYPE in content_type


def _completion_text(body: bytes) -> str:
    """The text of a whole response as the client gets it (OpenAI choices, Anthropic content
    or Gemini candidates), for an estimate."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return ""
    if not isinstance(document, dict):
        return ""
    parts: list[str] = []
    for choice in document.get("choices") or ():
        if isinstance(choice, dict):
            message = choice.get("message")
            if isinstance(message, dict) and isinstance(message.get("content"), str):
                parts.append(message["content"])
            if isinstance(choice.get("text"), str):
                parts.append(choice["text"])
    for block in document.get("content") or ():
        if isinstance(block, dict) and isinstance(block.get("text"), str):
            parts.append(block["text"])
    parts.extend(candidate_texts(document))  # Gemini
    return "".join(parts)
