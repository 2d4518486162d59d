"""Console pages at scale: server-side time of every page with N customers and M usage events.

    python bench/console.py [--customers 10000] [--events 10000000] [--runs 5]
    python bench/console.py --keep ...          # keep the loaded schema (its name is printed)
    python bench/console.py --schema bench_1a2b3c4d [--runs 5]   # measure it again, no load
    python bench/console.py --history 6 ...     # and 6 months of closed invoices per customer
    python bench/console.py --pages /margin,/invoices ...   # only these pages

PostgreSQL only (the machine's, a fresh schema dropped afterwards). The catalog, customers and
subscriptions are applied as ``bench/rating.py`` does; the big customer's events and their
hourly rollups are generated inside PostgreSQL (``rating.load``). The other customers have no
usage. ``--history N`` also gives every customer a closed invoice for each of the N months
before the period (4 lines each: flat, two features, one model_list line; mostly paid, some
issued, payment failed or void), written by one ``INSERT ... SELECT`` per table in the rows and
line JSON ``invoicing.storage.freeze`` writes (10,000 customers x 6 months: 60,000 invoices,
240,000 lines), so ``/margin`` and ``/invoices`` read a history.

Then a control plane with its console starts on a frozen clock 20 days into the period,
and each page is fetched over HTTP with an admin token (median of ``--runs``, after one warm-up).
The issue's bound is 150 ms per page.

Wall-clock times move with the machine's load; the CPU column does not (much): the CPU time
one request costs, this process's (the console, the control plane and the HTTP client, all
threads) plus that of the PostgreSQL backends serving this process's connections (read from
/proc by their pid; the connections are tagged with an application_name).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid
from typing import Any

import httpx
from rating import AT, CATALOG, MODELS, PG, SUB_START, load, yaml_lists
from sqlalchemy import create_engine, text

from controlplane.api.auth import Scope, TokenEntry, hash_token
from controlplane.clock import FrozenClock
from controlplane.declarative.apply import apply_document
from controlplane.server import ControlPlane
from controlplane.storage.db import Database

TOKEN = "mlt_bench-console-admin"
APP_NAME = "meterline-bench-console"
TICKS = os.sysconf("SC_CLK_TCK")
PAGES = [
    "/overview",
    "/overview.json",
    "/overview?window=hour",
    "/margin",
    "/margin?customer=big",
    "/margin?months=12",
    "/margin?model=gpt-4o",
    "/margin?feature=input",
    "/customers",
    "/customers?q=c09999",
    "/customers/big",
    "/customers/big/preview",
    "/invoices",
    "/invoices?state=paid",
    "/gateway",
    "/catalog",
    "/usage?meter=llm_tokens&group_by=model&window=day",
    "/alerts",
    "/customers/big/credits",
    "/portal/customers/big",
]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--history", type=int, default=0, help="months of closed invoices per customer"
    )
    parser.add_argument("--pages", default="", help="comma-separated pages: only these")
    parser.add_argument("--keep", action="store_true", help="keep the schema for --schema")
    parser.add_argument("--schema", default="", help="a schema --keep left: no load")
    args = parser.parse_args()

    schema_name = args.schema or f"bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG, isolation_level="AUTOCOMMIT")
    if not args.schema:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema_name}"'))
    db = Database.connect(f"{PG}?options=-csearch_path%3D{schema_name}&application_name={APP_NAME}")
    try:
        if not args.schema:
            load_all(db, args)
        await measure(db, admin, args)
    finally:
        db.dispose()
        if args.keep or args.schema:
            print(f"schema kept: {schema_name} (drop it with DROP SCHEMA ... CASCADE)")
        else:
            with admin.connect() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema_name}" CASCADE'))


def load_all(db: Database, args: argparse.Namespace) -> None:
    others = [f"c{i:05d}" for i in range(args.customers - 1)]
    customers, subscriptions = yaml_lists(["big", *others])
    document = CATALOG.replace("CUSTOMERS", customers).replace("SUBSCRIPTIONS", subscriptions)
    started = time.perf_counter()
    apply_document(db, text=document, now=SUB_START)
    load(db, "big-app", args.events)
    if args.history:
        load_history(db, args.history)
    with db.engine.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        conn.execute(text("VACUUM (ANALYZE)"))
    print(
        f"loaded {args.customers:,} customers, {args.history} months of invoices and "
        f"{args.events:,} events in "
        f"{time.perf_counter() - started:.0f} s"
    )


# One row per customer and month before the period: the amounts of its four lines (cents,
# varied by customer and month), its state and its invoice number.
HISTORY = text(
    """
    CREATE TEMPORARY TABLE bench_history AS
    SELECT
        c.key AS customer,
        CAST(:start AS timestamp) - make_interval(months => k) AS period_start,
        CAST(:start AS timestamp) - make_interval(months => k - 1) AS period_end,
        'h' || k || '-' || c.n AS id,
        'ML-USD-2026-' || lpad(CAST(row_number() OVER (ORDER BY k, c.n) AS text), 6, '0')
            AS number,
        CASE
            WHEN c.n % 97 = 0 THEN 'void'
            WHEN c.n % 31 = 0 THEN 'payment_failed'
            WHEN k = 1 AND c.n % 5 = 0 THEN 'issued'
            ELSE 'paid'
        END AS state,
        1 + (c.n * 7919 + k * 104729) % 5000000 AS input_tokens,
        round(CAST((c.n * 31 + k * 17) % 90000 AS numeric) / 100, 2) AS output_amount,
        round(CAST((c.n * 13 + k * 7) % 40000 AS numeric) / 100, 2) AS model_amount,
        (ARRAY[:m1, :m2, :m3])[1 + (c.n + k) % 3] AS model
    FROM (SELECT key, row_number() OVER (ORDER BY key) AS n FROM customers) AS c,
        generate_series(1, :months) AS k
    """
)

HISTORY_INVOICES = text(
    """
    INSERT INTO invoices (
        id, customer, currency, period_start, period_end, state, number, total, issue_time,
        create_time, update_time
    )
    SELECT
        id, customer, 'USD', period_start, period_end, state, number,
        CAST(49 + round(input_tokens * 0.000001, 2) + output_amount + model_amount AS text),
        period_end + interval '1 day', period_start, period_end + interval '1 day'
    FROM bench_history
    """
)

HISTORY_LINES = text(
    """
    INSERT INTO invoice_lines (id, invoice_id, position, line)
    SELECT h.id || '-' || l.position, h.id, l.position, CAST(l.line AS text)
    FROM bench_history AS h
    CROSS JOIN LATERAL (
        VALUES
            (0, 'platform', NULL, 'flat', 'flat', '1', '49', '49', NULL, NULL),
            (1, 'input', 'input', 'usage', 'unit', CAST(h.input_tokens AS text), '0.000001',
                CAST(round(h.input_tokens * 0.000001, 2) AS text), NULL, NULL),
            (2, 'output', 'output', 'usage', 'unit', '1', CAST(h.output_amount AS text),
                CAST(h.output_amount AS text), NULL, NULL),
            (3, 'models', NULL, 'usage', 'model_list', '1', CAST(h.model_amount AS text),
                CAST(h.model_amount AS text), h.model, 'input')
    ) AS v(position, rate_card, feature, type, price_type, quantity, unit_price, amount,
        model, token_type)
    CROSS JOIN LATERAL (
        SELECT v.position, json_build_object(
            'subscription', 'bench', 'rate_card', v.rate_card, 'feature', v.feature,
            'description', v.rate_card, 'quantity', v.quantity, 'unit_price', v.unit_price,
            'amount', v.amount,
            'period_start', to_char(h.period_start, 'YYYY-MM-DD"T"HH24:MI:SS"+00:00"'),
            'period_end', to_char(h.period_end, 'YYYY-MM-DD"T"HH24:MI:SS"+00:00"'),
            'type', v.type, 'price_type', v.price_type, 'payment_term', NULL,
            'free_quantity', '0', 'packages', NULL, 'late_usage', false, 'model', v.model,
            'token_type', v.token_type, 'credit_grant', NULL, 'tiers', json_build_array()
        ) AS line
    ) AS l
    """
)

# What issuing writes beside each frozen line (controlplane.invoicing.storage.freeze).
HISTORY_LINE_TOTALS = text(
    """
    INSERT INTO invoice_line_totals (
        line_id, invoice_id, customer, currency, period_start, feature, model, amount
    )
    SELECT
        l.id, l.invoice_id, h.customer, 'USD', h.period_start,
        coalesce(nullif(CAST(l.line AS jsonb) ->> 'feature', ''),
            CAST(l.line AS jsonb) ->> 'rate_card'),
        CAST(l.line AS jsonb) ->> 'model', CAST(l.line AS jsonb) ->> 'amount'
    FROM invoice_lines AS l JOIN bench_history AS h ON h.id = l.invoice_id
    """
)


def load_history(db: Database, months: int) -> None:
    """Closed invoices of the ``months`` months before the period, for every customer."""
    with db.begin() as conn:
        conn.execute(
            HISTORY,
            {
                "start": SUB_START.replace(tzinfo=None),
                "months": months,
                "m1": MODELS[0],
                "m2": MODELS[1],
                "m3": MODELS[2],
            },
        )
        conn.execute(HISTORY_INVOICES)
        conn.execute(HISTORY_LINES)
        conn.execute(HISTORY_LINE_TOTALS)
        conn.execute(
            text(
                "INSERT INTO invoice_numbers (currency, year, last)"
                " SELECT 'USD', 2026, count(*) FROM bench_history"
            )
        )
        conn.execute(text("DROP TABLE bench_history"))


def backend_cpu(admin: Any) -> float:
    """CPU seconds used so far by the PostgreSQL backends of this process's connections."""
    with admin.connect() as conn:
        pids = conn.execute(
            text("SELECT pid FROM pg_stat_activity WHERE application_name = :name"),
            {"name": APP_NAME},
        ).scalars()
        total = 0
        for pid in pids:
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue  # not on this machine, or gone
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICKS


