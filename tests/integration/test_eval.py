"""Evaluation end to end on the tiny model: label tasks from a plain CSV, the comparison, the report."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest

from tests.conftest import chat_rows
from tunesmith.cli import main
from tunesmith.data.examples import Message
from tunesmith.models.generate import generate, load_for_generation

WORDS = {"positive": ["great", "superb", "lovely", "fine", "moving"], "negative": ["awful", "dull", "bad", "boring", "weak"]}


def write_reviews_csv(path: Path, count: int, seed: int) -> Path:
    rng = random.Random(seed)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "review_text", "verdict", "stars"])
        for number in range(count):
            verdict = rng.choice(["positive", "negative"])
            words = " ".join(rng.choice(WORDS[verdict]) for _ in range(4))
            writer.writerow([number, f"this film was {words} , truly {seed}-{number}", verdict, rng.randint(1, 5)])
    return path


def test_batched_decoding_gives_the_same_answers_as_one_at_a_time(tiny_model_dir: Path):
    loaded = load_for_generation(str(tiny_model_dir), precision="fp32")  # evaluation's precision
    prompts = [r["messages"][0]["content"] * (1 + n % 3) for n, r in enumerate(chat_rows(9, seed=2))]
    prompts.append([Message("user", "Hi"), Message("assistant", "Hello"), Message("user", "Repeat red")])
    one_by_one = generate(loaded, prompts, max_new_tokens=12, batch_size=1)
    batched = generate(loaded, prompts, max_new_tokens=12, batch_size=5)
    assert batched.texts == one_by_one.texts
    assert batched.new_tokens == one_by_one.new_tokens > 0


def test_plain_csv_label_task_with_two_column_flags_trains_compares_and_reports(tmp_path: Path, tiny_model_dir: Path, capsys):
    train = write_reviews_csv(tmp_path / "reviews.csv", 120, seed=1)
    test = write_reviews_csv(tmp_path / "held_out.csv", 24, seed=2)
    args = ["train", "--model", str(tiny_model_dir), "--data", str(train), "--test", str(test),
            "--text-column", "review_text", "--label-column", "verdict", "--output", "reviews", "--no-progress",
            "--set", f"output.dir={tmp_path / 'runs'}", "--set", "train.max_steps=6", "--set", "train.learning_rate=2e-2",
            "--set", "eval.few_shot=2", "--set", "eval.general_rows=4", "--set", "data.validation_split=0.1"]
    groups = tmp_path / "groups.yaml"
    groups.write_text(f"praised: [{', '.join(WORDS['positive'])}]\npanned: [{', '.join(WORDS['negative'])}]\n")
    args += ["--set", f"eval.groups={groups}"]
    assert main(args) == 0
    out = capsys.readouterr().out
    run = tmp_path / "runs" / "reviews"
    assert json.loads((run / "task.json").read_text())["labels"] == ["negative", "positive"]
    for system in ("base zero-shot", "base 2-shot", "fine-tuned", "fine-tuned gain [95%]"):
        assert system in out
    summary = json.loads((run / "eval" / "comparison.json").read_text())
    assert summary["rows"] == 24 and set(summary["systems"]) == {"base zero-shot", "base 2-shot", "fine-tuned"}
    for system in summary["systems"].values():
        assert 0.0 <= system["accuracy"] <= 1.0 and len(system["confusion"]) == 2
        assert sum(map(sum, system["confusion"])) == 24
    assert summary["forgetting"]["documents"] == 4 and summary["forgetting"]["ratio"] > 0
    # every score and every gain of the fine-tuned model carries its paired 95% interval, in the file and in words
    gains = summary["intervals"]["gains"]
    assert set(gains) == {"base zero-shot", "base 2-shot"}
    assert set(gains["base zero-shot"]) == {"accuracy", "macro_f1", "likelihood_accuracy", "likelihood_macro_f1"}
    for name, metrics in gains.items():
        accuracy = metrics["accuracy"]
        expected = summary["systems"]["fine-tuned"]["accuracy"] - summary["systems"][name]["accuracy"]
        assert accuracy["estimate"] == pytest.approx(expected) and accuracy["low"] <= accuracy["estimate"] <= accuracy["high"]
    # one table: each score and the fine-tuned model's gain over each baseline, with its interval, in the cells
    table = out[out.index("system "):].splitlines()
    zero_shot = next(line for line in table if line.startswith("base zero-shot"))
    low, high = gains["base zero-shot"]["accuracy"]["low"], gains["base zero-shot"]["accuracy"]["high"]
    assert f"[{low:+.3f}, {high:+.3f}]" in zero_shot
    assert "The accuracy gain of fine-tuned over the best baseline (" in out  # and one sentence of verdict
    assert "95% interval:" not in out
    # every system is scored twice: by its generated answer and by the likelihood of each label
    for system in summary["systems"].values():
        assert 0.0 <= system["likelihood_accuracy"] <= 1.0 and "likelihood_macro_f1" in system
    assert {"likelihood_accuracy", "likelihood_macro_f1"} <= set(gains["base zero-shot"])
    assert "likelihood accuracy [95%]" in out
    predictions = [json.loads(line) for line in (run / "eval" / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 24 and predictions[0]["reference"] in ("negative", "positive")
    report = (run / "report.md").read_text()
    for heading in ("## Data", "## Training", "## Fine-tuned vs base model", "## Per class", "## Forgetting", "## Settings"):
        assert heading in report
    assert "95% paired bootstrap over the rows" in report and "fine-tuned gain [95%]" in report
    # eval.groups: each system's accuracy per group of rows and the gap between the groups
    by_group = [note for note in summary["notes"] if note.startswith("by group")]
    assert len(by_group) == 3 and all("praised accuracy" in note and "panned accuracy" in note and "macro F1" in note
                                      and "gap" in note for note in by_group)
    assert by_group[0] in report
    html = (run / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 3 and "<table>" in html  # self-contained: images inline

    # the same labelled CSV evaluates with `tunesmith eval` and `tunesmith compare`
    assert main(["eval", str(run), "--data", str(test), "--text-column", "review_text", "--label-column", "verdict"]) == 0
    assert "accuracy" in capsys.readouterr().out
    assert main(["compare", str(run), "--data", str(test), "--text-column", "review_text", "--label-column", "verdict",
                 "--few-shot", "1", "--max-rows", "8"]) == 0
    assert "base 1-shot" in capsys.readouterr().out


def test_free_text_comparison_reports_exact_match_rouge_and_perplexity(tmp_path: Path, tiny_model_dir: Path, capsys):
    from tests.conftest import write_jsonl

    train = write_jsonl(tmp_path / "train.jsonl", chat_rows(40, seed=1))
    test = write_jsonl(tmp_path / "test.jsonl", chat_rows(8, seed=99))
    assert main(["train", "--model", str(tiny_model_dir), "--data", str(train), "--test", str(test), "--output", "chat",
                 "--no-progress", "--set", f"output.dir={tmp_path / 'runs'}", "--set", "train.max_steps=4",
                 "--set", "eval.few_shot=1", "--set", "eval.max_new_tokens=8", "--set", "eval.general_text=null"]) == 0
    summary = json.loads((tmp_path / "runs" / "chat" / "eval" / "comparison.json").read_text())
    tuned = summary["systems"]["fine-tuned"]
    assert {"exact_match", "normalized_exact_match", "rouge_l", "reference_ppl"} <= set(tuned)
    assert tuned["reference_ppl"] > 1 and summary["forgetting"] is None


def test_test_rows_that_also_appear_in_training_are_called_out(tmp_path: Path, tiny_model_dir: Path, capsys):
    train = write_reviews_csv(tmp_path / "reviews.csv", 40, seed=1)
    assert main(["train", "--model", str(tiny_model_dir), "--data", str(train), "--test", str(train), "--text-column",
                 "review_text", "--label-column", "verdict", "--output", "leaky", "--no-progress",
                 "--set", f"output.dir={tmp_path / 'runs'}", "--set", "train.max_steps=1", "--set", "eval.few_shot=1",
                 "--set", "eval.max_rows=6", "--set", "eval.general_text=null"]) == 0
    assert "6 of 6 test rows also appear in the training data" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["movie-review-polarity"])
def test_named_dataset_splits_are_fixed_balanced_and_disjoint(name: str, capsys):
    assert main(["data", "fetch", f"{name}:test"]) == 0
    assert "(400 rows)" in capsys.readouterr().out
    from tunesmith.data.catalog import dataset_path

    test_rows = [json.loads(line) for line in dataset_path(name, "test").read_text().splitlines()]
    train_rows = [json.loads(line) for line in dataset_path(name, "train").read_text().splitlines()]
    assert len(test_rows) == 400 and len(train_rows) == 3600
    assert sum(r["label"] == "positive" for r in test_rows) == 200
    assert not {r["text"] for r in test_rows} & {r["text"] for r in train_rows}
    assert main(["data", "fetch", "movie-review-polarity:validation"]) == 2
    assert "has no split 'validation'" in capsys.readouterr().err



def test_a_system_prompt_reaches_evaluation_the_baselines_and_predict(tmp_path: Path, tiny_model_dir: Path, capsys):
    from tunesmith.config import load_config
    from tunesmith.data.tasks import LabelTask
    from tunesmith.eval.compare import answer_budget
    from tunesmith.pipeline.predict import prompts_to_predict, rows_to_predict

    system = "You sort film reviews."
    train = write_reviews_csv(tmp_path / "reviews.csv", 40, seed=1)
    test = write_reviews_csv(tmp_path / "held_out.csv", 8, seed=2)
    settings = [f"output.dir={tmp_path / 'runs'}", "train.max_steps=2", f"data.system_prompt={system}", "eval.few_shot=2",
                "eval.general_text=null", "task.label_names.positive=a warm and approving review of this film",
                "task.label_names.negative=a cold and dismissive review of this film"]  # labels of 10 tokens
    assert main(["train", "--model", str(tiny_model_dir), "--data", str(train), "--test", str(test), "--text-column",
                 "review_text", "--label-column", "verdict", "--output", "system", "--no-progress",
                 *[part for setting in settings for part in ("--set", setting)]]) == 0
    run = tmp_path / "runs" / "system"
    summary = json.loads((run / "eval" / "comparison.json").read_text())
    assert set(summary["systems"]) == {"base zero-shot", "base 2-shot", "fine-tuned"}
    for result in summary["systems"].values():  # every row scored against its gold label
        assert sum(map(sum, result["confusion"])) == 8

    unlabelled = tmp_path / "new.csv"
    with open(unlabelled, "w", newline="") as handle:
        csv.writer(handle).writerows([["review_text"], ["superb lovely film"], ["dull boring film"]])
    config, task = load_config(run / "config.yaml"), LabelTask.load(run / "task.json")
    asked = prompts_to_predict(*rows_to_predict(str(unlabelled), config.data), config.data, task)  # what predict asks
    assert asked[0].messages == (Message("system", system), Message("user", task.prompt("superb lovely film")))
    assert main(["predict", str(run), "--data", str(unlabelled), "--output", str(tmp_path / "p.csv")]) == 0
    answers = [row["answer"] for row in csv.DictReader(open(tmp_path / "p.csv"))]
    loaded = load_for_generation(str(run), precision="fp32")
    budget = answer_budget(loaded.tokenizer, task.labels, 256)  # evaluation's budget, stopping at the end of a line
    assert budget > 8
    prompts = [row.messages for row in asked]
    assert answers == generate(loaded, prompts, max_new_tokens=budget, stop_at_newline=True).texts

    # rows without the column the run reads its text from: the error says how to name it
    with open(tmp_path / "renamed.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([["review"], ["superb lovely film"]])
    capsys.readouterr()
    assert main(["predict", str(run), "--data", str(tmp_path / "renamed.csv")]) == 2
    error = capsys.readouterr().err
    assert "name it with --text-column NAME; reading text from column 'review_text'" in error


@pytest.mark.parametrize(("name", "content"), [("empty.jsonl", ""), ("blank.jsonl", "\n\n"), ("header.csv", "text\n")])
def test_predict_on_a_file_with_no_rows_is_one_line_naming_the_file(tmp_path: Path, tiny_model_dir: Path, name: str,
                                                                      content: str, capsys):
    (tmp_path / name).write_text(content)
    assert main(["predict", str(tiny_model_dir), "--data", str(tmp_path / name), "--output", str(tmp_path / "p.csv")]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and f"{tmp_path / name}: the file has no rows; add examples" in error
    assert not (tmp_path / "p.csv").exists()


def test_candidate_base_models_are_compared_on_the_same_rows_before_training(tmp_path: Path, tiny_model_dir: Path, capsys):
    import shutil

    import torch
    from transformers import AutoModelForCausalLM

    other = tmp_path / "other-tiny"
    shutil.copytree(tiny_model_dir, other)
    model = AutoModelForCausalLM.from_pretrained(other)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    model.save_pretrained(other)
    test = write_reviews_csv(tmp_path / "held_out.csv", 12, seed=2)
    shots = write_reviews_csv(tmp_path / "solved.csv", 20, seed=3)
    assert main(["compare", "--model", str(tiny_model_dir), "--model", str(other), "--data", str(test), "--shots-from",
                 str(shots), "--few-shot", "2", "--text-column", "review_text", "--label-column", "verdict"]) == 0
    out = capsys.readouterr().out
    for system in (f"{tiny_model_dir.name} zero-shot", f"{tiny_model_dir.name} 2-shot", "other-tiny zero-shot", "other-tiny 2-shot"):
        assert system in out
    assert "gain" not in out  # nothing was fine-tuned: candidates side by side, each with its interval
    assert "Best accuracy: " in out
    assert main(["compare", "--data", str(test)]) == 2


def test_rag_systems_sit_beside_the_others_on_the_same_rows(tmp_path: Path, tiny_model_dir: Path, capsys):
    train = write_reviews_csv(tmp_path / "reviews.csv", 60, seed=1)
    test = write_reviews_csv(tmp_path / "held_out.csv", 10, seed=2)
    assert main(["train", "--model", str(tiny_model_dir), "--data", str(train), "--test", str(test),
                 "--text-column", "review_text", "--label-column", "verdict", "--output", "rag", "--no-progress",
                 "--set", f"output.dir={tmp_path / 'runs'}", "--set", "train.max_steps=2", "--set", "eval.few_shot=0",
                 "--set", "eval.rag.corpus=train", "--set", "eval.rag.k=2", "--set", "eval.general_text=null"]) == 0
    run = tmp_path / "runs" / "rag"
    summary = json.loads((run / "eval" / "comparison.json").read_text())
    assert set(summary["systems"]) == {"base zero-shot", "base + RAG", "fine-tuned", "fine-tuned + RAG"}
    assert set(summary["intervals"]["gains"]) == {"base zero-shot", "base + RAG", "fine-tuned + RAG"}
    assert any("RAG systems: the 2 best chunks of train" in note for note in summary["notes"])
