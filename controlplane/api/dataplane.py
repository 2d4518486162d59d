"""Data-plane services: config sync (xDS-style, state of the world) and usage ingestion."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc

from controlplane.api import convert
from controlplane.clock import Clock
from controlplane.configsync import registry
from controlplane.configsync.hub import ConfigHub
from controlplane.configsync.registry import SyncStatus
from controlplane.metrics import ControlPlaneMetrics
from controlplane.storage.db import Database
from controlplane.usage import storage as usage
from controlplane.usage.types import UsageEvent
from meterline.dataplane.v1 import config_pb2, config_pb2_grpc, usage_pb2, usage_pb2_grpc

log = logging.getLogger(__name__)
if TYPE_CHECKING:
    Ctx: TypeAlias = grpc.aio.ServicerContext[Any, Any]
else:
    Ctx = grpc.aio.ServicerContext


class ConfigServicer(config_pb2_grpc.ConfigServiceServicer):
    """Pushes a full snapshot at connect (unless the node holds it) and on every change."""

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

    async def StreamConfig(
        self, request_iterator: AsyncIterator[config_pb2.ConfigRequest], context: Ctx
    ) -> AsyncIterator[config_pb2.ConfigResponse]:
        first = await anext(aiter(request_iterator), None)
        if first is None:
            return
        if not first.node.id:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "the first ConfigRequest must name its node.id"
            )
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
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, message)
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
        last_beat = time.monotonic()
        try:
            while not reader.done():
                built = await self._hub.current()
                if built.version != last_sent_version:
                    sent_nonce = uuid.uuid4().hex
                    last_sent_version = built.version
                    metrics.snapshot_pushes.inc()
                    yield config_pb2.ConfigResponse(
                        version_info=built.version, nonce=sent_nonce, snapshot=built.snapshot
                    )
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


class UsageServicer(usage_pb2_grpc.UsageServiceServicer):
    """Stores each batch in one transaction, then ACKs it; duplicates are counted, not stored."""

    def __init__(
        self,
        *,
        db: Database,
        clock: Clock,
        hub: ConfigHub | None = None,
        notify_seconds: float = 0.2,
        metrics: ControlPlaneMetrics | None = None,
    ) -> None:
        self._db = db
        self._metrics = metrics or ControlPlaneMetrics()
        self._clock = clock
        self._hub = hub
        self._notify_seconds = notify_seconds
        self._notify: asyncio.Task[None] | None = None

    def _balances_changed(self) -> None:
        """New usage changes entitlement balances: tell the config streams, at most every
        notify_seconds (a burst of batches becomes one snapshot rebuild)."""
        if self._hub is None or self._notify is not None:
            return
        hub = self._hub

        async def notify_later() -> None:
            await asyncio.sleep(self._notify_seconds)
            self._notify = None
            await hub.usage_stored()

        self._notify = asyncio.create_task(notify_later())

    async def drain(self) -> None:
        """Drop a pending notification (the server is stopping)."""
        if self._notify is not None:
            self._notify.cancel()
            await asyncio.gather(self._notify, return_exceptions=True)
            self._notify = None

    def _store(self, events: list[UsageEvent]) -> usage.InsertResult:
        with self._db.begin_write() as conn:
            return usage.insert_events(conn, events, ingest_time=self._clock.now())

    async def StreamUsage(
        self, request_iterator: AsyncIterator[usage_pb2.UsageBatch], context: Ctx
    ) -> AsyncIterator[usage_pb2.UsageAck]:
        async for batch in request_iterator:
            events = [
                convert.usage_event_from_proto(e, index=i) for i, e in enumerate(batch.events)
            ]
            started = time.perf_counter()
            result = await asyncio.to_thread(self._store, events)
            self._metrics.ingest_batch.observe(time.perf_counter() - started)
            self._metrics.usage_events.inc(result.accepted)
            self._metrics.usage_duplicates.inc(result.duplicates)
            if result.accepted:
                if self._hub is not None:
                    # Before the ACK leaves: a snapshot built before this store is not sent.
                    self._hub.mark_stored()
                self._balances_changed()
            yield usage_pb2.UsageAck(
                batch_id=batch.batch_id,
                accepted_count=result.accepted,
                duplicate_count=result.duplicates,
            )
