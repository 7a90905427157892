"""One training run, whatever the method: settings, data checks, model, optimizer, resume, the
loop, outputs and manifest. A method (sft.py, pretrain.py, classify.py) supplies only what differs:
how rows become examples, which model class is loaded, how examples become batches, and the loss.

The order of work is the order of trust: settings, then the data (with the tokenizer only), and
only when every row is usable, the model.

Started by torchrun (WORLD_SIZE > 1), every process runs this same function: rank 0 prepares the
data first (the others then read its cache), all train together, and rank 0 alone writes the run
folder, the messages and the outputs.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
import platform
import re
import resource
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from tunesmith._version import __version__
from tunesmith.allocator import current_allocator
from tunesmith.config import RunConfig, config_to_dict, describe_config, dump_config
from tunesmith.data.batches import plan_epoch
from tunesmith.data.pipeline import PreparedData
from tunesmith.data.template import TemplateInfo, analyze_template, ensure_chat_template
from tunesmith.data.tools import file_uses_tools
from tunesmith.errors import ConfigError, RunError
from tunesmith.files import write_atomic
from tunesmith.models.adapters import adapter_input_casting, count_parameters, make_trainable
from tunesmith.models.attention import leave_training_attention, use_training_attention
from tunesmith.models.catalog import CATALOG
from tunesmith.models.device import (
    enable_checkpointing,
    resolve_device,
    resolve_precision,
    weights_dtype,
)
from tunesmith.models.fused_lora import leave_fused_lora, use_fused_lora
from tunesmith.models.fused_norm import leave_fused_norms, use_fused_norms
from tunesmith.models.load import ModelSource, generation_eos, load_tokenizer, resolve_model
from tunesmith.models.loss_eval import LossFn
from tunesmith.models.save import attach_adapter, save_adapter, save_model
from tunesmith.training import fence
from tunesmith.training.checkpoint import (
    BEST,
    TrainState,
    load_checkpoint,
    read_train_state,
    recover_best,
)
from tunesmith.training.distributed.world import ONE_PROCESS, World, environment_world, join_world
from tunesmith.training.loop import (
    BatchStream,
    LoopPlan,
    LossValidation,
    Validation,
    WindowSource,
    fit,
    total_steps,
)
from tunesmith.training.loss import choose_loss_path
from tunesmith.training.memory import choose_checkpointing, weights_fit
from tunesmith.training.metrics import MetricsLog, perplexity, plot_losses, read_metrics
from tunesmith.training.registry import METHODS, Method, register_method
from tunesmith.training.resume import (
    check_resume_randomness,
    check_resume_shape,
    processes,
    resume_point,
)
from tunesmith.training.run_folder import (
    RunFolder,
    check_run_folder,
    start_run_folder,
    write_validation_rows,
)
from tunesmith.training.tracking import tracking

__all__ = ["METHODS", "Method", "RunResult", "get_method", "register_method", "run_method", "say"]


def get_method(name: str) -> Method:
    """A registered training method by name (the built-in ones are registered by importing them)."""
    import tunesmith.training.methods  # noqa: F401  (registers the built-in methods)

    if name not in METHODS:
        close = difflib.get_close_matches(name, list(METHODS), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"train.method={name!r} is not one of {', '.join(METHODS)}{hint}")
    return METHODS[name]


@dataclass
class RunResult:
    run_dir: Path
    method: str
    steps: int
    train_loss: float | None
    val_loss: float | None
    baseline_val_loss: float | None
    best_step: int | None
    stopped_early: bool
    tokens_per_s: float
    peak_memory_mb: float
    train_seconds: float = 0.0
    outputs: dict[str, str] = field(default_factory=dict)
    comparison: Any = None  # eval.compare.Comparison, when the run was evaluated after training

    @property
    def model_dir(self) -> Path:
        return Path(self.outputs["model"]) if "model" in self.outputs else self.run_dir / "model"


def say(message: str) -> None:
    """A progress message on stderr; from rank 0 only when several processes train."""
    if environment_world().is_main:
        print(f"tunesmith: {message}", file=sys.stderr, flush=True)


# Methods whose batches all come from a BatchStream over prepared examples, which DDP covers: each
# process collates its share of every micro-batch, whatever the batch holds (tokens, pairs, labels).
DISTRIBUTED_METHODS = ("sft", "pretrain", "dpo", "classify", "token-classify", "extractive-qa")


def check_distributed(config: RunConfig, world: World, resume: bool) -> None:
    """Refuse, before any work, what several processes cannot train yet."""
    if world.size == 1:
        return
    if config.train.method in ("online-dpo", "grpo"):
        sampled = "pairs" if config.train.method == "online-dpo" else "completions"
        raise ConfigError(f"train.method={config.train.method} does not train on several processes: each round samples "
                          f"its {sampled} "
                          "from the model as it trains, and processes sampling their shares would neither sample what "
                          "one process samples nor agree on a round's micro-batches; run it as one process, without "
                          "--nproc or torchrun")
    if config.train.method not in DISTRIBUTED_METHODS:
        raise ConfigError(f"train.method={config.train.method} does not train on several processes yet "
                          f"({', '.join(DISTRIBUTED_METHODS)} do); run it as one process, without --nproc or torchrun")
    if config.stages:
        raise ConfigError("stages do not train on several processes yet; run each stage as a run of its own "
                          "(model.name: the previous stage's model folder), or run the chain as one process")
    if resume:  # before any process starts: a checkpoint of another shape is refused now, not after N model loads
        run_folder, checkpoint = check_run_folder(config, resume=True)
        check_resume_shape(run_folder.path, read_train_state(checkpoint), config.train.batch_size, world.size)


@dataclass
class RunSetup:
    """What the steps of a run read once its settings are checked and its data prepared."""

    config: RunConfig
    method: Method
    world: World
    device: torch.device
    precision: str
    run_folder: RunFolder
    checkpoint: Path | None  # the checkpoint a resume starts from
    source: ModelSource
    tokenizer: Any
    info: TemplateInfo | None
    template_source: str | None
    data: PreparedData

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id

    @property
    def strategy(self) -> str:
        return self.config.distributed.strategy if self.world.size > 1 else "one process"


def run_method(config: RunConfig, *, resume: bool = False, show_progress: bool = True,
               before_start: Callable[[], None] | None = None) -> RunResult:
    """Train `config.model.name` with `config.train.method`; everything lands in the run folder.

    `before_start` runs once the data and the model have loaded, just before the run folder is
    created (chained stages replace an earlier chain there)."""
    started = time.time()
    run, resumed = prepare_run(config, resume)
    model = trainable_model(run.method, run.source, config, run.data, run.precision, run.device)
    if run.world.is_main:  # only now, with the data and the model loaded, may an earlier run in the folder be replaced
        open_run_folder(run, resume, before_start)
    say(f"run folder {run.run_folder.path}" + (f", resuming from {run.checkpoint.name}" if run.checkpoint else ""))
    say(describe_model(run, model))
    sharded = shard_model(run, model)  # FSDP shards the weights before the optimizer is made over them
    optimizer = make_optimizer(model, config)
    state = start_state(run, model, optimizer, resumed, sharded is not None)
    if run.method.before_fit is not None:
        run.method.before_fit(model, run.data, config, run.run_folder.path, run.device, run.precision, run.pad_id)
    loss_fn = run.method.make_loss(config, run.data)
    stream, validation = batch_source(run, model)
    # FSDP gathers its shards layer by layer: its memory is set explicitly, not probed
    if run.method.window_source is None and sharded is None:
        decide_memory(run, model, stream, loss_fn)
    if config.train.compile:  # after the memory probe, which runs the layers as they are
        compile_layers(model)
    with metrics_log(run, state) as metrics:
        plan = LoopPlan(config.train, total_steps(config.train, stream.steps_per_epoch()), config.learning_rate, run.device,
                        run.precision, run.run_folder.checkpoints, metrics, loss_fn, show_progress, run.world, sharded)
        say(f"{run.method.name}: {plan.total_steps} {step_unit(run, stream)}, peak learning rate {config.learning_rate:g}, "
            f"{config.train.scheduler} schedule")
        with adapter_input_casting(model, enabled=run.precision != "bf16"):
            state = fit(model, optimizer, stream, validation, plan, state)
    leave_training_attention(model)
    leave_fused_lora(model)
    leave_fused_norms(model)
    return finish_run(run, model, state, sharded, started)


def prepare_run(config: RunConfig, resume: bool) -> tuple[RunSetup, TrainState | None]:
    """The method and the run folder checked, the processes joined, the tokenizer and the data loaded
    (rank 0 first: it fills the tokenized-data cache, the others read it); with the loop state a
    resume starts from."""
    method = get_method(config.train.method)
    check_distributed(config, environment_world(), resume)
    run_folder, checkpoint, resumed = resume_point(config, resume)
    world, device = join_world(resolve_device(config.train.device))
    precision = resolve_precision(config.train.precision, device)
    with world.main_first():
        source = resolve_model(config.model.name)
        check_weights_fit(config, source, device, precision)
        tokenizer, info, template_source = load_tokenizer_and_template(method, config, source)
        data = method.prepare_data(config, tokenizer, info)
    say("settings: " + describe_config(config))
    report_data(data)
    return RunSetup(config, method, world, device, precision, run_folder, checkpoint, source, tokenizer, info,
                    template_source, data), resumed


def check_weights_fit(config: RunConfig, source: ModelSource, device: torch.device, precision: str) -> None:
    """Refuse a model whose frozen weights alone cannot fit, before anything is loaded: a load that
    cannot fit ends in the out-of-memory killer, not an error (the message names 4 bits where they fit)."""
    if not source.is_local:
        return
    too_big = weights_fit(source.location, weights_dtype(precision, frozen_base=config.lora.enabled),
                          config.model.quantization, device, config.train.memory_limit_gb)
    if too_big:
        raise RunError(f"{config.model.name}: {too_big}")


def open_run_folder(run: RunSetup, resume: bool, before_start: Callable[[], None] | None) -> None:
    """Rank 0 starts (or continues) the run folder, with the validation rows and the label task."""
    if before_start is not None:
        before_start()
    start_run_folder(run.run_folder, run.config, resume=resume)
    write_validation_rows(run.run_folder, run.data.validation)
    if run.data.task is not None:
        run.data.task.save(run.run_folder.task)


def describe_model(run: RunSetup, model: Any) -> str:
    trainable, total = count_parameters(model)
    config, world = run.config, run.world
    return (f"model {config.model.name}: {total / 1e6:.1f}M parameters, {trainable / 1e6:.2f}M trained "
            f"({'LoRA' if config.lora.enabled else 'full'}), {run.device.type}, {run.precision}"
            + (f", {world.size} processes ({run.strategy.upper()}), batch {config.train.batch_size} each"
               if world.size > 1 else ""))


def shard_model(run: RunSetup, model: Any) -> Any:
    """With FSDP, the sharded root the steps and the validation go through; else None."""
    if run.strategy != "fsdp":
        return None
    from tunesmith.training.distributed.fsdp import shard

    return shard(model, run.method.make_loss(run.config, run.data), run.precision)


def make_optimizer(model: Any, config: RunConfig) -> torch.optim.Optimizer:
    """AdamW over the trained weights; fused: one kernel over all of them instead of a loop
    (PyTorch has it on CPU and CUDA)."""
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.learning_rate,
                             betas=tuple(config.train.adam_betas), eps=config.train.adam_eps,
                             weight_decay=config.train.weight_decay, fused=True)


def start_state(run: RunSetup, model: Any, optimizer: torch.optim.Optimizer, resumed: TrainState | None,
                sharded: bool) -> TrainState:
    """The loop state the run starts from: a new one, or on resume the checkpoint's, with the model's
    and the optimizer's state and this rank's random state restored, once the data and the number of
    processes are checked against it."""
    config, world, folder = run.config, run.world, run.run_folder.path
    fingerprint = data_fingerprint(run.data.train)
    state = TrainState(data_fingerprint=fingerprint, processes=world.size, batch_size=config.train.batch_size)
    if run.checkpoint is None:
        return state
    check_resume_randomness(folder, resumed, model, world.size)
    if sharded and resumed.processes == 1:
        raise ConfigError(f"{folder}: this run's checkpoints were written by one process, whole, not in "
                          "FSDP's shards; resume it as one process, or with distributed.strategy=ddp")
    state = load_checkpoint(run.checkpoint, model, optimizer, world.rank)  # this rank's random state
    if state.data_fingerprint != fingerprint:
        raise ConfigError(f"{folder}: the training data changed since this run started; "
                          "resume with the original data or start a new run")
    if state.processes != world.size:
        say(f"resuming the run of {processes(state.processes)} on {processes(world.size)}, batch "
            f"{config.train.batch_size} each: the same {world.size * config.train.batch_size} rows a micro-batch")
    state.processes, state.batch_size = world.size, config.train.batch_size  # what the next checkpoint records
    return state


def batch_source(run: RunSetup, model: Any) -> tuple[WindowSource, Validation]:
    """Where the steps' micro-batches come from, and the held-out measure: a BatchStream over the
    prepared examples and their validation loss, or what a method that makes its batches as it
    trains (online-dpo) supplies."""
    method, config = run.method, run.config
    if method.window_source is not None:
        return method.window_source(model, run.data, config, run.run_folder.path, run.device, run.precision,
                                    run.tokenizer, run.info)
    stream = BatchStream(run.data.train, config.train, config.data.max_length, run.pad_id, method.collate,
                         method.batching, run.world)
    return stream, LossValidation(validation_batches(run.data.validation, config, run.pad_id, method.collate))


def decide_memory(run: RunSetup, model: Any, stream: BatchStream, loss_fn: LossFn) -> None:
    """train.gradient_checkpointing=auto: checkpointing on where the planned batches need it (memory.py)."""
    memory = choose_checkpointing(model, stream, loss_fn, run.config.train, run.device, run.precision)
    if memory is not None:
        say(memory.describe())


def step_unit(run: RunSetup, stream: WindowSource) -> str:
    """What the run counts its steps in, for the message that says how many."""
    train = run.config.train
    if run.method.window_source:
        unit = "rounds"
    else:
        unit = f"optimizer steps of {train.batch_size} x {train.gradient_accumulation} " \
            + ("rows" if stream.batching == "pack" else "examples")
    if run.world.size > 1:
        unit += f" per process, on {run.world.size} processes"
    return unit


@contextlib.contextmanager
def metrics_log(run: RunSetup, state: TrainState) -> Iterator[MetricsLog | None]:
    """Rank 0's metrics.jsonl (continued from the resumed step), which also reports to the trackers
    of output.report_to; None on the other processes."""
    config, world = run.config, run.world
    with tracking(config.output.report_to if world.is_main else [], run.run_folder.path, config.output.dir) as tracker:
        if tracker is not None:
            tracker.log_config(config_to_dict(config), dump_config(config))
        yield MetricsLog(run.run_folder.metrics, resume_step=state.step if run.checkpoint else None, tracker=tracker) \
            if world.is_main else None


def finish_run(run: RunSetup, model: Any, state: TrainState, sharded: Any, started: float) -> RunResult:
    """The best weights put back; on rank 0 the method's last work on them, the loss plot, the
    outputs and the manifest."""
    world, method = run.world, run.method
    if sharded is not None:  # every process takes part in putting the best weights back and gathering them
        final_val = final_weights(model, run.run_folder, state, world)
        model = gathered_model(model, method, run.source, run.config, run.data, world)
    if not world.is_main:  # rank 0 writes the outputs
        return RunResult(run.run_folder.path, method.name, state.step, None, state.best_val_loss, state.baseline_val_loss,
                         state.best_step, state.stopped_early, state.tokens_seen / max(state.train_seconds, 1e-9),
                         peak_memory_mb(), state.train_seconds)
    if sharded is None:
        final_val = final_weights(model, run.run_folder, state)
    if method.after_fit is not None:
        method.after_fit(model, run.data, run.tokenizer, run.config)
    plot_losses(run.run_folder.metrics, run.run_folder.loss_plot, title=run.run_folder.path.name)
    outputs = save_outputs(model, run.tokenizer, run.run_folder, run.config, run.info, run.source, method, run.data)
    result = RunResult(run.run_folder.path, method.name, state.step, last_train_loss(run.run_folder), final_val,
                       state.baseline_val_loss, state.best_step, state.stopped_early,
                       state.tokens_seen / max(state.train_seconds, 1e-9), peak_memory_mb(), state.train_seconds, outputs)
    write_manifest(run.run_folder, run.config, run.source, run.data, run.info, run.template_source, result, started)
    say(f"done in {time.time() - started:.0f} s: {state.step} steps, {result.tokens_per_s:.0f} tokens/s, "
        f"peak memory {result.peak_memory_mb:.0f} MB" + (f", validation loss {final_val:.4f}" if final_val is not None else ""))
    return result


def compile_layers(model: Any) -> None:
    """torch.compile each transformer layer in place (dynamic shapes: batch widths vary). Compiling
    layers rather than the whole model keeps compile time to one layer's worth, reused 30 times."""
    from transformers.modeling_layers import (
        GradientCheckpointingLayer,  # the base of every transformer block
    )

    layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    for layer in layers:
        layer.compile(dynamic=True)
    say(f"torch.compile: {len(layers)} layers")


