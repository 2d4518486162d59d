"""What checking apply with the data plane's compiler costs: the CPU time ``apply_document``
takes for a large decK file with and without the injected ``check_snapshot``.

    python bench/apply_validation.py [--routes 200] [--runs 5] [--db URL]

The file: N services, each with one route and an ai-proxy plugin, N consumers with a key each,
and a global key-auth. Each run applies it to an empty database (everything created) and again
(nothing changes); medians of ``--runs``. Then the check's parts alone on the stored config:
loading it, building the snapshot, compiling it. ``--db``: a PostgreSQL URL; each run gets a
private schema there, dropped afterwards (default: a new SQLite file per run).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import yaml
from sqlalchemy import create_engine, text

from controlplane.configsync.snapshot import build_snapshot
from controlplane.configsync.validate import SnapshotValidator
from controlplane.declarative.apply import apply_document
from controlplane.gateway import storage as gateway
from controlplane.storage.db import Database
from dataplane.proxy.compiler import check_snapshot

NOW = datetime(2026, 11, 1, tzinfo=UTC)


def document(routes: int) -> str:
    doc: dict[str, Any] = {
        "_format_version": "3.0",
        "services": [],
        "consumers": [],
        "plugins": [{"name": "key-auth"}],
    }
    for i in range(routes):
        doc["services"].append(
            {
                "name": f"svc{i}",
                "url": "http://127.0.0.1:9/",
                "routes": [{"name": f"r{i}", "paths": [f"/r{i}"], "methods": ["POST"]}],
                "plugins": [
                    {
                        "name": "ai-proxy",
                        "config": {
                            "route_type": "llm/v1/chat",
                            "auth": {"header_name": "Authorization", "header_value": f"Bearer {i}"},
                            "model": {
                                "provider": "openai",
                                "name": "gpt-4o",
                                "options": {"input_cost": "2.5", "output_cost": "10"},
                            },
                        },
                    }
                ],
            }
        )
        doc["consumers"].append({"username": f"c{i}", "keyauth_credentials": [{"key": f"k{i}"}]})
    return yaml.safe_dump(doc)


@contextlib.contextmanager
def fresh(url: str | None) -> Iterator[Database]:
    """An empty, migrated database: a new SQLite file, or a private schema of ``url``."""
    if url is None:
        db = Database.connect(f"sqlite:///{tempfile.mkdtemp()}/bench.db")
        try:
            yield db
        finally:
            db.dispose()
        return
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    db = Database.connect(f"{url}?options=-csearch_path%3D{schema}")
    try:
        yield db
    finally:
        db.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def cpu(fn: Callable[..., object], *args: Any, **kwargs: Any) -> float:
    start = time.process_time()
    fn(*args, **kwargs)
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--routes", type=int, default=200)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--db", default=None)
    args = parser.parse_args()
    text = document(args.routes)

    def runs(validator: SnapshotValidator | None) -> tuple[float, float]:
        first, again = [], []
        for _ in range(args.runs):
            with fresh(args.db) as db:
                for times in (first, again):
                    times.append(
                        cpu(apply_document, db, text=text, now=NOW, validate_snapshot=validator)
                    )
        return statistics.median(first), statistics.median(again)

    runs(None)  # warm-up: imports, caches
    plain = runs(None)
    checked = runs(check_snapshot)
    print(
        f"{args.routes} services/routes/ai-proxy plugins, {args.routes} consumers, "
        f"CPU ms, median of {args.runs}"
    )
    for label, without, with_check in zip(
        ("apply (creates)", "apply again"), plain, checked, strict=True
    ):
        print(
            f"  {label:16} without {without * 1e3:6.0f}  with the compiler {with_check * 1e3:6.0f}"
            f"  added {(with_check - without) * 1e3:5.0f}"
        )
    parts: dict[str, list[float]] = {"load_config": [], "build_snapshot": [], "check_snapshot": []}
    with fresh(args.db) as db:
        apply_document(db, text=text, now=NOW)
        for _ in range(args.runs):
            with db.begin() as conn:
                start = time.process_time()
                config = gateway.load_config(conn, secrets=None)
                parts["load_config"].append(time.process_time() - start)
            start = time.process_time()
            built = build_snapshot(config)
            parts["build_snapshot"].append(time.process_time() - start)
            parts["check_snapshot"].append(cpu(check_snapshot, built.snapshot))
    print(
        "  the check's parts: "
        + ", ".join(f"{k} {statistics.median(v) * 1e3:.1f}" for k, v in parts.items())
    )


if __name__ == "__main__":
    main()
