"""Offline DPO and on-policy preference tuning on the tiny model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import tunesmith
from tests.conftest import write_jsonl
from tests.integration.helpers import cli_args, max_difference, tiny_config, weights

COLOURS = ["red", "green", "blue", "yellow", "purple", "orange"]


def preference_rows(count: int) -> list[dict]:
    return [{"prompt": f"Name a colour, number {n}.", "chosen": COLOURS[n % 6], "rejected": f"{COLOURS[(n + 1) % 6]} and more words"}
            for n in range(count)]


def test_reference_pass_equals_the_forward_pass_with_the_adapter_off(tiny_model_dir: Path, tokenizer):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tunesmith.data.examples import Example
    from tunesmith.data.template import analyze_template
    from tunesmith.training.loss import sequence_log_probs
    from tunesmith.training.preference import collate_pairs, reference_table, tokenize_pairs

    info = analyze_template(tokenizer, 2)
    rows = [Example("p", n, "preference", messages=(tunesmith.data.examples.Message("user", r["prompt"]),),
                    chosen=r["chosen"], rejected=r["rejected"]) for n, r in enumerate(preference_rows(5))]
    pairs, _ = tokenize_pairs(rows, tokenizer, info, 128, False, first_key=0)
    config = tunesmith.build_config({"train": {"batch_size": 2}, "data": {"max_length": 128}})
    plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    lora = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                          LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, parameter in lora.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)  # the adapter now changes the output
    table = reference_table(lora, pairs, config, torch.device("cpu"), "fp32", tokenizer.pad_token_id)
    with torch.no_grad():
        batch = collate_pairs(pairs, [[i] for i in range(5)], tokenizer.pad_token_id)
        expected, _ = sequence_log_probs(plain, batch.sequences)
        with_adapter, _ = sequence_log_probs(lora, batch.sequences)
    assert torch.allclose(table[:, 0], expected[:5], atol=1e-4) and torch.allclose(table[:, 1], expected[5:], atol=1e-4)
    assert not torch.allclose(with_adapter, expected, atol=1e-2)  # the adapter was really switched off


def test_offline_dpo_learns_the_preference_and_reports_held_out_accuracy(tmp_path: Path, tiny_model_dir: Path):
    data = write_jsonl(tmp_path / "pairs.jsonl", preference_rows(60))
    config = tiny_config(tmp_path, tiny_model_dir, data, "train.method=dpo", "train.max_steps=12", "train.eval_every=6",
                         "train.learning_rate=5e-3", "preference.beta=0.5", name="dpo")
    result = tunesmith.train(config, show_progress=False)
    records = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    assert {"reward_accuracy", "reward_margin", "drift", "likelihood_accuracy"} <= set(steps[0])
    assert steps[0]["drift"] == pytest.approx(0.0, abs=1e-3)  # the first step starts from the reference
    summary = json.loads((result.run_dir / "eval" / "preference.json").read_text())
    assert summary["reward_accuracy"]["before"] == 0.5  # every margin is zero before training
    assert summary["reward_accuracy"]["after"] > 0.8
    assert "## Preferences" in (result.run_dir / "report.md").read_text()


def test_dpo_reports_the_held_out_figures_of_the_weights_it_saved(tmp_path: Path, tiny_model_dir: Path):
    # Early stopping after the first evaluation that does not improve by 100 (none can): the run
    # stops at step 6 and keeps the weights of step 3, its best validation loss.
    data = write_jsonl(tmp_path / "pairs.jsonl", preference_rows(60))
    config = tiny_config(tmp_path, tiny_model_dir, data, "train.method=dpo", "train.max_steps=12", "train.eval_every=3",
                         "train.learning_rate=5e-3", "preference.beta=0.5", "train.early_stopping_patience=1",
                         "train.early_stopping_min_delta=100", name="dpo-best")
    result = tunesmith.train(config, show_progress=False)
    assert (result.best_step, result.steps) == (3, 6)
    evaluations = {r["step"]: r for r in map(json.loads, (result.run_dir / "metrics.jsonl").read_text().splitlines())
                   if "val_reward_accuracy" in r}
    summary = json.loads((result.run_dir / "eval" / "preference.json").read_text())
    assert summary["held_out_pairs_step"] == [0, 3]
    for name in ("reward_accuracy", "likelihood_accuracy", "reward_margin"):
        assert summary[name] == {"before": evaluations[0][f"val_{name}"], "after": evaluations[3][f"val_{name}"]}
    assert evaluations[6]["val_reward_margin"] != evaluations[3]["val_reward_margin"]  # the last step's would differ


def test_full_fine_tuning_dpo_keeps_the_starting_weights_reference_in_the_run_folder(tmp_path: Path, tiny_model_dir: Path):
    data = write_jsonl(tmp_path / "pairs.jsonl", preference_rows(24))
    result = tunesmith.train(tiny_config(tmp_path, tiny_model_dir, data, "train.method=dpo", "lora.enabled=false",
                                         "train.max_steps=3", "train.learning_rate=1e-4", name="dpo-full"), show_progress=False)
    assert (result.run_dir / "reference_logps.safetensors").is_file()
    records = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
    assert records[0]["drift"] == pytest.approx(0.0, abs=1e-3)


def test_simpo_needs_no_reference(tmp_path: Path, tiny_model_dir: Path):
    data = write_jsonl(tmp_path / "pairs.jsonl", preference_rows(24))
    result = tunesmith.train(tiny_config(tmp_path, tiny_model_dir, data, "train.method=dpo", "preference.loss=simpo",
                                         "preference.beta=2.0", "train.max_steps=3", name="simpo"), show_progress=False)
    assert not (result.run_dir / "reference_logps.safetensors").exists()
    assert (result.run_dir / "adapter" / "adapter_model.safetensors").is_file()


REWARD_FILE = '''
import json, os
def score(prompt, completion):
    with open(os.environ["REWARD_LOG"], "a") as log:
        log.write(json.dumps([prompt, completion]) + "\\n")
    return -abs(len(completion.split()) - 3)
'''


def test_online_dpo_calls_the_configured_reward_and_pairs_by_its_scores(tmp_path: Path, tiny_model_dir: Path, monkeypatch):
    reward = tmp_path / "my_reward.py"
    reward.write_text(REWARD_FILE)
    log = tmp_path / "calls.jsonl"
    monkeypatch.setenv("REWARD_LOG", str(log))
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": f"Say something about {c}."} for c in COLOURS * 3])
    config = tiny_config(tmp_path, tiny_model_dir, prompts, "train.method=online-dpo", "train.max_steps=3",
                         f"preference.reward={reward}:score", "preference.samples=3", "preference.prompts_per_round=4",
                         "preference.max_new_tokens=8", "data.validation_split=0.2", "eval.batch_size=4", name="online")
    result = tunesmith.train(config, show_progress=False)
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    training_calls = calls[:3 * 4 * 3]  # 3 rounds x 4 prompts x 3 samples, then the win-rate answers
    rounds = [json.loads(line) for f in sorted((result.run_dir / "rounds").glob("round-*.jsonl")) for line in f.read_text().splitlines()]
    assert len(rounds) == 12 and len(training_calls) == 36
    for row in rounds:
        scores = [s["score"] for s in row["samples"]]
        assert [s["score"] for s in row["samples"]] == [-abs(len(s["text"].split()) - 3) for s in row["samples"]]
        if row["chosen"] is not None:
            assert scores[row["chosen"]] == max(scores) and scores[row["rejected"]] == min(scores)
            assert row["chosen"] != row["rejected"]
    summary = json.loads((result.run_dir / "eval" / "preference.json").read_text())
    assert summary["prompts"] == 4 and 0.0 <= summary["win_rate"] <= 1.0


def test_builtin_concise_reward_is_the_documented_rule():
    from tunesmith.training.rewards import load_reward

    reward = load_reward("concise")
    assert reward(["q"] * 4, ["", "one two", " ".join(["w"] * 30), " ".join(["w"] * 60)], [None] * 4) == [-1.0, 1.0, 0.8, 0.0]


@pytest.mark.parametrize("method", ["dpo", "online-dpo"])
def test_preference_runs_resume_after_sigkill_to_the_same_weights(tmp_path: Path, tiny_model_dir: Path, method: str):
    if method == "dpo":
        data = write_jsonl(tmp_path / "pairs.jsonl", preference_rows(120))
        settings = ["train.method=dpo", "train.max_steps=40", "train.save_every=5", "train.batch_size=2"]
    else:
        data = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": f"Say something about {c}."} for c in COLOURS * 4])
        settings = ["train.method=online-dpo", "train.max_steps=12", "train.save_every=2", "preference.reward=concise",
                    "preference.samples=2", "preference.prompts_per_round=2", "preference.max_new_tokens=6",
                    "preference.temperature=1.5", "eval.batch_size=8"]
    command = [sys.executable, "-m", "tunesmith.cli"]
    reference = subprocess.run(command + cli_args(tmp_path, tiny_model_dir, data, *settings, name="reference"),
                               capture_output=True, text=True, timeout=600)
    assert reference.returncode == 0, reference.stderr[-3000:]
    args = cli_args(tmp_path, tiny_model_dir, data, *settings, name="killed")
    process = subprocess.Popen(command + args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = tmp_path / "runs" / "killed" / "checkpoints" / ("step-0000010" if method == "dpo" else "step-0000004")
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.002)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    resumed = subprocess.run(command + args + ["--resume"], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    adapter = "adapter/adapter_model.safetensors"
    assert max_difference(weights(tmp_path / "runs" / "reference" / adapter), weights(tmp_path / "runs" / "killed" / adapter)) < 1e-5
