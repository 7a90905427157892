"""The wall between projects, on every route: project alpha owns a model of every kind (an adapter,
a full fine-tune, a classifier, a tagger, a reader), a file, a job and a stored completion with
feedback; project beta's key walks every route of the app's router table aimed at them, and gets
404 (as for names and ids that do not exist), 403 where the route is the operator's, and lists
without alpha's things. The same requests with alpha's key succeed, so each 404 is the wall and not
a malformed request. A route added to the app without a line here fails the test."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

openai = pytest.importorskip("openai", reason="the serve tests need the openai client (pip install -e .[dev])")
httpx = pytest.importorskip("httpx2")  # the HTTP client the openai package is built on
pytest.importorskip("sqlalchemy", reason="fine-tuning jobs need the serve extra (pip install -e .[serve])")

from tests.conftest import chat_rows, write_jsonl  # noqa: E402
from tests.integration.helpers import tiny_config  # noqa: E402
from tests.integration.jobs_service import TINY_SETTINGS  # noqa: E402
from tests.integration.test_eval import write_reviews_csv  # noqa: E402
from tests.integration.test_serve import make_adapter_run  # noqa: E402
from tunesmith.config import JobsConfig, ServeConfig  # noqa: E402
from tunesmith.serve.app import create_app, running  # noqa: E402
from tunesmith.serve.jobs.service import JobsService  # noqa: E402
from tunesmith.serve.models import ServedModels  # noqa: E402
from tunesmith.store.db import sqlite_url  # noqa: E402

ALPHA, BETA, ADMIN = "key-alpha", "key-beta", "key-admin"
# a `.` in served names: peft's adapter loading broke on it (adapter names are internal ids now)
NAMES = {"adapter": "ft:tiny:v1.2:aaa", "model": "ft:tiny:full.1:bbb", "classifier": "ft:tiny:tone:ccc",
         "tagger": "ft:bert:ner:ddd", "reader": "ft:bert:qa:eee"}


def full_model_run(folder: Path, base_dir: Path) -> Path:
    """A full fine-tune's run folder: the tiny model's own weights, saved as a run saves them."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    AutoModelForCausalLM.from_pretrained(base_dir).save_pretrained(folder / "model")
    AutoTokenizer.from_pretrained(base_dir).save_pretrained(folder / "model")
    (folder / "manifest.json").write_text(json.dumps({"method": "sft", "base_model": {"spec": str(base_dir)}}))
    return folder


def head_runs(root: Path, tiny_model_dir: Path, bert_dir: Path) -> dict[str, Path]:
    import tunesmith
    from tests.integration.test_span_methods import write_conll, write_squad

    reviews = write_reviews_csv(root / "reviews.csv", 64, seed=1)
    runs = {"classifier": tiny_config(root, tiny_model_dir, reviews, "train.method=classify",
                                      "data.columns.text=review_text", "data.columns.label=verdict",
                                      "lora.enabled=false", "train.max_steps=2", "eval.test=null", name="tone"),
            "tagger": tiny_config(root, bert_dir, write_conll(root / "t.conll", 40, seed=1),
                                  "train.method=token-classify", "eval.test=null", "train.max_steps=2", name="ner"),
            "reader": tiny_config(root, bert_dir, write_squad(root / "q.jsonl", 40, seed=1),
                                  "train.method=extractive-qa", "data.max_length=48", "data.stride=16",
                                  "eval.test=null", "train.max_steps=2", name="qa")}
    return {kind: tunesmith.train(config, show_progress=False).run_dir for kind, config in runs.items()}


def give_the_job_a_run(jobs: JobsService, job_id: str) -> str:
    """What a worker leaves of a job (none runs here): a run folder with its report, and an export's
    file, so the owner's report, report file and download answer; returns the export's export/file."""
    from sqlalchemy import update

    from tunesmith.store.tables import JobRow

    run, export = jobs.job_dir(job_id) / "run", jobs.job_dir(job_id) / "exports" / "gguf-lora"
    run.mkdir(parents=True)
    export.mkdir(parents=True)
    (run / "report.md").write_text("# alpha's job\n")
    (export / "adapter.gguf").write_bytes(b"GGUF")
    with jobs.store.writing() as session:
        session.execute(update(JobRow).where(JobRow.id == job_id).values(run_dir=str(run.resolve())))
    return "gguf-lora/adapter.gguf"


