"""On-policy preference tuning: the model writes its own candidate answers, a reward ranks them,
and DPO pushes probability from the worst towards the best (after Tajwar et al. 2024).

One round = one optimizer step: take `preference.prompts_per_round` prompts, sample
`preference.samples` completions for each from the current model, score them with
`preference.reward`, pair the best with the worst (never a completion with itself, and no pair
when all scores tie), then one DPO step on those pairs against the adapter-free reference. Every
round's samples, scores and pairs are saved in rounds/, so a run can be inspected and reproduced;
sampling is seeded by (seed, step), so a resumed run samples exactly what it would have.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tunesmith.config import RunConfig
from tunesmith.data.batches import plan_epoch
from tunesmith.data.catalog import resolve_data_path
from tunesmith.data.examples import Example, Message, Problem
from tunesmith.data.pipeline import PreparedData, SourceData, read_source, split_validation
from tunesmith.data.tasks import build_label_task
from tunesmith.data.template import TemplateInfo
from tunesmith.data.tokenize import encode_prompt
from tunesmith.errors import ConfigError, DataError
from tunesmith.models.generate import LoadedModel, generate
from tunesmith.training.checkpoint import (
    TrainState,
    prune_checkpoints,
    save_checkpoint,
    step_folder,
)
from tunesmith.training.loop import LoopPlan, _clip, autocast, train_step
from tunesmith.training.preference import (
    collate_pairs,
    preference_loss,
    tokenize_pairs,
)
from tunesmith.training.rewards import load_reward
from tunesmith.training.schedule import lr_factor, warmup_steps
from tunesmith.training.session import Method, register_method, say
from tunesmith.training.sft import load_causal


@dataclass(frozen=True)
class PromptItem:
    messages: tuple[Message, ...]  # ends with the user turn to answer
    reference: str | None  # a reference answer, for `reference:` rewards
    source: str
    line: int
    length: int  # prompt tokens, for batching

    def __len__(self) -> int:
        return self.length

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}"

    @property
    def n_loss_tokens(self) -> int:
        return 1

    @property
    def question(self) -> str:
        return self.messages[-1].content

    def fingerprint(self) -> bytes:
        return json.dumps([[m.role, m.content] for m in self.messages]).encode()


def prepare_prompts(config: RunConfig, tokenizer: Any, info: TemplateInfo | None) -> PreparedData:
    data = config.data
    if not data.train:
        raise ConfigError("no training data: set data.train (prompts: rows with 'prompt', chat, instruction or labelled rows)")
    raws = [read_source(resolve_data_path(data.train), data)]
    task = build_label_task(raws[0].examples, config.task)
    items, problems = prompt_items(raws[0].examples, task, tokenizer, info)
    problems = list(raws[0].problems) + problems
    if data.validation:
        raws.append(read_source(resolve_data_path(data.validation), data))
        validation, more = prompt_items(raws[1].examples, task, tokenizer, info)
        problems += list(raws[1].problems) + more
    else:
        items, validation = split_validation(items, data.validation_split, config.train.seed)
    if problems and not data.skip_invalid:
        raise DataError(f"{problems[0].where.rsplit(':', 1)[0]}: {len(problems)} problems. Fix "
                        "them, or set data.skip_invalid=true to leave those rows out:", problems)
    if not items:
        raise DataError(f"{raws[0].path}: no prompts to sample from")
    sources = [SourceData(raw.path, raw.format, raw.rows, items if n == 0 else validation,
                          [p for p in problems if p.where.startswith(str(raw.path))]) for n, raw in enumerate(raws)]
    return PreparedData(items, validation, sources, problems, task, unit="prompts")


def prompt_items(examples: list[Example], task: Any, tokenizer: Any, info: TemplateInfo) -> tuple[list[PromptItem], list[Problem]]:
    items, problems = [], []
    for example in examples:
        if example.kind == "prompt":
            messages, reference = example.messages, None
        elif example.kind == "chat":
            messages, reference = example.messages[:-1], example.messages[-1].content
        elif example.kind == "preference":
            messages, reference = example.messages, example.chosen
        elif example.kind == "label" and task is not None:
            messages, reference = (Message("user", task.prompt(example.text)),), task.name_of(example.label)
        else:
            problems.append(Problem(example.where, f"a {example.kind} row is not a prompt",
                                    "give rows with a 'prompt', or chat / instruction / labelled rows"))
            continue
        length = len(encode_prompt(tokenizer, info, list(messages)))
        items.append(PromptItem(tuple(messages), reference, example.source, example.line, length))
    return items, problems


def build_pairs(prompts: list[PromptItem], completions: list[str], scores: list[float], samples: int) -> list[dict]:
    """Per prompt: the best and the worst of its samples, unless they tie in score or in text."""
    rounds = []
    for number, prompt in enumerate(prompts):
        texts = completions[number * samples:(number + 1) * samples]
        values = scores[number * samples:(number + 1) * samples]
        best, worst = int(np.argmax(values)), int(np.argmin(values))
        usable = values[best] > values[worst] and texts[best].strip() != texts[worst].strip()
        rounds.append({"where": prompt.where, "prompt": prompt.question,
                       "samples": [{"text": t, "score": v} for t, v in zip(texts, values)],
                       "chosen": best if usable else None, "rejected": worst if usable else None})
    return rounds


def online_fit(model: Any, optimizer: torch.optim.Optimizer, data: PreparedData, plan: LoopPlan, state: TrainState, *,
               config: RunConfig, tokenizer: Any, info: TemplateInfo, run_folder: Any) -> TrainState:
    settings = config.preference
    if settings.loss == "dpo" and not config.lora.enabled:
        raise ConfigError("online-dpo with full fine-tuning would need a second copy of the model as reference; "
                          "use LoRA (the reference is the model with its adapter off) or preference.loss=simpo")
    reward = load_reward(settings.reward)
    rounds_dir = Path(run_folder.path) / "rounds"
    rounds_dir.mkdir(exist_ok=True)
    policy = LoadedModel(model, tokenizer, info, "policy")
    trainable = [p for p in model.parameters() if p.requires_grad]
    warmup = warmup_steps(plan.total_steps, config.train.warmup_ratio)
    loss_fn = preference_loss(config, data)
    while state.step < plan.total_steps:
        started = time.perf_counter()
        prompts = next_prompts(data.train, state, settings.prompts_per_round, config.train.seed)
        model.eval()
        with autocast(plan.device, plan.precision):
            generated = generate(policy, [p.messages for p in prompts for _ in range(settings.samples)],
                                 max_new_tokens=settings.max_new_tokens, temperature=settings.temperature, top_p=settings.top_p,
                                 batch_size=max(8, settings.samples), seed=config.train.seed * 100_003 + state.step)
        model.train()
        questions = [p.question for p in prompts for _ in range(settings.samples)]
        references = [p.reference for p in prompts for _ in range(settings.samples)]
        scores = reward(questions, generated.texts, references)
        round_rows = build_pairs(prompts, generated.texts, scores, settings.samples)
        (rounds_dir / f"round-{state.step + 1:06d}.jsonl").write_text(
            "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in round_rows))
        sampled = time.perf_counter()
        record = {"step": state.step + 1, "reward_mean": float(np.mean(scores)),
                  "reward_best_mean": float(np.mean([max(r["samples"], key=lambda s: s["score"])["score"] for r in round_rows])),
                  "sample_seconds": sampled - started}
        lr = plan.peak_lr * lr_factor(state.step, plan.total_steps, warmup, config.train.scheduler)
        for group in optimizer.param_groups:
            group["lr"] = lr
        pair_rows = [Example(prompt.source, prompt.line, "preference", messages=prompt.messages,
                             chosen=row["samples"][row["chosen"]]["text"], rejected=row["samples"][row["rejected"]]["text"])
                     for prompt, row in zip(prompts, round_rows) if row["chosen"] is not None]
        record["pairs"] = len(pair_rows)
        if pair_rows:
            pairs, _ = tokenize_pairs(pair_rows, tokenizer, info, config.data.max_length, True, first_key=0)
            data.extras["reference"] = torch.full((len(pairs), 2), float("nan"))  # filled batch by batch, adapter off
            plans = plan_epoch([len(p) for p in pairs], "group_by_length", config.train.batch_size, config.data.max_length, 0, 0)
            loss_sum, loss_tokens, tokens, metrics = train_step(
                model, [collate_pairs(pairs, p, tokenizer.pad_token_id) for p in plans], loss_fn, plan.device, plan.precision)
            record.update({"loss": loss_sum / max(loss_tokens, 1), "grad_norm": _clip(trainable, config.train.max_grad_norm),
                           "tokens": tokens, **metrics})
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            state.tokens_seen += tokens
        state.step += 1
        state.train_seconds += time.perf_counter() - sampled
        record.update({"lr": lr, "train_seconds": time.perf_counter() - sampled})
        plan.metrics.write(record)
        say(f"round {state.step}/{plan.total_steps}: mean reward {record['reward_mean']:.3f}, {record['pairs']} pairs"
            + (f", loss {record['loss']:.4f}" if "loss" in record else ""))
        if state.step == plan.total_steps or (config.train.save_every and state.step % config.train.save_every == 0):
            save_checkpoint(step_folder(plan.checkpoints, state.step), model, optimizer, state)
            prune_checkpoints(plan.checkpoints, config.train.keep_checkpoints)
    return state


def next_prompts(items: list[PromptItem], state: TrainState, count: int, seed: int) -> list[PromptItem]:
    """The next `count` prompts of a seeded order per epoch; the position lives in the train state."""
    chosen = []
    while len(chosen) < count:
        order = np.random.default_rng([seed, state.epoch]).permutation(len(items))
        if state.micro_index >= len(order):
            state.epoch, state.micro_index = state.epoch + 1, 0
            continue
        chosen.append(items[order[state.micro_index]])
        state.micro_index += 1
    return chosen


def rounds_per_epoch(config: RunConfig, data: PreparedData) -> int:
    return math.ceil(len(data.train) / config.preference.prompts_per_round)


ONLINE_DPO = register_method(Method(
    name="online-dpo",
    description="on-policy preference tuning: sample, score with preference.reward, pair best with worst, DPO",
    prepare_data=prepare_prompts,
    load_model=load_causal,
    collate=collate_pairs,
    make_loss=preference_loss,
    fit=online_fit,
    steps_per_epoch=rounds_per_epoch,
))
