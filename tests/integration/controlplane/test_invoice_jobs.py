"""The invoicing job on several replicas at once (PostgreSQL): each invoice created and
issued exactly once, numbers gap-free; concurrent IssueInvoice calls issue once."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import pytest
from sqlalchemy import func, select

from controlplane.declarative.apply import apply_document
from controlplane.errors import FailedPrecondition
from controlplane.invoicing import lifecycle
from controlplane.invoicing.lifecycle import InvoicingSettings
from controlplane.invoicing.types import InvoiceState
from controlplane.storage import schema as s
from controlplane.storage.db import Database
from controlplane.usage import storage as usage_storage
from controlplane.usage.types import TokenType, UsageEvent

pytestmark = pytest.mark.postgres

START = datetime(2026, 1, 1, tzinfo=UTC)
CUSTOMERS = 12
T = TypeVar("T")


def document() -> str:
    customers = "\n".join(
        f"    - {{key: c{i}, name: C{i}, subjects: [s{i}]}}" for i in range(CUSTOMERS)
    )
    subscriptions = "\n".join(
        f"    - {{customer: c{i}, plan: pro, start: '{START.isoformat()}'}}"
        for i in range(CUSTOMERS)
    )
    return f"""\
_format_version: "3.0"
billing:
  features:
    - {{key: tokens, meter: llm_tokens, filters: {{type: input}}}}
  plans:
    - key: pro
      name: Pro
      currency: USD
      billing_cadence: P1M
      rate_cards:
        - {{key: platform, price: {{type: flat, amount: "10"}}}}
        - {{feature: tokens, price: {{type: unit, amount: "0.01"}}}}
  customers:
{customers}
  subscriptions:
{subscriptions}
"""


def race(n: int, fn: Callable[[int], T]) -> list[T | BaseException]:
    """Run fn(0..n-1) in n threads released at the same moment."""
    barrier = threading.Barrier(n)
    results: list[T | BaseException] = [RuntimeError("not run")] * n

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = fn(i)
        except BaseException as exc:  # collected for the assertions
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


@pytest.fixture
def replicas(pg_url: str) -> list[Database]:
    dbs = [Database.connect(pg_url) for _ in range(3)]
    apply_document(dbs[0], text=document(), now=START)
    with dbs[0].begin() as conn:
        usage_storage.insert_events(
            conn,
            [
                UsageEvent(
                    id=f"e{i}",
                    source="test",
                    type="llm.tokens",
                    subject=f"s{i}",
                    time=START + timedelta(days=3),
                    provider="openai",
                    model="m",
                    token_type=TokenType.INPUT,
                    tokens=100 * (i + 1),
                    status_code=200,
                )
                for i in range(CUSTOMERS)
            ],
            ingest_time=START + timedelta(days=3),
        )
    yield dbs
    for db in dbs:
        db.dispose()


def test_replicas_racing_the_job_create_and_issue_each_invoice_once(
    replicas: list[Database],
) -> None:
    # Given three replicas running the job at the same moment, three months in, auto-issuing
    settings = InvoicingSettings(auto_issue=True)
    now = datetime(2026, 3, 15, tzinfo=UTC)

    results = race(3, lambda i: lifecycle.advance(replicas[i], now=now, settings=settings))

    # Then every run succeeded and together they did each thing once
    assert not [r for r in results if isinstance(r, BaseException)]
    created = [i for r in results if not isinstance(r, BaseException) for i in r.created]
    issued = [i for r in results if not isinstance(r, BaseException) for i in r.issued]
    assert len(created) == len(set(created)) == CUSTOMERS * 3  # Jan, Feb, Mar
    assert len(issued) == len(set(issued)) == CUSTOMERS * 2  # Jan, Feb
    with replicas[0].begin() as conn:
        rows = conn.execute(select(s.invoices)).all()
        billed = conn.execute(select(func.count()).select_from(s.invoice_usage_events)).scalar()
    assert len(rows) == CUSTOMERS * 3
    numbers = sorted(r.number for r in rows if r.number)
    assert numbers == [f"ML-USD-2026-{n:06d}" for n in range(1, CUSTOMERS * 2 + 1)]
    # Each customer's January bills its one event, once
    assert billed == CUSTOMERS
    totals = sorted(r.total for r in rows if r.period_start == START and r.total is not None)
    assert totals == sorted(f"{10 + (i + 1):.2f}" for i in range(CUSTOMERS))

    # A second round changes nothing
    again = race(3, lambda i: lifecycle.advance(replicas[i], now=now, settings=settings))
    assert all(not isinstance(r, BaseException) and not (r.created or r.issued) for r in again)


def test_concurrent_issue_calls_issue_once(replicas: list[Database]) -> None:
    # Given a draft
    now = datetime(2026, 2, 2, tzinfo=UTC)
    lifecycle.advance(replicas[0], now=now, settings=InvoicingSettings())
    with replicas[0].begin() as conn:
        (draft,) = lifecycle.list_invoices(conn, customer="c3", states=[InvoiceState.DRAFT])

    # When three replicas issue it at once
    def issue(i: int) -> str | None:
        with replicas[i].begin() as conn:
            return lifecycle.issue_invoice(conn, id=draft.id, now=now).number

    results = race(3, issue)

    # Then one did, the others were told it is already issued
    assert sorted(map(str, results)).count("ML-USD-2026-000001") == 1
    errors = [r for r in results if isinstance(r, BaseException)]
    assert len(errors) == 2 and all(isinstance(e, FailedPrecondition) for e in errors)
