"""The usage reporter against a scripted UsageService (a real in-process grpc.aio server)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from dataplane.translate.openai_format import TokenUsage
from dataplane.usage.backoff import Backoff
from dataplane.usage.events import llm_token_events
from dataplane.usage.reporter import UsageReporter, UsageStreamStub
from dataplane.usage.spool import FullPolicy, Spool
from meterline.dataplane.v1 import usage_pb2, usage_pb2_grpc


def events_of(n: int) -> list[usage_pb2.UsageEvent]:
    events: list[usage_pb2.UsageEvent] = []
    for i in range(n):
        events.extend(
            llm_token_events(
                request_id=f"req{i}",
                source="dp-1",
                subject="acme-corp",
                time_ns=1_700_000_000_000_000_000 + i,
                provider="openai",
                model="gpt-4o-mini",
                status_code=200,
                route="chat",
                usage=TokenUsage(input_tokens=10 + i, output_tokens=i),
                estimated=False,
            )
        )
    return events


class ScriptedUsageService(usage_pb2_grpc.UsageServiceServicer):
    """Stores events idempotently and acks batches; can break a stream instead of acking."""

    def __init__(self) -> None:
        self.streams = 0
        self.received: list[tuple[int, usage_pb2.UsageBatch]] = []
        self.stored: dict[str, usage_pb2.UsageEvent] = {}
        self.break_on_batches: set[int] = set()
        # Seconds a batch takes to "store" before its ACK (a commit on a real control plane).
        self.ack_delay = 0.0

    async def StreamUsage(self, request_iterator, context):
        self.streams += 1
        stream = self.streams
        async for batch in request_iterator:
            self.received.append((stream, batch))
            if len(self.received) in self.break_on_batches:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "control plane restarting")
            if self.ack_delay:
                await asyncio.sleep(self.ack_delay)
            accepted = duplicate = 0
            for event in batch.events:
                if event.id in self.stored:
                    duplicate += 1
                else:
                    self.stored[event.id] = event
                    accepted += 1
            yield usage_pb2.UsageAck(
                batch_id=batch.batch_id, accepted_count=accepted, duplicate_count=duplicate
            )


@pytest.fixture
async def usage_service() -> AsyncIterator[tuple[ScriptedUsageService, grpc.aio.Channel]]:
    service = ScriptedUsageService()
    server = grpc.aio.server()
    usage_pb2_grpc.add_UsageServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield service, channel
    finally:
        await channel.close()
        await server.stop(None)


def reporter_on(channel: grpc.aio.Channel, **kwargs) -> UsageReporter:
    return UsageReporter(
        stub=UsageStreamStub(channel),
        backoff=Backoff(initial=0.01, maximum=0.05),
        **kwargs,
    )


async def test_batches_are_sent_and_acked(usage_service) -> None:
    service, channel = usage_service
    reporter = reporter_on(channel, flush_interval=0.01, batch_size=500)
    reporter.start()
    events = events_of(600)  # 1200 events: 500 + 500 + 200
    for event in events:
        reporter.append(event)
    await asyncio.wait_for(reporter.wait_drained(), 5)
    assert await reporter.close(timeout=1)

    sizes = [len(batch.events) for _, batch in service.received]
    assert sum(sizes) == 1200
    assert max(sizes) == 500
    assert len({batch.batch_id for _, batch in service.received}) == len(sizes)
    assert list(service.stored) == [event.id for event in events]
    stats = reporter.stats
    assert stats.acked_batches == len(sizes)
    assert stats.acked_events == 1200
    assert stats.pending_events == 0
    assert stats.resent_batches == 0


async def test_acks_do_not_cut_partial_batches(usage_service) -> None:
    service, channel = usage_service
    # Given a control plane that takes 5 ms to store a batch, and a reporter that flushes
    # partial batches every 0.25 s
    service.ack_delay = 0.005
    reporter = reporter_on(channel, flush_interval=0.25, batch_size=500)
    reporter.start()
    loop = asyncio.get_running_loop()
    # When one request's events arrive every 2 ms for ~1 s, while earlier batches are acked
    started = loop.time()
    events = events_of(400)
    for i in range(0, len(events), 2):
        reporter.append(events[i])
        reporter.append(events[i + 1])
        await asyncio.sleep(0.002)
    elapsed = loop.time() - started
    await asyncio.wait_for(reporter.wait_drained(), 5)
    assert await reporter.close(timeout=1)
    # Then they went out once per flush interval, not in one small batch per round trip
    # (each batch is a commit, and an fsync, on the control plane)
    sizes = [len(batch.events) for _, batch in service.received]
    assert sum(sizes) == 800
    assert len(sizes) <= elapsed / 0.25 + 2, sizes


async def test_unacked_batch_is_resent_with_its_batch_id(usage_service) -> None:
    service, channel = usage_service
    # Given a control plane that drops the stream instead of acking the first batch
    service.break_on_batches = {1}
    reporter = reporter_on(channel, flush_interval=0.01)
    events = events_of(3)
    for event in events:
        reporter.append(event)
    # When the reporter runs until everything is acked
    reporter.start()
    await asyncio.wait_for(reporter.wait_drained(), 5)
    await reporter.close(timeout=1)
    # Then the same batch went out again, on a new stream, unchanged
    (first_stream, first), (second_stream, second) = service.received
    assert (first_stream, second_stream) == (1, 2)
    assert second.batch_id == first.batch_id
    assert second == first
    assert list(service.stored) == [event.id for event in events]
    stats = reporter.stats
    assert (stats.resent_batches, stats.acked_batches, stats.streams_opened) == (1, 1, 2)


async def test_close_flushes_what_is_buffered(usage_service) -> None:
    service, channel = usage_service
    reporter = reporter_on(channel, flush_interval=60)  # only close() can make it send
    reporter.start()
    for event in events_of(2):
        reporter.append(event)
    assert await reporter.close(timeout=2)
    assert len(service.stored) == 4


async def test_close_gives_up_after_its_deadline_when_nobody_acks() -> None:
    channel = grpc.aio.insecure_channel("127.0.0.1:1")  # nothing listens there
    reporter = reporter_on(channel, flush_interval=0.01)
    reporter.start()
    reporter.append(events_of(1)[0])
    assert not await reporter.close(timeout=0.2)
    assert reporter.stats.pending_events == 1
    await channel.close()


def test_a_full_buffer_drops_the_oldest_event() -> None:
    reporter = UsageReporter(stub=None, max_buffered_events=2)  # type: ignore[arg-type]
    for event in events_of(2):  # 4 events
        reporter.append(event)
    stats = reporter.stats
    assert (stats.buffered_events, stats.dropped_events) == (2, 2)


# -- with a disk spool ------------------------------------------------------------------------


def open_spool(directory, **kwargs) -> Spool:
    spool = Spool(directory, fsync_interval=0.01, **kwargs)
    spool.open()
    spool.start()
    return spool


async def test_spooled_events_survive_a_restart_and_are_released_by_acks(
    usage_service, tmp_path
) -> None:
    service, channel = usage_service
    events = events_of(50)  # 100 events
    # Given a data plane that spooled usage while its control plane was unreachable
    dead = grpc.aio.insecure_channel("127.0.0.1:1")
    spool = open_spool(tmp_path)
    reporter = reporter_on(dead, flush_interval=0.01, spool=spool)
    reporter.start()
    for event in events:
        reporter.append(event)
    assert not await reporter.close(timeout=0.1)
    assert reporter.stats.spooled_events == 100
    await spool.close()
    await dead.close()
    assert list(tmp_path.glob("seg-*.wal"))

    # When it restarts on the same spool with the control plane back
    spool = open_spool(tmp_path)
    reporter = reporter_on(channel, flush_interval=0.01, spool=spool)
    assert reporter.stats.recovered_events == 100
    reporter.start()
    await asyncio.wait_for(reporter.wait_drained(), 5)
    assert await reporter.close(timeout=1)
    await spool.close()

    # Then every event arrived, in order, and the spool is empty
    assert list(service.stored) == [event.id for event in events]
    assert list(tmp_path.glob("seg-*.wal")) == []


async def test_a_full_spool_under_block_stops_admitting_but_keeps_in_flight_usage(
    usage_service, tmp_path
) -> None:
    service, channel = usage_service
    dead = grpc.aio.insecure_channel("127.0.0.1:1")
    spool = open_spool(tmp_path, max_bytes=1000)
    reporter = reporter_on(dead, flush_interval=0.01, spool=spool, full_policy=FullPolicy.BLOCK)
    events = events_of(20)
    written = 0
    while reporter.accepting:
        reporter.append(events[written])
        written += 1
    assert spool.full and 0 < written < len(events)
    # Requests admitted before the spool filled still record their usage, on disk.
    reporter.append(events[written])
    assert reporter.stats.spooled_events == written + 1
    assert reporter.stats.unspooled_events == reporter.stats.dropped_events == 0
    await reporter.close(timeout=0)
    await spool.close()
    await dead.close()

    # Once the control plane acknowledges the spool, requests are admitted again.
    spool = open_spool(tmp_path, max_bytes=1000)
    reporter = reporter_on(channel, flush_interval=0.01, spool=spool)
    assert not reporter.accepting
    reporter.start()
    await asyncio.wait_for(reporter.wait_drained(), 5)
    assert reporter.accepting
    assert len(service.stored) == written + 1
    await reporter.close(timeout=1)
    await spool.close()


async def test_a_full_spool_under_serve_keeps_usage_in_memory_and_counts_it(
    usage_service, tmp_path, caplog
) -> None:
    service, channel = usage_service
    spool = open_spool(tmp_path, max_bytes=500)
    reporter = reporter_on(channel, flush_interval=60, spool=spool, full_policy=FullPolicy.SERVE)
    events = events_of(10)
    for event in events:
        reporter.append(event)
    stats = reporter.stats
    assert reporter.accepting
    assert stats.unspooled_events > 0
    assert stats.spooled_events + stats.unspooled_events == 20
    assert stats.dropped_events == 0
    assert "ALERT usage spool full" in caplog.text
    # Nothing was dropped: everything still reaches the control plane.
    reporter.start()
    assert await reporter.close(timeout=2)
    assert len(service.stored) == 20
    await spool.close()
    assert list(tmp_path.glob("seg-*.wal")) == []
