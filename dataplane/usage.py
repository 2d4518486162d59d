"""The usage reporter: buffers usage events and streams them to the control plane in batches.

Appending never blocks a request. A background task cuts batches (every flush interval, or
sooner at ``batch_size`` events), sends them over one long-lived StreamUsage call, and keeps
each batch until its UsageAck arrives. When the stream breaks it reconnects with backoff and
resends every unacked batch unchanged (same batch_id, same events); the control plane
deduplicates by event id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any

import grpc

from dataplane.backoff import Backoff
from meterline.dataplane.v1 import usage_pb2, usage_pb2_grpc

logger = logging.getLogger(__name__)


@dataclass
class UsageStats:
    """Counters for operators and tests."""

    buffered_events: int = 0
    unacked_batches: int = 0
    unacked_events: int = 0
    sent_batches: int = 0
    resent_batches: int = 0
    acked_batches: int = 0
    acked_events: int = 0
    dropped_events: int = 0
    streams_opened: int = 0

    @property
    def pending_events(self) -> int:
        """Events not yet acknowledged by the control plane."""
        return self.buffered_events + self.unacked_events


class UsageReporter:
    """Streams usage events to UsageService.StreamUsage; ``append`` is the gateway's sink."""

    def __init__(
        self,
        *,
        stub: usage_pb2_grpc.UsageServiceStub,
        flush_interval: float = 0.2,
        batch_size: int = 500,
        max_buffered_events: int = 200_000,
        max_unacked_batches: int = 64,
        backoff: Backoff | None = None,
    ) -> None:
        self._stub = stub
        self._flush_interval = flush_interval
        self._batch_size = batch_size
        self._max_buffered = max_buffered_events
        self._max_unacked = max_unacked_batches
        self._backoff = backoff or Backoff()
        self._buffer: deque[usage_pb2.UsageEvent] = deque()
        # Insertion-ordered: resends go out in the original order.
        self._unacked: dict[str, usage_pb2.UsageBatch] = {}
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._stats = UsageStats()

    # -- the hot path -------------------------------------------------------------------------

    def append(self, event: usage_pb2.UsageEvent) -> None:
        """Buffer one event (O(1), never blocks). Past the bound the oldest event is dropped."""
        if len(self._buffer) >= self._max_buffered:
            # No disk spool yet: losing the oldest event is logged loudly and counted.
            self._buffer.popleft()
            self._stats.dropped_events += 1
            logger.error("usage buffer full (%d events): dropped the oldest", self._max_buffered)
        self._buffer.append(event)
        self._drained.clear()
        if len(self._buffer) >= self._batch_size:
            self._wake.set()

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the background sender."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="usage-reporter")

    async def close(self, *, timeout: float = 2.0) -> bool:
        """Send what is buffered, wait up to ``timeout`` s for the acks, then stop.

        Return True if every event was acknowledged.
        """
        self._closing = True
        self._wake.set()
        drained = True
        try:
            # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation.
            async with asyncio.timeout(timeout):
                await self._drained.wait()
        except TimeoutError:
            drained = False
            logger.error(
                "usage reporter stopped with %d unacknowledged events (they are lost)",
                self.stats.pending_events,
            )
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        return drained

    @property
    def stats(self) -> UsageStats:
        """A snapshot of the counters."""
        stats = self._stats
        stats.buffered_events = len(self._buffer)
        stats.unacked_batches = len(self._unacked)
        stats.unacked_events = sum(len(batch.events) for batch in self._unacked.values())
        return UsageStats(**vars(stats))

    async def wait_drained(self) -> None:
        """Wait until every appended event is acknowledged (for tests and shutdown)."""
        await self._drained.wait()

    # -- the sender ---------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            try:
                await self._stream_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any stream failure means: reconnect
                logger.warning("usage stream broke: %s", _describe(exc))
            delay = self._backoff.next_delay()
            logger.info("usage stream: reconnecting in %.2fs", delay)
            await asyncio.sleep(delay)

    async def _stream_once(self) -> None:
        call: Any = self._stub.StreamUsage()
        self._stats.streams_opened += 1
        reader = asyncio.create_task(self._read_acks(call))
        try:
            for batch in list(self._unacked.values()):
                await call.write(batch)
                self._stats.resent_batches += 1
            while not reader.done():
                while self._buffer and len(self._unacked) < self._max_unacked:
                    batch = self._cut_batch()
                    self._unacked[batch.batch_id] = batch
                    await call.write(batch)
                    self._stats.sent_batches += 1
                self._check_drained()
                self._wake.clear()
                if self._closing and self._buffer:
                    continue
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._flush_interval):
                        await self._wake.wait()
            await reader  # re-raises the reader's failure, if any
            raise ConnectionError("the control plane ended the usage stream")
        finally:
            reader.cancel()
            call.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader

    def _cut_batch(self) -> usage_pb2.UsageBatch:
        count = min(len(self._buffer), self._batch_size)
        events = [self._buffer.popleft() for _ in range(count)]
        return usage_pb2.UsageBatch(batch_id=uuid.uuid4().hex, events=events)

    async def _read_acks(self, call: Any) -> None:
        try:
            async for ack in call:
                batch = self._unacked.pop(ack.batch_id, None)
                if batch is None:
                    logger.debug("usage ack for unknown batch %s", ack.batch_id)
                    continue
                # A stream that delivers acks is healthy: the next failure starts a new backoff.
                self._backoff.reset()
                self._stats.acked_batches += 1
                self._stats.acked_events += len(batch.events)
                self._check_drained()
                # Room for more in-flight batches.
                self._wake.set()
        finally:
            self._wake.set()

    def _check_drained(self) -> None:
        if not self._buffer and not self._unacked:
            self._drained.set()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return f"{type(exc).__name__}: {exc}"
