"""Offline preference tuning on given pairs: DPO (sigmoid) against a reference, or reference-free SimPO.

Each pair is two conversations, the prompt followed by the chosen or the rejected reply; the loss
looks only at each reply's log-probability (the reply and its end-of-turn token). The reference
log-probabilities are computed once, before the first step, with the adapter switched off (LoRA:
the base weights, never a second copy of the model) or with the starting weights (full
fine-tuning), and kept in the run folder so that a resumed run uses the very same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from tunesmith.config import RunConfig
from tunesmith.data.batches import Batch, collate, plan_epoch
from tunesmith.data.catalog import resolve_data_path
from tunesmith.data.examples import Example, Message, Problem
from tunesmith.data.formats import with_system_prompt
from tunesmith.data.pipeline import (
    PreparedData,
    RawSource,
    SourceData,
    read_source,
    split_validation,
)
from tunesmith.data.template import TemplateInfo
from tunesmith.data.tokenize import TokenizedExample, tokenize_cached
from tunesmith.errors import ConfigError, DataError
from tunesmith.files import atomic_path
from tunesmith.models.device import attention_kernel, autocast
from tunesmith.models.loss_eval import LossFn
from tunesmith.training.distributed.world import ONE_PROCESS, World, environment_world
from tunesmith.training.loss import sequence_log_probs
from tunesmith.training.registry import Method, register_method
from tunesmith.training.sft import load_causal


@dataclass(frozen=True)
class PairExample:
    chosen: TokenizedExample
    rejected: TokenizedExample
    key: int  # row of the reference table
    source: str
    line: int

    def __len__(self) -> int:
        return max(len(self.chosen), len(self.rejected))

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}"

    @property
    def n_loss_tokens(self) -> int:
        return 1  # the loss is averaged over pairs

    def fingerprint(self) -> bytes:
        return self.chosen.fingerprint() + b"|" + self.rejected.fingerprint()


@dataclass
class PairBatch:
    sequences: Batch  # 2B rows: the B chosen conversations, then the B rejected ones
    keys: torch.Tensor  # [B] rows of the reference table
    n_loss_tokens: int  # pairs
    n_tokens: int

    @property
    def input_ids(self) -> torch.Tensor:
        return self.sequences.input_ids

    def to(self, device: torch.device | str) -> PairBatch:
        return PairBatch(self.sequences.to(device), self.keys.to(device), self.n_loss_tokens, self.n_tokens)


# ------------------------------------------------------------------------------------------- data


def prepare_pairs(config: RunConfig, tokenizer: Any, info: TemplateInfo | None) -> PreparedData:
    data = config.data
    if not data.train:
        raise ConfigError("no training data: set data.train (preference rows: prompt, chosen, rejected)")
    train_raw = read_source(resolve_data_path(data.train), data)
    raws = [train_raw]
    train_rows, problems = preference_rows(train_raw, data.system_prompt)
    if data.validation:
        raws.append(read_source(resolve_data_path(data.validation), data))
        validation_rows, more = preference_rows(raws[1], data.system_prompt)
        problems += more
    else:
        train_rows, validation_rows = split_validation(train_rows, data.validation_split, config.train.seed)
    train, more = tokenize_pairs(train_rows, tokenizer, info, data.max_length, data.truncate, first_key=0)
    validation, even_more = tokenize_pairs(validation_rows, tokenizer, info, data.max_length, data.truncate,
                                           first_key=len(train_rows))
    problems = problems + more + even_more
    if problems and not data.skip_invalid:
        raise DataError(f"{problems[0].where.rsplit(':', 1)[0]}: {len(problems)} problems in "
                        f"{len({p.where for p in problems})} rows. Fix them, or set "
                        "data.skip_invalid=true to leave those rows out:", problems)
    if not train:
        raise DataError(f"{train_raw.path}: no usable preference pairs")
    sources = [SourceData(raw.path, raw.format, raw.rows, train if n == 0 else validation,
                          [p for p in problems if p.where.startswith(str(raw.path))]) for n, raw in enumerate(raws)]
    return PreparedData(train, validation, sources, problems, unit="pairs")


def preference_rows(raw: RawSource, system_prompt: str | None) -> tuple[list[Example], list[Problem]]:
    rows, problems = [], list(raw.problems)
    for example in raw.examples:
        if example.kind != "preference":
            problems.append(Problem(example.where, f"a {example.kind} row, not a preference pair",
                                    "give rows with a prompt, a 'chosen' and a 'rejected' reply"))
        else:
            prompt = with_system_prompt(Example(example.source, example.line, "chat", messages=example.messages), system_prompt)
            rows.append(Example(example.source, example.line, "preference", messages=prompt.messages,
                                chosen=example.chosen, rejected=example.rejected))
    return rows, problems


def pair_conversations(example: Example) -> tuple[Example, Example]:
    """The prompt followed by each reply; earlier assistant turns of the prompt are not in the loss."""
    prompt = tuple(Message(m.role, m.content, train=False) if m.role == "assistant" else m for m in example.messages)
    return tuple(Example(example.source, example.line, "chat", messages=prompt + (Message("assistant", reply),))
                 for reply in (example.chosen, example.rejected))


def tokenize_pairs(rows: list[Example], tokenizer: Any, info: TemplateInfo, max_length: int, truncate: bool,
                   first_key: int) -> tuple[list[PairExample], list[Problem]]:
    conversations = [conversation for row in rows for conversation in pair_conversations(row)]
    tokenized, _ = tokenize_cached(conversations, tokenizer, info, "assistant")
    pairs, problems = [], []
    for number, row in enumerate(rows):
        chosen, rejected = tokenized[2 * number], tokenized[2 * number + 1]
        longest = max(len(chosen), len(rejected))
        if longest > max_length:
            if not truncate:
                problems.append(Problem(row.where, f"the longer conversation of the pair is {longest} tokens, over "
                                        f"data.max_length={max_length}", f"raise data.max_length to {longest}, "
                                        "set data.truncate=true, or data.skip_invalid=true to leave it out"))
                continue
            chosen, rejected = (_cut(t, max_length) for t in (chosen, rejected))
            if not (chosen.n_loss_tokens and rejected.n_loss_tokens):
                problems.append(Problem(row.where, "after truncation a reply has no tokens left", "raise data.max_length"))
                continue
        pairs.append(PairExample(chosen, rejected, first_key + number, row.source, row.line))
    return pairs, problems


def _cut(example: TokenizedExample, length: int) -> TokenizedExample:
    from dataclasses import replace

    return replace(example, input_ids=example.input_ids[:length], loss_mask=example.loss_mask[:length])


def collate_pairs(examples: list[PairExample], plan: list[list[int]], pad_id: int) -> PairBatch:
    pairs = [examples[row[0]] for row in plan]
    sequences = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    batch = collate(sequences, [[i] for i in range(len(sequences))], pad_id)
    return PairBatch(batch, torch.tensor([p.key for p in pairs], dtype=torch.long), len(pairs), batch.n_tokens)


# ------------------------------------------------------------------------------------------- loss


def dpo_losses(chosen: torch.Tensor, rejected: torch.Tensor, reference_chosen: torch.Tensor,
               reference_rejected: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sigmoid DPO (Rafailov et al. 2023): per-pair losses and the implicit rewards of both replies."""
    chosen_reward = beta * (chosen - reference_chosen)
    rejected_reward = beta * (rejected - reference_rejected)
    return -F.logsigmoid(chosen_reward - rejected_reward), chosen_reward.detach(), rejected_reward.detach()


