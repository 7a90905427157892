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
                         f"preference.reward={reward}:score", "preference.trust_reward_code=true",
                         "preference.samples=3", "preference.prompts_per_round=4",
                         "preference.max_new_tokens=8", "data.validation_split=0.2", "eval.batch_size=4", name="online")
    result = tunesmith.train(config, show_progress=False)
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    # 4 held-out prompts before training, 3 rounds x 4 prompts x 3 samples, the 4 again at the last step,
    # then the win rate's answers of the base and the tuned model to them
    assert len(calls) == 4 + 3 * 4 * 3 + 4 + 2 * 4
    training_calls = calls[4:4 + 3 * 4 * 3]
    rounds = [json.loads(line) for f in sorted((result.run_dir / "rounds").glob("round-*.jsonl")) for line in f.read_text().splitlines()]
    assert len(rounds) == 12 and training_calls == [[r["prompt"], s["text"]] for r in rounds for s in r["samples"]]
    for row in rounds:
        scores = [s["score"] for s in row["samples"]]
        assert [s["score"] for s in row["samples"]] == [-abs(len(s["text"].split()) - 3) for s in row["samples"]]
        if row["chosen"] is not None:
            assert scores[row["chosen"]] == max(scores) and scores[row["rejected"]] == min(scores)
            assert row["chosen"] != row["rejected"]
    summary = json.loads((result.run_dir / "eval" / "preference.json").read_text())
    assert summary["prompts"] == 4 and 0.0 <= summary["win_rate"] <= 1.0


def online_config(tmp_path: Path, tiny_model_dir: Path, prompts: Path, *overrides: str, name: str = "online"):
    return tiny_config(tmp_path, tiny_model_dir, prompts, "train.method=online-dpo", "train.max_steps=4",
                       "train.eval_every=2", "preference.samples=3", "preference.prompts_per_round=4",
                       "preference.max_new_tokens=8", "data.validation_split=0.2", "eval.batch_size=4", *overrides, name=name)


WORD_COUNT_REWARD = "def score(prompt, completion):\n    return -abs(len(completion.split()) - 3)\n"


def test_online_dpo_trains_in_the_shared_loop_validates_by_greedy_reward_and_counts_sampling_time(tmp_path: Path,
                                                                                                  tiny_model_dir: Path):
    (tmp_path / "words.py").write_text(WORD_COUNT_REWARD)
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": f"Say something about {c}."} for c in COLOURS * 3])
    # fp32 training: validation then decodes as the fp32 win-rate evaluation does, so step 0's reward is the base's
    # (under bf16 autocast a random tiny model's greedy answers differ from its fp32 ones by rounding)
    result = tunesmith.train(online_config(tmp_path, tiny_model_dir, prompts, f"preference.reward={tmp_path / 'words.py'}:score",
                                           "preference.trust_reward_code=true", "train.precision=fp32"), show_progress=False)
    records = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    validations = {r["step"]: r["val_reward_mean"] for r in records if "val_reward_mean" in r}
    assert list(validations) == [0, 2, 4]  # before training, every train.eval_every steps, and at the end
    steps = [r for r in records if r["step"] > 0]
    assert [r["step"] for r in steps] == [1, 2, 3, 4] and all(r["pairs"] > 0 and "loss" in r for r in steps)
    for record in steps:  # the step's time includes its sampling
        assert record["tokens_per_s"] < record["tokens"] / record["sample_seconds"]
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["results"]["train_seconds"] >= round(sum(r["sample_seconds"] for r in steps), 1)
    assert manifest["results"]["best_step"] is None  # a reward does not pick the weights: the last step's are saved
    summary = json.loads((result.run_dir / "eval" / "preference.json").read_text())
    assert (validations[0], validations[4]) == pytest.approx((summary["base_mean_reward"], summary["tuned_mean_reward"]))
    with pytest.raises(tunesmith.errors.ConfigError, match="early_stopping_patience"):
        tunesmith.train(online_config(tmp_path, tiny_model_dir, prompts, "preference.reward=concise",
                                      "train.early_stopping_patience=2", name="stopping"), show_progress=False)


