"""Whole processes: a control plane with Stripe configured from the environment, the CLI, the
Stripe emulator. Usage -> drafts (job) -> `meterline invoice issue` -> a Stripe invoice with the
same total -> Stripe's webhook -> `meterline invoice show` says paid."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from controlplane.storage.db import Database
from controlplane.usage import storage as usage_storage
from controlplane.usage.types import TokenType, UsageEvent
from support.processes import Processes, free_port, meterline, wait_until
from support.stripe_emulator import running_stripe_emulator

API_KEY = "sk_test_e2e_invoices"
WEBHOOK_SECRET = "whsec_e2e_invoices"


def document(start: datetime) -> str:
    return f"""\
_format_version: "3.0"
billing:
  features:
    - {{key: tokens-in, meter: llm_tokens, filters: {{type: input}}}}
  plans:
    - key: daily
      name: Daily
      currency: USD
      billing_cadence: P1D
      rate_cards:
        - {{key: platform, price: {{type: flat, amount: "1.50"}}}}
        - {{feature: tokens-in, price: {{type: unit, amount: "0.001"}}}}
  customers:
    - {{key: acme, name: Acme Corp, subjects: [acme-corp]}}
  subscriptions:
    - {{customer: acme, plan: daily, start: "{start.isoformat()}"}}
"""


def test_issue_sync_and_pay_through_processes(processes: Processes, tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'meterline.db'}"
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=2)
    cp_port, webhook_port = free_port(), free_port()
    cp = f"127.0.0.1:{cp_port}"
    with running_stripe_emulator(
        api_key=API_KEY,
        webhook_secret=WEBHOOK_SECRET,
        webhook_url=f"http://127.0.0.1:{webhook_port}/stripe/webhook",
    ) as emulator:
        # Given a control plane with Stripe from the environment and a fast invoicing job
        processes.start(
            "controlplane",
            "-m",
            "controlplane",
            "controlplane",
            "--db",
            db_url,
            "--listen",
            cp,
            "--webhook-listen",
            f"127.0.0.1:{webhook_port}",
            "--invoice-grace",
            "PT0S",
            "--invoice-job-interval",
            "0.2",
            env={
                "METERLINE_STRIPE_API_KEY": API_KEY,
                "METERLINE_STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
                "METERLINE_STRIPE_API_BASE": emulator.url,
            },
        )
        applied = meterline("apply", "-", "--cp", cp, input=document(start))
        assert applied.returncode == 0, applied.stderr + processes.logs()
        db = Database.connect(db_url, run_migrations=False)
        with db.begin() as conn:
            usage_storage.insert_events(
                conn,
                [
                    UsageEvent(
                        id="e1",
                        source="e2e",
                        type="llm.tokens",
                        subject="acme-corp",
                        time=start + timedelta(hours=1),
                        provider="openai",
                        model="gpt-4o",
                        token_type=TokenType.INPUT,
                        tokens=1234,
                        status_code=200,
                    )
                ],
                ingest_time=start + timedelta(hours=1),
            )
        db.dispose()

        # When the job has drafted the two ended days
        def drafts() -> list[dict[str, object]]:
            listed = meterline("invoice", "list", "--state", "draft", "--json", "--cp", cp)
            assert listed.returncode == 0, listed.stderr
            return list(json.loads(listed.stdout))

        wait_until(lambda: len(drafts()) == 2, what="two drafts", timeout=30)
        first = min(drafts(), key=lambda d: str(d["period_start"]))  # the list is newest first
        assert first["total"] == "2.73"  # 1.50 + 1234 x 0.001 = 1.234 -> 1.23

        # And the operator issues the first
        issued = meterline("invoice", "issue", str(first["id"]), "--cp", cp)
        assert issued.returncode == 0, issued.stderr
        assert "[issued]" in issued.stdout and "ML-USD-" in issued.stdout

        def show() -> dict[str, object]:
            shown = meterline("invoice", "show", str(first["id"]), "--json", "--cp", cp)
            assert shown.returncode == 0, shown.stderr
            return dict(json.loads(shown.stdout))

        # Then it reaches Stripe with the same total
        wait_until(lambda: show()["sync_state"] == "synced", what="sync", timeout=30)
        stripe_id = str(show()["stripe_invoice_id"])
        assert emulator.invoices[stripe_id]["total"] == 273
        assert emulator.invoices[stripe_id]["status"] == "open"

        # And Stripe's payment comes back through the webhook
        emulator.client().v1.invoices.pay(stripe_id, {"paid_out_of_band": True})
        wait_until(lambda: show()["state"] == "paid", what="paid", timeout=30)
        assert all(d.status == 200 for d in emulator.wait_for_deliveries())

        # When the second is issued, and Stripe is down when the operator voids it
        second = str(drafts()[0]["id"])

        def show_second() -> str:
            shown = meterline("invoice", "show", second, "--cp", cp)
            assert shown.returncode == 0, shown.stderr
            return shown.stdout

        assert meterline("invoice", "issue", second, "--cp", cp).returncode == 0
        wait_until(lambda: "Stripe sync: synced" in show_second(), what="sync", timeout=30)
        (second_stripe,) = emulator.invoices_with_metadata("meterline_invoice_id", second)
        emulator.fail_next("POST", "/v1/invoices/*/void", status=503, times=20)
        voided = meterline("invoice", "void", second, "--cp", cp)
        assert voided.returncode == 0, voided.stderr

        # Then the CLI shows the failed sync in one word, with Stripe's message
        wait_until(lambda: "Stripe sync: failed" in show_second(), what="failed", timeout=30)
        assert "HTTP 503" in show_second()
        assert second_stripe["status"] == "open"

        # And once Stripe is back, retry-sync voids the Stripe invoice
        emulator.clear_faults()
        retried = meterline("invoice", "retry-sync", second, "--cp", cp)
        assert retried.returncode == 0, retried.stderr
        assert "Stripe sync: synced" in retried.stdout
        assert second_stripe["status"] == "void"
