"""The config client: xDS-style state-of-the-world sync over ConfigService.StreamConfig.

For every ConfigResponse: compile the snapshot, swap it in, and ACK (version_info = the new
version); if it does not compile, keep the old config and NACK (version_info = the version
kept, error_detail = why). A broken stream is reopened with backoff while the gateway keeps
serving its last config.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import grpc

from dataplane.backoff import Backoff
from dataplane.compiler import CompileError, compile_snapshot
from dataplane.runtime import RuntimeConfig
from meterline.dataplane.v1 import config_pb2, config_pb2_grpc

logger = logging.getLogger(__name__)

# google.rpc.Code INVALID_ARGUMENT: the snapshot, not the transport, is at fault.
INVALID_ARGUMENT = 3


class ConfigClient:
    """Keeps a data plane's RuntimeConfig in sync with the control plane."""

    def __init__(
        self,
        *,
        stub: config_pb2_grpc.ConfigServiceStub,
        node: config_pb2.Node,
        apply: Callable[[RuntimeConfig], None],
        backoff: Backoff | None = None,
        initial_version: str = "",
    ) -> None:
        self._stub = stub
        self._node = node
        self._apply = apply
        self._backoff = backoff or Backoff()
        self.version = initial_version
        self.applied_versions: list[str] = []
        self.rejected_versions: list[str] = []
        self._first_applied = asyncio.Event()

    async def wait_applied(self) -> None:
        """Wait until a first config is applied."""
        await self._first_applied.wait()

    async def run(self) -> None:
        """Sync forever (until cancelled), reconnecting with backoff."""
        while True:
            try:
                await self._stream_once()
                logger.warning("config stream ended by the control plane")
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as exc:
                logger.warning("config stream broke: %s: %s", exc.code().name, exc.details())
            except Exception as exc:  # unexpected: log it, but never stop syncing
                logger.exception("config stream failed: %s", type(exc).__name__)
            delay = self._backoff.next_delay()
            logger.info("config stream: reconnecting in %.2fs", delay)
            await asyncio.sleep(delay)

    async def _stream_once(self) -> None:
        call: Any = self._stub.StreamConfig()
        try:
            # The version held so far lets the control plane skip an unchanged snapshot.
            await call.write(config_pb2.ConfigRequest(node=self._node, version_info=self.version))
            async for response in call:
                self._backoff.reset()
                await call.write(self._handle(response))
        finally:
            call.cancel()

    def _handle(self, response: config_pb2.ConfigResponse) -> config_pb2.ConfigRequest:
        """Compile and apply one response; return its ACK or NACK."""
        try:
            config = compile_snapshot(response.snapshot, version=response.version_info)
        except CompileError as exc:
            return self._nack(response, str(exc))
        except Exception as exc:  # a compiler bug must not take the data plane down
            logger.exception("compiling config version %s crashed", response.version_info)
            return self._nack(response, f"internal error while compiling: {type(exc).__name__}")
        self._apply(config)
        self.version = response.version_info
        self.applied_versions.append(response.version_info)
        self._first_applied.set()
        logger.info(
            "applied config version %s (%d routes, %d consumers)",
            response.version_info,
            len(config.routes),
            len(set(config.consumers_by_key_hash.values())),
        )
        return config_pb2.ConfigRequest(
            version_info=response.version_info, response_nonce=response.nonce
        )

    def _nack(self, response: config_pb2.ConfigResponse, message: str) -> config_pb2.ConfigRequest:
        self.rejected_versions.append(response.version_info)
        logger.error(
            "rejected config version %s (keeping %s): %s",
            response.version_info,
            self.version or "none",
            message,
        )
        return config_pb2.ConfigRequest(
            version_info=self.version,
            response_nonce=response.nonce,
            error_detail=config_pb2.ErrorDetail(code=INVALID_ARGUMENT, message=message),
        )
