"""The data-plane registry API: what connected, what it holds, and who is incompatible."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, timedelta

import grpc
import pytest

from controlplane.api.cluster.dataplane import ConfigServicer
from controlplane.api.errors import DomainErrorInterceptor
from controlplane.api.operator.dataplanes import DataPlaneServicer
from controlplane.clock import FrozenClock
from controlplane.configsync import registry
from controlplane.configsync.hub import ConfigHub
from controlplane.configsync.registry import SyncStatus, compatible
from controlplane.storage.db import Database
from meterline.admin.v1 import dataplanes_pb2, dataplanes_pb2_grpc
from meterline.dataplane.v1 import config_pb2, config_pb2_grpc

from .conftest import T0


def registry_stub(harness) -> dataplanes_pb2_grpc.DataPlaneServiceStub:
    channel = grpc.aio.insecure_channel(harness.address)
    return dataplanes_pb2_grpc.DataPlaneServiceStub(channel)


async def wait_for_status(stub, name: str, status: int) -> dataplanes_pb2.DataPlane:
    async with asyncio.timeout(5):
        while True:
            try:
                plane = await stub.GetDataPlane(dataplanes_pb2.GetDataPlaneRequest(name=name))
                if plane.sync_status == status:
                    return plane
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.NOT_FOUND:
                    raise
            await asyncio.sleep(0.02)


async def test_a_connected_data_plane_is_listed_with_its_version_and_status(harness) -> None:
    stub = registry_stub(harness)
    # Given a data plane that connects and ACKs the snapshot it gets
    call = harness.config_stream.StreamConfig()
    await call.write(
        config_pb2.ConfigRequest(
            node=config_pb2.Node(id="dp-a", hostname="edge-1", version="0.3.1")
        )
    )
    snapshot = await asyncio.wait_for(call.read(), 5)
    await call.write(
        config_pb2.ConfigRequest(version_info=snapshot.version_info, response_nonce=snapshot.nonce)
    )
    # Then the registry shows it in sync, with what it reported
    plane = await wait_for_status(stub, "dataplanes/dp-a", dataplanes_pb2.SYNC_STATUS_IN_SYNC)
    assert (plane.name, plane.node_id, plane.hostname, plane.version) == (
        "dataplanes/dp-a",
        "dp-a",
        "edge-1",
        "0.3.1",
    )
    assert plane.config_version == snapshot.version_info
    assert plane.last_seen_time.ToDatetime().replace(tzinfo=T0.tzinfo) == T0
    listed = await stub.ListDataPlanes(dataplanes_pb2.ListDataPlanesRequest())
    assert [p.node_id for p in listed.data_planes] == ["dp-a"]

    # When it goes away, then it is shown disconnected, still with its config version
    call.cancel()
    plane = await wait_for_status(stub, "dataplanes/dp-a", dataplanes_pb2.SYNC_STATUS_DISCONNECTED)
    assert plane.config_version == snapshot.version_info


async def test_a_data_plane_of_another_major_version_is_refused_and_marked(harness) -> None:
    stub = registry_stub(harness)
    call = harness.config_stream.StreamConfig()
    await call.write(
        config_pb2.ConfigRequest(node=config_pb2.Node(id="dp-future", version="99.0.0"))
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await asyncio.wait_for(call.read(), 5)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "incompatible" in err.value.details()
    plane = await wait_for_status(
        stub, "dataplanes/dp-future", dataplanes_pb2.SYNC_STATUS_INCOMPATIBLE
    )
    assert plane.version == "99.0.0"
    assert "major versions differ" in plane.error


async def test_get_names_errors(harness) -> None:
    stub = registry_stub(harness)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetDataPlane(dataplanes_pb2.GetDataPlaneRequest(name="dataplanes/nobody"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetDataPlane(dataplanes_pb2.GetDataPlaneRequest(name="nobody"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(
    ("control_plane", "data_plane", "expected"),
    [
        pytest.param("1.4.2", "1.0.0", True, id="same-major"),
        pytest.param("1.4.2", "2.0.0", False, id="newer-major"),
        pytest.param("0.1.0", "0.9.0", True, id="zero-major"),
        pytest.param("1.0.0", "", True, id="unreported"),
    ],
)
def test_compatibility_is_by_major_version(control_plane, data_plane, expected) -> None:
    assert compatible(control_plane=control_plane, data_plane=data_plane) is expected


async def test_a_late_disconnect_of_an_old_stream_does_not_hide_a_new_one(harness) -> None:
    # Given a data plane whose stream on replica A was replaced by one on replica B...
    db = harness.cp.db
    with db.begin() as conn:
        assert registry.record(
            conn, node_id="dp-r", now=T0, status=SyncStatus.CONNECTED, stream_id="a", connect=True
        )
    later = T0 + timedelta(seconds=1)
    with db.begin() as conn:
        assert registry.record(
            conn,
            node_id="dp-r",
            now=later,
            status=SyncStatus.CONNECTED,
            stream_id="b",
            connect=True,
        )
    # ...when A's writes land late (its ACK, heartbeat and disconnect), they change nothing...
    with db.begin() as conn:
        assert not registry.record(
            conn, node_id="dp-r", now=later, status=SyncStatus.IN_SYNC, stream_id="a"
        )
        assert not registry.heartbeat(conn, node_id="dp-r", stream_id="a", now=later)
        assert not registry.record(
            conn, node_id="dp-r", now=later, status=SyncStatus.DISCONNECTED, stream_id="a"
        )
    stub = registry_stub(harness)
    plane = await stub.GetDataPlane(dataplanes_pb2.GetDataPlaneRequest(name="dataplanes/dp-r"))
    assert plane.sync_status == dataplanes_pb2.SYNC_STATUS_CONNECTED
    # ...while B's own writes apply.
    with db.begin() as conn:
        assert registry.record(
            conn, node_id="dp-r", now=later, status=SyncStatus.DISCONNECTED, stream_id="b"
        )
    plane = await stub.GetDataPlane(dataplanes_pb2.GetDataPlaneRequest(name="dataplanes/dp-r"))
    assert plane.sync_status == dataplanes_pb2.SYNC_STATUS_DISCONNECTED


async def test_heartbeats_keep_a_data_plane_fresh_and_silence_makes_it_stale(
    migrated_db_url,
) -> None:
    # Given a control plane whose streams beat every 50 ms, on a clock that moves when told
    clock = FrozenClock(T0)
    db = Database.connect(migrated_db_url)
    hub = ConfigHub(db, poll_seconds=60, clock=clock)
    server = grpc.aio.server(interceptors=[DomainErrorInterceptor()])
    config = ConfigServicer(db=db, clock=clock, hub=hub, heartbeat_seconds=0.05)
    config_pb2_grpc.add_ConfigServiceServicer_to_server(config, server)
    dataplanes_pb2_grpc.add_DataPlaneServiceServicer_to_server(
        DataPlaneServicer(db=db, clock=clock, stale_after=timedelta(seconds=45)), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = dataplanes_pb2_grpc.DataPlaneServiceStub(channel)
            call = config_pb2_grpc.ConfigServiceStub(channel).StreamConfig()
            await call.write(config_pb2.ConfigRequest(node=config_pb2.Node(id="dp-beat")))
            await wait_for_status(stub, "dataplanes/dp-beat", dataplanes_pb2.SYNC_STATUS_CONNECTED)
            # When a minute passes with the stream open, the heartbeat refreshes last_seen...
            clock.set(T0 + timedelta(minutes=1))
            plane = await wait_for_status(
                stub, "dataplanes/dp-beat", dataplanes_pb2.SYNC_STATUS_CONNECTED
            )
            async with asyncio.timeout(5):
                while plane.last_seen_time.ToDatetime(tzinfo=UTC) != clock.now():
                    await asyncio.sleep(0.02)
                    plane = await stub.GetDataPlane(
                        dataplanes_pb2.GetDataPlaneRequest(name="dataplanes/dp-beat")
                    )
            call.cancel()
            await wait_for_status(
                stub, "dataplanes/dp-beat", dataplanes_pb2.SYNC_STATUS_DISCONNECTED
            )
        # When a control plane dies without recording the disconnect (kill -9: simulated by
        # the row it leaves behind), the silence shows as stale after the threshold.
        with db.begin() as conn:
            registry.record(
                conn,
                node_id="dp-orphan",
                now=clock.now(),
                status=SyncStatus.IN_SYNC,
                stream_id="gone",
                connect=True,
            )
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = dataplanes_pb2_grpc.DataPlaneServiceStub(channel)
            name = dataplanes_pb2.GetDataPlaneRequest(name="dataplanes/dp-orphan")
            assert (await stub.GetDataPlane(name)).sync_status == dataplanes_pb2.SYNC_STATUS_IN_SYNC
            clock.set(clock.now() + timedelta(seconds=46))
            assert (await stub.GetDataPlane(name)).sync_status == dataplanes_pb2.SYNC_STATUS_STALE
            listed = await stub.ListDataPlanes(dataplanes_pb2.ListDataPlanesRequest())
            statuses = {p.node_id: p.sync_status for p in listed.data_planes}
            # A disconnected data plane stays disconnected, however old.
            assert statuses == {
                "dp-beat": dataplanes_pb2.SYNC_STATUS_DISCONNECTED,
                "dp-orphan": dataplanes_pb2.SYNC_STATUS_STALE,
            }
    finally:
        await server.stop(0)
        await config.drain()
        await asyncio.get_running_loop().shutdown_default_executor()
        db.dispose()


async def test_a_disconnect_is_written_after_a_slow_ack_write(harness, monkeypatch) -> None:
    # The cause of a flaky enforcement test: a data plane ACKs and leaves at once; the ACK's
    # IN_SYNC write (a thread) committed after the DISCONNECTED one, so the data plane counted
    # as live (and kept a balance slice) until its heartbeat went stale.
    stub = registry_stub(harness)
    real_record = registry.record
    in_sync_started = asyncio.Event()
    loop = asyncio.get_running_loop()

    def slow_in_sync(conn, **kwargs):
        if kwargs.get("status") == SyncStatus.IN_SYNC:
            loop.call_soon_threadsafe(in_sync_started.set)
            # Long enough for the disconnect to be written first, were it not waited for.
            time.sleep(0.3)
        return real_record(conn, **kwargs)

    monkeypatch.setattr(registry, "record", slow_in_sync)
    # Given a data plane that ACKs its snapshot
    call = harness.config_stream.StreamConfig()
    await call.write(config_pb2.ConfigRequest(node=config_pb2.Node(id="dp-s", version="0.1.0")))
    snapshot = await asyncio.wait_for(call.read(), 5)
    await call.write(
        config_pb2.ConfigRequest(version_info=snapshot.version_info, response_nonce=snapshot.nonce)
    )
    # When it leaves while the ACK's write is still running
    await asyncio.wait_for(in_sync_started.wait(), 5)
    call.cancel()
    # Then it ends disconnected, and stays so once every write has landed
    await wait_for_status(stub, "dataplanes/dp-s", dataplanes_pb2.SYNC_STATUS_DISCONNECTED)
    await asyncio.sleep(0.5)
    plane = await stub.GetDataPlane(dataplanes_pb2.GetDataPlaneRequest(name="dataplanes/dp-s"))
    assert plane.sync_status == dataplanes_pb2.SYNC_STATUS_DISCONNECTED