def validation_batches(examples: list, config: RunConfig, pad_id: int, collate: Callable) -> list:
    plans = plan_epoch([len(e) for e in examples], "group_by_length", config.train.batch_size,
                       config.data.max_length, seed=0, epoch=0)
    return [collate(examples, plan, pad_id) for plan in plans]


def data_fingerprint(examples: list) -> str:
    digest = hashlib.sha256()
    for example in examples:
        digest.update(example.fingerprint())
    return digest.hexdigest()


def load_tokenizer_and_template(method: Method, config: RunConfig, source: ModelSource) -> tuple[Any, TemplateInfo | None, str | None]:
    """The run's tokenizer, with the chat template its method trains through (and where that template came from)."""
    tokenizer = load_tokenizer(source, revision=config.model.revision, trust_remote_code=config.model.trust_remote_code)
    if not method.uses_chat_template:
        return tokenizer, None, None
    template_source = ensure_chat_template(tokenizer, config.model.chat_template, tools=file_uses_tools(config.data.train))
    return tokenizer, analyze_template(tokenizer, generation_eos(source)), template_source


def trainable_model(method: Method, source: ModelSource, config: RunConfig, data: PreparedData, precision: str,
                    device: torch.device) -> Any:
    """The model as training runs it: seeded, loaded in its weights' dtype, adapters or heads added, on `device`,
    on CPU with the blocked causal attention (models/attention.py), fused LoRA layers and RMSNorms
    (models/fused_lora.py, models/fused_norm.py)."""
    torch.manual_seed(config.train.seed)
    model = method.load_model(source, config, weights_dtype(precision, frozen_base=config.lora.enabled), data)
    if config.train.gradient_checkpointing is True:  # auto decides once the data's batches are planned
        enable_checkpointing(model)
    model = make_trainable(model, config.lora, task_type=method.peft_task_type).to(device)
    if not config.train.compile:  # on CPU; torch.compile keeps SDPA (the blocked kernel loops over blocks)
        use_training_attention(model, device)
        use_fused_lora(model, device)  # and peft's own LoRA layers, which compile traces as they are
        use_fused_norms(model, device)  # and transformers' RMSNorm (with a frozen scale)
    if method.peft_task_type == "CAUSAL_LM":
        choose_loss_path(model)  # once, before training: a model that changes its logits keeps its own forward
    return model


