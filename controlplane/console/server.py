"""The console's HTTP server: uvicorn inside the control plane's event loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path

import uvicorn

from controlplane.console.app import Console


class _Server(uvicorn.Server):
    """The control plane owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class ConsoleServer:
    """Serves a ``Console`` on ``listen``; TLS when a certificate and key are given."""

    def __init__(
        self,
        console: Console,
        listen: str,
        *,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
    ) -> None:
        host, _, port = listen.rpartition(":")
        config = uvicorn.Config(
            console,
            host=host or "127.0.0.1",
            port=int(port),
            lifespan="off",
            ws="none",
            log_level="warning",
            # No access log: URLs carry no tokens, but one line per page is noise here.
            access_log=False,
            ssl_certfile=str(tls_cert) if tls_cert else None,
            ssl_keyfile=str(tls_key) if tls_key else None,
        )
        self._server = _Server(config)
        self._task: asyncio.Task[None] | None = None
        self.port = 0
        self.scheme = "https" if tls_cert else "http"

    async def start(self) -> int:
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                raise OSError(f"cannot listen on {self._server.config.host} (console)")
            await asyncio.sleep(0.01)
        self.port = int(self._server.servers[0].sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        if self._task is not None:
            self._server.should_exit = True
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
