"""Which process this is among how many, and the few collective operations the loop needs.

Data parallelism here keeps one process's arithmetic: the micro-batches of every optimizer step
are planned as one process with batch N x b would plan them (N processes, b rows each), and each
process takes its b rows of each micro-batch. The step's loss tokens are counted over all
processes before the backward, so the update is the one process's update, whatever N is.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from tunesmith.data.batches import Plan
from tunesmith.errors import ConfigError
from tunesmith.models.processes import gather_objects
from tunesmith.training.distributed.launch import stop_with_launcher


@dataclass(frozen=True)
class World:
    """This process's rank among `size` processes; `local_rank` picks its GPU on its machine."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes the run folder, the logs, the checkpoints and the final model."""
        return self.rank == 0

    def sum_int(self, value: int) -> int:
        """`value` summed over the processes (itself for one process)."""
        if self.size == 1:
            return value
        total = torch.tensor([value], dtype=torch.int64, device=_collective_device())
        torch.distributed.all_reduce(total)
        return int(total.item())

    def sum_values(self, values: dict[str, float]) -> dict[str, float]:
        """Each named value summed over the processes; a name one process lacks counts as 0 there
        (a process whose share of a step is empty reports no metrics)."""
        if self.size == 1:
            return values
        totals: dict[str, float] = {}
        for part in self.gather(values):
            for name, value in (part or {}).items():
                totals[name] = totals.get(name, 0.0) + value
        return totals

    def gather(self, value: Any) -> list[Any]:
        """Every process's `value` (any picklable object), in rank order; [value] for one process."""
        return gather_objects(value, self.size)

    def barrier(self) -> None:
        if self.size > 1:
            torch.distributed.barrier()

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block first (filling caches, such as the tokenized data), the others after it."""
        if not self.is_main:
            self.barrier()
        yield
        if self.is_main:
            self.barrier()

    def shard(self, plan: Plan) -> Plan:
        """This process's rows of a micro-batch: contiguous blocks, the first ones one row longer
        when the rows do not divide evenly; empty when there are fewer rows than processes."""
        per_rank = -(-len(plan) // self.size)
        return plan[self.rank * per_rank:(self.rank + 1) * per_rank]


ONE_PROCESS = World()


def environment_world() -> World:
    """The place torchrun gave this process (one process of one without WORLD_SIZE); starts nothing."""
    try:
        size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        raise ConfigError("WORLD_SIZE, RANK and LOCAL_RANK must be integers; start several processes with "
                          "`tunesmith train --nproc N` or torchrun, which set them") from None
    return ONE_PROCESS if size <= 1 else World(rank, size, local_rank)


def join_world(device: torch.device) -> tuple[World, torch.device]:
    """Join the process group torchrun describes, once per process (gloo for CPU training, nccl for
    CUDA); returns the world and this process's device (cuda:LOCAL_RANK on a GPU machine)."""
    world = environment_world()
    if world.size == 1:
        return world, device
    stop_with_launcher()
    if device.type == "cuda":
        if world.local_rank >= torch.cuda.device_count():
            raise ConfigError(f"rank {world.rank}: LOCAL_RANK={world.local_rank} but this machine has "
                              f"{torch.cuda.device_count()} GPUs; start at most that many processes per machine")
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        raise ConfigError(f"train.device={device.type}: several processes train on cpu or cuda only; use one of those")
    if not torch.distributed.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend, rank=world.rank, world_size=world.size,
                                             device_id=device if device.type == "cuda" else None)
        atexit.register(_leave_world)
    return world, device


def without_loss(batch: Any) -> Any:
    """The batch (of any method: tokens, pairs, labelled examples) counted as holding nothing: a
    process whose share of a micro-batch is empty runs it so that its backward still takes part in
    DDP's gradient averaging, and the loop multiplies the loss of a batch without loss tokens by zero."""
    return dataclasses.replace(batch, n_loss_tokens=0, n_tokens=0)


def _collective_device() -> torch.device:
    if torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _leave_world() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
