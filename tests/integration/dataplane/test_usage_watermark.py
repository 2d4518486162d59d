"""Which stored usage a snapshot reflects: ACK and config-response usage sequences.

A snapshot whose build began before a usage batch was stored, but which a data plane applies
after that batch's ACK, does not hold the batch: the data plane must keep counting it locally
(ConfigResponse.usage_sequence). Before, it forgot every usage ACKed when it applied a snapshot,
so such a batch was counted nowhere until the next snapshot (overshoot beyond N x C x R).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal

import grpc
import pytest

from dataplane.admission.entitlements import (
    Enforcer,
    UsageItem,
    acked_events,
    compile_enforcement,
)
from dataplane.usage.reporter import UsageReporter, UsageStreamStub
from meterline.dataplane.v1 import snapshot_pb2, usage_pb2, usage_pb2_grpc

from .test_usage_reporter import events_of


class SequencedUsageService(usage_pb2_grpc.UsageServiceServicer):
    """ACKs each batch with the count of stores so far, as the control plane's hub does."""

    def __init__(self, epoch: str) -> None:
        self.epoch = epoch
        self.sequence = 0

    async def StreamUsage(self, request_iterator, context):
        async for batch in request_iterator:
            self.sequence += 1
            yield usage_pb2.UsageAck(
                batch_id=batch.batch_id,
                accepted_count=len(batch.events),
                usage_epoch=self.epoch,
                usage_sequence=self.sequence,
            )


@pytest.fixture
async def sequenced() -> AsyncIterator[tuple[SequencedUsageService, grpc.aio.Channel]]:
    service = SequencedUsageService("epoch-1")
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


async def test_acked_through_counts_the_batches_stored_by_a_sequence(sequenced) -> None:
    _, channel = sequenced
    reporter = UsageReporter(stub=UsageStreamStub(channel), flush_interval=0.01, batch_size=2)
    reporter.start()
    try:
        events = events_of(3)  # 6 events: 3 batches of 2, stores 1, 2, 3
        for i in range(0, 6, 2):
            reporter.append(events[i])
            reporter.append(events[i + 1])
            await asyncio.wait_for(reporter.wait_drained(), 5)
    finally:
        await reporter.close(timeout=1)
    assert reporter.stats.acked_events == 6
    assert reporter.acked_through("epoch-1", 3) == 6
    assert reporter.acked_through("epoch-1", 2) == 4
    assert reporter.acked_through("epoch-1", 1) == 2
    assert reporter.acked_through("epoch-1", 0) == 0  # built before any store
    assert reporter.acked_through("another-process", 3) is None


@dataclass
class Stats:
    acked_events: int = 0
    dropped_events: int = 0
    recovered_events: int = 0


@dataclass
class FakeReporter:
    """What acked_events reads of a reporter: stats and acked_through."""

    stats: Stats = field(default_factory=Stats)
    marks: list[tuple[str, int, int, int]] = field(default_factory=list)

    def ack(self, events: int, sequence: int) -> None:
        before = self.stats.acked_events
        self.stats.acked_events += events
        self.marks.append(("cp-1", sequence, before, self.stats.acked_events))

    def acked_through(self, epoch: str, sequence: int) -> int | None:
        return UsageReporter.acked_through(self, epoch, sequence)  # type: ignore[arg-type]

    @property
    def _ack_marks(self) -> list[tuple[str, int, int, int]]:
        return self.marks


def budget_snapshot(spent: str) -> snapshot_pb2.Snapshot:
    entry = snapshot_pb2.ConsumerEntitlements(
        consumer_id="c-1", username="c-1", customer="acme", has_access=True, currency="USD"
    )
    entry.prices.add(feature="tokens", unit_price="0.01")
    entry.budgets.add(budget_id="b-1", amount="1", spent=spent, hard=True)
    return snapshot_pb2.Snapshot(consumer_entitlements=[entry])


def spend(enforcer: Enforcer, tokens: int) -> None:
    enforcer.appended += 1
    enforcer.record(
        consumer_id="c-1",
        route_id="r",
        items=[UsageItem("openai", "m", "input", 200, tokens)],
        task=None,
    )


def left(enforcer: Enforcer) -> Decimal | None:
    return enforcer.remaining("c-1", provider="openai", model="m", task=None)[1]


def test_a_snapshot_built_before_a_store_keeps_that_usage_counted() -> None:
    reporter = FakeReporter()
    marker: list[tuple[str, int] | None] = [None]
    enforcer = Enforcer(acked=acked_events(reporter, marker=lambda: marker[0]))  # type: ignore[arg-type]
    enforcer.apply(compile_enforcement(budget_snapshot("0")))
    spend(enforcer, 30)  # 0.30, batch 1
    spend(enforcer, 20)  # 0.20, batch 2
    reporter.ack(1, sequence=1)
    reporter.ack(1, sequence=2)
    assert left(enforcer) == Decimal("0.5")
    # A snapshot whose build began after store 1 but before store 2 (spent 0.30), applied
    # after both ACKs: batch 2 is not in it and stays counted here.
    marker[0] = ("cp-1", 1)
    enforcer.apply(compile_enforcement(budget_snapshot("0.30")))
    assert left(enforcer) == Decimal("0.5")
    # The next snapshot holds both: nothing is counted twice.
    marker[0] = ("cp-1", 2)
    enforcer.apply(compile_enforcement(budget_snapshot("0.50")))
    assert left(enforcer) == Decimal("0.5")
    assert enforcer._money == {}


def test_without_a_usable_marker_every_acked_batch_is_taken_as_reflected() -> None:
    # An older control plane (no usage_epoch), a cached snapshot, another control-plane
    # process: as before, what was ACKed when the snapshot is applied is forgotten.
    for found in (None, ("", 0), ("cp-2", 0)):
        reporter = FakeReporter()
        enforcer = Enforcer(acked=acked_events(reporter, marker=lambda found=found: found))  # type: ignore[arg-type]
        enforcer.apply(compile_enforcement(budget_snapshot("0")))
        spend(enforcer, 30)
        reporter.ack(1, sequence=1)
        enforcer.apply(compile_enforcement(budget_snapshot("0.30")))
        assert left(enforcer) == Decimal("0.7"), found
