"""The xDS session of each config stream, after Envoy's state-of-the-world protocol.

The gRPC servicer (controlplane.api.cluster.dataplane) only hands a stream's requests here and maps
the errors raised to status codes: the protocol (snapshot pushes, nonces, ACK/NACK) and the
registry of data planes live in this package.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator

from controlplane.clock import Clock
from controlplane.configsync import registry
from controlplane.configsync.hub import ConfigHub
from controlplane.configsync.registry import SyncStatus
from controlplane.errors import FailedPrecondition, InvalidArgument
from controlplane.metrics import ControlPlaneMetrics
from controlplane.storage.db import Database
from controlplane.tracing import span
from meterline.dataplane.v1 import config_pb2

log = logging.getLogger(__name__)


class ConfigSessions:
    """The config streams of this control plane: one xDS session per connected data plane.

    A session pushes a full snapshot at connect (unless the node holds it) and on every
    change, reads the node's ACKs and NACKs (stale nonces ignored), and keeps the registry of
    data planes current: connected, in sync or NACKed, heartbeats, disconnected.
    """

    def __init__(
        self,
        *,
        db: Database,
        clock: Clock,
        hub: ConfigHub,
        version: str | None = None,
        metrics: ControlPlaneMetrics | None = None,
        heartbeat_seconds: float = registry.HEARTBEAT_SECONDS,
    ) -> None:
        self._db = db
        self._clock = clock
        self._hub = hub
        # How often an open stream refreshes its data plane's last_seen_time (registry.py).
        self.heartbeat_seconds = heartbeat_seconds
        self._metrics = metrics or ControlPlaneMetrics()
        self.version = version or registry.running_version()
        self._writes: set[asyncio.Task[None]] = set()

    async def _record(
        self, *, stream_writes: set[asyncio.Task[None]] | None = None, **kwargs: object
    ) -> None:
        now = self._clock.now()

        def run() -> None:
            with self._db.begin() as conn:
                registry.record(conn, now=now, **kwargs)  # type: ignore[arg-type]

        # Shielded and tracked: a stream cancelled at shutdown still records its last state,
        # and drain() lets the server wait for it before the database goes away.
        task: asyncio.Task[None] = asyncio.ensure_future(asyncio.to_thread(run))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)
        if stream_writes is not None:
            stream_writes.add(task)
            task.add_done_callback(stream_writes.discard)
        await asyncio.shield(task)

    async def _heartbeat(self, *, node_id: str, stream_id: str) -> None:
        now = self._clock.now()

        def run() -> None:
            with self._db.begin() as conn:
                registry.heartbeat(conn, node_id=node_id, stream_id=stream_id, now=now)

        try:
            await asyncio.to_thread(run)
        except Exception:  # a missed heartbeat must not end the stream
            log.exception("heartbeat of data plane %s not recorded", node_id)

    async def drain(self) -> None:
        """Wait for registry writes still in flight."""
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)

    async def serve(
        self,
        first: config_pb2.ConfigRequest,
        request_iterator: AsyncIterator[config_pb2.ConfigRequest],
    ) -> AsyncIterator[config_pb2.ConfigResponse]:
        """The responses of one stream, whose first request was ``first``.

        Raises InvalidArgument for a first request that names no node, FailedPrecondition for
        a data plane of an incompatible version (recorded as such first).
        """
        if not first.node.id:
            raise InvalidArgument("the first ConfigRequest must name its node.id")
        node = first.node
        # Registry writes of this stream apply only while no newer stream of the node connected.
        stream_id = uuid.uuid4().hex
        if not registry.compatible(control_plane=self.version, data_plane=node.version):
            message = (
                f"data plane version {node.version} is incompatible with control plane version "
                f"{self.version} (major versions differ)"
            )
            await self._record(
                node_id=node.id,
                hostname=node.hostname,
                version=node.version,
                config_version=first.version_info,
                status=SyncStatus.INCOMPATIBLE,
                error=message,
                stream_id=stream_id,
                connect=True,
            )
            log.warning("data plane %s refused: %s", node.id, message)
            raise FailedPrecondition(message)
        await self._record(
            node_id=node.id,
            hostname=node.hostname,
            version=node.version,
            config_version=first.version_info,
            status=SyncStatus.CONNECTED,
            stream_id=stream_id,
            connect=True,
        )
        log.info("data plane %s connected (holds %r)", node.id, first.version_info)
        metrics = self._metrics
        metrics.dataplane_streams.inc()
        sent_nonce = ""
        node_version = first.version_info
        # The answers' registry writes still in flight: the disconnect is written after them,
        # or a late IN_SYNC would overwrite it and the data plane would count as live (and hold
        # a balance slice) until its heartbeat went stale.
        answer_writes: set[asyncio.Task[None]] = set()

        async def read_answers() -> None:
            nonlocal node_version
            async for request in request_iterator:
                if request.response_nonce != sent_nonce:
                    continue  # stale: answers a response that was superseded
                nacked = request.HasField("error_detail") and bool(request.error_detail.message)
                metrics.snapshot_answers.labels("nack" if nacked else "ack").inc()
                if nacked:
                    log.warning(
                        "data plane %s NACKed %s: %s",
                        node.id,
                        request.response_nonce,
                        request.error_detail.message,
                    )
                    await self._record(
                        stream_writes=answer_writes,
                        node_id=node.id,
                        config_version=request.version_info,
                        status=SyncStatus.NACKED,
                        error=request.error_detail.message,
                        stream_id=stream_id,
                    )
                else:
                    await self._record(
                        stream_writes=answer_writes,
                        node_id=node.id,
                        config_version=request.version_info,
                        status=SyncStatus.IN_SYNC,
                        stream_id=stream_id,
                    )
                node_version = request.version_info

        reader = asyncio.create_task(read_answers())
        last_sent_version = first.version_info
        last_sent_exact, last_sent_sequence = True, 0
        last_beat = time.monotonic()
        try:
            while not reader.done():
                built = await self._hub.current()
                # The same version again when the last one sent was not exact (a store
                # overlapped its build) and this one counts more stores: the data plane then
                # stops counting twice the usage that one already held.
                if built.version != last_sent_version or (
                    not last_sent_exact and built.usage_sequence > last_sent_sequence
                ):
                    sent_nonce = uuid.uuid4().hex
                    last_sent_version = built.version
                    last_sent_exact = built.exact
                    last_sent_sequence = built.usage_sequence
                    metrics.snapshot_pushes.inc()
                    # A span per push (the message is handed to gRPC, not awaited inside it).
                    with span(
                        "config.snapshot_push",
                        attributes={
                            "meterline.config.version": built.version,
                            "meterline.node.id": first.node.id,
                        },
                    ):
                        response = config_pb2.ConfigResponse(
                            version_info=built.version,
                            nonce=sent_nonce,
                            snapshot=built.snapshot,
                            usage_epoch=self._hub.usage_epoch,
                            usage_sequence=built.usage_sequence,
                        )
                    yield response
                waiter = asyncio.create_task(self._hub.wait_for_change())
                await asyncio.wait(
                    {waiter, reader},
                    return_when=asyncio.FIRST_COMPLETED,
                    timeout=self.heartbeat_seconds,
                )
                waiter.cancel()
                if time.monotonic() - last_beat >= self.heartbeat_seconds:
                    last_beat = time.monotonic()
                    await self._heartbeat(node_id=node.id, stream_id=stream_id)
        finally:
            metrics.dataplane_streams.dec()
            reader.cancel()
            if answer_writes:
                await asyncio.gather(*answer_writes, return_exceptions=True)
            await self._record(
                node_id=node.id,
                config_version=node_version,
                status=SyncStatus.DISCONNECTED,
                stream_id=stream_id,
            )
            log.info("data plane %s disconnected", node.id)
