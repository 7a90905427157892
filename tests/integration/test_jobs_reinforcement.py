"""OpenAI's reinforcement fine-tuning, self-hosted: the grader endpoints (client.fine_tuning.alpha.graders)
and `method: reinforcement` jobs (grpo with the job's grader as its reward), driven by the official
`openai` client against a real server and worker on 127.0.0.1 with the tiny model."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

openai = pytest.importorskip("openai", reason="the jobs tests need the openai client (pip install -e .[dev])")
pytest.importorskip("sqlalchemy", reason="fine-tuning jobs need the serve extra (pip install -e .[serve])")

from tests.integration.jobs_service import (  # noqa: E402
    TINY_SETTINGS,
    Service,
    all_events,
    wait_for,
    worker_command,
    write_rows,
)
from tunesmith.config import JobsConfig, ServeConfig  # noqa: E402
from tunesmith.graders import run_grader  # noqa: E402
from tunesmith.serve.app import create_app, running  # noqa: E402
from tunesmith.serve.jobs.service import JobsService  # noqa: E402
from tunesmith.serve.models import ServedModels  # noqa: E402

ALPHA, BETA = "key-alpha", "key-beta"
EXACT = {"type": "string_check", "name": "exact", "operation": "eq", "input": "{{ sample.output_text }}",
         "reference": "{{ item.answer }}"}
CLOSE = {"type": "text_similarity", "name": "close", "evaluation_metric": "fuzzy_match",
         "input": "{{ sample.output_text }}", "reference": "{{ item.answer }}"}
BOTH = {"type": "multi", "name": "both", "calculate_output": "0.5 * exact + 0.5 * close",
        "graders": {"exact": EXACT, "close": CLOSE}}
LENGTH = {"type": "python", "name": "length",
          "source": "def grade(sample, item):\n    return min(len(sample['output_text']) / 10, 1.0)\n"}
COLOURS = ["red", "green", "blue", "yellow"]


@contextlib.contextmanager
def graders_service(tmp_path: Path, base_dir: Path, *, allow_python: bool = False,
                    workers: int = 0) -> Iterator[Service]:
    """Server (+ workers) on one store, two projects' keys; the base model answers as `tiny`."""
    config = JobsConfig(jobs_dir=str(tmp_path / "jobs"), lease_seconds=30.0, poll_seconds=0.2, workers=workers,
                        allow_python_graders=allow_python)
    jobs = JobsService(config)
    models = ServedModels(precision="fp32")
    models.add_base(str(base_dir), "tiny")
    keys = ServeConfig(api_keys=(ALPHA, BETA), key_projects={ALPHA: "alpha", BETA: "beta"})
    command = worker_command(config) + (["--allow-python-graders"] if allow_python else [])
    processes = [subprocess.Popen(command, stdout=open(tmp_path / f"worker-{i}.log", "ab"), stderr=subprocess.STDOUT)
                 for i in range(workers)]
    try:
        with running(create_app(models, keys, jobs)) as base_url:
            yield Service(base_url, None, jobs, config)
    finally:
        for process in processes:
            process.kill()
            process.wait()
        jobs.store.close()


def client_for(base_url: str, key: str = ALPHA) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=120)


def rft_rows(count: int, seed: int = 0) -> list[dict]:
    """OpenAI's reinforcement rows: a conversation ending with the user's turn, and the grader's field."""
    colours = COLOURS[seed % len(COLOURS):] + COLOURS[:seed % len(COLOURS)]
    return [{"messages": [{"role": "user", "content": f"Say the word {colours[i % 4]}."}], "answer": colours[i % 4]}
            for i in range(count)]


def upload(client, path: Path):
    with open(path, "rb") as handle:
        return client.files.create(file=handle, purpose="fine-tune")


def reinforcement(grader: dict, **hyperparameters) -> dict:
    return {"type": "reinforcement", "reinforcement": {"grader": grader, "hyperparameters": hyperparameters}}


def refusal(call, *args, **kwargs) -> dict:
    """The OpenAI error body of the 400 that call(*args, **kwargs) gets."""
    with pytest.raises(openai.BadRequestError) as refused:
        call(*args, **kwargs)
    return refused.value.body


def without_time(response: dict) -> dict:
    return {**response, "metadata": {k: v for k, v in response["metadata"].items() if k != "execution_time"}}


