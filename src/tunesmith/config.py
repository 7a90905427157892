"""Every setting of a run, as frozen dataclasses; YAML and `--set` are only ways to write them down.

Defaults live here and nowhere else. Each field carries its help text in `metadata["help"]`, which
`tunesmith settings` prints. Unknown keys are an error that suggests the closest valid key.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import yaml

from tunesmith.errors import ConfigError


def setting(default: Any = dataclasses.MISSING, help: str = "", **kwargs: Any) -> Any:
    """A dataclass field with its help text (mutable defaults go through `default_factory`)."""
    if isinstance(default, (dict, list)):
        value = default
        return field(default_factory=lambda: type(value)(value), metadata={"help": help}, **kwargs)
    return field(default=default, metadata={"help": help}, **kwargs)


DEFAULT_MODEL = "smollm2-135m-instruct"


@dataclass(frozen=True)
class ModelConfig:
    """Which pre-trained model to start from and how to load it."""

    name: str = setting(
        DEFAULT_MODEL,
        "Base model: a catalog name (`tunesmith models`), a local Hugging Face folder, a .gguf file, "
        "or a hub id such as `HuggingFaceTB/SmolLM2-135M-Instruct` (needs the internet).",
    )
    revision: str | None = setting(None, "Hub revision (branch, tag or commit) for hub ids.")
    trust_remote_code: bool = setting(
        False, "Run Python code shipped with a hub model. Off unless you trust its author."
    )
    chat_template: str | None = setting(
        None,
        "Chat template to use instead of the model's: a path to a .jinja file or the template text. "
        "A model without one gets tunesmith's documented default (see docs/templates.md).",
    )
    attn_implementation: str = setting(
        "sdpa", "Attention kernel: sdpa (PyTorch scaled-dot-product), eager, or flash_attention_2. On CPU, "
        "training with sdpa runs tunesmith's blocked causal attention wherever a call is plain causal attention "
        "(no mask, no dropout): the same result, faster (benchmarks/attention_cpu.py).",
    )


@dataclass(frozen=True)
class RagConfig:
    """Retrieved text in the prompt: for the RAG baselines (eval.rag) and for retrieval-aware training (data.rag)."""

    corpus: str | None = setting(
        None,
        "What to retrieve from: `train` (the training rows themselves, k nearest as solved examples), a folder "
        "of .txt/.md documents, a .jsonl/.csv file with a text field, or a named corpus such as "
        "invented-facts:documents. Unset: no RAG systems.",
    )
    k: int = setting(3, "Chunks put in each prompt.")
    retriever: Literal["bm25", "dense"] = setting(
        "bm25", "bm25 (word overlap, no weights) or dense (embeddings from the catalog's all-minilm-l6-v2)."
    )
    text_field: str = setting("text", "Field holding each document's text in a .jsonl/.csv corpus.")


@dataclass(frozen=True)
class DataConfig:
    """Where the examples come from and how they become token ids."""

    train: str | None = setting(
        None,
        "Training data: a .jsonl/.json/.csv/.tsv/.parquet file, a folder of .txt/.md files, or a "
        "named dataset (`tunesmith data list`).",
    )
    validation: str | None = setting(
        None, "Validation data file (same formats as `train`). Overrides `validation_split`."
    )
    validation_split: float = setting(
        0.1, "Fraction of the training rows held out for validation when no file is given (0: none)."
    )
    format: Literal["auto", "chat", "alpaca", "sharegpt", "prompt_completion", "label", "text"] = setting(
        "auto",
        "Row format; auto detects it from the fields: `messages` (chat), `instruction`/`output` "
        "(alpaca), `conversations` (sharegpt), `prompt`/`completion`, `text`+`label`, `text`.",
    )
    columns: dict[str, str] = setting(
        {},
        "Map the fields tunesmith expects to your column names, e.g. {prompt: question, "
        "completion: answer}.",
    )
    max_length: int = setting(1024, "Longest example in tokens, template included.")
    truncate: bool = setting(
        False, "Cut examples longer than `max_length` instead of reporting them as errors."
    )
    stride: int = setting(
        128,
        "train.method=extractive-qa: tokens that consecutive windows of a context longer than `max_length` share, "
        "so that an answer cut by one window's edge lies whole in the next.",
    )
    skip_invalid: bool = setting(
        False, "Leave out invalid rows (their count and reasons are printed) instead of stopping."
    )
    audit: Literal["warn", "strict", "off"] = setting(
        "warn",
        "The data audit before training (duplicates, leakage into validation/test rows, personal data, "
        "suspicious rows; `tunesmith data audit` shows it whole): warn prints its summary, strict stops on any "
        "finding, off skips it.",
    )
    loss_on: Literal["assistant", "all"] = setting(
        "assistant",
        "Which tokens the loss covers: the assistant's replies (and their end-of-turn token) or "
        "every token. Plain text rows always train on every token.",
    )
    system_prompt: str | None = setting(
        None, "System message added to conversations that have none (none added if unset)."
    )
    rag: RagConfig = setting(
        RagConfig(),
        "Retrieval-aware training: each training prompt gets the k best chunks of `corpus` before its last "
        "user turn, exactly as the RAG systems of the evaluation put them, so the model learns to answer from "
        "documents (set eval.rag to the same corpus to evaluate it that way). A document corpus only.",
    )

@dataclass(frozen=True)
class TaskConfig:
    """Labelled rows (a text and a label) as a task: how the prompt is written and which labels exist."""

    prompt_template: str | None = setting(
        None,
        "Prompt for labelled rows, with {text} and optionally {labels}. Unset: \"Classify the following "
        "text. Answer with one word: {labels}.\\n\\nText: {text}\"",
    )
    labels: list[str] | None = setting(None, "The label set. Unset: every label found in the training data.")
    label_names: dict[str, str] = setting(
        {}, "Rename raw labels for the prompt and the answers, e.g. {'1': positive, '-1': negative}."
    )
    max_answer_tokens: int = setting(
        30, "train.method=extractive-qa: the longest answer span the reader may give, in tokens (SQuAD's convention)."
    )
    class_weights: Literal["none", "balanced"] = setting(
        "none",
        "train.method=classify: weigh each class's loss by n / (classes x n_class), for imbalanced labels.",
    )


@dataclass(frozen=True)
class LoraConfig:
    """Low-rank adapters (LoRA); switched off means full fine-tuning."""

    enabled: bool = setting(True, "Train LoRA adapters (true) or every weight of the model (false).")
    rank: int = setting(16, "Rank r of each adapter.")
    alpha: float = setting(32.0, "Scaling numerator: updates are scaled by alpha / rank.")
    dropout: float = setting(
        0.0,
        "Dropout on the adapter input. Off by default: at 0.05 it costs about 20% of the speed and "
        "1.8 GB of memory (SmolLM2-135M, 4 x 512 tokens) for a regulariser short runs rarely need.",
    )
    target_modules: list[str] | str = setting(
        "all-linear",
        "Layers that get adapters: `all-linear` (every linear layer but the output head) or a "
        "list of module names such as [q_proj, v_proj].",
    )


@dataclass(frozen=True)
class TrainConfig:
    """The optimisation: objective, schedule, batches, evaluation, checkpoints."""

    method: str = setting(
        "sft",
        "Training method: sft (learn the assistant's replies), pretrain (continued pretraining on domain "
        "text, loss on every token), classify (a classification head on labelled rows), dpo (preference "
        "pairs), online-dpo (pairs from the model's own samples, scored by preference.reward), token-classify (a tag "
        "per token: named entities from CoNLL files or entity spans), extractive-qa (answer spans in a context, "
        "from SQuAD-style rows).",
    )
    epochs: float = setting(1.0, "Passes over the training rows (fractions allowed).")
    max_steps: int | None = setting(
        None, "Stop after this many optimizer steps (overrides `epochs` when set)."
    )
    batch_size: int = setting(4, "Examples per micro-batch.")
    gradient_accumulation: int = setting(
        2,
        "Micro-batches per optimizer step. The loss is averaged over all loss tokens of the step, "
        "so batch 1 x accumulation 8 gives the same update as batch 8 x accumulation 1.",
    )
    learning_rate: float | None = setting(
        None, "Peak learning rate. Unset: 2e-4 with LoRA, 2e-5 for full fine-tuning."
    )
    weight_decay: float = setting(0.0, "AdamW weight decay.")
    adam_betas: list[float] = setting([0.9, 0.999], "AdamW betas.")
    adam_eps: float = setting(1e-8, "AdamW epsilon.")
    scheduler: Literal["cosine", "linear", "constant"] = setting(
        "cosine", "Learning-rate decay after warmup."
    )
    warmup_ratio: float = setting(0.05, "Fraction of the steps spent warming up linearly from 0.")
    max_grad_norm: float | None = setting(
        1.0, "Clip the gradient norm to this. 0 or unset: no clipping (as in the Hugging Face Trainer)."
    )
    batching: Literal["group_by_length", "pack", "pad"] = setting(
        "group_by_length",
        "How examples share a batch: group_by_length (similar lengths together, little padding), "
        "pack (concatenated, attention kept inside each example), pad (random order, padded).",
    )
    eval_every: int = setting(50, "Validation loss every N optimizer steps (0: only at the end).")
    eval_before: bool = setting(
        True, "Measure validation loss before the first step too: the base model's figure to beat."
    )
    early_stopping_patience: int | None = setting(
        None, "Stop when validation loss has not improved for this many evaluations."
    )
    early_stopping_min_delta: float = setting(
        0.0, "Smallest drop of validation loss that counts as an improvement."
    )
    save_every: int = setting(100, "Checkpoint every N optimizer steps (0: only at the end).")
    keep_checkpoints: int = setting(2, "Newest checkpoints kept; the best one is kept as well.")
    seed: int = setting(42, "Seed for data order, splits, adapter initialisation and dropout.")
    device: str = setting("auto", "cpu, cuda, cuda:N, or auto (a GPU when there is one).")
    precision: Literal["auto", "fp32", "bf16"] = setting(
        "auto", "Numeric precision: auto is bf16 autocast on a GPU or CPU that computes bf16 natively "
        "(AVX-512 BF16, AMX), else fp32."
    )
    gradient_checkpointing: bool | Literal["auto"] = setting(
        "auto", "Recompute activations in the backward pass: less memory, about 30% slower. auto: on when "
        "the projected peak memory of the longest micro-batch would not fit in the memory available "
        "(train.memory_limit_gb, else what the machine has free), said at the start; true or false: always or never."
    )
    memory_limit_gb: float | None = setting(
        None, "Memory the run may use, in GB, for gradient_checkpointing=auto's decision (RAM on CPU, the "
        "GPU's memory on a GPU). Default: what is available when the run starts."
    )
    compile: bool = setting(
        False,
        "Compile the model with torch.compile (fuses small operations; pays a compile time of minutes "
        "first, and again for each new batch shape: worth it for long runs, on GPUs above all).",
    )
    log_every: int = setting(1, "Write training metrics every N optimizer steps.")


@dataclass(frozen=True)
class EvalConfig:
    """Held-out evaluation after training, against the base model zero-shot and few-shot."""

    test: str | None = setting(
        None,
        "Test data evaluated after training: a file or a named split such as movie-review-polarity:test. "
        "Unset: no evaluation after training (`tunesmith eval` / `compare` still work).",
    )
    compare: bool = setting(
        True, "Also run the base model zero-shot and few-shot on the same rows, and write report.md/.html."
    )
    few_shot: int = setting(5, "Solved training examples in the few-shot prompt (0: no few-shot baseline).")
    prompt_model: str | None = setting(
        None,
        "token-classify and extractive-qa runs: the causal LM prompted zero- and few-shot for the same entities or "
        "answers as the baseline. Unset: the run's base model when it generates text, else smollm2-135m-instruct.",
    )
    few_shot_selection: Literal["random", "similar", "fixed"] = setting(
        "random",
        "How shots are chosen (balanced over classes for label tasks): at random (seeded per row), the most "
        "similar inputs (TF-IDF), or fixed (one seeded draw shown to every row; likelihood scoring then runs "
        "the block of shots once, several times faster).",
    )
    max_rows: int | None = setting(None, "Evaluate at most this many test rows (unset: all).")
    max_new_tokens: int = setting(
        256, "Longest generated answer for free-text tasks; label tasks get 32 tokens (or the longest label + 8) "
        "and stop at the end of the first line."
    )
    batch_size: int = setting(16, "Prompts decoded together (left-padded).")
    precision: Literal["fp32", "auto", "bf16"] = setting(
        "fp32",
        "Precision of evaluation decoding. fp32: an answer never depends on which prompts share its batch. "
        "bf16 (auto, where native) decodes about 1.8x faster, but greedy answers can change with the batch "
        "(14 of 32 Alpaca answers did on SmolLM2-135M).",
    )
    general_text: str | None = setting(
        "c4-demo",
        "General text whose perplexity before and after shows what the model forgot (unset: skip).",
    )
    general_rows: int = setting(32, "Documents of `general_text` used, each cut to 256 tokens.")
    scoring: Literal["both", "generate", "likelihood"] = setting(
        "both",
        "Label tasks: score every system by its generated answer, by the likelihood of each label after the prompt "
        "(rank classification: what the model knows, whatever its answer format), or both.",
    )
    length_normalized: bool = setting(
        False, "Likelihood scoring: compare labels by mean log-probability per token instead of the sum."
    )
    rag: RagConfig = setting(RagConfig(), "Retrieval-augmented baselines.")
    groups: str | None = setting(
        None,
        "A YAML of group name -> terms (e.g. gendered words): label tasks also get each system's accuracy per "
        "group of test rows mentioning its terms, and the gap between groups.",
    )
    resamples: int = setting(
        2000, "Bootstrap resamples for the 95% intervals on every score and every gain (paired over rows)."
    )


@dataclass(frozen=True)
class PreferenceConfig:
    """Preference tuning: train.method dpo (given pairs) or online-dpo (pairs from the model's own samples)."""

    loss: Literal["dpo", "simpo"] = setting(
        "dpo",
        "dpo: sigmoid DPO against a reference (the same weights with the adapter off, or the starting "
        "weights). simpo: reference-free, length-normalised log-probabilities with a target margin.",
    )
    beta: float = setting(
        0.1, "DPO: how far the model may move from the reference (smaller lets it move further). SimPO: reward scale (try 2.0)."
    )
    simpo_gamma: float = setting(0.5, "SimPO: target margin between chosen and rejected rewards.")
    reward: str | None = setting(
        None,
        "online-dpo's reward: a built-in (`concise`), a Python function `file.py:name` or `module:name` called as "
        "name(prompt, completion) -> float, `classifier:RUN:LABEL` (probability of LABEL under a classify "
        "run), or `reference:exact` / `reference:rouge` against each row's reference answer. A relative "
        "file.py in a config file is looked up next to that config file first.",
    )
    trust_reward_code: bool = setting(
        False, "Run the Python function preference.reward names (file.py:name or module:name). Off unless you "
        "trust that code; built-ins, classifier: and reference: rewards need no trust.",
    )
    samples: int = setting(4, "online-dpo: completions sampled per prompt; the best and the worst make a pair.")
    prompts_per_round: int = setting(8, "online-dpo: prompts sampled per round (one optimizer step per round).")
    temperature: float = setting(1.0, "online-dpo: sampling temperature.")
    top_p: float = setting(1.0, "online-dpo: nucleus sampling threshold.")
    max_new_tokens: int = setting(64, "online-dpo: longest sampled completion.")


@dataclass(frozen=True)
class OutputConfig:
    """Where results go and which of them are written."""

    dir: str = setting("runs", "Folder that holds run folders.")
    name: str | None = setting(
        None,
        "Run folder name inside `dir`: one folder name, no path. Unset: `<data name>-<model name>-<method>-<lora|full>`.",
    )
    save_merged: bool = setting(
        True, "Also write the model with the adapter merged in (loads with plain transformers)."
    )
    overwrite: bool = setting(
        False,
        "Replace an earlier run of the same name instead of stopping (use --resume to continue it). The old run "
        "is removed only once the new run's data and model have loaded, and only if tunesmith created it.",
    )
    report_to: list[Literal["tensorboard", "mlflow"]] = setting(
        [],
        "Also log the run to these trackers: the resolved config, per-step metrics under the Hugging Face "
        "integrations' names (train/loss, train/learning_rate, eval/loss), the evaluation table and the report. "
        "tensorboard writes <run folder>/tensorboard/; mlflow uses MLFLOW_TRACKING_URI, else a SQLite store in "
        "output.dir. Each needs its package: pip install 'tunesmith[track]'.",
    )


@dataclass(frozen=True)
class DistributedConfig:
    """How several processes (`--nproc N`, torchrun) share the training; one process ignores it."""

    strategy: Literal["ddp", "fsdp"] = setting(
        "ddp",
        "ddp: every process holds the whole model and its optimizer, gradients are averaged (fastest when the model "
        "fits on one device). fsdp: PyTorch's FSDP2 shards weights, gradients and AdamW moments across the processes "
        "(each decoder layer and the rest of the model gathered only while in use), for full fine-tuning of a model "
        "that does not fit on one device; checkpoints are sharded (torch.distributed.checkpoint), the final model a "
        "normal Hugging Face folder.",
    )


@dataclass(frozen=True)
class RetrainConfig:
    """`tunesmith retrain RUN --data NEW`: a new generation of a served run, promoted only through its gate."""

    replay: float = setting(1.0, "Old training rows replayed per new training row (drawn at random), to limit "
                                 "forgetting; 0: the new rows alone.")
    holdout: float = setting(0.2, "Share of the new rows held out: the gate compares the current and the new model "
                                  "on them (never trained on).")
    margin: float = setting(0.02, "How much lower the new model may score on the run's test set (eval.test) and still "
                                  "be promoted; it must also score higher on the held-out new rows.")
    seed: int = setting(0, "Seed for the holdout split and the replayed rows.")


@dataclass(frozen=True)
class RunConfig:
    """One fine-tuning run."""

    model: ModelConfig = setting(ModelConfig(), "Base model.")
    data: DataConfig = setting(DataConfig(), "Training and validation data.")
    task: TaskConfig = setting(TaskConfig(), "Labelled-data task.")
    lora: LoraConfig = setting(LoraConfig(), "LoRA adapters.")
    train: TrainConfig = setting(TrainConfig(), "Optimisation.")
    eval: EvalConfig = setting(EvalConfig(), "Evaluation after training.")
    preference: PreferenceConfig = setting(PreferenceConfig(), "Preference tuning.")
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


# Strings allowed in place of a section, for the one setting everyone writes.
_SHORTHANDS = {"model": "name", "data": "train"}


def build_config(raw: dict[str, Any] | None = None, overrides: list[str] | None = None) -> RunConfig:
    """A RunConfig from nested dicts (as read from YAML) plus `a.b=c` overrides."""
    raw = dict(raw or {})
    for key, inner in _SHORTHANDS.items():
        if isinstance(raw.get(key), str):
            raw[key] = {inner: raw[key]}
    for override in overrides or []:
        _apply_override(raw, override)
    config = _from_dict(RunConfig, raw, prefix="")
    check_config(config)
    for number, _ in enumerate(config.stages):
        check_config(stage_config(config, number))
    return config


def stage_config(config: RunConfig, number: int, *, model: str | None = None) -> RunConfig:
    """The settings of stage `number`: the top-level ones with the stage's own layered over them."""
    stage = dict(config.stages[number])
    name = stage.pop("name", None)
    if name is not None and not isinstance(name, str):
        raise ConfigError(f"stages[{number}].name must be text")
    if "stages" in stage or "output" in stage:
        raise ConfigError(f"stages[{number}]: a stage cannot set 'stages' or 'output'; set them at the top level")
    base = config_to_dict(replace(config, stages=[]))
    merged = _merge(base, stage, f"stages[{number}]")
    if model is not None:
        merged["model"]["name"] = model
    return _from_dict(RunConfig, merged, prefix="")


def stage_name(config: RunConfig, number: int) -> str:
    stage = config.stages[number]
    method = stage.get("train", {}).get("method", config.train.method) if isinstance(stage.get("train"), dict) else config.train.method
    return f"{number + 1:02d}-{stage.get('name') or method}"


def _merge(base: dict[str, Any], layer: Any, where: str) -> dict[str, Any]:
    if not isinstance(layer, dict):
        raise ConfigError(f"{where}: expected a mapping of settings, got {layer!r}")
    merged = dict(base)
    for key, value in layer.items():
        if key in _SHORTHANDS and isinstance(value, str):
            value = {_SHORTHANDS[key]: value}
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and key != "columns":
            merged[key] = _merge(merged[key], value, f"{where}.{key}")
        else:
            merged[key] = value
    return merged


def read_yaml(path: Path, missing: str) -> Any:
    """A YAML file's content; a ConfigError saying `missing` when it does not exist, or naming the
    line of a syntax error."""
    if not path.is_file():
        raise ConfigError(f"{path}: {missing}")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: not valid YAML ({getattr(exc, 'problem', exc)}); fix the syntax") from None


def apply_overrides(config: RunConfig, overrides: list[str]) -> RunConfig:
    """`config` with `a.b=c` overrides applied (and validated again)."""
    return build_config(config_to_dict(config), overrides) if overrides else config


def load_config(path: str | os.PathLike | None, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML config file (or none) and apply `a.b=c` overrides."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        loaded = read_yaml(path, "no such config file; check the path")
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of sections (model:, data:, train: ...), got {type(loaded).__name__}")
        raw = loaded
        _reward_files_next_to(raw, path.parent)
    return build_config(raw, overrides)


def _reward_files_next_to(raw: dict[str, Any], folder: Path) -> None:
    """A relative `file.py:name` reward written in a config file that exists next to that file
    becomes its absolute path, so the run does not depend on the working folder (`--set` values and
    paths found only from the working folder stay as written)."""
    stages = raw.get("stages") if isinstance(raw.get("stages"), list) else []
    for section in [raw.get("preference"), *[stage.get("preference") for stage in stages if isinstance(stage, dict)]]:
        reward = section.get("reward") if isinstance(section, dict) else None
        target, _, name = reward.rpartition(":") if isinstance(reward, str) else ("", "", "")
        if target.endswith(".py") and not Path(target).expanduser().is_absolute() and (folder / target).is_file():
            section["reward"] = f"{(folder / target).resolve()}:{name}"


def config_to_dict(config: Any) -> dict[str, Any]:
    """Plain nested dicts, ready for YAML or JSON."""
    return dataclasses.asdict(config)


def dump_config(config: RunConfig) -> str:
    return yaml.safe_dump(config_to_dict(config), sort_keys=False, allow_unicode=True)


def describe_config(config: RunConfig) -> str:
    """The resolved settings, one line per section, for the start of a run's log."""
    lines = []
    for section, values in config_to_dict(config).items():
        if not isinstance(values, dict):
            if values:
                lines.append(f"  {section}: {values}")
            continue
        shown = ", ".join(f"{key}={value}" for key, value in values.items())
        lines.append(f"  {section}: {shown}")
    return "\n" + "\n".join(lines)


def describe_settings(cls: type = RunConfig, prefix: str = "") -> list[tuple[str, str, str]]:
    """(key, default, help) for every leaf setting, in declaration order."""
    rows: list[tuple[str, str, str]] = []
    hints = typing.get_type_hints(cls)
    for item in dataclasses.fields(cls):
        key = f"{prefix}{item.name}"
        if dataclasses.is_dataclass(hints[item.name]):
            rows.extend(describe_settings(hints[item.name], key + "."))
            continue
        default = item.default if item.default is not dataclasses.MISSING else item.default_factory()
        rows.append((key, repr(default) if default is not None else "unset", item.metadata.get("help", "")))
    return rows


def check_config(config: RunConfig) -> None:
    """Reject values that are out of range, every one at once; never rewrite them."""
    data, train, lora, evaluation, preference = config.data, config.train, config.lora, config.eval, config.preference
    problems: list[str] = []

    def need(ok: bool, key: str, value: Any, rule: str) -> None:
        if not ok:
            problems.append(f"{key}={value!r} {rule}")

    for key, value in _numbers(config):
        if isinstance(value, float) and not math.isfinite(value):
            problems.append(f"{key}={value!r} must be a finite number")
    if problems:
        raise ConfigError("; ".join(problems))
    need(0.0 <= data.validation_split < 1.0, "data.validation_split", data.validation_split, "must be in [0, 1)")
    need(data.max_length >= 8, "data.max_length", data.max_length, "is too small; use at least 8 tokens")
    need(train.method != "extractive-qa" or 0 <= data.stride < data.max_length // 2, "data.stride", data.stride,
         f"must be 0 or more and under half of data.max_length={data.max_length}")
    need(config.task.max_answer_tokens >= 1, "task.max_answer_tokens", config.task.max_answer_tokens, "must be at least 1")
    need(lora.rank >= 1, "lora.rank", lora.rank, "must be at least 1")
    need(train.memory_limit_gb is None or train.memory_limit_gb > 0, "train.memory_limit_gb", train.memory_limit_gb,
         "must be a positive number of GB")
    need(config.retrain.replay >= 0, "retrain.replay", config.retrain.replay, "must be 0 or more")
    need(0.0 < config.retrain.holdout < 1.0, "retrain.holdout", config.retrain.holdout, "must be in (0, 1)")
    need(config.retrain.margin >= 0, "retrain.margin", config.retrain.margin, "must be 0 or more")
    need(lora.alpha > 0, "lora.alpha", lora.alpha, "must be positive")
    need(0.0 <= lora.dropout < 1.0, "lora.dropout", lora.dropout, "must be in [0, 1)")
    need(config.distributed.strategy != "fsdp" or not lora.enabled, "distributed.strategy", config.distributed.strategy,
         "shards full fine-tuning only (LoRA's trained weights are small: use ddp, or set lora.enabled=false)")
    for name in ("batch_size", "gradient_accumulation", "log_every", "keep_checkpoints"):
        need(getattr(train, name) >= 1, f"train.{name}", getattr(train, name), "must be at least 1")
    for name in ("eval_every", "save_every"):
        need(getattr(train, name) >= 0, f"train.{name}", getattr(train, name), "must be 0 (off) or more")
    need(train.epochs > 0 or train.max_steps is not None, "train.epochs", train.epochs,
         "must be positive (or set train.max_steps)")
    need(train.max_steps is None or train.max_steps >= 1, "train.max_steps", train.max_steps, "must be at least 1")
    need(train.learning_rate is None or train.learning_rate > 0, "train.learning_rate", train.learning_rate, "must be positive")
    need(train.weight_decay >= 0, "train.weight_decay", train.weight_decay, "must be 0 or more")
    need(len(train.adam_betas) == 2 and all(0.0 <= b < 1.0 for b in train.adam_betas), "train.adam_betas",
         train.adam_betas, "must be two numbers in [0, 1)")
    need(train.adam_eps > 0, "train.adam_eps", train.adam_eps, "must be positive")
    need(0.0 <= train.warmup_ratio < 1.0, "train.warmup_ratio", train.warmup_ratio, "must be in [0, 1)")
    need(train.max_grad_norm is None or train.max_grad_norm >= 0, "train.max_grad_norm", train.max_grad_norm,
         "must be positive (clip to that norm), or 0 / unset for no clipping")
    need(train.early_stopping_patience is None or train.early_stopping_patience >= 1, "train.early_stopping_patience",
         train.early_stopping_patience, "must be at least 1 evaluation (unset: no early stopping)")
    need(train.early_stopping_min_delta >= 0, "train.early_stopping_min_delta", train.early_stopping_min_delta, "must be 0 or more")
    need(train.seed >= 0, "train.seed", train.seed, "must be 0 or more")
    need(_DEVICE.match(train.device) is not None, "train.device", train.device, "is not a device; use auto, cpu, cuda or cuda:N")
    need(evaluation.few_shot >= 0, "eval.few_shot", evaluation.few_shot, "must be 0 (no few-shot baseline) or more")
    need(evaluation.max_rows is None or evaluation.max_rows >= 1, "eval.max_rows", evaluation.max_rows, "must be at least 1 (unset: all)")
    for name in ("max_new_tokens", "batch_size", "general_rows"):
        need(getattr(evaluation, name) >= 1, f"eval.{name}", getattr(evaluation, name), "must be at least 1")
    need(evaluation.resamples >= 100, "eval.resamples", evaluation.resamples, "must be at least 100")
    need(evaluation.rag.k >= 1, "eval.rag.k", evaluation.rag.k, "must be at least 1")
    need(config.data.rag.k >= 1, "data.rag.k", config.data.rag.k, "must be at least 1")
    need(config.data.rag.corpus != "train", "data.rag.corpus", config.data.rag.corpus,
         "must be a document corpus (a folder, a .jsonl/.csv file or a named document set): training rows "
         "retrieving each other would show a row its neighbours' answers")
    need(preference.beta > 0, "preference.beta", preference.beta, "must be positive")
    need(preference.simpo_gamma >= 0, "preference.simpo_gamma", preference.simpo_gamma, "must be 0 or more")
    need(preference.samples >= 2, "preference.samples", preference.samples, "must be at least 2 (a pair needs two samples)")
    need(preference.prompts_per_round >= 1, "preference.prompts_per_round", preference.prompts_per_round, "must be at least 1")
    need(preference.temperature > 0, "preference.temperature", preference.temperature,
         "must be positive (online-dpo needs different samples to pair)")
    need(0.0 < preference.top_p <= 1.0, "preference.top_p", preference.top_p, "must be in (0, 1]")
    need(preference.max_new_tokens >= 1, "preference.max_new_tokens", preference.max_new_tokens, "must be at least 1")
    if config.output.name is not None:
        need(_is_folder_name(config.output.name), "output.name", config.output.name,
             "must be one folder name (no '/', '..' or absolute path); put runs elsewhere with output.dir")
    if problems:
        raise ConfigError("; ".join(problems))


_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?|xpu(:\d+)?)$")


def _is_folder_name(name: str) -> bool:
    return bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name and "\0" not in name


def _numbers(config: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """(key, value) of every number in the settings, lists included."""
    found = []
    for item in dataclasses.fields(config):
        value = getattr(config, item.name)
        key = f"{prefix}{item.name}"
        if dataclasses.is_dataclass(value):
            found.extend(_numbers(value, key + "."))
        elif isinstance(value, list):
            found.extend((f"{key}[{i}]", v) for i, v in enumerate(value) if isinstance(v, (int, float)))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            found.append((key, value))
    return found


def _apply_override(raw: dict[str, Any], override: str) -> None:
    key, sep, text = override.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {override!r}: expected KEY=VALUE such as train.learning_rate=1e-4")
    parts = key.strip().split(".")
    node = raw
    for part in parts[:-1]:
        child = node.get(part)
        if isinstance(child, str) and part in _SHORTHANDS:
            child = {_SHORTHANDS[part]: child}
        if not isinstance(child, dict):
            child = {}
        node[part] = child
        node = child
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    node[parts[-1]] = value


def _from_dict(cls: type, raw: Any, prefix: str) -> Any:
    """`cls` built from nested dicts; every unknown key and every bad value is reported at once."""
    problems: list[str] = []
    built = _build(cls, raw, prefix, problems)
    if problems:
        raise ConfigError("; ".join(problems) if len(problems) == 1 else
                          f"{len(problems)} problems in the settings: " + "; ".join(problems))
    return built


def _build(cls: type, raw: Any, prefix: str, problems: list[str]) -> Any:
    where = prefix.rstrip(".") or "config"
    if not isinstance(raw, dict):
        problems.append(f"{where}: expected a mapping of settings, got {raw!r}")
        return None
    hints = typing.get_type_hints(cls)
    names = [item.name for item in dataclasses.fields(cls)]
    for key in raw:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1, cutoff=0.5)
            hint = f"; did you mean '{prefix}{close[0]}'?" if close else f"; valid keys: {', '.join(names)}"
            problems.append(f"unknown setting '{prefix}{key}'{hint}")
    values = {}
    for name in names:
        if name not in raw:
            continue
        kind = hints[name]
        try:
            if dataclasses.is_dataclass(kind):
                values[name] = _build(kind, raw[name] if raw[name] is not None else {}, f"{prefix}{name}.", problems)
            else:
                values[name] = _coerce(raw[name], kind, f"{prefix}{name}")
        except ConfigError as exc:
            problems.append(str(exc))
    return None if problems else cls(**values)


def _coerce(value: Any, kind: Any, key: str) -> Any:
    """Check `value` against the annotation `kind`, converting only lossless spellings (1e-4 -> float)."""
    origin = typing.get_origin(kind)
    args = typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in args:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[-1] if errors else f"{key}: unexpected value {value!r}")
    if origin is Literal:
        if isinstance(value, bool) and ({"off", "on"} & set(args) or {"no", "yes"} & set(args)):
            # YAML 1.1 reads a bare off/on/no/yes as a boolean: `audit: off` means the word the setting lists
            words = [word for word in (("on", "yes") if value else ("off", "no")) if word in args]
            if words:
                return words[0]
        if value in args and not isinstance(value, bool):
            return value
        close = difflib.get_close_matches(str(value), [str(a) for a in args], n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"{key}={value!r} is not one of {', '.join(map(str, args))}{hint}")
    if kind is Any:
        return value
    if origin is list:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            raise ConfigError(f"{key}={value!r}: expected a list such as [a, b]")
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}={value!r}: expected a list such as [a, b]")
        return [_coerce(item, args[0], f"{key}[{i}]") for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}={value!r}: expected a mapping such as {{a: b}}")
        return {_coerce(k, args[0], key): _coerce(v, args[1], f"{key}.{k}") for k, v in value.items()}
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}={value!r}: expected true or false")
    if kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key}={value!r}: expected a whole number")
    if kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}={value!r}: expected a number")
    if kind is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}={value!r}: expected text")
    raise ConfigError(f"{key}: unsupported setting type {kind!r}")


