"""The composition root: database, clock, config hub and gRPC services wired together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from pathlib import Path

import grpc
import httpx

from controlplane.api.auth import (
    ClusterAuthInterceptor,
    TokenAuthInterceptor,
    TokenEntry,
    Trust,
)
from controlplane.api.cluster.dataplane import ConfigServicer, UsageServicer
from controlplane.api.cluster.health import (
    add_health_and_reflection,
    mark_not_serving,
    mark_serving,
)
from controlplane.api.errors import DomainErrorInterceptor
from controlplane.api.operator.admin import (
    BillingServicer,
    CatalogServicer,
    CustomerServicer,
    GatewayServicer,
)
from controlplane.api.operator.credits import CreditServicer
from controlplane.api.operator.dataplanes import DataPlaneServicer
from controlplane.api.operator.entitlements import EntitlementServicer
from controlplane.api.operator.notifications import NotificationServicer
from controlplane.api.operator.usage import UsageQueryServicer
from controlplane.api.stripe_webhook import WebhookServer, webhook_server
from controlplane.api.tracing import TracingInterceptor
from controlplane.clock import Clock, SystemClock
from controlplane.configsync.hub import ConfigHub
from controlplane.console.api import Servicers
from controlplane.console.app import Console, ConsoleSettings
from controlplane.console.server import ConsoleServer
from controlplane.credits import jobs as credit_jobs
from controlplane.credits.types import RechargeOutcome
from controlplane.gateway import storage as gateway_storage
from controlplane.gateway.secrets import SecretBox
from controlplane.invoicing.lifecycle import InvoicingSettings, advance
from controlplane.metrics import ControlPlaneMetrics, MetricsServer
from controlplane.notifications import service as notifications_service
from controlplane.notifications.types import NotificationSettings
from controlplane.storage.db import Database, current_revision
from controlplane.stripe_sync import StripeSettings
from controlplane.stripe_sync.app import StripeApp
from controlplane.tracing import configure_from_environment
from controlplane.tracing import shutdown as shutdown_tracing
from meterline.admin.v1 import (
    billing_pb2,
    billing_pb2_grpc,
    catalog_pb2,
    catalog_pb2_grpc,
    credits_pb2,
    credits_pb2_grpc,
    customers_pb2,
    customers_pb2_grpc,
    dataplanes_pb2,
    dataplanes_pb2_grpc,
    entitlements_pb2,
    entitlements_pb2_grpc,
    gateway_pb2,
    gateway_pb2_grpc,
    notifications_pb2,
    notifications_pb2_grpc,
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
    credits_pb2,
    notifications_pb2,
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
        trust: Trust | None = None,
        metrics: ControlPlaneMetrics | None = None,
        metrics_listen: str | None = None,
        notifications: NotificationSettings | None = None,
        notification_job_seconds: float | None = None,
        balance_slicing: bool = True,
        console_listen: str | None = None,
        console_settings: ConsoleSettings | None = None,
        console_tokens: list[TokenEntry] | None = None,
        console_tls: tuple[Path, Path] | None = None,
        secrets: SecretBox | None = None,
    ) -> None:
        self.db = db
        # Provider keys at rest are sealed under it (None: plaintext, development only).
        self.secrets = secrets
        self.notifications = notifications or NotificationSettings()
        # None: alerts are evaluated and delivered only when EvaluateNotifications is called.
        self.notification_job_seconds = notification_job_seconds
        self._notify_lock = asyncio.Lock()
        self._webhook_client: httpx.AsyncClient | None = None
        self.metrics = metrics or ControlPlaneMetrics()
        # None: no /metrics endpoint (the metrics are still counted).
        self.metrics_listen = metrics_listen
        self.metrics_port = 0
        self._metrics_server: MetricsServer | None = None
        # None: development mode, every service on ``listen`` in plaintext without auth.
        self.trust = trust
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
        # balance_slicing: each data plane admits against its slice of shared balances.
        self.hub = ConfigHub(
            db,
            poll_seconds=poll_seconds,
            clock=self.clock,
            balance_slicing=balance_slicing,
            secrets=secrets,
        )
        self.listen = listen
        self.port = 0
        server_options = [
            # Data planes hold streams open for days: let them probe dead links.
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
            # gRPC's default (SO_REUSEPORT on) lets a second control plane bind a port already
            # in use and silently share its calls: refuse to start instead, as the data plane.
            ("grpc.so_reuseport", 0),
        ]
        operator_interceptors: list[grpc.aio.ServerInterceptor] = [DomainErrorInterceptor()]
        if trust is not None:
            operator_interceptors.insert(
                0, TokenAuthInterceptor(trust.tokens, guarded_prefixes=("/meterline.admin.v1.",))
            )
        # With trust, data planes get a listener of their own (mTLS, data-plane services only).
        self.cluster_port = 0
        # Ends the data planes' streams at stop (and, with trust, checks their certificates).
        self._cluster_auth = ClusterAuthInterceptor(check_certificates=trust is not None)
        if trust is None:
            operator_interceptors.insert(0, self._cluster_auth)
        # Outermost: counts (and, with OTEL_* set, traces) every call, refused ones included.
        operator_interceptors.insert(0, self.metrics.interceptor)
        tracing_interceptor = TracingInterceptor()
        operator_interceptors.insert(0, tracing_interceptor)
        self.server = grpc.aio.server(interceptors=operator_interceptors, options=server_options)
        self.cluster_server = self.server
        if trust is not None:
            self.cluster_server = grpc.aio.server(
                interceptors=[
                    tracing_interceptor,
                    self.metrics.interceptor,
                    self._cluster_auth,
                    DomainErrorInterceptor(),
                ],
                options=server_options,
            )
        # The console calls these same objects in process (controlplane/console/api.py).
        self.servicers = Servicers(
            gateway=GatewayServicer(
                db=db,
                clock=self.clock,
                hub=self.hub,
                allow_private_webhooks=self.notifications.allow_private_urls,
                secrets=secrets,
            ),
            catalog=CatalogServicer(db=db, clock=self.clock, hub=self.hub),
            customers=CustomerServicer(db=db, clock=self.clock, hub=self.hub),
            billing=BillingServicer(
                db=db,
                clock=self.clock,
                hub=self.hub,
                invoicing=self.invoicing,
                on_issued=stripe.on_issued if stripe else None,
                retry_sync=stripe.retry if stripe else None,
                on_settled=stripe.on_settled if stripe else None,
            ),
            usage=UsageQueryServicer(db=db, clock=self.clock, hub=self.hub),
            dataplanes=DataPlaneServicer(db=db, clock=self.clock),
            entitlements=EntitlementServicer(db=db, clock=self.clock, hub=self.hub),
            notifications=NotificationServicer(
                db=db,
                clock=self.clock,
                run_once=self.run_notifications,
                allow_private_urls=self.notifications.allow_private_urls,
            ),
        )
        gateway_pb2_grpc.add_GatewayServiceServicer_to_server(self.servicers.gateway, self.server)
        catalog_pb2_grpc.add_CatalogServiceServicer_to_server(self.servicers.catalog, self.server)
        customers_pb2_grpc.add_CustomerServiceServicer_to_server(
            self.servicers.customers, self.server
        )
        billing_pb2_grpc.add_BillingServiceServicer_to_server(self.servicers.billing, self.server)
        usage_pb2_grpc.add_UsageServiceServicer_to_server(self.servicers.usage, self.server)
        dataplanes_pb2_grpc.add_DataPlaneServiceServicer_to_server(
            self.servicers.dataplanes, self.server
        )
        entitlements_pb2_grpc.add_EntitlementServiceServicer_to_server(
            self.servicers.entitlements, self.server
        )
        credits_pb2_grpc.add_CreditServiceServicer_to_server(
            CreditServicer(db=db, clock=self.clock, on_issued=stripe.on_issued if stripe else None),
            self.server,
        )
        notifications_pb2_grpc.add_NotificationServiceServicer_to_server(
            self.servicers.notifications, self.server
        )
        # None: no console. Its operator tokens are the gRPC API's (or, in development mode,
        # a tokens file given for the console alone).
        self.console_listen = console_listen
        self.console_port = 0
        self.console_scheme = "http"
        self._console_server: ConsoleServer | None = None
        if console_listen:
            tokens = (
                console_tokens if console_tokens is not None else (trust.tokens if trust else [])
            )
            console = Console(
                servicers=self.servicers,
                db=db,
                clock=self.clock,
                tokens=tokens,
                settings=console_settings,
            )
            self.console = console
            self._console_server = ConsoleServer(
                console,
                console_listen,
                tls_cert=console_tls[0] if console_tls else None,
                tls_key=console_tls[1] if console_tls else None,
            )
        self._config = ConfigServicer(db=db, clock=self.clock, hub=self.hub, metrics=self.metrics)
        config_pb2_grpc.add_ConfigServiceServicer_to_server(self._config, self.cluster_server)
        self._credit_subjects: set[str] = set()
        self._credit_task: asyncio.Task[None] | None = None
        self._usage = UsageServicer(
            db=db,
            clock=self.clock,
            hub=self.hub,
            metrics=self.metrics,
            on_stored=self._usage_stored,
        )
        dp_usage_pb2_grpc.add_UsageServiceServicer_to_server(self._usage, self.cluster_server)
        # Every service registered above, for health checks and reflection (grpcurl).
        self._service_names = [
            service.full_name
            for module in SERVICE_MODULES
            if trust is None or module not in (config_pb2, dp_usage_pb2)
            for service in module.DESCRIPTOR.services_by_name.values()
        ]
        self._health = add_health_and_reflection(self.server, self._service_names)

    async def start(self) -> int:
        """Bind and start; OSError (one line) when a listen address is taken or unusable."""
        trust = self.trust
        if trust is not None and trust.operator_tls:
            credentials = trust.tls.server_credentials(require_client_auth=False)
            self.port = _bind(self.server, self.listen, credentials)
        else:
            self.port = _bind(self.server, self.listen, None)
        if trust is not None:
            self.cluster_port = _bind(
                self.cluster_server,
                trust.cluster_listen,
                trust.tls.server_credentials(require_client_auth=True),
                what=" (cluster)",
            )
            await self.cluster_server.start()
        else:
            self.cluster_port = self.port
        await self.server.start()
        await mark_serving(self._health, self._service_names)
        if self.metrics_listen:
            self._metrics_server = self.metrics.serve(self.metrics_listen)
            self.metrics_port = self._metrics_server.port
        if self._console_server is not None:
            self.console_port = await self._console_server.start()
            self.console_scheme = self._console_server.scheme
        if self.invoice_job_seconds:
            self._jobs.append(asyncio.create_task(self._invoice_job(self.invoice_job_seconds)))
        if self.notification_job_seconds:
            self._jobs.append(
                asyncio.create_task(self._notification_job(self.notification_job_seconds))
            )
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
                transitions = self.metrics.invoice_transitions
                transitions.labels("gathering").inc(len(result.created))
                transitions.labels("draft").inc(len(result.drafted))
                transitions.labels("issued").inc(len(result.issued))
                self.metrics.invoice_job_failures.inc(len(result.failed))
                # Auto-recharge and credit alerts of every watched customer (idle ones too).
                await self.run_credits()
                if self.stripe is not None:
                    # Issued here or by a replica that died mid-sync: resume every pending one.
                    await asyncio.to_thread(self.stripe.sync_pending)
            except Exception:
                log.exception("invoicing job failed; retrying in %.0f s", seconds)
            await asyncio.sleep(seconds)

    async def run_credits(self, *, subjects: set[str] | None = None) -> list[RechargeOutcome]:
        """Auto-recharge, credit alerts and spending samples once (for the customers of
        ``subjects``, or every watched customer); the top-ups issued, sent to Stripe."""
        issued = await asyncio.to_thread(
            credit_jobs.run, self.db, now=self.clock.now(), subjects=subjects
        )
        if self.stripe is not None:
            for outcome in issued:
                await self.stripe.on_issued(outcome.invoice_id)
        return issued

    def _usage_stored(self, subjects: set[str]) -> None:
        """A usage batch was stored: run the credit job for its subjects, one run at a time
        (batches arriving meanwhile are gathered into the next run)."""
        self._credit_subjects |= subjects
        if self._credit_task is None or self._credit_task.done():
            self._credit_task = asyncio.create_task(self._credits_after_usage())

    async def _credits_after_usage(self) -> None:
        while self._credit_subjects:
            subjects, self._credit_subjects = self._credit_subjects, set()
            try:
                await self.run_credits(subjects=subjects)
            except Exception:
                log.exception("credit job after usage failed")

    async def run_notifications(self) -> tuple[int, int]:
        """Evaluate alert rules and deliver due webhooks once: (events created, attempts)."""
        async with self._notify_lock:
            if self._webhook_client is None:
                self._webhook_client = httpx.AsyncClient(
                    timeout=self.notifications.timeout_seconds, follow_redirects=False
                )
            return await notifications_service.run_once(
                self.db,
                clock=self.clock,
                settings=self.notifications,
                client=self._webhook_client,
                # Credit alerts too (they are also evaluated with auto-recharge after usage).
                also=lambda now: credit_jobs.run_alerts(self.db, now=now),
            )

    async def _notification_job(self, seconds: float) -> None:
        """Alerts after usage arrives (the hub's change signal) and at least every ``seconds``;
        safe beside other replicas (unique event keys, SKIP LOCKED deliveries)."""
        while True:
            try:
                created, attempts = await self.run_notifications()
                if created or attempts:
                    log.info("notifications: %d events, %d delivery attempts", created, attempts)
            except Exception:
                log.exception("notification job failed; retrying in %.0f s", seconds)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.hub.wait_for_change(), timeout=seconds)

    async def stop(self, grace: float = 2.0) -> None:
        await mark_not_serving(self._health, self._service_names)
        if self._metrics_server is not None:
            await asyncio.to_thread(self._metrics_server.stop)
            self._metrics_server = None
        if self._console_server is not None:
            await self._console_server.stop()
        for job in self._jobs:
            job.cancel()
        await asyncio.gather(*self._jobs, return_exceptions=True)
        if self._credit_task is not None:
            self._credit_task.cancel()
            await asyncio.gather(self._credit_task, return_exceptions=True)
        if self._webhook_client is not None:
            await self._webhook_client.aclose()
            self._webhook_client = None
        if self._webhook is not None and self._webhook_task is not None:
            self._webhook.should_exit = True
            await asyncio.gather(self._webhook_task, return_exceptions=True)
        if self.stripe is not None:
            await self.stripe.drain()
        # End the data planes' streams first (they reconnect, to another replica if they know
        # one), then give calls in flight (a usage batch being stored) the grace period.
        self._cluster_auth.drain()
        if self.cluster_server is not self.server:
            await self.cluster_server.stop(grace)
        await self.server.stop(grace)
        await self._config.drain()
        await self._usage.drain()


def _bind(
    server: grpc.aio.Server,
    address: str,
    credentials: grpc.ServerCredentials | None,
    *,
    what: str = "",
) -> int:
    """The port ``server`` listens on at ``address``; OSError if it cannot bind there."""
    try:
        if credentials is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, credentials)
    except RuntimeError:  # grpcio >= 1.50 raises where older versions returned 0
        port = 0
    if port == 0:
        raise OSError(f"cannot listen on {address}{what}: the address is in use or not available")
    return port


async def serve(
    *,
    db_url: str,
    listen: str,
    run_migrations: bool = True,
    invoicing: InvoicingSettings | None = None,
    invoice_job_seconds: float | None = 60.0,
    notification_job_seconds: float | None = 10.0,
    webhook_listen: str | None = None,
    trust: Trust | None = None,
    secrets: SecretBox | None = None,
    metrics_listen: str | None = None,
    balance_slicing: bool = True,
    allow_private_webhook_urls: bool = False,
    console_listen: str | None = None,
    console_settings: ConsoleSettings | None = None,
    console_tokens: list[TokenEntry] | None = None,
    console_tls: tuple[Path, Path] | None = None,
) -> None:
    """Run a control plane until SIGINT/SIGTERM (``trust`` None: development mode).

    ``secrets`` encrypts provider keys at rest; at start every stored one is (re-)encrypted
    under its first key (controlplane/gateway/secrets.py).

    Stripe sync is on when ``METERLINE_STRIPE_API_KEY`` is set (``StripeSettings.from_env``);
    webhooks are served on ``webhook_listen`` when given.
    """
    db = Database.connect(db_url, run_migrations=run_migrations)
    try:
        with db.begin() as conn:
            resealed = gateway_storage.reseal_plugin_secrets(conn, secrets=secrets)
    except BaseException:
        db.dispose()
        raise
    if secrets is None:
        log.warning("no secrets key: provider keys are stored in plaintext (development only)")
    elif resealed:
        log.info("provider keys of %d plugins (re-)encrypted under the first secrets key", resealed)
    clock = SystemClock()
    # OpenTelemetry spans, only when OTEL_* variables ask for them (docs/observability.md).
    configure_from_environment()
    settings = StripeSettings.from_env(os.environ)
    metrics = ControlPlaneMetrics()
    stripe = (
        StripeApp(
            db=db,
            settings=settings,
            clock=clock,
            on_sync_failed=metrics.stripe_sync_failures.inc,
        )
        if settings
        else None
    )
    if settings:
        log.info("Stripe sync: %s", settings)
    else:
        log.debug("Stripe sync: off (METERLINE_STRIPE_API_KEY unset)")
    if webhook_listen and stripe is None:
        log.warning("--webhook-listen ignored: Stripe sync is off")
    cp = ControlPlane(
        db=db,
        listen=listen,
        clock=clock,
        invoicing=invoicing,
        invoice_job_seconds=invoice_job_seconds,
        notification_job_seconds=notification_job_seconds,
        stripe=stripe,
        webhook_listen=webhook_listen,
        trust=trust,
        metrics=metrics,
        metrics_listen=metrics_listen,
        balance_slicing=balance_slicing,
        notifications=NotificationSettings(allow_private_urls=allow_private_webhook_urls),
        console_listen=console_listen,
        console_settings=console_settings,
        console_tokens=console_tokens,
        console_tls=console_tls,
        secrets=secrets,
    )
    port = await cp.start()
    if cp.metrics_port:
        print(f"metrics on port {cp.metrics_port} at /metrics", flush=True)
    host = listen.rsplit(":", 1)[0]
    with db.engine.connect() as conn:
        revision = current_revision(conn)
    cluster = (
        f", data planes (mTLS) on {trust.cluster_listen.rsplit(':', 1)[0]}:{cp.cluster_port}"
        if trust is not None
        else ""
    )
    # The one start-up line (migration detail is at DEBUG: -v).
    log.info(
        "control plane listening on %s:%d%s; database %s, schema at revision %s",
        host,
        port,
        cluster,
        db.engine.url.render_as_string(hide_password=True),
        revision,
    )
    if trust is None:
        log.warning(
            "--insecure-dev: plaintext, no operator tokens, data planes on the same port; "
            "never expose this port beyond this machine"
        )
    if cp.console_port:
        console_host = (console_listen or "").rsplit(":", 1)[0]
        print(f"console on {cp.console_scheme}://{console_host}:{cp.console_port}/", flush=True)
    if cp.webhook_port:
        print(f"Stripe webhooks on port {cp.webhook_port} at /stripe/webhook", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await cp.stop()
    shutdown_tracing()
    db.dispose()
