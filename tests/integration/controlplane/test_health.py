"""gRPC health checking and server reflection answer on the control plane."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from meterline.admin.v1 import gateway_pb2

GATEWAY = gateway_pb2.DESCRIPTOR.services_by_name["GatewayService"].full_name


async def test_health_and_reflection(harness) -> None:
    async with grpc.aio.insecure_channel(harness.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", GATEWAY):
            response = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert response.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        call = reflection.ServerReflectionInfo()
        await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
        answer = await call.read()
        await call.done_writing()
        names = {s.name for s in answer.list_services_response.service}
        assert {GATEWAY, "grpc.health.v1.Health", "meterline.dataplane.v1.ConfigService"} <= names


async def test_unknown_service_is_not_found(harness) -> None:
    async with grpc.aio.insecure_channel(harness.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        try:
            await health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
        except grpc.aio.AioRpcError as err:
            assert err.code() == grpc.StatusCode.NOT_FOUND
        else:
            raise AssertionError("an unknown service must not be reported healthy")
