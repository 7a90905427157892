"""Opening the store, and every read and write the server and the workers make.

SQLite (the default) runs in WAL mode, so readers never wait for the one writer; every write
transaction starts with BEGIN IMMEDIATE, so two processes never both read and then fail to upgrade
to a write lock (they queue on busy_timeout instead). PostgreSQL is opened by URL
(`postgresql+psycopg://…`); there workers claim jobs with `SELECT … FOR UPDATE SKIP LOCKED`.

A project of None reads every project's rows (the operator's admin key).
"""

from __future__ import annotations

import secrets
import string
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, func, select, text, update
from sqlalchemy.orm import Session

from tunesmith.store.projects import may_see
from tunesmith.store.tables import CheckpointRow, EventRow, FileRow, JobRow

MIGRATIONS = Path(__file__).parent / "migrations"
ACTIVE = ("validating_files", "queued", "running")
TERMINAL = ("succeeded", "failed", "cancelled")
_ALPHABET = string.ascii_letters + string.digits


def new_id(prefix: str) -> str:
    return f"{prefix}-" + "".join(secrets.choice(_ALPHABET) for _ in range(24))


def now() -> int:
    return int(time.time())


@dataclass(frozen=True)
class Page:
    """One page of a cursor-paginated list (OpenAI's `data` / `has_more`)."""

    rows: list[Any]
    has_more: bool


class UnknownCursor(Exception):
    """`after` names no row of this list."""


