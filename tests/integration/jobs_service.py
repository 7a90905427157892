"""Building blocks for the fine-tuning service tests: a real server on 127.0.0.1 (in this process,
on its own thread) and a real worker process, over a store of the test's own."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tunesmith.config import JobsConfig, ServeConfig
from tunesmith.serve.app import create_app, running
from tunesmith.serve.jobs.service import JobsService
from tunesmith.serve.models import ServedModels

# tunesmith settings of a fast job on the tiny model (the `tunesmith` body field)
TINY_SETTINGS = {"train": {"max_steps": 6, "save_every": 3, "eval_every": 3, "learning_rate": 2e-2,
                           "warmup_ratio": 0.0, "batch_size": 4, "gradient_accumulation": 1},
                 "lora": {"rank": 8, "alpha": 16, "dropout": 0.0}, "data": {"max_length": 128},
                 "eval": {"general_text": None}}
TERMINAL = ("succeeded", "failed", "cancelled")


@dataclass(frozen=True)
class Service:
    base_url: str
    app: object
    jobs: JobsService
    config: JobsConfig


def worker_command(config: JobsConfig) -> list[str]:
    return [sys.executable, "-m", "tunesmith.cli", "worker", "--jobs-dir", config.jobs_dir, "--store-url",
            config.database_url, "--lease-seconds", str(config.lease_seconds), "--poll-seconds",
            str(config.poll_seconds)]


def start_worker(config: JobsConfig, log: Path) -> subprocess.Popen:
    return subprocess.Popen(worker_command(config), stdout=open(log, "ab"), stderr=subprocess.STDOUT)


@contextlib.contextmanager
def service(tmp_path: Path, base_dir: Path, *, store_url: str | None = None, serve_config: ServeConfig | None = None,
            workers: int = 1, lease_seconds: float = 30.0, port: int | None = None) -> Iterator[Service]:
    """Server + `workers` worker processes on one store; the base model answers as `tiny`."""
    config = JobsConfig(jobs_dir=str(tmp_path / "jobs"), store_url=store_url, lease_seconds=lease_seconds,
                        poll_seconds=0.2, workers=workers)
    jobs = JobsService(config)
    models = ServedModels()
    models.add_base(str(base_dir), "tiny")
    app = create_app(models, serve_config or ServeConfig(), jobs)
    processes = [start_worker(config, tmp_path / f"worker-{i}.log") for i in range(workers)]
    try:
        with running(app, port=port) as base_url:
            yield Service(base_url, app, jobs, config)
    finally:
        for process in processes:
            process.kill()
            process.wait()
        jobs.store.close()


def wait_for(client, job_id: str, statuses: tuple[str, ...] = TERMINAL, timeout: float = 300):
    deadline = time.monotonic() + timeout
    while True:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in statuses:
            return job
        assert time.monotonic() < deadline, f"job {job_id} still {job.status} after {timeout} s"
        time.sleep(0.2)


def all_events(client, job_id: str) -> list:
    """Every event, oldest first, through the SDK's auto-pagination (newest first, 2 per page)."""
    return list(reversed(list(client.fine_tuning.jobs.list_events(job_id, limit=2))))


def write_rows(path: Path, rows: list) -> Path:
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path
