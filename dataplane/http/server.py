"""Serving a raw ASGI app over HTTP/1.1 inside an existing event loop (CLI and tests alike).

The server is an ``asyncio.Protocol`` feeding ``httptools.HttpRequestParser`` (uvicorn's own
parser) and speaking ASGI 3 to the app the way uvicorn's httptools protocol does; it replaced
uvicorn because it costs less CPU per request (bench/http_server.py: 13 us against 23 us on a
trivial app, 1.77x the requests per second).
Per request: one scope dict, one ``_Cycle`` (its bound ``receive``/``send`` are the ASGI
callables) and one task running the app; nothing else is scheduled on the hot path.

What it does, as uvicorn does: keep-alive (HTTP/1.1 by default, HTTP/1.0 on request),
pipelined requests answered in order, ``Expect: 100-continue``, chunked request bodies,
chunked responses when the app gives no content-length, a cached ``date`` header, write flow
control, 500 when the app fails before answering, 400 on a malformed request, 431 on a request
head over 64 KiB, idle keep-alive connections closed after 5 s.
Hardened against hostile peers (``ServerLimits``, each a CLI flag; docs/limits.md): a request
head must arrive whole within ``header_timeout_s`` of its first byte and a body within
``body_timeout_s`` of its head (408, then close: trickling bytes never extend either clock),
at most ``max_requests_per_connection`` per connection, at most ``max_connections`` open
connections and ``max_connections_per_client`` per client address (the oldest idle one is
closed to make room; with none idle the new one is closed), an HTTP/1.1 request needs exactly
one Host (RFC 9112 section 3.2: 400 otherwise), trailers of a chunked body are dropped (never
headers of the next request) and a chunked body's framing (sizes, extensions, trailers) is
bounded by its payload. Paths are normalised (dataplane.http.paths: RFC 3986 dot segments,
unreserved escapes decoded; ``raw_path`` is the normalised form) and a path an upstream could
read as climbing out of its base is refused with 400. Upgrade requests (WebSocket)
are answered as plain HTTP, then the connection closes. Two differences: the status line and
headers of a response with a Content-Length go out with its first body chunk, in one write;
a stream (no Content-Length) is written once per turn of the event loop, its head, events and
last chunk joined when the app sends them in one step (uvicorn writes each message at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import http
import logging
import socket
import time
import urllib.parse
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol, cast

import httptools

from dataplane.http.asgi import DISCONNECTED, ON_DISCONNECT, Message, Receive, Scope, Send
from dataplane.http.paths import UnsafePath, normalize_path

logger = logging.getLogger(__name__)

_MAX_HEAD_BYTES = 64 * 1024
# A chunked body's framing (size lines, extensions, CRLFs, trailers) beyond its payload: at most
# this much plus _FRAMING_PER_BYTE bytes per payload byte ("1\r\nx\r\n" is 5 per byte).
_FRAMING_SLACK = 2 * _MAX_HEAD_BYTES
_FRAMING_PER_BYTE = 8
# Request body buffered beyond this pauses reading until the app receives it (uvicorn's
# HIGH_WATER_LIMIT).
_BODY_HIGH_WATER = 64 * 1024
# Bodies above this are written apart from the head rather than copied into one buffer.
_COALESCE_LIMIT = 64 * 1024

_ASGI = {"version": "3.0", "spec_version": "2.3"}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_CHUNKED = b"transfer-encoding: chunked\r\n"
_CLOSE = b"connection: close\r\n"
_KEEP_ALIVE = b"connection: keep-alive\r\n"
_LAST_CHUNK = b"0\r\n\r\n"
_FRAMING_HEADERS = frozenset({b"content-length", b"transfer-encoding", b"connection"})


def _status_line(code: int) -> bytes:
    try:
        phrase = http.HTTPStatus(code).phrase
    except ValueError:
        phrase = ""
    return f"HTTP/1.1 {code} {phrase}\r\n".encode()


_STATUS_LINES = {code: _status_line(code) for code in range(100, 600)}
_METHODS = {m.encode(): m for m in ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")}


def _error_response(status: int) -> bytes:
    body = http.HTTPStatus(status).phrase.encode()
    return b"".join(
        [
            _STATUS_LINES[status],
            b"content-type: text/plain; charset=utf-8\r\n",
            b"content-length: %d\r\n" % len(body),
            _CLOSE,
            b"\r\n",
            body,
        ]
    )


_BAD_REQUEST = _error_response(400)
_REQUEST_TIMEOUT = _error_response(408)
_HEAD_TOO_LARGE = _error_response(431)
_SERVER_ERROR_HEADERS = [
    (b"content-type", b"text/plain; charset=utf-8"),
    (b"content-length", b"21"),
    (b"connection", b"close"),
]


class AsgiApp(Protocol):
    """A raw ASGI 3 application."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None: ...


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """How long and how much a client may hold of the server (checked once a second).

    Every field is a data-plane CLI flag (dataplane/cli.py); docs/limits.md lists them.
    """

    # A request head must be complete this long after its first byte.
    header_timeout_s: float = 10.0
    # A request body must be complete this long after its head.
    body_timeout_s: float = 60.0
    # An idle keep-alive connection (nothing in flight, no byte of a next request) is closed.
    keep_alive_s: float = 5.0
    # Requests answered on one connection before it is closed (Connection: close on the last).
    max_requests_per_connection: int = 10_000
    # Open connections in all, and per client IP address; beyond either the oldest idle one
    # (of that client, for the second) is closed, or the new one when none is idle.
    max_connections: int = 10_000
    max_connections_per_client: int = 1_000

    def __post_init__(self) -> None:
        for name in ("header_timeout_s", "body_timeout_s", "keep_alive_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")
        for name in (
            "max_requests_per_connection",
            "max_connections",
            "max_connections_per_client",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")


DEFAULT_LIMITS = ServerLimits()


@dataclass(frozen=True, slots=True)
class ServerAddress:
    """Where a started server listens."""

    host: str
    port: int

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:8000``."""
        return f"http://{self.host}:{self.port}"


def split_host_port(value: str) -> tuple[str, int]:
    """Parse ``HOST:PORT`` (``[::1]:PORT`` for IPv6)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


@contextlib.asynccontextmanager
async def serve_http(
    app: AsgiApp,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    graceful_shutdown_s: int = 5,
    reuse_port: bool = False,
    limits: ServerLimits = DEFAULT_LIMITS,
) -> AsyncIterator[ServerAddress]:
    """Serve ``app`` over HTTP/1.1 (httptools parser, no access log) until the block exits.

    ``port=0`` picks a free port; the yielded address tells which. The socket is bound and
    listening before this yields, so callers may connect at once. ``reuse_port`` lets
    several processes listen on one port, the kernel spreading connections among them.
    On exit the server stops listening, closes idle connections, lets requests in flight
    finish for up to ``graceful_shutdown_s`` seconds, then cuts what remains.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    try:
        state = _ServerState(app, asyncio.get_running_loop(), limits)
        try:
            listener = await state.loop.create_server(
                lambda: _HttpConnection(state), sock=sock, backlog=2048
            )
        except BaseException:
            state.stop_ticking()
            raise
        try:
            yield ServerAddress(host=host, port=sock.getsockname()[1])
        finally:
            await state.shutdown(listener, graceful_shutdown_s)
    finally:
        sock.close()


class _ServerState:
    """What the connections of one server share: the app, the date header, the live set."""

    __slots__ = (
        "_drained",
        "_timer",
        "app",
        "closing",
        "connections",
        "date_line",
        "idle",
        "limits",
        "loop",
        "per_client",
        "tasks",
    )

    def __init__(
        self, app: AsgiApp, loop: asyncio.AbstractEventLoop, limits: ServerLimits = DEFAULT_LIMITS
    ) -> None:
        self.app = app
        self.loop = loop
        self.limits = limits
        self.connections: set[_HttpConnection] = set()
        # Connections with no request in flight, oldest idle first (dicts keep insertion
        # order): the first to go when a cap is reached.
        self.idle: dict[_HttpConnection, None] = {}
        # Per client address: its open connections and, among them, the idle ones in order.
        self.per_client: dict[str, tuple[list[int], dict[_HttpConnection, None]]] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.closing = False
        self.date_line = b""
        self._drained: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.tick()

    def tick(self) -> None:
        """Refresh the date header and enforce the timeouts, once a second."""
        now = time.time()
        self.date_line = b"date: %s\r\n" % email.utils.formatdate(now, usegmt=True).encode()
        limits = self.limits
        loop_now = self.loop.time()
        idle_cut = loop_now - limits.keep_alive_s
        head_cut = loop_now - limits.header_timeout_s
        body_cut = loop_now - limits.body_timeout_s
        for connection in [
            c
            for c in self.connections
            if 0 < c.head_since <= head_cut
            or (0 < c.body_since <= body_cut and not c.reading_paused)
            or (0 < c.idle_since <= idle_cut and not c.head_since)
        ]:
            connection.timed_out(head_cut, body_cut)
        # Just past the next wall-clock second, so the date header never lags by more.
        self._timer = self.loop.call_later(1.001 - now % 1.0, self.tick)

    def admit(self, connection: _HttpConnection) -> bool:
        """Count a new connection in; close the oldest idle one(s) over a cap, or refuse it."""
        limits = self.limits
        key = connection.client[0] if connection.client else ""
        entry = self.per_client.get(key)
        if entry is None:
            entry = self.per_client[key] = ([0], {})
        count, client_idle = entry
        if count[0] >= limits.max_connections_per_client:
            if not client_idle:
                return False
            next(iter(client_idle)).evict()
        if len(self.connections) >= limits.max_connections:
            if not self.idle:
                return False
            next(iter(self.idle)).evict()
        count[0] += 1
        self.connections.add(connection)
        return True

    def release(self, connection: _HttpConnection) -> None:
        """A connection admitted by ``admit`` is gone."""
        self.connections.discard(connection)
        self.idle.pop(connection, None)
        key = connection.client[0] if connection.client else ""
        entry = self.per_client.get(key)
        if entry is not None:
            entry[1].pop(connection, None)
            entry[0][0] -= 1
            if entry[0][0] <= 0:
                del self.per_client[key]

    def stop_ticking(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def maybe_drained(self) -> None:
        """Tell a shutdown waiting for the last connection and task that they are gone."""
        drained = self._drained
        if drained is not None and not self.connections and not self.tasks and not drained.done():
            drained.set_result(None)

    async def shutdown(self, listener: asyncio.AbstractServer, grace_s: float) -> None:
        """Stop listening, close idle connections, give requests in flight ``grace_s``."""
        self.closing = True
        listener.close()
        self.stop_ticking()
        self._drained = self.loop.create_future()
        for connection in list(self.connections):
            connection.shutdown()
        self.maybe_drained()
        try:
            async with asyncio.timeout(grace_s):
                await self._drained
        except TimeoutError:
            logger.warning(
                "cutting %d connection(s) and %d request(s) still running after %s s",
                len(self.connections),
                len(self.tasks),
                grace_s,
            )
            for connection in list(self.connections):
                connection.transport.abort()
            tasks = list(self.tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            # abort() reports connection_lost on a later loop turn; wait for it so every
            # socket is closed before the loop may be.
            self._drained = self.loop.create_future()
            self.maybe_drained()
            async with asyncio.timeout(1.0):
                await self._drained
        await listener.wait_closed()


class _HttpConnection(asyncio.Protocol):
    """One client connection: parses requests, runs one ``_Cycle`` at a time, in order."""

    __slots__ = (
        "admitted",
        "body_since",
        "client",
        "client_idle",
        "closed",
        "drain_waiters",
        "error",
        "expect_100",
        "framing",
        "head_bytes",
        "head_received",
        "head_since",
        "headers",
        "heads_seen",
        "hosts",
        "idle_since",
        "loop",
        "max_requests",
        "parser",
        "parsing",
        "pipeline",
        "reading_paused",
        "running",
        "server",
        "sockname",
        "state",
        "transport",
        "url",
        "write_paused",
    )

    def __init__(self, state: _ServerState) -> None:
        self.state = state
        self.loop = state.loop
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.parser = httptools.HttpRequestParser(self)
        # Answer a request that says "Connection: close" even if more bytes follow it.
        self.parser.set_dangerous_leniencies(lenient_data_after_close=True)
        self.sockname: tuple[str, int] | None = None
        self.client: tuple[str, int] | None = None
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.expect_100 = False
        self.head_bytes = 0  # url + headers of the request being parsed, exact
        self.head_received = 0  # bytes fed while no head completed (a head sent byte by byte)
        self.heads_seen = 0
        self.parsing: _Cycle | None = None  # the request whose body is being parsed
        self.running: _Cycle | None = None  # the request whose app runs / response is written
        self.pipeline: deque[_Cycle] = deque()
        self.reading_paused = False
        self.write_paused = False
        self.drain_waiters: list[asyncio.Future[None]] | None = None
        self.error: bytes | None = None  # what to write before closing, once in-flight ends
        self.closed = False
        self.idle_since = 0.0  # loop time since when nothing is in flight; 0: busy
        # Loop time of the first byte of a request head not yet complete (0: none), and of
        # the head of a request whose body is still arriving (0: none). Bytes arriving later
        # never move either: a client trickling one byte at a time is cut all the same.
        self.head_since = 0.0
        self.body_since = 0.0
        self.framing = 0  # bytes of the body being parsed that were not payload
        self.hosts = 0  # Host headers of the head being parsed
        self.admitted = False
        self.client_idle: dict[_HttpConnection, None] | None = None
        self.max_requests = state.limits.max_requests_per_connection

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but quack like one.
        self.transport = transport = cast(asyncio.Transport, transport)
        sockname = transport.get_extra_info("sockname")
        peername = transport.get_extra_info("peername")
        self.sockname = (sockname[0], sockname[1]) if sockname else None
        self.client = (peername[0], peername[1]) if peername else None
        state = self.state
        if not state.admit(self):
            # Over a cap with nobody idle to make room: this one goes at once.
            self.closed = True
            transport.abort()
            return
        self.admitted = True
        entry = state.per_client.get(self.client[0] if self.client else "")
        self.client_idle = entry[1] if entry is not None else None
        self._set_idle()
        if state.closing:
            transport.close()

    def _set_idle(self) -> None:
        self.idle_since = self.loop.time()
        self.state.idle[self] = None
        if self.client_idle is not None:
            self.client_idle[self] = None

    def _set_busy(self) -> None:
        if self.idle_since:
            self.idle_since = 0.0
            self.state.idle.pop(self, None)
            if self.client_idle is not None:
                self.client_idle.pop(self, None)

    def evict(self) -> None:
        """Closed to make room for a newer connection (a cap was reached)."""
        self._set_busy()
        if self.admitted:  # uncounted at once: the cap holds before connection_lost runs
            self.admitted = False
            self.state.release(self)
        self.transport.abort()

    def timed_out(self, head_cut: float, body_cut: float) -> None:
        """A timeout of ``ServerLimits`` ran out (see _ServerState.tick)."""
        if self.closed:
            return
        if 0 < self.body_since <= body_cut:
            # The body did not arrive in time: the request is not served (its app sees the
            # client leave), 408 if nothing was answered yet.
            self.body_since = 0.0
            running = self.running
            if running is not None and not running.started:
                self.transport.write(_REQUEST_TIMEOUT)
            for cycle in (running, self.parsing):
                if cycle is not None:
                    cycle.disconnect()  # the app sees the client leave; what it sends is dropped
            self.transport.close()
        elif 0 < self.head_since <= head_cut:
            self.head_since = 0.0
            self._fail(_REQUEST_TIMEOUT)
        else:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._set_busy()
        self.head_since = self.body_since = 0.0
        for cycle in (self.running, self.parsing, *self.pipeline):
            if cycle is not None:
                cycle.disconnect()
        self.pipeline.clear()
        self.running = self.parsing = None
        self._wake_drain()
        if self.admitted:
            self.admitted = False
            self.state.release(self)
        self.state.maybe_drained()

    def data_received(self, data: bytes) -> None:
        if self.error is not None:
            return  # the request stream is broken or upgraded: nothing more is parsed
        try:
            parsing = self.parsing
            if parsing is None:
                if not self.head_since:
                    self.head_since = self.loop.time()
                seen = self.heads_seen
                self.parser.feed_data(data)
                if self.parsing is None and seen == self.heads_seen:
                    self.head_received += len(data)
                    if self.head_received > _MAX_HEAD_BYTES:
                        self._fail(_HEAD_TOO_LARGE)
            else:
                before = parsing.received
                self.parser.feed_data(data)
                # Bytes that were not payload: chunk sizes, extensions, trailers (and perhaps
                # the start of the next request). llhttp skips extensions without a limit.
                self.framing += len(data) - (parsing.received - before)
                if self.framing > _FRAMING_SLACK + _FRAMING_PER_BYTE * parsing.received:
                    self._fail(_BAD_REQUEST)
        except httptools.HttpParserUpgrade:
            # Answered as plain HTTP (the app 404s it); what follows is not HTTP: close after.
            if self.parsing is not None:
                self.parsing.more_body = False
                self.parsing = None
            self._fail(b"")
        except httptools.HttpParserError:
            self._fail(_HEAD_TOO_LARGE if self.head_bytes > _MAX_HEAD_BYTES else _BAD_REQUEST)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._wake_drain()

    # httptools callbacks (on_message_begin is left out: state resets on completion instead)

    def on_url(self, url: bytes) -> None:
        self.url += url
        self.head_bytes += len(url)
        if self.head_bytes > _MAX_HEAD_BYTES:
            raise _HeadTooLarge

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.parsing is not None:
            # A trailer of the chunked body being parsed: dropped. Appended to ``headers`` it
            # would become a header of the NEXT request (an apikey, an Authorization).
            return
        self.head_bytes += len(name) + len(value) + 4
        if self.head_bytes > _MAX_HEAD_BYTES:
            raise _HeadTooLarge
        name = name.lower()
        if name == b"host":
            self.hosts += 1
        elif name == b"expect" and value.lower() == b"100-continue":
            self.expect_100 = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self.parser
        version = parser.get_http_version()
        hosts, self.hosts = self.hosts, 0
        # RFC 9112 section 3.2: 400 to an HTTP/1.1 request without a Host, and to any with two.
        if hosts > 1 or (hosts == 0 and version != "1.0"):
            raise _BadHead
        self.heads_seen += 1
        self.head_received = self.head_bytes = 0
        self.head_since = 0.0
        url = self.url
        self.url = b""
        # ``find`` and str ``in``, not bytes ``in``: that one first tries its operand as an int
        # (a TypeError raised and cleared, ~1k instructions each).
        if url[:1] == b"/" and url.find(b"#") == -1:
            raw_path, _, query = url.partition(b"?")
        else:  # absolute-form, or a fragment to drop
            parsed = httptools.parse_url(url)
            raw_path, query = parsed.path or b"/", parsed.query or b""
        path = raw_path.decode("latin-1")
        if "%" in path or "/." in path or "\\" in path or "\x00" in path:
            try:
                raw_path = normalize_path(raw_path)
            except UnsafePath:
                raise _BadHead from None
            path = raw_path.decode("latin-1")
            if "%" in path:
                path = urllib.parse.unquote(path)
        method = parser.get_method()
        scope = {
            "type": "http",
            "asgi": _ASGI,
            "http_version": version,
            "server": self.sockname,
            "client": self.client,
            "scheme": "http",
            "method": _METHODS.get(method) or method.decode("ascii"),
            "root_path": "",
            "path": path,
            "raw_path": raw_path,
            "query_string": query,
            "headers": self.headers,
        }
        self.headers = []
        keep_alive = parser.should_keep_alive() and not parser.should_upgrade()
        if self.heads_seen >= self.max_requests:
            keep_alive = False  # the last one: answered with Connection: close
        cycle = _Cycle(self, scope, keep_alive, version == "1.0", self.expect_100)
        self.expect_100 = False
        self.parsing = cycle
        self.framing = 0
        self.body_since = self.loop.time()
        if self.running is None:
            self._start(cycle)
        else:
            self.pipeline.append(cycle)
            self._pause_reading()

    def on_body(self, body: bytes) -> None:
        cycle = self.parsing
        if cycle is None or cycle.complete:
            return  # answered already: the rest of the body is skipped
        cycle.chunks.append(body)
        cycle.buffered += len(body)
        cycle.received += len(body)
        if cycle.buffered > _BODY_HIGH_WATER:
            self._pause_reading()
        cycle.wake()

    def on_message_complete(self) -> None:
        self.body_since = 0.0
        cycle = self.parsing
        if cycle is not None:
            self.parsing = None
            cycle.more_body = False
            cycle.wake()

    # the connection's own steps

    def _start(self, cycle: _Cycle) -> None:
        self._set_busy()
        self.running = cycle
        cycle.task = task = self.loop.create_task(cycle.run())
        self.state.tasks.add(task)

    def response_done(self, cycle: _Cycle) -> None:
        """``cycle`` wrote its whole response: start the next request, or go idle or close."""
        self.running = None
        cycle.chunks.clear()
        cycle.buffered = 0
        if self.closed:
            return
        if not cycle.keep_alive:
            self.transport.close()
        elif self.pipeline:
            self._start(self.pipeline.popleft())
            self.maybe_resume_reading()
        elif self.error is not None:
            if self.error:
                self.transport.write(self.error)
            self.transport.close()
        else:
            self.maybe_resume_reading()
            if self.parsing is None:
                self._set_idle()

    def _fail(self, response: bytes) -> None:
        """The request stream is unusable: answer ``response`` and close, after in-flight."""
        self.error = response
        self._pause_reading()
        running, parsing = self.running, self.parsing
        if parsing is not None and parsing is not running:
            # The broken request is the last one queued: it is not answered; those before are.
            self.pipeline.pop()
            parsing = self.parsing = None
        if running is None or parsing is running:
            # Nothing in flight, or the broken request is the one in flight: close now.
            if response and (running is None or not running.started):
                self.transport.write(response)
            self.transport.close()

    def shutdown(self) -> None:
        """Server shutdown: close if idle, else close once the request in flight is answered."""
        running = self.running
        if running is None:
            self.transport.close()
        else:
            running.keep_alive = False
            self.pipeline.clear()

    def _pause_reading(self) -> None:
        if not self.reading_paused and not self.closed:
            self.reading_paused = True
            self.transport.pause_reading()

    def maybe_resume_reading(self) -> None:
        """Read again unless requests are queued, the stream is broken or a body piles up."""
        if self.reading_paused and not self.pipeline and self.error is None and not self.closed:
            parsing = self.parsing
            if parsing is None or parsing.buffered <= _BODY_HIGH_WATER:
                self.reading_paused = False
                self.transport.resume_reading()
                if self.body_since:
                    # The body clock runs only while the server reads: restart it.
                    self.body_since = self.loop.time()

    async def drain(self) -> None:
        """Wait until the transport's write buffer drains (or the client leaves)."""
        waiter = self.loop.create_future()
        if self.drain_waiters is None:
            self.drain_waiters = [waiter]
        else:
            self.drain_waiters.append(waiter)
        await waiter

    def _wake_drain(self) -> None:
        waiters = self.drain_waiters
        if waiters:
            self.drain_waiters = None
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)


