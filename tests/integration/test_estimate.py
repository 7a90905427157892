"""`--estimate` probes the run it describes: the same steps, tokens and validation passes."""

from __future__ import annotations

import json
from pathlib import Path

from tests.integration.helpers import tiny_config
from tunesmith.pipeline.train import train
from tunesmith.training.estimate import estimate_run


def test_the_estimate_counts_what_the_run_then_does(tmp_path: Path, tiny_model_dir: Path, chat_file: Path):
    config = tiny_config(tmp_path, tiny_model_dir, chat_file, "train.gradient_accumulation=2", name="estimated")
    estimate = estimate_run(config)
    assert not (tmp_path / "runs" / "estimated").exists()  # the probe trains nothing into the run folder
    result = train(config, show_progress=False)
    records = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    assert estimate.steps == result.steps == len(steps)
    assert estimate.tokens == sum(r["tokens"] for r in steps)
    assert estimate.loss_tokens == sum(r["loss_tokens"] for r in steps)
    assert estimate.evaluations == sum("val_loss" in r for r in records)
    assert estimate.wall_seconds > 0 and estimate.peak_memory_mb > 0
    parts = estimate.setup_seconds + estimate.train_seconds + estimate.eval_seconds + estimate.save_seconds
    assert abs(estimate.wall_seconds - parts) < 0.5  # the total is its parts (each rounded to 0.1 s)


def test_the_estimate_steps_as_the_run_does_in_bf16(tmp_path: Path, tiny_model_dir: Path, chat_file: Path):
    """In bf16 a LoRA run switches off peft's cast of each adapter's input to fp32 (every adapted layer
    would keep an fp32 copy of its input): the probe must too, or its peak and step time describe
    another computation."""
    import torch
    from peft.tuners.lora.layer import Linear as LoraLinear

    seen: dict[str, set] = {"estimate": set(), "run": set()}
    phase = ["estimate"]

    def adapter_inputs(module: torch.nn.Module, args: tuple) -> None:
        # LoRA's own matrices are the fp32 Linear layers of a bf16 model (peft's path)
        if module.training and type(module) is torch.nn.Linear and module.weight.dtype == torch.float32 and args:
            seen[phase[0]].add(args[0].dtype)
        # a LoRA layer computed fused (models/fused_lora.py) takes its input as it comes
        if module.training and type(module) is LoraLinear and args:
            seen[phase[0]].add((args[0].dtype, "fused" if hasattr(module, "_tunesmith_fused_lora") else "peft"))

    config = tiny_config(tmp_path, tiny_model_dir, chat_file, "train.precision=bf16", "train.max_steps=2",
                         "eval.general_text=null", name="bf16")
    handle = torch.nn.modules.module.register_module_forward_pre_hook(adapter_inputs)
    try:
        estimate_run(config)
        phase[0] = "run"
        train(config, show_progress=False)
    finally:
        handle.remove()
    assert seen["run"] == {(torch.bfloat16, "fused")}  # what the run's adapters see
    assert seen["estimate"] == seen["run"]