def simpo_losses(chosen: torch.Tensor, rejected: torch.Tensor, chosen_tokens: torch.Tensor, rejected_tokens: torch.Tensor,
                 beta: float, gamma: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SimPO (Meng et al. 2024): length-normalised log-probabilities, a target margin, no reference."""
    chosen_reward = beta * chosen / chosen_tokens
    rejected_reward = beta * rejected / rejected_tokens
    return -F.logsigmoid(chosen_reward - rejected_reward - gamma), chosen_reward.detach(), rejected_reward.detach()


def preference_loss(config: RunConfig, data: PreparedData) -> LossFn:
    settings = config.preference

    def loss_sum(model: Any, batch: PairBatch) -> tuple[torch.Tensor, dict[str, float]]:
        log_probs, counts = sequence_log_probs(model, batch.sequences)
        size = len(batch.keys)
        chosen, rejected = log_probs[:size], log_probs[size:]
        metrics: dict[str, float] = {}
        if settings.loss == "simpo":
            losses, chosen_reward, rejected_reward = simpo_losses(chosen, rejected, counts[:size], counts[size:],
                                                                  settings.beta, settings.simpo_gamma)
        else:
            reference = reference_for(model, batch, data.extras["reference"]).to(log_probs.device)
            losses, chosen_reward, rejected_reward = dpo_losses(chosen, rejected, reference[:, 0], reference[:, 1], settings.beta)
            drift = (chosen.detach() - reference[:, 0]) + (rejected.detach() - reference[:, 1])
            metrics["drift"] = float(drift.sum() / 2)  # mean log-ratio to the reference, per reply
        margin = chosen_reward - rejected_reward
        metrics["reward_accuracy"] = float((margin > 0).float().sum() + 0.5 * (margin == 0).float().sum())
        metrics["reward_margin"] = float(margin.sum())
        metrics["likelihood_accuracy"] = float((chosen.detach() / counts[:size] > rejected.detach() / counts[size:]).float().sum())
        return losses.sum(), metrics

    return loss_sum


# -------------------------------------------------------------------------------------- reference


def prepare_reference(model: Any, data: PreparedData, config: RunConfig, folder: Path, device: torch.device,
                      precision: str, pad_id: int) -> None:
    """The reference table. With LoRA the reference is the model with its adapter off, the same at
    any time, so each pair's row is filled the first time the pair is seen (NaN until then; on
    several processes each fills the rows of its own share). With full fine-tuning it is the
    starting weights: every pair is computed before the first step (each process its share of the
    batches, then all get the whole table) and kept in the run folder, so that a resumed run uses
    the very same numbers."""
    if config.preference.loss != "dpo":
        return
    pairs = [*data.train, *data.validation]
    if hasattr(model, "disable_adapter"):
        data.extras["reference"] = torch.full((max(p.key for p in pairs) + 1, 2), float("nan"))
        return
    world = environment_world()  # the processes training together (torchrun's); one without it
    path = folder / "reference_logps.safetensors"
    saved = load_file(path)["reference"] if world.is_main and path.is_file() else None  # rank 0 writes the run folder
    saved = world.gather(saved)[0]
    if saved is not None:
        data.extras["reference"] = saved
        return
    table = reference_table(model, pairs, config, device, precision, pad_id, world)
    if world.is_main:
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as staging:  # a resume reads it: never a torn file
            save_file({"reference": table}, staging)
    data.extras["reference"] = table


def reference_for(model: Any, batch: PairBatch, table: torch.Tensor) -> torch.Tensor:
    """The batch's rows of the reference table, computing the missing ones (adapter off, no gradient)."""
    keys = batch.keys.cpu()
    if torch.isnan(table[keys]).any():
        with torch.no_grad(), model.disable_adapter():
            log_probs, _ = sequence_log_probs(model, batch.sequences)
        size = len(keys)
        table[keys, 0] = log_probs[:size].float().cpu()
        table[keys, 1] = log_probs[size:].float().cpu()
    return table[keys]


