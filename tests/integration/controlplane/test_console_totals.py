"""The console's fast figures equal the slow exact ones (SQLite and PostgreSQL).

- ``invoicing.totals.open_totals`` (the overview's billed amount) == the sum of every
  customer's ``preview_invoice`` total, on customers with and without usage, prorated, cancelled,
  future, credited, on two plans and anchors;
- ``rollups.grouped_rows`` (SQL GROUP BY) fed to a grouper == ``rollups.hourly_rows`` (every
  hourly row in Python), for SUM/COUNT/MAX, by day, hour and the whole span, with values SQLite
  cannot add exactly (decimals, 10^18 and more).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import insert

from controlplane.declarative.apply import apply_document
from controlplane.errors import FailedPrecondition, NotFound
from controlplane.invoicing import totals
from controlplane.invoicing.preview import preview_invoice
from controlplane.invoicing.totals import open_totals, open_totals_concurrently
from controlplane.storage import schema as s
from controlplane.storage.db import Database
from controlplane.subscriptions.storage import list_subscriptions
from controlplane.usage import rollups
from controlplane.usage.aggregate import Grouper, WindowSize
from controlplane.usage.meters import MeterAggregation
from controlplane.usage.storage import insert_events
from controlplane.usage.types import TokenType, UsageEvent

PERIOD = datetime(2026, 11, 1, tzinfo=UTC)
AT = PERIOD + timedelta(days=20, minutes=37)

CATALOG = """\
_format_version: "3.0"
billing:
  features:
    - {key: input, meter: llm_tokens, filters: {type: input}}
    - {key: output, meter: llm_tokens, filters: {type: output}}
  plans:
    - key: pro
      name: Pro
      currency: USD
      billing_cadence: P1M
      rate_cards:
        - {key: platform, price: {type: flat, amount: "49"}}
        - {feature: input, price: {type: unit, amount: "0.000001"}}
        - feature: output
          price:
            type: tiered
            mode: graduated
            tiers:
              - {up_to: "1000", unit_price: "0.004"}
              - {unit_price: "0.002"}
          commitments: {minimum_amount: "10"}
    - key: plus
      name: Plus
      currency: USD
      billing_cadence: P1M
      rate_cards:
        - {key: platform, price: {type: flat, amount: "99"}}
        - {feature: input, price: {type: unit, amount: "0.000002"}}
    - key: team
      name: Team
      currency: EUR
      billing_cadence: P1W
      rate_cards:
        - {key: seat, price: {type: flat, amount: "12.5"}}
        - {feature: input, price: {type: unit, amount: "0.00001"}}
  customers:
CUSTOMERS
  subscriptions:
SUBSCRIPTIONS
  credits:
    - {customer: credited, amount: "7.25", key: welcome}
