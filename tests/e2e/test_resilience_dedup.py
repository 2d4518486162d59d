"""Duplicate and reordered usage batches are stored once, across a control-plane crash too.

A whole control-plane process on SQLite and on PostgreSQL, driven over the data-plane usage
stream the way a data plane that resends after failures would.
"""

from __future__ import annotations

import grpc
import pytest

from dataplane.translate.openai_format import TokenUsage
from dataplane.usage.events import llm_token_events
from meterline.admin.v1 import usage_pb2 as admin_usage_pb2
from meterline.admin.v1 import usage_pb2_grpc as admin_usage_pb2_grpc
from meterline.dataplane.v1 import usage_pb2, usage_pb2_grpc
from support.processes import free_port, grpc_ready, wait_until


def request_events(i: int) -> list[usage_pb2.UsageEvent]:
    return list(
        llm_token_events(
            request_id=f"req-{i}",
            source="dp-dedup",
            subject="acme-corp",
            time_ns=1_790_000_000_000_000_000 + i,
            provider="openai",
            model="gpt-4o-mini",
            status_code=200,
            route="chat",
            usage=TokenUsage(input_tokens=10 * i, output_tokens=i),
            estimated=False,
        )
    )


def send(address: str, batches: list[usage_pb2.UsageBatch]) -> list[tuple[str, int, int]]:
    with grpc.insecure_channel(address) as channel:
        acks = usage_pb2_grpc.UsageServiceStub(channel).StreamUsage(iter(batches), timeout=10)
        return [(a.batch_id, a.accepted_count, a.duplicate_count) for a in acks]


def stored(address: str) -> list[admin_usage_pb2.UsageEvent]:
    with grpc.insecure_channel(address) as channel:
        stub = admin_usage_pb2_grpc.UsageServiceStub(channel)
        return list(
            stub.ListUsageEvents(
                admin_usage_pb2.ListUsageEventsRequest(page_size=1000)
            ).usage_events
        )


@pytest.fixture
def control_plane(processes, db_url):
    address = f"127.0.0.1:{free_port()}"

    def start(name: str):
        process = processes.start(
            name, "-m", "controlplane", "controlplane", "--db", db_url, "--listen", address
        )
        wait_until(lambda: grpc_ready(address), timeout=15, what="control plane")
        return process

    return address, start


def test_duplicate_and_reordered_batches_are_stored_once(control_plane, processes) -> None:
    address, start = control_plane
    cp = start("cp-1")
    a = usage_pb2.UsageBatch(batch_id="a", events=request_events(1) + request_events(2))
    b = usage_pb2.UsageBatch(batch_id="b", events=request_events(3))
    # Given batch b before a, then b again (a resend keeps its batch id)
    assert send(address, [b, a, b]) == [("b", 2, 0), ("a", 4, 0), ("b", 0, 2)]

    # When the control plane crashes and a data plane resends a's events reordered, under a
    # new batch id, mixed with new ones
    processes.kill9(cp)
    start("cp-2")
    mixed = usage_pb2.UsageBatch(
        batch_id="a-again", events=[*reversed(a.events), *request_events(4)]
    )
    assert send(address, [mixed]) == [("a-again", 2, 4)]

    # Then every event is stored once, with its tokens
    events = stored(address)
    assert sorted(e.id for e in events) == sorted(
        f"req-{i}:{kind}" for i in range(1, 5) for kind in ("input", "output")
    )
    assert sum(e.value for e in events) == sum(11 * i for i in range(1, 5))
