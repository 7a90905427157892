"""The rollout path of the on-policy methods (online-dpo, grpo): take the next prompts, sample a group
of completions per prompt from the model as it is (batched, KV-cached decoding), score them with the
reward, and save what was sampled in the run folder's rounds/, one JSON line per prompt.

Sampling is seeded by (train.seed, step): a resumed run samples exactly what it would have, whatever
the random state, and the prompts' order per epoch is seeded too, its position kept in the loop state.

A reward here is a `RowReward`: (prompts, completions, rows) -> one score per completion, where rows
are the prompt rows themselves (data/prompts.py's PromptItem: messages, reference answer, file:line),
so that a grader reading a row's fields plugs in where preference.reward's functions do.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tunesmith.config import RunConfig
from tunesmith.data.prompts import PromptItem
from tunesmith.data.tokenize import TokenizedExample
from tunesmith.files import write_atomic
from tunesmith.models.device import autocast
from tunesmith.models.generate import Generated, LoadedModel, generate
from tunesmith.training.checkpoint import TrainState
from tunesmith.training.loop import LoopPlan
from tunesmith.training.rewards import Reward

# Completions sampled in one generate call: a whole rollout at once where it fits (4 prompts x 8 took
# 1.4-1.7x longer in 4 calls of 8 rows than in one of 32, benchmarks/grpo_throughput.py)
ROLLOUT_BATCH = 64
RowReward = Callable[[list[str], list[str], list[PromptItem]], list[float]]


def row_reward(reward: Reward) -> RowReward:
    """preference.reward's reward (prompts, completions, references, wheres) as a RowReward."""
    def score(prompts: list[str], completions: list[str], rows: list[PromptItem]) -> list[float]:
        return reward(prompts, completions, [r.reference for r in rows], [r.where for r in rows])

    return score


class Scores(list):
    """A round's rewards, with each named sub-grader's reward per completion (`parts`) and how many
    completions the grader could not grade (reward 0), for the step's metrics."""

    def __init__(self, values: list[float], parts: dict[str, list[float]] | None = None, failed: int = 0) -> None:
        super().__init__(values)
        self.parts, self.failed = parts or {}, failed


def grader_reward(raw: dict[str, Any], *, trust_python: bool) -> RowReward:
    """grpo.grader as a RowReward: OpenAI's grader on each completion, `item` being its prompt row's own
    fields. Checked now (ConfigError naming the field), so a bad grader stops the run before a model loads."""
    from tunesmith.errors import ConfigError
    from tunesmith.graders import GraderError, MultiGrader, validate_grader
    from tunesmith.graders.run import grade_outcomes, refuse_untrusted_python

    try:
        grader = validate_grader(raw)
        refuse_untrusted_python(grader, trust_python)
    except GraderError as error:
        fix = " (tunesmith train --trust-python-graders, or grpo.trust_python_grader=true)" if "python" in str(error) else ""
        raise ConfigError("\n".join(f"grpo.{problem}" for problem in error.problems) + fix) from None
    names = list(grader.graders) if isinstance(grader, MultiGrader) else []

    def score(prompts: list[str], completions: list[str], rows: list[PromptItem]) -> list[float]:
        outcomes = grade_outcomes(grader, completions, [row.fields for row in rows], allow_python=trust_python)
        parts = {name: [outcome.sub_rewards.get(name, 0.0) for outcome in outcomes] for name in names}
        return Scores([outcome.reward for outcome in outcomes], parts, sum(not outcome.ok for outcome in outcomes))

    return score


@dataclass(frozen=True)
class Sampling:
    """How completions are sampled: per prompt `samples` of them, at most `max_new_tokens` each."""

    samples: int
    max_new_tokens: int
    temperature: float
    top_p: float
    top_k: int = 0  # 0: no top-k cut


@dataclass
class Rollout:
    """One round's prompts, and per prompt `samples` completions in a row (prompt-major) with their scores."""

    prompts: list[PromptItem]
    sampled: Generated
    scores: list[float]
    samples: int
    seconds: float

    @property
    def rows(self) -> list[PromptItem]:
        """The prompt row of each completion."""
        return [p for p in self.prompts for _ in range(self.samples)]

    def groups(self) -> list[slice]:
        return [slice(n * self.samples, (n + 1) * self.samples) for n in range(len(self.prompts))]


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


