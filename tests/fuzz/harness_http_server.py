"""One fuzz input against a real ``_HttpConnection`` of the data plane's HTTP server.

The input is turned into a sequence of requests (heads, bodies in Content-Length or chunked
framing, chunk extensions, trailers), or fed as raw bytes, then split into random reads and
fed through a fake transport to a real protocol instance running a real ASGI app. Invariants:

- no exception escapes the protocol or the event loop, and every app task ends once the
  client has left (nothing is held);
- no state crosses requests: the ``apikey`` name only ever appears in trailers here, so an app
  that sees an ``apikey`` header got one from a previous request's trailers; every request the
  app sees has exactly one Host (HTTP/1.1) and a normalised path;
- limits hold: no head over 64 KiB reaches the app, no body over the app's limit is taken,
  at most ``max_requests_per_connection`` requests are served per connection.
"""

from __future__ import annotations

import asyncio
from typing import Any

from dataplane.http import server
from dataplane.http.asgi import ClientDisconnected, read_body, send_response

LIMITS = server.ServerLimits(max_requests_per_connection=8)
_BODY_LIMIT = 4096
_loop: asyncio.AbstractEventLoop | None = None


class FakeTransport(asyncio.Transport):
    """Records writes; close/abort report connection_lost on the next loop turn, once."""

    def __init__(self, loop: asyncio.AbstractEventLoop, protocol: asyncio.Protocol) -> None:
        super().__init__()
        self.loop, self.protocol = loop, protocol
        self.written = bytearray()
        self.closing = False
        self.paused = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8000)}.get(
            name, default
        )

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self.closing:
            self.written += data

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            self.loop.call_soon(self.protocol.connection_lost, None)

    def abort(self) -> None:
        self.close()

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False


class Seen:
    def __init__(self) -> None:
        self.scopes: list[dict[str, Any]] = []
        self.bodies: list[bytes] = []


def make_app(seen: Seen) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.scopes.append(scope)
        try:
            body = await read_body(receive, limit=_BODY_LIMIT)
        except ClientDisconnected:
            return
        except Exception:
            await send_response(send, 413, b"too large", [])
            return
        seen.bodies.append(body)
        await send_response(send, 200, b"%d" % len(body), [(b"content-type", b"text/plain")])

    return app


def build_requests(data: bytes) -> bytes:
    """Well-formed-ish requests drawn from ``data`` (so the fuzzer reaches bodies and trailers)."""
    out = bytearray()
    index = 0

    def take(n: int) -> bytes:
        nonlocal index
        piece = data[index : index + n]
        index += n
        return piece

    while index < len(data):
        control = take(1)[0] if index < len(data) else 0
        path = b"/" + take(control % 8).replace(b" ", b"%20").replace(b"\r", b"").replace(
            b"\n", b""
        )
        method = b"POST" if control & 0x10 else b"GET"
        out += method + b" " + path + b" HTTP/1.1\r\nHost: x\r\n"
        body = take((control >> 5) * 7)
        if control & 0x08:
            out += b"Transfer-Encoding: chunked\r\n\r\n"
            for start in range(0, len(body), 3):
                piece = body[start : start + 3]
                ext = b";e=" + bytes(x % 26 + 97 for x in take(control % 5)) if control & 1 else b""
                out += b"%x%s\r\n%s\r\n" % (len(piece), ext, piece)
            out += b"0\r\n"
            if control & 0x02:
                out += b"apikey: leaked-" + bytes(x % 26 + 97 for x in take(4)) + b"\r\n"
                if control & 0x04:
                    out += b"host: other\r\n"
            out += b"\r\n"
        else:
            out += b"Content-Length: %d\r\n\r\n" % len(body) + body
    return bytes(out)


async def drive(data: bytes) -> None:
    loop = asyncio.get_running_loop()
    if not data:
        return
    mode, data = data[0], data[1:]
    payload = build_requests(data) if mode & 1 else data
    seen = Seen()
    state = server._ServerState(make_app(seen), loop, LIMITS)
    state.stop_ticking()
    connection = server._HttpConnection(state)
    transport = FakeTransport(loop, connection)
    connection.connection_made(transport)
    step = (mode >> 1) % 16 + 1
    position = 0
    while position < len(payload) and not transport.closing:
        turns = 0
        while transport.paused and not transport.closing and turns < 20:
            await asyncio.sleep(0)
            turns += 1
        if transport.paused or transport.closing:
            break
        connection.data_received(payload[position : position + step])
        position += step
        await asyncio.sleep(0)
    for _ in range(5):
        await asyncio.sleep(0)
    # The client leaves: every app task must end.
    transport.close()
    for _ in range(50):
        if not state.tasks and not state.connections:
            break
        await asyncio.sleep(0)
    assert not state.tasks, "an app task outlived its connection"
    assert not state.connections, "a closed connection is still counted"
    assert not state.idle and not state.per_client, "cap bookkeeping leaked"
    assert len(seen.scopes) <= LIMITS.max_requests_per_connection
    for scope in seen.scopes:
        names = [name for name, _ in scope["headers"]]
        assert b"apikey" not in names or not mode & 1, "a trailer became a header"
        if scope["http_version"] == "1.1":
            assert names.count(b"host") == 1, names
        raw_path: bytes = scope["raw_path"]
        assert b"/../" not in raw_path + b"/" and b"/./" not in raw_path + b"/", raw_path
        assert sum(len(n) + len(v) for n, v in scope["headers"]) <= 64 * 1024
    assert all(len(body) <= _BODY_LIMIT for body in seen.bodies)


def test_one_input(data: bytes) -> None:
    global _loop
    if _loop is None:
        _loop = asyncio.new_event_loop()
        errors: list[dict[str, Any]] = []
        _loop.set_exception_handler(lambda loop, context: errors.append(context))
        _loop.errors = errors  # type: ignore[attr-defined]
    _loop.run_until_complete(drive(data))
    errors = _loop.errors  # type: ignore[attr-defined]
    if errors:
        context = errors[0]
        errors.clear()
        raise AssertionError(f"unhandled in the event loop: {context.get('message')}") from (
            context.get("exception")
        )
