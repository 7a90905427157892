"""The loop after serving, end to end: serve a tiny label run with a store, send requests through
the `openai` client, post feedback, export SFT and DPO rows, retrain, watch the gate decide (one
generation promoted, one refused), see the running server answer with the promoted generation
without a restart, then roll back."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

openai = pytest.importorskip("openai", reason="the serve tests need the openai client (pip install -e .[dev])")
pytest.importorskip("fastapi", reason="tunesmith serve needs the serve extra (pip install -e .[serve])")

from tests.integration.helpers import tiny_config  # noqa: E402
from tests.integration.test_eval import write_reviews_csv  # noqa: E402
from tunesmith.config import ServeConfig  # noqa: E402
from tunesmith.data.tasks import LabelTask  # noqa: E402
from tunesmith.serve.app import create_app, running  # noqa: E402
from tunesmith.serve.models import ServedModels  # noqa: E402
from tunesmith.store.db import sqlite_url  # noqa: E402

NEW_WORDS = {"positive": ["zorblax", "glimmerous", "vantique"], "negative": ["quintar", "morbulent", "drabnix"]}


def drifted_texts(count: int, seed: int) -> list[tuple[str, str]]:
    """Reviews in words the run never saw, each word telling the label."""
    rng = random.Random(seed)
    found = []
    for number in range(count):
        label = ("positive", "negative")[number % 2]
        words = " ".join(rng.choice(NEW_WORDS[label]) for _ in range(3))
        found.append((f"a {words} picture , number {seed}-{number}", label))
    return found


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    import tunesmith

    root = tmp_path_factory.mktemp("loop")
    train = write_reviews_csv(root / "reviews.csv", 48, seed=1)
    test = write_reviews_csv(root / "test.csv", 16, seed=2)
    config = tiny_config(root, tiny_model_dir, train, "data.columns.text=review_text", "data.columns.label=verdict",
                         "lora.enabled=false", "train.max_steps=4", f"eval.test={test}", "eval.compare=false",
                         "eval.precision=fp32", "train.precision=fp32", "eval.resamples=200", name="reviews")
    return tunesmith.train(config, show_progress=False).run_dir


def test_serve_store_feedback_export_retrain_gate_promote_and_rollback(run: Path, tmp_path: Path) -> None:
    from tunesmith.cli import main
    from tunesmith.improve.feedback import export_feedback
    from tunesmith.improve.lineage import read_lineage
    from tunesmith.improve.retrain import retrain
    from tunesmith.models.generate import generate, load_for_generation
    from tunesmith.store.completions import Completions
    from tunesmith.store.db import open_store

    task = LabelTask.load(run / "task.json")
    models = ServedModels(precision="fp32")
    models.add_run(run, "reviews")
    database = run / "completions.db"
    app = create_app(models, ServeConfig(max_tokens=8, store_url=sqlite_url(database)))
    with running(app) as base_url:
        client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=120)

        def ask(text: str):
            return client.chat.completions.create(model="reviews", messages=[{"role": "user", "content": task.prompt(text)}],
                                                  temperature=0, max_tokens=4)

        # users send drifted reviews; each reply gets a thumbs-down and the right label, a few a thumbs-up
        for text, label in drifted_texts(40, seed=7):
            reply = ask(text)
            answer = reply.choices[0].message.content.strip()
            if answer == label:
                client.post(f"/chat/completions/{reply.id}/feedback", cast_to=object, body={"score": 1})
            else:
                client.post(f"/chat/completions/{reply.id}/feedback", cast_to=object,
                            body={"score": -1, "correction": label})
        ask("a review nobody rates")
        stored = Completions(open_store(sqlite_url(database))).rows()
        assert len(stored) == 41 and {row.generation for row in stored} == {0}

        assert main(["monitor", str(run)]) == 0  # the CLI: monitor.html and monitor.json beside the run
        monitored = json.loads((run / "monitor" / "monitor.json").read_text())
        assert monitored["models"][0]["traffic"]["requests"] == 41 and (run / "monitor" / "monitor.html").is_file()

        sft = export_feedback(run, tmp_path / "new.jsonl", "sft")
        rows = [json.loads(line) for line in (tmp_path / "new.jsonl").read_text().splitlines()]
        assert sft.written == len(rows) == 40 and sft.with_feedback == 40
        assert {tuple(sorted(r)) for r in rows} == {("label", "text")}  # the run's own row format
        assert {(r["text"], r["label"]) for r in rows} == set(drifted_texts(40, seed=7))
        dpo = export_feedback(run, tmp_path / "pairs.jsonl", "dpo")
        pairs = [json.loads(line) for line in (tmp_path / "pairs.jsonl").read_text().splitlines()]
        assert dpo.written == len(pairs) > 0
        for pair in pairs:  # OpenAI's preference format, the correction preferred over the answer it corrects
            assert pair["preferred_output"][0]["content"] in ("positive", "negative")
            assert pair["preferred_output"][0]["content"] != pair["non_preferred_output"][0]["content"]

        # refused: a generation that cannot have learned anything (learning rate 1e-12) is no better on the new rows
        refused = retrain(run, str(tmp_path / "new.jsonl"), ["train.learning_rate=1e-12", "train.max_steps=2"],
                          show_progress=False)
        assert not refused.promoted and any("no better" in reason for reason in refused.reasons)
        assert read_lineage(run)["current"] == 0
        assert ask("a zorblax film").model_extra is not None  # still answering
        assert Completions(open_store(sqlite_url(database))).rows()[-1].generation == 0

        # promoted: trained on the new rows, better on the held-out ones
        promoted = retrain(run, str(tmp_path / "new.jsonl"),
                           ["train.max_steps=30", "retrain.replay=0.5", "retrain.margin=1.0"], show_progress=False)
        new_rows = promoted.sets[1]
        assert promoted.promoted, promoted.reasons
        assert new_rows.candidate["estimate"] > new_rows.current["estimate"]
        assert read_lineage(run)["current"] == promoted.generation == 2

        # the same server, no restart: the next request is answered by generation 2, as `generate` would
        probe = [t for t, _ in drifted_texts(6, seed=99)]
        served = [ask(text).choices[0].message.content for text in probe]
        expected = generate(load_for_generation(str(promoted.run_folder), precision="fp32"),
                            [task.prompt(t) for t in probe], max_new_tokens=4, batch_size=1).texts
        assert [a.strip() for a in served] == expected
        assert Completions(open_store(sqlite_url(database))).rows()[-1].generation == 2
        card = next(m for m in client.models.list().data if m.id == "reviews")
        assert card.model_extra["generation"] == 2

        assert main(["rollback", str(run)]) == 0  # back to generation 0, the newest promoted one before 2
        ask(probe[0])
        assert Completions(open_store(sqlite_url(database))).rows()[-1].generation == 0
    generations = read_lineage(run)["generations"]
    assert [(g["generation"], g["promoted"]) for g in generations] == [(0, True), (1, False), (2, True)]
    assert (promoted.run_folder / "gate.md").is_file() and "held-out new rows" in (promoted.run_folder / "gate.md").read_text()


def test_a_projects_export_and_monitor_leave_out_what_another_projects_key_sent(run: Path, tmp_path: Path,
                                                                               capsys: pytest.CaptureFixture) -> None:
    """Two projects' keys use one served run: each completion is kept in its key's project, and p1's
    export holds none of p2's corrections (p2 here labels everything positive)."""
    from tunesmith.cli import main

    task = LabelTask.load(run / "task.json")
    keys = {"k-p1": "p1", "k-p2": "p2"}
    models = ServedModels(precision="fp32")
    models.add_run(run, "reviews")
    url = sqlite_url(tmp_path / "completions.db")
    sent = {"k-p1": drifted_texts(6, seed=21), "k-p2": drifted_texts(6, seed=22)}
    with running(create_app(models, ServeConfig(api_keys=tuple(keys), key_projects=keys, max_tokens=8,
                                                store_url=url))) as base_url:
        for key, texts in sent.items():
            client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=120)
            for text, label in texts:
                reply = client.chat.completions.create(model="reviews", max_tokens=4, temperature=0,
                                                       messages=[{"role": "user", "content": task.prompt(text)}])
                correction = label if key == "k-p1" else "positive"
                client.post(f"/chat/completions/{reply.id}/feedback", cast_to=object,
                            body={"score": -1, "correction": correction})

    export = ["feedback", "export", str(run), "--as", "sft", "--store-url", url, "-o"]
    assert main([*export, str(tmp_path / "mixed.jsonl")]) == 2  # two projects, none named: refused
    assert "--project NAME" in capsys.readouterr().err and not (tmp_path / "mixed.jsonl").exists()
    assert main([*export, str(tmp_path / "p1.jsonl"), "--project", "p1"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "p1.jsonl").read_text().splitlines()]
    assert {(r["text"], r["label"]) for r in rows} == set(sent["k-p1"])
    assert main(["monitor", str(run), "--store-url", url, "--project", "p2", "-o", str(tmp_path / "monitor")]) == 0
    monitored = json.loads((tmp_path / "monitor" / "monitor.json").read_text())
    assert monitored["project"] == "p2" and monitored["models"][0]["traffic"]["requests"] == 6


