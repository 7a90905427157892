"""Likelihood scoring of label answers (rank classification, as evaluation harnesses score multiple
choice): for each prompt, the log-probability of each label's answer tokens; the prediction is the
most likely label. It measures what a model knows whatever format its generated answer takes.

A label's answer tokens are what training puts in the loss for that label as the assistant's reply:
the label's tokens and the end-of-turn token. Including the end of the turn tells a label apart from
a longer label it begins ("good" vs "good enough") and is what a fine-tuned model was taught.

The prompt's forward pass is shared by every label: each batch of prompts runs once with its key/
value cache, the cache is repeated once per label, and only the answer tokens run again. The cost
is about one prompt pass plus one short pass, not one prompt pass per label.

Prompts that begin with the same tokens (the system prompt and template, and with fixed few-shot
examples the whole block of shots) share that prefix's pass too: each batch's common prefix runs
once, its cache is kept for the next batch with the same prefix, and only each row's own tail runs
per row. With 5 fixed shots the tail is a fifth of the prompt or less. Scores equal the unshared
pass (pinned by a test); the saving is ours because transformers' generate/forward has no prefix
cache of its own (vLLM's prefix caching does the same on GPUs).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from tunesmith.data.examples import Example, Message
from tunesmith.data.tokenize import encode_prompt, tokenize_examples
from tunesmith.models.generate import LoadedModel, pad_rows


@dataclass
class LabelScores:
    labels: list[str]
    log_probs: np.ndarray  # [rows, labels]: summed log-probability of each label's answer tokens
    token_counts: np.ndarray  # [labels]: answer tokens per label (its tokens and the end-of-turn token)
    seconds: float

    def predicted(self, normalized: bool = False) -> list[str]:
        """The most likely label per row: by summed log-probability, or per answer token."""
        scores = self.log_probs / self.token_counts[None, :] if normalized else self.log_probs
        return [self.labels[int(i)] for i in scores.argmax(axis=1)]


def answer_ids(loaded: LoadedModel, label: str) -> list[int]:
    """The token ids training puts in the loss when `label` is the assistant's reply."""
    probe = Example("label-probe", 0, "chat", messages=(Message("user", "x"), Message("assistant", label)))
    tokenized = tokenize_examples([probe], loaded.tokenizer, loaded.info, "assistant")[0]
    return tokenized.input_ids[tokenized.loss_mask].tolist()


@torch.no_grad()
def score_labels(loaded: LoadedModel, prompts: list[tuple[Message, ...] | list[Message]], labels: list[str], *,
                 batch_size: int = 16, share_prefix: bool = True,
                 progress: Callable[[int], None] | None = None) -> LabelScores:
    """[rows, labels] log-probabilities of each label's answer after each prompt, in batches of
    similar prompt lengths (left-padded; positions from the attention mask). `share_prefix`: run a
    batch's common leading tokens once (see the module's notes). The batches are shared out over
    `loaded.share`'s processes."""
    started = time.perf_counter()
    answers = [answer_ids(loaded, label) for label in labels]
    encoded = [encode_prompt(loaded.tokenizer, loaded.info, list(p)) for p in prompts]
    scores = np.zeros((len(prompts), len(labels)), dtype=np.float64)
    model = loaded.model
    device = next(model.parameters()).device
    pad_id = loaded.tokenizer.pad_token_id
    prefixes: dict[tuple[int, ...], Any] = {}
    scored: dict[int, np.ndarray] = {}  # row -> its labels' log-probabilities
    for chunk in loaded.share.take(_batches(prompts, encoded, batch_size, share_prefix)):
        shared = _common_prefix([encoded[i] for i in chunk]) if share_prefix and len(chunk) > 1 else 0
        prefix = None
        if shared >= MIN_SHARED:
            key = tuple(encoded[chunk[0]][:shared])
            if key not in prefixes:
                prefixes.clear()  # keep one: batches with the same prefix come together
                prefixes[key] = model(input_ids=torch.tensor([key], device=device), use_cache=True).past_key_values
            prefix = (shared, prefixes[key])
        else:
            shared = 0
        input_ids, attention = pad_rows([encoded[i][shared:] for i in chunk], pad_id, left=True)
        rows = _score_batch(model, input_ids.to(device), attention.to(device), answers, pad_id, prefix)
        scored.update(zip(chunk, rows))
        if progress is not None:
            progress(len(chunk))
    for row, values in loaded.share.gather(scored).items():
        scores[row] = values
    return LabelScores(list(labels), scores, np.array([len(a) for a in answers], dtype=np.float64),
                       time.perf_counter() - started)


