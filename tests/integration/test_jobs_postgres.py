"""Workers on PostgreSQL: two worker processes share one store (as workers on several machines
would), claim with FOR UPDATE SKIP LOCKED, and train each job exactly once."""

from __future__ import annotations

from pathlib import Path

import pytest

openai = pytest.importorskip("openai", reason="the jobs tests need the openai client (pip install -e .[dev])")
pytest.importorskip("sqlalchemy", reason="fine-tuning jobs need the serve extra (pip install -e .[serve])")

from tests.conftest import chat_rows  # noqa: E402
from tests.integration.jobs_service import TINY_SETTINGS, all_events, service, wait_for, write_rows  # noqa: E402


@pytest.mark.slow
def test_two_workers_on_postgresql_train_each_job_once(tmp_path: Path, tiny_model_dir: Path, postgres_url: str):
    settings = {**TINY_SETTINGS, "train": {**TINY_SETTINGS["train"], "max_steps": 2, "save_every": 2}}
    with service(tmp_path, tiny_model_dir, store_url=postgres_url, workers=2) as running:
        client = openai.OpenAI(base_url=running.base_url, api_key="unused", max_retries=0, timeout=120)
        with open(write_rows(tmp_path / "train.jsonl", chat_rows(16)), "rb") as handle:
            data = client.files.create(file=handle, purpose="fine-tune")
        jobs = [client.fine_tuning.jobs.create(model="tiny", training_file=data.id, extra_body={"tunesmith": settings})
                for _ in range(2)]
        for job in jobs:
            done = wait_for(client, job.id)
            assert done.status == "succeeded", done.error
            messages = [e.message for e in all_events(client, job.id)]
            assert messages.count("Fine-tuning job started") == 1
            assert not any("stopped responding" in m for m in messages)
            assert [e.data["step"] for e in all_events(client, job.id) if e.type == "metrics"] == [1, 2]
