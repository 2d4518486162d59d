"""Shared fixtures: every storage test runs against SQLite and against PostgreSQL."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings
from sqlalchemy import Connection, Engine, create_engine, make_url, text

from support.databases import copy_sqlite_at_head
from support.durations import DURATIONS, file_seconds, slowest_files_first

# Bytecode caching on, whatever the environment says (PYTHONDONTWRITEBYTECODE=1 was set on
# the machines this suite runs on): the suite starts hundreds of Python processes (control
# planes, data planes, the CLI) and three workers that each collect ~200 test files, and
# without a cache each compiles the project's modules again, and pytest rewrites every test
# module's asserts again (half of the collection's 16 s per worker). Set before the test
# modules are imported, and inherited by every process a test starts.
sys.dont_write_bytecode = False
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)

# Property tests run beside processes of their own on 2 cores: a per-example deadline measures
# the machine's load, not the code (examples that took >200 ms under load failed at random).
settings.register_profile("meterline", deadline=None)
settings.load_profile("meterline")

PG_URL = os.environ.get(
    "METERLINE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


# Schemas at head that a finished test left, emptied, for the next test of this worker to take
# (renamed to its own name) instead of replaying the DDL: ~0.15 s of catalog work against two
# cheap renames, for each of ~500 PostgreSQL tests. Only schemas `migrated_db_url` made (at
# head, their structure as the migrations left it) go back; anything else is dropped.
_POOL: list[str] = []
_AT_HEAD: set[str] = set()
_ADMIN: list[Engine] = []


def _admin() -> Engine:
    if not _ADMIN:
        _ADMIN.append(create_engine(PG_URL, isolation_level="AUTOCOMMIT"))
    return _ADMIN[0]


def _emptied(conn: Connection, schema: str) -> bool:
    """Delete every row but the migration stamp and restart the sequences; False if this
    role may not (the schema is then dropped)."""
    tables = conn.execute(
        text("SELECT tablename FROM pg_tables WHERE schemaname = :s AND tablename <> :v"),
        {"s": schema, "v": "alembic_version"},
    ).scalars()
    sequences = conn.execute(
        text("SELECT sequencename FROM pg_sequences WHERE schemaname = :s"), {"s": schema}
    ).scalars()
    statements = [f'DELETE FROM "{schema}"."{table}"' for table in tables]
    statements += [f"SELECT setval('\"{schema}\".\"{seq}\"', 1, false)" for seq in sequences]
    try:
        # Foreign keys are not checked while replicating: the tables empty in any order.
        conn.exec_driver_sql(
            "BEGIN; SET LOCAL session_replication_role = replica; "
            + "; ".join(statements)
            + "; COMMIT"
        )
    except Exception:
        conn.exec_driver_sql("ROLLBACK")
        return False
    return True


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A URL whose connections see a fresh, private PostgreSQL schema."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = _admin()
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
            at_head = schema in _AT_HEAD
            _AT_HEAD.discard(schema)
            if at_head and _emptied(conn, schema):
                pooled = f"t_pool_{uuid.uuid4().hex[:12]}"
                conn.execute(text(f'ALTER SCHEMA "{schema}" RENAME TO "{pooled}"'))
                _POOL.append(pooled)
            else:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))


@pytest.fixture(scope="session", autouse=True)
def _drop_pooled_schemas() -> Iterator[None]:
    yield
    if _POOL:
        with _admin().connect() as conn:
            for schema in _POOL:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        _POOL.clear()
    for engine in _ADMIN:
        engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('db') / 'meterline.db'}"
    return str(request.getfixturevalue("pg_url"))


# Migrating from an empty database costs ~0.6 s on SQLite and ~1.2 s on PostgreSQL (Alembic runs
# every revision); hundreds of tests start from a database at head. Each test worker migrates one
# template per backend, once, and `migrated_db_url` copies it: the SQLite file
# (support/databases.py), or PostgreSQL's schema as pg_dump writes it (DDL, plus the
# alembic_version row). The copy is the schema the migrations make (test_migrations.py checks
# it); tests of the migrations themselves keep using the empty `db_url`.


def _schema_of(url: str) -> str:
    """The private schema a `pg_url` URL points at."""
    return url.split("search_path%3D", 1)[1].split("&", 1)[0]


def _pg_dump_ddl(schema: str) -> str | None:
    """``schema`` as SQL statements (None without pg_dump: then each test migrates)."""
    pg_dump = shutil.which("pg_dump")
    if pg_dump is None:
        return None
    url = make_url(PG_URL)
    env = {**os.environ}
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    args = [pg_dump, "-n", schema, "--no-owner", "--no-privileges", "--inserts"]
    args += ["-h", url.host or "127.0.0.1", "-p", str(url.port or 5432)]
    args += ["-U", url.username or "postgres", "-d", url.database or "postgres"]
    dump = subprocess.run(args, capture_output=True, text=True, env=env, timeout=60, check=True)
    lines = [
        line
        for line in dump.stdout.splitlines()
        # psql meta-commands (\restrict), comments, and the schema itself (pg_url makes it).
        if not line.startswith(("\\", "--")) and line.strip() != f"CREATE SCHEMA {schema};"
    ]
    return "\n".join(lines)


@pytest.fixture(scope="session")
def _postgres_at_head() -> Iterator[tuple[str, str] | None]:
    """(template schema name, its SQL), or None when there is no pg_dump."""
    from controlplane.storage.db import Database

    schema = f"t_tmpl_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        Database.connect(f"{PG_URL}?options=-csearch_path%3D{schema}").dispose()
        ddl = _pg_dump_ddl(schema)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
    yield None if ddl is None else (schema, ddl)


@pytest.fixture
def migrated_db_url(db_url: str, request: pytest.FixtureRequest) -> str:
    """``db_url`` with the schema already at head (what ``Database.connect`` would migrate to)."""
    if db_url.startswith("sqlite"):
        copy_sqlite_at_head(Path(db_url.removeprefix("sqlite:///")))
        return db_url
    template = request.getfixturevalue("_postgres_at_head")
    if template is None:
        from controlplane.storage.db import Database

        Database.connect(db_url).dispose()
        return db_url
    name, ddl = template
    schema = _schema_of(db_url)
    if _POOL:
        # An emptied schema at head, under this test's name (pg_url made an empty one).
        with _admin().connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}"'))
            conn.execute(text(f'ALTER SCHEMA "{_POOL.pop()}" RENAME TO "{schema}"'))
    else:
        with _admin().connect() as conn, conn.begin():
            conn.exec_driver_sql(ddl.replace(f"{name}.", f"{schema}."))
    _AT_HEAD.add(schema)
    return db_url


# Data planes the tests start keep nothing on disk unless given --state-dir: by default they
# would share the user's state directory (root's: /var/lib/meterline), its node id, config
# cache and spool, which one process at a time may hold: a second data plane, started by
# another test running at the same time, then served a stale cached config and another
# test's spooled usage. Set for the whole session, before any fixture of any scope starts a
# process (a function-scoped fixture came after the module-scoped stacks that start them).
os.environ["METERLINE_STATE_DIR"] = ""


@pytest.fixture(autouse=True)
def _no_default_state_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts from the session's setting, whatever an earlier test changed."""
    monkeypatch.setenv("METERLINE_STATE_DIR", "")


# The order the test workers take files in: the slowest first (tests/durations.txt, written by
# tests/support/durations.py), the rest as collected. xdist's own reordering (files with the
# most tests first) is off in pyproject.toml (--no-loadscope-reorder): it put the end-to-end
# files, a few long tests each, last, where one of them ran alone for minutes at the end.
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items[:] = slowest_files_first(items, file_seconds(DURATIONS))