MIN_SHARED = 8  # shorter common prefixes are not worth a separate pass


def _batches(prompts: list, encoded: list[list[int]], batch_size: int, share_prefix: bool) -> list[list[int]]:
    """Row indices in batches of similar lengths; with `share_prefix`, rows whose messages before
    the last turn are the same (the same shots) are batched together, so their batches share the
    most tokens."""
    groups: dict[tuple, list[int]] = {}
    for i, prompt in enumerate(prompts):
        key = tuple((m.role, m.content) for m in list(prompt)[:-1]) if share_prefix else ()
        groups.setdefault(key, []).append(i)
    rest = [i for group in groups.values() if len(group) == 1 for i in group]
    batches = []
    for group in [group for group in groups.values() if len(group) > 1] + [rest]:
        group = sorted(group, key=lambda i: len(encoded[i]))
        batches += [group[start:start + batch_size] for start in range(0, len(group), batch_size)]
    return batches


def _common_prefix(rows: list[list[int]]) -> int:
    """Leading tokens every row has in common, leaving each row at least one token of its own."""
    shortest = min(len(ids) for ids in rows) - 1
    length = 0
    while length < shortest and all(ids[length] == rows[0][length] for ids in rows):
        length += 1
    return length


def _score_batch(model: torch.nn.Module, input_ids: torch.Tensor, attention: torch.Tensor, answers: list[list[int]],
                 pad_id: int, prefix: tuple[int, Any] | None = None) -> np.ndarray:
    """`prefix`: (its length, its cache) when the rows' tokens follow a shared prefix; the rows'
    own tokens are then left-padded after it (padding in the middle, masked out)."""
    rows, width = input_ids.shape
    count = len(answers)
    cache = None
    if prefix is not None:
        shared, prefix_cache = prefix
        cache = copy.deepcopy(prefix_cache)
        cache.batch_repeat_interleave(rows)
        attention = torch.cat([torch.ones((rows, shared), dtype=attention.dtype, device=attention.device), attention], 1)
    positions = ((attention.cumsum(-1) - 1).clamp(min=0))[:, -width:]
    out = model(input_ids=input_ids, attention_mask=attention, position_ids=positions, past_key_values=cache,
                use_cache=True, logits_to_keep=1)
    first = torch.log_softmax(out.logits[:, -1].float(), dim=-1)  # [rows, vocab]: each answer's first token
    result = torch.stack([first[:, ids[0]] for ids in answers], dim=1)  # [rows, labels]
    longest = max(len(ids) for ids in answers)
    if longest == 1:
        return result.double().cpu().numpy()
    # The rest of each answer, for every (row, label): the prompt's cache repeated once per label.
    cache = out.past_key_values
    cache.batch_repeat_interleave(count)
    follow = torch.full((count, longest - 1), pad_id, dtype=torch.long, device=input_ids.device)
    follow_mask = torch.zeros((count, longest - 1), dtype=torch.long, device=input_ids.device)
    for label, ids in enumerate(answers):
        follow[label, :len(ids) - 1] = torch.tensor(ids[:-1])
        follow_mask[label, :len(ids) - 1] = 1
    follow_ids = follow.repeat(rows, 1)  # row-major: (row 0, label 0), (row 0, label 1), ...
    mask = torch.cat([attention.repeat_interleave(count, dim=0), follow_mask.repeat(rows, 1)], dim=1)
    start = attention.sum(-1).repeat_interleave(count)[:, None]
    follow_positions = start + torch.arange(longest - 1, device=input_ids.device)[None, :]
    logits = model(input_ids=follow_ids, attention_mask=mask, position_ids=follow_positions, past_key_values=cache,
                   use_cache=False).logits.float()
    log_probs = torch.log_softmax(logits, dim=-1).view(rows, count, longest - 1, -1)
    for label, ids in enumerate(answers):
        if len(ids) > 1:
            targets = torch.tensor(ids[1:], device=logits.device)
            taken = log_probs[:, label, torch.arange(len(ids) - 1), targets]  # [rows, tokens]
            result[:, label] += taken.sum(dim=-1)
    return result.double().cpu().numpy()