def shown_url(url: str) -> str:
    """A database URL as it may be printed or logged: its password (postgresql://user:PASSWORD@...)
    replaced with ***."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<a database URL that does not parse>"


STORE_URL_VARIABLE = "TUNESMITH_STORE_URL"  # how a store's URL reaches a worker: never on a command line (ps shows those)


def sqlite_url(path: str | Path) -> str:
    return f"sqlite:///{Path(path).resolve()}"


def open_store(url: str) -> Store:
    """Connect to `url` and bring its schema to the newest migration."""
    store = Store(url)
    store.upgrade()
    return store


class Store:
    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            self.engine = _sqlite_engine(url, immediate=True)
            self.read_engine = _sqlite_engine(url, immediate=False)
        else:
            self.engine = create_engine(url, pool_size=5, max_overflow=20, pool_pre_ping=True)
            self.read_engine = self.engine

    def close(self) -> None:
        self.engine.dispose()
        if self.read_engine is not self.engine:
            self.read_engine.dispose()

    # -- sessions ---------------------------------------------------------------------------------
    @contextmanager
    def writing(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            yield session

    @contextmanager
    def reading(self) -> Iterator[Session]:
        with Session(self.read_engine, expire_on_commit=False) as session:
            yield session

    def upgrade(self) -> None:
        """Alembic's upgrade to head, one process at a time (a write lock on SQLite, an advisory
        lock on PostgreSQL), so a server and its workers starting together do not race."""
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with self.engine.begin() as connection:
            if not self.is_sqlite:
                connection.exec_driver_sql("SELECT pg_advisory_xact_lock(7153015)")
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    # -- files ------------------------------------------------------------------------------------
    @contextmanager
    def blob_references(self, sha256: str) -> Iterator[Session]:
        """A write transaction that holds the lock of one blob's references: the rows naming it are
        counted, added or deleted, and the blob placed or removed, by one holder at a time (on SQLite
        every write transaction is exclusive; on PostgreSQL, an advisory lock on the hash)."""
        with self.writing() as session:
            session.connection()  # begins now (BEGIN IMMEDIATE on SQLite), not at the first statement
            if not self.is_sqlite:
                session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": int(sha256[:15], 16)})
            yield session

    def add_file_row(self, session: Session, project: str, filename: str, purpose: str, size: int,
                     sha256: str) -> FileRow:
        row = FileRow(id=new_id("file"), project=project, filename=filename, purpose=purpose, bytes=size,
                      sha256=sha256, created_at=now())
        session.add(row)
        session.flush()
        return row

    def get_file(self, project: str | None, file_id: str) -> FileRow | None:
        with self.reading() as session:
            row = session.scalar(select(FileRow).where(FileRow.id == file_id))
        return row if row is not None and _visible(row.project, project) else None

    def list_files(self, project: str | None, *, after: str | None, limit: int, order: str = "desc",
                   purpose: str | None = None) -> Page:
        query = select(FileRow)
        if project is not None:
            query = query.where(FileRow.project == project)
        if purpose:
            query = query.where(FileRow.purpose == purpose)
        return self._page(query, FileRow, after, limit, descending=order != "asc")

    def delete_file_row(self, session: Session, project: str | None, file_id: str) -> FileRow | None:
        row = session.scalar(select(FileRow).where(FileRow.id == file_id))
        if row is None or not _visible(row.project, project):
            return None
        session.delete(row)
        session.flush()
        return row

    def blob_referenced(self, session: Session, sha256: str) -> bool:
        return bool(session.scalar(select(func.count()).select_from(FileRow).where(FileRow.sha256 == sha256)))

    # -- jobs -------------------------------------------------------------------------------------
    def create_job(self, **fields: Any) -> JobRow:
        row = JobRow(id=new_id("ftjob"), status="validating_files", created_at=now(), attempts=0,
                     last_event_step=0, pause_requested=False, **fields)
        with self.writing() as session:
            session.add(row)
            session.flush()
            session.add(_event(row.id, f"Created fine-tuning job: {row.id}"))
        return row

    def get_job(self, project: str | None, job_id: str) -> JobRow | None:
        with self.reading() as session:
            row = session.scalar(select(JobRow).where(JobRow.id == job_id))
        return row if row is not None and _visible(row.project, project) else None

    def list_jobs(self, project: str | None, *, after: str | None, limit: int,
                  metadata: dict[str, str] | None = None, metadata_null: bool = False) -> Page:
        query = select(JobRow)
        if project is not None:
            query = query.where(JobRow.project == project)
        if metadata_null:
            query = query.where(JobRow.metadata_.is_(None))
        if not metadata:
            return self._page(query, JobRow, after, limit, descending=True)
        # JSON filters differ per database; the metadata of one page's candidates is checked here
        rows, cursor = [], after
        while True:
            page = self._page(query, JobRow, cursor, max(limit * 4, 100), descending=True)
            rows += [r for r in page.rows if all((r.metadata_ or {}).get(k) == v for k, v in metadata.items())]
            if len(rows) > limit or not page.has_more:
                return Page(rows[:limit], len(rows) > limit)
            cursor = page.rows[-1].id

    def count_jobs(self, project: str, statuses: tuple[str, ...]) -> int:
        with self.reading() as session:
            return session.scalar(select(func.count()).select_from(JobRow).where(
                JobRow.project == project, JobRow.status.in_(statuses)))

    def jobs_of_model(self, fine_tuned_model: str) -> JobRow | None:
        with self.reading() as session:
            return session.scalar(select(JobRow).where(JobRow.fine_tuned_model == fine_tuned_model,
                                                       JobRow.status == "succeeded"))

    def succeeded_jobs(self, project: str | None = None) -> list[JobRow]:
        query = select(JobRow).where(JobRow.status == "succeeded").order_by(JobRow.seq)
        if project is not None:
            query = query.where(JobRow.project == project)
        with self.reading() as session:
            return list(session.scalars(query))

    def cancel_job(self, project: str | None, job_id: str) -> tuple[JobRow | None, bool]:
        """Cancelled at once in the store (a worker running it sees that and kills the training);
        returns the job and whether it was still cancellable."""
        return self._transition(project, job_id, ("validating_files", "queued", "running", "paused"), "cancelled",
                                "Fine-tuning job cancelled", finished=True)

    def pause_job(self, project: str | None, job_id: str) -> tuple[JobRow | None, bool]:
        """Queued or validated jobs pause at once; a running one is marked, and its worker stops the
        training (the run keeps its checkpoints) and sets `paused`."""
        with self.writing() as session:
            row = self._lock_job(session, job_id)
            if row is None or not _visible(row.project, project):
                return None, False
            if row.status == "queued":
                row.status = "paused"
                session.add(_event(row.id, "Fine-tuning job paused"))
            elif row.status == "running" and not row.pause_requested:
                row.pause_requested = True
                session.add(_event(row.id, "Pause requested; the job pauses at the end of its current step"))
            elif row.status != "running":
                return row, False
            return row, True

    def resume_job(self, project: str | None, job_id: str) -> tuple[JobRow | None, bool]:
        with self.writing() as session:
            row = self._lock_job(session, job_id)
            if row is None or not _visible(row.project, project):
                return None, False
            if row.status == "running" and row.pause_requested:  # asked to pause, not yet paused: keep running
                row.pause_requested = False
                session.add(_event(row.id, "Fine-tuning job resumed"))
                return row, True
            if row.status != "paused":
                return row, False
            row.status, row.pause_requested, row.worker_id = "queued", False, None
            session.add(_event(row.id, "Fine-tuning job resumed"))
            return row, True

    def _transition(self, project: str | None, job_id: str, sources: tuple[str, ...], target: str, message: str,
                    *, finished: bool = False) -> tuple[JobRow | None, bool]:
        with self.writing() as session:
            row = self._lock_job(session, job_id)
            if row is None or not _visible(row.project, project):
                return None, False
            if row.status not in sources:
                return row, False
            row.status = target
            if finished:
                row.finished_at = now()
            session.add(_event(row.id, message))
            return row, True

    def _lock_job(self, session: Session, job_id: str) -> JobRow | None:
        query = select(JobRow).where(JobRow.id == job_id)
        return session.scalar(query if self.is_sqlite else query.with_for_update())

    # -- the queue --------------------------------------------------------------------------------
    def claim(self, worker_id: str, lease_seconds: float) -> JobRow | None:
        """Take the oldest job that needs a worker: one waiting for validation or training, or one
        whose worker stopped heartbeating (it died: the job continues from its checkpoint).
        Exactly one worker gets each job."""
        stale = time.time() - lease_seconds
        waiting = ((JobRow.status.in_(("validating_files", "queued"))) & JobRow.worker_id.is_(None)) | (
            JobRow.status.in_(("validating_files", "running")) & (JobRow.heartbeat_at < stale))
        with self.writing() as session:
            query = select(JobRow).where(waiting).order_by(JobRow.seq).limit(1)
            if not self.is_sqlite:
                query = query.with_for_update(skip_locked=True)
            row = session.scalar(query)
            if row is None:
                return None
            status = "running" if row.status == "queued" else row.status
            claimed = session.execute(
                update(JobRow).where(JobRow.id == row.id, JobRow.status == row.status,
                                     JobRow.worker_id.is_(row.worker_id) if row.worker_id is None
                                     else JobRow.worker_id == row.worker_id)
                .values(worker_id=worker_id, heartbeat_at=time.time(), status=status, attempts=JobRow.attempts + 1)
                .execution_options(synchronize_session=False))
            if claimed.rowcount != 1:  # another worker took it between the read and the write
                return None
            if row.worker_id is not None:
                session.add(_event(row.id, f"Worker {row.worker_id} stopped responding; worker {worker_id} "
                                           "continues the job from its last checkpoint", level="warn"))
            elif status == "running":
                session.add(_event(row.id, "Fine-tuning job started"))
            session.flush()
            return session.get(JobRow, row.seq, populate_existing=True)

    def heartbeat(self, job_id: str, worker_id: str) -> JobRow | None:
        """Refresh the lease; returns the job (its status may have become cancelled, or a pause been
        asked for), or None when this worker no longer holds it."""
        with self.writing() as session:
            session.execute(update(JobRow).where(JobRow.id == job_id, JobRow.worker_id == worker_id)
                            .values(heartbeat_at=time.time()).execution_options(synchronize_session=False))
            row = session.scalar(select(JobRow).where(JobRow.id == job_id))
        return row if row is not None and row.worker_id == worker_id else None

    def update_held(self, job_id: str, holder: str, statuses: tuple[str, ...], /, *, events: list[dict] = (),
                    checkpoints: list[dict] = (), **values: Any) -> bool:
        """Change a job this worker still holds, in one of `statuses`, and add its events and
        checkpoints in the same transaction; False (and nothing written) when it lost the job."""
        with self.writing() as session:
            if values:
                changed = session.execute(
                    update(JobRow).where(JobRow.id == job_id, JobRow.worker_id == holder, JobRow.status.in_(statuses))
                    .values(**values).execution_options(synchronize_session=False)).rowcount
            else:
                changed = session.scalar(select(func.count()).select_from(JobRow).where(
                    JobRow.id == job_id, JobRow.worker_id == holder, JobRow.status.in_(statuses)))
            if not changed:
                return False
            session.add_all([_event(job_id, **item) for item in events])
            session.add_all([CheckpointRow(id=new_id("ftckpt"), job_id=job_id, created_at=now(), **item)
                             for item in checkpoints])
            return True

    def add_event(self, job_id: str, message: str, *, level: str = "info", type: str = "message",
                  data: dict | None = None) -> None:
        with self.writing() as session:
            session.add(_event(job_id, message, level=level, type=type, data=data))

    # -- events and checkpoints -------------------------------------------------------------------
    def list_events(self, job_id: str, *, after: str | None, limit: int) -> Page:
        return self._page(select(EventRow).where(EventRow.job_id == job_id), EventRow, after, limit, descending=True)

    def list_checkpoints(self, job_id: str, *, after: str | None, limit: int) -> Page:
        return self._page(select(CheckpointRow).where(CheckpointRow.job_id == job_id), CheckpointRow, after, limit,
                          descending=True)

    def checkpoint_steps(self, job_id: str) -> set[int]:
        with self.reading() as session:
            return set(session.scalars(select(CheckpointRow.step_number).where(CheckpointRow.job_id == job_id)))

    def _page(self, query: Any, table: Any, after: str | None, limit: int, *, descending: bool) -> Page:
        with self.reading() as session:
            if after:
                seq = session.scalar(query.with_only_columns(table.seq).where(table.id == after))
                if seq is None:
                    raise UnknownCursor(after)
                query = query.where(table.seq < seq if descending else table.seq > seq)
            query = query.order_by(table.seq.desc() if descending else table.seq).limit(limit + 1)
            rows = list(session.scalars(query))
        return Page(rows[:limit], len(rows) > limit)


def _visible(owner: str, project: str | None) -> bool:
    """A row of `owner`'s, seen by a key acting in `project` (None: an admin key)."""
    return may_see(project, owner)


def _event(job_id: str, message: str, *, level: str = "info", type: str = "message", data: dict | None = None) -> EventRow:
    return EventRow(id=new_id("ftevent"), job_id=job_id, created_at=now(), level=level, message=message, type=type,
                    data=data)


def _sqlite_engine(url: str, *, immediate: bool) -> Engine:
    engine = create_engine(url, pool_size=8, max_overflow=32, pool_timeout=60,
                           connect_args={"timeout": 60, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # transactions begin where SQLAlchemy says, below
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a killed process loses no commit
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine
