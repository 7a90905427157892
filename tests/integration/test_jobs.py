"""OpenAI's fine-tuning API, self-hosted: the official `openai` client against a real server and a
real worker process on 127.0.0.1, with the tiny model. Each test has its own store and jobs folder."""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path

import pytest

openai = pytest.importorskip("openai", reason="the jobs tests need the openai client (pip install -e .[dev])")
pytest.importorskip("sqlalchemy", reason="fine-tuning jobs need the serve extra (pip install -e .[serve])")

from tests.conftest import chat_rows  # noqa: E402
from tests.integration.jobs_service import TINY_SETTINGS, all_events, service, wait_for, write_rows  # noqa: E402


def client_for(base_url: str, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=120)


def settings(**train) -> dict:
    return {**TINY_SETTINGS, "train": {**TINY_SETTINGS["train"], **train}}


def upload(client, path: Path):
    with open(path, "rb") as handle:
        return client.files.create(file=handle, purpose="fine-tune")


def preference_rows(count: int) -> list[dict]:
    rows = []
    for row in chat_rows(count, seed=3):
        question, answer = row["messages"][0]["content"], row["messages"][1]["content"]
        rows.append({"input": {"messages": [{"role": "user", "content": question}]},
                     "preferred_output": [{"role": "assistant", "content": answer}],
                     "non_preferred_output": [{"role": "assistant", "content": "I will not."}]})
    return rows


def test_a_supervised_job_from_upload_to_chat(tmp_path: Path, tiny_model_dir: Path):
    data = write_rows(tmp_path / "train.jsonl", chat_rows(48))
    with service(tmp_path, tiny_model_dir) as running:
        client = client_for(running.base_url)
        uploaded = upload(client, data)
        assert uploaded.object == "file" and uploaded.purpose == "fine-tune" and uploaded.bytes == data.stat().st_size
        assert client.files.retrieve(uploaded.id).filename == "train.jsonl"
        assert client.files.content(uploaded.id).read() == data.read_bytes()
        held_out = upload(client, write_rows(tmp_path / "valid.jsonl", chat_rows(8, seed=99)))
        job = client.fine_tuning.jobs.create(
            model="tiny", training_file=uploaded.id, validation_file=held_out.id, suffix="support", seed=7,
            metadata={"team": "support"},
            method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2, "batch_size": 4,
                                                                             "learning_rate_multiplier": "auto"}}},
            extra_body={"tunesmith": settings()})
        assert job.status == "validating_files" and job.model == "tiny" and job.fine_tuned_model is None
        assert job.method.supervised.hyperparameters.n_epochs == 2
        assert job.method.supervised.hyperparameters.batch_size == 4

        done = wait_for(client, job.id)
        assert done.status == "succeeded", done.error
        assert done.fine_tuned_model == f"ft:tiny:support:{job.id.removeprefix('ftjob-')}"
        assert done.trained_tokens > 0 and done.finished_at >= done.created_at and done.metadata == {"team": "support"}

        events = all_events(client, job.id)
        messages = [e.message for e in events]
        assert messages[0] == f"Created fine-tuning job: {job.id}"
        assert "Files validated, moving job to queued state" in messages
        assert messages[-1] == "The job has successfully completed"
        steps = [e.data["step"] for e in events if e.type == "metrics"]
        assert steps == [1, 2, 3, 4, 5, 6]  # one event per logged step, none twice
        assert all(e.data["train_loss"] > 0 for e in events if e.type == "metrics")
        assert [e.data["step"] for e in events if e.type == "metrics" and "valid_loss" in e.data] == [3, 6]

        checkpoints = list(client.fine_tuning.jobs.checkpoints.list(job.id))
        assert [c.step_number for c in checkpoints] == [6, 3]  # newest first
        assert checkpoints[0].fine_tuned_model_checkpoint == f"{done.fine_tuned_model}:ckpt-step-6"
        assert checkpoints[0].metrics.train_loss > 0 and checkpoints[0].fine_tuning_job_id == job.id
        assert checkpoints[0].metrics.valid_loss > 0

        results = client.files.content(done.result_files[0]).read().decode()
        assert [row["step"] for row in csv.DictReader(io.StringIO(results))] == ["1", "2", "3", "4", "5", "6"]

        reply = client.chat.completions.create(model=done.fine_tuned_model, temperature=0, max_tokens=8,
                                               messages=[{"role": "user", "content": "Repeat the word red 2 times."}])
        assert reply.model == done.fine_tuned_model and reply.choices[0].message.content is not None
        assert done.fine_tuned_model in {m.id for m in client.models.list().data}
        assert client.models.retrieve(done.fine_tuned_model).parent == "tiny"


