"""The workbench's own API (serve/console/api.py) over a real server and store: a file checked as a
job would check it, an estimate of the job a form would create, and the walls: every new route
answers another project's key as it answers an id that does not exist (404), while the owner's key
gets an answer. The pages themselves are driven in tests/browser/test_workbench_browser.py."""

from __future__ import annotations

import pytest

requests = pytest.importorskip("requests", reason="these tests need requests (pip install -e .[dev])")
pytest.importorskip("sqlalchemy", reason="fine-tuning jobs need the serve extra (pip install -e .[serve])")

from tests.conftest import chat_rows  # noqa: E402
from tests.integration.jobs_service import TINY_SETTINGS, service, write_rows  # noqa: E402
from tunesmith.config import ServeConfig  # noqa: E402

ALPHA, BETA, ADMIN = "key-alpha", "key-beta", "key-admin"
CONFIG = ServeConfig(api_keys=(ALPHA, BETA), admin_keys=(ADMIN,), key_projects={ALPHA: "alpha", BETA: "beta"})


class Client:
    """requests with a base URL and a key (the workbench's routes are not in the openai client)."""

    def __init__(self, base_url: str, key: str) -> None:
        self.origin = base_url.removesuffix("/v1")
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {key}"

    def get(self, path: str, **kwargs):
        return self.session.get(self.origin + path, timeout=300, **kwargs)

    def post(self, path: str, **kwargs):
        return self.session.post(self.origin + path, timeout=600, **kwargs)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.session.close()


def client(base_url: str, key: str) -> Client:
    return Client(base_url, key)


def upload(http: Client, path) -> str:
    with open(path, "rb") as handle:
        answer = http.post("/v1/files", files={"file": (path.name, handle)}, data={"purpose": "fine-tune"})
    assert answer.status_code == 200, answer.text
    return answer.json()["id"]


def wait_for(http: Client, job_id: str) -> dict:
    import time

    deadline = time.monotonic() + 300
    while (job := http.get(f"/v1/fine_tuning/jobs/{job_id}").json())["status"] not in ("succeeded", "failed", "cancelled"):
        assert time.monotonic() < deadline, f"{job_id} still {job['status']}"
        time.sleep(0.2)
    return job


def test_the_method_picker_offers_what_the_jobs_api_accepts_now():
    from tunesmith.jobs.settings import METHOD_TYPES, SUPERVISED_METHODS
    from tunesmith.serve.console.bench_pages import method_options

    values = [value for value, _ in method_options()]
    assert {value.split(":")[0] for value in values} == set(METHOD_TYPES)
    assert [value for value in values if value.startswith("supervised")] == [
        "supervised" if method == "sft" else f"supervised:{method}" for method in SUPERVISED_METHODS]


def test_a_check_lists_every_bad_line_audits_and_previews_the_trained_spans(tmp_path, tiny_model_dir):
    rows = chat_rows(8)
    rows[1] = {"messages": [{"role": "user", "content": "no reply here"}]}
    rows[4] = '{"messages": [ not json'
    with service(tmp_path, tiny_model_dir, workers=0) as running, client(running.base_url, "unused") as http:
        bad = upload(http, write_rows(tmp_path / "bad.jsonl", rows))
        good = upload(http, write_rows(tmp_path / "good.jsonl", chat_rows(12)))
        held_out = upload(http, write_rows(tmp_path / "test.jsonl", chat_rows(12)[:3]))  # leaked: the same rows

        checked = http.post("/v1/console/check", json={"model": "tiny", "training_file": bad}).json()
        (validation,) = checked["validation"]
        assert not validation["ok"] and [p["line"] for p in validation["problems"]] == [2, 5]
        assert checked["preview"] is None  # nothing to show as the model sees it until the rows are fixed

        checked = http.post("/v1/console/check?rows=2", json={"model": "tiny", "training_file": good,
                                                              "tunesmith": {"test_file": held_out}}).json()
        assert checked["validation"][0]["ok"] and "all 12 rows are valid" in checked["validation"][0]["summary"]
        assert checked["audit"]["held_out"] == {held_out: 3} and len(checked["audit"]["leaks"]) == 3
        previews = checked["preview"]["rows"]
        assert len(previews) == 2
        for row, shown in zip(chat_rows(12), previews):
            trained = "".join(span["text"] for span in shown["spans"] if span["trained"])
            assert trained.startswith(row["messages"][1]["content"])  # the reply (and its end token), no more
            assert row["messages"][0]["content"] in "".join(span["text"] for span in shown["spans"] if not span["trained"])
        assert str(tmp_path) not in str(checked) and str(tiny_model_dir) not in str(checked)

        refused = http.post("/v1/console/check", json={"model": "tiny", "training_file": good,
                                                       "tunesmith": {"train": {"epochz": 1}}})
        assert refused.status_code == 400 and "epochz" in refused.json()["error"]["message"]


