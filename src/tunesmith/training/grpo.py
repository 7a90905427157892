"""GRPO, group relative policy optimisation (Shao et al. 2024, DeepSeekMath): per prompt a group of
`grpo.group_size` completions sampled from the model as it is, each scored by `preference.reward`;
a completion's advantage is its reward less its group's mean (divided by the group's standard
deviation with `grpo.scale_rewards`), the same for each of its tokens; the loss is the clipped
policy-ratio objective plus `grpo.beta` times a KL estimate to the reference.

A rollout (`grpo.prompts_per_step` prompts x `grpo.group_size` completions) is sampled, scored and
saved in rounds/ by rollout.py, the path online-dpo samples through; it feeds `grpo.epochs`
optimizer steps (mu) of the shared loop, each over all of its completions. At the first of them the
policy is the one that sampled, so the ratio is exp(logp - logp.detach()) = 1 and the clip never
binds; the later ones divide by the log-probabilities the sampling policy gave, measured right
after sampling. The reference is the model with its adapter off (peft's disable_adapter: no second
copy of the weights), measured once per rollout; its per-token KL is Schulman's k3 estimate,
exp(ref - logp) - (ref - logp) - 1, as in the GRPO paper and TRL.

Loss normalisation (`grpo.loss_type`): dapo sums the per-token losses over the step's completion
tokens and divides by their number; grpo averages each completion's tokens, then the completions;
dr_grpo divides the sum by completions x grpo.max_new_tokens. The loop divides a step's summed loss
by the sum of its micro-batches' `n_loss_tokens`, so each batch counts its completion tokens (dapo)
or its completions (grpo, dr_grpo) there; the update does not depend on train.batch_size.

Resume: sampling is seeded by (train.seed, step) and the prompts' order by (train.seed, epoch), so a
resumed run samples what it would have. With grpo.epochs > 1 a rollout's tokens, advantages and
sampling/reference log-probabilities are saved next to its round (rollout-NNNNNN.safetensors): a
run killed between two of its steps continues from the same rollout, not a new one.

Several processes: refused (session.check_distributed), as online-dpo: each process would sample
its own rollout.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from tunesmith.config import RunConfig
from tunesmith.data.batches import Batch, collate, plan_epoch
from tunesmith.data.pipeline import PreparedData
from tunesmith.data.prompts import prepare_prompts
from tunesmith.data.template import TemplateInfo
from tunesmith.data.tokenize import TokenizedExample, encode_prompt
from tunesmith.errors import ConfigError
from tunesmith.files import atomic_path
from tunesmith.models.device import attention_kernel, autocast
from tunesmith.models.generate import LoadedModel
from tunesmith.models.loss_eval import LossFn
from tunesmith.training.checkpoint import TrainState
from tunesmith.training.loss import loss_token_log_probs
from tunesmith.training.registry import Method, register_method
from tunesmith.training.rewards import load_reward
from tunesmith.training.rollout import (
    GreedyReward,
    Rollout,
    RowReward,
    Sampling,
    check_on_policy,
    grader_reward,
    next_prompts,
    rollout_metrics,
    round_rows,
    row_reward,
    sample_rollout,
    sampled_sequence,
    write_round,
)
from tunesmith.training.sft import load_causal

ADVANTAGE_EPSILON = 1e-4  # added to a group's standard deviation, as TRL does


# ------------------------------------------------------------------------------------------- math


def group_advantages(rewards: torch.Tensor, group_size: int, scale: bool) -> torch.Tensor:
    """Each reward less its group's mean, over the group's standard deviation (sample std, as TRL's
    torch.std) + 1e-4 when `scale`; `rewards` holds the groups one after another."""
    grouped = rewards.float().view(-1, group_size)
    centred = grouped - grouped.mean(dim=1, keepdim=True)
    if scale:
        centred = centred / (grouped.std(dim=1, keepdim=True) + ADVANTAGE_EPSILON)
    return centred.flatten()


def no_signal_share(rewards: torch.Tensor, group_size: int) -> float:
    """The share of groups whose rewards are all equal: their advantages are 0, nothing to learn."""
    grouped = rewards.view(-1, group_size)
    return float((grouped.max(dim=1).values == grouped.min(dim=1).values).float().mean())


def clipped_token_losses(log_probs: torch.Tensor, old_log_probs: torch.Tensor, reference_log_probs: torch.Tensor | None,
                         advantages: torch.Tensor, clip_epsilon: float,
                         beta: float) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Per token: -min(r A, clip(r, 1 - e, 1 + e) A) + beta KL, with r = exp(logp - old logp); the
    KL estimate (None without a reference) and whether the clip bound the token (its gradient is 0)."""
    ratio = torch.exp(log_probs - old_log_probs)
    bounded = torch.clamp(ratio, 1 - clip_epsilon, 1 + clip_epsilon)
    losses = -torch.min(ratio * advantages, bounded * advantages)
    clipped = ((ratio < 1 - clip_epsilon) & (advantages < 0)) | ((ratio > 1 + clip_epsilon) & (advantages > 0))
    kl = None
    if reference_log_probs is not None:
        delta = reference_log_probs - log_probs
        kl = torch.exp(delta) - delta - 1
        if beta:
            losses = losses + beta * kl
    return losses, kl, clipped


