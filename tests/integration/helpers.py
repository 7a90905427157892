"""Building blocks for the integration tests: a tiny-model run config and weight comparisons."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from tunesmith.config import RunConfig, build_config


def tiny_config(tmp_path: Path, model_dir: Path, data: Path, *overrides: str, name: str = "run") -> RunConfig:
    """A fast run on the tiny model: short rows, high learning rate, no dropout."""
    return build_config(
        {
            "model": {"name": str(model_dir)},
            "data": {"train": str(data), "max_length": 128, "validation_split": 0.25},
            "lora": {"rank": 8, "alpha": 16, "dropout": 0.0},
            "train": {"max_steps": 6, "batch_size": 4, "gradient_accumulation": 1, "learning_rate": 2e-2,
                      "eval_every": 3, "save_every": 3, "warmup_ratio": 0.0},
            "output": {"dir": str(tmp_path / "runs"), "name": name},
        },
        list(overrides),
    )


def cli_args(tmp_path: Path, model_dir: Path, data: Path, *overrides: str, name: str = "run") -> list[str]:
    """The same run as `tiny_config`, as `tunesmith train` arguments."""
    settings = ["data.max_length=128", "data.validation_split=0.25", "lora.rank=8", "lora.alpha=16", "lora.dropout=0.0",
                "train.max_steps=6", "train.batch_size=4", "train.gradient_accumulation=1", "train.learning_rate=2e-2",
                "train.eval_every=3", "train.save_every=3", "train.warmup_ratio=0.0", f"output.dir={tmp_path / 'runs'}"]
    args = ["train", "--model", str(model_dir), "--data", str(data), "--output", name, "--no-progress"]
    for setting in settings + list(overrides):
        args += ["--set", setting]
    return args


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(path)


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
