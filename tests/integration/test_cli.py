"""The command line as a user meets it: one-line errors, a full data report, train -> generate."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import chat_rows, write_jsonl
from tests.integration.helpers import cli_args
from tunesmith.cli import main

U = {"role": "user", "content": "What is the capital of France?"}
A = {"role": "assistant", "content": "Paris."}

# (line content, what the report must say about that line)
MISTAKES = [
    ('{"messages": [', "invalid JSON"),
    ("[1, 2, 3]", "not an object"),
    ({"question": "q", "answer": "a"}, "missing field 'messages' for chat rows (the row has fields question, answer)"),
    ({"messages": [U, U, A]}, "message 2 is 'user' after 'user'"),
    ({"messages": [U, {"role": "assistant", "content": ""}]}, "empty assistant turn"),
    ({"messages": [U, A, U]}, "does not end with an assistant reply"),
    ({"messages": [U, {"role": "robot", "content": "x"}]}, "role 'robot'"),
    ({"messages": [U, {"role": "assistant"}]}, "has no 'content'"),
    ({"messages": [U, {"role": "assistant", "content": {"text": "x"}}]}, "content is a dict"),
    ({"messages": [U, {"role": "assistant", "content": "word " * 200}]}, "over data.max_length=64"),
    ({"messages": [A, U, A]}, "start the conversation with a user message"),
    ({"messages": [U, A, {"role": "system", "content": "s"}, U, A]}, "system message after the conversation started"),
    ({"messages": [{"role": "user", "content": " "}, A]}, "empty user message"),
]


def test_a_file_with_a_dozen_mistakes_gets_one_report_naming_each_line(tmp_path: Path, tiny_model_dir: Path):
    rows: list = []
    expected = {}
    for content, message in MISTAKES:
        rows.append({"messages": [U, A]})  # a valid row between each mistake
        rows.append(content)
        expected[len(rows)] = message
    data = write_jsonl(tmp_path / "mistakes.jsonl", rows)
    result = subprocess.run([sys.executable, "-m", "tunesmith.cli", "data", "validate", str(data), "--model",
                             str(tiny_model_dir), "--set", "data.max_length=64"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    report = result.stderr
    assert f"{len(MISTAKES)} problems in {len(MISTAKES)} of {len(rows)} rows" in report
    for line, message in expected.items():
        matching = [text for text in report.splitlines() if text.startswith(f"{data}:{line}: ")]
        assert matching and message in matching[0], (line, message, matching)
        assert "; " in matching[0]  # and says what to do


def test_training_with_flags_only_then_generate_and_inspect(tmp_path: Path, tiny_model_dir: Path, capsys):
    data = write_jsonl(tmp_path / "chat.jsonl", chat_rows(24))
    assert main(cli_args(tmp_path, tiny_model_dir, data, "train.max_steps=2", name="cli-run")) == 0
    out = capsys.readouterr().out
    run = tmp_path / "runs" / "cli-run"
    assert f"run folder: {run}" in out and (run / "model" / "config.json").is_file()

    assert main(["generate", str(run), "--prompt", "Hello", "--prompt", "Repeat red", "--max-new-tokens", "4"]) == 0
    assert out.count(">>> ") == 0 and capsys.readouterr().out.count(">>> ") == 2

    assert main(["data", "inspect", str(data), "--model", str(tiny_model_dir), "--rows", "1", "--table"]) == 0
    shown = capsys.readouterr().out
    assert "24 rows, format chat, 24 usable" in shown and "<|im_end|>" in shown and " yes " in shown


@pytest.mark.parametrize(("argv", "message"), [
    (["train", "--data", "x.jsonl", "--set", "train.learning_rat=1"], "unknown setting 'train.learning_rat'; did you mean 'train.learning_rate'?"),
    (["train", "--data", "missing.jsonl", "--model", "not-a-model"], "not-a-model: not a catalog name"),
    (["generate", "HuggingFaceTB/No-Such-Model-Here", "--prompt", "hi"], "Hugging Face Hub is unreachable"),
    (["train", "missing.yaml"], "missing.yaml: no such config file"),
])
def test_errors_are_one_line_naming_the_input_and_the_fix(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err
    assert len(err.splitlines()) == 1


def test_settings_and_models_are_listed(capsys):
    assert main(["settings"]) == 0
    settings = capsys.readouterr().out
    assert "train.learning_rate  (default unset)" in settings and "lora.rank  (default 16)" in settings
    assert main(["models"]) == 0
    assert "smollm2-135m-instruct" in capsys.readouterr().out
    assert main(["data", "list"]) == 0
    assert "alpaca-demo" in capsys.readouterr().out


def test_yaml_config_with_set_override(tmp_path: Path, tiny_model_dir: Path):
    data = write_jsonl(tmp_path / "chat.jsonl", chat_rows(16))
    config = tmp_path / "run.yaml"
    config.write_text(f"model: {tiny_model_dir}\ndata:\n  train: {data}\n  max_length: 128\n"
                      f"train:\n  max_steps: 5\n  learning_rate: 0.01\noutput:\n  dir: {tmp_path / 'runs'}\n  name: yaml-run\n")
    assert main(["train", str(config), "--set", "train.max_steps=2", "--no-progress"]) == 0
    manifest = json.loads((tmp_path / "runs" / "yaml-run" / "manifest.json").read_text())
    assert manifest["results"]["steps"] == 2
    assert manifest["config"]["train"]["learning_rate"] == 0.01


def test_chat_keeps_the_conversation_and_quits_on_an_empty_line(tmp_path: Path, tiny_model_dir: Path):
    typed = "Repeat the word red 2 times.\n/reset\nRepeat the word blue 1 times.\n\n"
    result = subprocess.run([sys.executable, "-m", "tunesmith.cli", "chat", str(tiny_model_dir), "--max-new-tokens", "3"],
                            input=typed, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("model> ") == 2
    assert result.stdout.count("you> ") == 4