def summed_loss(token_losses: torch.Tensor, rows: torch.Tensor, row_count: int, loss_type: str,
                max_new_tokens: int) -> torch.Tensor:
    """A micro-batch's share of the step's loss, in the unit `loss_units` counts: the step's loss is
    the sum of these over its micro-batches divided by the sum of their units."""
    if loss_type == "dapo":
        return token_losses.sum()
    if loss_type == "dr_grpo":
        return token_losses.sum() / max_new_tokens
    per_row = torch.zeros(row_count, dtype=token_losses.dtype, device=token_losses.device).index_add(0, rows, token_losses)
    counts = torch.bincount(rows, minlength=row_count).clamp(min=1)
    return (per_row / counts).sum()


def loss_units(loss_type: str, completion_tokens: int, completions: int) -> int:
    """What a step's loss is averaged over: completion tokens (dapo) or completions (grpo, dr_grpo)."""
    return completion_tokens if loss_type == "dapo" else completions


# ------------------------------------------------------------------------------------------ batches


@dataclass
class GroupBatch:
    sequences: Batch  # prompt + completion rows; the completion's tokens are the loss tokens
    advantages: torch.Tensor  # [B]
    old_log_probs: torch.Tensor | None  # per loss token, row by row; None: the policy's own, detached
    reference_log_probs: torch.Tensor | None  # per loss token; None: no reference (full fine-tuning, beta 0)
    n_loss_tokens: int  # loss_units of this batch
    n_tokens: int
    step_tokens: int  # completion tokens of the whole step, for the per-token metrics
    step_units: int  # loss_units of the whole step

    @property
    def input_ids(self) -> torch.Tensor:
        return self.sequences.input_ids

    def to(self, device: torch.device | str) -> GroupBatch:
        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device)

        return GroupBatch(self.sequences.to(device), self.advantages.to(device), move(self.old_log_probs),
                          move(self.reference_log_probs), self.n_loss_tokens, self.n_tokens, self.step_tokens,
                          self.step_units)


@dataclass
class GroupRollout:
    """What the optimizer steps of one rollout train on."""

    examples: list[TokenizedExample]  # prompt + completion, per completion
    advantages: torch.Tensor  # [completions]
    old_log_probs: list[torch.Tensor] | None  # per completion, its tokens' log-probabilities when sampled
    reference_log_probs: list[torch.Tensor] | None  # per completion, under the reference


