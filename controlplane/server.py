"""The composition root: database, clock, config hub and gRPC services wired together."""

from __future__ import annotations

import asyncio
import logging
import signal

import grpc

from controlplane.api.admin import (
    BillingServicer,
    CatalogServicer,
    CustomerServicer,
    GatewayServicer,
    UsageQueryServicer,
)
from controlplane.api.dataplane import ConfigServicer, UsageServicer
from controlplane.api.dataplanes import DataPlaneServicer
from controlplane.api.errors import DomainErrorInterceptor
from controlplane.clock import Clock, SystemClock
from controlplane.configsync.hub import ConfigHub
from controlplane.storage.db import Database
from meterline.admin.v1 import (
    billing_pb2_grpc,
    catalog_pb2_grpc,
    customers_pb2_grpc,
    dataplanes_pb2_grpc,
    gateway_pb2_grpc,
    usage_pb2_grpc,
)
from meterline.dataplane.v1 import config_pb2_grpc
from meterline.dataplane.v1 import usage_pb2_grpc as dp_usage_pb2_grpc

log = logging.getLogger(__name__)


class ControlPlane:
    """A running control plane: one grpc.aio server over one database."""

    def __init__(
        self,
        *,
        db: Database,
        listen: str = "127.0.0.1:50051",
        clock: Clock | None = None,
        poll_seconds: float = 2.0,
    ) -> None:
        self.db = db
        self.clock = clock or SystemClock()
        self.hub = ConfigHub(db, poll_seconds=poll_seconds)
        self.listen = listen
        self.port = 0
        self.server = grpc.aio.server(
            interceptors=[DomainErrorInterceptor()],
            options=[
                # Data planes hold streams open for days: let them probe dead links.
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
            ],
        )
        gateway_pb2_grpc.add_GatewayServiceServicer_to_server(
            GatewayServicer(db=db, clock=self.clock, hub=self.hub), self.server
        )
        catalog_pb2_grpc.add_CatalogServiceServicer_to_server(
            CatalogServicer(db=db, clock=self.clock, hub=self.hub), self.server
        )
        customers_pb2_grpc.add_CustomerServiceServicer_to_server(
            CustomerServicer(db=db, clock=self.clock, hub=self.hub), self.server
        )
        billing_pb2_grpc.add_BillingServiceServicer_to_server(
            BillingServicer(db=db, clock=self.clock, hub=self.hub), self.server
        )
        usage_pb2_grpc.add_UsageServiceServicer_to_server(
            UsageQueryServicer(db=db, clock=self.clock, hub=self.hub), self.server
        )
        dataplanes_pb2_grpc.add_DataPlaneServiceServicer_to_server(
            DataPlaneServicer(db=db), self.server
        )
        self._config = ConfigServicer(db=db, clock=self.clock, hub=self.hub)
        config_pb2_grpc.add_ConfigServiceServicer_to_server(self._config, self.server)
        dp_usage_pb2_grpc.add_UsageServiceServicer_to_server(
            UsageServicer(db=db, clock=self.clock), self.server
        )

    async def start(self) -> int:
        self.port = self.server.add_insecure_port(self.listen)
        if self.port == 0:
            raise OSError(f"cannot listen on {self.listen}")
        await self.server.start()
        return self.port

    async def stop(self, grace: float = 2.0) -> None:
        await self.server.stop(grace)
        await self._config.drain()


async def serve(*, db_url: str, listen: str) -> None:
    """Run a control plane until SIGINT/SIGTERM."""
    db = Database.connect(db_url)
    cp = ControlPlane(db=db, listen=listen)
    port = await cp.start()
    host = listen.rsplit(":", 1)[0]
    log.info(
        "control plane listening on %s:%d (database %s)",
        host,
        port,
        db.engine.url.render_as_string(hide_password=True),
    )
    print(f"control plane listening on {host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await cp.stop()
    db.dispose()
