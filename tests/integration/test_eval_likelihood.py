"""eval.scoring=likelihood, the fast comparison the demo runs: every system scored by the most likely
label, the fine-tuned model generating every answer and each baseline a seeded sample. Its scores
must be the likelihood scores of the full comparison (scoring=both) on the same run, and its
generated answers the same answers; one line per stage when the output is not a terminal."""

from __future__ import annotations

import json
from pathlib import Path

from tests.integration.test_eval import write_reviews_csv
from tunesmith.cli import main
from tunesmith.config import EvalConfig
from tunesmith.pipeline.evaluate import evaluate_run


def _compare(run: Path, test: Path, scoring: str, capsys) -> tuple[dict, list[dict], str, str]:
    settings = EvalConfig(few_shot=2, few_shot_selection="fixed", scoring=scoring, generate_sample=5, general_text=None)
    evaluate_run(run, str(test), settings, columns={"text": "review_text", "label": "verdict"})
    captured = capsys.readouterr()
    summary = json.loads((run / "eval" / "comparison.json").read_text())
    rows = [json.loads(line) for line in (run / "eval" / "predictions.jsonl").read_text().splitlines()]
    return summary, rows, captured.out, captured.err


def test_likelihood_scoring_equals_the_full_comparisons_likelihood_scores(tmp_path: Path, tiny_model_dir: Path, capsys):
    train = write_reviews_csv(tmp_path / "reviews.csv", 80, seed=1)
    test = write_reviews_csv(tmp_path / "held_out.csv", 16, seed=2)
    assert main(["train", "--model", str(tiny_model_dir), "--data", str(train), "--text-column", "review_text",
                 "--label-column", "verdict", "--output", "reviews", "--no-progress",
                 "--set", f"output.dir={tmp_path / 'runs'}", "--set", "train.max_steps=4",
                 "--set", "train.learning_rate=2e-2", "--set", "eval.general_text=null"]) == 0
    run = tmp_path / "runs" / "reviews"
    capsys.readouterr()
    full, full_rows, _, _ = _compare(run, test, "both", capsys)
    fast, fast_rows, out, err = _compare(run, test, "likelihood", capsys)

    names = {"base zero-shot", "base 2-shot", "fine-tuned"}
    assert set(fast["systems"]) == names
    for name in names:  # the same most likely labels, so the same scores and intervals
        assert fast["systems"][name]["accuracy"] == full["systems"][name]["likelihood_accuracy"]
        assert fast["systems"][name]["macro_f1"] == full["systems"][name]["likelihood_macro_f1"]
        assert fast["intervals"]["systems"][name]["accuracy"] == full["intervals"]["systems"][name]["likelihood_accuracy"]
    assert fast["intervals"]["gains"]["base zero-shot"]["accuracy"] == \
        full["intervals"]["gains"]["base zero-shot"]["likelihood_accuracy"]

    # the fine-tuned model generates every answer; each baseline 5 seeded rows, the same ones; the
    # generated answers are the full comparison's, and the agreement is counted from them
    assert all("fine-tuned" in row for row in fast_rows)
    sampled = [n for n, row in enumerate(fast_rows) if "base zero-shot" in row]
    assert len(sampled) == 5 and sampled == [n for n, row in enumerate(fast_rows) if "base 2-shot" in row]
    for name in names:
        generated = [n for n, row in enumerate(fast_rows) if name in row]
        assert all(fast_rows[n][name] == full_rows[n][name] for n in generated)
        agree = sum(full_rows[n][f"{name} label"] == full_rows[n][f"{name} most likely label"] for n in generated)
        assert fast["systems"][name]["generated_agree"] == agree
        assert fast["systems"][name]["generated_rows"] == len(generated)
    assert fast["systems"]["fine-tuned"]["generated_accuracy"] == full["systems"]["fine-tuned"]["accuracy"]

    # one table with the agreement column and one sentence of verdict; one line per stage on stderr
    assert "generated = most likely" in out and f"{fast['systems']['base zero-shot']['generated_agree']}/5" in out
    assert out.count("The accuracy gain of fine-tuned over the best baseline") == 1
    for name in names:
        assert err.count(f"tunesmith: evaluating {name}: ") == 1
