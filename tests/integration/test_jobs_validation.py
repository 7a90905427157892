"""A job's files are checked and audited in a child process while the worker keeps heartbeating:
a row that takes the audit long (on the old PII patterns, `"a." * 40000 + "@"` held the GIL for
seconds, past the lease) neither lets the lease lapse nor gets the job claimed by a second worker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

openai = pytest.importorskip("openai", reason="the jobs tests need the openai client (pip install -e .[dev])")
pytest.importorskip("sqlalchemy", reason="fine-tuning jobs need the serve extra (pip install -e .[serve])")

from tests.conftest import chat_rows  # noqa: E402
from tests.integration.jobs_service import TINY_SETTINGS, all_events, service, wait_for  # noqa: E402


def test_an_adversarial_row_is_audited_once_by_one_worker_that_keeps_its_lease(tmp_path: Path, tiny_model_dir: Path):
    rows = chat_rows(24)
    rows[3]["messages"][-1]["content"] = "a." * 40_000 + "@"  # quadratic for the old e-mail and URL patterns
    rows[5]["messages"][-1]["content"] = "http://" + "a:" * 40_000
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    settings = {**TINY_SETTINGS, "data": {**TINY_SETTINGS["data"], "truncate": True}}
    with service(tmp_path, tiny_model_dir, workers=2, lease_seconds=3) as running:
        client = openai.OpenAI(base_url=running.base_url, api_key="local", max_retries=0, timeout=120)
        with open(path, "rb") as handle:
            file = client.files.create(file=handle, purpose="fine-tune")
        job = client.fine_tuning.jobs.create(model="tiny", training_file=file.id, extra_body={"tunesmith": settings})
        done = wait_for(client, job.id, timeout=600)
        messages = [event.message for event in all_events(client, job.id)]
    assert done.status == "succeeded", done.error
    assert not [m for m in messages if "stopped responding" in m], messages
    assert any(m.startswith("Data audit") for m in messages) and messages.count("Files validated, moving job to "
                                                                                "queued state") == 1
