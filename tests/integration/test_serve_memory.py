"""What a server holds in memory: listing models loads none of them, a model that cannot load is
listed with its error and fails only its own requests, full fine-tunes and task heads have a
least-recently-used cap as adapters do, and a replaced generation's weights are freed once its last
rows finish."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

openai = pytest.importorskip("openai", reason="the serve tests need the openai client (pip install -e .[dev])")
pytest.importorskip("sqlalchemy", reason="fine-tuning jobs need the serve extra (pip install -e .[serve])")

from sqlalchemy import update  # noqa: E402

from tests.integration.test_serve import make_adapter_run  # noqa: E402
from tests.integration.test_serve_walls import full_model_run  # noqa: E402
from tunesmith.config import JobsConfig, ServeConfig  # noqa: E402
from tunesmith.serve.app import create_app, running  # noqa: E402
from tunesmith.serve.jobs.service import JobsService  # noqa: E402
from tunesmith.serve.models import ServedModels  # noqa: E402
from tunesmith.store.tables import JobRow  # noqa: E402


def succeeded_job(jobs: JobsService, run_dir: Path, name: str, project: str = "default") -> None:
    """A job row as a worker leaves it when its training succeeded."""
    job = jobs.store.create_job(project=project, model="tiny", base_spec="tiny", training_file="file-x",
                                validation_file=None, method={"type": "supervised"}, settings={}, suffix=None,
                                seed=1, metadata_=None)
    with jobs.store.writing() as session:
        session.execute(update(JobRow).where(JobRow.id == job.id).values(
            status="succeeded", fine_tuned_model=name, run_dir=str(run_dir), finished_at=job.created_at))


def greedy(client, model: str) -> str:
    reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Name a colour."}],
                                           temperature=0, max_tokens=6)
    return reply.choices[0].message.content


def test_listing_loads_nothing_and_an_unloadable_model_fails_only_its_own_requests(tmp_path: Path,
                                                                                    tiny_model_dir: Path):
    jobs = JobsService(JobsConfig(jobs_dir=str(tmp_path / "jobs"), workers=0))
    good = make_adapter_run(tmp_path / "good", tiny_model_dir, 1)
    gone = make_adapter_run(tmp_path / "gone", tiny_model_dir, 2)
    succeeded_job(jobs, good, "ft:tiny:good:1")
    succeeded_job(jobs, gone, "ft:tiny:gone:2")
    shutil.rmtree(gone)  # its run folder was deleted after the job succeeded
    models = ServedModels(precision="fp32")
    models.add_base(str(tiny_model_dir), "tiny")
    app = create_app(models, ServeConfig(), jobs)
    with running(app) as base_url:
        client = openai.OpenAI(base_url=base_url, api_key="local", max_retries=0, timeout=120)
        listed = {card.id for card in client.models.list().data}
        assert {"tiny", "ft:tiny:good:1", "ft:tiny:gone:2"} <= listed
        assert models.get("ft:tiny:good:1") is None and models.loaded_adapter_count() == 0  # nothing loaded
        with pytest.raises(openai.InternalServerError, match="could not be loaded") as failed:
            greedy(client, "ft:tiny:gone:2")
        assert str(tmp_path) not in str(failed.value.body)  # no server path in what the client sees
        assert greedy(client, "ft:tiny:good:1") and greedy(client, "tiny")
        cards = {card.id: card for card in client.models.list().data}  # still answers, the failure listed
        assert "could not be loaded" in cards["ft:tiny:gone:2"].error
        assert getattr(cards["ft:tiny:good:1"], "error", None) is None
        assert client.models.retrieve("ft:tiny:gone:2").id == "ft:tiny:gone:2"


def test_full_fine_tunes_beyond_the_cap_leave_memory_and_come_back_with_the_same_answers(tmp_path: Path,
                                                                                         tiny_model_dir: Path):
    models = ServedModels(max_loaded_models=1, precision="fp32")
    first = models.add_run(full_model_run(tmp_path / "first", tiny_model_dir), "first")
    second = models.add_run(full_model_run(tmp_path / "second", tiny_model_dir), "second")
    assert first.backend not in models.backends and second.backend in models.backends  # the cap held at load
    with running(create_app(models, ServeConfig())) as base_url:
        client = openai.OpenAI(base_url=base_url, api_key="local", max_retries=0, timeout=120)
        answer = greedy(client, "first")
        assert first.backend in models.backends and second.backend not in models.backends
        assert greedy(client, "second") == answer  # the same weights, loaded again
        assert second.backend in models.backends and first.backend not in models.backends
        assert greedy(client, "first") == answer


def test_a_replaced_generation_is_freed_once_its_last_rows_finish(tmp_path: Path, tiny_model_dir: Path):
    from tunesmith.improve.lineage import add_generation

    run = full_model_run(tmp_path / "run", tiny_model_dir)
    models = ServedModels(precision="fp32")
    old = models.add_run(run, "bot")
    gen1 = full_model_run(run / "generations" / "gen-1", tiny_model_dir)
    add_generation(run, 1, gen1, 0, promoted=True, record={})
    models.residency.rows_started(old)  # a row still decoding with generation 0
    assert models.lineage_changed("bot")
    new = models.refresh_lineage("bot")
    assert models.get("bot") is new and new.generation == 1
    assert old.backend in models.backends and "bot" not in {s.public_name for s in models.listed()} - {"bot"}
    assert [s.name for s in models.listed()] == [new.name]  # the old one answers no new request
    models.residency.row_finished(old)
    models.release_retired()
    assert old.backend not in models.backends and old.name not in models.served
    assert new.backend in models.backends


def test_adapter_generations_free_the_old_adapter(tmp_path: Path, tiny_model_dir: Path):
    from tunesmith.improve.lineage import add_generation

    run = make_adapter_run(tmp_path / "run", tiny_model_dir, 1)
    (run / "manifest.json").write_text(json.dumps({"method": "sft", "base_model": {"spec": str(tiny_model_dir)}}))
    models = ServedModels(precision="fp32")
    old = models.add_run(run, "bot")
    gen1 = make_adapter_run(run / "generations" / "gen-1", tiny_model_dir, 2)
    add_generation(run, 1, gen1, 0, promoted=True, record={})
    new = models.refresh_lineage("bot")
    backend = models.backends[new.backend]
    assert new.adapter_id in backend.adapters and old.adapter_id not in backend.adapters
    assert old.adapter_id not in backend.model.peft_config  # its weights are gone from the base too