def test_a_generation_within_the_margin_only_by_its_estimate_is_refused(run: Path, tmp_path: Path) -> None:
    """A real retrain whose test-set estimate passes the margin while the lower end of its 95%
    interval does not: the gate refuses it (the estimate alone would have promoted it)."""
    from tunesmith.cli import main
    from tunesmith.improve.lineage import read_lineage, rollback
    from tunesmith.improve.retrain import GateSet, decide

    if read_lineage(run)["current"] != 0:  # start from generation 0, whatever the test before left current
        rollback(run, 0)
    new_rows = tmp_path / "new.jsonl"
    new_rows.write_text("".join(json.dumps({"text": text, "label": label}) + "\n"
                                for text, label in drifted_texts(40, seed=7)))
    before = len(read_lineage(run)["generations"])
    assert main(["retrain", str(run), "--data", str(new_rows), "--set", "train.max_steps=10", "--set",
                 "retrain.replay=0.5", "--no-progress"]) == 0
    entry = read_lineage(run)["generations"][before]
    gate = entry["gate"]
    test, new = gate["sets"]
    margin = gate["margin"]
    # the case this test is about: the estimate within the margin, the interval reaching below it, better on new rows
    assert test["difference"]["estimate"] >= -margin > test["difference"]["low"] and new["difference"]["estimate"] > 0
    assert not entry["promoted"] and read_lineage(run)["current"] == 0
    assert "interval reaches" in gate["reasons"][0] and gate["test_interval"] is True
    assert decide([GateSet(**s) for s in gate["sets"]], margin, test_interval=False)[0]  # the estimate-only gate would have promoted it