def test_an_estimate_counts_the_steps_the_job_would_take(tmp_path, tiny_model_dir):
    with service(tmp_path, tiny_model_dir, workers=0) as running, client(running.base_url, "unused") as http:
        good = upload(http, write_rows(tmp_path / "good.jsonl", chat_rows(24)))
        body = {"model": "tiny", "training_file": good, "tunesmith": {**TINY_SETTINGS, "train": {
            **TINY_SETTINGS["train"], "max_steps": 5}}}
        estimate = http.post("/v1/console/estimate", json=body)
        assert estimate.status_code == 200, estimate.text
        figures = estimate.json()
        assert figures["steps"] == 5 and figures["wall_seconds"] > 0 and figures["peak_memory_mb"] > 0
        assert figures["tokens"] >= figures["loss_tokens"] > 0


def test_another_projects_key_gets_404_from_every_workbench_route(tmp_path, tiny_model_dir):
    with service(tmp_path, tiny_model_dir, serve_config=CONFIG) as running, \
            client(running.base_url, ALPHA) as alpha, client(running.base_url, BETA) as beta:
        secret = upload(alpha, write_rows(tmp_path / "train.jsonl", chat_rows(24)))
        job = alpha.post("/v1/fine_tuning/jobs", json={"model": "tiny", "training_file": secret, "suffix": "alpha",
                                                       "tunesmith": TINY_SETTINGS}).json()
        done = wait_for(alpha, job["id"])
        assert done["status"] == "succeeded", done["error"]
        exported = alpha.post(f"/v1/console/jobs/{job['id']}/exports", json={"format": "gguf-lora"})
        assert exported.status_code == 200, exported.text
        download = exported.json()["files"][0]["download"]
        model = done["fine_tuned_model"]
        assert model in {entry["model"] for entry in alpha.get("/v1/console/generations").json()["data"]}

        body = {"model": "tiny", "training_file": secret}
        routes = {
            "check": lambda http: http.post("/v1/console/check", json=body),
            "check with its file as test file": lambda http: http.post("/v1/console/check", json={
                **body, "training_file": upload(http, tmp_path / "train.jsonl"), "tunesmith": {"test_file": secret}}),
            "evaluation": lambda http: http.get(f"/v1/console/jobs/{job['id']}/evaluation"),
            "exports": lambda http: http.get(f"/v1/console/jobs/{job['id']}/exports"),
            "export file": lambda http: http.get(download),
            "make current": lambda http: http.post(f"/v1/console/generations/{model}/current", json={"generation": 0}),
            "job page": lambda http: http.get(f"/console/jobs/{job['id']}"),
            "report page": lambda http: http.get(f"/console/jobs/{job['id']}/report"),
            "report file": lambda http: http.get(f"/console/jobs/{job['id']}/files/report.md"),
        }
        for name, call in routes.items():
            assert call(beta).status_code == 404, name
        owner = {name: call(alpha).status_code for name, call in routes.items()}
        # the owner's own answers (making the current generation current again is a 400 of its own)
        assert owner == {**dict.fromkeys(routes, 200), "make current": 400}
        # what the rest would only start: a 404 before any work (an export or an estimate of another's job or file)
        assert beta.post(f"/v1/console/jobs/{job['id']}/exports", json={"format": "gguf-lora"}).status_code == 404
        assert beta.post("/v1/console/estimate", json=body).status_code == 404
        assert model not in str(beta.get("/v1/console/generations").json())
        for page in ("/console/jobs", "/console/data", "/console/compare", "/console/ship"):
            shown = beta.get(page)
            assert shown.status_code == 200 and job["id"] not in shown.text and secret not in shown.text
