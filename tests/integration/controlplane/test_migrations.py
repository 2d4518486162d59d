"""Alembic owns the schema: migrating an empty database gives exactly the declared tables."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from controlplane.storage.db import Database
from controlplane.storage.schema import metadata


def test_migrations_match_the_declared_schema(db_url: str) -> None:
    db = Database.connect(db_url)
    try:
        with db.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), metadata)
        assert diff == []
        # Running the migrations again is a no-op.
        Database.connect(db_url).dispose()
    finally:
        db.dispose()


def test_the_tests_copy_of_a_migrated_schema_is_the_declared_schema_at_head(
    migrated_db_url: str,
) -> None:
    """The template the fixtures copy (tests/conftest.py) is what migrating gives: at head,
    checked without migrating, and the declared tables with their indexes and constraints."""
    db = Database.connect(migrated_db_url, run_migrations=False)
    try:
        with db.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), metadata)
        assert diff == []
    finally:
        db.dispose()


def test_an_unmigrated_or_newer_schema_is_refused_with_a_clear_message(db_url: str) -> None:
    import pytest
    from sqlalchemy import text

    from controlplane.storage.db import SchemaError, make_engine

    # An empty database: checking refuses and says what to do; migrating fixes it.
    with pytest.raises(SchemaError, match="run `meterline migrate`"):
        Database.connect(db_url, run_migrations=False)
    Database.connect(db_url).dispose()
    Database.connect(db_url, run_migrations=False).dispose()

    # A schema migrated by a newer Meterline is refused either way, and left alone.
    engine = make_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'from-the-future'"))
    for run_migrations in (True, False):
        with pytest.raises(SchemaError, match="newer version"):
            Database.connect(db_url, run_migrations=run_migrations)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == (
            "from-the-future"
        )
    engine.dispose()


def test_replicas_migrating_at_once_take_turns(pg_url: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:
        databases = list(pool.map(lambda _: Database.connect(pg_url), range(4)))
    for db in databases:
        db.dispose()
    Database.connect(pg_url, run_migrations=False).dispose()