def test_graders_run_and_validate_as_the_library_grades(tmp_path: Path, tiny_model_dir: Path):
    item = {"answer": "Paris"}
    with graders_service(tmp_path, tiny_model_dir) as service:
        graders = client_for(service.base_url).fine_tuning.alpha.graders
        for grader in (EXACT, CLOSE, BOTH):
            assert graders.validate(grader=grader).grader.type == grader["type"]
            for sample in ("Paris", "Pariss", "London"):
                answer = graders.run(grader=grader, model_sample=sample, item=item).model_dump(by_alias=True)
                assert without_time(answer) == without_time(run_grader(grader, sample=sample, item=item))
                assert answer["metadata"]["execution_time"] >= 0 and answer["metadata"]["name"] == grader["name"]
        multi = graders.run(grader=BOTH, model_sample="Pariss", item=item)
        assert set(multi.sub_rewards) == {"exact", "close"} and multi.sub_rewards["exact"] == 0.0
        assert multi.reward == pytest.approx(0.5 * multi.sub_rewards["close"]) and 0 < multi.reward < 0.5
        assert graders.run(grader=EXACT, model_sample="Paris", item=item).reward == 1.0
        errors = graders.run(grader=EXACT, model_sample="Paris", item={}).metadata.errors
        assert errors.invalid_variable_error or errors.other_error or errors.sample_parse_error  # item.answer is missing


def test_a_malformed_or_untrusted_grader_is_a_400_naming_its_field(tmp_path: Path, tiny_model_dir: Path):
    no_reference = {k: v for k, v in EXACT.items() if k != "reference"}
    bad_sub = {**BOTH, "graders": {"exact": EXACT, "close": {**CLOSE, "type": "text_similarty"}}}
    with graders_service(tmp_path, tiny_model_dir) as service:
        client = client_for(service.base_url)
        graders = client.fine_tuning.alpha.graders
        for call in (lambda g: graders.validate(grader=g), lambda g: graders.run(grader=g, model_sample="x", item={})):
            assert refusal(call, no_reference)["param"] == "grader.reference"
            body = refusal(call, bad_sub)
            assert body["param"] == "grader.graders.close.type" and "text_similarity" in body["message"]
            body = refusal(call, LENGTH)
            assert body["param"] == "grader" and "--allow-python-graders" in body["message"]
            body = refusal(call, {**BOTH, "calculate_output": "exact + length",
                                  "graders": {"exact": EXACT, "length": LENGTH}})
            assert body["param"] == "grader.graders.length"
        training = upload(client, write_rows(tmp_path / "train.jsonl", rft_rows(8)))

        def create(method: dict) -> dict:
            return refusal(client.fine_tuning.jobs.create, model="tiny", training_file=training.id, method=method,
                           extra_body={"tunesmith": TINY_SETTINGS})

        body = create(reinforcement(no_reference))
        assert body["param"] == "method.reinforcement.grader.reference" and "required" in body["message"]
        assert create(reinforcement(bad_sub))["param"] == "method.reinforcement.grader.graders.close.type"
        assert "--allow-python-graders" in create(reinforcement(LENGTH))["message"]
        assert create({"type": "reinforcement", "reinforcement": {}})["param"] == "method.reinforcement.grader"
        body = create(reinforcement(EXACT, reasoning_effort="high"))
        assert body["param"] == "method.reinforcement.hyperparameters.reasoning_effort"
        assert create(reinforcement(EXACT, eval_samples=4))["param"] == "method.reinforcement.hyperparameters.eval_samples"
        assert create(reinforcement(EXACT, beta=0.1))["param"] == "method.reinforcement.hyperparameters.beta"
        judge = {"type": "score_model", "name": "judge", "model": "tiny", "input": [{"role": "user", "content": "Rate"}]}
        assert create(reinforcement(judge))["param"] == "method.reinforcement.grader"
        body = refusal(client.fine_tuning.jobs.create, model="tiny", training_file=training.id,
                       method=reinforcement(EXACT), extra_body={"tunesmith": {**TINY_SETTINGS, "grpo": {"grader": EXACT}}})
        assert body["param"] == "tunesmith.grpo.grader" and "give method.reinforcement.grader" in body["message"]
        assert list(client.fine_tuning.jobs.list()) == []