def grpo_loss(config: RunConfig, data: PreparedData) -> LossFn:
    settings = config.grpo

    def loss_sum(model: Any, batch: GroupBatch) -> tuple[torch.Tensor, dict[str, float]]:
        log_probs, rows = loss_token_log_probs(model, batch.sequences)
        old = log_probs.detach() if batch.old_log_probs is None else batch.old_log_probs
        losses, kl, clipped = clipped_token_losses(log_probs, old, batch.reference_log_probs, batch.advantages[rows],
                                                   settings.clip_epsilon, settings.beta)
        summed = summed_loss(losses, rows, len(batch.advantages), settings.loss_type, settings.max_new_tokens)
        per_token = batch.step_units / batch.step_tokens  # the loop divides metric sums by the step's units
        metrics = {"clip_fraction": float(clipped.sum()) * per_token}
        if kl is not None:
            metrics["kl"] = float(kl.detach().sum()) * per_token
        return summed, metrics

    return loss_sum


# ------------------------------------------------------------------------------------------- rollout


class GroupRounds:
    """The loop's window source for grpo: a rollout every grpo.epochs steps, all of it in each step."""

    def __init__(self, model: Any, data: PreparedData, config: RunConfig, folder: Path, device: torch.device,
                 precision: str, tokenizer: Any, info: TemplateInfo) -> None:
        self.policy = LoadedModel(model, tokenizer, info, "policy")
        self.data, self.config, self.settings = data, config, config.grpo
        self.reward: RowReward = data.extras["reward"]
        self.folder = Path(folder)
        self.device, self.precision = device, precision
        self.current: tuple[int, GroupRollout] | None = None  # (the step that sampled it, the rollout)

    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.data.train) / self.settings.prompts_per_step) * self.settings.epochs

    def normalizer(self, epoch: int) -> float | None:
        return None  # each step's loss is averaged over its own units (loss_units)

    def epoch_progress(self, state: TrainState) -> float:
        return state.epoch + state.micro_index / len(self.data.train)

    def next_window(self, state: TrainState) -> tuple[list[GroupBatch], dict[str, float]]:
        """A new rollout on every grpo.epochs-th step, else the one in use (read back after a resume)."""
        inner = state.step % self.settings.epochs
        metrics: dict[str, float] = {}
        if inner == 0:
            rollout, metrics = self.roll(state)
            self.current = (state.step, rollout)
        elif self.current is None or self.current[0] != state.step - inner:
            self.current = (state.step - inner, read_rollout(self.rollout_path(state.step - inner)))
        if self.settings.epochs > 1:
            metrics["inner_epoch"] = inner + 1
        return self.windows(self.current[1], first=inner == 0), metrics

    def rollout_path(self, step: int) -> Path:
        return self.folder / "rounds" / f"rollout-{step + 1:06d}.safetensors"

    def roll(self, state: TrainState) -> tuple[GroupRollout, dict[str, float]]:
        """Sample, score, save the round; the rollout and what the step records of it."""
        settings = self.settings
        prompts = next_prompts(self.data.train, state, settings.prompts_per_step, self.config.train.seed)
        sampling = Sampling(settings.group_size, settings.max_new_tokens, settings.temperature, settings.top_p,
                            settings.top_k)
        rollout = sample_rollout(self.policy, prompts, sampling, self.reward, self.config.train.seed * 100_003 + state.step,
                                 self.device, self.precision)
        rewards = torch.tensor(rollout.scores, dtype=torch.float32)
        advantages = group_advantages(rewards, settings.group_size, settings.scale_rewards)
        rows = round_rows(rollout)
        for row, group in zip(rows, rollout.groups()):
            for sample, advantage in zip(row["samples"], advantages[group].tolist()):
                sample["advantage"] = advantage
        write_round(self.folder, state.step + 1, rows)
        examples = completion_examples(rollout, self.policy)
        old, reference = self.measure(examples)
        group_rollout = GroupRollout(examples, advantages, old, reference)
        if settings.epochs > 1:
            save_rollout(self.rollout_path(state.step), group_rollout)
        return group_rollout, {**rollout_metrics(rollout), "no_signal_share": no_signal_share(rewards, settings.group_size)}

    def plans(self, examples: list[TokenizedExample]) -> list[list[list[int]]]:
        return plan_epoch([len(e) for e in examples], "group_by_length", self.config.train.batch_size,
                          self.config.data.max_length, 0, 0)

    @torch.no_grad()
    def measure(self, examples: list[TokenizedExample]) -> tuple[list[torch.Tensor] | None, list[torch.Tensor] | None]:
        """Per completion, its tokens' log-probabilities under the sampling policy (needed when
        grpo.epochs > 1) and under the reference (with LoRA: the adapter off), in the batches the
        steps will train on, so that at the first step the policy and the reference agree to the bit."""
        model = self.policy.model
        want_old, want_reference = self.settings.epochs > 1, hasattr(model, "disable_adapter")
        old: list[torch.Tensor | None] = [None] * len(examples)
        reference: list[torch.Tensor | None] = [None] * len(examples)
        for plan in self.plans(examples):
            batch = collate(examples, plan, self.policy.tokenizer.pad_token_id).to(self.device)
            with autocast(self.device, self.precision), attention_kernel(self.device, batch.input_ids.shape[1]):
                if want_old:
                    split_rows(*loss_token_log_probs(model, batch), plan, old)
                if want_reference:
                    with model.disable_adapter():
                        split_rows(*loss_token_log_probs(model, batch), plan, reference)
        return (old if want_old else None), (reference if want_reference else None)

    def windows(self, rollout: GroupRollout, first: bool) -> list[GroupBatch]:
        """The step's micro-batches: every completion of the rollout, train.batch_size a batch."""
        loss_type = self.settings.loss_type
        step_tokens = sum(e.n_loss_tokens for e in rollout.examples)
        step_units = loss_units(loss_type, step_tokens, len(rollout.examples))
        batches = []
        for plan in self.plans(rollout.examples):
            indices = [row[0] for row in plan]
            sequences = collate(rollout.examples, plan, self.policy.tokenizer.pad_token_id)
            old = None if first or rollout.old_log_probs is None else torch.cat([rollout.old_log_probs[i] for i in indices])
            reference = None if rollout.reference_log_probs is None else \
                torch.cat([rollout.reference_log_probs[i] for i in indices])
            batches.append(GroupBatch(sequences, rollout.advantages[indices], old, reference,
                                      loss_units(loss_type, sequences.n_loss_tokens, len(plan)), sequences.n_tokens,
                                      step_tokens, step_units))
        return batches


