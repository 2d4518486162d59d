"""The data-plane registry API: what connected, what it holds, and who is incompatible."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from controlplane.configsync.registry import compatible
from meterline.admin.v1 import dataplanes_pb2, dataplanes_pb2_grpc
from meterline.dataplane.v1 import config_pb2

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
