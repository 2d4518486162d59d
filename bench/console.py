"""Console pages at scale: server-side time of every page with N customers and M usage events.

    python bench/console.py [--customers 10000] [--events 10000000] [--runs 5]
    python bench/console.py --keep ...          # keep the loaded schema (its name is printed)
    python bench/console.py --schema bench_1a2b3c4d [--runs 5]   # measure it again, no load

PostgreSQL only (the machine's, a fresh schema dropped afterwards). The catalog, customers and
subscriptions are applied as ``bench/rating.py`` does; the big customer's events and their
hourly rollups are generated inside PostgreSQL (``rating.load``). The other customers have no
usage. Then a control plane with its console starts on a frozen clock 20 days into the period,
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
from rating import AT, CATALOG, PG, SUB_START, load, yaml_lists
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
    "/customers",
    "/customers?q=c09999",
    "/customers/big",
    "/customers/big/preview",
    "/invoices",
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
    with db.engine.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        conn.execute(text("VACUUM (ANALYZE)"))
    print(
        f"loaded {args.customers:,} customers and {args.events:,} events in "
        f"{time.perf_counter() - started:.0f} s"
    )


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
            for page in PAGES:
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