def test_python_graders_run_where_the_server_and_its_worker_allow_them(tmp_path: Path, tiny_model_dir: Path):
    from tunesmith.jobs.settings import JobSettingsError
    from tunesmith.jobs.worker import Worker

    with graders_service(tmp_path, tiny_model_dir, allow_python=True) as service:
        client = client_for(service.base_url)
        graders = client.fine_tuning.alpha.graders
        assert graders.validate(grader=LENGTH).grader.type == "python"
        assert graders.run(grader=LENGTH, model_sample="abcde", item={}).reward == pytest.approx(0.5)
        mixed = {**BOTH, "calculate_output": "exact + length", "graders": {"exact": EXACT, "length": LENGTH}}
        assert graders.run(grader=mixed, model_sample="Paris", item={"answer": "Paris"}).reward == pytest.approx(1.5)
        training = upload(client, write_rows(tmp_path / "train.jsonl", rft_rows(8)))
        job = client.fine_tuning.jobs.create(model="tiny", training_file=training.id, method=reinforcement(LENGTH),
                                             extra_body={"tunesmith": TINY_SETTINGS})
        assert job.method.reinforcement.grader.type == "python"  # no worker here: it waits, validating
        row = service.jobs.store.get_job("alpha", job.id)
        trusted, _ = Worker(service.config, store=service.jobs.store).run_config(row)
        assert trusted.grpo.trust_python_grader is True and trusted.grpo.grader["type"] == "python"
        wary = JobsConfig(**{**service.config.model_dump(), "allow_python_graders": False})
        with pytest.raises(JobSettingsError, match="allow-python-graders"):
            Worker(wary, store=service.jobs.store).run_config(row)


def test_a_reinforcement_job_trains_on_its_grader_and_reports_rewards_to_its_project_only(tmp_path: Path,
                                                                                           tiny_model_dir: Path):
    settings = {**TINY_SETTINGS, "train": {**TINY_SETTINGS["train"], "max_steps": 2, "save_every": 2},
                "grpo": {"max_new_tokens": 4}, "data": {"max_length": 64}}
    with graders_service(tmp_path, tiny_model_dir, workers=1) as service:
        client, other = client_for(service.base_url), client_for(service.base_url, BETA)
        training = upload(client, write_rows(tmp_path / "train.jsonl", rft_rows(8)))
        held_out = upload(client, write_rows(tmp_path / "valid.jsonl", rft_rows(2, seed=1)))
        job = client.fine_tuning.jobs.create(
            model="tiny", training_file=training.id, validation_file=held_out.id, seed=3, extra_body={"tunesmith": settings},
            method=reinforcement(BOTH, n_epochs=1, batch_size=2, compute_multiplier=0.25, eval_interval=1,
                                 learning_rate_multiplier="auto", reasoning_effort="default"))
        reported = job.method.reinforcement.hyperparameters
        assert (reported.batch_size, reported.compute_multiplier, reported.eval_interval) == (2, 0.25, 1)
        assert (reported.eval_samples, reported.reasoning_effort, reported.n_epochs) == (1, "default", 1)
        assert job.method.reinforcement.grader.type == "multi"

        done = wait_for(client, job.id)
        assert done.status == "succeeded", done.error
        metrics = [event.data for event in all_events(client, job.id) if event.type == "metrics"]
        assert [data["step"] for data in metrics] == [1, 2]
        for data in metrics:
            assert 0.0 <= data["train_reward_mean"] <= 1.0 and data["train_kl"] >= 0.0
            assert 1 <= data["train_output_tokens_mean"] <= 4
            # the formula is linear, so the mean reward is the formula of the sub-graders' means
            subs = data["sub_rewards"]
            assert data["train_reward_mean"] == pytest.approx(0.5 * subs["exact"] + 0.5 * subs["close"], abs=1e-6)
            assert 0.0 <= data["valid_reward_mean"] <= 1.0

        judge = {"type": "score_model", "name": "judge", "model": done.fine_tuned_model, "range": [0, 1],
                 "input": [{"role": "user", "content": "Rate {{ sample.output_text }}"}],
                 "sampling_params": {"max_completions_tokens": 4}}
        graded = client.fine_tuning.alpha.graders.run(grader=judge, model_sample="red", item={})
        assert list(graded.model_grader_token_usage_per_model) == [done.fine_tuned_model]
        assert not graded.metadata.errors.model_grader_server_error  # the model answered (in 4 tokens: maybe unparsed)
        with pytest.raises(openai.NotFoundError):
            other.fine_tuning.jobs.retrieve(job.id)
        with pytest.raises(openai.NotFoundError) as walled:
            other.fine_tuning.alpha.graders.run(grader=judge, model_sample="red", item={})
        assert walled.value.body["param"] == "grader.model"
        with pytest.raises(openai.NotFoundError):
            other.fine_tuning.alpha.graders.validate(grader={**BOTH, "graders": {"exact": EXACT, "close": judge}})
