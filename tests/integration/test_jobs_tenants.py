"""Tenants: each API key belongs to a project; one project's files, jobs, events, checkpoints and
fine-tuned models are invisible to another project's key (404, as for ids that do not exist), and
the operator's admin key sees them all."""

from __future__ import annotations

from pathlib import Path

import pytest

openai = pytest.importorskip("openai", reason="the jobs tests need the openai client (pip install -e .[dev])")
pytest.importorskip("sqlalchemy", reason="fine-tuning jobs need the serve extra (pip install -e .[serve])")

from tests.conftest import chat_rows  # noqa: E402
from tests.integration.jobs_service import TINY_SETTINGS, service, wait_for, write_rows  # noqa: E402
from tunesmith.config import ServeConfig  # noqa: E402

ALPHA, BETA, ADMIN = "key-alpha", "key-beta", "key-admin"
CONFIG = ServeConfig(api_keys=(ALPHA, BETA), admin_keys=(ADMIN,), key_projects={ALPHA: "alpha", BETA: "beta"})


def client_for(base_url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=120)


def test_another_projects_ids_are_not_found_and_nothing_leaks(tmp_path: Path, tiny_model_dir: Path):
    with service(tmp_path, tiny_model_dir, serve_config=CONFIG) as running:
        alpha, beta = client_for(running.base_url, ALPHA), client_for(running.base_url, BETA)
        admin = client_for(running.base_url, ADMIN)
        with open(write_rows(tmp_path / "train.jsonl", chat_rows(32)), "rb") as handle:
            secret = alpha.files.create(file=handle, purpose="fine-tune")
        job = alpha.fine_tuning.jobs.create(model="tiny", training_file=secret.id, suffix="alpha",
                                            extra_body={"tunesmith": TINY_SETTINGS})
        done = wait_for(alpha, job.id)
        assert done.status == "succeeded", done.error
        checkpoint = next(iter(alpha.fine_tuning.jobs.checkpoints.list(job.id)))
        event = alpha.fine_tuning.jobs.list_events(job.id, limit=1).data[0]
        with open(tmp_path / "train.jsonl", "rb") as handle:
            beta_file = beta.files.create(file=handle, purpose="fine-tune")  # the same bytes, its own file

        attempts = {
            "files.retrieve": lambda: beta.files.retrieve(secret.id),
            "files.content": lambda: beta.files.content(secret.id).read(),
            "files.delete": lambda: beta.files.delete(secret.id),
            "result file": lambda: beta.files.content(done.result_files[0]).read(),
            "jobs.retrieve": lambda: beta.fine_tuning.jobs.retrieve(job.id),
            "jobs.cancel": lambda: beta.fine_tuning.jobs.cancel(job.id),
            "jobs.pause": lambda: beta.fine_tuning.jobs.pause(job.id),
            "jobs.resume": lambda: beta.fine_tuning.jobs.resume(job.id),
            "jobs.list_events": lambda: beta.fine_tuning.jobs.list_events(job.id),
            "checkpoints.list": lambda: beta.fine_tuning.jobs.checkpoints.list(job.id),
            "jobs.create with its file": lambda: beta.fine_tuning.jobs.create(model="tiny", training_file=secret.id),
            "jobs.create with its validation file": lambda: beta.fine_tuning.jobs.create(
                model="tiny", training_file=beta_file.id, validation_file=secret.id),
            "chat with its model": lambda: beta.chat.completions.create(
                model=done.fine_tuned_model, messages=[{"role": "user", "content": "hi"}], max_tokens=2),
            "completions with its model": lambda: beta.completions.create(model=done.fine_tuned_model, prompt="hi",
                                                                          max_tokens=2),
            "models.retrieve": lambda: beta.models.retrieve(done.fine_tuned_model),
            "jobs.list after its job": lambda: beta.fine_tuning.jobs.list(after=job.id),
            "files.list after its file": lambda: beta.files.list(after=secret.id),
            "events after its event": lambda: beta.fine_tuning.jobs.list_events(job.id, after=event.id),
            "checkpoints after its checkpoint": lambda: beta.fine_tuning.jobs.checkpoints.list(job.id,
                                                                                              after=checkpoint.id),
        }
        leaks, statuses = [], {}
        for name, attempt in attempts.items():
            try:
                attempt()
                leaks.append(name)
            except openai.APIStatusError as exc:
                statuses[name] = exc.status_code
        assert leaks == []
        assert {statuses[n] for n in attempts if "after" not in n and n != "jobs.create with its validation file"
                } == {404}  # not found, never "forbidden": another project's ids do not exist for this key
        # the lists beta sees hold only its own
        assert [f.id for f in beta.files.list()] == [beta_file.id]
        assert list(beta.fine_tuning.jobs.list()) == []
        assert done.fine_tuned_model not in {m.id for m in beta.models.list().data}
        assert "tiny" in {m.id for m in beta.models.list().data}  # base models are everyone's
        # nothing beta tried changed alpha's rows
        assert alpha.files.retrieve(secret.id).id == secret.id
        assert alpha.fine_tuning.jobs.retrieve(job.id).status == "succeeded"
        assert alpha.chat.completions.create(model=done.fine_tuned_model, max_tokens=2,
                                             messages=[{"role": "user", "content": "hi"}]).choices
        # the operator sees every project
        assert {j.id for j in admin.fine_tuning.jobs.list()} == {job.id}
        assert {secret.id, beta_file.id} <= {f.id for f in admin.files.list()}
        assert admin.fine_tuning.jobs.retrieve(job.id).organization_id == "alpha"
        with pytest.raises(openai.AuthenticationError):
            client_for(running.base_url, "not-a-key").fine_tuning.jobs.list()


def test_the_cli_serves_jobs_with_its_own_worker_and_projects_from_the_key_file(tmp_path: Path, tiny_model_dir: Path):
    """`tunesmith serve MODEL --jobs --workers 1 --api-key-file keys.txt` as a user starts it: the
    worker it starts validates a job, and the key file's second column is the key's project."""
    import subprocess
    import sys
    import time

    from tunesmith.serve.app import free_port

    keys = tmp_path / "keys.txt"
    keys.write_text(f"# key project\n{ALPHA} alpha\n{BETA} beta\n")
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "tunesmith.cli", "serve", f"tiny={tiny_model_dir}", "--jobs",
                                "--workers", "1", "--jobs-dir", str(tmp_path / "jobs"), "--poll-seconds", "0.2",
                                "--port", str(port), "--api-key-file", str(keys)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        alpha = client_for(f"http://127.0.0.1:{port}/v1", ALPHA)
        deadline = time.monotonic() + 120
        while True:
            try:
                alpha.models.list()
                break
            except openai.APIConnectionError:
                assert process.poll() is None and time.monotonic() < deadline, "the server did not start"
                time.sleep(0.2)
        bad = alpha.files.create(file=("bad.jsonl", b'{"messages": [{"role": "user", "content": "hi"}]}\n'),
                                 purpose="fine-tune")
        job = alpha.fine_tuning.jobs.create(model="tiny", training_file=bad.id)
        failed = wait_for(alpha, job.id)
        assert failed.status == "failed" and "line 1" in failed.error.message
        assert failed.organization_id == "alpha"
        with pytest.raises(openai.NotFoundError):
            client_for(f"http://127.0.0.1:{port}/v1", BETA).fine_tuning.jobs.retrieve(job.id)
    finally:
        process.terminate()
        output = process.communicate(timeout=60)[0]
    assert "fine-tuning jobs in sqlite:///" in output and "1 worker(s) here" in output