def peak_memory_mb() -> float:
    if torch.cuda.is_available() and torch.cuda.max_memory_allocated():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def final_weights(model: Any, run_folder: RunFolder, state: TrainState, world: World = ONE_PROCESS) -> float | None:
    """Put the best weights (lowest validation loss) in place; returns their validation loss, which
    was measured when they were current (the last step is always evaluated). With FSDP every
    process calls it, to load its shards of the best weights."""
    if state.best_val_loss is None:
        return None
    if world.is_main:
        recover_best(run_folder.checkpoints)
    world.barrier()
    best = run_folder.checkpoints / BEST
    if best.is_dir() and state.best_step != state.step:
        load_checkpoint(best, model, None, world.rank)
        say(f"final weights: step {state.best_step} (lowest validation loss), not the last step {state.step}")
    return state.best_val_loss


def gathered_model(model: Any, method: Method, source: ModelSource, config: RunConfig, data: PreparedData,
                   world: World) -> Any:
    """With FSDP: on rank 0 an ordinary model holding the whole trained weights, to save as any
    other (None on the other processes, whose shards were gathered to it)."""
    from tunesmith.training.distributed.fsdp import full_weights

    weights = full_weights(model, world.is_main)
    if not world.is_main:
        return None
    plain = method.load_model(source, config, torch.float32, data)
    plain.load_state_dict(weights)
    return plain


