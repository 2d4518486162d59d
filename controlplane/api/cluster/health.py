"""The standard gRPC health service and server reflection, so grpcurl and probes work."""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection


def add_health_and_reflection(
    server: grpc.aio.Server, services: Iterable[str]
) -> health.aio.HealthServicer:
    """Serve grpc.health.v1 (every service SERVING, "" for the whole server) and reflection."""
    names = list(services)
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    reflection.enable_server_reflection(
        [
            *names,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ],
        server,
    )
    return servicer


async def mark_serving(servicer: health.aio.HealthServicer, services: Iterable[str]) -> None:
    for name in ["", *services]:
        await servicer.set(name, health_pb2.HealthCheckResponse.SERVING)


async def mark_not_serving(servicer: health.aio.HealthServicer, services: Iterable[str]) -> None:
    """Probes see the server leave before it stops accepting."""
    for name in ["", *services]:
        await servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
