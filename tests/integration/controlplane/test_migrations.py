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