"""

SWITCHED = (
    "{plan: pro, start: 2026-10-01T00:00:00Z, changes: [{at: 2026-11-05T00:00:00Z, plan: plus}]}"
)
# customer -> subscriptions (start, end) on a plan; None: no subscription at all.
SUBSCRIPTIONS: dict[str, list[str]] = {
    "busy": ["{plan: pro, start: 2026-11-01T00:00:00Z}"],
    "quiet-1": ["{plan: pro, start: 2026-11-01T00:00:00Z}"],
    "quiet-2": ["{plan: pro, start: 2026-11-01T00:00:00Z}"],
    # Started before the period: the same invoice as the quiet ones.
    "older": ["{plan: pro, start: 2026-10-01T00:00:00Z}"],
    # Anchored on the 15th: its period (Nov 15 - Dec 15) is another, as long and as whole.
    "anchored-15": ["{plan: pro, start: 2026-09-15T00:00:00Z}"],
    "mid": ["{plan: pro, start: 2026-11-10T06:00:00Z}"],
    "mid-too": ["{plan: pro, start: 2026-11-10T06:00:00Z}"],
    "cancelled": ["{plan: pro, start: 2026-11-01T00:00:00Z, end: 2026-11-15T00:00:00Z}"],
    "ended": ["{plan: pro, start: 2026-09-01T00:00:00Z, end: 2026-10-15T00:00:00Z}"],
    "future": ["{plan: pro, start: 2026-12-03T00:00:00Z}"],
    "credited": ["{plan: pro, start: 2026-11-01T00:00:00Z}"],
    "weekly": ["{plan: team, start: 2026-11-02T09:00:00Z}"],
    "weekly-2": ["{plan: team, start: 2026-11-09T09:00:00Z}"],
    "weekly-busy": ["{plan: team, start: 2026-11-02T09:00:00Z}"],
    # Plan changes: two subscriptions each, the same shapes (one preview for both).
    "switched-1": [SWITCHED],
    "switched-2": [SWITCHED],
    "nothing": [],
}


@pytest.fixture(params=["excluded-in-sql", "taken-out-after"])
def db(
    db_url: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Database]:
    # Both ways of keeping touched customers out of the untouched groups give the same sums.
    if request.param == "taken-out-after":
        monkeypatch.setattr(totals, "EXCLUDE_IN_SQL", 0)
    database = Database.connect(db_url)
    customers = "\n".join(
        f"    - {{key: {k}, name: {k}, subjects: [{k}-app]}}" for k in SUBSCRIPTIONS
    )
    subscriptions = "\n".join(
        "    - " + sub.replace("{", f"{{customer: {k}, ", 1)
        for k, subs in SUBSCRIPTIONS.items()
        for sub in subs
    )
    document = CATALOG.replace("CUSTOMERS", customers).replace("SUBSCRIPTIONS", subscriptions)
    apply_document(database, text=document, now=PERIOD - timedelta(days=90))
    yield database
    database.dispose()


def usage(db: Database, subject: str, tokens: dict[str, int]) -> None:
    events = [
        UsageEvent(
            id=f"{subject}-{kind}-{i}",
            source="test",
            type="llm.tokens",
            subject=subject,
            time=PERIOD + timedelta(days=3, hours=i, minutes=13),
            provider="openai",
            model="gpt-4o",
            token_type=TokenType(kind),
            tokens=n,
            status_code=200 if i % 4 else 500,
            route="chat",
        )
        for kind, n in tokens.items()
        for i in range(6)
    ]
    with db.begin() as conn:
        insert_events(conn, events, ingest_time=AT)


def previews_summed(db: Database) -> dict[str, Decimal]:
    summed: dict[str, Decimal] = {}
    with db.begin() as conn:
        for customer in SUBSCRIPTIONS:
            try:
                invoice = preview_invoice(conn, customer_key=customer, at=AT)
            except (NotFound, FailedPrecondition):
                continue
            summed[invoice.currency] = summed.get(invoice.currency, Decimal(0)) + invoice.total
    return summed


def test_billed_total_equals_the_sum_of_every_preview(db: Database) -> None:
    usage(db, "busy-app", {"input": 12_345, "output": 4_321})
    usage(db, "weekly-busy-app", {"input": 99_999})
    with db.begin() as conn:
        fast = open_totals(conn, at=AT)
        # The plan changes made two subscriptions each (grouped apart from single ones).
        assert len(list_subscriptions(conn, "switched-1")) == 2
    slow = previews_summed(db)
    assert fast.by_currency == slow
    # The console's way: the two halves in two transactions at once, the same figures.
    concurrent = open_totals_concurrently(db, at=AT)
    assert (concurrent.by_currency, concurrent.by_customer, concurrent.previews) == (
        fast.by_currency,
        fast.by_customer,
        fast.previews,
    )
    assert (concurrent.by_feature, concurrent.by_model) == (fast.by_feature, fast.by_model)
    assert set(slow) == {"USD", "EUR"} and all(v > 0 for v in slow.values())
    # Usage and credits are previewed one by one; the quiet customers once per signature:
    # (quiet-1, quiet-2, older, anchored-15: whole 30-day periods), (mid, mid-too), cancelled,
    # (ended, future: neither serves any of its period at AT), (weekly, weekly-2: anchored a
    # week apart, both in the week from 2026-11-16T09:00 at AT), (switched-1, switched-2).
    assert set(fast.by_customer) == {"busy", "weekly-busy", "credited"}
    assert fast.previews == 3 + 6
    assert fast.customers == len(SUBSCRIPTIONS) - 3  # nothing, ended and future owe nothing


def test_billed_total_follows_new_usage_and_issued_invoices(db: Database) -> None:
    with db.begin() as conn:
        before = open_totals(conn, at=AT)
    assert before.by_currency == previews_summed(db)
    # Usage of a quiet customer takes it out of its group; its preview changes the sum.
    usage(db, "quiet-2-app", {"output": 5_000})
    with db.begin() as conn:
        after = open_totals(conn, at=AT)
    assert after.by_currency == previews_summed(db)
    assert after.by_currency["USD"] > before.by_currency["USD"]
    assert "quiet-2" in after.by_customer


def test_billed_total_when_a_groups_first_customer_has_usage(db: Database) -> None:
    # quiet-1 is the first key of its group (same plan, anchor and times as quiet-2):
    # touched, it leaves the group, which is previewed for another of its customers.
    with db.begin() as conn:
        before = open_totals(conn, at=AT)
    usage(db, "quiet-1-app", {"input": 7_000})
    with db.begin() as conn:
        after = open_totals(conn, at=AT)
    assert after.by_currency == previews_summed(db)
    assert "quiet-1" in after.by_customer and "quiet-2" not in after.by_customer
    assert after.customers == before.customers
    # quiet-1 one by one; its old group still previewed once (for quiet-2).
    assert after.previews == before.previews + 1
    assert after.by_currency["USD"] > before.by_currency["USD"]
    concurrent = open_totals_concurrently(db, at=AT)
    assert (concurrent.by_currency, concurrent.previews) == (after.by_currency, after.previews)


def hourly_reference(
    db: Database, meter: str, aggregation: MeterAggregation, window: WindowSize | None
) -> list[tuple[object, ...]]:
    grouper = Grouper(
        aggregation=aggregation, group_by=("subject", "region"), window=window, start=None, end=None
    )
    with db.begin() as conn:
        for subject, bucket, dims, value, count in rollups.hourly_rows(
            conn, meter=meter, subjects=None, start=None, end=None
        ):
            grouper.add_rollup(subject, bucket, dims, value, count)
    return [
        (r.window_start, tuple(r.group.items()), r.value, r.event_count) for r in grouper.rows()
    ]


def grouped(
    db: Database, meter: str, aggregation: MeterAggregation, window: WindowSize | None
) -> list[tuple[object, ...]]:
    grouper = Grouper(
        aggregation=aggregation, group_by=("subject", "region"), window=window, start=None, end=None
    )
    with db.begin() as conn:
        rows = rollups.grouped_rows(
            conn,
            meter=meter,
            subjects=None,
            start=None,
            end=None,
            aggregation=aggregation,
            by_subject=True,
            window=window.value if window else None,
        )
        for subject, bucket, dims, value, count in rows:
            grouper.add_rollup(subject, bucket or PERIOD, dims, value, count)
    return [
        (r.window_start, tuple(r.group.items()), r.value, r.event_count) for r in grouper.rows()
    ]


@pytest.mark.parametrize("aggregation", [MeterAggregation.SUM, MeterAggregation.MAX])
def test_grouped_rollups_equal_the_hourly_rows(db: Database, aggregation: MeterAggregation) -> None:
    values = ["5", "17", "1.25", "999999999999999999", "4000000000000000000", "-3", "0.000001"]
    rows = []
    for i in range(60):
        rows.append(
            {
                "meter": "m",
                "subject": f"s{i % 3}",
                "bucket": PERIOD + timedelta(hours=5 * i),
                "dimensions": rollups.canonical({"region": "eu" if i % 2 else "us"}),
                "shard": i % 2,
                "value": values[i % len(values)],
                "count": 1 + i,
            }
        )
    # Twelve 18-digit values in one group: each fits SQLite's integers, their sum does not.
    rows += [
        {
            "meter": "m",
            "subject": "big",
            "bucket": PERIOD + timedelta(hours=i),
            "dimensions": rollups.canonical({"region": "eu"}),
            "shard": 0,
            "value": "999999999999999999",
            "count": 1,
        }
        for i in range(12)
    ]
    with db.begin() as conn:
        conn.execute(insert(s.usage_rollups), rows)
    for window in (WindowSize.DAY, WindowSize.HOUR, None):
        expected = hourly_reference(db, "m", aggregation, window)
        assert grouped(db, "m", aggregation, window) == expected
        assert expected  # something was compared
    whole = grouped(db, "m", aggregation, None)
    big = [row[2] for row in whole if row[1] == (("subject", "big"), ("region", "eu"))]
    assert big == [
        Decimal(
            12 * 999999999999999999 if aggregation is MeterAggregation.SUM else 999999999999999999
        )
    ]
