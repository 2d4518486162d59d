"""Shared fixtures: every storage test runs against SQLite and against PostgreSQL."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from hypothesis import settings
from sqlalchemy import create_engine, text

# Property tests run beside processes of their own on 2 cores: a per-example deadline measures
# the machine's load, not the code (examples that took >200 ms under load failed at random).
settings.register_profile("meterline", deadline=None)
settings.load_profile("meterline")

PG_URL = os.environ.get(
    "METERLINE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A URL whose connections see a fresh, private PostgreSQL schema."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        # The application name marks every connection to this schema, from any process.
        yield f"{PG_URL}?options=-csearch_path%3D{schema}&application_name={schema}"
    finally:
        with admin.connect() as conn:
            # Servers a test started may still hold connections (and locks) on the schema:
            # end them first, or DROP SCHEMA can deadlock with their last queries.
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = :name AND pid <> pg_backend_pid()"
                ),
                {"name": schema},
            )
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('db') / 'meterline.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture(autouse=True)
def _no_default_state_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    """Data planes a test starts keep nothing on disk unless it gives --state-dir: by default
    they would share the user's state directory (one data plane per directory)."""
    monkeypatch.setenv("METERLINE_STATE_DIR", "")
