"""The few ASGI types and helpers the raw ASGI apps share (no framework on the hot path)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from dataplane.errors import DataPlaneError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

JSON_CONTENT_TYPE = (b"content-type", b"application/json")
# A scope key the app may set to a callable: the server calls it once, at once, when the
# client disconnects before the response completed (dataplane.http.server). Cheaper than a
# task waiting on ``receive`` for every request that wants to stop work nobody will read.
ON_DISCONNECT = "meterline.on_disconnect"
# A scope key the server sets to True when the client disconnected before the response
# completed: an app that sets ON_DISCONNECT late tells by it that the client already left.
DISCONNECTED = "meterline.disconnected"


class BodyTooLarge(DataPlaneError):
    """The request body exceeds the configured limit."""


class ClientDisconnected(DataPlaneError):
    """The client left before its whole request body arrived (nobody to answer)."""


async def read_body(receive: Receive, *, limit: int) -> bytes:
    """Read the whole request body; raise BodyTooLarge past ``limit`` bytes.

    Raises ClientDisconnected if the client leaves first: a truncated body (a connection
    half-closed before its Content-Length) is never taken for a whole one.
    """
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # http.disconnect before the body's end
            raise ClientDisconnected
        chunk: bytes = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def send_response(send: Send, status: int, body: bytes, headers: Headers) -> None:
    """Send a complete response; ``headers`` must not contain content-length."""
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
