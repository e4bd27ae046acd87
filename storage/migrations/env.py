"""Alembic environment: runs on a connection handed in by storage.migrations.upgrade."""

from __future__ import annotations

from alembic import context

from storage.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `jarchy migrate`, which supplies the connection")

# Batch mode lets later migrations alter SQLite tables, which ALTER TABLE alone cannot.
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
