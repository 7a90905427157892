"""`tunesmith monitor`: a real tiny label run, a real SQLite store of its served completions, and
the report's verdict on traffic like its training data and on traffic unlike it."""

from __future__ import annotations

import csv
import json
import random
import time
from pathlib import Path

import pytest

pytest.importorskip("sqlalchemy", reason="the store needs the serve extra (pip install -e .[serve])")
pytest.importorskip("sklearn", reason="the drift figures need the monitor extra (pip install -e .[monitor])")

from tests.integration.helpers import tiny_config  # noqa: E402
from tunesmith.data.tasks import LabelTask  # noqa: E402
from tunesmith.errors import RunError  # noqa: E402
from tunesmith.improve.monitor import (  # noqa: E402
    DriftThresholds,
    MonitorReport,
    build_monitor,
    render_html,
    write_monitor,
)
from tunesmith.store.completions import Completions  # noqa: E402
from tunesmith.store.db import open_store, sqlite_url  # noqa: E402

WORDS = {"positive": ["wonderful", "moving", "brilliant", "charming", "superb", "delightful"],
         "negative": ["boring", "clumsy", "dreadful", "tedious", "awful", "lifeless"]}
FILLER = ["the", "acting", "story", "plot", "music", "ending", "cast", "and", "really", "quite"]
OTHER = ["invoice", "shipment", "warehouse", "refund", "courier", "pallet", "customs", "tariff", "freight", "ledger",
         "supplier", "receipt", "backorder", "inventory", "dispatch", "manifest", "container", "carrier"]
T0 = 1_750_000_000 // 3600 * 3600


def review(rng: random.Random, verdict: str) -> str:
    words = [rng.choice(WORDS[verdict]) for _ in range(2)] + [rng.choice(FILLER) for _ in range(rng.randint(3, 7))]
    rng.shuffle(words)
    return "this film was " + " ".join(words)


def write_reviews(path: Path, count: int, seed: int) -> Path:
    rng = random.Random(seed)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["review_text", "verdict"])
        for _ in range(count):
            verdict = rng.choice(["positive", "negative"])
            writer.writerow([review(rng, verdict), verdict])
    return path


