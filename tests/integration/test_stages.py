"""A pretrain -> SFT chain from one config: lineage, and resume after a kill within and between stages."""

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
import yaml

from tests.conftest import chat_rows, write_jsonl
from tests.integration.helpers import max_difference, weights


def chain_config(tmp_path: Path, model_dir: Path, name: str) -> Path:
    corpus = tmp_path / "corpus"
    if not corpus.exists():
        corpus.mkdir()
        rng = random.Random(0)
        words = "repeat the word red green blue yellow times and again".split()
        for number in range(24):
            (corpus / f"doc{number}.txt").write_text(" ".join(rng.choice(words) for _ in range(rng.randint(30, 120))))
        write_jsonl(tmp_path / "chats.jsonl", chat_rows(120, seed=4))
    config = {
        "model": str(model_dir),
        "lora": {"rank": 8, "alpha": 16},
        "train": {"batch_size": 2, "gradient_accumulation": 1, "learning_rate": 0.01, "save_every": 5, "eval_every": 20,
                  "warmup_ratio": 0.0},
        "eval": {"general_text": None},
        "output": {"dir": str(tmp_path / "runs"), "name": name},
        "stages": [
            {"name": "domain", "train": {"method": "pretrain", "max_steps": 20}, "data": {"train": str(corpus), "max_length": 64}},
            {"name": "chat", "train": {"max_steps": 60}, "data": {"train": str(tmp_path / "chats.jsonl"), "max_length": 128}},
        ],
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def command(config: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "tunesmith.cli", "train", str(config), "--no-progress", *extra]


def kill_when(process: subprocess.Popen, path: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.002)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=60)


@pytest.fixture(scope="module")
def uninterrupted_chain(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> dict:
    """The final weights of the chain run without a kill (the same data files, which are seeded)."""
    folder = tmp_path_factory.mktemp("uninterrupted-chain")
    reference = subprocess.run(command(chain_config(folder, tiny_model_dir, "reference")), capture_output=True, text=True, timeout=600)
    assert reference.returncode == 0, reference.stderr[-3000:]
    return weights(folder / "runs" / "reference" / "stages" / "02-chat" / "model" / "model.safetensors")


@pytest.mark.parametrize("kill_at", ["within the second stage", "between the stages"])
def test_chain_resumes_after_a_kill_and_records_its_lineage(tmp_path: Path, tiny_model_dir: Path, kill_at: str,
                                                            uninterrupted_chain: dict):
    config = chain_config(tmp_path, tiny_model_dir, "chain")
    run = tmp_path / "runs" / "chain"
    marker = (run / "stages" / "02-chat" / "checkpoints" / "step-0000010" if kill_at == "within the second stage"
              else run / "stages" / "01-domain" / "manifest.json")
    kill_when(subprocess.Popen(command(config), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), marker)
    lineage = json.loads((run / "lineage.json").read_text())
    assert lineage["final_model"] is None
    assert [s["name"] for s in lineage["stages"]] in ([], ["01-domain"])  # a stage is listed once evaluated

    resumed = subprocess.run(command(config, "--resume"), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "stage 01-domain: finished earlier" in resumed.stderr
    assert (run / "stages" / "01-domain" / "report.md").is_file()

    lineage = json.loads((run / "lineage.json").read_text())
    domain, chat = lineage["stages"]
    assert (domain["method"], chat["method"]) == ("pretrain", "sft")
    assert domain["started_from"] == str(tiny_model_dir) and chat["started_from"] == domain["model"]
    assert domain["data"][0]["path"].endswith("corpus") and chat["data"][0]["path"].endswith("chats.jsonl")
    assert lineage["final_model"] == chat["model"]
    final = weights(Path(chat["model"]) / "model.safetensors")
    assert max_difference(final, uninterrupted_chain) < 1e-5

    if kill_at != "between the stages":
        return  # the chain's folder answers as a model: once is enough
    generated = subprocess.run([sys.executable, "-m", "tunesmith.cli", "generate", str(run), "--prompt", "Repeat red",
                                "--max-new-tokens", "3"], capture_output=True, text=True, timeout=300)
    assert generated.returncode == 0, generated.stderr[-2000:]


def test_a_stage_with_an_unknown_setting_is_rejected_before_anything_runs(tmp_path: Path):
    from tunesmith.config import build_config
    from tunesmith.errors import ConfigError

    with pytest.raises(ConfigError, match="did you mean 'train.max_steps'"):
        build_config({"stages": [{"name": "a", "train": {"max_step": 3}}]})
