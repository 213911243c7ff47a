"""Alembic environment: runs on the connection handed over by closedloop.storage.metadata.db."""

from __future__ import annotations

from alembic import context

from closedloop.storage.metadata.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("closedloop migrations run through `closedloop db upgrade`.")
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
