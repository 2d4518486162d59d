"""Alembic environment: runs on the connection handed over by controlplane.storage.db."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from controlplane.storage.schema import metadata
from controlplane.storage.urls import default_url

config = context.config
connection = config.attributes.get("connection")

if connection is None:
    # Run from the alembic command line: use DATABASE_URL.
    engine = create_engine(default_url())
    with engine.begin() as conn:
        context.configure(connection=conn, target_metadata=metadata, render_as_batch=True)
        context.run_migrations()
else:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    context.run_migrations()
