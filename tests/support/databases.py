"""SQLite databases already at the newest schema revision, copied from one migrated template.

Migrating an empty database runs every Alembic revision (~0.6 s on SQLite, more under load);
a test that needs a control plane's database but does not test the migrations starts from a
copy of a database this process migrated once. ``Database.connect`` on the copy finds it at
head and migrates nothing.
"""

from __future__ import annotations

import atexit
import shutil
import sqlite3
import tempfile
from pathlib import Path

_template: Path | None = None


def _sqlite_template() -> Path:
    global _template
    if _template is None:
        from controlplane.storage.db import Database

        directory = Path(tempfile.mkdtemp(prefix="meterline-head-"))
        atexit.register(shutil.rmtree, directory, ignore_errors=True)
        path = directory / "head.db"
        Database.connect(f"sqlite:///{path}").dispose()
        _template = path
    return _template


def copy_sqlite_at_head(path: Path) -> None:
    """Write a database at the newest revision to ``path`` (a new file)."""
    source = sqlite3.connect(_sqlite_template())
    target = sqlite3.connect(path)
    try:
        source.backup(target)
    finally:
        source.close()
        target.close()


def sqlite_at_head(path: Path) -> str:
    """The URL of a new SQLite database at ``path``, at the newest revision."""
    copy_sqlite_at_head(path)
    return f"sqlite:///{path}"
