"""One fine-tuning run: the sections composed as fields of one model, and the rules that tie one
section's settings to another's."""

from __future__ import annotations

from typing import Any

from pydantic import model_validator

from tunesmith.config.base import Section, setting
from tunesmith.config.data import DataConfig
from tunesmith.config.evaluation import EvalConfig
from tunesmith.config.grpo import GrpoConfig
from tunesmith.config.lora import LoraConfig
from tunesmith.config.model import ModelConfig
from tunesmith.config.output import DistributedConfig, OutputConfig, RetrainConfig
from tunesmith.config.preference import PreferenceConfig
from tunesmith.config.task import TaskConfig
from tunesmith.config.train import TrainConfig


class RunConfig(Section):
    """One fine-tuning run."""

    model: ModelConfig = setting(ModelConfig(), "Base model.")
    data: DataConfig = setting(DataConfig(), "Training and validation data.")
    task: TaskConfig = setting(TaskConfig(), "Labelled-data task.")
    lora: LoraConfig = setting(LoraConfig(), "LoRA adapters.")
    train: TrainConfig = setting(TrainConfig(), "Optimisation.")
    eval: EvalConfig = setting(EvalConfig(), "Evaluation after training.")
    preference: PreferenceConfig = setting(PreferenceConfig(), "Preference tuning.")
    grpo: GrpoConfig = setting(GrpoConfig(), "GRPO: group relative policy optimisation.")
    output: OutputConfig = setting(OutputConfig(), "Outputs.")
    distributed: DistributedConfig = setting(DistributedConfig(), "Training on several processes.")
    retrain: RetrainConfig = setting(RetrainConfig(), "Retraining a served run on new rows (tunesmith retrain).")
    stages: list[dict[str, Any]] = setting(
        [],
        "Chained training stages (transfer learning), each a `name` plus settings layered over the ones "
        "above, e.g. [{name: domain, train: {method: pretrain}, data: {train: corpus/}}, {name: "
        "instructions, data: {train: chats.jsonl}}]. Each stage starts from the previous stage's model.",
    )

    @property
    def learning_rate(self) -> float:
        """The learning rate in force: the explicit one, else the documented default per method."""
        if self.train.learning_rate is not None:
            return self.train.learning_rate
        return 2e-4 if self.lora.enabled else 2e-5

    @model_validator(mode="after")
    def _consistent(self) -> RunConfig:
        problems = [problem for problem in _cross_section_problems(self) if problem]
        if problems:
            raise ValueError("; ".join(problems))
        return self


def _cross_section_problems(config: RunConfig) -> list[str | None]:
    """Settings that are each in range but do not go together (each one named, with the fix)."""
    data, train = config.data, config.train
    return [
        None if train.method != "extractive-qa" or 0 <= data.stride < data.max_length // 2 else
        f"data.stride={data.stride} must be 0 or more and under half of data.max_length={data.max_length}",
        None if train.epochs > 0 or train.max_steps is not None else
        f"train.epochs={train.epochs!r} must be positive (or set train.max_steps)",
        None if config.distributed.strategy != "fsdp" or not config.lora.enabled else
        "distributed.strategy='fsdp' shards full fine-tuning only (LoRA's trained weights are small: use ddp, or "
        "set lora.enabled=false)",
        *_quantization_problems(config),
        None if data.rag.corpus != "train" else
        "data.rag.corpus='train' must be a document corpus (a folder, a .jsonl/.csv file or a named document set): "
        "training rows retrieving each other would show a row its neighbours' answers",
    ]


_HEAD_METHODS = ("classify", "token-classify", "extractive-qa")


def _quantization_problems(config: RunConfig) -> list[str | None]:
    """model.quantization=4bit holds a frozen causal LM's base in 4 bits under LoRA; nothing else."""
    if config.model.quantization == "none":
        return []
    return [
        None if config.lora.enabled else
        "model.quantization='4bit' needs lora.enabled=true (4-bit weights are frozen: only adapters train)",
        None if config.train.method not in _HEAD_METHODS else
        f"model.quantization='4bit' is for causal-LM methods; train.method={config.train.method!r} adds a head: "
        "set model.quantization=none",
        None if not config.output.save_merged else
        "model.quantization='4bit' with output.save_merged=true: a merged copy needs the full-precision base in "
        "memory (30 GB for a 7B model in fp32), which 4 bits were chosen to avoid; set output.save_merged=false "
        "(the adapter is saved: `tunesmith export --format gguf` merges it into the base on a machine with the memory, "
        "--format gguf-lora or vllm take it as it is)",
    ]