def save_outputs(model: Any, tokenizer: Any, run_folder: RunFolder, config: RunConfig, info: TemplateInfo | None,
                 source: ModelSource, method: Method, data: PreparedData) -> dict[str, str]:
    fence.check()
    model = model.to("cpu")
    stop_ids = info.stop_token_ids if info else ()
    outputs = {}
    if config.lora.enabled:
        outputs["adapter"] = str(save_adapter(model, tokenizer, run_folder.adapter))
        if config.output.save_merged:
            # Merge into the full-precision base weights (training may have held them in bf16).
            base = method.load_model(source, config, torch.float32, data)
            outputs["model"] = str(save_model(attach_adapter(base, run_folder.adapter), tokenizer, run_folder.model, stop_ids))
    else:
        outputs["model"] = str(save_model(model, tokenizer, run_folder.model, stop_ids))
    return outputs


def last_train_loss(run_folder: RunFolder) -> float | None:
    losses = [r["loss"] for r in read_metrics(run_folder.metrics) if "loss" in r]
    if not losses:
        return None
    tail = losses[-max(1, len(losses) // 10):]
    return sum(tail) / len(tail)


def report_data(data: PreparedData) -> None:
    for source in data.sources:
        cached = " (tokens from cache)" if source.from_cache else ""
        say(f"data {source.path}: {source.rows} rows, format {source.format}{cached}"
            + (f", {source.truncated} truncated" if source.truncated else ""))
    if data.skipped:
        listed = "; ".join(f"{count} x {reason}" for reason, count in summarize_reasons([p.what for p in data.skipped]))
        say(f"skipped {len({p.where for p in data.skipped})} invalid rows (data.skip_invalid): {listed}; "
            "`tunesmith data validate FILE` lists each")
    summary = data.summary()
    train, validation, unit = summary["train"], summary["validation"], data.unit
    if unit == "examples":
        say(f"{train['examples']} training examples ({train['loss_tokens']} of {train['tokens']} tokens in the loss), "
            f"{validation['examples']} validation examples")
    else:  # pairs, prompts or packed blocks: a count of loss tokens would mislead
        say(f"{train['examples']} training {unit} ({train['tokens']} tokens), {validation['examples']} validation {unit}")


def summarize_reasons(reasons: list[str]) -> list[tuple[str, int]]:
    """Reasons grouped by their wording, most frequent first; numbers that differ within a group are
    shown as their range ("example is 1030-2400 tokens, over data.max_length=1024")."""
    groups: dict[str, list[list[int]]] = {}
    for reason in reasons:
        text = reason.split(":")[0].split(" (")[0]
        groups.setdefault(re.sub(r"\d+", "\0", text), []).append([int(n) for n in re.findall(r"\d+", text)])
    summary = []
    for shape, numbers in sorted(groups.items(), key=lambda item: -len(item[1])):
        spans = [f"{min(c)}" if min(c) == max(c) else f"{min(c)}-{max(c)}" for c in zip(*numbers)]
        pieces = shape.split("\0")
        summary.append(("".join(piece + span for piece, span in zip(pieces, [*spans, ""])), len(numbers)))
    return summary


def write_manifest(run_folder: RunFolder, config: RunConfig, source: ModelSource, data: PreparedData,
                   info: TemplateInfo | None, template_source: str | None, result: RunResult, started: float) -> None:
    import peft
    import transformers

    manifest = {
        "tunesmith": __version__,
        "method": result.method,
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__, "peft": peft.__version__},
        "machine": {"platform": platform.platform(), "processor": platform.machine(),
                    "threads": torch.get_num_threads(), "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
                    "allocator": current_allocator()},  # the peak memory below depends on it (allocator.py)
        "base_model": {"spec": source.spec, "kind": source.kind, "location": source.location,
                       "weights": CATALOG[source.spec].weights if source.kind == "catalog" else None},
        "chat_template": template_source,
        "stop_token_ids": list(info.stop_token_ids) if info else [],
        "task": {"type": "label", "labels": list(data.task.labels), "prompt_template": data.task.prompt_template}
        if data.task else data.record or {"type": "generation"},
        "data": data.summary(),
        "started": datetime.fromtimestamp(started, UTC).isoformat(timespec="seconds"),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "wall_seconds": round(time.time() - started, 1),
        "results": {
            "steps": result.steps, "train_loss": result.train_loss,
            "baseline_val_loss": result.baseline_val_loss, "val_loss": result.val_loss,
            "val_ppl": perplexity(result.val_loss) if result.val_loss is not None else None,
            "best_step": result.best_step, "stopped_early": result.stopped_early,
            "train_seconds": round(result.train_seconds, 1),
            "train_tokens_per_s": round(result.tokens_per_s, 1), "peak_memory_mb": round(result.peak_memory_mb, 1),
        },
        "outputs": result.outputs,
        "config": config_to_dict(config),
    }
    fence.check()
    write_atomic(run_folder.manifest, json.dumps(manifest, indent=2))
