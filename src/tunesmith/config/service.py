"""serve and jobs: how `tunesmith serve` listens and whom it answers, and how the fine-tuning
service keeps jobs and files (the server's and the workers' settings, not a run's)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from tunesmith.config.base import TopSection, setting


class ServeConfig(TopSection):
    """How `tunesmith serve` listens, whom it answers, and how much it takes on at once."""

    host: str = setting("127.0.0.1", "Address to bind; 127.0.0.1 (this machine only) unless told otherwise.")
    port: int = setting(8000, "Port to listen on.", ge=0, le=65535)
    api_keys: tuple[str, ...] = setting((), "Keys a client must send as `Authorization: Bearer KEY`. None: "
                                            "development mode, only clients on this machine are answered.")
    admin_keys: tuple[str, ...] = setting((), "Keys of the operator: load and unload adapters (POST /v1/load_lora_adapter), "
                                              "read /metrics, see every project. "
                                              "None: only in development mode, from this machine.")
    max_queue: int = setting(64, "Rows (choices) queued or decoding at once: a request finding it full gets 429, one "
                                 "needing more rows than it ever holds gets 400.", ge=1)
    max_batch: int = setting(16, "Rows decoded together in one batch.", ge=1)
    max_tokens: int = setting(1024, "Largest max_tokens a request may ask for; also the default.", ge=1)
    max_request_bytes: int = setting(1_000_000, "Largest request body; a larger one gets 413.", ge=1)
    max_loaded_adapters: int = setting(8, "LoRA adapters held in memory at once; the least recently used is "
                                          "unloaded beyond it, and loaded again when asked for.", ge=1)
    max_loaded_models: int = setting(4, "Full fine-tunes and task heads (classifier, tagger, reader runs) held in "
                                        "memory at once; the least recently used is unloaded beyond it, and loaded "
                                        "again when asked for. Base models stay loaded.", ge=1)
    precision: Literal["auto", "fp32", "bf16"] = setting(
        "auto", "Weights' precision: auto is bf16 where the CPU or GPU computes it natively, else fp32. In fp32 a "
        "greedy answer is the same in any batch; in bf16 rounding depends on the batch's shape.")
    key_projects: dict[str, str] = setting({}, "The project each API key belongs to (fine-tuning jobs, files and "
                                               "fine-tuned models are visible only within it); a key not named "
                                               "here belongs to the project `default`.")
    store_url: str | None = setting(None, "Keep every chat completion (a request may say `store: false`) in this database: "
                                          "sqlite:///PATH or postgresql+psycopg://USER@HOST/DB. None: keep nothing.")
    store_scrub_pii: bool = setting(False, "Replace personal data (e-mails, phone and card numbers, keys ...) in stored "
                                           "prompts and answers with placeholders before they are written.")
    store_retention_days: float | None = setting(None, "Delete stored completions and their feedback older than this "
                                                       "many days. None: keep them.", gt=0)
    max_feedback_per_key_per_hour: int = setting(1000, "Feedback posts (POST /v1/chat/completions/{id}/feedback) one "
                                                       "API key may make in any hour; one more gets 429. Bounds how "
                                                       "much one key can steer what a retrain learns.", ge=1)


class JobsConfig(TopSection):
    """Fine-tuning as a service (`tunesmith serve --jobs`, `tunesmith worker`): where jobs and uploaded
    files are kept, and how workers take jobs."""

    jobs_dir: str = setting("tunesmith-jobs", "Folder for uploaded files (by content hash), job run folders, and "
                                              "the SQLite database when no store_url is given.")
    store_url: str | None = setting(None, "Database URL: sqlite:///PATH or postgresql+psycopg://USER@HOST/DB (for workers "
                                          "on several machines). Unset: SQLite at <jobs_dir>/jobs.db.")
    workers: int = setting(1, "Worker processes `tunesmith serve --jobs` starts beside the server (0: none here; run "
                               "`tunesmith worker` elsewhere).", ge=0)
    lease_seconds: float = setting(60.0, "A job whose worker has not heartbeated for this long is taken over by another "
                                         "worker, from its last checkpoint.", gt=0)
    poll_seconds: float = setting(1.0, "How often a worker looks for jobs and reports a running job's progress.", gt=0)
    max_upload_bytes: int = setting(512 * 1024 * 1024, "Largest uploaded file (POST /v1/files); a larger one gets 413.", ge=1)
    max_active_jobs: int = setting(1000, "Jobs validating, queued or running per project; one more gets 429.", ge=1)
    validation_seconds: float = setting(1800.0, "Longest a worker spends checking and auditing a job's files (in a "
                                                "child process, while it keeps the job's lease); past it the job "
                                                "fails, saying so.", gt=0)
    allow_python_graders: bool = setting(
        False, "Run python graders (OpenAI's `type: python`, code a client sends): in reinforcement jobs "
        "(method.reinforcement.grader) and POST /v1/fine_tuning/alpha/graders/run. They run in a limited child "
        "process, but they are code from whoever holds a key: allow them only where every key holder is trusted. "
        "Off: such a grader is a 400 (and a worker fails such a job).")

    @property
    def database_url(self) -> str:
        return self.store_url or f"sqlite:///{(Path(self.jobs_dir) / 'jobs.db').resolve()}"
