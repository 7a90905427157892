"""Stored completions and their feedback: what `tunesmith serve --store` keeps, what OpenAI's
stored-completions endpoints read, and what the monitor and `tunesmith feedback export` read back."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select

from tunesmith.errors import RunError
from tunesmith.store.db import Page, Store, _visible, new_id, now, sqlite_url
from tunesmith.store.tables import CompletionRow, FeedbackRow

COMPLETIONS_FILE = "completions.db"  # where `tunesmith serve RUN --store` keeps RUN's completions by default
METADATA_SCAN = 200  # rows read per round when a metadata filter has to be applied in Python
ID_CHUNK = 500  # completion ids per feedback query (SQLite caps a statement's bound parameters)
CAP_WINDOW_SECONDS = 3600  # the period of the per-key feedback cap (ServeConfig.max_feedback_per_key_per_hour)


def key_fingerprint(key: str) -> str:
    """What the store keeps of the API key that gave a feedback: the first 16 hex digits of its
    sha256. Enough to tell keys apart and to find one key's feedback; the key cannot be read back."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


class FeedbackCapReached(Exception):
    """One key gave as much feedback in the last hour as the server allows."""

    def __init__(self, cap: int, retry_after: int) -> None:
        super().__init__(f"this key gave {cap} feedback in the last hour, the server's limit "
                         f"(max_feedback_per_key_per_hour); try again in {retry_after} s")
        self.cap, self.retry_after = cap, retry_after


def run_store_url(run_dir: Path, store_url: str | None = None) -> str:
    """The store a run's completions are in: `store_url`, else RUN/completions.db. A SQLite file
    that is not there is refused: opening it would create an empty store and read nothing."""
    url = store_url or sqlite_url(Path(run_dir) / COMPLETIONS_FILE)
    if url.startswith("sqlite:///"):
        database = Path(url.removeprefix("sqlite:///"))
        if not database.is_file():
            raise RunError(f"{database}: no store of served completions; serve the run with "
                           f"`tunesmith serve {run_dir} --store` first, or give the store with --store-url")
    return url