def split_rows(token_values: torch.Tensor, rows: torch.Tensor, plan: list[list[int]], into: list) -> None:
    """A batch's per-token values, row by row, into `into` at each row's completion index."""
    counts = torch.bincount(rows, minlength=len(plan)).tolist()
    for row, values in zip(plan, torch.split(token_values.float().cpu(), counts)):
        into[row[0]] = values


def completion_examples(rollout: Rollout, policy: LoadedModel) -> list[TokenizedExample]:
    """Each completion after its prompt, as sampled: the completion's tokens are the loss tokens."""
    examples = []
    for prompt, group in zip(rollout.prompts, rollout.groups()):
        prompt_ids = encode_prompt(policy.tokenizer, policy.info, list(prompt.messages))  # as generate encoded it
        examples += [sampled_sequence(prompt_ids, ids, prompt) for ids in rollout.sampled.token_ids[group]]
    return examples


def save_rollout(path: Path, rollout: GroupRollout) -> None:
    """A rollout as the steps after its first need it after a resume; written whole or not at all."""
    examples = rollout.examples
    tensors = {"ids": torch.from_numpy(np.concatenate([e.input_ids for e in examples]).astype(np.int64)),
               "lengths": torch.tensor([len(e) for e in examples]),
               "completion_lengths": torch.tensor([e.n_loss_tokens for e in examples]),
               "advantages": rollout.advantages.contiguous()}
    for name, values in (("old", rollout.old_log_probs), ("reference", rollout.reference_log_probs)):
        if values is not None:
            tensors[name] = torch.cat(values).contiguous()
    rows = json.dumps([[e.source, e.line] for e in examples])
    with atomic_path(path) as staging:
        save_file(tensors, staging, metadata={"rows": rows})


