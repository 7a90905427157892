"""GRPO on the tiny model: the per-step records, the KL and the clip at the sampling policy, settings
refused before anything loads, and a run killed within a rollout resuming to the same weights."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import tunesmith
from tests.conftest import write_jsonl
from tests.integration.helpers import cli_args, max_difference, tiny_config, weights

COLOURS = ["red", "green", "blue", "yellow", "purple", "orange"]
WORD_COUNT_REWARD = "def score(prompt, completion):\n    return -abs(len(completion.split()) - 3)\n"
GRPO = ["train.method=grpo", "grpo.group_size=4", "grpo.prompts_per_step=2", "grpo.max_new_tokens=8",
        "data.validation_split=0.2", "eval.batch_size=4", "preference.trust_reward_code=true"]


def prompts_file(tmp_path: Path, copies: int = 3) -> Path:
    (tmp_path / "words.py").write_text(WORD_COUNT_REWARD)
    return write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": f"Say something about {c}."} for c in COLOURS * copies])


def test_grpo_records_each_step_and_starts_with_no_kl_and_nothing_clipped(tmp_path: Path, tiny_model_dir: Path):
    prompts = prompts_file(tmp_path)
    config = tiny_config(tmp_path, tiny_model_dir, prompts, *GRPO, f"preference.reward={tmp_path / 'words.py'}:score",
                         "grpo.epochs=2", "grpo.beta=0.04", "train.max_steps=4", "train.eval_every=2",
                         "train.precision=fp32", name="grpo")
    result = tunesmith.train(config, show_progress=False)
    records = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = {r["step"]: r for r in records if r["step"] > 0}
    assert list(steps) == [1, 2, 3, 4] and [steps[s]["inner_epoch"] for s in steps] == [1, 2, 1, 2]
    for step in (1, 3):  # a rollout's first step: what it records of the rollout
        record = steps[step]
        for key in ("reward_mean", "reward_std", "completion_length_mean", "no_signal_share", "kl", "clip_fraction", "loss"):
            assert key in record, key
        assert 0.0 <= record["no_signal_share"] <= 1.0 and 1 <= record["completion_length_mean"] <= 8
        assert record["clip_fraction"] == 0.0  # the policy is the sampling policy: the ratio is exactly 1
    assert steps[1]["kl"] == 0.0  # LoRA's B starts at zero: the policy is the reference, to the bit
    assert steps[2]["kl"] > 0.0  # after one update it is not
    rounds = sorted((result.run_dir / "rounds").glob("round-*.jsonl"))
    assert [f.name for f in rounds] == ["round-000001.jsonl", "round-000003.jsonl"]  # a rollout feeds 2 steps
    for line in rounds[0].read_text().splitlines():
        samples = json.loads(line)["samples"]
        assert len(samples) == 4 and abs(sum(s["advantage"] for s in samples)) < 1e-5
        assert [s["score"] for s in samples] == [-abs(len(s["text"].split()) - 3) for s in samples]
    validations = [r["step"] for r in records if "val_reward_mean" in r]
    assert validations == [0, 2, 4]


COLOUR_GRADER = {
    "type": "multi", "name": "colour", "calculate_output": "0.7 * named + 0.3 * short",
    "graders": {
        "named": {"type": "string_check", "name": "named", "operation": "ilike",
                  "input": "{{ sample.output_text }}", "reference": "{{ item.colour }}"},
        "short": {"type": "text_similarity", "name": "short", "evaluation_metric": "fuzzy_match",
                  "input": "{{ sample.output_text }}", "reference": "{{ item.colour }} is a colour"},
    },
}


def rft_rows(tmp_path: Path) -> Path:
    """OpenAI's reinforcement rows: chat messages ending with the user's turn, and a field the grader reads."""
    return write_jsonl(tmp_path / "rft.jsonl", [{"messages": [{"role": "user", "content": f"Name a thing that is {c}."}],
                                                "colour": c} for c in COLOURS * 3])


def test_grpo_rewards_each_sample_with_an_openai_grader_reading_its_rows_fields(tmp_path: Path, tiny_model_dir: Path):
    from tunesmith.graders import run_grader

    rows = rft_rows(tmp_path)
    config = tiny_config(tmp_path, tiny_model_dir, rows, *GRPO[:-1], f"grpo.grader={json.dumps(COLOUR_GRADER)}",
                         "train.max_steps=2", "train.precision=fp32", name="grader")
    result = tunesmith.train(config, show_progress=False)
    by_line = {n: json.loads(line)["colour"] for n, line in enumerate(rows.read_text().splitlines(), start=1)}
    scored = 0
    for path in sorted((result.run_dir / "rounds").glob("round-*.jsonl")):
        for line in path.read_text().splitlines():
            round_row = json.loads(line)
            item = {"messages": [{"role": "user", "content": round_row["prompt"]}],
                    "colour": by_line[int(round_row["where"].rsplit(":", 1)[1])]}
            for sample in round_row["samples"]:  # each reward is what OpenAI's grader run gives that sample
                assert sample["score"] == pytest.approx(run_grader(COLOUR_GRADER, sample=sample["text"], item=item)["reward"])
                scored += 1
    assert scored == 2 * 2 * 4
    records = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    first = next(r for r in records if r["step"] == 1)
    assert first["reward_mean"] == pytest.approx(0.7 * first["reward_named"] + 0.3 * first["reward_short"])
    assert first["ungraded_samples"] == 0


def test_python_graders_run_in_training_only_when_trusted(tmp_path: Path, tiny_model_dir: Path):
    from tunesmith.errors import ConfigError

    rows = rft_rows(tmp_path)
    grader = {"type": "python", "name": "length", "source": "def grade(sample, item):\n    return len(sample['output_text']) % 2\n"}
    args = (*GRPO[:-1], f"grpo.grader={json.dumps(grader)}", "train.max_steps=1", "train.precision=fp32")
    with pytest.raises(ConfigError, match="grpo.grader: a python grader .* --trust-python-graders"):
        tunesmith.train(tiny_config(tmp_path, tiny_model_dir, rows, *args, name="untrusted"), show_progress=False)
    malformed = {**COLOUR_GRADER, "graders": {"named": {**COLOUR_GRADER["graders"]["named"], "operation": "equals"}}}
    with pytest.raises(ConfigError, match="grpo.grader.graders.named.operation"):
        tunesmith.train(tiny_config(tmp_path, tiny_model_dir, rows, *GRPO[:-1], f"grpo.grader={json.dumps(malformed)}"),
                        show_progress=False)
    assert not (tmp_path / "runs").exists()
    config = tiny_config(tmp_path, tiny_model_dir, rows, *args, "grpo.trust_python_grader=true", name="trusted")
    result = tunesmith.train(config, show_progress=False)
    samples = [s for line in next((result.run_dir / "rounds").glob("*.jsonl")).read_text().splitlines()
               for s in json.loads(line)["samples"]]
    assert [s["score"] for s in samples] == [len(s["text"]) % 2 for s in samples]


def test_grpo_checks_its_settings_before_anything_loads(tmp_path: Path, tiny_model_dir: Path):
    from tunesmith.errors import ConfigError
    from tunesmith.training.distributed.world import World
    from tunesmith.training.session import check_distributed

    prompts = prompts_file(tmp_path)
    with pytest.raises(ConfigError, match="grpo.beta=0.04 with full fine-tuning .* set grpo.beta=0"):
        tunesmith.train(tiny_config(tmp_path, tiny_model_dir, prompts, *GRPO, "preference.reward=concise",
                                    "lora.enabled=false"), show_progress=False)
    with pytest.raises(ConfigError, match="train.method=grpo needs a reward: grpo.grader"):
        tunesmith.train(tiny_config(tmp_path, tiny_model_dir, prompts, *GRPO), show_progress=False)
    with pytest.raises(ConfigError, match="trust_reward_code"):
        tunesmith.train(tiny_config(tmp_path, tiny_model_dir, prompts, *GRPO[:-1], "preference.reward=os:system"),
                        show_progress=False)
    with pytest.raises(ConfigError, match="early_stopping_patience: grpo"):
        tunesmith.train(tiny_config(tmp_path, tiny_model_dir, prompts, *GRPO, "preference.reward=concise",
                                    "train.early_stopping_patience=2"), show_progress=False)
    with pytest.raises(ConfigError, match="grpo.group_size"):
        tiny_config(tmp_path, tiny_model_dir, prompts, *GRPO, "grpo.group_size=1")
    assert not (tmp_path / "runs").exists()
    two = World(rank=0, size=2, local_rank=0)
    with pytest.raises(ConfigError, match="train.method=grpo does not train on several processes: each round samples its "
                                          "completions from the model"):
        check_distributed(tiny_config(tmp_path, tiny_model_dir, prompts, *GRPO), two, resume=False)


def test_grpo_killed_within_a_rollout_resumes_to_the_same_weights(tmp_path: Path, tiny_model_dir: Path):
    prompts = prompts_file(tmp_path, copies=2)
    settings = [*GRPO, f"preference.reward={tmp_path / 'words.py'}:score", "grpo.epochs=2", "train.max_steps=6",
                "train.save_every=3", "train.eval_every=0", "train.eval_before=false", "grpo.temperature=1.5"]
    command = [sys.executable, "-m", "tunesmith.cli"]
    reference = subprocess.run(command + cli_args(tmp_path, tiny_model_dir, prompts, *settings, name="reference"),
                               capture_output=True, text=True, timeout=300)
    assert reference.returncode == 0, reference.stderr[-3000:]
    args = cli_args(tmp_path, tiny_model_dir, prompts, *settings, name="killed")
    process = subprocess.Popen(command + args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # steps 3 and 4 train on one rollout (grpo.epochs=2): the resumed run's first step, 4, trains on the
    # rollout sampled before the kill, read back from the run folder
    marker = tmp_path / "runs" / "killed" / "checkpoints" / "step-0000003"
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.002)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    assert not (tmp_path / "runs" / "killed" / "checkpoints" / "step-0000006").exists()
    resumed = subprocess.run(command + args + ["--resume"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    adapter = "adapter/adapter_model.safetensors"
    assert max_difference(weights(tmp_path / "runs" / "reference" / adapter), weights(tmp_path / "runs" / "killed" / adapter)) < 1e-5


def test_grpo_report_grades_base_other_runs_and_fine_tuned_on_the_same_held_out_prompts(tmp_path: Path,
                                                                                        tiny_model_dir: Path):
    from tunesmith.eval.graded import GradedComparison
    from tunesmith.eval.intervals import mean_gain_interval

    rows = rft_rows(tmp_path)
    test = write_jsonl(tmp_path / "test.jsonl", [{"messages": [{"role": "user", "content": f"Is {c} warm?"}],
                                                  "colour": c} for c in COLOURS])
    grader = json.dumps(COLOUR_GRADER)
    first = tunesmith.train(tiny_config(tmp_path, tiny_model_dir, rows, *GRPO[:-1], f"grpo.grader={grader}",
                                        "train.max_steps=1", "train.precision=fp32", name="first"), show_progress=False)
    config = tiny_config(tmp_path, tiny_model_dir, rows, *GRPO[:-1], f"grpo.grader={grader}", "train.max_steps=2",
                         "train.precision=fp32", f"eval.test={test}", "eval.compare_runs=[first, missing-run]",
                         "eval.resamples=200", name="second")
    result = tunesmith.train(config, show_progress=False)
    comparison = result.comparison
    assert isinstance(comparison, GradedComparison)
    assert [s.name for s in comparison.systems] == ["base zero-shot", "first", "fine-tuned"]
    predictions = [json.loads(line) for line in (result.run_dir / "eval" / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == len(COLOURS)
    for row, colour in zip(predictions, COLOURS):  # each score is the grader's on that answer, with the row's fields
        for name in ("base zero-shot", "first", "fine-tuned"):
            item = {"messages": [{"role": "user", "content": f"Is {colour} warm?"}], "colour": colour}
            assert row[name]["score"] == pytest.approx(run_grader_reward(row[name]["answer"], item))
    tuned, base = comparison.systems[2], comparison.systems[0]
    gain = comparison.gains["base zero-shot"]["reward"]
    assert gain == mean_gain_interval(base.scores, tuned.scores, resamples=200, seed=config.train.seed)
    assert gain.estimate == pytest.approx(tuned.metrics["reward"] - base.metrics["reward"])
    saved = json.loads((result.run_dir / "eval" / "comparison.json").read_text())
    assert saved["systems"]["first"]["model"] == str(first.run_dir)
    assert any("'missing-run' is not a finished run" in note for note in comparison.notes)
    report = (result.run_dir / "report.md").read_text()
    assert "Held-out prompts: fine-tuned vs the base model and other runs" in report and "mean reward [95%]" in report
    assert "Rollouts:" in report and "each sub-grader's mean reward (named, short)" in report


def run_grader_reward(answer: str, item: dict) -> float:
    from tunesmith.graders import run_grader

    return run_grader(COLOUR_GRADER, sample=answer, item=item)["reward"]