@pytest.fixture(scope="module")
def walled(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, tiny_wordpiece_bert_dir: Path):
    root = tmp_path_factory.mktemp("walls")
    folders = {"adapter": make_adapter_run(root / "adapter-run", tiny_model_dir, 1),
               "model": full_model_run(root / "full-run", tiny_model_dir),
               **head_runs(root, tiny_model_dir, tiny_wordpiece_bert_dir)}
    (folders["classifier"] / "report.md").write_text("# alpha's report\n")
    models = ServedModels(precision="fp32")
    models.add_base(str(tiny_model_dir), "tiny")
    for kind, folder in folders.items():
        models.add_run(folder, NAMES[kind], project="alpha")
    config = ServeConfig(api_keys=(ALPHA, BETA), admin_keys=(ADMIN,), key_projects={ALPHA: "alpha", BETA: "beta"},
                         store_url=sqlite_url(root / "completions.db"))
    jobs = JobsService(JobsConfig(jobs_dir=str(root / "jobs"), workers=0))
    with running(create_app(models, config, jobs)) as base_url:
        alpha = openai.OpenAI(base_url=base_url, api_key=ALPHA, max_retries=0, timeout=120)
        with open(write_jsonl(root / "train.jsonl", chat_rows(16)), "rb") as handle:
            file = alpha.files.create(file=handle, purpose="fine-tune")
        job = alpha.fine_tuning.jobs.create(model="tiny", training_file=file.id)  # no worker: it stays validating
        chat = alpha.chat.completions.create(model=NAMES["adapter"], messages=[{"role": "user", "content": "hi"}],
                                             max_tokens=3, temperature=0, store=True)
        alpha.post(f"/chat/completions/{chat.id}/feedback", body={"score": 1}, cast_to=object)
        ids = {"file": file.id, "job": job.id, "completion": chat.id, "report_file": "report.md",
               "export": give_the_job_a_run(jobs, job.id)}
        yield base_url, ids, folders


