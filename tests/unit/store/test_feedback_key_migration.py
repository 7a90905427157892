"""Migration 0003 (the key that gave each feedback) on a real SQLite file written by the 0002 schema:
the column is added, the rows already there are kept (with no key: it was never recorded), and the
store then records a key's fingerprint, never the key."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

pytest.importorskip("sqlalchemy", reason="the store needs the serve extra (pip install -e .[serve])")
pytest.importorskip("alembic", reason="the store needs the serve extra (pip install -e .[serve])")

from tunesmith.store.completions import Completions, key_fingerprint  # noqa: E402
from tunesmith.store.db import MIGRATIONS, Store, open_store, sqlite_url  # noqa: E402


def migrate(url: str, revision: str, *, down: bool = False) -> None:
    """Alembic to `revision` on `url`, as Store.upgrade does for head."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    store = Store(url)
    try:
        with store.engine.begin() as connection:
            config.attributes["connection"] = connection
            (command.downgrade if down else command.upgrade)(config, revision)
    finally:
        store.close()


def schema_differences(store: Store) -> list:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from tunesmith.store.tables import Base

    with store.engine.connect() as connection:
        return compare_metadata(MigrationContext.configure(connection), Base.metadata)


def columns(database: Path, table: str) -> list[str]:
    with sqlite3.connect(database) as db:
        return [row[1] for row in db.execute(f"PRAGMA table_info({table})")]


def test_a_0002_store_upgrades_keeping_its_feedback_and_then_records_fingerprints(tmp_path: Path) -> None:
    database = tmp_path / "old.db"
    migrate(sqlite_url(database), "0002")
    assert "key_fingerprint" not in columns(database, "feedback")
    with sqlite3.connect(database) as db:  # what a 0002 server wrote
        db.execute("INSERT INTO completions (id, project, model, kind, endpoint, messages, answer, choices, params, "
                   "prompt_tokens, completion_tokens, latency_ms, scrubbed, created_at) VALUES ('chatcmpl-old', 'p1', "
                   "'bot', 'model', 'chat', '[]', 'hi', '[]', '{}', 1, 1, 2.0, 0, 1700000000)")
        db.execute("INSERT INTO feedback (id, completion_id, project, score, correction, created_at) VALUES "
                   "('fb-old', 'chatcmpl-old', 'p1', -1, 'hello', 1700000001)")

    completions = Completions(open_store(sqlite_url(database)))  # what the next server start does
    assert "key_fingerprint" in columns(database, "feedback")
    assert schema_differences(completions.store) == []  # the upgraded file is the schema the code declares
    [old] = completions.feedback(["chatcmpl-old"])["chatcmpl-old"]
    assert (old.id, old.score, old.correction, old.key_fingerprint) == ("fb-old", -1, "hello", None)
    new = completions.add_feedback("p1", "chatcmpl-old", score=1, comment=None, correction=None,
                                   key_fingerprint=key_fingerprint("sk-secret-key"))
    with sqlite3.connect(database) as db:
        stored = db.execute("SELECT id, key_fingerprint FROM feedback ORDER BY seq").fetchall()
    assert stored == [("fb-old", None), (new.id, key_fingerprint("sk-secret-key"))]
    assert not any(b"sk-secret-key" in path.read_bytes() for path in tmp_path.glob("old.db*"))  # WAL included

    migrate(sqlite_url(database), "0002", down=True)  # and back: the column goes, the rows stay
    assert "key_fingerprint" not in columns(database, "feedback")
    with sqlite3.connect(database) as db:
        assert db.execute("SELECT count(*) FROM feedback").fetchone()[0] == 2


def test_a_fingerprint_is_the_first_16_hex_digits_of_the_keys_sha256() -> None:
    import hashlib

    assert key_fingerprint("k-1") == hashlib.sha256(b"k-1").hexdigest()[:16]
    assert len(key_fingerprint("k-1")) == 16 and key_fingerprint("k-1") != key_fingerprint("k-2")
