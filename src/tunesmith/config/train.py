"""train: the optimisation: objective, schedule, batches, evaluation, checkpoints, hardware."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import field_validator

from tunesmith.config.base import Section, setting

_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?|xpu(:\d+)?)$")


class TrainConfig(Section):
    """The optimisation: objective, schedule, batches, evaluation, checkpoints."""

    method: str = setting(
        "sft",
        "Training method: sft (learn the assistant's replies), pretrain (continued pretraining on domain "
        "text, loss on every token), classify (a classification head on labelled rows), dpo (preference "
        "pairs), online-dpo (pairs from the model's own samples, scored by preference.reward), grpo (groups of the model's own samples, rewards by preference.reward normalised within each group: see grpo.*), token-classify (a tag "
        "per token: named entities from CoNLL files or entity spans), extractive-qa (answer spans in a context, "
        "from SQuAD-style rows).",
    )
    epochs: float = setting(1.0, "Passes over the training rows (fractions allowed).", job=True, ge=0)
    max_steps: int | None = setting(
        None, "Stop after this many optimizer steps (overrides `epochs` when set).", job=True, ge=1
    )
    batch_size: int = setting(4, "Examples per micro-batch.", job=True, ge=1)
    gradient_accumulation: int = setting(
        2,
        "Micro-batches per optimizer step. The loss is averaged over all loss tokens of the step, "
        "so batch 1 x accumulation 8 gives the same update as batch 8 x accumulation 1.", job=True, ge=1,
    )
    learning_rate: float | None = setting(
        None, "Peak learning rate. Unset: 2e-4 with LoRA, 2e-5 for full fine-tuning.", job=True, gt=0
    )
    weight_decay: float = setting(0.0, "AdamW weight decay.", job=True, ge=0)
    adam_betas: list[float] = setting([0.9, 0.999], "AdamW betas.", job=True)
    adam_eps: float = setting(1e-8, "AdamW epsilon.", job=True, gt=0)
    scheduler: Literal["cosine", "linear", "constant"] = setting(
        "cosine", "Learning-rate decay after warmup.", job=True
    )
    warmup_ratio: float = setting(0.05, "Fraction of the steps spent warming up linearly from 0.", job=True,
                                  ge=0.0, lt=1.0)
    max_grad_norm: float | None = setting(
        1.0, "Clip the gradient norm to this. 0 or unset: no clipping (as in the Hugging Face Trainer).", job=True,
        ge=0,
    )
    batching: Literal["group_by_length", "pack", "pad"] = setting(
        "group_by_length",
        "How examples share a batch: group_by_length (similar lengths together, little padding), "
        "pack (concatenated, attention kept inside each example), pad (random order, padded).", job=True,
    )
    eval_every: int = setting(50, "Validation loss every N optimizer steps (0: only at the end).", job=True, ge=0)
    eval_before: bool = setting(
        True, "Measure validation loss before the first step too: the base model's figure to beat.", job=True
    )
    early_stopping_patience: int | None = setting(
        None, "Stop when validation loss has not improved for this many evaluations.", job=True, ge=1
    )
    early_stopping_min_delta: float = setting(
        0.0, "Smallest drop of validation loss that counts as an improvement.", job=True, ge=0
    )
    save_every: int = setting(100, "Checkpoint every N optimizer steps (0: only at the end).", job=True, ge=0)
    keep_checkpoints: int = setting(2, "Newest checkpoints kept; the best one is kept as well.", job=True, ge=1)
    seed: int = setting(42, "Seed for data order, splits, adapter initialisation and dropout.", job=True, ge=0)
    device: str = setting("auto", "cpu, cuda, cuda:N, or auto (a GPU when there is one).")
    precision: Literal["auto", "fp32", "bf16"] = setting(
        "auto", "Numeric precision: auto is bf16 autocast on a GPU or CPU that computes bf16 natively "
        "(AVX-512 BF16, AMX), else fp32.", job=True,
    )
    gradient_checkpointing: bool | Literal["auto"] = setting(
        "auto", "Recompute activations in the backward pass: less memory, about 30% slower. auto: on when "
        "the projected peak memory of the longest micro-batch would not fit in the memory available "
        "(train.memory_limit_gb, else what the machine has free), said at the start; true or false: always or never.",
        job=True,
    )
    memory_limit_gb: float | None = setting(
        None, "Memory the run may use, in GB, for gradient_checkpointing=auto's decision (RAM on CPU, the "
        "GPU's memory on a GPU). Default: what is available when the run starts.", gt=0,
    )
    compile: bool = setting(
        False,
        "Compile the model with torch.compile (fuses small operations; pays a compile time of minutes "
        "first, and again for each new batch shape: worth it for long runs, on GPUs above all).",
    )
    log_every: int = setting(1, "Write training metrics every N optimizer steps.", job=True, ge=1)

    @field_validator("adam_betas")
    @classmethod
    def _two_betas(cls, betas: list[float]) -> list[float]:
        if len(betas) != 2 or not all(0.0 <= beta < 1.0 for beta in betas):
            raise ValueError("must be two numbers in [0, 1)")
        return betas

    @field_validator("device")
    @classmethod
    def _a_device(cls, device: str) -> str:
        if _DEVICE.match(device) is None:
            raise ValueError("is not a device; use auto, cpu, cuda or cuda:N")
        return device
