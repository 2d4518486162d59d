"""Database engine set-up and schema migrations (Alembic owns the schema)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, create_engine, event, text

if TYPE_CHECKING:
    from alembic.config import Config

# Alembic is imported where migrations are read or run, not here: it is a third of the
# control plane's import time (~0.5 s), which every CLI call that only talks gRPC would pay.

MIGRATIONS = Path(__file__).resolve().parent / "migrations"



def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    # WAL lets readers run beside the one writer; busy_timeout queues writers instead of failing.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def make_engine(url: str) -> Engine:
    """An engine for a SQLAlchemy URL (sqlite:///file.db, postgresql+psycopg://...)."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)


def alembic_config(connection: Connection | None = None) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


# Any fixed 64-bit number: replicas starting at once take turns to run the migrations.
MIGRATION_LOCK_ID = 0x6D65746572_6C696E


class SchemaError(Exception):
    """The database schema does not match this version of Meterline."""


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(connection: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


def _refuse_newer(connection: Connection) -> None:
    from alembic.script import ScriptDirectory

    current = current_revision(connection)
    known = {rev.revision for rev in ScriptDirectory.from_config(alembic_config()).walk_revisions()}
    if current is not None and current not in known:
        raise SchemaError(
            f"the database schema is at revision {current}, which this Meterline does not know "
            f"(its newest is {head_revision()}): the database was migrated by a newer version; "
            "upgrade Meterline"
        )


def migrate(engine: Engine) -> None:
    """Bring the schema up to the newest revision (serialised across replicas on PostgreSQL)."""
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": MIGRATION_LOCK_ID})
        _refuse_newer(connection)
        from alembic import command

        command.upgrade(alembic_config(connection), "head")


def check_schema(engine: Engine) -> None:
    """Refuse an unmigrated or newer schema with a message that says what to do."""
    with engine.connect() as connection:
        _refuse_newer(connection)
        current, head = current_revision(connection), head_revision()
    if current != head:
        raise SchemaError(
            f"the database schema is at revision {current or 'none (empty database)'}, "
            f"this Meterline needs {head}: run `meterline migrate` first"
        )


class Database:
    """The engine plus unit-of-work transactions."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # SQLite has one writer at a time; this process's writers queue here, in order, instead
        # of in SQLite's busy handler, which polls with sleeps and lets one writer starve past
        # busy_timeout while others keep winning the lock ("database is locked": four usage
        # streams under load, bench/ingest.py). Other processes still meet busy_timeout.
        self._writer = threading.Lock() if engine.dialect.name == "sqlite" else None

    @classmethod
    def connect(cls, url: str, *, run_migrations: bool = True) -> Database:
        """Connect; migrate the schema to the newest revision, or only check that it is there."""
        engine = make_engine(url)
        try:
            if run_migrations:
                migrate(engine)
            else:
                check_schema(engine)
        except BaseException:
            engine.dispose()
            raise
        return cls(engine)

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """One transaction: committed on success, rolled back on any error."""
        with self.engine.begin() as connection:
            yield connection

    @contextmanager
    def begin_write(self) -> Iterator[Connection]:
        """``begin()`` for a transaction that writes: on SQLite, one writer at a time in this
        process, and SQLite's write lock held from the transaction's start."""
        if self._writer is None:
            with self.begin() as connection:
                yield connection
            return
        with self._writer, self.begin() as connection:
            # The write lock from the start (a deferred transaction takes it at its first
            # write): what the transaction reads before writing cannot change under it.
            connection.exec_driver_sql("BEGIN IMMEDIATE")
            yield connection

    def dispose(self) -> None:
        self.engine.dispose()
