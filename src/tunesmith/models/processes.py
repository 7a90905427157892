"""Decoding shared out over the processes that trained together.

After `tunesmith train --nproc N` every process takes part in the evaluation: each decodes (or
scores, or classifies) every N-th batch of the rows and all of them get every row's result, in the
rows' order. The batch is the unit shared out, not the row, so that each row is decoded in the very
batch, with the very padding, one process would have put it in: greedy answers, label scores and
class probabilities are then one process's, to the bit.

The processes are those of the process group training joined (torch.distributed); nothing here
starts one. Only code that every process runs in the same order may be given a Share of more than
one process: a collective operation waits for all of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

Item = TypeVar("Item")


@dataclass(frozen=True)
class Share:
    """This process's part (`rank`) of decoding work done by `size` processes together."""

    rank: int = 0
    size: int = 1

    @property
    def writes(self) -> bool:
        """Rank 0 alone writes the results and prints them."""
        return self.rank == 0

    def take(self, batches: list[Item]) -> list[Item]:
        """This process's batches: every `size`-th one, from its rank on."""
        return batches[self.rank::self.size]

    def gather(self, results: dict[int, Any]) -> dict[int, Any]:
        """Every process's results by row index, merged; the same on every process."""
        if self.size == 1:
            return results
        merged: dict[int, Any] = {}
        for part in gather_objects(results, self.size):
            merged.update(part or {})
        return merged


def gather_objects(value: Any, size: int) -> list[Any]:
    """Every one of `size` processes' `value` (any picklable object), in rank order; [value] for one."""
    if size == 1:
        return [value]
    import torch.distributed

    gathered: list[Any] = [None] * size
    torch.distributed.all_gather_object(gathered, value)
    return gathered


ALONE = Share()  # one process does all the work
