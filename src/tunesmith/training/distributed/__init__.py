"""Training on several processes (GPUs, or CPU processes) with PyTorch's own distributed engine.

A process learns its place from the environment that `torchrun` (or `tunesmith train --nproc N`)
sets: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT. Without WORLD_SIZE (or with 1)
nothing here does anything: one process runs exactly the code it ran before, with no process group.

- world.py: the process group (gloo on CPU, nccl on CUDA, chosen from the device), sums over
  processes, and each process's share of a step's micro-batches.
- ddp.py: DistributedDataParallel around the loss, so the one training loop stays one loop.
- fsdp.py: FSDP2 (`fully_shard`) for full fine-tuning (distributed.strategy=fsdp): weights,
  gradients and AdamW moments in shares, sharded checkpoints, the final model gathered to rank 0.
- launch.py: `--nproc N` starts N processes through torchrun's elastic agent on this machine.
"""
