"""Two control-plane processes over one PostgreSQL, both running the periodic invoicing job
(draft, auto-issue) and the Stripe sync at the same time, against one Stripe stand-in.

Each ended period gets exactly one invoice, issued once (one number), and each issued invoice
exactly one Stripe invoice with the same total — no leader is configured: the replicas take
turns through row locks and a PostgreSQL advisory lock per invoice.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

import pytest

from controlplane.storage.db import Database
from controlplane.usage import storage as usage_storage
from controlplane.usage.types import TokenType, UsageEvent
from support.processes import Processes, free_port, grpc_ready, meterline, wait_until
from support.stripe_emulator import running_stripe_emulator

pytestmark = pytest.mark.postgres

API_KEY = "sk_test_replica_jobs"
WEBHOOK_SECRET = "whsec_replica_jobs"
CUSTOMERS = 4
DAYS = 3


def document(start: datetime) -> str:
    customers = "\n".join(
        f"    - {{key: c{i}, name: Customer {i}, subjects: [subject-{i}]}}"
        for i in range(CUSTOMERS)
    )
    subscriptions = "\n".join(
        f'    - {{customer: c{i}, plan: daily, start: "{start.isoformat()}"}}'
        for i in range(CUSTOMERS)
    )
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
{customers}
  subscriptions:
{subscriptions}
"""


def test_two_replicas_issue_and_sync_each_invoice_once(processes: Processes, pg_url: str) -> None:
    now = datetime.now(UTC)
    start = now.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=DAYS)
    # Usage in every ended day of every customer: (customer, day) -> input tokens
    tokens = {(i, day): 100 * (i + 1) + 7 * day for i in range(CUSTOMERS) for day in range(DAYS)}

    # Given the schema, the catalog and the usage, before any replica's job runs
    first_cp = f"127.0.0.1:{free_port()}"
    setup = processes.start(
        "setup-cp",
        "-m",
        "controlplane",
        "controlplane",
        "--db",
        pg_url,
        "--listen",
        first_cp,
        "--invoice-job-interval",
        "0",
    )
    wait_until(lambda: grpc_ready(first_cp), what="setup control plane")
    applied = meterline("apply", "-", "--cp", first_cp, input=document(start))
    assert applied.returncode == 0, applied.stderr + processes.logs()
    setup.terminate()
    setup.wait(timeout=10)
    db = Database.connect(pg_url, run_migrations=False)
    with db.begin() as conn:
        usage_storage.insert_events(
            conn,
            [
                UsageEvent(
                    id=f"e-{i}-{day}",
                    source="e2e",
                    type="llm.tokens",
                    subject=f"subject-{i}",
                    time=start + timedelta(days=day, hours=5),
                    provider="openai",
                    model="gpt-4o",
                    token_type=TokenType.INPUT,
                    tokens=count,
                    status_code=200,
                )
                for (i, day), count in tokens.items()
            ],
            ingest_time=start + timedelta(days=DAYS),
        )
    db.dispose()

    with running_stripe_emulator(api_key=API_KEY, webhook_secret=WEBHOOK_SECRET) as emulator:
        # When two replicas run the job (draft + auto-issue + Stripe sync) at the same time
        replicas = [f"127.0.0.1:{free_port()}" for _ in range(2)]
        for index, address in enumerate(replicas):
            processes.start(
                f"replica-{index}",
                "-m",
                "controlplane",
                "controlplane",
                "--db",
                pg_url,
                "--listen",
                address,
                "--invoice-grace",
                "PT0S",
                "--invoice-job-interval",
                "0.1",
                "--auto-issue",
                env={
                    "METERLINE_STRIPE_API_KEY": API_KEY,
                    "METERLINE_STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
                    "METERLINE_STRIPE_API_BASE": emulator.url,
                },
            )
        for address in replicas:
            wait_until(lambda address=address: grpc_ready(address), what=f"replica {address}")

        def invoices() -> list[dict[str, object]]:
            listed = meterline("invoice", "list", "--json", "--cp", replicas[0])
            assert listed.returncode == 0, listed.stderr + processes.logs()
            return [i for i in json.loads(listed.stdout) if i["state"] != "gathering"]

        expected = CUSTOMERS * DAYS
        wait_until(
            lambda: (
                len(invoices()) == expected and all(i["sync_state"] == "synced" for i in invoices())
            ),
            what=f"{expected} issued and synced invoices",
            timeout=60,
        )

        # Then each (customer, day) has one invoice, issued once, with one number
        listed = invoices()
        assert len(listed) == expected
        assert {i["state"] for i in listed} == {"issued"}
        periods = Counter((i["customer"], i["period_start"]) for i in listed)
        assert set(periods.values()) == {1}, periods
        numbers = [i["number"] for i in listed]
        assert len(set(numbers)) == expected and all(numbers)

        # And each has exactly one Stripe invoice, finalized, with the same total
        for invoice in listed:
            found = emulator.invoices_with_metadata("meterline_invoice_id", str(invoice["id"]))
            assert len(found) == 1, (invoice["id"], found)
            assert found[0]["status"] == "open"
            assert found[0]["id"] == invoice["stripe_invoice_id"]
            assert found[0]["total"] == int(Decimal(str(invoice["total"])) * 100)
        assert len(emulator.invoices) == expected
        # One Stripe customer per Meterline customer, although both replicas raced to create it
        assert len(emulator.customers) == CUSTOMERS

        # And the totals are what the catalog and the events say: 1.50 + tokens x 0.001
        totals = {(i["customer"], _parse(i["period_start"])): i["total"] for i in listed}
        for (index, day), count in tokens.items():
            expected_total = (Decimal("1.50") + count * Decimal("0.001")).quantize(
                Decimal("0.01"), ROUND_HALF_UP
            )
            assert totals[(f"c{index}", start + timedelta(days=day))] == str(expected_total)


def _parse(timestamp: object) -> datetime:
    return datetime.fromisoformat(str(timestamp).replace("Z", "+00:00"))
