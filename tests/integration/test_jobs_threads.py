"""Workers side by side share the cores: a job trained by one of the `--workers 2` that `tunesmith serve
--jobs` starts runs with half of this machine's cores as torch threads (as tune's trials and
--nproc's ranks do), unless the user set OMP_NUM_THREADS, which is kept. Read back from the run's
manifest (machine.threads: torch.get_num_threads() in the training process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

openai = pytest.importorskip("openai", reason="the jobs tests need the openai client (pip install -e .[dev])")
pytest.importorskip("sqlalchemy", reason="fine-tuning jobs need the serve extra (pip install -e .[serve])")

from tests.conftest import chat_rows  # noqa: E402
from tests.integration.jobs_service import TINY_SETTINGS, service, wait_for, write_rows  # noqa: E402
from tunesmith.serve.app import start_worker  # noqa: E402

SETTINGS = {**TINY_SETTINGS, "train": {**TINY_SETTINGS["train"], "max_steps": 2, "save_every": 2, "eval_every": 2}}


def threads_of_a_job(tmp_path: Path, model_dir: Path, workers_here: int) -> int:
    """Train one job through a real worker that `serve`'s start_worker starts as one of `workers_here`;
    the torch thread count its training recorded."""
    with service(tmp_path, model_dir, workers=0) as running:
        worker = start_worker(running.config.model_copy(update={"workers": workers_here}))
        try:
            client = openai.OpenAI(base_url=running.base_url, api_key="unused", max_retries=0, timeout=120)
            with open(write_rows(tmp_path / "train.jsonl", chat_rows(16)), "rb") as handle:
                uploaded = client.files.create(file=handle, purpose="fine-tune")
            job = client.fine_tuning.jobs.create(model="tiny", training_file=uploaded.id,
                                                 extra_body={"tunesmith": SETTINGS})
            done = wait_for(client, job.id)
            assert done.status == "succeeded", done.error
        finally:
            worker.terminate()
            worker.wait(timeout=30)
    manifest = json.loads((Path(running.config.jobs_dir) / "jobs" / job.id / "run" / "manifest.json").read_text())
    return manifest["machine"]["threads"]


def test_one_of_two_workers_trains_with_half_the_cores(tmp_path: Path, tiny_model_dir: Path,
                                                       monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # the user set none (the test suite may have)
    assert threads_of_a_job(tmp_path, tiny_model_dir, workers_here=2) == max(1, (os.cpu_count() or 1) // 2)


def test_the_users_own_thread_count_is_kept(tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch):
    cores = os.cpu_count() or 1
    monkeypatch.setenv("OMP_NUM_THREADS", str(cores))  # all of them, not the share of 2 workers
    assert threads_of_a_job(tmp_path, tiny_model_dir, workers_here=2) == cores


def test_torch_takes_its_thread_count_from_omp_num_threads():
    """The library behaviour the sharing relies on: torch's default thread count follows OMP_NUM_THREADS."""
    command = ["-c", "import torch; print(torch.get_num_threads())"]
    shown = subprocess.run([sys.executable, *command], env={**os.environ, "OMP_NUM_THREADS": "1"},
                           capture_output=True, text=True, check=True).stdout
    assert shown.strip() == "1"
