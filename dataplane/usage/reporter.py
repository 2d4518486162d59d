"""The usage reporter: buffers usage events and streams them to the control plane in batches.

Appending never blocks a request. A background task cuts batches (every flush interval, or
sooner at ``batch_size`` events), sends them over one long-lived StreamUsage call, and keeps
each batch until its UsageAck arrives. When the stream breaks it reconnects with backoff and
resends every unacked batch unchanged (same batch_id, same events); the control plane
deduplicates by event id.

With a Spool, ``append`` first writes the event to the spool (one write(2), see
dataplane/spool.py for what each fsync policy can lose); a batch's ACK releases its events
from the spool, and events recovered from the spool at start are sent first. Without a spool
(tests, or a data plane run without ``--state-dir``) events live in memory only: they survive
a broken stream but not a restart, and past ``max_buffered_events`` the oldest are dropped,
counted and logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any

import grpc

from dataplane.usage.backoff import Backoff
from dataplane.usage.spool import FullPolicy, Spool
from meterline.dataplane.v1 import usage_pb2

# ACKs remembered for acked_through (snapshots follow stores within seconds).
_ACK_MARKS = 4096

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
    # Written to the spool; recovered from it at start; kept in memory only because it was full.
    spooled_events: int = 0
    recovered_events: int = 0
    unspooled_events: int = 0
    spool_bytes: int = 0

    @property
    def pending_events(self) -> int:
        """Events not yet acknowledged by the control plane."""
        return self.buffered_events + self.unacked_events


class UsageStreamStub:
    """UsageService.StreamUsage whose requests are UsageBatch messages already encoded.

    The same RPC and wire format as ``usage_pb2_grpc.UsageServiceStub``; the reporter holds
    each event serialized once (as the spool does) and frames a batch around those bytes
    (``encode_batch``), instead of parsing every event back into a message to have the batch
    serialized again.
    """

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.StreamUsage: grpc.aio.StreamStreamMultiCallable[bytes, usage_pb2.UsageAck] = (
            channel.stream_stream(
                STREAM_USAGE_METHOD,
                request_serializer=None,  # bytes as they are
                response_deserializer=usage_pb2.UsageAck.FromString,
            )
        )


STREAM_USAGE_METHOD = "/meterline.dataplane.v1.UsageService/StreamUsage"


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_batch(batch_id: str, events: list[bytes]) -> bytes:
    """The wire form of ``UsageBatch(batch_id=..., events=[...])`` from serialized events:
    field 1 (batch_id) then field 2 once per event, each length-delimited."""
    encoded_id = batch_id.encode()
    # proto3 leaves a field at its default (the empty string) off the wire.
    parts = [b"\x0a", _varint(len(encoded_id)), encoded_id] if encoded_id else []
    for data in events:
        parts += (b"\x12", _varint(len(data)), data)
    return b"".join(parts)


@dataclass(frozen=True, slots=True)
class _Batch:
    batch_id: str
    data: bytes
    events: int
    # How many of its events each spool segment holds (released on the ACK).
    segments: Counter[int]


class UsageReporter:
    """Streams usage events to UsageService.StreamUsage; ``append`` is the gateway's sink."""

    def __init__(
        self,
        *,
        stub: UsageStreamStub,
        flush_interval: float = 0.2,
        batch_size: int = 500,
        max_buffered_events: int = 200_000,
        max_unacked_batches: int = 64,
        backoff: Backoff | None = None,
        spool: Spool | None = None,
        full_policy: FullPolicy = FullPolicy.BLOCK,
    ) -> None:
        self._stub = stub
        self._flush_interval = flush_interval
        self._batch_size = batch_size
        self._max_buffered = max_buffered_events
        self._max_unacked = max_unacked_batches
        self._backoff = backoff or Backoff()
        # (spool segment or None, serialized event): bytes are what the spool holds anyway,
        # and far smaller in memory than message objects.
        self._buffer: deque[tuple[int | None, bytes]] = deque()
        # Insertion-ordered: resends go out in the original order.
        self._unacked: dict[str, _Batch] = {}
        # Recent ACKs in order: (usage_epoch, usage_sequence, events ACKed before, after); see
        # acked_through.
        self._ack_marks: deque[tuple[str, int, int, int]] = deque(maxlen=_ACK_MARKS)
        self._spool = spool
        self._full_policy = full_policy
        self._last_full_alert = 0.0
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._stats = UsageStats()
        if spool is not None:
            for spooled in spool.recovered:
                self._buffer.append((spooled.segment, spooled.data))
            self._stats.recovered_events = len(spool.recovered)
            if self._buffer:
                self._drained.clear()

    # -- the hot path -------------------------------------------------------------------------

    @property
    def accepting(self) -> bool:
        """False while a full spool under the BLOCK policy asks for new requests to wait."""
        return not (
            self._spool is not None and self._full_policy is FullPolicy.BLOCK and self._spool.full
        )

    def append(self, event: usage_pb2.UsageEvent) -> None:
        """Record one event: to the spool if there is one, then to the send buffer.

        Never blocks on the network. Without a spool, past the bound the oldest event is
        dropped (counted and logged).
        """
        data = event.SerializeToString()
        segment: int | None = None
        spool = self._spool
        if spool is not None:
            if spool.full and self._full_policy is FullPolicy.SERVE:
                self._stats.unspooled_events += 1
                self._alert_full()
            else:
                segment = spool.append(data)
                self._stats.spooled_events += 1
        if segment is None and len(self._buffer) >= self._max_buffered:
            self._buffer.popleft()
            self._stats.dropped_events += 1
            logger.error("usage buffer full (%d events): dropped the oldest", self._max_buffered)
        self._buffer.append((segment, data))
        self._drained.clear()
        if len(self._buffer) >= self._batch_size:
            self._wake.set()

    def _alert_full(self) -> None:
        now = time.monotonic()
        if now - self._last_full_alert >= 10.0:
            self._last_full_alert = now
            logger.error(
                "ALERT usage spool full (%d bytes): %d events kept in memory only so far "
                "(lost if this process dies before the control plane acknowledges them)",
                self._spool.size_bytes if self._spool else 0,
                self._stats.unspooled_events,
            )

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
            if self._spool is not None:
                logger.warning(
                    "usage reporter stopped with %d unacknowledged events (kept in the spool "
                    "%s for the next start)",
                    self.stats.pending_events,
                    self._spool.directory,
                )
            else:
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
        stats.unacked_events = sum(batch.events for batch in self._unacked.values())
        stats.spool_bytes = self._spool.size_bytes if self._spool is not None else 0
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
                await call.write(batch.data)
                self._stats.resent_batches += 1
            loop = asyncio.get_running_loop()
            flush_at = loop.time()
            while not reader.done():
                # A partial batch goes out once per flush interval; full ones at once. An ACK
                # wakes this loop too (room in the window), but cuts nothing on its own: cutting
                # whatever arrived since made one small batch (one commit, one fsync on the
                # control plane) per round trip, most of the control plane's CPU at low load.
                due = self._closing or loop.time() >= flush_at
                # What is buffered now; events appended during the writes below wait.
                flushing = len(self._buffer) if due else 0
                while (
                    self._buffer
                    and len(self._unacked) < self._max_unacked
                    and (flushing > 0 or len(self._buffer) >= self._batch_size)
                ):
                    batch = self._cut_batch()
                    flushing -= batch.events
                    self._unacked[batch.batch_id] = batch
                    await call.write(batch.data)
                    self._stats.sent_batches += 1
                if due:
                    flush_at = loop.time() + self._flush_interval
                self._check_drained()
                self._wake.clear()
                if self._closing and self._buffer and len(self._unacked) < self._max_unacked:
                    continue
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout_at(flush_at):
                        await self._wake.wait()
            await reader  # re-raises the reader's failure, if any
            raise ConnectionError("the control plane ended the usage stream")
        finally:
            reader.cancel()
            call.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader

    def _cut_batch(self) -> _Batch:
        count = min(len(self._buffer), self._batch_size)
        batch_id = uuid.uuid4().hex
        segments: Counter[int] = Counter()
        events: list[bytes] = []
        buffer = self._buffer
        for _ in range(count):
            segment, data = buffer.popleft()
            events.append(data)
            if segment is not None:
                segments[segment] += 1
        return _Batch(batch_id, encode_batch(batch_id, events), count, segments)

    async def _read_acks(self, call: Any) -> None:
        try:
            async for ack in call:
                entry = self._unacked.pop(ack.batch_id, None)
                if entry is None:
                    logger.debug("usage ack for unknown batch %s", ack.batch_id)
                    continue
                if self._spool is not None and entry.segments:
                    self._spool.ack(entry.segments)
                # A stream that delivers acks is healthy: the next failure starts a new backoff.
                self._backoff.reset()
                self._stats.acked_batches += 1
                before = self._stats.acked_events
                self._stats.acked_events += entry.events
                if ack.usage_epoch:
                    self._ack_marks.append(
                        (ack.usage_epoch, ack.usage_sequence, before, self._stats.acked_events)
                    )
                self._check_drained()
                # Room for more in-flight batches.
                self._wake.set()
        finally:
            self._wake.set()

    def acked_through(self, epoch: str, sequence: int) -> int | None:
        """How many events (``stats.acked_events``-wise) the control plane process ``epoch``
        had stored when its count of stores was ``sequence``: those of the ACKs it numbered at
        most ``sequence``, and every event ACKed before its first recent ACK. None when no
        recent ACK is of ``epoch`` (another process, or none yet)."""
        floor: int | None = None
        for mark_epoch, mark_sequence, before, after in reversed(self._ack_marks):
            if mark_epoch != epoch:
                break
            if mark_sequence <= sequence:
                return after
            floor = before
        return floor

    def _check_drained(self) -> None:
        if not self._buffer and not self._unacked:
            self._drained.set()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return f"{type(exc).__name__}: {exc}"