@pytest.fixture(scope="module")
def label_run(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    import tunesmith

    root = tmp_path_factory.mktemp("monitor-run")
    data = write_reviews(root / "reviews.csv", 160, seed=1)
    config = tiny_config(root, tiny_model_dir, data, "data.columns.text=review_text", "data.columns.label=verdict",
                         "train.max_steps=2", "eval.test=null", "data.audit=off", name="reviews")
    return tunesmith.train(config, show_progress=False).run_dir


def store_at(path: Path) -> Completions:
    return Completions(open_store(sqlite_url(path)))


def serve_rows(completions: Completions, run: Path, texts: list[str], answers: list[str], *, model: str = "reviews",
               start: int = T0, generation: int | None = 1, project: str = "default") -> list[str]:
    """Rows as `tunesmith serve --store` writes them: the task's prompt as the user turn."""
    task = LabelTask.load(run / "task.json")
    ids = []
    for number, (text, answer) in enumerate(zip(texts, answers)):
        row = completions.add(project=project, model=model, kind="adapter", run_dir=str(run), generation=generation,
                              endpoint="chat", messages=[{"role": "user", "content": task.prompt(text)}], answer=answer,
                              choices=[{"index": 0, "text": answer, "finish_reason": "stop"}], params={},
                              prompt_tokens=20 + number % 5, completion_tokens=2, latency_ms=40.0 + number,
                              created_at=start + 60 * number)
        ids.append(row.id)
    return ids


def in_distribution(count: int, seed: int) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    verdicts = [rng.choice(["positive", "negative"]) for _ in range(count)]
    return [review(rng, verdict) for verdict in verdicts], verdicts


def unlike_training(count: int, seed: int) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    texts = ["please check why the " + " ".join(rng.choice(OTHER) for _ in range(40)) for _ in range(count)]
    return texts, ["positive"] * count


def test_traffic_like_the_training_data_does_not_flag(label_run: Path, tmp_path: Path):
    completions = store_at(tmp_path / "completions.db")
    texts, verdicts = in_distribution(60, seed=7)
    ids = serve_rows(completions, label_run, texts, verdicts)
    completions.add_feedback(None, ids[0], score=1, comment=None, correction=None)
    completions.add_feedback(None, ids[1], score=-1, comment="wrong", correction="negative")
    completions.add(project="default", model="reviews", kind="adapter", run_dir=str(label_run), generation=1,
                    endpoint="chat", messages=[{"role": "user", "content": "boom"}], answer=None, choices=[], params={},
                    latency_ms=3.0, error="generation failed", created_at=T0 + 4000)
    report = build_monitor(completions, {"reviews": label_run})
    model = report.models[0]
    assert not report.retrain_suggested and model.drift.verdict == "no drift", [f.reason for f in model.drift.figures]
    assert model.drift.live_prompts == 60 and model.drift.length_unit == "tokens"  # the failed request left out
    assert {f.name for f in model.drift.figures} == {"prompt length PSI (tokens)", "unseen-vocabulary share",
                                                   "TF-IDF centroid distance", "predicted label mix PSI",
                                                   "answers mapping to no label"}
    traffic = model.traffic
    assert (traffic.requests, traffic.errors) == (61, 1) and traffic.error_rate == pytest.approx(1 / 61)
    assert traffic.feedback["rate"] == pytest.approx(2 / 60) and traffic.feedback["corrections"] == 1
    assert (traffic.feedback["thumbs_up"], traffic.feedback["thumbs_down"]) == (1, 1)
    assert traffic.prompt_tokens["total"] == sum(20 + n % 5 for n in range(60))
    assert sum(count for _, count in traffic.requests_per_hour) == 61 and traffic.requests_per_hour[0] == [T0, 60]
    assert "retrain suggested:" not in render_html(report)


def test_prompts_unlike_the_training_data_flag_and_suggest_a_retrain(label_run: Path, tmp_path: Path):
    completions = store_at(tmp_path / "completions.db")
    texts, answers = unlike_training(40, seed=3)
    serve_rows(completions, label_run, texts, answers)
    report = build_monitor(completions, {"reviews": label_run, "tiny": None})
    drifted, base = report.models
    flagged = {f.name for f in drifted.drift.figures if f.flagged}
    assert {"prompt length PSI (tokens)", "unseen-vocabulary share", "TF-IDF centroid distance",
            "predicted label mix PSI"} <= flagged
    assert report.retrain_suggested and drifted.drift.verdict == "drift"
    assert any("prompt length shifted" in reason for reason in report.reasons)
    assert all(reason.startswith("reviews: ") for reason in report.reasons)
    for figure in drifted.drift.figures:
        if figure.flagged:
            assert figure.value > figure.noise >= 0 and figure.baseline is not None
    assert base.drift is None and base.traffic.requests == 0  # a base model: traffic only
    page = render_html(report)
    assert page.startswith("<!doctype html>") and "retrain suggested: reviews: prompt length shifted" in page
    assert "<script" not in page and page.count("data:image/png;base64,") == 3  # two traffic plots, one length plot


def test_too_little_traffic_is_not_a_verdict(label_run: Path, tmp_path: Path):
    completions = store_at(tmp_path / "completions.db")
    texts, answers = unlike_training(12, seed=4)
    serve_rows(completions, label_run, texts, answers)
    drift = build_monitor(completions, {"reviews": label_run}).models[0].drift
    assert drift.verdict == "not enough traffic" and not any(f.flagged for f in drift.figures)
    assert {f.verdict for f in drift.figures} == {"not enough traffic", "ok"}  # the unmapped share is only reported
    more, _ = unlike_training(40, seed=5)
    serve_rows(completions, label_run, more, ["positive"] * 40, start=T0 + 3600)
    strict = build_monitor(completions, {"reviews": label_run}, thresholds=DriftThresholds(min_live_prompts=100))
    assert not strict.retrain_suggested and strict.models[0].drift.verdict == "not enough traffic"
    assert build_monitor(completions, {"reviews": label_run}).retrain_suggested


def test_generations_get_traffic_of_their_own(label_run: Path, tmp_path: Path):
    completions = store_at(tmp_path / "completions.db")
    texts, verdicts = in_distribution(10, seed=5)
    serve_rows(completions, label_run, texts[:4], verdicts[:4], generation=1)
    serve_rows(completions, label_run, texts[4:], verdicts[4:], generation=2, start=T0 + 7200)
    model = build_monitor(completions, {"reviews": label_run}).models[0]
    assert {key: value.requests for key, value in model.by_generation.items()} == {"1": 4, "2": 6}
    only_recent = build_monitor(completions, {"reviews": label_run}, since=T0 + 7200).models[0]
    assert only_recent.traffic.requests == 6 and only_recent.by_generation == {}


def test_write_monitor_writes_the_page_and_a_json_that_round_trips(label_run: Path, tmp_path: Path):
    with pytest.raises(RunError, match=r"completions\.db: no store .*tunesmith serve .* --store"):
        write_monitor(label_run, out_dir=tmp_path / "none")
    completions = store_at(tmp_path / "completions.db")
    texts, answers = unlike_training(40, seed=6)
    serve_rows(completions, label_run, texts, answers)
    elsewhere, idle = tmp_path / "elsewhere", tmp_path / "idle"
    elsewhere.mkdir(), idle.mkdir()
    completions.add(project="default", model="someone-else", kind="adapter", run_dir=str(elsewhere), endpoint="chat",
                    messages=[{"role": "user", "content": "hi"}], answer="x", choices=[], params={}, latency_ms=1.0)
    html_path, json_path, report = write_monitor(label_run, sqlite_url(tmp_path / "completions.db"), tmp_path / "out")
    assert (html_path, json_path) == (tmp_path / "out" / "monitor.html", tmp_path / "out" / "monitor.json")
    assert [model.name for model in report.models] == ["reviews"] and report.models[0].run_dir == str(label_run.resolve())
    written = json.loads(json_path.read_text())
    assert written == report.to_json() and MonitorReport.from_json(written) == report
    assert report.retrain_suggested and "retrain suggested:" in html_path.read_text()
    with pytest.raises(RunError, match="no stored completion was answered by"):
        write_monitor(idle, sqlite_url(tmp_path / "completions.db"), tmp_path / "out2")
    _, _, recent = write_monitor(label_run, sqlite_url(tmp_path / "completions.db"), tmp_path / "out3", since_hours=1)
    assert recent.models[0].traffic.requests == 0 and recent.since >= time.time() - 3600 - 60  # the rows are from 2025


def test_the_monitor_reads_one_project(label_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    from tunesmith.cli import main

    completions = store_at(tmp_path / "completions.db")
    texts, verdicts = in_distribution(30, seed=8)
    serve_rows(completions, label_run, texts[:20], verdicts[:20], project="p1")
    theirs = serve_rows(completions, label_run, texts[20:], verdicts[20:], project="p2")
    completions.add_feedback("p2", theirs[0], score=-1, comment=None, correction="negative")
    url = sqlite_url(tmp_path / "completions.db")
    with pytest.raises(RunError, match=r"2 projects \(p1, p2\); give the one to read with --project NAME"):
        write_monitor(label_run, url, tmp_path / "mixed")
    assert not (tmp_path / "mixed").exists()
    _, json_path, ours = write_monitor(label_run, url, tmp_path / "p1", project="p1")
    assert (ours.project, ours.models[0].traffic.requests, ours.models[0].traffic.feedback["rows"]) == ("p1", 20, 0)
    assert MonitorReport.from_json(json.loads(json_path.read_text())) == ours
    assert "stored completions of project p1" in (tmp_path / "p1" / "monitor.html").read_text()
    _, _, other = write_monitor(label_run, url, tmp_path / "p2", project="p2")
    assert (other.models[0].traffic.requests, other.models[0].traffic.feedback["rows"]) == (10, 1)
    assert main(["monitor", str(label_run), "--store-url", url, "-o", str(tmp_path / "cli")]) == 2
    assert "--project NAME" in capsys.readouterr().err
    assert main(["monitor", str(label_run), "--store-url", url, "-o", str(tmp_path / "cli"), "--project", "p2"]) == 0
    assert json.loads((tmp_path / "cli" / "monitor.json").read_text())["project"] == "p2"


def test_the_length_psi_is_the_one_computed_by_hand_from_the_training_file(label_run: Path, tmp_path: Path):
    """End to end: the training prompts are the task's prompts of the CSV's texts, counted in the run's
    own tokens, and the report's PSI is the hand formula over the reference deciles."""
    import math

    import numpy as np
    from transformers import AutoTokenizer

    from tunesmith.improve.monitor.drift import split_reference
    from tunesmith.improve.monitor.prompts import training_prompts

    task = LabelTask.load(label_run / "task.json")
    with open(label_run.parent.parent / "reviews.csv", newline="") as handle:
        texts = [task.prompt(row["review_text"]) for row in csv.DictReader(handle)]
    assert training_prompts(label_run).texts == texts
    tokenizer = AutoTokenizer.from_pretrained(label_run / "adapter")
    count = lambda text: len(tokenizer.encode(text, add_special_tokens=False))  # noqa: E731
    reference, _ = split_reference(len(texts))
    train_lengths = np.array([count(texts[i]) for i in reference])
    live_texts, verdicts = in_distribution(45, seed=11)
    live_lengths = [count(task.prompt(text)) for text in live_texts]
    edges = sorted(set(np.percentile(train_lengths, [10 * k for k in range(1, 10)]).tolist()))
    expected, actual = [0] * (len(edges) + 1), [0] * (len(edges) + 1)
    for lengths, counts in ((train_lengths, expected), (live_lengths, actual)):
        for length in lengths:
            counts[sum(length > edge for edge in edges)] += 1
    share = lambda c, total: max(c / total, 1e-4)  # noqa: E731
    by_hand = sum((share(a, len(live_lengths)) - share(e, len(train_lengths)))
                  * math.log(share(a, len(live_lengths)) / share(e, len(train_lengths))) for e, a in zip(expected, actual))

    completions = store_at(tmp_path / "completions.db")
    serve_rows(completions, label_run, live_texts, verdicts)
    figure = build_monitor(completions, {"reviews": label_run}).models[0].drift.figures[0]
    assert figure.name == "prompt length PSI (tokens)" and figure.value == pytest.approx(by_hand, rel=1e-9)


def chat_run_folder(folder: Path, rows: list[dict]) -> Path:
    """A finished chat run's folder as `tunesmith train` leaves it, minus the weights and the tokenizer."""
    from tunesmith.config import build_config, dump_config

    folder.mkdir(parents=True)
    data = folder / "chats.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    (folder / "config.yaml").write_text(dump_config(build_config({"data": {"train": str(data)}})))
    (folder / "manifest.json").write_text(json.dumps({"method": "sft", "data": {"files": [{"path": str(data)}]}}))
    return folder


def test_a_chat_run_without_a_tokenizer_counts_words_and_says_so(tmp_path: Path):
    rng = random.Random(2)
    questions = [f"Repeat the word {rng.choice(['red', 'green', 'blue', 'black'])} {rng.randint(1, 4)} times." for _ in range(80)]
    run = chat_run_folder(tmp_path / "colours", [{"messages": [{"role": "user", "content": q},
                                                                {"role": "assistant", "content": "ok"}]} for q in questions])
    completions = store_at(tmp_path / "completions.db")
    for number in range(35):
        completions.add(project="default", model="colours", kind="model", run_dir=str(run), endpoint="chat",
                        messages=[{"role": "system", "content": "Be brief."},
                                  {"role": "user", "content": questions[number]}], answer="red",
                        choices=[], params={}, latency_ms=10.0)
    drift = build_monitor(completions, {"colours": run}).models[0].drift
    assert drift.length_unit == "words" and "holds no tokenizer" in drift.note
    assert drift.figures[0].name == "prompt length PSI (words)" and len(drift.figures) == 3  # no label figures
    assert drift.verdict == "no drift" and drift.training_prompts == 80 and drift.label_mix is None


def test_the_generations_of_a_lineage_are_monitored_with_the_run(tmp_path: Path):
    rows = [{"messages": [{"role": "user", "content": f"question {n}"}, {"role": "assistant", "content": "a"}]}
            for n in range(20)]
    from tunesmith.improve.lineage import add_generation

    first = chat_run_folder(tmp_path / "run", rows)
    second = chat_run_folder(first / "generations" / "gen-1", rows)
    add_generation(first, 1, second, 0, promoted=True, record={})  # as tunesmith retrain records it
    completions = store_at(first / "completions.db")
    for generation, folder, name in ((0, first, "bot"), (1, second, "bot"), (1, second, "bot-v2")):
        completions.add(project="default", model=name, kind="model", run_dir=str(folder), generation=generation,
                        endpoint="chat", messages=[{"role": "user", "content": "question 3"}], answer="a", choices=[],
                        params={}, latency_ms=5.0)
    _, _, report = write_monitor(first)
    assert {model.name: model.run_dir for model in report.models} == {"bot": str(second.resolve()),
                                                                     "bot-v2": str(second.resolve())}
    assert set(report.models[0].by_generation) == {"0", "1"}
    assert (first / "monitor" / "monitor.html").is_file() and report.models[0].drift.verdict == "not enough traffic"


def test_a_model_folder_or_a_model_without_chat_traffic_is_not_measured_and_reads_nothing(tmp_path: Path):
    plain, gone = tmp_path / "plain-model", tmp_path / "run-without-data"
    plain.mkdir()
    chat_run_folder(gone, [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}])
    (gone / "chats.jsonl").unlink()
    completions = store_at(tmp_path / "completions.db")
    for name, folder in (("plain", plain), ("gone", gone)):
        completions.add(project="default", model=name, kind="model", run_dir=str(folder), endpoint="chat",
                        messages=[{"role": "user", "content": "hello"}], answer="hi", choices=[], params={}, latency_ms=1.0)
    plain_report = build_monitor(completions, {"plain": plain, "idle": gone}).models
    assert plain_report[0].drift.verdict == "not measured" and "not a run folder" in plain_report[0].drift.note
    assert plain_report[1].drift.verdict == "not enough traffic" and plain_report[1].traffic.requests == 0
    with pytest.raises(RunError, match="chats.jsonl: the training data of .* is gone"):  # a run whose data moved
        build_monitor(completions, {"gone": gone})