def requests_for(ids: dict[str, str]) -> dict[tuple[str, str], tuple[dict, set[int]]]:
    """Every (method, path) of the app: the request aimed at alpha's things, and what beta's key must
    get (404: not found; 403: the operator's; 200: a list or page that must not show alpha's things)."""
    model = NAMES["adapter"]
    completion = f"/v1/chat/completions/{ids['completion']}"
    job = f"/v1/fine_tuning/jobs/{ids['job']}"
    chat = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    grader = {"type": "score_model", "name": "judge", "model": model, "input": [{"role": "user", "content": "Rate "
              "{{ sample.output_text }}"}], "sampling_params": {"max_completions_tokens": 4}}  # a model grader on alpha's model
    return {**workbench_requests(ids),
        ("GET", "/v1/models"): ({"url": "/v1/models"}, {200}),
        ("GET", "/v1/models/{name}"): ({"url": f"/v1/models/{model}"}, {404}),
        ("POST", "/v1/chat/completions"): ({"url": "/v1/chat/completions", "json": chat}, {404}),
        ("GET", "/v1/chat/completions"): ({"url": "/v1/chat/completions", "params": {"model": model}}, {200}),
        ("POST", "/v1/completions"): ({"url": "/v1/completions", "json": {"model": model, "prompt": "hi",
                                                                          "max_tokens": 2}}, {404}),
        ("POST", "/v1/load_lora_adapter"): ({"url": "/v1/load_lora_adapter", "json": {
            "lora_name": "stolen", "lora_path": "adapter-run"}}, {403}),
        ("POST", "/v1/unload_lora_adapter"): ({"url": "/v1/unload_lora_adapter", "json": {"lora_name": model}}, {403}),
        ("GET", "/v1/chat/completions/{completion_id}"): ({"url": completion}, {404}),
        ("POST", "/v1/chat/completions/{completion_id}"): ({"url": completion, "json": {"metadata": {"a": "b"}}},
                                                           {404}),
        ("DELETE", "/v1/chat/completions/{completion_id}"): ({"url": completion}, {404}),
        ("GET", "/v1/chat/completions/{completion_id}/messages"): ({"url": f"{completion}/messages"}, {404}),
        ("POST", "/v1/chat/completions/{completion_id}/feedback"): ({"url": f"{completion}/feedback",
                                                                     "json": {"score": -1}}, {404}),
        ("GET", "/v1/chat/completions/{completion_id}/feedback"): ({"url": f"{completion}/feedback"}, {404}),
        ("POST", "/v1/classifications"): ({"url": "/v1/classifications", "json": {
            "model": NAMES["classifier"], "input": ["great"]}}, {404}),
        ("POST", "/v1/entities"): ({"url": "/v1/entities", "json": {"model": NAMES["tagger"], "input": ["Wei Chen"]}},
                                   {404}),
        ("POST", "/v1/answers"): ({"url": "/v1/answers", "json": {"model": NAMES["reader"], "questions": [
            {"question": "Who?", "context": "Mara lives in Vesk."}]}}, {404}),
        ("GET", "/health"): ({"url": "/health"}, {200}),
        ("GET", "/metrics"): ({"url": "/metrics"}, {403}),
        ("GET", "/console"): ({"url": "/console"}, {200}),
        ("GET", "/"): ({"url": "/"}, {200}),
        ("GET", "/console/static/{name}"): ({"url": "/console/static/console.js"}, {200}),
        ("GET", "/console/runs/{name}/report"): ({"url": f"/console/runs/{NAMES['classifier']}/report"}, {404}),
        ("GET", "/console/runs/{name}/files/{path}"): ({"url": f"/console/runs/{NAMES['classifier']}/files/"
                                                              f"{ids['report_file']}"}, {404}),
        ("GET", "/console/monitor"): ({"url": "/console/monitor"}, {200}),  # beta's own traffic only
        ("GET", "/console/login"): ({"url": "/console/login"}, {303}),
        ("POST", "/console/login"): ({"url": "/console/login", "data": {"key": BETA, "next": "/"}}, {303}),
        ("POST", "/v1/files"): ({"url": "/v1/files", "files": {"file": ("mine.jsonl", b'{"a": 1}\n')},
                                 "data": {"purpose": "fine-tune"}}, {200}),
        ("GET", "/v1/files"): ({"url": "/v1/files"}, {200}),
        ("GET", "/v1/files/{file_id}"): ({"url": f"/v1/files/{ids['file']}"}, {404}),
        ("DELETE", "/v1/files/{file_id}"): ({"url": f"/v1/files/{ids['file']}"}, {404}),
        ("GET", "/v1/files/{file_id}/content"): ({"url": f"/v1/files/{ids['file']}/content"}, {404}),
        ("POST", "/v1/fine_tuning/jobs"): ({"url": "/v1/fine_tuning/jobs", "json": {
            "model": NAMES["model"], "training_file": ids["file"]}}, {404}),
        ("GET", "/v1/fine_tuning/jobs"): ({"url": "/v1/fine_tuning/jobs"}, {200}),
        ("GET", "/v1/fine_tuning/jobs/{job_id}"): ({"url": job}, {404}),
        ("POST", "/v1/fine_tuning/jobs/{job_id}/cancel"): ({"url": f"{job}/cancel"}, {404}),
        ("POST", "/v1/fine_tuning/jobs/{job_id}/pause"): ({"url": f"{job}/pause"}, {404}),
        ("POST", "/v1/fine_tuning/jobs/{job_id}/resume"): ({"url": f"{job}/resume"}, {404}),
        ("GET", "/v1/fine_tuning/jobs/{job_id}/events"): ({"url": f"{job}/events"}, {404}),
        ("GET", "/v1/fine_tuning/jobs/{job_id}/checkpoints"): ({"url": f"{job}/checkpoints"}, {404}),
        ("POST", "/v1/fine_tuning/alpha/graders/run"): ({"url": "/v1/fine_tuning/alpha/graders/run", "json": {
            "grader": grader, "model_sample": "4", "item": {}}}, {404}),
        ("POST", "/v1/fine_tuning/alpha/graders/validate"): ({"url": "/v1/fine_tuning/alpha/graders/validate",
                                                               "json": {"grader": grader}}, {404}),
    }


