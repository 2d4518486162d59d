"""Data-plane services: config sync (xDS-style, state of the world) and usage ingestion."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc

from controlplane.api import convert
from controlplane.clock import Clock
from controlplane.configsync import registry
from controlplane.configsync.hub import ConfigHub
from controlplane.configsync.session import ConfigSessions
from controlplane.errors import FailedPrecondition, InvalidArgument
from controlplane.metrics import ControlPlaneMetrics
from controlplane.storage.db import Database
from controlplane.tracing import span
from controlplane.usage import storage as usage
from controlplane.usage.types import UsageEvent
from meterline.dataplane.v1 import config_pb2, config_pb2_grpc, usage_pb2, usage_pb2_grpc

log = logging.getLogger(__name__)
if TYPE_CHECKING:
    Ctx: TypeAlias = grpc.aio.ServicerContext[Any, Any]
else:
    Ctx = grpc.aio.ServicerContext


class ConfigServicer(config_pb2_grpc.ConfigServiceServicer):
    """ConfigService.StreamConfig: each stream is a session of controlplane.configsync.session."""

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
        self._sessions = ConfigSessions(
            db=db,
            clock=clock,
            hub=hub,
            version=version,
            metrics=metrics,
            heartbeat_seconds=heartbeat_seconds,
        )

    async def drain(self) -> None:
        """Wait for registry writes still in flight."""
        await self._sessions.drain()

    async def StreamConfig(
        self, request_iterator: AsyncIterator[config_pb2.ConfigRequest], context: Ctx
    ) -> AsyncIterator[config_pb2.ConfigResponse]:
        first = await anext(aiter(request_iterator), None)
        if first is None:
            return
        try:
            async for response in self._sessions.serve(first, request_iterator):
                yield response
        except InvalidArgument as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except FailedPrecondition as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))


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
        on_stored: Callable[[set[str]], None] | None = None,
    ) -> None:
        # Told the subjects of each stored batch (the credit job: auto-recharge, alerts).
        self._on_stored = on_stored
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
        with (
            span(
                "usage.ingest_batch", attributes={"meterline.usage.events": len(events)}
            ) as current,
            self._db.begin_write() as conn,
        ):
            result = usage.insert_events(conn, events, ingest_time=self._clock.now())
            current.set_attribute("meterline.usage.accepted", result.accepted)
            current.set_attribute("meterline.usage.duplicates", result.duplicates)
            return result

    async def _store_and_ack(self, batch_id: str, events: list[UsageEvent]) -> usage_pb2.UsageAck:
        """Store one batch and say so (mark_stored before the ACK leaves)."""
        started = time.perf_counter()
        result = await asyncio.to_thread(self._store, events)
        self._metrics.ingest_batch.observe(time.perf_counter() - started)
        self._metrics.usage_events.inc(result.accepted)
        self._metrics.usage_duplicates.inc(result.duplicates)
        ack = usage_pb2.UsageAck(
            batch_id=batch_id,
            accepted_count=result.accepted,
            duplicate_count=result.duplicates,
        )
        if self._hub is not None:
            ack.usage_epoch = self._hub.usage_epoch
            # Only duplicates: stored before, by the count so far.
            ack.usage_sequence = self._hub.usage_sequence
        if result.accepted:
            if self._hub is not None:
                # Before the ACK leaves: a snapshot built before this store is not sent,
                # and the ACK says which snapshots reflect it.
                ack.usage_sequence = self._hub.mark_stored({event.subject for event in events})
            self._balances_changed()
            if self._on_stored is not None:
                self._on_stored({event.subject for event in events})
        return ack

    async def StreamUsage(
        self, request_iterator: AsyncIterator[usage_pb2.UsageBatch], context: Ctx
    ) -> AsyncIterator[usage_pb2.UsageAck]:
        async for batch in request_iterator:
            events = [
                convert.usage_event_from_proto(e, index=i) for i, e in enumerate(batch.events)
            ]
            hub = self._hub
            if hub is not None:
                hub.store_begun()
            try:
                ack = await self._store_and_ack(batch.batch_id, events)
            finally:
                if hub is not None:
                    hub.store_ended()
            yield ack
