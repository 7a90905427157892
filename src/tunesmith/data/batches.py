"""Tokenized examples -> micro-batches, in an order fixed by (seed, epoch) so a resumed run sees
the same batches as an uninterrupted one.

Three ways to fill a batch:
- pad: random order, right-padded to the longest example of the batch.
- group_by_length: random order within groups of similar length, so padding is small.
- pack: examples concatenated into rows of at most max_length tokens, with position ids restarting
  at each example; transformers then keeps attention inside each example.

Right padding needs no attention mask: with causal attention no real token looks at a pad that
comes after it, and pads are not in the loss. The fast causal attention kernel then applies.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from tunesmith.data.tokenize import TokenizedExample

IGNORE_INDEX = -100
_GROUP_FACTOR = 64  # examples per length group = batch_size x this (as in HF's LengthGroupedSampler)

Row = list[int]  # indices of the examples that share one row of a batch
Plan = list[Row]  # one micro-batch


@dataclass
class Batch:
    input_ids: torch.Tensor  # [B, L]
    labels: torch.Tensor  # [B, L]: the token at t where it is in the loss, else IGNORE_INDEX
    position_ids: torch.Tensor | None  # [B, L] for packed rows, else None
    n_loss_tokens: int
    n_tokens: int  # real tokens, padding excluded

    def to(self, device: torch.device | str) -> Batch:
        return Batch(self.input_ids.to(device), self.labels.to(device),
                     None if self.position_ids is None else self.position_ids.to(device),
                     self.n_loss_tokens, self.n_tokens)


def plan_epoch(lengths: list[int], strategy: str, batch_size: int, max_length: int, seed: int, epoch: int) -> list[Plan]:
    """Micro-batches of one epoch, as lists of rows of example indices."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths)).tolist()
    if strategy == "pad":
        rows = [[index] for index in order]
    elif strategy == "group_by_length":
        rows = []
        group_size = batch_size * _GROUP_FACTOR
        for start in range(0, len(order), group_size):
            group = sorted(order[start:start + group_size], key=lambda i: -lengths[i])
            rows.extend([index] for index in group)
        batches = [rows[i:i + batch_size] for i in range(0, len(rows), batch_size)]
        return [batches[i] for i in rng.permutation(len(batches))]
    elif strategy == "pack":
        rows = _pack(order, lengths, max_length)
        rows = [rows[i] for i in rng.permutation(len(rows))]
    else:
        raise ValueError(f"unknown batching strategy {strategy!r}")
    return [rows[i:i + batch_size] for i in range(0, len(rows), batch_size)]


def _pack(order: list[int], lengths: list[int], capacity: int) -> list[Row]:
    """First-fit: each example goes into the first row that still has room for all of it."""
    rows: list[Row] = []
    room: list[int] = []
    for index in order:
        size = lengths[index]
        for row_number, free in enumerate(room):
            if free >= size:
                rows[row_number].append(index)
                room[row_number] -= size
                break
        else:
            rows.append([index])
            room.append(capacity - size)
    return rows


def collate(examples: list[TokenizedExample], plan: Plan, pad_id: int) -> Batch:
    packed = any(len(row) > 1 for row in plan)
    row_lengths = [sum(len(examples[i]) for i in row) for row in plan]
    width = max(row_lengths)
    input_ids = torch.full((len(plan), width), pad_id, dtype=torch.long)
    labels = torch.full((len(plan), width), IGNORE_INDEX, dtype=torch.long)
    positions = torch.zeros((len(plan), width), dtype=torch.long) if packed else None
    for row_number, row in enumerate(plan):
        cursor = 0
        for index in row:
            example = examples[index]
            ids = torch.from_numpy(example.input_ids.astype(np.int64))
            end = cursor + len(ids)
            input_ids[row_number, cursor:end] = ids
            labels[row_number, cursor:end] = torch.where(torch.from_numpy(example.loss_mask), ids, IGNORE_INDEX)
            if positions is not None:
                positions[row_number, cursor:end] = torch.arange(len(ids))
            cursor = end
        if positions is not None and cursor < width:
            positions[row_number, cursor:] = torch.arange(width - cursor)
    n_loss = int((labels != IGNORE_INDEX).sum())
    return Batch(input_ids, labels, positions, n_loss, sum(row_lengths))
