"""meterline_controlplane_stripe_sync_failures_total counts syncs that end failed, and
meterline_controlplane_invoice_transitions_total the invoicing job's transitions by the state
they enter."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import grpc
import httpx
from integration.stripe.test_invoice_sync_wiring import T0, setup_usage
from prometheus_client.parser import text_string_to_metric_families

from controlplane.clock import FrozenClock
from controlplane.metrics import ControlPlaneMetrics
from controlplane.server import ControlPlane
from controlplane.storage.db import Database
from controlplane.stripe_sync import RetryPolicy, StripeSettings
from controlplane.stripe_sync.app import StripeApp
from meterline.admin.v1 import billing_pb2, billing_pb2_grpc
from support.stripe_emulator import StripeEmulator


def sample(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


async def test_a_failed_sync_is_counted(
    migrated_db_url: str, emulator: StripeEmulator, settings: StripeSettings
) -> None:
    clock = FrozenClock(T0 + timedelta(days=33))
    db = Database.connect(migrated_db_url)
    setup_usage(db)
    metrics = ControlPlaneMetrics()
    app = StripeApp(
        db=db,
        settings=settings,
        clock=clock,
        policy=RetryPolicy(attempts=2, base_delay=0.01),
        on_sync_failed=metrics.stripe_sync_failures.inc,
    )
    cp = ControlPlane(
        db=db,
        listen="127.0.0.1:0",
        clock=clock,
        stripe=app,
        metrics=metrics,
        metrics_listen="127.0.0.1:0",
    )
    port = await cp.start()
    try:
        url = f"http://127.0.0.1:{cp.metrics_port}/metrics"
        assert sample(httpx.get(url).text, "meterline_controlplane_stripe_sync_failures_total") == 0
        # Given Stripe refuses the invoice creation once
        emulator.fail_next("POST", "/v1/invoices", status=400, message="No such tax rate: txr_1")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            billing = billing_pb2_grpc.BillingServiceStub(channel)
            closed = await billing.CloseInvoices(billing_pb2.CloseInvoicesRequest())
            (draft,) = closed.drafted_invoices
            await billing.IssueInvoice(billing_pb2.IssueInvoiceRequest(name=draft))
            await app.drain()
            # Then one failure is counted; the retry that succeeds adds none.
            text = httpx.get(url).text
            assert sample(text, "meterline_controlplane_stripe_sync_failures_total") == 1
            await billing.RetryInvoiceSync(billing_pb2.RetryInvoiceSyncRequest(name=draft))
        text = httpx.get(url).text
        assert sample(text, "meterline_controlplane_stripe_sync_failures_total") == 1
    finally:
        await cp.stop(0)
        # Database work of the job or the sync may still run in threads: end it before the
        # pool goes away, or its connection is garbage-collected open.
        await asyncio.get_running_loop().shutdown_default_executor()
        db.dispose()


async def test_the_invoicing_job_counts_its_transitions(migrated_db_url: str) -> None:
    clock = FrozenClock(T0 + timedelta(days=33))
    db = Database.connect(migrated_db_url)
    setup_usage(db)
    cp = ControlPlane(
        db=db,
        listen="127.0.0.1:0",
        clock=clock,
        invoice_job_seconds=0.05,
        metrics_listen="127.0.0.1:0",
    )
    await cp.start()
    try:
        url = f"http://127.0.0.1:{cp.metrics_port}/metrics"
        name = "meterline_controlplane_invoice_transitions_total"
        # The November period ended: the job drafts its invoice (once, however often it runs).
        for _ in range(100):
            text = await asyncio.to_thread(lambda: httpx.get(url).text)
            if sample(text, name, state="draft") >= 1:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)  # a few more runs of the job
        text = await asyncio.to_thread(lambda: httpx.get(url).text)
        assert sample(text, name, state="draft") == 1
        assert sample(text, name, state="issued") == 0  # --auto-issue is off
    finally:
        await cp.stop(0)
        # Database work of the job or the sync may still run in threads: end it before the
        # pool goes away, or its connection is garbage-collected open.
        await asyncio.get_running_loop().shutdown_default_executor()
        db.dispose()
