"""The composition root: database, clock, config hub and gRPC services wired together."""

from __future__ import annotations

import asyncio
import logging
import os
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
from controlplane.api.entitlements import EntitlementServicer
from controlplane.api.errors import DomainErrorInterceptor
from controlplane.api.health import add_health_and_reflection, mark_not_serving, mark_serving
from controlplane.api.stripe_webhook import WebhookServer, webhook_server
from controlplane.clock import Clock, SystemClock
from controlplane.configsync.hub import ConfigHub
from controlplane.invoicing.lifecycle import InvoicingSettings, advance
from controlplane.invoicing.stripe_app import StripeApp
from controlplane.storage.db import Database
from controlplane.stripe_sync import StripeSettings
from meterline.admin.v1 import (
    billing_pb2,
    billing_pb2_grpc,
    catalog_pb2,
    catalog_pb2_grpc,
    customers_pb2,
    customers_pb2_grpc,
    dataplanes_pb2,
    dataplanes_pb2_grpc,
    entitlements_pb2,
    entitlements_pb2_grpc,
    gateway_pb2,
    gateway_pb2_grpc,
    usage_pb2,
    usage_pb2_grpc,
)
from meterline.dataplane.v1 import config_pb2, config_pb2_grpc
from meterline.dataplane.v1 import usage_pb2 as dp_usage_pb2
from meterline.dataplane.v1 import usage_pb2_grpc as dp_usage_pb2_grpc

# The .proto files whose services this server registers (health checks and reflection name them).
SERVICE_MODULES = (
    gateway_pb2,
    catalog_pb2,
    customers_pb2,
    billing_pb2,
    usage_pb2,
    dataplanes_pb2,
    entitlements_pb2,
    config_pb2,
    dp_usage_pb2,
)

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
        invoicing: InvoicingSettings | None = None,
        invoice_job_seconds: float | None = None,
        stripe: StripeApp | None = None,
        webhook_listen: str | None = None,
    ) -> None:
        self.db = db
        self.clock = clock or SystemClock()
        self.invoicing = invoicing or InvoicingSettings()
        # None: the invoicing job runs only when CloseInvoices is called (tests).
        self.invoice_job_seconds = invoice_job_seconds
        self._jobs: list[asyncio.Task[None]] = []
        # None: Stripe sync is off; invoices still work end to end.
        self.stripe = stripe
        self.webhook_listen = webhook_listen
        self.webhook_port = 0
        self._webhook: WebhookServer | None = None
        self._webhook_task: asyncio.Task[None] | None = None
        self.hub = ConfigHub(db, poll_seconds=poll_seconds, clock=self.clock)
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
            BillingServicer(
                db=db,
                clock=self.clock,
                hub=self.hub,
                invoicing=self.invoicing,
                on_issued=stripe.on_issued if stripe else None,
                retry_sync=stripe.retry if stripe else None,
            ),
            self.server,
        )
        usage_pb2_grpc.add_UsageServiceServicer_to_server(
            UsageQueryServicer(db=db, clock=self.clock, hub=self.hub), self.server
        )
        dataplanes_pb2_grpc.add_DataPlaneServiceServicer_to_server(
            DataPlaneServicer(db=db), self.server
        )
        entitlements_pb2_grpc.add_EntitlementServiceServicer_to_server(
            EntitlementServicer(db=db, clock=self.clock, hub=self.hub), self.server
        )
        self._config = ConfigServicer(db=db, clock=self.clock, hub=self.hub)
        config_pb2_grpc.add_ConfigServiceServicer_to_server(self._config, self.server)
        self._usage = UsageServicer(db=db, clock=self.clock, hub=self.hub)
        dp_usage_pb2_grpc.add_UsageServiceServicer_to_server(self._usage, self.server)
        # Every service registered above, for health checks and reflection (grpcurl).
        self._service_names = [
            service.full_name
            for module in SERVICE_MODULES
            for service in module.DESCRIPTOR.services_by_name.values()
        ]
        self._health = add_health_and_reflection(self.server, self._service_names)

    async def start(self) -> int:
        self.port = self.server.add_insecure_port(self.listen)
        if self.port == 0:
            raise OSError(f"cannot listen on {self.listen}")
        await self.server.start()
        await mark_serving(self._health, self._service_names)
        if self.invoice_job_seconds:
            self._jobs.append(asyncio.create_task(self._invoice_job(self.invoice_job_seconds)))
        if self.stripe is not None and self.webhook_listen:
            self._webhook = webhook_server(self.stripe, self.webhook_listen)
            self._webhook_task = asyncio.create_task(self._webhook.serve())
            while not self._webhook.started:
                if self._webhook_task.done():
                    raise OSError(f"cannot listen on {self.webhook_listen} (webhooks)")
                await asyncio.sleep(0.01)
            self.webhook_port = self._webhook.servers[0].sockets[0].getsockname()[1]
        return self.port

    async def _invoice_job(self, seconds: float) -> None:
        """Run the invoicing job forever; safe beside other replicas (row locks)."""
        while True:
            try:
                result = await asyncio.to_thread(
                    advance, self.db, now=self.clock.now(), settings=self.invoicing
                )
                if result.created or result.drafted or result.issued:
                    log.info(
                        "invoicing job: %d created, %d drafted, %d issued",
                        len(result.created),
                        len(result.drafted),
                        len(result.issued),
                    )
                if self.stripe is not None:
                    # Issued here or by a replica that died mid-sync: resume every pending one.
                    await asyncio.to_thread(self.stripe.sync_pending)
            except Exception:
                log.exception("invoicing job failed; retrying in %.0f s", seconds)
            await asyncio.sleep(seconds)

    async def stop(self, grace: float = 2.0) -> None:
        await mark_not_serving(self._health, self._service_names)
        for job in self._jobs:
            job.cancel()
        await asyncio.gather(*self._jobs, return_exceptions=True)
        if self._webhook is not None and self._webhook_task is not None:
            self._webhook.should_exit = True
            await asyncio.gather(self._webhook_task, return_exceptions=True)
        if self.stripe is not None:
            await self.stripe.drain()
        await self.server.stop(grace)
        await self._config.drain()
        await self._usage.drain()


