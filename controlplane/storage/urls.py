"""The database a command uses when given none (no SQLAlchemy here: the CLI's parser reads it
for every command)."""

from __future__ import annotations

import os

DEFAULT_SQLITE_PATH = "meterline.db"


def default_url() -> str:
    """DATABASE_URL if set, else a SQLite file in the working directory."""
    return os.environ.get("DATABASE_URL") or f"sqlite:///{DEFAULT_SQLITE_PATH}"
