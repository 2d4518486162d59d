"""One fuzz input as a provider's response to the data plane's upstream client.

The input's first byte picks how the response is split into reads and whether it is read
whole or as a stream; the rest is the provider's bytes, optionally behind a generated head
(Content-Length or chunked framing, gzip or deflate encoding) so the fuzzer reaches bodies and
the decoders. Invariants: only ``UpstreamError`` subclasses come out of the client, nothing is
left unhandled in the loop, a whole body never exceeds ``max_response_bytes``, a streamed read
never yields more than one decode step beyond the high-water mark, and a connection is pooled
only reading (never paused).
"""

from __future__ import annotations

import asyncio
import zlib
from typing import Any

from dataplane.http import client

_MAX_RESPONSE = 256 * 1024
_loop: asyncio.AbstractEventLoop | None = None


class FakeTransport(asyncio.Transport):
    def __init__(self, loop: asyncio.AbstractEventLoop, protocol: asyncio.Protocol) -> None:
        super().__init__()
        self.loop, self.protocol = loop, protocol
        self.closing = False
        self.paused = False
        self.written = bytearray()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def write(self, data: bytes | bytearray | memoryview) -> None:
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


def shape(mode: int, data: bytes) -> bytes:
    """The provider's bytes: ``data`` raw, or ``data`` as the body behind a generated head."""
    if mode & 0x03 == 0:
        return data
    body = data
    encoding = b""
    if mode & 0x04:
        body, encoding = zlib.compress(body * (1 + (mode >> 5) * 64)), b"deflate"
    elif mode & 0x08:
        compressor = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        body = compressor.compress(data * (1 + (mode >> 5) * 64)) + compressor.flush()
        encoding = b"gzip"
    head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
    if encoding:
        head += b"content-encoding: " + encoding + b"\r\n"
    if mode & 0x03 == 1:
        return head + b"content-length: %d\r\n\r\n" % len(body) + body
    if mode & 0x03 == 2:
        framed = b"".join(
            b"%x\r\n%s\r\n" % (len(body[i : i + 7]), body[i : i + 7])
            for i in range(0, len(body), 7)
        )
        return head + b"transfer-encoding: chunked\r\n\r\n" + framed + b"0\r\n\r\n"
    return head + b"\r\n" + body  # close-delimited


async def drive(data: bytes) -> None:
    if len(data) < 2:
        return
    mode, split, data = data[0], data[1], data[2:]
    loop = asyncio.get_running_loop()
    pool = client.Pool(
        "http://fuzz:80",
        limit=4,
        keepalive_s=30.0,
        ssl_context=None,
        max_response_bytes=_MAX_RESPONSE,
    )
    connection = client._Connection(pool)
    transport = FakeTransport(loop, connection)
    connection.connection_made(transport)
    pool._open.add(connection)
    payload = shape(mode, data)
    head = connection.send(b"GET / HTTP/1.1\r\n\r\n", sock_read=None, head_request=False)
    step = split % 64 + 1

    async def feed() -> None:
        position = 0
        while position < len(payload) and not transport.closing:
            turns = 0
            while transport.paused and not transport.closing and turns < 50:
                await asyncio.sleep(0)
                turns += 1
            if transport.paused:
                return  # the reader stopped reading; the exchange ends with the reader
            connection.data_received(payload[position : position + step])
            position += step
            await asyncio.sleep(0)
        if not transport.closing:
            transport.close()  # the provider closes after its bytes

    feeder = asyncio.create_task(feed())
    try:
        try:
            response = await asyncio.wait_for(head, 5)
        except client.UpstreamError:
            return
        try:
            if mode & 0x10:
                async for chunk in response.iter_chunks():
                    assert len(chunk) <= 2 * 256 * 1024 + 65536, len(chunk)
            else:
                body = await response.read()
                assert len(body) <= _MAX_RESPONSE, len(body)
        except client.UpstreamError:
            return
        finally:
            response.release()
        for idle in pool._idle:
            assert not idle.transport.paused, "a connection went back to the pool paused"  # type: ignore[union-attr]
    finally:
        feeder.cancel()
        await asyncio.gather(feeder, return_exceptions=True)
        await pool.aclose()


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
