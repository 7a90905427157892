"""Alembic's environment: run against the connection tunesmith hands over (store.db.upgrade)."""

from alembic import context

from tunesmith.store.tables import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
