"""The store against SQLite and a real PostgreSQL: the schema the migrations build, pagination,
projects, and the queue (each job claimed by exactly one worker, a dead worker's job taken over)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("sqlalchemy", reason="the store needs the serve extra (pip install -e .[serve])")
pytest.importorskip("alembic", reason="the store needs the serve extra (pip install -e .[serve])")

from tunesmith.store.db import UnknownCursor, open_store, sqlite_url  # noqa: E402


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path):
    url = sqlite_url(tmp_path / "jobs.db") if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    opened = open_store(url)
    yield opened
    opened.close()


def job_fields(project: str = "p1", **extra) -> dict:
    fields = {"project": project, "model": "tiny", "base_spec": "tiny", "training_file": "file-x",
              "validation_file": None, "method": {"type": "supervised"}, "settings": {}, "suffix": None, "seed": 1,
              "metadata_": None}
    fields.update(extra)
    return fields


def test_the_migrations_build_exactly_the_tables_the_code_declares(store):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from tunesmith.store.tables import Base

    with store.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []
    store.upgrade()  # a second upgrade (the next process to start) changes nothing


def test_files_pages_and_projects(store, tmp_path):
    import io

    from tunesmith.store.blobs import Blobs
    from tunesmith.store.uploads import add_upload, delete_upload

    blobs = Blobs(tmp_path / "blobs")

    def upload(project: str, name: str, content: bytes):
        return add_upload(store, blobs, project, name, "fine-tune", io.BytesIO(content), 1 << 20)

    made = [upload("p1", f"f{i}.jsonl", b"x" * (10 + i)) for i in range(5)]
    upload("p2", "other.jsonl", b"y")
    first = store.list_files("p1", after=None, limit=2)
    assert [f.id for f in first.rows] == [made[4].id, made[3].id] and first.has_more
    rest = store.list_files("p1", after=first.rows[-1].id, limit=10)
    assert [f.id for f in rest.rows] == [made[2].id, made[1].id, made[0].id] and not rest.has_more
    assert [f.id for f in store.list_files("p1", after=None, limit=2, order="asc").rows] == [made[0].id, made[1].id]
    assert len(store.list_files(None, after=None, limit=100).rows) == 6  # the operator sees every project
    assert store.get_file("p2", made[0].id) is None and store.get_file(None, made[0].id) is not None
    with pytest.raises(UnknownCursor):
        store.list_files("p1", after="file-nope", limit=2)
    twin = upload("p1", "again.jsonl", b"x" * 10)
    assert twin.sha256 == made[0].sha256 and made[0].bytes == 10
    assert delete_upload(store, blobs, "p2", made[0].id) is None  # another project's id: not found
    assert delete_upload(store, blobs, "p1", made[0].id).id == made[0].id
    assert blobs.path(twin.sha256).read_bytes() == b"x" * 10  # the bytes stay: `twin` has the same content
    delete_upload(store, blobs, "p1", twin.id)
    assert not blobs.path(twin.sha256).exists()


def test_a_delete_and_an_upload_of_the_same_bytes_never_lose_the_uploads_bytes(store, tmp_path):
    """Deleting a file while another upload of the same content lands: the deleting side counted no
    other reference, then removed the blob after the upload had found it in place and committed its
    row, which then named bytes that were gone. Raced here for real, in threads, many times."""
    import io
    import threading

    from tunesmith.store.blobs import Blobs
    from tunesmith.store.uploads import add_upload, delete_upload

    blobs = Blobs(tmp_path / "blobs")
    lost = []
    for round_number in range(150):
        content = f"row {round_number}\n".encode() * 50
        first = add_upload(store, blobs, "p1", "a.jsonl", "fine-tune", io.BytesIO(content), 1 << 20)
        start = threading.Barrier(2)
        second = []

        def upload_again(content=content, start=start, second=second):
            start.wait()
            second.append(add_upload(store, blobs, "p1", "b.jsonl", "fine-tune", io.BytesIO(content), 1 << 20))

        def delete_first(first=first, start=start):
            start.wait()
            delete_upload(store, blobs, "p1", first.id)

        threads = [threading.Thread(target=upload_again), threading.Thread(target=delete_first)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if not blobs.path(second[0].sha256).is_file():
            lost.append(round_number)
    assert lost == []


def test_jobs_list_filters_by_metadata_and_pages(store):
    jobs = [store.create_job(**job_fields(metadata_={"team": "a" if i % 2 else "b"})) for i in range(7)]
    store.create_job(**job_fields("p2", metadata_={"team": "a"}))
    team_a = store.list_jobs("p1", after=None, limit=2, metadata={"team": "a"})
    assert [j.id for j in team_a.rows] == [jobs[5].id, jobs[3].id] and team_a.has_more
    tail = store.list_jobs("p1", after=team_a.rows[-1].id, limit=2, metadata={"team": "a"})
    assert [j.id for j in tail.rows] == [jobs[1].id] and not tail.has_more
    assert len(store.list_jobs("p1", after=None, limit=100).rows) == 7
    events = store.list_events(jobs[0].id, after=None, limit=10).rows
    assert [e.message for e in events] == [f"Created fine-tuning job: {jobs[0].id}"]


def test_each_job_is_claimed_by_exactly_one_of_many_workers(store):
    created = {store.create_job(**job_fields()).id for _ in range(12)}
    claimed: list[tuple[str, str]] = []
    lock = threading.Lock()

    def work(worker: str) -> None:
        misses = 0
        while misses < 3:
            job = store.claim(worker, lease_seconds=600)
            if job is None:
                misses += 1
                continue
            misses = 0
            assert job.status == "validating_files" and job.worker_id == worker
            with lock:
                claimed.append((job.id, worker))

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(job_id for job_id, _ in claimed) == sorted(created)  # none lost, none twice


def test_a_dead_workers_job_is_taken_over_and_the_old_worker_is_fenced_off(store):
    job = store.create_job(**job_fields())
    assert store.claim("a", 600).id == job.id
    assert store.update_held(job.id, "a", ("validating_files",), status="queued", worker_id=None)
    assert store.claim("a", 600).status == "running"
    assert store.claim("b", 600) is None  # a's lease is fresh
    time.sleep(1.1)
    taken = store.claim("b", lease_seconds=1)
    assert taken.id == job.id and taken.worker_id == "b" and taken.status == "running" and taken.attempts == 3
    assert store.heartbeat(job.id, "a") is None  # a learns it lost the job
    assert not store.update_held(job.id, "a", ("running",), status="succeeded")
    assert store.update_held(job.id, "b", ("running",), events=[{"message": "step 1", "type": "metrics"}])
    cancelled, ok = store.cancel_job("p1", job.id)
    assert ok and cancelled.status == "cancelled"
    assert not store.update_held(job.id, "b", ("running",), status="succeeded")  # cancel wins
    assert store.get_job("p1", job.id).status == "cancelled"
    messages = [e.message for e in store.list_events(job.id, after=None, limit=50).rows]
    assert "step 1" in messages and any("stopped responding" in m for m in messages)


def test_pause_and_resume(store):
    job = store.create_job(**job_fields())
    assert store.pause_job("p1", job.id)[1] is False  # still validating: nothing to pause yet
    store.claim("w", 600)
    store.update_held(job.id, "w", ("validating_files",), status="queued", worker_id=None)
    paused, ok = store.pause_job("p1", job.id)
    assert ok and paused.status == "paused"
    assert store.claim("w", 600) is None  # a paused job waits
    resumed, ok = store.resume_job("p1", job.id)
    assert ok and resumed.status == "queued"
    running = store.claim("w", 600)
    assert running.status == "running"
    asked, ok = store.pause_job("p1", job.id)
    assert ok and asked.status == "running" and asked.pause_requested
    assert store.pause_job("p2", job.id) == (None, False)