@dataclass(frozen=True)
class ServeConfig:
    """How `tunesmith serve` listens, whom it answers, and how much it takes on at once."""

    host: str = setting("127.0.0.1", "Address to bind; 127.0.0.1 (this machine only) unless told otherwise.")
    port: int = setting(8000, "Port to listen on.")
    api_keys: tuple[str, ...] = setting((), "Keys a client must send as `Authorization: Bearer KEY`. None: "
                                            "development mode, only clients on this machine are answered.")
    admin_keys: tuple[str, ...] = setting((), "Keys that may load and unload adapters (POST /v1/load_lora_adapter). "
                                              "None: only in development mode, from this machine.")
    max_queue: int = setting(64, "Rows (choices) queued or decoding at once; a request beyond it gets 429.")
    max_batch: int = setting(16, "Rows decoded together in one batch.")
    max_tokens: int = setting(1024, "Largest max_tokens a request may ask for; also the default.")
    max_request_bytes: int = setting(1_000_000, "Largest request body; a larger one gets 413.")
    max_loaded_adapters: int = setting(8, "LoRA adapters held in memory at once; the least recently used is "
                                          "unloaded beyond it, and loaded again when asked for.")
    max_loaded_models: int = setting(4, "Full fine-tunes and task heads (classifier, tagger, reader runs) held in "
                                        "memory at once; the least recently used is unloaded beyond it, and loaded "
                                        "again when asked for. Base models stay loaded.")
    precision: Literal["auto", "fp32", "bf16"] = setting(
        "auto", "Weights' precision: auto is bf16 where the CPU or GPU computes it natively, else fp32. In fp32 a "
        "greedy answer is the same in any batch; in bf16 rounding depends on the batch's shape.")
    key_projects: dict[str, str] = setting({}, "The project each API key belongs to (fine-tuning jobs, files and "
                                               "fine-tuned models are visible only within it); a key not named "
                                               "here belongs to the project `default`.")
    store_url: str | None = setting(None, "Keep every chat completion (a request may say `store: false`) in this database: "
                                          "sqlite:///PATH or postgresql+psycopg://USER@HOST/DB. None: keep nothing.")
    store_scrub_pii: bool = setting(False, "Replace personal data (e-mails, phone and card numbers, keys ...) in stored "
                                           "prompts and answers with placeholders before they are written.")
    store_retention_days: float | None = setting(None, "Delete stored completions and their feedback older than this "
                                                       "many days. None: keep them.")
    max_feedback_per_key_per_hour: int = setting(1000, "Feedback posts (POST /v1/chat/completions/{id}/feedback) one "
                                                       "API key may make in any hour; one more gets 429. Bounds how "
                                                       "much one key can steer what a retrain learns.")


