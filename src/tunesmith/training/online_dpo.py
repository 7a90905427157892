"""On-policy preference tuning: the model writes its own candidate answers, a reward ranks them,
and DPO pushes probability from the worst towards the best (after Tajwar et al. 2024).

One round = one optimizer step of the shared loop (loop.fit), whose batches come from OnPolicyRounds:
take `preference.prompts_per_round` prompts, sample `preference.samples` completions for each from
the current model, score them with `preference.reward`, pair the best with the worst (never a
completion with itself, and no pair when all scores tie), then one DPO step on those pairs against
the adapter-free reference. Every round's samples, scores and pairs are saved in rounds/, so a run
can be inspected and reproduced; sampling is seeded by (seed, step), so a resumed run samples
exactly what it would have. Sampling time counts in the step's time (tokens/s).

A pair is the prompt followed by the sampled tokens themselves, all of them in the loss. A sample
that stopped ends with the stop token the model produced; one cut at `preference.max_new_tokens` is
not a finished reply and ends where it was cut, with no end-of-turn token the model never produced.

Validation: the mean reward of greedy answers to the held-out prompts (`val_reward_mean`) every
`train.eval_every` steps. There are no held-out pairs to take a DPO loss on, and the reward is what
the run is for. It goes into the records only: it is not a loss, so it neither picks the weights kept
nor stops the run early; the saved model is the last step's, and the win rate after training
measures that model.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tunesmith.config import RunConfig
from tunesmith.data.batches import plan_epoch
from tunesmith.data.pipeline import PreparedData
from tunesmith.data.prompts import PromptItem, prepare_prompts
from tunesmith.data.template import TemplateInfo
from tunesmith.data.tokenize import TokenizedExample, encode_prompt
from tunesmith.errors import ConfigError
from tunesmith.files import write_atomic
from tunesmith.models.device import autocast
from tunesmith.models.generate import Generated, LoadedModel, generate
from tunesmith.training.checkpoint import TrainState
from tunesmith.training.loop import LoopPlan
from tunesmith.training.preference import PairBatch, PairExample, collate_pairs, preference_loss
from tunesmith.training.registry import Method, register_method
from tunesmith.training.rewards import Reward, load_reward
from tunesmith.training.sft import load_causal


def prepare_online(config: RunConfig, tokenizer: Any, info: TemplateInfo | None) -> PreparedData:
    """Everything checked before a model loads: settings online-dpo cannot honour, the reward (loaded
    now, so a missing file or untrusted code stops the run here), and prompts that leave room for a
    reply of `preference.max_new_tokens` within data.max_length."""
    settings = config.preference
    if settings.loss == "dpo" and not config.lora.enabled:
        raise ConfigError("online-dpo with full fine-tuning would need a second copy of the model as reference; "
                          "use LoRA (the reference is the model with its adapter off) or preference.loss=simpo")
    if config.train.early_stopping_patience is not None:
        raise ConfigError("train.early_stopping_patience: online-dpo validates by the reward of greedy answers, not "
                          "by a loss, and keeps its last step's weights; unset train.early_stopping_patience")
    reward = load_reward(settings.reward, trust_code=settings.trust_reward_code)
    data = prepare_prompts(config, tokenizer, info, reply_tokens=settings.max_new_tokens)
    data.extras["reward"] = reward
    return data


def build_pairs(prompts: list[PromptItem], completions: list[str], scores: list[float], finishes: list[str],
                samples: int) -> list[dict]:
    """Per prompt: the best and the worst of its samples, unless they tie in score or in text."""
    rounds = []
    for number, prompt in enumerate(prompts):
        span = slice(number * samples, (number + 1) * samples)
        texts, values = completions[span], scores[span]
        best, worst = int(np.argmax(values)), int(np.argmin(values))
        usable = values[best] > values[worst] and texts[best].strip() != texts[worst].strip()
        rounds.append({"where": prompt.where, "prompt": prompt.question,
                       "samples": [{"text": t, "score": v, "finish": f} for t, v, f in zip(texts, values, finishes[span])],
                       "chosen": best if usable else None, "rejected": worst if usable else None})
    return rounds


def pair_examples(prompts: list[PromptItem], round_rows: list[dict], token_ids: list[list[int]], samples: int,
                  tokenizer: Any, info: TemplateInfo) -> list[PairExample]:
    """The usable rows of a round as pairs of token sequences, keyed 0, 1, ... in the round."""
    pairs = []
    for number, (prompt, row) in enumerate(zip(prompts, round_rows)):
        if row["chosen"] is None:
            continue
        prompt_ids = encode_prompt(tokenizer, info, list(prompt.messages))  # as generate encoded it
        chosen, rejected = (sampled_sequence(prompt_ids, token_ids[number * samples + row[side]], prompt)
                            for side in ("chosen", "rejected"))
        pairs.append(PairExample(chosen, rejected, len(pairs), prompt.source, prompt.line))
    return pairs


def sampled_sequence(prompt_ids: list[int], reply_ids: list[int], prompt: PromptItem) -> TokenizedExample:
    """The prompt, then the sampled tokens as they were sampled (not decoded and tokenized again),
    every one of them in the loss: a stop token only when the model produced one."""
    ids = np.asarray([*prompt_ids, *reply_ids], dtype=np.int32)
    loss_mask = np.arange(len(ids)) >= len(prompt_ids)
    return TokenizedExample(ids, loss_mask, prompt.source, prompt.line)


class OnPolicyRounds:
    """The loop's window source for online-dpo: each step's pairs, sampled from the model as it is."""

    def __init__(self, model: Any, data: PreparedData, config: RunConfig, folder: Path, device: torch.device,
                 precision: str, tokenizer: Any, info: TemplateInfo) -> None:
        self.policy = LoadedModel(model, tokenizer, info, "policy")
        self.data, self.config = data, config
        self.reward: Reward = data.extras["reward"]
        self.rounds_dir = Path(folder) / "rounds"
        self.device, self.precision = device, precision

    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.data.train) / self.config.preference.prompts_per_round)

    def normalizer(self, epoch: int) -> float | None:
        return None  # each step's loss is the mean over its own pairs

    def epoch_progress(self, state: TrainState) -> float:
        return state.epoch + state.micro_index / len(self.data.train)

    def next_window(self, state: TrainState) -> tuple[list[PairBatch], dict[str, float]]:
        """Sample, score, save the round, pair; the micro-batches of the round's one optimizer step."""
        settings, started = self.config.preference, time.perf_counter()
        prompts = next_prompts(self.data.train, state, settings.prompts_per_round, self.config.train.seed)
        repeated = [p for p in prompts for _ in range(settings.samples)]
        sampled = self.sample([p.messages for p in repeated], seed=self.config.train.seed * 100_003 + state.step)
        scores = self.reward([p.question for p in repeated], sampled.texts, [p.reference for p in repeated],
                             [p.where for p in repeated])
        round_rows = build_pairs(prompts, sampled.texts, scores, sampled.finish_reasons, settings.samples)
        write_atomic(self.rounds_dir / f"round-{state.step + 1:06d}.jsonl",
                     "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in round_rows))
        pairs = pair_examples(prompts, round_rows, sampled.token_ids, settings.samples, self.policy.tokenizer,
                              self.policy.info)
        self.data.extras["reference"] = torch.full((len(pairs), 2), float("nan"))  # filled batch by batch, adapter off
        plans = plan_epoch([len(p) for p in pairs], "group_by_length", self.config.train.batch_size,
                           self.config.data.max_length, 0, 0)
        metrics = {"reward_mean": float(np.mean(scores)),
                   "reward_best_mean": float(np.mean([max(s["score"] for s in r["samples"]) for r in round_rows])),
                   "pairs": len(pairs), "cut_samples": sampled.finish_reasons.count("length"),
                   "sample_seconds": time.perf_counter() - started}
        return [collate_pairs(pairs, plan, self.policy.tokenizer.pad_token_id) for plan in plans], metrics

    def sample(self, prompts: list[Any], seed: int) -> Generated:
        settings, model = self.config.preference, self.policy.model
        model.eval()
        with autocast(self.device, self.precision):
            sampled = generate(self.policy, prompts, max_new_tokens=settings.max_new_tokens, temperature=settings.temperature,
                               top_p=settings.top_p, batch_size=max(8, settings.samples), seed=seed)
        model.train()
        return sampled


class GreedyReward:
    """online-dpo's validation: the mean reward of greedy answers to the held-out prompts."""

    def __init__(self, policy: LoadedModel, prompts: list[PromptItem], reward: Reward, config: RunConfig) -> None:
        self.policy, self.prompts, self.reward, self.config = policy, prompts, reward, config

    def __len__(self) -> int:
        return len(self.prompts)

    def measure(self, model: Any, plan: LoopPlan) -> dict[str, float]:
        was_training = model.training
        model.eval()
        with autocast(plan.device, plan.precision):
            answers = generate(self.policy, [p.messages for p in self.prompts], max_new_tokens=self.config.preference.max_new_tokens,
                               batch_size=self.config.eval.batch_size).texts
        model.train(was_training)
        scores = self.reward([p.question for p in self.prompts], answers, [p.reference for p in self.prompts],
                             [p.where for p in self.prompts])
        return {"val_reward_mean": float(np.mean(scores))}


def online_source(model: Any, data: PreparedData, config: RunConfig, folder: Path, device: torch.device, precision: str,
                  tokenizer: Any, info: TemplateInfo) -> tuple[OnPolicyRounds, GreedyReward]:
    rounds = OnPolicyRounds(model, data, config, folder, device, precision, tokenizer, info)
    return rounds, GreedyReward(rounds.policy, data.validation, rounds.reward, config)


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


ONLINE_DPO = register_method(Method(
    name="online-dpo",
    description="on-policy preference tuning: sample, score with preference.reward, pair best with worst, DPO",
    prepare_data=prepare_online,
    load_model=load_causal,
    collate=collate_pairs,
    make_loss=preference_loss,
    window_source=online_source,
))