class _HeadTooLarge(Exception):
    """The request line and headers exceed _MAX_HEAD_BYTES (raised inside the parser)."""


class _BadHead(Exception):
    """A request head the server refuses with 400 (raised inside the parser)."""


class _Cycle:
    """One request and its response; ``receive`` and ``send`` are the app's ASGI callables."""

    __slots__ = (
        "buffered",
        "chunked",
        "chunks",
        "complete",
        "conn",
        "disconnected",
        "drained",
        "expect_100",
        "flush_scheduled",
        "head",
        "http10",
        "keep_alive",
        "more_body",
        "no_body",
        "pending",
        "received",
        "remaining",
        "scope",
        "started",
        "task",
        "waiters",
    )

    def __init__(
        self,
        conn: _HttpConnection,
        scope: Scope,
        keep_alive: bool,
        http10: bool,
        expect_100: bool,
    ) -> None:
        self.conn = conn
        self.scope = scope
        self.keep_alive = keep_alive
        self.http10 = http10
        self.expect_100 = expect_100
        self.task: asyncio.Task[None] | None = None
        # request
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.received = 0  # body bytes parsed in all
        self.more_body = True
        self.drained = False  # the last http.request message went out
        self.waiters: list[asyncio.Future[None]] | None = None
        self.disconnected = False
        # response
        self.started = False
        self.complete = False
        self.head: bytes | None = None  # status line + headers, written with the first body
        # A stream's bytes not yet written: everything one step of the app sends goes out in
        # one write at the end of the loop's turn (see flush).
        self.pending: list[bytes] | None = None
        self.flush_scheduled = False
        self.chunked = False
        self.no_body = False
        self.remaining = -1  # content-length still to send; -1: none given

    async def run(self) -> None:
        """Run the app for this request; answer 500 or close if it fails."""
        try:
            await self.conn.state.app(self.scope, self.receive, self.send)
        except asyncio.CancelledError:
            # Cut by the server's shutdown: the response, if any, cannot finish.
            if not self.complete:
                self.conn.transport.abort()
        except Exception as exc:
            logger.error("Exception in ASGI application", exc_info=exc)
            if not self.started:
                await self._send_500()
            else:
                self.flush()  # what the app sent before failing still reaches the client
                self.conn.transport.close()
        else:
            if not self.started:
                if not self.disconnected:
                    logger.error("ASGI callable returned without starting response.")
                    await self._send_500()
            elif not self.complete and not self.disconnected:
                logger.error("ASGI callable returned without completing response.")
                self.flush()
                self.conn.transport.close()
        finally:
            state = self.conn.state
            state.tasks.discard(self.task)
            if state.closing:
                state.maybe_drained()

    async def _send_500(self) -> None:
        await self.send(
            {"type": "http.response.start", "status": 500, "headers": _SERVER_ERROR_HEADERS}
        )
        await self.send({"type": "http.response.body", "body": b"Internal Server Error"})

    def wake(self) -> None:
        """Wake the app's pending ``receive`` calls."""
        waiters = self.waiters
        if waiters:
            self.waiters = None
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def disconnect(self) -> None:
        if not self.complete:
            self.disconnected = True
            self.scope[DISCONNECTED] = True
            hook = self.scope.get(ON_DISCONNECT)
            if hook is not None:
                self.scope[ON_DISCONNECT] = None
                hook()
        self.wake()

    async def receive(self) -> Message:
        """The next ``http.request`` message; once the body is all read, wait for the
        client to leave or the response to complete, then ``http.disconnect``."""
        if self.expect_100:
            self.expect_100 = False
            if self.more_body and not self.chunks and not self.conn.closed:
                self.conn.transport.write(_CONTINUE)
        while not (self.disconnected or self.complete):
            chunks = self.chunks
            if chunks or not (self.more_body or self.drained):
                body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                chunks.clear()
                more_body = self.more_body
                self.drained = not more_body
                if self.buffered > _BODY_HIGH_WATER:
                    self.buffered = 0
                    self.conn.maybe_resume_reading()
                else:
                    self.buffered = 0
                return {"type": "http.request", "body": body, "more_body": more_body}
            conn = self.conn
            if conn.reading_paused:
                conn.maybe_resume_reading()  # to see more body, or the client leaving
            waiter = conn.loop.create_future()
            if self.waiters is None:
                self.waiters = [waiter]
            else:
                self.waiters.append(waiter)
            await waiter
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        """Send ``http.response.start`` then ``http.response.body`` messages."""
        conn = self.conn
        if conn.write_paused and not self.disconnected:
            await conn.drain()
        if self.disconnected:
            return  # the client left: like uvicorn, drop what the app still sends
        if not self.started:
            if message["type"] != "http.response.start":
                raise RuntimeError(
                    f"Expected ASGI message 'http.response.start', but got '{message['type']}'."
                )
            self._start_response(message)
            return
        if self.complete:
            raise RuntimeError(
                f"Unexpected ASGI message '{message['type']}' sent, after response already "
                "completed."
            )
        if message["type"] != "http.response.body":
            raise RuntimeError(
                f"Expected ASGI message 'http.response.body', but got '{message['type']}'."
            )
        body: bytes = message.get("body", b"")
        more_body: bool = message.get("more_body", False)
        pending = self.pending
        if pending is None:
            self._write_body(body, more_body)
            return
        # A stream: its head and chunks wait in ``pending`` for the flush at the end of this
        # turn of the loop, or for the last chunk, whichever comes first.
        if body:
            if self.chunked:
                pending += (b"%x\r\n" % len(body), body, b"\r\n")
            else:
                pending.append(body)
        if more_body:
            if not self.flush_scheduled:
                self.flush_scheduled = True
                conn.loop.call_soon(self.flush)
            return
        if self.chunked:
            pending.append(_LAST_CHUNK)
        self.pending = None
        conn.transport.write(b"".join(pending))
        self.complete = True
        self.wake()
        conn.response_done(self)

    def _write_body(self, body: bytes, more_body: bool) -> None:
        """A body message of a response that is not a stream: written now, the first one
        with the head (in one write when small), within the Content-Length if one was given."""
        conn = self.conn
        head = self.head
        self.head = None
        if self.no_body:
            data = head or b""
        else:
            if self.remaining >= 0:
                if len(body) > self.remaining:
                    raise RuntimeError("Response content longer than Content-Length")
                self.remaining -= len(body)
            if head is None:
                data = body
            elif len(body) <= _COALESCE_LIMIT:
                data = head + body
            else:
                conn.transport.write(head)
                data = body
        if data:
            conn.transport.write(data)
        if not more_body:
            if self.remaining > 0:
                raise RuntimeError("Response content shorter than Content-Length")
            self.complete = True
            self.wake()
            conn.response_done(self)

    def _start_response(self, message: Message) -> None:
        status: int = message["status"]
        lines = [_STATUS_LINES[status], self.conn.state.date_line]
        headers = message.get("headers", ())
        if type(headers) is not list:
            headers = list(headers)  # any iterable of pairs (ASGI); counted below
        framing: list[tuple[bytes, bytes]] = []
        for name, value in headers:
            lines += (name, b": ", value, b"\r\n")
            # One set lookup per header; the framing ones (content-length, mostly) apart.
            if name.lower() in _FRAMING_HEADERS:
                framing.append((name.lower(), value))
        self._frame(status, framing, lines)
        lines.append(b"\r\n")
        head = b"".join(lines)
        # One pass instead of a regex per header: a CR or LF inside a name or value would
        # split the response.
        line_count = len(lines) - 3 * len(headers)
        if head.count(b"\n") != line_count or head.count(b"\r") != line_count:
            raise RuntimeError("Invalid HTTP header name or value.")
        self.started = True
        self.expect_100 = False
        if not self.no_body and self.remaining < 0:
            # A stream (chunked or close-delimited): its head goes out at the end of this turn
            # of the loop, so the client has the status before the first event, which a slow
            # model may take long to produce; events the app sends in the same turn join it.
            self.pending = [head]
            self.flush_scheduled = True
            self.conn.loop.call_soon(self.flush)
        else:
            self.head = head

    def _frame(self, status: int, framing: list[tuple[bytes, bytes]], lines: list[bytes]) -> None:
        """How the response's body is delimited (no body, a length, chunks, the connection's
        end) and whether the connection stays open, by its status and framing headers; the
        header lines that says so appended to ``lines``."""
        length = -1
        chunked = close = False
        for lower, value in framing:
            if lower == b"content-length":
                length = int(value)
            elif lower == b"transfer-encoding":
                chunked = value.lower() == b"chunked"
            else:
                close = value.lower().find(b"close") != -1
        if close:
            self.keep_alive = False
        if self.scope["method"] == "HEAD" or status in (204, 304) or status < 200:
            self.no_body = True
        elif length >= 0 and not chunked:
            self.remaining = length
        elif chunked:
            self.chunked = True
        elif self.http10:
            self.keep_alive = False  # close-delimited
        else:
            self.chunked = True
            lines.append(_CHUNKED)
        if not self.keep_alive:
            if not close:
                lines.append(_CLOSE)
        elif self.http10:
            lines.append(_KEEP_ALIVE)

    def flush(self) -> None:
        """Write what a stream sent since the last flush (scheduled by ``send``).

        One write(2) per turn of the loop instead of one per message: a model's stream that
        arrives whole (head, every event and the last chunk in one read from the provider)
        costs one write instead of three, and a slow one still goes out event by event.
        """
        self.flush_scheduled = False
        pending = self.pending
        if not pending:
            return  # the last chunk took everything with it
        if self.disconnected or self.conn.closed:
            pending.clear()
            return
        self.conn.transport.write(b"".join(pending))
        pending.clear()