@dataclass(frozen=True)
class JobsConfig:
    """Fine-tuning as a service (`tunesmith serve --jobs`, `tunesmith worker`): where jobs and uploaded
    files are kept, and how workers take jobs."""

    jobs_dir: str = setting("tunesmith-jobs", "Folder for uploaded files (by content hash), job run folders, and "
                                              "the SQLite database when no store_url is given.")
    store_url: str | None = setting(None, "Database URL: sqlite:///PATH or postgresql+psycopg://USER@HOST/DB (for workers "
                                          "on several machines). Unset: SQLite at <jobs_dir>/jobs.db.")
    workers: int = setting(1, "Worker processes `tunesmith serve --jobs` starts beside the server (0: none here; run "
                               "`tunesmith worker` elsewhere).")
    lease_seconds: float = setting(60.0, "A job whose worker has not heartbeated for this long is taken over by another "
                                         "worker, from its last checkpoint.")
    poll_seconds: float = setting(1.0, "How often a worker looks for jobs and reports a running job's progress.")
    max_upload_bytes: int = setting(512 * 1024 * 1024, "Largest uploaded file (POST /v1/files); a larger one gets 413.")
    max_active_jobs: int = setting(1000, "Jobs validating, queued or running per project; one more gets 429.")
    validation_seconds: float = setting(1800.0, "Longest a worker spends checking and auditing a job's files (in a "
                                                "child process, while it keeps the job's lease); past it the job "
                                                "fails, saying so.")

    @property
    def database_url(self) -> str:
        return self.store_url or f"sqlite:///{(Path(self.jobs_dir) / 'jobs.db').resolve()}"
