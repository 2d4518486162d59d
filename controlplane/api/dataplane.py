"""Data-plane services: config sync (xDS-style, state of the world) and usage ingestion."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc

from controlplane.api import convert
from controlplane.clock import Clock
from controlplane.configsync import registry
from controlplane.configsync.hub import ConfigHub
from controlplane.configsync.registry import SyncStatus
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
        self, *, db: Database, clock: Clock, hub: ConfigHub, version: str | None = None
    ) -> None:
        self._db = db
        self._clock = clock
        self._hub = hub
        self.version = version or registry.running_version()
        self._writes: set[asyncio.Task[None]] = set()

    async def _record(self, **kwargs: object) -> None:
        now = self._clock.now()

        def run() -> None:
            with self._db.begin() as conn:
                registry.record(conn, now=now, **kwargs)  # type: ignore[arg-type]

        # Shielded and tracked: a stream cancelled at shutdown still records its last state,
        # and drain() lets the server wait for it before the database goes away.
        task = asyncio.ensure_future(asyncio.to_thread(run))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)
        await asyncio.shield(task)

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
            )
            log.warning("data plane %s refused: %s", node.id, message)
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, message)
        await self._record(
            node_id=node.id,
            hostname=node.hostname,
            version=node.version,
            config_version=first.version_info,
            status=SyncStatus.CONNECTED,
        )
        log.info("data plane %s connected (holds %r)", node.id, first.version_info)
        sent_nonce = ""
        node_version = first.version_info

        async def read_answers() -> None:
            nonlocal node_version
            async for request in request_iterator:
                if request.response_nonce != sent_nonce:
                    continue  # stale: answers a response that was superseded
                if request.HasField("error_detail") and request.error_detail.message:
                    log.warning(
                        "data plane %s NACKed %s: %s",
                        node.id,
                        request.response_nonce,
                        request.error_detail.message,
                    )
                    await self._record(
                        node_id=node.id,
                        config_version=request.version_info,
                        status=SyncStatus.NACKED,
                        error=request.error_detail.message,
                    )
                else:
                    await self._record(
                        node_id=node.id,
                        config_version=request.version_info,
                        status=SyncStatus.IN_SYNC,
                    )
                node_version = request.version_info

        reader = asyncio.create_task(read_answers())
        last_sent_version = first.version_info
        try:
            while not reader.done():
                built = await self._hub.current()
                if built.version != last_sent_version:
                    sent_nonce = uuid.uuid4().hex
                    last_sent_version = built.version
                    yield config_pb2.ConfigResponse(
                        version_info=built.version, nonce=sent_nonce, snapshot=built.snapshot
                    )
                waiter = asyncio.create_task(self._hub.wait_for_change())
                await asyncio.wait({waiter, reader}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
        finally:
            reader.cancel()
            await self._record(
                node_id=node.id, config_version=node_version, status=SyncStatus.DISCONNECTED
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
    ) -> None:
        self._db = db
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
            await hub.notify()

        self._notify = asyncio.create_task(notify_later())

    async def drain(self) -> None:
        """Drop a pending notification (the server is stopping)."""
        if self._notify is not None:
            self._notify.cancel()
            await asyncio.gather(self._notify, return_exceptions=True)
            self._notify = None

    def _store(self, events: list[UsageEvent]) -> usage.InsertResult:
        with self._db.begin() as conn:
            return usage.insert_events(conn, events, ingest_time=self._clock.now())

    async def StreamUsage(
        self, request_iterator: AsyncIterator[usage_pb2.UsageBatch], context: Ctx
    ) -> AsyncIterator[usage_pb2.UsageAck]:
        async for batch in request_iterator:
            events = [
                convert.usage_event_from_proto(e, index=i) for i, e in enumerate(batch.events)
            ]
            result = await asyncio.to_thread(self._store, events)
            if result.accepted:
                self._balances_changed()
            yield usage_pb2.UsageAck(
                batch_id=batch.batch_id,
                accepted_count=result.accepted,
                duplicate_count=result.duplicates,
            )