def read_rollout(path: Path) -> GroupRollout:
    from safetensors import safe_open

    if not path.is_file():
        raise ConfigError(f"{path} is missing: the run stopped within a rollout whose saved tokens are gone; "
                          "start the run again (without --resume)")
    tensors = load_file(path)
    with safe_open(path, "pt") as opened:
        rows = json.loads(opened.metadata()["rows"])
    lengths, completions = tensors["lengths"].tolist(), tensors["completion_lengths"].tolist()
    examples = []
    for ids, completion, (source, line) in zip(torch.split(tensors["ids"], lengths), completions, rows):
        mask = np.arange(len(ids)) >= len(ids) - completion
        examples.append(TokenizedExample(ids.numpy().astype(np.int32), mask, source, line))
    per_token = {name: list(torch.split(tensors[name], completions)) if name in tensors else None
                 for name in ("old", "reference")}
    return GroupRollout(examples, tensors["advantages"], per_token["old"], per_token["reference"])


# -------------------------------------------------------------------------------------------- method


def prepare_grpo(config: RunConfig, tokenizer: Any, info: TemplateInfo | None) -> PreparedData:
    """Everything checked before a model loads: settings grpo cannot honour, the reward (loaded now,
    so a missing file or untrusted code stops the run here), and prompts with room for a completion."""
    settings = config.grpo
    if settings.beta > 0 and not config.lora.enabled:
        raise ConfigError(f"grpo.beta={settings.beta:g} with full fine-tuning would need a second copy of the model "
                          "as the KL reference; use LoRA (the reference is the model with its adapter off) or set "
                          "grpo.beta=0")
    check_on_policy(config, "grpo")
    reward = grpo_reward(config)
    data = prepare_prompts(config, tokenizer, info, reply_tokens=settings.max_new_tokens)
    data.extras["reward"] = reward
    return data


def grpo_reward(config: RunConfig) -> RowReward:
    """The run's reward: grpo.grader, or preference.reward (ConfigError when neither or both are set)."""
    settings, preference = config.grpo, config.preference
    if settings.grader is not None and preference.reward:
        raise ConfigError(f"grpo.grader and preference.reward={preference.reward!r} are both set: give one reward")
    if settings.grader is not None:
        return grader_reward(settings.grader, trust_python=settings.trust_python_grader)
    if preference.reward:
        return row_reward(load_reward(preference.reward, trust_code=preference.trust_reward_code))
    raise ConfigError("train.method=grpo needs a reward: grpo.grader (an OpenAI grader object, docs/graders.md) "
                      "or preference.reward (a built-in such as concise, file.py:function, module:function, "
                      "classifier:RUN:LABEL, reference:exact / reference:rouge)")


def grpo_source(model: Any, data: PreparedData, config: RunConfig, folder: Path, device: torch.device, precision: str,
                tokenizer: Any, info: TemplateInfo) -> tuple[GroupRounds, GreedyReward]:
    rounds = GroupRounds(model, data, config, folder, device, precision, tokenizer, info)
    return rounds, GreedyReward(rounds.policy, data.validation, rounds.reward, config.grpo.max_new_tokens,
                                config.eval.batch_size)


GRPO = register_method(Method(
    name="grpo",
    description="group relative policy optimisation: groups of samples scored by preference.reward, "
                "advantages within each group, a clipped objective and a KL term to the adapter-free reference",
    prepare_data=prepare_grpo,
    load_model=load_causal,
    collate=collate,
    make_loss=grpo_loss,
    window_source=grpo_source,
))
