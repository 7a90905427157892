"""Tool use end to end on the tiny model: train on the shipped tool task (OpenAI chat rows with tools
and tool calls) through the default template, then the comparison scores base zero-shot, base
1-shot and fine-tuned turn by turn and end to end, with intervals, in eval/ and the report."""

from __future__ import annotations

import json
from pathlib import Path

from tunesmith.cli import main
from tunesmith.data.tool_task import tool_tasks
from tunesmith.eval.tool_calls import reference_turns


def test_training_on_tool_rows_reports_calls_arguments_and_end_to_end(tmp_path: Path, tiny_model_dir: Path, capsys):
    rows = 5
    assert main(["train", "--model", str(tiny_model_dir), "--data", "tool-tasks:train", "--test", "tool-tasks:test",
                 "--output", "tools", "--no-progress", "--set", f"output.dir={tmp_path / 'runs'}",
                 "--set", "train.max_steps=2", "--set", "train.batch_size=2", "--set", "data.validation_split=0.02",
                 "--set", f"eval.max_rows={rows}", "--set", "eval.few_shot=1", "--set", "eval.max_new_tokens=12",
                 "--set", "eval.general_text=null", "--set", "data.audit=off"]) == 0
    captured = capsys.readouterr()
    run = tmp_path / "runs" / "tools"
    # the tiny model's own template (SmolLM2's) drops tools, so the run trained through tunesmith's default
    assert "<tools>" in (run / "model" / "chat_template.jinja").read_text()
    summary = json.loads((run / "eval" / "comparison.json").read_text())
    assert summary["kind"] == "tools" and summary["rows"] == rows
    assert list(summary["systems"]) == ["base zero-shot", "base 1-shot", "fine-tuned"]
    predictions = [json.loads(line) for line in (run / "eval" / "predictions.jsonl").read_text().splitlines()]
    asked = {int(p["where"].rsplit(":", 1)[1]) for p in predictions}  # eval.max_rows: a seeded sample of the rows
    turns = sum(len(reference_turns(row)) for line, row in enumerate(tool_tasks()["test"], start=1) if line in asked)
    for name, system in summary["systems"].items():
        for metric in ("call_accuracy", "arguments_exact", "right", "calls_right", "answer_right"):
            assert 0.0 <= system[metric] <= 1.0
            interval = summary["intervals"]["systems"][name][metric]
            assert interval["low"] <= system[metric] <= interval["high"]
        # call accuracy is a share of the turns, end to end of the rows
        assert round(system["call_accuracy"] * turns) == system["call_accuracy"] * turns
        assert round(system["right"] * rows) == system["right"] * rows
    gain = summary["intervals"]["gains"]["base zero-shot"]["right"]
    assert gain["estimate"] == summary["systems"]["fine-tuned"]["right"] - summary["systems"]["base zero-shot"]["right"]
    assert len(predictions) == rows and set(predictions[0]) == {"where", "base zero-shot", "base 1-shot", "fine-tuned"}
    report = (run / "report.md").read_text()
    assert "## Tool use: fine-tuned vs prompting the base model" in report and "end to end [95%]" in report
    assert "end to end [95%]" in captured.out and "fine-tuned gain (end to end)" in captured.out
    assert captured.err.count("tunesmith: evaluating fine-tuned: ") == 1