async def measure(db: Database, admin: Any, args: argparse.Namespace) -> None:
    cp = ControlPlane(
        db=db,
        listen="127.0.0.1:0",
        clock=FrozenClock(AT),
        console_listen="127.0.0.1:0",
        console_tokens=[TokenEntry(name="bench", scope=Scope.ADMIN, hash=hash_token(TOKEN))],
    )
    await cp.start()
    base = f"http://127.0.0.1:{cp.console_port}"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    print(f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    try:
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=600) as client:
            print(f"{'page':<52} {'median':>10} {'cpu':>9} {'status':>6}")
            # Big's last closed invoice (its lines), when there is a history (give --history
            # with --schema too).
            pages = [*PAGES, "/invoices/h1-1"] if args.history else PAGES
            for page in args.pages.split(",") if args.pages else pages:
                response = await client.get(page)  # warm-up
                samples = []
                cpus = []
                for _ in range(args.runs):
                    pg = await asyncio.to_thread(backend_cpu, admin)
                    cpu = time.process_time()
                    t = time.perf_counter()
                    response = await client.get(page)
                    samples.append(time.perf_counter() - t)
                    cpu = time.process_time() - cpu
                    cpus.append(cpu + await asyncio.to_thread(backend_cpu, admin) - pg)
                median = statistics.median(samples) * 1000
                flag = "" if median <= 150 else "  > 150 ms"
                print(
                    f"{page:<52} {median:>7.1f} ms {statistics.median(cpus) * 1000:>6.0f} ms"
                    f" {response.status_code:>6}{flag}"
                )
    finally:
        await cp.stop(0)


if __name__ == "__main__":
    asyncio.run(main())