def test_a_bad_training_file_fails_the_job_naming_its_lines(tmp_path: Path, tiny_model_dir: Path):
    rows = chat_rows(8)
    rows[1] = {"messages": [{"role": "user", "content": "no reply here"}]}
    rows[4] = '{"messages": [ not json'
    rows[6] = {"messages": [{"role": "wizard", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    with service(tmp_path, tiny_model_dir) as running:
        client = client_for(running.base_url)
        bad = upload(client, write_rows(tmp_path / "bad.jsonl", rows))
        job = client.fine_tuning.jobs.create(model="tiny", training_file=bad.id, extra_body={"tunesmith": settings()})
        failed = wait_for(client, job.id)
        assert failed.status == "failed"
        assert failed.error.param == "training_file" and failed.error.code == "invalid_training_file"
        message = failed.error.message
        assert bad.id in message and "line 2" in message and "line 5" in message and "line 7" in message
        assert "line 1:" not in message and "line 3:" not in message
        assert failed.fine_tuned_model is None and failed.finished_at is not None
        assert list(client.fine_tuning.jobs.checkpoints.list(job.id)) == []


def test_requests_the_service_refuses_at_once(tmp_path: Path, tiny_model_dir: Path):
    with service(tmp_path, tiny_model_dir, workers=0) as running:
        client = client_for(running.base_url)
        good = upload(client, write_rows(tmp_path / "train.jsonl", chat_rows(8)))
        with pytest.raises(openai.NotFoundError) as missing:
            client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=good.id)
        assert missing.value.body["param"] == "model"
        with pytest.raises(openai.NotFoundError) as no_file:
            client.fine_tuning.jobs.create(model="tiny", training_file="file-doesnotexist")
        assert no_file.value.body["param"] == "training_file"
        with pytest.raises(openai.BadRequestError) as typo:
            client.fine_tuning.jobs.create(model="tiny", training_file=good.id,
                                           extra_body={"tunesmith": {"lora": {"rnak": 4}}})
        assert "lora.rank" in typo.value.body["message"]  # the closest valid setting is suggested
        with pytest.raises(openai.BadRequestError) as path:
            client.fine_tuning.jobs.create(model="tiny", training_file=good.id,
                                           extra_body={"tunesmith": {"data": {"train": "/etc/passwd"}}})
        assert path.value.body["param"] == "tunesmith.data.train"
        with pytest.raises(openai.BadRequestError):
            client.fine_tuning.jobs.create(model="tiny", training_file=good.id, method={"type": "reinforcement"})
        with pytest.raises(openai.BadRequestError) as hyper:
            client.fine_tuning.jobs.create(model="tiny", training_file=good.id, hyperparameters={"n_epochs": -1})
        assert "n_epochs" in hyper.value.body["param"]
        with pytest.raises(openai.BadRequestError):
            client.files.create(file=("notes.txt", b"hello"), purpose="fine-tune")
        with pytest.raises(openai.NotFoundError):
            client.fine_tuning.jobs.retrieve("ftjob-doesnotexist")
        assert list(client.fine_tuning.jobs.list()) == []  # nothing refused left a job behind


def test_pages_with_after_limit_and_has_more(tmp_path: Path, tiny_model_dir: Path):
    with service(tmp_path, tiny_model_dir, workers=0) as running:  # no worker: the jobs stay put
        client = client_for(running.base_url)
        files = [upload(client, write_rows(tmp_path / f"t{i}.jsonl", chat_rows(4, seed=i))) for i in range(3)]
        jobs = [client.fine_tuning.jobs.create(model="tiny", training_file=files[i % 3].id,
                                               metadata={"batch": "odd" if i % 2 else "even"}) for i in range(5)]
        first = client.fine_tuning.jobs.list(limit=2)
        assert [j.id for j in first.data] == [jobs[4].id, jobs[3].id] and first.has_more
        second = client.fine_tuning.jobs.list(limit=2, after=first.data[-1].id)
        assert [j.id for j in second.data] == [jobs[2].id, jobs[1].id] and second.has_more
        last = client.fine_tuning.jobs.list(limit=2, after=second.data[-1].id)
        assert [j.id for j in last.data] == [jobs[0].id] and not last.has_more
        assert [j.id for j in client.fine_tuning.jobs.list(limit=2)] == [j.id for j in reversed(jobs)]  # auto-paging
        odd = client.fine_tuning.jobs.list(metadata={"batch": "odd"})
        assert [j.id for j in odd.data] == [jobs[3].id, jobs[1].id]
        listed = client.files.list(limit=2)
        assert [f.id for f in listed.data] == [files[2].id, files[1].id] and listed.has_more
        assert [f.id for f in client.files.list(limit=1, order="asc")] == [f.id for f in files]
        with pytest.raises(openai.BadRequestError):
            client.fine_tuning.jobs.list(after="ftjob-nope")
        big = bytes(range(256)) * (3 * 4096 + 7)  # 3 MB: over the server's 1 MB limit for other requests
        large = client.files.create(file=("large.jsonl", big), purpose="fine-tune")
        assert large.bytes == len(big) and client.files.content(large.id).read() == big
        deleted = client.files.delete(files[0].id)
        assert deleted.deleted and deleted.id == files[0].id
        with pytest.raises(openai.NotFoundError):
            client.files.retrieve(files[0].id)


def test_cancel_stops_a_running_job(tmp_path: Path, tiny_model_dir: Path):
    with service(tmp_path, tiny_model_dir) as running:
        client = client_for(running.base_url)
        data = upload(client, write_rows(tmp_path / "train.jsonl", chat_rows(48)))
        job = client.fine_tuning.jobs.create(model="tiny", training_file=data.id,
                                             extra_body={"tunesmith": settings(max_steps=100000, save_every=1000)})
        queued = client.fine_tuning.jobs.create(model="tiny", training_file=data.id, extra_body={"tunesmith": settings()})
        assert client.fine_tuning.jobs.cancel(queued.id).status == "cancelled"  # not started: cancelled at once
        wait_for(client, job.id, ("running",))
        while not any(e.type == "metrics" for e in client.fine_tuning.jobs.list_events(job.id, limit=50).data):
            time.sleep(0.1)
        cancelled = client.fine_tuning.jobs.cancel(job.id)
        assert cancelled.status == "cancelled" and cancelled.finished_at is not None
        with pytest.raises(openai.BadRequestError):
            client.fine_tuning.jobs.cancel(job.id)
        log = Path(running.config.jobs_dir) / "jobs" / job.id / "run" / "metrics.jsonl"
        size = _settled_size(log)
        assert size == _settled_size(log)  # the training process is gone: nothing more is written
        assert client.fine_tuning.jobs.retrieve(job.id).status == "cancelled"
        assert client.fine_tuning.jobs.retrieve(queued.id).status == "cancelled"


def _settled_size(path: Path) -> int:
    """The file's size once it has stopped changing for 2 s (a live training writes every step)."""
    size, since = -1, time.monotonic()
    while time.monotonic() - since < 2:
        now = path.stat().st_size if path.exists() else 0
        if now != size:
            size, since = now, time.monotonic()
        time.sleep(0.1)
    return size


def test_pause_and_resume_continue_from_the_checkpoint(tmp_path: Path, tiny_model_dir: Path):
    with service(tmp_path, tiny_model_dir) as running:
        client = client_for(running.base_url)
        data = upload(client, write_rows(tmp_path / "train.jsonl", chat_rows(48)))
        job = client.fine_tuning.jobs.create(model="tiny", training_file=data.id,
                                             extra_body={"tunesmith": settings(max_steps=12, save_every=3)})
        wait_for(client, job.id, ("running",))
        while not list(client.fine_tuning.jobs.checkpoints.list(job.id)):
            time.sleep(0.1)
        client.fine_tuning.jobs.pause(job.id)
        paused = wait_for(client, job.id, ("paused", "succeeded"))
        assert paused.status == "paused", "the job finished before it could be paused"
        with pytest.raises(openai.BadRequestError):
            client.fine_tuning.jobs.pause(job.id)
        resumed = client.fine_tuning.jobs.resume(job.id)
        assert resumed.status == "queued"
        done = wait_for(client, job.id)
        assert done.status == "succeeded", done.error
        events = all_events(client, job.id)
        steps = [e.data["step"] for e in events if e.type == "metrics"]
        assert steps == list(range(1, 13))  # every step reported once, the replayed ones not again
        messages = [e.message for e in events]
        assert any(m.startswith("Fine-tuning job paused after step") for m in messages)
        assert any(m.startswith("Continuing from checkpoint step-") for m in messages)


def test_a_dpo_job_on_openai_preference_rows(tmp_path: Path, tiny_model_dir: Path):
    with service(tmp_path, tiny_model_dir) as running:
        client = client_for(running.base_url)
        data = upload(client, write_rows(tmp_path / "pairs.jsonl", preference_rows(32)))
        job = client.fine_tuning.jobs.create(
            model="tiny", training_file=data.id, suffix="prefs",
            method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2, "n_epochs": "auto"}}},
            extra_body={"tunesmith": settings(max_steps=4, save_every=2, learning_rate=1e-3)})
        assert job.method.type == "dpo" and job.method.dpo.hyperparameters.beta == 0.2
        done = wait_for(client, job.id)
        assert done.status == "succeeded", done.error
        assert [c.step_number for c in client.fine_tuning.jobs.checkpoints.list(job.id)] == [4, 2]
        reply = client.chat.completions.create(model=done.fine_tuned_model, max_tokens=4,
                                               messages=[{"role": "user", "content": "Repeat the word red 1 times."}])
        assert reply.choices[0].message.content is not None
