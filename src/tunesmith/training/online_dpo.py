"""On-policy preference tuning: the model writes its own candidate answers, a reward ranks them,
and DPO pushes probability from the worst towards the best (after Tajwar et al. 2024).

One round = one optimizer step of the shared loop (loop.fit), whose batches come from OnPolicyRounds:
take `preference.prompts_per_round` prompts, sample `preference.samples` completions for each from
the current model, score them with `preference.reward`, pair the best with the worst (never a
completion with itself, and no pair when all scores tie), then one DPO step on those pairs against
the adapter-free reference. Every round's samples, scores and pairs are saved in rounds/, so a run
can be inspected and reproduced; sampling is seeded by (seed, step), so a resumed run samples
exactly what it would have. Sampling time counts in the step's time (tokens/s). Sampling, scoring
and the rounds/ files are rollout.py's, the path grpo samples through too.

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

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tunesmith.config import RunConfig
from tunesmith.data.batches import plan_epoch
from tunesmith.data.pipeline import PreparedData
from tunesmith.data.prompts import PromptItem, prepare_prompts
from tunesmith.data.template import TemplateInfo
from tunesmith.data.tokenize import encode_prompt
from tunesmith.errors import ConfigError
from tunesmith.models.generate import LoadedModel
from tunesmith.training.checkpoint import TrainState
from tunesmith.training.preference import PairBatch, PairExample, collate_pairs, preference_loss
from tunesmith.training.registry import Method, register_method
from tunesmith.training.rewards import load_reward
from tunesmith.training.rollout import (
    GreedyReward,
    RowReward,
    Sampling,
    check_on_policy,
    next_prompts,
    rollout_metrics,
    row_reward,
    sample_rollout,
    sample_rows,
    sampled_sequence,
    write_round,
)
from tunesmith.training.sft import load_causal


def prepare_online(config: RunConfig, tokenizer: Any, info: TemplateInfo | None) -> PreparedData:
    """Everything checked before a model loads: settings online-dpo cannot honour, the reward (loaded
    now, so a missing file or untrusted code stops the run here), and prompts that leave room for a
    reply of `preference.max_new_tokens` within data.max_length."""
    settings = config.preference
    if settings.loss == "dpo" and not config.lora.enabled:
        raise ConfigError("online-dpo with full fine-tuning would need a second copy of the model as reference; "
                          "use LoRA (the reference is the model with its adapter off) or preference.loss=simpo")
    check_on_policy(config, "online-dpo")
    reward = row_reward(load_reward(settings.reward, trust_code=settings.trust_reward_code))
    data = prepare_prompts(config, tokenizer, info, reply_tokens=settings.max_new_tokens)
    data.extras["reward"] = reward
    return data


def build_pairs(prompts: list[PromptItem], completions: list[str], scores: list[float], finishes: list[str],
                samples: int) -> list[dict]:
    """Per prompt: its samples, and the best and the worst of them, unless they tie in score or in text."""
    rows = sample_rows(prompts, completions, scores, finishes, samples)
    for row in rows:
        texts, values = [s["text"] for s in row["samples"]], [s["score"] for s in row["samples"]]
        best, worst = int(np.argmax(values)), int(np.argmin(values))
        usable = values[best] > values[worst] and texts[best].strip() != texts[worst].strip()
        row.update(chosen=best if usable else None, rejected=worst if usable else None)
    return rows


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


class OnPolicyRounds:
    """The loop's window source for online-dpo: each step's pairs, sampled from the model as it is."""

    def __init__(self, model: Any, data: PreparedData, config: RunConfig, folder: Path, device: torch.device,
                 precision: str, tokenizer: Any, info: TemplateInfo) -> None:
        self.policy = LoadedModel(model, tokenizer, info, "policy")
        self.data, self.config = data, config
        self.reward: RowReward = data.extras["reward"]
        self.folder = Path(folder)
        self.device, self.precision = device, precision

    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.data.train) / self.config.preference.prompts_per_round)

    def normalizer(self, epoch: int) -> float | None:
        return None  # each step's loss is the mean over its own pairs

    def epoch_progress(self, state: TrainState) -> float:
        return state.epoch + state.micro_index / len(self.data.train)

    def next_window(self, state: TrainState) -> tuple[list[PairBatch], dict[str, float]]:
        """Sample, score, save the round, pair; the micro-batches of the round's one optimizer step."""
        settings = self.config.preference
        prompts = next_prompts(self.data.train, state, settings.prompts_per_round, self.config.train.seed)
        sampling = Sampling(settings.samples, settings.max_new_tokens, settings.temperature, settings.top_p)
        rollout = sample_rollout(self.policy, prompts, sampling, self.reward, self.config.train.seed * 100_003 + state.step,
                                 self.device, self.precision)
        rows = build_pairs(prompts, rollout.sampled.texts, rollout.scores, rollout.sampled.finish_reasons, settings.samples)
        write_round(self.folder, state.step + 1, rows)
        pairs = pair_examples(prompts, rows, rollout.sampled.token_ids, settings.samples, self.policy.tokenizer,
                              self.policy.info)
        self.data.extras["reference"] = torch.full((len(pairs), 2), float("nan"))  # filled batch by batch, adapter off
        plans = plan_epoch([len(p) for p in pairs], "group_by_length", self.config.train.batch_size,
                           self.config.data.max_length, 0, 0)
        metrics = {**rollout_metrics(rollout),
                   "reward_best_mean": float(np.mean([max(s["score"] for s in r["samples"]) for r in rows])),
                   "pairs": len(pairs)}
        return [collate_pairs(pairs, plan, self.policy.tokenizer.pad_token_id) for plan in plans], metrics


def online_source(model: Any, data: PreparedData, config: RunConfig, folder: Path, device: torch.device, precision: str,
                  tokenizer: Any, info: TemplateInfo) -> tuple[OnPolicyRounds, GreedyReward]:
    rounds = OnPolicyRounds(model, data, config, folder, device, precision, tokenizer, info)
    return rounds, GreedyReward(rounds.policy, data.validation, rounds.reward, config.preference.max_new_tokens,
                                config.eval.batch_size)


ONLINE_DPO = register_method(Method(
    name="online-dpo",
    description="on-policy preference tuning: sample, score with preference.reward, pair best with worst, DPO",
    prepare_data=prepare_online,
    load_model=load_causal,
    collate=collate_pairs,
    make_loss=preference_loss,
    window_source=online_source,
))
