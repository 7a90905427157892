"""What a client reads of a job (its error, its events) and what the server prints names no path on
the server and no password: the job's files by their ids, its base by the name the client gave."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

pytest.importorskip("sqlalchemy", reason="the worker needs the serve extra (pip install -e .[serve])")

from tunesmith.config import JobsConfig  # noqa: E402
from tunesmith.jobs.worker import Worker, last_error  # noqa: E402
from tunesmith.store.db import open_store, shown_url, sqlite_url  # noqa: E402
from tunesmith.store.tables import JobRow  # noqa: E402


def test_a_jobs_messages_name_its_files_by_id_and_no_server_path(tmp_path: Path):
    config = JobsConfig(jobs_dir=str(tmp_path / "jobs"))
    (tmp_path / "jobs").mkdir()
    worker = Worker(config, store=open_store(config.database_url), worker_id="w")
    job = JobRow(id="ftjob-abc", model="tiny", base_spec="/srv/models/tiny-llama", training_file="file-train",
                 validation_file="file-valid", settings={"_files": ["training_file.jsonl", "validation_file.csv"]})
    files = worker.job_dir(job).resolve() / "files"
    message = (f"error: {files / 'training_file.jsonl'}:3: no assistant reply; {files / 'validation_file.csv'}:1: "
               f"empty; /srv/models/tiny-llama: no such folder; see {worker.job_dir(job).resolve() / 'train.log'}")
    shown = worker.public_text(job, message)
    assert "file-train:3" in shown and "file-valid:1" in shown and "tiny: no such folder" in shown
    assert str(tmp_path) not in shown and "/srv/models" not in shown
    log = tmp_path / "train.log"
    log.write_text("loading\n")
    assert str(tmp_path) not in last_error(log, 1) and "status 1" in last_error(log, 1)


def test_a_store_url_is_shown_without_its_password():
    url = "postgresql+psycopg://trainer:s3cr3t-pw@db.internal:5432/jobs"
    assert "s3cr3t-pw" not in shown_url(url) and "trainer" in shown_url(url) and "db.internal" in shown_url(url)


def test_a_worker_started_by_the_server_gets_the_store_url_outside_its_command_line(tmp_path: Path):
    from tunesmith.serve.app import start_worker

    store_path = tmp_path / "secret-store-name.db"
    config = JobsConfig(jobs_dir=str(tmp_path / "jobs"), store_url=sqlite_url(store_path), poll_seconds=0.2)
    open_store(config.database_url).close()
    worker = start_worker(config)
    try:
        command_line = Path(f"/proc/{worker.pid}/cmdline").read_bytes().decode()
        assert "secret-store-name" not in command_line  # `ps` shows command lines to every user
        deadline = time.monotonic() + 60
        while worker.poll() is None and time.monotonic() < deadline:  # it opened that store (from its environment)
            if (tmp_path / "secret-store-name.db-wal").exists():
                break
            time.sleep(0.1)
        assert worker.poll() is None and (tmp_path / "secret-store-name.db-wal").exists()
    finally:
        worker.terminate()
        worker.wait(timeout=30)
