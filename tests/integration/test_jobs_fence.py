"""A stalled worker (stopped, not dead) loses its job to another worker after its lease; its training
process, which does not die with it, must stop writing into the run folder the new worker resumes
(training/fence.py): the lease file's token changes, the old trainer stops at its next write, and
the new one waits for the run folder's lock before it reads anything."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

openai = pytest.importorskip("openai", reason="the jobs tests need the openai client (pip install -e .[dev])")
pytest.importorskip("sqlalchemy", reason="fine-tuning jobs need the serve extra (pip install -e .[serve])")

from tests.conftest import chat_rows  # noqa: E402
from tests.integration.jobs_service import (  # noqa: E402
    TINY_SETTINGS,
    service,
    start_worker,
    wait_for,
    write_rows,
)
from tunesmith.training.metrics import read_metrics  # noqa: E402

STEPS = 300  # long enough that the first training is still running when the second worker takes over
SETTINGS = {**TINY_SETTINGS, "train": {**TINY_SETTINGS["train"], "max_steps": STEPS, "save_every": 10, "eval_every": 0}}


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_stalled_workers_training_stops_writing_once_another_worker_takes_the_job(tmp_path: Path,
                                                                                    tiny_model_dir: Path):
    with service(tmp_path, tiny_model_dir, workers=0, lease_seconds=3) as running:
        client = openai.OpenAI(base_url=running.base_url, api_key="local", max_retries=0, timeout=120)
        with open(write_rows(tmp_path / "train.jsonl", chat_rows(120, seed=3)), "rb") as handle:
            uploaded = client.files.create(file=handle, purpose="fine-tune")
        first = start_worker(running.config, tmp_path / "first.log")
        second = trainer = None
        try:
            job = client.fine_tuning.jobs.create(model="tiny", training_file=uploaded.id, seed=3,
                                                 extra_body={"tunesmith": SETTINGS})
            deadline = time.monotonic() + 300
            while not any(c.step_number >= 10 for c in client.fine_tuning.jobs.checkpoints.list(job.id)):
                assert time.monotonic() < deadline, "no checkpoint in time"
                time.sleep(0.1)
            trainer = next(pid for pid in children_of(first.pid)
                           if b"train" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0"))
            os.kill(first.pid, signal.SIGSTOP)  # stalled: no heartbeat, yet its training goes on
            # held too until the second worker has taken the job and started its trainer, then let go: a
            # fast machine would otherwise finish the 300 steps before the lease runs out, and the test
            # would prove nothing (it did, once training stopped writing a progress line per step)
            os.kill(trainer, signal.SIGSTOP)
            second = start_worker(running.config, tmp_path / "second.log")
            deadline = time.monotonic() + 300
            while not any(b"train" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                          for pid in children_of(second.pid) if Path(f"/proc/{pid}/cmdline").exists()):
                assert time.monotonic() < deadline, "the second worker never started training"
                time.sleep(0.1)
            os.kill(trainer, signal.SIGCONT)  # its next write meets the new lease and stops it
            done = wait_for(client, job.id, timeout=600)
            assert done.status == "succeeded", done.error
            assert not alive(trainer)  # the first trainer stopped on its own: its worker never woke to kill it
        finally:
            if trainer is not None and alive(trainer):
                os.kill(trainer, signal.SIGCONT)
            os.kill(first.pid, signal.SIGCONT)
            for worker in (first, second):
                if worker is not None:
                    worker.kill()
                    worker.wait()
        log = (Path(running.config.jobs_dir) / "jobs" / job.id / "train.log").read_text()
        assert "taken over by another worker" in log
        steps = [record["step"] for record in read_metrics(Path(running.config.jobs_dir) / "jobs" / job.id / "run"
                                                           / "metrics.jsonl") if "loss" in record]
        assert steps == list(range(1, STEPS + 1))  # each step once, in order: one writer at a time