def sample_rollout(policy: LoadedModel, prompts: list[PromptItem], sampling: Sampling, reward: RowReward, seed: int,
                   device: torch.device, precision: str) -> Rollout:
    """`sampling.samples` completions of each prompt from the model as it is, scored by `reward`."""
    started = time.perf_counter()
    repeated = [p for p in prompts for _ in range(sampling.samples)]
    model = policy.model
    was_training = model.training
    model.eval()
    with autocast(device, precision):
        sampled = generate(policy, [p.messages for p in repeated], max_new_tokens=sampling.max_new_tokens,
                           temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k,
                           batch_size=min(len(repeated), ROLLOUT_BATCH), seed=seed)
    model.train(was_training)
    scores = reward([p.question for p in repeated], sampled.texts, repeated)
    return Rollout(prompts, sampled, scores, sampling.samples, time.perf_counter() - started)


def round_rows(rollout: Rollout) -> list[dict]:
    """Per prompt: where it came from, its question and its samples (text, score, why it ended)."""
    return sample_rows(rollout.prompts, rollout.sampled.texts, rollout.scores, rollout.sampled.finish_reasons,
                       rollout.samples)


def sample_rows(prompts: list[PromptItem], completions: list[str], scores: list[float], finishes: list[str],
                samples: int) -> list[dict]:
    rows = []
    for number, prompt in enumerate(prompts):
        span = slice(number * samples, (number + 1) * samples)
        rows.append({"where": prompt.where, "prompt": prompt.question, "samples": [
            {"text": t, "score": v, "finish": f} for t, v, f in zip(completions[span], scores[span], finishes[span])]})
    return rows


def write_round(folder: Path, step: int, rows: list[dict]) -> Path:
    """rounds/round-NNNNNN.jsonl of the run folder, written whole or not at all."""
    path = Path(folder) / "rounds" / f"round-{step:06d}.jsonl"
    write_atomic(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    return path


def rollout_metrics(rollout: Rollout) -> dict[str, float]:
    """What every on-policy step records of its rollout."""
    lengths = [len(ids) for ids in rollout.sampled.token_ids]
    metrics = {"reward_mean": float(np.mean(rollout.scores)), "reward_std": float(np.std(rollout.scores)),
               "completion_length_mean": float(np.mean(lengths)),
               "cut_samples": rollout.sampled.finish_reasons.count("length"), "sample_seconds": rollout.seconds}
    if isinstance(rollout.scores, Scores):
        metrics |= {f"reward_{name}": float(np.mean(values)) for name, values in rollout.scores.parts.items()}
        metrics["ungraded_samples"] = rollout.scores.failed
    return metrics


def sampled_sequence(prompt_ids: list[int], reply_ids: list[int], prompt: PromptItem) -> TokenizedExample:
    """The prompt, then the sampled tokens as they were sampled (not decoded and tokenized again),
    every one of them in the loss: a stop token only when the model produced one."""
    ids = np.asarray([*prompt_ids, *reply_ids], dtype=np.int32)
    loss_mask = np.arange(len(ids)) >= len(prompt_ids)
    return TokenizedExample(ids, loss_mask, prompt.source, prompt.line)


class GreedyReward:
    """The on-policy methods' validation: the mean reward of greedy answers to the held-out prompts."""

    def __init__(self, policy: LoadedModel, prompts: list[PromptItem], reward: RowReward, max_new_tokens: int,
                 batch_size: int) -> None:
        self.policy, self.prompts, self.reward = policy, prompts, reward
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size

    def __len__(self) -> int:
        return len(self.prompts)

    def measure(self, model: Any, plan: LoopPlan) -> dict[str, float]:
        was_training = model.training
        model.eval()
        with autocast(plan.device, plan.precision):
            answers = generate(self.policy, [p.messages for p in self.prompts], max_new_tokens=self.max_new_tokens,
                               batch_size=self.batch_size).texts
        model.train(was_training)
        scores = self.reward([p.question for p in self.prompts], answers, self.prompts)
        return {"val_reward_mean": float(np.mean(scores))}


def check_on_policy(config: RunConfig, method: str) -> None:
    """What the on-policy methods cannot honour: early stopping on a validation loss they do not have."""
    from tunesmith.errors import ConfigError

    if config.train.early_stopping_patience is not None:
        raise ConfigError(f"train.early_stopping_patience: {method} validates by the reward of greedy answers, not "
                          "by a loss, and keeps its last step's weights; unset train.early_stopping_patience")
