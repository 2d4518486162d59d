"""The config client: xDS-style state-of-the-world sync over ConfigService.StreamConfig.

For every ConfigResponse: compile the snapshot, swap it in, and ACK (version_info = the new
version); if it does not compile, keep the old config and NACK (version_info = the version
kept, error_detail = why). A broken stream is reopened with backoff while the gateway keeps
serving its last config.

A snapshot the compiler takes only in part (it refuses some routes or plugins and serves the
rest, see ``dataplane.proxy.compiler``) is applied and answered with its new version AND an
error_detail naming what was refused: the control plane records the data plane as NACKed
with that text (``meterline dataplanes list``) and does not push the version again.

With a ConfigCache, every applied snapshot is also written to disk, and ``load_cached`` starts
a data plane from the last one before the control plane answers; the first ConfigRequest then
names the cached version, so an unchanged control plane sends nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any, Generic, Protocol, TypeVar

import grpc

from dataplane.config.cache import CacheError, ConfigCache
from dataplane.errors import CompileError
from dataplane.usage.backoff import Backoff
from meterline.dataplane.v1 import config_pb2, config_pb2_grpc, snapshot_pb2

logger = logging.getLogger(__name__)

# google.rpc.Code INVALID_ARGUMENT: the snapshot, not the transport, is at fault.
INVALID_ARGUMENT = 3


C = TypeVar("C")
C_co = TypeVar("C_co", covariant=True)


class SnapshotCompiler(Protocol[C_co]):
    """Compiles a wire snapshot into what a data plane serves; CompileError if it cannot."""

    def __call__(self, snapshot: snapshot_pb2.Snapshot, *, version: str) -> C_co: ...


# Longest refusal text sent in a NACK (the registry keeps it; a log line shows it whole).
MAX_ERROR_CHARS = 4000


def _refused_attribute(config: object) -> Sequence[str]:
    refused = getattr(config, "refused", ())
    return refused if isinstance(refused, tuple) else ()


class ConfigClient(Generic[C]):
    """Keeps a data plane's compiled config in sync with the control plane.

    ``compile`` turns a wire snapshot into the runtime the data plane serves (it raises
    CompileError for a snapshot it refuses); ``apply`` swaps it in. Both are given by the
    composition root, so this layer knows the protocol, not what a snapshot compiles into.
    ``refused`` says what of a compiled config was refused (default: its ``refused`` tuple).
    """

    def __init__(
        self,
        *,
        stub: config_pb2_grpc.ConfigServiceStub,
        node: config_pb2.Node,
        compile: SnapshotCompiler[C],
        apply: Callable[[C], None],
        backoff: Backoff | None = None,
        initial_version: str = "",
        cache: ConfigCache | None = None,
        on_answer: Callable[[bool], None] | None = None,
        refused: Callable[[C], Sequence[str]] = _refused_attribute,
    ) -> None:
        self._stub = stub
        self._refused = refused
        # Told True for each ACK, False for each NACK (metrics).
        self._on_answer = on_answer
        self._node = node
        self._compile = compile
        self._apply = apply
        self._backoff = backoff or Backoff()
        self.version = initial_version
        # (usage_epoch, usage_sequence) of the response being or last applied; None for a
        # cached snapshot (ConfigResponse.usage_sequence).
        self.usage_marker: tuple[str, int] | None = None
        self.applied_versions: list[str] = []
        self.rejected_versions: list[str] = []
        self._first_applied = asyncio.Event()
        self._cache = cache
        self.loaded_from_cache = False

    def load_cached(self) -> bool:
        """Apply the cached snapshot, if there is one and it compiles; return whether it did.

        Call before ``run``: the data plane then serves while the control plane is unreachable.
        """
        if self._cache is None:
            return False
        try:
            cached = self._cache.load()
        except (CacheError, OSError) as exc:
            logger.error("config cache %s not used: %s", self._cache.path, exc)
            return False
        if cached is None:
            return False
        try:
            config = self._compile(cached.snapshot, version=cached.version_info)
        except Exception as exc:  # a cache from another version may not compile: sync instead
            logger.error("cached config version %s not used: %s", cached.version_info, exc)
            return False
        self._apply(config)
        self.version = cached.version_info
        self.usage_marker = None
        self.loaded_from_cache = True
        self._first_applied.set()
        logger.info(
            "serving cached config version %s until the control plane answers", self.version
        )
        return True

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
                answer = self._handle(response)
                if self._cache is not None and answer.version_info == response.version_info:
                    await self._save(response)
                await call.write(answer)
        finally:
            call.cancel()

    async def _save(self, response: config_pb2.ConfigResponse) -> None:
        assert self._cache is not None
        try:
            await asyncio.to_thread(self._cache.save, response)
        except OSError as exc:  # a full or read-only disk must not stop config sync
            logger.error("could not write the config cache %s: %s", self._cache.path, exc)

    def _handle(self, response: config_pb2.ConfigResponse) -> config_pb2.ConfigRequest:
        """Compile and apply one response; return its ACK or NACK."""
        try:
            config = self._compile(response.snapshot, version=response.version_info)
        except CompileError as exc:
            return self._nack(response, str(exc))
        except Exception as exc:  # a compiler bug must not take the data plane down
            logger.exception("compiling config version %s crashed", response.version_info)
            return self._nack(response, f"internal error while compiling: {type(exc).__name__}")
        # Before applying: the enforcer asks which stored usage the snapshot reflects.
        self.usage_marker = (response.usage_epoch, response.usage_sequence)
        self._apply(config)
        self.version = response.version_info
        self.applied_versions.append(response.version_info)
        self._first_applied.set()
        refused = self._refused(config)
        if self._on_answer is not None:
            self._on_answer(not refused)
        if not refused:
            logger.info("applied config version %s: %r", response.version_info, config)
            return config_pb2.ConfigRequest(
                version_info=response.version_info, response_nonce=response.nonce
            )
        logger.error(
            "applied config version %s in part: %r; refused: %s",
            response.version_info,
            config,
            "; ".join(refused),
        )
        return config_pb2.ConfigRequest(
            version_info=response.version_info,
            response_nonce=response.nonce,
            error_detail=config_pb2.ErrorDetail(
                code=INVALID_ARGUMENT, message=partial_message(response.version_info, refused)
            ),
        )

    def _nack(self, response: config_pb2.ConfigResponse, message: str) -> config_pb2.ConfigRequest:
        self.rejected_versions.append(response.version_info)
        if self._on_answer is not None:
            self._on_answer(False)
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


def partial_message(version: str, refused: Sequence[str]) -> str:
    """The NACK text of a snapshot served in part: what was refused, capped in length."""
    head = f"serving config version {version} except {len(refused)} refused: "
    text = head + "; ".join(refused)
    if len(text) <= MAX_ERROR_CHARS:
        return text
    shown: list[str] = []
    size = len(head)
    for item in refused:
        if size + len(item) + 30 > MAX_ERROR_CHARS:
            break
        shown.append(item)
        size += len(item) + 2
    return head + "; ".join(shown) + f"; and {len(refused) - len(shown)} more (see its log)"
