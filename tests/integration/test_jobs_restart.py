"""Restart safety: SIGKILL the server and the worker in the middle of a running job, start them
again, and the job finishes from its checkpoint with the same weights as a job never interrupted;
no job, file or event is lost, and no step is reported twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

openai = pytest.importorskip("openai", reason="the jobs tests need the openai client (pip install -e .[dev])")
pytest.importorskip("sqlalchemy", reason="fine-tuning jobs need the serve extra (pip install -e .[serve])")

from tests.conftest import chat_rows  # noqa: E402
from tests.integration.helpers import max_difference, weights  # noqa: E402
from tests.integration.jobs_service import TINY_SETTINGS, all_events, wait_for, write_rows  # noqa: E402
from tunesmith.config import JobsConfig  # noqa: E402
from tunesmith.serve.app import free_port  # noqa: E402

STEPS = 40
SETTINGS = {**TINY_SETTINGS, "train": {**TINY_SETTINGS["train"], "max_steps": STEPS, "save_every": 5,
                                       "batch_size": 2, "gradient_accumulation": 2, "warmup_ratio": 0.1},
            "lora": {**TINY_SETTINGS["lora"], "dropout": 0.1}}


def start_server(model_dir: Path, config: JobsConfig, port: int, log: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "tunesmith.cli", "serve", f"tiny={model_dir}", "--jobs", "--workers", "0",
               "--jobs-dir", config.jobs_dir, "--port", str(port)]
    return subprocess.Popen(command, stdout=open(log, "ab"), stderr=subprocess.STDOUT)


def start_worker(config: JobsConfig, log: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "tunesmith.cli", "worker", "--jobs-dir", config.jobs_dir, "--lease-seconds",
               str(config.lease_seconds), "--poll-seconds", str(config.poll_seconds)]
    return subprocess.Popen(command, stdout=open(log, "ab"), stderr=subprocess.STDOUT)


def connect(port: int, server: subprocess.Popen) -> openai.OpenAI:
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=60)
    deadline = time.monotonic() + 120
    while True:
        assert server.poll() is None, "the server exited"
        try:
            client.models.list()
            return client
        except openai.APIConnectionError:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.2)


def kill(process: subprocess.Popen) -> None:
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL


@pytest.mark.slow  # about 2 minutes on 2 cores: three training processes and two server starts
def test_sigkill_server_and_worker_mid_job_then_restart(tmp_path: Path, tiny_model_dir: Path):
    config = JobsConfig(jobs_dir=str(tmp_path / "jobs"), lease_seconds=3, poll_seconds=0.2)
    port = free_port()
    server, worker = start_server(tiny_model_dir, config, port, tmp_path / "server.log"), None
    try:
        client = connect(port, server)
        worker = start_worker(config, tmp_path / "worker.log")
        with open(write_rows(tmp_path / "train.jsonl", chat_rows(200, seed=11)), "rb") as handle:
            uploaded = client.files.create(file=handle, purpose="fine-tune")
        job = client.fine_tuning.jobs.create(model="tiny", training_file=uploaded.id, seed=5,
                                             extra_body={"tunesmith": SETTINGS})
        run = Path(config.jobs_dir) / "jobs" / job.id / "run"
        deadline = time.monotonic() + 300
        while not any(c.step_number >= 10 for c in client.fine_tuning.jobs.checkpoints.list(job.id)):
            assert client.fine_tuning.jobs.retrieve(job.id).status in ("validating_files", "queued", "running")
            assert time.monotonic() < deadline, "no checkpoint in time"
            time.sleep(0.05)
        events_before = {e.id for e in client.fine_tuning.jobs.list_events(job.id, limit=1000)}
        kill(worker)
        kill(server)
        time.sleep(1)
        assert not (run / "manifest.json").exists()  # it really died mid-run
        metrics_size = (run / "metrics.jsonl").stat().st_size
        time.sleep(1.5)
        assert (run / "metrics.jsonl").stat().st_size == metrics_size  # the training child died with its worker

        server = start_server(tiny_model_dir, config, port, tmp_path / "server.log")
        client = connect(port, server)
        worker = start_worker(config, tmp_path / "worker.log")
        assert client.files.retrieve(uploaded.id).bytes == uploaded.bytes
        done = wait_for(client, job.id)
        assert done.status == "succeeded", done.error
        events = all_events(client, job.id)
        assert events_before <= {e.id for e in events}  # no event lost
        assert [e.data["step"] for e in events if e.type == "metrics"] == list(range(1, STEPS + 1))  # none twice
        messages = [e.message for e in events]
        assert any("stopped responding" in m for m in messages)
        assert any(m.startswith("Continuing from checkpoint step-") for m in messages)

        reference = client.fine_tuning.jobs.create(model="tiny", training_file=uploaded.id, seed=5,
                                                   extra_body={"tunesmith": SETTINGS})
        assert wait_for(client, reference.id).status == "succeeded"
        adapter = "adapter/adapter_model.safetensors"
        reference_run = Path(config.jobs_dir) / "jobs" / reference.id / "run"
        assert max_difference(weights(reference_run / adapter), weights(run / adapter)) < 1e-6
        assert {j.id for j in client.fine_tuning.jobs.list()} == {job.id, reference.id}
        reply = client.chat.completions.create(model=done.fine_tuned_model, max_tokens=4,
                                               messages=[{"role": "user", "content": "Repeat the word red 1 times."}])
        assert reply.choices[0].message.content is not None
    finally:
        for process in (worker, server):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