def reference_table(model: Any, pairs: list[PairExample], config: RunConfig, device: torch.device, precision: str,
                    pad_id: int, world: World = ONE_PROCESS) -> torch.Tensor:
    """[pair key, (chosen, rejected)] log-probabilities under the reference: the adapter switched off
    (LoRA), or the weights as they are now (full fine-tuning, called before the first step). On
    N processes the batches are planned for N x train.batch_size pairs, as the training batches
    are, each process computes every N-th one and all get the whole table: the numbers of one
    process with that batch, to the bit."""
    table = torch.zeros((max(p.key for p in pairs) + 1, 2), dtype=torch.float32)
    plans = plan_epoch([len(p) for p in pairs], "group_by_length", config.train.batch_size * world.size,
                       config.data.max_length, 0, 0)
    disabled = model.disable_adapter() if hasattr(model, "disable_adapter") else _nothing()
    was_training = model.training
    model.eval()
    with torch.no_grad(), disabled:
        for plan in plans[world.rank::world.size]:
            batch = collate_pairs(pairs, plan, pad_id).to(device)
            with autocast(device, precision), attention_kernel(device, batch.input_ids.shape[1]):
                log_probs, _ = sequence_log_probs(model, batch.sequences)
            size = len(batch.keys)
            table[batch.keys.cpu(), 0] = log_probs[:size].float().cpu()
            table[batch.keys.cpu(), 1] = log_probs[size:].float().cpu()
    model.train(was_training)
    if world.size > 1:
        shares = world.gather(table)
        for rank, share in enumerate(shares):
            keys = [p.key for plan in plans[rank::world.size] for row in plan for p in (pairs[row[0]],)]
            table[keys] = share[keys]
    return table


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *args: Any) -> None:
        return None


DPO = register_method(Method(
    name="dpo",
    description="offline preference tuning on (prompt, chosen, rejected) pairs: DPO or SimPO",
    prepare_data=prepare_pairs,
    load_model=load_causal,
    collate=collate_pairs,
    make_loss=preference_loss,
    batching="group_by_length",
    before_fit=prepare_reference,
))
