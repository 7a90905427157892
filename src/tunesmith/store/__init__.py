"""The database: uploaded files, fine-tuning jobs (the job table is the queue), their events and
checkpoints. SQLAlchemy over SQLite (WAL, the default) or PostgreSQL (by URL, for workers on several
machines); the schema is created and upgraded by the Alembic migrations shipped in `migrations/`."""

from tunesmith.store.db import Store, open_store

__all__ = ["Store", "open_store"]