def workbench_requests(ids: dict[str, str]) -> dict[tuple[str, str], tuple[dict, set[int]]]:
    """The console workbench's pages and API (serve/console/bench.py, api.py), aimed at alpha's job,
    file and model; its pages that list answer beta with beta's own things only."""
    page, api = f"/console/jobs/{ids['job']}", f"/v1/console/jobs/{ids['job']}"
    draft = {"model": "tiny", "training_file": ids["file"]}  # a job on the shared base from alpha's file
    return {
        ("POST", "/v1/console/check"): ({"url": "/v1/console/check", "json": draft}, {404}),
        ("POST", "/v1/console/estimate"): ({"url": "/v1/console/estimate", "json": {
            **draft, "tunesmith": TINY_SETTINGS}}, {404}),
        ("GET", "/v1/console/jobs/{job_id}/evaluation"): ({"url": f"{api}/evaluation"}, {404}),
        ("POST", "/v1/console/jobs/{job_id}/exports"): ({"url": f"{api}/exports", "json": {"format": "gguf-lora"}},
                                                        {404}),
        ("GET", "/v1/console/jobs/{job_id}/exports"): ({"url": f"{api}/exports"}, {404}),
        ("GET", "/v1/console/jobs/{job_id}/exports/{export_id}/{name}"): ({"url": f"{api}/exports/{ids['export']}"},
                                                                          {404}),
        ("GET", "/v1/console/generations"): ({"url": "/v1/console/generations"}, {200}),
        ("POST", "/v1/console/generations/{name}/current"): ({"url": f"/v1/console/generations/{NAMES['adapter']}"
                                                                     "/current", "json": {"generation": 0}}, {404}),
        ("GET", "/console/data"): ({"url": "/console/data"}, {200}),
        ("GET", "/console/jobs"): ({"url": "/console/jobs"}, {200}),
        # the form echoes a ?training_file= it is given (its script offers the key's own files), so none here
        ("GET", "/console/jobs/new"): ({"url": "/console/jobs/new"}, {200}),
        ("GET", "/console/jobs/{job_id}"): ({"url": page}, {404}),
        ("GET", "/console/jobs/{job_id}/report"): ({"url": f"{page}/report"}, {404}),
        ("GET", "/console/jobs/{job_id}/files/{path}"): ({"url": f"{page}/files/{ids['report_file']}"}, {404}),
        ("GET", "/console/compare"): ({"url": "/console/compare"}, {200}),
        ("GET", "/console/ship"): ({"url": "/console/ship"}, {200}),
    }


def app_routes(base_url: str) -> set[tuple[str, str]]:
    schema = httpx.get(base_url.removesuffix("/v1") + "/openapi.json").json()
    return {(method.upper(), path) for path, item in schema["paths"].items() for method in item}


def test_every_route_keeps_another_projects_models_files_jobs_and_completions_behind_the_wall(walled):
    base_url, ids, _ = walled
    table = requests_for(ids)
    assert app_routes(base_url) == set(table), "every route of the app needs its line in this table"
    secrets = [*NAMES.values(), ids["file"], ids["job"], ids["completion"]]
    origin = base_url.removesuffix("/v1")
    failures = []
    with httpx.Client(base_url=origin, timeout=120, follow_redirects=False,
                      headers={"Authorization": f"Bearer {BETA}", "Origin": origin}) as beta:
        for (method, path), (request, allowed) in table.items():
            answer = beta.request(method, **request)
            # a refusal may echo the name or id it was asked for; anything else that shows one is a leak
            shown = answer.text if answer.status_code not in (403, 404) else ""
            leaked = [secret for secret in secrets if secret in shown]
            if answer.status_code not in allowed or leaked:
                failures.append(f"{method} {path}: {answer.status_code} {leaked} {answer.text[:120]}")
    assert failures == []


def test_the_owner_reaches_each_of_those_things(walled):
    """The control: the requests beta was refused find their thing with alpha's key (so each 404
    above is the wall, not a malformed request); a job cancelled first cannot be paused (400), but
    is found."""
    base_url, ids, _ = walled
    table = requests_for(ids)
    refused = [key for key, (_, allowed) in table.items() if allowed == {404} and key[0] != "DELETE"
               and key != ("POST", "/v1/fine_tuning/jobs")]  # a job from a full fine-tune needs it loaded as a base
    origin = base_url.removesuffix("/v1")
    failures = []
    with httpx.Client(base_url=origin, timeout=120, headers={"Authorization": f"Bearer {ALPHA}"}) as alpha:
        for key in refused:
            answer = alpha.request(key[0], **table[key][0])
            if answer.status_code == 404 or answer.status_code >= 500:
                failures.append(f"{key}: {answer.status_code} {answer.text[:200]}")
        listed = {card["id"] for card in alpha.get("/v1/models").json()["data"]}
    assert failures == []
    assert set(NAMES.values()) <= listed


def test_model_cards_name_no_path_on_the_server(walled):
    base_url, _, folders = walled
    origin = base_url.removesuffix("/v1")
    text = httpx.get(f"{origin}/v1/models", headers={"Authorization": f"Bearer {ADMIN}"}).text
    assert not [str(folder) for folder in folders.values() if str(folder) in text]
    assert str(Path(folders["adapter"]).parent) not in text
