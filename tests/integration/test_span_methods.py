"""Token classification (NER) and extractive QA on tiny models, end to end: train, save the head with
its label map, evaluate beside the prompted base model, predict; and resume after SIGKILL."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import tunesmith
from tests.integration.helpers import max_difference, tiny_config, weights
from tunesmith.cli import main

PEOPLE = ["John Smith", "Mary Jones", "Ali Khan", "Wei Chen", "Anna Berg", "Tom Reed"]
PLACES = ["Paris", "New York", "Berlin", "Lagos", "Lima", "Oslo"]
ORGS = ["Acme Corp", "United Nations", "Red Cross"]
SENTENCES = ["{p} flew to {l} on Monday .", "{o} opened an office in {l} .", "{p} works for {o} .",
             "Yesterday {p} met {q} in {l} .", "The weather was fine ."]


def write_conll(path: Path, count: int, seed: int) -> Path:
    """Sentences with PER/LOC/ORG entities, one token and its BIO tag per line."""
    rng = random.Random(seed)
    kinds = {"p": ("PER", PEOPLE), "q": ("PER", PEOPLE), "l": ("LOC", PLACES), "o": ("ORG", ORGS)}
    lines = ["-DOCSTART- O", ""]
    for _ in range(count):
        for word in rng.choice(SENTENCES).split():
            if word.startswith("{"):
                kind, names = kinds[word[1]]
                lines += [f"{token} {'B' if n == 0 else 'I'}-{kind}" for n, token in enumerate(rng.choice(names).split())]
            else:
                lines.append(f"{word} O")
        lines.append("")
    path.write_text("\n".join(lines) + "\n")
    return path


def write_squad(path: Path, count: int, seed: int, *, unanswerable_every: int = 0) -> Path:
    """Short contexts with filler sentences; questions on where someone lives or what they do."""
    rng = random.Random(seed)
    names, towns, jobs = ["Mara", "Tobin", "Elsa", "Quill", "Rafe", "Ines"], ["Vesk", "Orlan", "Pym", "Cadda"], ["baker", "pilot", "doctor"]
    rows = []
    for number in range(count):
        name, town, job = rng.choice(names), rng.choice(towns), rng.choice(jobs)
        filler = " ".join(rng.choice(["It rained.", "The market was busy.", "Birds sang."]) for _ in range(rng.randint(0, 5)))
        context = f"{filler} {name} lives in {town} and works as a {job}. {filler}".strip()
        question, answer = rng.choice([(f"Where does {name} live?", town), (f"What does {name} work as?", f"a {job}")])
        if unanswerable_every and number % unanswerable_every == 0:
            question, answer = f"Where was {name} born?", None
        rows.append({"id": str(number), "context": context, "question": question,
                     "answers": {"text": [answer] if answer else [], "answer_start": [context.index(answer)] if answer else []}})
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.mark.parametrize("body", ["encoder", "causal"])
def test_a_tagger_trains_saves_its_tags_beats_nothing_and_predicts_spans(tmp_path: Path, tiny_wordpiece_bert_dir: Path,
                                                                         tiny_model_dir: Path, body: str):
    from transformers import AutoModelForTokenClassification

    model_dir = tiny_wordpiece_bert_dir if body == "encoder" else tiny_model_dir
    train, test = write_conll(tmp_path / "train.conll", 120, seed=1), write_conll(tmp_path / "test.conll", 16, seed=2)
    config = tiny_config(tmp_path, model_dir, train, "train.method=token-classify", f"eval.test={test}",
                         f"eval.prompt_model={tiny_model_dir}", "eval.few_shot=1", "eval.max_new_tokens=12",
                         "eval.resamples=200", "train.max_steps=16", "train.learning_rate=5e-3", name=f"ner-{body}")
    result = tunesmith.train(config, show_progress=False)
    run = result.run_dir
    assert result.val_loss < result.baseline_val_loss
    tagger = AutoModelForTokenClassification.from_pretrained(run / "model")
    assert list(tagger.config.id2label.values()) == ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["method"] == "token-classify" and manifest["task"]["tags"][0] == "O"

    summary = json.loads((run / "eval" / "comparison.json").read_text())
    assert summary["task"] == "entities" and summary["rows"] == 16
    assert set(summary["systems"]) == {"fine-tuned", "base zero-shot", "base 1-shot"}
    gain = summary["intervals"]["gains"]["base zero-shot"]["micro_f1"]
    assert gain["low"] <= gain["estimate"] <= gain["high"]
    predictions = [json.loads(line) for line in (run / "eval" / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 16 and "base 1-shot reply" in predictions[0]
    assert "## Fine-tuned vs prompting the base model" in (run / "report.md").read_text()

    (tmp_path / "new.jsonl").write_text(json.dumps({"text": "Wei Chen flew to Lima on Monday ."}) + "\n")
    assert main(["predict", str(run), "--data", str(tmp_path / "new.jsonl"), "--output", str(tmp_path / "p.jsonl")]) == 0
    row = json.loads((tmp_path / "p.jsonl").read_text())
    for entity in row["entities"]:  # whatever a briefly trained tagger finds is a typed span of the text
        assert row["text"][entity["start"]:entity["end"]] == entity["text"] and entity["label"] in ("PER", "LOC", "ORG")
        assert 0 < entity["score"] <= 1


def test_a_reader_trains_answers_from_the_context_and_predicts(tmp_path: Path, tiny_wordpiece_bert_dir: Path, tiny_model_dir: Path):
    from transformers import AutoModelForQuestionAnswering

    train = write_squad(tmp_path / "train.jsonl", 120, seed=1, unanswerable_every=6)
    test = write_squad(tmp_path / "test.jsonl", 12, seed=2, unanswerable_every=6)
    config = tiny_config(tmp_path, tiny_wordpiece_bert_dir, train, "train.method=extractive-qa", "data.max_length=48",
                         "data.stride=16", f"eval.test={test}", f"eval.prompt_model={tiny_model_dir}", "eval.few_shot=0",
                         "eval.max_new_tokens=8", "eval.resamples=200", "train.max_steps=16", "train.learning_rate=5e-3",
                         name="qa")
    result = tunesmith.train(config, show_progress=False)
    run = result.run_dir
    assert result.val_loss < result.baseline_val_loss
    AutoModelForQuestionAnswering.from_pretrained(run / "model")  # a plain transformers QA model
    manifest = json.loads((run / "manifest.json").read_text())
    task = manifest["task"]
    assert {k: task[k] for k in ("type", "unanswerable", "stride", "max_answer_tokens")} == \
        {"type": "spans", "unanswerable": True, "stride": 16, "max_answer_tokens": 30}
    # tuned on half the validation questions, its F1 read on the other half (contexts apart)
    assert isinstance(task["null_threshold"], float) and 0 <= task["validation_f1"] <= 1
    assert task["null_threshold_rows"] > 0 and task["validation_f1_rows"] > 0 and 0 <= task["null_threshold_tuning_f1"] <= 1
    assert manifest["data"]["validation"]["examples"] > 0

    summary = json.loads((run / "eval" / "comparison.json").read_text())
    assert set(summary["systems"]) == {"fine-tuned", "base zero-shot"}
    assert {"exact_match", "f1", "no_answer_accuracy"} <= set(summary["systems"]["fine-tuned"])

    assert main(["predict", str(run), "--data", str(test), "--output", str(tmp_path / "answers.jsonl")]) == 0
    contexts = {json.loads(line)["id"]: json.loads(line)["context"] for line in test.read_text().splitlines()}
    for line in (tmp_path / "answers.jsonl").read_text().splitlines():
        answer = json.loads(line)
        if answer["answer"]:  # a span of its own context, where it says
            assert contexts[answer["id"]][answer["start"]:answer["start"] + len(answer["answer"])] == answer["answer"]
        else:
            assert answer["start"] == -1


SETTINGS = ["train.max_steps=40", "train.save_every=5", "train.eval_every=10", "train.batch_size=2",
            "train.gradient_accumulation=2", "lora.dropout=0.1", "train.warmup_ratio=0.1", "train.keep_checkpoints=2"]


@pytest.mark.parametrize("method", ["token-classify", "extractive-qa"])
def test_span_methods_resume_after_sigkill_to_the_same_weights(tmp_path: Path, tiny_wordpiece_bert_dir: Path, method: str):
    from tests.integration.helpers import cli_args

    data = write_conll(tmp_path / "rows.conll", 80, seed=3) if method == "token-classify" else \
        write_squad(tmp_path / "rows.jsonl", 80, seed=3, unanswerable_every=5)
    settings = [*SETTINGS, f"train.method={method}", "data.max_length=48", "data.stride=16"]

    def command(name: str) -> list[str]:
        return [sys.executable, "-m", "tunesmith.cli", *cli_args(tmp_path, tiny_wordpiece_bert_dir, data, *settings, name=name)]

    reference = subprocess.run(command("reference"), capture_output=True, text=True, timeout=600)
    assert reference.returncode == 0, reference.stderr[-2000:]
    run = tmp_path / "runs" / "killed"
    process = subprocess.Popen(command("killed"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (run / "checkpoints" / "step-0000010").exists():
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, "no checkpoint appeared in time"
        time.sleep(0.002)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    assert not (run / "manifest.json").exists()  # it died mid-run

    resumed = subprocess.run([*command("killed"), "--resume"], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from step-" in resumed.stderr
    adapter = "adapter/adapter_model.safetensors"  # the LoRA weights and the head trained in full
    assert max_difference(weights(tmp_path / "runs" / "reference" / adapter), weights(run / adapter)) < 1e-6