class Completions:
    """The completion and feedback tables of a store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # -- completions ------------------------------------------------------------------------------
    def add(self, **fields: Any) -> CompletionRow:
        row = CompletionRow(id=fields.pop("id", None) or new_id("chatcmpl"), created_at=fields.pop("created_at", None) or now(),
                            **fields)
        with self.store.writing() as session:
            session.add(row)
        return row

    def get(self, project: str | None, completion_id: str) -> CompletionRow | None:
        with self.store.reading() as session:
            row = session.scalar(select(CompletionRow).where(CompletionRow.id == completion_id))
        return row if row is not None and _visible(row.project, project) else None

    def list(self, project: str | None, *, model: str | None = None, metadata: dict[str, str] | None = None,
             after: str | None = None, limit: int = 20, order: str = "asc") -> Page:
        """OpenAI's GET /v1/chat/completions: oldest first unless order is desc; `metadata` keeps the
        rows whose metadata holds every given pair (filtered here: JSON queries differ per database)."""
        query = select(CompletionRow).where(CompletionRow.error.is_(None))
        if project is not None:
            query = query.where(CompletionRow.project == project)
        if model:
            query = query.where(CompletionRow.model == model)
        if not metadata:
            return self.store._page(query, CompletionRow, after, limit, descending=order == "desc")
        found, cursor = [], after
        while True:
            page = self.store._page(query, CompletionRow, cursor, METADATA_SCAN, descending=order == "desc")
            found += [row for row in page.rows if _holds(row.metadata_, metadata)]
            if len(found) > limit or not page.has_more:
                return Page(found[:limit], len(found) > limit or page.has_more and len(found) == limit)
            cursor = page.rows[-1].id

    def update_metadata(self, project: str | None, completion_id: str, metadata: dict | None) -> CompletionRow | None:
        with self.store.writing() as session:
            row = session.scalar(select(CompletionRow).where(CompletionRow.id == completion_id))
            if row is None or not _visible(row.project, project):
                return None
            row.metadata_ = metadata
        return row

    def delete(self, project: str | None, completion_id: str) -> bool:
        with self.store.writing() as session:
            row = session.scalar(select(CompletionRow).where(CompletionRow.id == completion_id))
            if row is None or not _visible(row.project, project):
                return False
            session.execute(delete(FeedbackRow).where(FeedbackRow.completion_id == completion_id))
            session.delete(row)
        return True

    def rows(self, *, models: list[str] | None = None, run_dir: str | None = None, since: int | None = None,
             with_errors: bool = True, project: str | None = None) -> list[CompletionRow]:
        """Every stored completion (oldest first) of `project` (None: of every project), for the
        monitor and the feedback export."""
        query = select(CompletionRow).order_by(CompletionRow.seq)
        if project is not None:
            query = query.where(CompletionRow.project == project)
        if models:
            query = query.where(CompletionRow.model.in_(models))
        if run_dir:
            query = query.where(CompletionRow.run_dir == run_dir)
        if since is not None:
            query = query.where(CompletionRow.created_at >= since)
        if not with_errors:
            query = query.where(CompletionRow.error.is_(None))
        with self.store.reading() as session:
            return list(session.scalars(query))

    def purge(self, older_than_seconds: float) -> int:
        """Delete completions (and their feedback) older than the retention; returns how many."""
        cutoff = now() - int(older_than_seconds)
        with self.store.writing() as session:
            ids = list(session.scalars(select(CompletionRow.id).where(CompletionRow.created_at < cutoff)))
            if ids:
                session.execute(delete(FeedbackRow).where(FeedbackRow.completion_id.in_(ids)))
                session.execute(delete(CompletionRow).where(CompletionRow.id.in_(ids)))
        return len(ids)

    def projects(self, run_dir: str) -> list[str]:
        """The projects with stored completions of `run_dir` (the project of the key that asked)."""
        query = select(CompletionRow.project).where(CompletionRow.run_dir == run_dir).distinct()
        with self.store.reading() as session:
            return sorted(session.scalars(query))

    # -- feedback ---------------------------------------------------------------------------------
    def add_feedback(self, project: str | None, completion_id: str, *, score: float | None, comment: str | None,
                     correction: str | None, key_fingerprint: str | None = None,
                     cap_per_hour: int | None = None) -> FeedbackRow | None:
        """Feedback on a completion `project` can see (None if it cannot), from the key with
        `key_fingerprint`; with `cap_per_hour`, FeedbackCapReached once that key gave that many in
        the last hour. Counted and written in one write transaction: on SQLite, where writers take
        turns, concurrent requests cannot pass the cap together."""
        with self.store.writing() as session:
            completion = session.scalar(select(CompletionRow).where(CompletionRow.id == completion_id))
            if completion is None or not _visible(completion.project, project):
                return None
            created = now()
            if cap_per_hour is not None:
                _check_cap(session, key_fingerprint, cap_per_hour, created)
            row = FeedbackRow(id=new_id("fb"), completion_id=completion_id, project=completion.project, score=score,
                              comment=comment, correction=correction, created_at=created,
                              key_fingerprint=key_fingerprint)
            session.add(row)
        return row

    def feedback(self, completion_ids: list[str] | None = None, *,
                 project: str | None = None) -> dict[str, list[FeedbackRow]]:
        """Feedback by completion id, oldest first (of `project`'s completions; None: every project's).
        Asked for in chunks of ids: SQLite caps the parameters of one statement."""
        query = select(FeedbackRow).order_by(FeedbackRow.seq)
        if project is not None:
            query = query.where(FeedbackRow.project == project)
        chunks = ([query.where(FeedbackRow.completion_id.in_(completion_ids[start:start + ID_CHUNK]))
                   for start in range(0, len(completion_ids), ID_CHUNK)] if completion_ids is not None else [query])
        by_completion: dict[str, list[FeedbackRow]] = defaultdict(list)
        with self.store.reading() as session:
            for chunk in chunks:
                for row in session.scalars(chunk):
                    by_completion[row.completion_id].append(row)
        return dict(by_completion)


def _check_cap(session: Any, fingerprint: str | None, cap: int, at: int) -> None:
    """FeedbackCapReached when the key (None: the keyless development server) gave `cap` feedback
    in the hour before `at`; retry_after is when the oldest of them leaves that hour."""
    window = at - CAP_WINDOW_SECONDS
    key = FeedbackRow.key_fingerprint.is_(None) if fingerprint is None else FeedbackRow.key_fingerprint == fingerprint
    count, oldest = session.execute(select(func.count(), func.min(FeedbackRow.created_at))
                                    .where(key, FeedbackRow.created_at > window)).one()
    if count >= cap:
        raise FeedbackCapReached(cap, max(1, int(oldest or at) - window))


def choose_project(present: list[str], asked: str | None, what: str) -> str | None:
    """The project a CLI read of `what` is scoped to: `asked`, which must hold some of it; else the
    one project that does. Several without `asked` is an error: reading them together would mix
    one project's prompts and corrections into another's report or training rows. None when the
    store holds nothing of `what` and none was asked."""
    listed = ", ".join(present) or "none"
    if asked is not None:
        if asked not in present:
            raise RunError(f"--project {asked}: the store holds no completion of {what} in that project (projects "
                           f"with completions of it: {listed}); give one of those")
        return asked
    if len(present) > 1:
        raise RunError(f"{what}: the store holds completions of {len(present)} projects ({listed}); give the one to "
                       "read with --project NAME (each project's traffic and feedback are kept apart)")
    return present[0] if present else None


def _holds(metadata: dict | None, wanted: dict[str, str]) -> bool:
    metadata = metadata or {}
    return all(str(metadata.get(key)) == str(value) for key, value in wanted.items())
