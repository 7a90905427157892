"""The server the API fuzzer walks: tunesmith's app on a real socket on 127.0.0.1, with the files and
fine-tuning routes (a JobsService), a completions store, two projects' keys and an admin key, and
real rows of both projects to point the other one's key at.

Project alpha holds an uploaded file, a finished fine-tuning job on the tiny model (its events,
checkpoints, result file and its fine-tuned LoRA model, served under its `ft:...` name) and a
stored completion of that model with feedback; project beta holds a file, a completion and a
queued job of its own.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import openai

from tests.conftest import DEFAULT_MODEL, SHARED_CACHE, chat_rows
from tests.integration.jobs_service import TINY_SETTINGS, start_worker, wait_for, write_rows
from tunesmith.config import JobsConfig, ServeConfig
from tunesmith.serve.app import create_app, running
from tunesmith.serve.jobs.service import JobsService
from tunesmith.serve.models import ServedModels
from tunesmith.store.db import sqlite_url

ALPHA, BETA, ADMIN = "key-alpha", "key-beta", "key-admin"
# Who a fuzzed request says it is: no Authorization header, a key the server does not know, each project, the operator.
KEYS: dict[str, str | None] = {"none": None, "wrong": "not-a-key", "alpha": ALPHA, "beta": BETA, "admin": ADMIN}
# Who sends a fuzzed request, drawn per example: the other project's key most, since that is where leaks are.
SENDERS = ["beta", "alpha", "admin", "beta", "none", "wrong"]
BASE_MODEL = "tiny"  # the served base model: every project's
MAX_TOKENS = 8  # the server's cap on max_tokens, so that a fuzzed chat costs milliseconds on the tiny model


class ServerErrors(logging.Filter):
    """What a 5xx or a dropped connection came from: the exceptions the app raised unhandled, which
    uvicorn logs with their tracebacks (the server runs in this process, one request at a time). As
    a filter on uvicorn's error log it keeps each exception and drops its record before any handler
    formats it (see caught_server_errors)."""

    def __init__(self) -> None:
        super().__init__()
        self.raised: list[BaseException] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            self.raised.append(record.exc_info[1])
            return False
        return True

    def take(self, wait_s: float = 1.0) -> tuple[str, str] | None:
        """The last exception raised since the previous take: `Type (at file:line in function)`, the
        innermost frame in tunesmith, and its message. It is logged after the 500 is sent, so it is
        waited for a moment."""
        deadline = time.monotonic() + wait_s
        while not self.raised and time.monotonic() < deadline:
            time.sleep(0.01)
        if not self.raised:
            return None
        exc, self.raised = self.raised[-1], []
        frames = traceback.extract_tb(exc.__traceback__)
        ours = [f for f in frames if "/tunesmith/" in f.filename] or frames
        where = f" (at {Path(ours[-1].filename).name}:{ours[-1].lineno} in {ours[-1].name})" if ours else ""
        return f"{type(exc).__name__}{where}", str(exc)[:200]


@dataclass(frozen=True)
class Target:
    """A running server and the real ids each project holds, by kind (file, job, event, checkpoint,
    model, completion, message)."""

    root_url: str  # http://127.0.0.1:PORT (the OpenAPI paths start with /v1)
    ids: dict[str, dict[str, list[str]]]  # project -> kind -> ids
    run_files: list[str]  # files of alpha's run folder that its console report may show
    server_dir: Path  # where the server keeps everything: no response may name it
    server_errors: ServerErrors


def serve_config(store_url: str) -> ServeConfig:
    return ServeConfig(api_keys=(ALPHA, BETA), admin_keys=(ADMIN,), key_projects={ALPHA: "alpha", BETA: "beta"},
                       store_url=store_url, max_tokens=MAX_TOKENS, precision="fp32")


@contextlib.contextmanager
def private_cache(root: Path) -> Iterator[None]:
    """What tests/conftest.py's private_cache gives a test, for a server that outlives one test:
    a cache of its own, the catalog model linked in, the hub offline (the worker inherits it)."""
    (root / "models").mkdir(parents=True)
    (root / "models" / DEFAULT_MODEL).symlink_to(SHARED_CACHE / "models" / DEFAULT_MODEL, target_is_directory=True)
    (root / "datasets").symlink_to(SHARED_CACHE / "datasets", target_is_directory=True)
    saved = {name: os.environ.get(name) for name in ("TUNESMITH_CACHE", "HF_HUB_OFFLINE")}
    os.environ.update(TUNESMITH_CACHE=str(root), HF_HUB_OFFLINE="1")
    try:
        yield
    finally:
        for name, value in saved.items():
            os.environ.pop(name) if value is None else os.environ.__setitem__(name, value)


@contextlib.contextmanager
def fuzz_target(root: Path, tiny_model_dir: Path) -> Iterator[Target]:
    """The server, seeded; the worker that trained alpha's job is stopped before the fuzzing, so that
    jobs the fuzzer creates stay queued instead of training."""
    config = JobsConfig(jobs_dir=str(root / "jobs"), lease_seconds=30.0, poll_seconds=0.2, workers=1)
    jobs = JobsService(config)
    models = ServedModels(precision="fp32")
    models.add_base(str(tiny_model_dir), BASE_MODEL)
    app = create_app(models, serve_config(sqlite_url(root / "completions.db")), jobs)
    with private_cache(root / "cache"), running(app) as base_url, caught_server_errors() as errors:
        worker = start_worker(config, root / "worker.log")
        try:
            ids, run_files = seed(base_url, root)
        finally:
            worker.kill()
            worker.wait()
        ids["beta"]["job"] = [queued_job(client_for(base_url, BETA), ids["beta"]["file"][0])]
        try:
            yield Target(base_url.removesuffix("/v1"), ids, run_files, root.resolve(), errors)
        finally:
            jobs.store.close()


@contextlib.contextmanager
def caught_server_errors() -> Iterator[ServerErrors]:
    """The exceptions in uvicorn's error log go to a ServerErrors while the fuzzer runs, and to no
    handler (pytest's included): formatting a traceback on the server's thread parses source with
    `ast` (Python 3.11's carets), whose state CPython 3.11.7 shares between threads (gh-106905); once,
    a traceback formatted there while pytest parsed a report failed the run with "INTERNALERROR
    SystemError: AST constructor recursion depth mismatch". ServerErrors.take reads the traceback on the test's
    thread instead."""
    logger, errors = logging.getLogger("uvicorn.error"), ServerErrors()
    logger.addFilter(errors)
    try:
        yield errors
    finally:
        logger.removeFilter(errors)


def client_for(base_url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=120)


def seed(base_url: str, root: Path) -> tuple[dict[str, dict[str, list[str]]], list[str]]:
    """Alpha: a file, a finished job, its model's stored completion with feedback. Beta: a file, a
    completion (and, once the worker is gone, a job that stays queued)."""
    alpha, beta = client_for(base_url, ALPHA), client_for(base_url, BETA)
    data = write_rows(root / "train.jsonl", chat_rows(32))
    with open(data, "rb") as handle:
        alpha_file = alpha.files.create(file=handle, purpose="fine-tune")
    job = alpha.fine_tuning.jobs.create(model=BASE_MODEL, training_file=alpha_file.id, suffix="alpha",
                                        extra_body={"tunesmith": TINY_SETTINGS})
    done = wait_for(alpha, job.id)
    assert done.status == "succeeded", done.error
    checkpoints = [c.id for c in alpha.fine_tuning.jobs.checkpoints.list(job.id)]
    events = [e.id for e in alpha.fine_tuning.jobs.list_events(job.id, limit=100).data]
    alpha_reply = ask(alpha, done.fine_tuned_model)
    alpha.post(f"/chat/completions/{alpha_reply.id}/feedback", cast_to=object,
               body={"score": -1, "comment": "wrong", "correction": "red red"})
    with open(data, "rb") as handle:
        beta_file = beta.files.create(file=handle, purpose="fine-tune")
    beta_reply = ask(beta, BASE_MODEL)
    ids = {
        "alpha": {"file": [alpha_file.id, *done.result_files], "job": [job.id], "event": events,
                  "checkpoint": checkpoints, "model": [done.fine_tuned_model], "completion": [alpha_reply.id],
                  "message": [f"{alpha_reply.id}-0"]},
        "beta": {"file": [beta_file.id], "job": [], "event": [], "checkpoint": [], "model": [],
                 "completion": [beta_reply.id], "message": [f"{beta_reply.id}-0"]},
    }
    return ids, report_files(job_run_dir(root, job.id))


def queued_job(client: openai.OpenAI, file_id: str) -> str:
    """A job that no worker takes (none is left): its project's own id for the job routes."""
    return client.fine_tuning.jobs.create(model=BASE_MODEL, training_file=file_id, suffix="beta",
                                          extra_body={"tunesmith": TINY_SETTINGS}).id


def ask(client: openai.OpenAI, model: str):
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Repeat red twice."}],
                                          max_tokens=4, temperature=0)


def job_run_dir(root: Path, job_id: str) -> Path:
    return root / "jobs" / "jobs" / job_id / "run"


def report_files(run_dir: Path) -> list[str]:
    """Files in a run folder that the console may show (its report's figures and tables)."""
    shown = {".png", ".json", ".md", ".csv", ".svg"}
    return sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file() and p.suffix in shown)
