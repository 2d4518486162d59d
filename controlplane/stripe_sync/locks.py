"""Named locks the Stripe sync holds across threads and control-plane replicas.

On PostgreSQL a transaction-level advisory lock on a connection of its own, held for the whole
``with`` block: every replica on the database sees it, and it is released when the block ends
or the connection dies (a crashed replica never leaves a lock behind). On SQLite a lock of this
process: SQLite serves one process, and the per-customer idempotency key still covers a second
process within Stripe's 24 hours.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from controlplane.storage.db import Database

_LOCAL: dict[str, threading.Lock] = {}
_LOCAL_GUARD = threading.Lock()


def lock_id(name: str) -> int:
    """A stable signed 64-bit advisory lock id per name."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


@contextmanager
def hold(db: Database, name: str, *, wait: float | None) -> Iterator[bool]:
    """True while this thread holds lock ``name``; False if it is held elsewhere.

    ``wait=None`` tries once; else waits up to ``wait`` seconds before answering False.
    """
    if db.engine.dialect.name == "postgresql":
        with _postgres(db, name, wait=wait) as got:
            yield got
        return
    with _LOCAL_GUARD:
        lock = _LOCAL.setdefault(name, threading.Lock())
    got = lock.acquire(timeout=wait) if wait is not None else lock.acquire(blocking=False)
    try:
        yield got
    finally:
        if got:
            lock.release()


@contextmanager
def _postgres(db: Database, name: str, *, wait: float | None) -> Iterator[bool]:
    with db.engine.connect() as conn:
        key = lock_id(name)
        if wait is None:
            got = bool(
                conn.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": key}).scalar()
            )
        else:
            # lock_timeout bounds the wait; LOCAL: it ends with this transaction.
            conn.execute(text(f"SET LOCAL lock_timeout = '{int(wait * 1000)}ms'"))
            try:
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})
                got = True
            except OperationalError as exc:
                if getattr(exc.orig, "sqlstate", None) != "55P03":  # lock_not_available
                    raise
                conn.rollback()
                got = False
        try:
            yield got
        finally:
            # Ends the transaction, which releases the lock.
            conn.rollback()
