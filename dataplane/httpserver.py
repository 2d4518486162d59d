"""Running a raw ASGI app on uvicorn inside an existing event loop (CLI and tests alike)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

import uvicorn

from dataplane.asgi import Receive, Scope, Send


class AsgiApp(Protocol):
    """A raw ASGI 3 application."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None: ...


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
) -> AsyncIterator[ServerAddress]:
    """Serve ``app`` on uvicorn (httptools, no access log) until the block exits.

    ``port=0`` picks a free port; the yielded address tells which. The socket is bound and
    listening before this yields, so callers may connect at once. ``reuse_port`` lets
    several processes listen on one port, the kernel spreading connections among them.
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
    config = uvicorn.Config(
        app,
        loop="none",  # the caller's loop (uvloop in the CLI) runs the server
        http="httptools",
        ws="none",
        lifespan="off",
        access_log=False,
        server_header=False,
        # The gateway never reads client addresses or X-Forwarded-*; uvicorn's
        # ProxyHeadersMiddleware would still wrap (and cost) every request.
        proxy_headers=False,
        log_config=None,
        timeout_graceful_shutdown=graceful_shutdown_s,
    )
    server = uvicorn.Server(config)
    config.load()
    server.lifespan = config.lifespan_class(config)
    try:
        await server.startup(sockets=[sock])
        ticker = asyncio.create_task(_tick(server))
        try:
            yield ServerAddress(host=host, port=sock.getsockname()[1])
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
            await server.shutdown(sockets=[sock])
    finally:
        sock.close()


async def _tick(server: uvicorn.Server) -> None:
    """Keep uvicorn's cached Date header fresh (what its own main loop would do)."""
    while True:
        await server.on_tick(0)
        await asyncio.sleep(1.0)
