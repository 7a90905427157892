"""Classification heads and continued pretraining on tiny models, end to end."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest

import tunesmith
from tests.integration.helpers import tiny_config
from tests.integration.test_eval import write_reviews_csv
from tunesmith.cli import main


@pytest.mark.parametrize("body", ["causal", "encoder"])
@pytest.mark.parametrize("lora", [True, False])
def test_classification_head_trains_saves_its_label_map_and_predicts(tmp_path: Path, tiny_model_dir: Path,
                                                                      tiny_bert_dir: Path, body: str, lora: bool, capsys):
    from transformers import AutoModelForSequenceClassification

    model_dir = tiny_model_dir if body == "causal" else tiny_bert_dir
    train = write_reviews_csv(tmp_path / "reviews.csv", 96, seed=1)
    test = write_reviews_csv(tmp_path / "test.csv", 24, seed=2)
    config = tiny_config(tmp_path, model_dir, train, "train.method=classify", "data.columns.text=review_text",
                         "data.columns.label=verdict", f"lora.enabled={str(lora).lower()}", f"eval.test={test}",
                         "train.max_steps=12", "train.learning_rate=5e-3", name=f"cls-{body}-{lora}")
    result = tunesmith.train(config, show_progress=False)
    run = result.run_dir
    assert result.val_loss < result.baseline_val_loss  # the head learned something
    classifier = AutoModelForSequenceClassification.from_pretrained(run / "model")
    assert classifier.config.id2label == {0: "negative", 1: "positive"}  # the label map round-trips
    assert json.loads((run / "task.json").read_text())["labels"] == ["negative", "positive"]
    summary = json.loads((run / "eval" / "comparison.json").read_text())
    assert set(summary["systems"]) == {"classification head"} and summary["rows"] == 24
    assert "## Held-out evaluation" in (run / "report.md").read_text()
    if lora:
        assert (run / "adapter" / "adapter_model.safetensors").is_file()

    unlabelled = tmp_path / "new.csv"
    with open(unlabelled, "w", newline="") as handle:
        csv.writer(handle).writerows([["review_text"], ["superb lovely film"], ["dull boring film"]])
    assert main(["predict", str(run), "--data", str(unlabelled), "--output", str(tmp_path / "p.csv")]) == 0
    rows = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert len(rows) == 2 and rows[0]["label"] in ("negative", "positive")
    assert abs(float(rows[0]["p(negative)"]) + float(rows[0]["p(positive)"]) - 1) < 1e-4


def test_class_weights_change_the_loss_on_imbalanced_labels(tmp_path: Path, tiny_model_dir: Path):
    rows = [["text", "label"]] + [[f"good film {i}", "positive"] for i in range(30)] + [[f"bad film {i}", "negative"] for i in range(6)]
    data = tmp_path / "imbalanced.csv"
    with open(data, "w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    losses = {}
    for weighting in ("none", "balanced"):
        result = tunesmith.train(tiny_config(tmp_path, tiny_model_dir, data, "train.method=classify", "train.max_steps=2",
                                             f"task.class_weights={weighting}", "data.validation_split=0",
                                             "train.precision=fp32", name=f"w-{weighting}"), show_progress=False)
        losses[weighting] = json.loads((result.run_dir / "metrics.jsonl").read_text().splitlines()[0])["loss"]
    assert losses["none"] != pytest.approx(losses["balanced"], rel=1e-3)


def test_continued_pretraining_packs_documents_and_reports_perplexity(tmp_path: Path, tiny_model_dir: Path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    rng = random.Random(0)
    words = "the lord spake unto moses saying thou shalt keep my statutes and my judgments".split()
    for number in range(30):
        (corpus / f"chapter{number:02d}.txt").write_text(" ".join(rng.choice(words) for _ in range(rng.randint(20, 300))))
    config = tiny_config(tmp_path, tiny_model_dir, corpus, "train.method=pretrain", "data.max_length=64",
                         "train.max_steps=10", "eval.general_text=null", "data.validation_split=0.2", name="domain")
    result = tunesmith.train(config, show_progress=False)
    figures = json.loads((result.run_dir / "eval" / "perplexity.json").read_text())
    assert figures["domain"]["after"] < figures["domain"]["before"]
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["method"] == "pretrain" and manifest["data"]["validation"]["examples"] > 0
    assert manifest["data"]["train"]["loss_tokens"] > 0.9 * manifest["data"]["train"]["tokens"]
    assert "## Perplexity before and after" in (result.run_dir / "report.md").read_text()


def test_pretraining_reports_rows_that_are_not_text(tmp_path: Path, tiny_model_dir: Path):
    from tests.conftest import chat_rows, write_jsonl
    from tunesmith.errors import DataError

    data = write_jsonl(tmp_path / "chats.jsonl", chat_rows(3))
    with pytest.raises(DataError, match="chats.jsonl:1: a chat row, not plain text"):
        tunesmith.train(tiny_config(tmp_path, tiny_model_dir, data, "train.method=pretrain"), show_progress=False)


def test_an_unknown_method_suggests_the_closest(tmp_path: Path, tiny_model_dir: Path, chat_file: Path):
    from tunesmith.errors import ConfigError

    with pytest.raises(ConfigError, match="did you mean 'classify'"):
        tunesmith.train(tiny_config(tmp_path, tiny_model_dir, chat_file, "train.method=clasify"), show_progress=False)