async def serve(
    *,
    db_url: str,
    listen: str,
    run_migrations: bool = True,
    invoicing: InvoicingSettings | None = None,
    invoice_job_seconds: float | None = 60.0,
    webhook_listen: str | None = None,
) -> None:
    """Run a control plane until SIGINT/SIGTERM.

    Stripe sync is on when ``METERLINE_STRIPE_API_KEY`` is set (``StripeSettings.from_env``);
    webhooks are served on ``webhook_listen`` when given.
    """
    db = Database.connect(db_url, run_migrations=run_migrations)
    clock = SystemClock()
    settings = StripeSettings.from_env(os.environ)
    stripe = StripeApp(db=db, settings=settings, clock=clock) if settings else None
    log.info("Stripe sync: %s", settings if settings else "off (METERLINE_STRIPE_API_KEY unset)")
    if webhook_listen and stripe is None:
        log.warning("--webhook-listen ignored: Stripe sync is off")
    cp = ControlPlane(
        db=db,
        listen=listen,
        clock=clock,
        invoicing=invoicing,
        invoice_job_seconds=invoice_job_seconds,
        stripe=stripe,
        webhook_listen=webhook_listen,
    )
    port = await cp.start()
    host = listen.rsplit(":", 1)[0]
    log.info(
        "control plane listening on %s:%d (database %s)",
        host,
        port,
        db.engine.url.render_as_string(hide_password=True),
    )
    print(f"control plane listening on {host}:{port}", flush=True)
    if cp.webhook_port:
        print(f"Stripe webhooks on port {cp.webhook_port} at /stripe/webhook", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await cp.stop()
    db.dispose()
