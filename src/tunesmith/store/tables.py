"""The tables. Every row belongs to a project (the API key's tenant); `seq` orders rows for
cursor pagination (OpenAI's `after`), `id` is the public identifier (`file-…`, `ftjob-…`)."""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Boolean, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite's rowid autoincrement needs INTEGER exactly; PostgreSQL gets a 64-bit serial.
Seq = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    pass


class FileRow(Base):
    """An uploaded file; its bytes live on disk under their sha256 (content-addressed, shared)."""

    __tablename__ = "files"
    seq: Mapped[int] = mapped_column(Seq, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    project: Mapped[str] = mapped_column(String(128), index=True)
    filename: Mapped[str] = mapped_column(String(512))
    purpose: Mapped[str] = mapped_column(String(64))
    bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[int] = mapped_column(BigInteger)


class JobRow(Base):
    """A fine-tuning job, and the queue entry a worker claims."""

    __tablename__ = "jobs"
    seq: Mapped[int] = mapped_column(Seq, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    project: Mapped[str] = mapped_column(String(128), index=True)
    model: Mapped[str] = mapped_column(String(512))  # the name the client gave
    base_spec: Mapped[str] = mapped_column(Text)  # what the training run loads (catalog name or folder)
    training_file: Mapped[str] = mapped_column(String(64))
    validation_file: Mapped[str | None] = mapped_column(String(64), nullable=True)
    method: Mapped[dict] = mapped_column(JSON)  # OpenAI's method object, hyperparameters resolved
    settings: Mapped[dict] = mapped_column(JSON)  # tunesmith's own settings (the `tunesmith` body field)
    suffix: Mapped[str | None] = mapped_column(String(64), nullable=True)
    seed: Mapped[int] = mapped_column(BigInteger)
    metadata_: Mapped[dict | None] = mapped_column("metadata", JSON, nullable=True)
    status: Mapped[str] = mapped_column(String(32), index=True)
    error: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    fine_tuned_model: Mapped[str | None] = mapped_column(String(512), nullable=True, index=True)
    trained_tokens: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    result_files: Mapped[list | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[int] = mapped_column(BigInteger)
    finished_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # the queue: which worker holds the job, when it last said so, and what it has already reported
    worker_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    heartbeat_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_event_step: Mapped[int] = mapped_column(Integer, default=0)
    pause_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    run_dir: Mapped[str | None] = mapped_column(Text, nullable=True)


Index("jobs_queue", JobRow.status, JobRow.seq)


class EventRow(Base):
    __tablename__ = "events"
    seq: Mapped[int] = mapped_column(Seq, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    job_id: Mapped[str] = mapped_column(String(64), ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[int] = mapped_column(BigInteger)
    level: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text)
    type: Mapped[str] = mapped_column(String(16))
    data: Mapped[dict | None] = mapped_column(JSON, nullable=True)


class CheckpointRow(Base):
    __tablename__ = "checkpoints"
    seq: Mapped[int] = mapped_column(Seq, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    job_id: Mapped[str] = mapped_column(String(64), ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    step_number: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[int] = mapped_column(BigInteger)
    fine_tuned_model_checkpoint: Mapped[str] = mapped_column(String(600))
    metrics: Mapped[dict] = mapped_column(JSON)


class CompletionRow(Base):
    """A served completion (OpenAI's stored completions): what was asked, what the model answered,
    by which weights, at what cost. `run_dir` and `generation` say which model answered, so the
    monitor and a retrain read the traffic of the generation that produced it."""

    __tablename__ = "completions"
    seq: Mapped[int] = mapped_column(Seq, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    project: Mapped[str] = mapped_column(String(128), index=True)
    model: Mapped[str] = mapped_column(String(512), index=True)  # the name the client asked for
    kind: Mapped[str] = mapped_column(String(32))  # base, adapter, model
    run_dir: Mapped[str | None] = mapped_column(Text, nullable=True)
    generation: Mapped[int | None] = mapped_column(Integer, nullable=True)
    endpoint: Mapped[str] = mapped_column(String(32))  # chat, completions
    messages: Mapped[list] = mapped_column(JSON)  # chat: [{role, content}]; completions: [{role: user, content: prompt}]
    answer: Mapped[str | None] = mapped_column(Text, nullable=True)  # choice 0's text
    choices: Mapped[list] = mapped_column(JSON)  # [{index, text, finish_reason}]
    params: Mapped[dict] = mapped_column(JSON)  # temperature, top_p, max_tokens, n, seed, stop
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    latency_ms: Mapped[float] = mapped_column(Float)
    metadata_: Mapped[dict | None] = mapped_column("metadata", JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)  # a request that failed after it reached the model
    scrubbed: Mapped[int] = mapped_column(Integer, default=0)  # personal data replaced at write time
    created_at: Mapped[int] = mapped_column(BigInteger, index=True)


Index("completions_model_seq", CompletionRow.model, CompletionRow.seq)


class FeedbackRow(Base):
    """What a user said about a completion: a score (thumbs: +1/-1, or any number), a comment, and
    the answer it should have been."""

    __tablename__ = "feedback"
    seq: Mapped[int] = mapped_column(Seq, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    completion_id: Mapped[str] = mapped_column(String(64), ForeignKey("completions.id", ondelete="CASCADE"), index=True)
    project: Mapped[str] = mapped_column(String(128), index=True)
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    correction: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[int] = mapped_column(BigInteger)
    # which key gave it: sha256(key)[:16] (store.completions.key_fingerprint), never the key; None where the
    # server had no keys (development mode) or the row predates migration 0003
    key_fingerprint: Mapped[str | None] = mapped_column(String(16), nullable=True)


Index("feedback_key_time", FeedbackRow.key_fingerprint, FeedbackRow.created_at)  # the per-key cap counts an hour