def test_online_dpo_checks_its_settings_and_prompts_before_anything_loads(tmp_path: Path, tiny_model_dir: Path):
    from tunesmith.errors import ConfigError, DataError

    rows = [{"prompt": f"Say something about {c}."} for c in COLOURS * 3]
    rows[2] = {"prompt": "Say something about " + "this colour and " * 40 + "red."}
    prompts = write_jsonl(tmp_path / "prompts.jsonl", rows)
    runs = tmp_path / "runs"
    with pytest.raises(ConfigError, match="full fine-tuning"):
        tunesmith.train(online_config(tmp_path, tiny_model_dir, prompts, "preference.reward=concise", "lora.enabled=false"),
                        show_progress=False)
    with pytest.raises(ConfigError, match="no such file"):
        tunesmith.train(online_config(tmp_path, tiny_model_dir, prompts, "preference.reward=missing.py:score",
                                      "preference.trust_reward_code=true"), show_progress=False)
    with pytest.raises(ConfigError, match="trust_reward_code"):
        tunesmith.train(online_config(tmp_path, tiny_model_dir, prompts, "preference.reward=os:system"), show_progress=False)
    with pytest.raises(DataError) as error:
        tunesmith.train(online_config(tmp_path, tiny_model_dir, prompts, "preference.reward=concise"), show_progress=False)
    assert error.value.problems[0].where == f"{prompts}:3" and len(error.value.problems) == 1
    assert "preference.max_new_tokens=8" in str(error.value) and "over data.max_length=128" in str(error.value)
    assert not runs.exists()  # every check above ran before a run folder (or a model) was made
    result = tunesmith.train(online_config(tmp_path, tiny_model_dir, prompts, "preference.reward=concise",
                                           "data.skip_invalid=true"), show_progress=False)
    played = [json.loads(line)["where"] for f in (result.run_dir / "rounds").glob("*.jsonl") for line in f.read_text().splitlines()]
    assert len(played) == 16 and f"{prompts}:3" not in played


def test_online_dpo_trains_on_the_sampled_tokens_and_a_cut_sample_has_no_end_of_turn(tmp_path: Path, tiny_model_dir: Path,
                                                                                      tokenizer):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tunesmith.data.batches import IGNORE_INDEX
    from tunesmith.data.template import analyze_template
    from tunesmith.training.checkpoint import TrainState
    from tunesmith.training.online_dpo import OnPolicyRounds, prepare_online

    (tmp_path / "words.py").write_text(WORD_COUNT_REWARD)
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": f"Say something about {c}."} for c in COLOURS])
    config = online_config(tmp_path, tiny_model_dir, prompts, f"preference.reward={tmp_path / 'words.py'}:score",
                           "preference.trust_reward_code=true", "preference.max_new_tokens=5", "preference.samples=4")
    info = analyze_template(tokenizer, 2)
    data = prepare_online(config, tokenizer, info)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                           LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"))
    rounds = OnPolicyRounds(model, data, config, tmp_path / "run", torch.device("cpu"), "fp32", tokenizer, info)
    window, metrics = rounds.next_window(TrainState())
    samples = {s["text"]: s["finish"] for line in (tmp_path / "run" / "rounds" / "round-000001.jsonl").read_text().splitlines()
               for s in json.loads(line)["samples"]}
    assert metrics["pairs"] > 0 and metrics["cut_samples"] == list(samples.values()).count("length") > 0
    trained = [row[row != IGNORE_INDEX].tolist() for batch in window for row in batch.sequences.labels]
    assert len(trained) == 2 * metrics["pairs"]
    for tokens in trained:
        text = tokenizer.decode(tokens, skip_special_tokens=True).strip()
        if samples[text] == "length":  # cut at max_new_tokens: exactly the 5 sampled tokens, no end of turn after them
            assert len(tokens) == 5 and tokens[-1] not in info.stop_token_ids
        else:
            assert tokens[-1] in info.stop_token_ids


def test_builtin_concise_reward_is_the_documented_rule():
    from tunesmith.training.rewards import load_reward

    reward = load_reward("concise")
    assert reward(["q"] * 4, ["", "one two", " ".join(["w"] * 30), " ".join(["w"] * 60)], [None] * 4,
                  [f"p.jsonl:{n}" for n in range(4)]) == [-1.0, 1.0, 0.8, 0.0]


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
